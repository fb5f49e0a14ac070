// Entry point: routes by `location.pathname` (the server answers every
// unknown path with index.html), mounts one screen at a time into <main>,
// and keeps the header (connection status, account controls) and the
// shared notices in step with the sign-in and the realtime connection.

import { api, ApiError, clearTokens, isSignedIn, onAuthChange, signOut, watchOtherTabs } from './api.js';
import { announce, focusEl, h, isBusy, replaceChildren, setBusy } from './dom.js';
import { live } from './socket.js';
import * as landing from './landing.js';
import * as signin from './signin.js';
import * as verify from './verify.js';
import * as onboarding from './onboarding.js';
import * as dashboard from './dashboard.js';
import * as chat from './chat.js';

const main = document.getElementById('main');
const connEl = document.querySelector('[data-testid="connection-status"]');
const navEl = document.querySelector('.topnav');
const toastEl = document.querySelector('[data-testid="toast"]');

/** The signed-in user (`{id, email, alias, gender, seeking, createdAt}`), once loaded. */
let me = null;
/** The mounted screen: its module, the unmount function, and a key. */
let current = { module: null, unmount: null, key: null };
let renderSeq = 0;

// --- navigation ------------------------------------------------------------

function path() {
  const p = location.pathname.replace(/\/+$/, '');
  return p === '' ? '/' : p;
}

/** Go to `to` (a path); `replace` keeps it out of the back history. */
export function navigate(to, { replace = false } = {}) {
  if (to !== location.pathname + location.search + location.hash) {
    if (replace) history.replaceState(null, '', to);
    else history.pushState(null, '', to);
  }
  render();
}

document.addEventListener('click', (event) => {
  const link = event.target.closest?.('a[data-link]');
  if (!link || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  navigate(link.getAttribute('href'));
});

window.addEventListener('popstate', () => render());

// --- screens ---------------------------------------------------------------

const ctx = {
  navigate,
  get me() {
    return me;
  },
  setMe(user) {
    me = user ? { ...(me ?? {}), ...user } : null;
    updateChrome();
  },
  toast,
  live,
};

function mount(module, key, options = {}) {
  if (current.key === key) return;
  current.unmount?.();
  replaceChildren(main);
  const result = module.mount(main, ctx, options) ?? {};
  current = { module, key, unmount: result.unmount ?? null };
  focusEl(result.focus ?? main.querySelector('h1') ?? main);
  window.scrollTo?.(0, 0);
}

function showLoading(text = 'Loading…') {
  current.unmount?.();
  current = { module: null, key: `loading:${text}`, unmount: null };
  replaceChildren(main, h('section', { class: 'panel center', 'aria-busy': 'true' }, h('h1', { class: 'title small' }, text)));
}

function showFatal(message, retry) {
  current.unmount?.();
  current = { module: null, key: null, unmount: null };
  const heading = h('h1', { class: 'title small' }, 'Something went sideways');
  replaceChildren(
    main,
    h(
      'section',
      { class: 'panel center' },
      heading,
      h('p', { class: 'muted' }, message),
      h('button', { class: 'btn primary', type: 'button', onclick: retry }, 'Try again'),
    ),
  );
  focusEl(heading);
}

async function loadMe() {
  if (me) return me;
  const body = await api.get('/api/auth/me');
  me = body?.user ?? null;
  return me;
}

/** Show the screen for the current path and state. */
async function render() {
  const seq = ++renderSeq;
  const p = path();
  updateChrome();

  if (p === '/auth/verify') return mount(verify, 'verify');

  if (!isSignedIn()) {
    me = null;
    if (p === '/') return mount(landing, 'landing');
    if (p === '/signin') return mount(signin, 'signin');
    return navigate('/signin', { replace: true });
  }

  if (p === '/' || p === '/signin') return navigate('/app', { replace: true });

  if (!me) {
    showLoading();
    try {
      await loadMe();
    } catch (e) {
      if (seq !== renderSeq) return;
      if (e instanceof ApiError && e.code === 'UNAUTHORIZED') {
        clearTokens();
        return navigate('/signin', { replace: true });
      }
      return showFatal('The server could not be reached.', () => render());
    }
    if (seq !== renderSeq) return;
    updateChrome();
  }

  if (p === '/onboarding' || p === '/profile') {
    // On the profile page the chat goes on (a reload there included), and
    // its news reaches the person.
    if (p === '/profile' && me?.gender) live.start();
    return mount(onboarding, p, { firstTime: p === '/onboarding' || !me?.gender });
  }
  if (p !== '/app') return navigate('/app', { replace: true });
  if (!me?.gender) return navigate('/onboarding', { replace: true });

  live.start();
  renderLive();
}

/** Inside /app the realtime phase picks the screen. */
function renderLive() {
  if (path() !== '/app' || !me?.gender) return;
  // Back at the chat by any way: the toast that offered the way is done.
  if (toastRun === backToChat.run) toastEl.hidden = true;
  if (live.status === 'connecting' && !live.user) {
    // First connect: avoid flashing the dashboard before a resumed chat.
    if (!current.key?.startsWith('live:')) showLoading('Connecting…');
    return;
  }
  if (live.phase === 'chat' || live.phase === 'ended') mount(chat, 'live:chat');
  else mount(dashboard, 'live:dashboard');
}

// --- chrome: header, notices ----------------------------------------------

const STATUS_TEXT = {
  connecting: 'connecting…',
  online: 'online',
  reconnecting: 'reconnecting…',
  offline: 'offline',
};

function updateChrome() {
  const signedIn = isSignedIn();
  navEl.hidden = !signedIn;
  connEl.hidden = !signedIn || live.status === 'offline';
  connEl.dataset.state = live.status;
  connEl.textContent = STATUS_TEXT[live.status] ?? live.status;
}

let toastTimer = 0;

const toastAction = toastEl.querySelector('.toast-action');
let toastRun = null;

/**
 * Show a short notice (errors from the server, lost connection), with an
 * optional button (`action: {label, run}`).
 */
function toast(message, { action = null } = {}) {
  toastEl.querySelector('.toast-text').textContent = message;
  toastAction.hidden = !action;
  toastAction.textContent = action?.label ?? '';
  toastRun = action?.run ?? null;
  toastEl.hidden = false;
  clearTimeout(toastTimer);
  // One with a button stays until it is used or dismissed: a keyboard or
  // screen-reader user must not lose it (and their focus) to a timer.
  if (action) return;
  toastTimer = setTimeout(() => {
    toastEl.hidden = true;
  }, 7000);
}

toastEl.querySelector('.toast-close').addEventListener('click', () => {
  toastEl.hidden = true;
});
toastAction.addEventListener('click', () => {
  toastEl.hidden = true;
  toastRun?.();
});

const FRIENDLY = {
  RATE_LIMITED: 'Whoa, slow down a little and try again in a moment.',
  OFFLINE: 'Not connected right now. Try again in a moment.',
  UNAUTHORIZED: 'Your sign-in expired. Please sign in again.',
  INTERNAL_ERROR: 'The server tripped. Try again.',
  SERVICE_UNAVAILABLE: 'The server is busy. Try again in a moment.',
};

/** "42 s", "3 min": how long a rate limit asks to wait. */
function waitText(seconds) {
  return seconds < 90 ? `${seconds} s` : `${Math.ceil(seconds / 60)} min`;
}

/** A human sentence for an error `{code, message}`. */
export function friendly(err) {
  if (err?.code === 'RATE_LIMITED') {
    // REST says how long in Retry-After; the socket's `error` in its message.
    const seconds = err.retryAfter ?? Number(/try again in (\d+) s/.exec(err.message ?? '')?.[1] ?? NaN);
    if (Number.isFinite(seconds) && seconds > 0) return `Whoa, slow down: try again in ${waitText(seconds)}.`;
  }
  const said = err?.message ? err.message[0].toUpperCase() + err.message.slice(1) : null;
  return FRIENDLY[err?.code] ?? said ?? 'Something went wrong.';
}
ctx.friendly = friendly;

// Signing out in a chat ends it: the partner is not left waiting for
// someone who went away on purpose. Like End, it takes a second press
// (within SIGN_OUT_CONFIRM_MS). The end goes over the socket, or over REST
// when the socket is down; sign-out follows once it is confirmed, or after
// a short wait if the server cannot be reached (the partner then sees the
// user away, as after any lost connection).
const SIGN_OUT_CONFIRM_MS = 4_000;
const SIGN_OUT_END_WAIT_MS = 3_000;
const signOutButton = document.querySelector('[data-testid="sign-out"]');
let signOutArmed = null;
const disarmSignOut = () => {
  clearTimeout(signOutArmed);
  signOutArmed = null;
  signOutButton.textContent = 'Sign out';
  delete signOutButton.dataset.armed;
};
live.on('phase', (phase) => {
  if (signOutArmed && phase !== 'chat') disarmSignOut();
});
const endChatFirst = async () => {
  const sessionId = live.session.id;
  let off = () => {};
  let timer = 0;
  const ended = new Promise((resolve) => {
    off = live.on('ended', resolve);
    timer = setTimeout(resolve, SIGN_OUT_END_WAIT_MS);
  });
  try {
    if (live.status === 'online' && live.endSession()) {
      await ended;
    } else {
      await Promise.race([api.post('/api/chat/end-session', { sessionId }), ended]);
    }
  } catch {
    // Already ended, or the server is unreachable: sign out all the same.
  } finally {
    off();
    clearTimeout(timer);
  }
};
signOutButton.addEventListener('click', async () => {
  if (isBusy(signOutButton)) return;
  if (live.phase === 'chat' && live.session) {
    if (!signOutArmed) {
      signOutButton.textContent = 'End chat & sign out?';
      signOutButton.dataset.armed = 'true';
      announce('You are in a chat. Press Sign out again to end it and sign out.');
      signOutArmed = setTimeout(disarmSignOut, SIGN_OUT_CONFIRM_MS);
      return;
    }
    disarmSignOut();
    setBusy(signOutButton, true);
    await endChatFirst();
    setBusy(signOutButton, false);
  }
  disarmSignOut();
  // A search ends with the sign-in; the queue would otherwise keep the
  // user for its grace period and might pair them meanwhile.
  if (live.phase === 'searching') live.cancelSearch();
  live.stop();
  await signOut();
  me = null;
  announce('Signed out.');
  navigate('/', { replace: true });
});

// --- realtime wiring -------------------------------------------------------

let wasReconnecting = false;
live.on('status', (status) => {
  updateChrome();
  if (status === 'reconnecting' && !wasReconnecting) {
    wasReconnecting = true;
    announce('Connection lost. Reconnecting…');
  } else if (status === 'online' && wasReconnecting) {
    wasReconnecting = false;
    announce('Reconnected.');
  }
  renderLive();
});
live.on('phase', () => renderLive());
live.on('user', (user) => {
  if (user) ctx.setMe(user);
});
live.on('error', (err) => {
  toast(friendly(err));
  if (err?.action === 'find_match' && err.code === 'CONFLICT') live.resync();
});
// Away from the chat (on the profile page) the chat still happens: say so.
const partnerAlias = () => live.session?.partner?.alias || 'Your stranger';
const backToChat = { label: 'Back to chat', run: () => navigate('/app') };
const awayNews = (text) => {
  if (path() !== '/app') toast(text, { action: backToChat });
};
live.on('messages', ({ added = [] } = {}) => {
  if (added.some((m) => !m.isMe)) awayNews(`New message from ${partnerAlias()}.`);
});
live.on('ended', ({ endedBy } = {}) => {
  if (endedBy !== 'me') awayNews(`${partnerAlias()} ended the chat.`);
});
live.on('matched', () => awayNews(`You are chatting with ${partnerAlias()}.`));
live.on('auth-lost', () => {
  me = null;
  toast('Your sign-in expired. Please sign in again.');
  navigate('/signin', { replace: true });
});

watchOtherTabs();
onAuthChange((signedIn) => {
  if (!signedIn && (me || live.running)) {
    // Signed out here or in another tab.
    live.stop();
    me = null;
    if (path() !== '/auth/verify') navigate('/', { replace: true });
  } else if (signedIn && path() === '/signin') {
    // The magic link was opened in another tab: move on here too.
    render();
  } else {
    updateChrome();
  }
});

render();
