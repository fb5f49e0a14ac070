// The chat (phase `chat`) and, once it ends, the rating screen (phase
// `ended`). Everything shown comes from `live` (socket.js); user text is
// placed with text nodes only.

import { announce, clock, focusEl, h, replaceChildren } from './dom.js';
import { api } from './api.js';
import { MAX_MESSAGE_CHARS, MAX_REVEAL_ASKS, messageLength } from './socket.js';

const VIBES = [
  [1, 'Boring', '😴'],
  [2, 'Okay', '🙂'],
  [3, 'Fire', '🔥'],
  [4, 'Legendary', '👑'],
];
const GENDER_EMOJI = { dude: '🕺', girl: '💃' };
/**
 * Screens where open identity cards would squeeze the conversation (phones,
 * 30rem being app.css's small-screen breakpoint, and short landscape ones):
 * the cards start collapsed there.
 */
const COMPACT_QUERY = '(max-width: 30rem), (max-height: 36rem)';
/** How long a partner may be away before the chat says they left. */
const LEFT_GRACE_MS = 4000;
/** How long a first press of End waits for the second. */
const END_CONFIRM_MS = 4000;
/** A second press sooner than this is the same press (a double click). */
const END_DOUBLE_MS = 400;

export function mount(root, ctx) {
  const { live } = ctx;
  const container = h('div', { class: 'chat-screen' });
  root.append(container);
  let view = null;
  let viewKey = null;

  const show = () => {
    const key = `${live.phase}:${live.session?.id ?? ''}`;
    if (key === viewKey || !live.session) return null;
    view?.dispose();
    viewKey = key;
    view = live.phase === 'ended' ? ratingView(ctx) : chatView(ctx);
    replaceChildren(container, view.el);
    return view.focus;
  };

  const off = [
    live.on('phase', () => {
      const focus = show();
      if (focus) focusEl(focus);
    }),
    live.on('matched', () => {
      // A new session while this screen is up (matched in another tab).
      const focus = show();
      if (focus) focusEl(focus);
    }),
  ];

  const focus = show();
  return {
    focus,
    unmount() {
      for (const o of off) o();
      view?.dispose();
    },
  };
}

// --- identity cards ---------------------------------------------------------

function identityCard(card, title, testid) {
  const rows = [
    ['Alias', card?.alias],
    ['Name', card?.realName],
    ['About', card?.details],
    ['Email', card?.email],
  ].filter(([, v]) => v);
  return h(
    'article',
    { class: 'id-card', 'data-testid': testid },
    h('h2', {}, title),
    rows.length
      ? h('dl', {}, rows.map(([k, v]) => [h('dt', {}, k), h('dd', { dir: 'auto' }, v)]))
      : h('p', { class: 'muted' }, 'Nothing on this card.'),
  );
}

/**
 * Both cards under an "Identity cards" summary: open on a big screen,
 * folded on a small one, where open they would push the conversation or
 * the rating off the screen. `onChosen` hears the person open or fold them.
 */
function foldableCards(identities, onChosen = () => {}) {
  const open = !globalThis.matchMedia?.(COMPACT_QUERY)?.matches;
  const summary = h('summary', { onclick: onChosen }, 'Identity cards');
  return h('details', { class: 'cards-wrap', open }, summary, identityCards(identities));
}

function identityCards(identities) {
  return h(
    'section',
    { class: 'cards', 'aria-label': 'Identity cards', 'data-testid': 'identity-cards' },
    identityCard(identities.partner, 'Them', 'identity-card-partner'),
    identityCard(identities.me, 'You', 'identity-card-me'),
  );
}

// --- chat -----------------------------------------------------------------

/** A message's bubble: who (for screen readers), the text, and a meta line. */
function bubble(item, alias, testid) {
  return h(
    'li',
    { class: `msg ${item.isMe ? 'mine' : 'theirs'}`, 'data-testid': testid },
    h('span', { class: 'visually-hidden' }, item.isMe ? 'You: ' : `${alias}: `),
    h('p', { class: 'msg-text', dir: 'auto' }, item.content),
    h('p', { class: 'msg-meta' }),
  );
}

function chatView(ctx) {
  const { live } = ctx;
  const session = live.session;
  const alias = session.partner?.alias || 'Stranger';
  const offs = [];
  const timers = new Set();
  const later = (fn, ms) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };

  // Header: who, presence, actions.
  const heading = h(
    'h1',
    { class: 'chat-title' },
    h('span', { class: 'visually-hidden' }, 'Chatting with '),
    alias,
    session.partner?.gender
      ? [
          h('span', { class: 'badge', 'aria-hidden': 'true' }, GENDER_EMOJI[session.partner.gender] ?? ''),
          h('span', { class: 'visually-hidden' }, ` (${session.partner.gender})`),
        ]
      : null,
  );
  const partnerStatus = h('p', { class: 'presence', 'data-testid': 'partner-status' });
  const revealButton = h('button', { class: 'btn cyan small', type: 'button', 'data-testid': 'reveal-request' }, 'Reveal');
  revealButton.setAttribute('aria-label', 'Ask to reveal identities');
  const endButton = h('button', { class: 'btn danger small', type: 'button', 'data-testid': 'end-session' }, 'End');
  endButton.setAttribute('aria-label', 'End the chat');
  const header = h(
    'header',
    { class: 'chat-head' },
    h('div', { class: 'who' }, heading, partnerStatus),
    h('div', { class: 'row tight' }, revealButton, endButton),
  );

  // Banners and the reveal flow.
  const banner = h('p', { class: 'banner', 'data-testid': 'partner-banner', hidden: true });
  const acceptButton = h('button', { class: 'btn lime small', type: 'button', 'data-testid': 'reveal-accept' }, 'Yes, reveal');
  const declineButton = h('button', { class: 'btn ghost small', type: 'button', 'data-testid': 'reveal-decline' }, 'No thanks');
  const promptText = h('p', {});
  // Someone about to say yes with an empty card would show only the alias
  // the partner already knows: say so before, not after.
  const emptyCardHint = h(
    'p',
    { class: 'muted small', 'data-testid': 'empty-card-hint', hidden: true },
    'Your identity card is empty, so they would see only your alias. ',
    h('a', { href: '/profile#card', 'data-link': true }, 'Fill it in first'),
  );
  let cardChecked = false;
  const checkOwnCard = () => {
    if (cardChecked) return;
    cardChecked = true;
    api
      .get('/api/users/profile')
      .then((body) => {
        const p = body?.profile ?? {};
        emptyCardHint.hidden = Boolean(p.realName || p.details || p.revealEmail);
      })
      .catch(() => {
        cardChecked = false;
      });
  };
  const prompt = h(
    'section',
    { class: 'reveal-prompt', 'data-testid': 'reveal-prompt', 'aria-label': 'Reveal request', hidden: true },
    promptText,
    emptyCardHint,
    h('div', { class: 'row tight' }, acceptButton, declineButton),
  );
  const revealStatus = h('p', { class: 'reveal-status muted small', 'data-testid': 'reveal-status', hidden: true });
  const cardsSlot = h('div', { class: 'cards-slot' });

  // Messages.
  const list = h('ol', { class: 'messages', 'aria-label': 'Messages', tabindex: '0', 'data-testid': 'messages' });
  const intro = h(
    'li',
    { class: 'system' },
    `You are chatting with ${alias}. Be kind; either of you can end it any time.`,
  );
  list.append(intro);
  const typing = h(
    'p',
    { class: 'typing', 'data-testid': 'typing-indicator', hidden: true },
    `${alias} is typing`,
    h('span', { class: 'dots', 'aria-hidden': 'true' }, h('span', {}, '.'), h('span', {}, '.'), h('span', {}, '.')),
  );

  // Composer.
  const input = h('textarea', {
    id: 'message-input',
    class: 'composer-input',
    'data-testid': 'message-input',
    rows: 1,
    enterkeyhint: 'send',
    dir: 'auto',
    placeholder: 'Say something…',
    'aria-describedby': 'composer-help',
  });
  const sendButton = h('button', { class: 'btn primary', type: 'submit', 'data-testid': 'send-message' }, 'Send');
  const counter = h('span', { class: 'counter' });
  const composer = h(
    'form',
    { class: 'composer' },
    h('label', { for: 'message-input', class: 'visually-hidden' }, `Message to ${alias}`),
    input,
    sendButton,
    h('p', { id: 'composer-help', class: 'visually-hidden' }, 'Enter sends, Shift+Enter adds a new line.'),
    counter,
  );

  const el = h('section', { class: 'chat' }, header, banner, prompt, revealStatus, cardsSlot, list, typing, composer);

  // --- messages --------------------------------------------------------------

  const nodes = new Map();
  const keyOf = (item) => (item.isMe && item.clientMsgId ? `c:${item.clientMsgId}` : `i:${item.id}`);

  const makeBubble = (item) => bubble(item, alias, 'message');

  const paintBubble = (li, item) => {
    const state = `${item.status}|${item.seq}|${item.error}`;
    if (li.dataset.paint === state) return;
    li.dataset.paint = state;
    li.dataset.mine = String(Boolean(item.isMe));
    li.dataset.status = item.status;
    if (item.seq) li.dataset.seq = String(item.seq);
    else delete li.dataset.seq;
    if (item.clientMsgId) li.dataset.clientMsgId = item.clientMsgId;
    if (item.id) li.dataset.id = item.id;
    li.className = `msg ${item.isMe ? 'mine' : 'theirs'} ${item.status}`;
    const meta = li.querySelector('.msg-meta');
    const time = h('time', { datetime: item.createdAt ?? '' }, clock(item.createdAt));
    if (item.status === 'pending') {
      replaceChildren(meta, time, ' · sending…');
    } else if (item.status === 'failed') {
      replaceChildren(
        meta,
        h('span', { class: 'failed-text' }, `Not sent: ${item.error || 'error'}`),
        ' ',
        h('button', { class: 'link', type: 'button', 'data-testid': 'message-retry', onclick: () => live.retryMessage(item.clientMsgId) }, 'Retry'),
        ' ',
        h('button', { class: 'link', type: 'button', 'data-testid': 'message-discard', onclick: () => live.discardMessage(item.clientMsgId) }, 'Discard'),
      );
    } else {
      replaceChildren(meta, time);
    }
  };

  const isNearBottom = () => list.scrollHeight - list.scrollTop - list.clientHeight < 120;

  const paintMessages = () => {
    const nearBottom = isNearBottom();
    const items = live.timeline.items();
    const seen = new Set();
    let cursor = intro;
    let mineAdded = false;
    for (const item of items) {
      const key = keyOf(item);
      seen.add(key);
      let li = nodes.get(key);
      if (!li) {
        li = makeBubble(item);
        nodes.set(key, li);
        if (item.isMe) mineAdded = true;
      }
      paintBubble(li, item);
      if (cursor.nextSibling !== li) cursor.after(li);
      cursor = li;
    }
    for (const [key, li] of nodes) {
      if (!seen.has(key)) {
        li.remove();
        nodes.delete(key);
      }
    }
    if (nearBottom || mineAdded) list.scrollTop = list.scrollHeight;
  };

  // The list gets shorter when the cards open, the keyboard comes up or the
  // phone turns: whoever was reading the newest messages keeps seeing them.
  // A scroll that comes with a new height of the list is the browser's own
  // (clamping, scroll anchoring), dispatched before the resize is observed:
  // read as the reader's, it would unpin the one at the newest message.
  let pinned = true;
  let seenHeight = list.clientHeight;
  const resized = globalThis.ResizeObserver
    ? new ResizeObserver(() => {
        seenHeight = list.clientHeight;
        if (pinned) list.scrollTop = list.scrollHeight;
      })
    : null;
  list.addEventListener(
    'scroll',
    () => {
      if (resized && list.clientHeight !== seenHeight) return;
      pinned = isNearBottom();
    },
    { passive: true },
  );
  resized?.observe(list);
  offs.push(() => resized?.disconnect());

  offs.push(
    live.on('messages', ({ added = [] } = {}) => {
      paintMessages();
      const theirs = added.filter((m) => !m.isMe);
      if (theirs.length > 3) announce(`${theirs.length} new messages from ${alias}.`);
      else for (const m of theirs) announce(`${alias}: ${m.content}`);
    }),
  );

  // --- composer --------------------------------------------------------------

  const grow = () => {
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
  };

  // Text over the limit (a long paste) is kept whole and refused with a
  // reason, never cut short without a word.
  const paintCounter = () => {
    const n = messageLength(input.value);
    const over = n > MAX_MESSAGE_CHARS;
    counter.textContent = over
      ? `${n} / ${MAX_MESSAGE_CHARS} · ${n - MAX_MESSAGE_CHARS} too many`
      : n > MAX_MESSAGE_CHARS - 200
        ? `${n} / ${MAX_MESSAGE_CHARS}`
        : '';
    // Said once as the text goes over, not at every keystroke.
    if (over && !counter.classList.contains('over')) {
      announce(`Too long: ${n} characters, the limit is ${MAX_MESSAGE_CHARS}.`);
    }
    counter.classList.toggle('over', over);
    input.setAttribute('aria-invalid', String(over));
  };

  composer.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    const n = messageLength(text);
    if (n > MAX_MESSAGE_CHARS) {
      announce(`Not sent: your message has ${n} characters, the limit is ${MAX_MESSAGE_CHARS}.`);
      input.focus();
      return;
    }
    if (live.sendMessage(text)) {
      input.value = '';
      grow();
      paintCounter();
    }
    input.focus();
  });

  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  input.addEventListener('input', () => {
    grow();
    paintCounter();
    if (input.value.trim()) live.noteTyping();
    else live.stopTyping();
  });
  input.addEventListener('blur', () => live.stopTyping());

  // A half-typed message survives a trip to another page (the profile) and
  // back; it is kept in this tab's memory only.
  const draftOf = live.session?.id;
  if (draftOf && live.draft?.sessionId === draftOf) {
    input.value = live.draft.text;
    grow();
    paintCounter();
  }
  offs.push(() => {
    live.draft = live.running && draftOf && input.value ? { sessionId: draftOf, text: input.value } : null;
  });

  // --- presence and typing ---------------------------------------------------

  // A partner who is gone for a moment (a reload, a network blip) is only
  // marked away; the banner says they left if they stay away a while, and
  // that they are back only if it said they left.
  let presenceEpoch = 0;
  let leftShown = false;
  const showBanner = (text, state) => {
    banner.textContent = text;
    banner.dataset.state = state;
    banner.hidden = false;
    announce(text);
  };
  const paintPresence = (changed) => {
    const online = live.partnerOnline;
    // While this page is off line, the partner's last known state is news
    // no more.
    const known = live.status === 'online';
    partnerStatus.dataset.state = known ? (online ? 'online' : 'away') : 'unknown';
    partnerStatus.textContent = known ? (online ? 'here' : 'away') : 'unknown';
    if (!changed) return;
    const epoch = ++presenceEpoch;
    if (banner.dataset.state === 'joined') banner.hidden = true;
    if (!online) {
      later(() => {
        if (epoch !== presenceEpoch || live.partnerOnline) return;
        leftShown = true;
        showBanner(`${alias} is away: their connection closed. They may come back, or you can end the chat.`, 'left');
      }, LEFT_GRACE_MS);
      return;
    }
    if (!leftShown) return;
    leftShown = false;
    showBanner(`${alias} is back.`, 'joined');
    later(() => {
      if (epoch === presenceEpoch) banner.hidden = true;
    }, 5000);
  };
  offs.push(live.on('presence', () => paintPresence(true)));
  offs.push(live.on('status', () => paintPresence(false)));

  offs.push(
    live.on('typing', (on) => {
      typing.hidden = !on;
    }),
  );

  // --- reveal ----------------------------------------------------------------

  // Identity cards start collapsed on a small screen and follow its size
  // (a rotated phone) until the person opens or closes them.
  const compact = globalThis.matchMedia?.(COMPACT_QUERY) ?? null;
  let cardsDetails = null;
  let cardsChosen = false;
  const onCompactChange = () => {
    if (cardsDetails && !cardsChosen) cardsDetails.open = !compact.matches;
  };
  compact?.addEventListener('change', onCompactChange);
  offs.push(() => compact?.removeEventListener('change', onCompactChange));

  const paintReveal = () => {
    const s = live.session;
    const { state = 'none', requestedBy = null } = s?.reveal ?? {};
    const identities = s?.identities ?? null;
    prompt.hidden = !(state === 'pending' && requestedBy === 'partner');
    if (!prompt.hidden) checkOwnCard();
    promptText.textContent = `${alias} wants to reveal identities. Only if you say yes do you both see each other's card.`;
    if (document.activeElement === revealButton && ['pending', 'answering', 'accepted'].includes(state)) input.focus(); // before it hides: focus would drop to <body>
    // Declined as often as one may ask: the next move is the partner's.
    const outOfAsks = state === 'declined' && requestedBy === 'me' && (s?.myAsks ?? 0) >= MAX_REVEAL_ASKS;
    revealButton.hidden = state === 'pending' || state === 'answering' || state === 'accepted' || outOfAsks;
    // Only the one who asked and was declined asks *again*.
    revealButton.textContent = state === 'declined' && requestedBy === 'me' ? 'Ask again' : 'Reveal';
    let status = '';
    let testid = 'reveal-status';
    if (state === 'pending' && requestedBy === 'me') status = `Reveal request sent. Waiting for ${alias}…`;
    else if (state === 'answering') status = 'Sending your answer…';
    else if (state === 'accepted') status = 'You both said yes. Here are the cards.';
    else if (state === 'declined') {
      if (requestedBy !== 'me') status = 'You declined to reveal.';
      else if (outOfAsks) status = `${alias} declined ${MAX_REVEAL_ASKS} times: it is up to them now.`;
      else status = `${alias} declined to reveal.`;
      testid = 'reveal-declined';
    }
    revealStatus.textContent = status;
    revealStatus.hidden = !status;
    revealStatus.dataset.testid = testid;
    // Collapsible in the chat, so the cards never push the conversation
    // off a small screen.
    if (state !== 'accepted' || !identities) {
      replaceChildren(cardsSlot);
      cardsDetails = null;
    } else if (!cardsSlot.firstChild) {
      cardsDetails = foldableCards(identities, () => (cardsChosen = true));
      replaceChildren(cardsSlot, cardsDetails);
    }
  };

  // A resume may bring a reveal that changed while we were offline.
  offs.push(live.on('session', () => paintReveal()));

  revealButton.addEventListener('click', () => {
    if (live.requestReveal()) announce('Reveal request sent.');
  });
  acceptButton.addEventListener('click', () => {
    live.respondReveal(true);
    input.focus();
  });
  declineButton.addEventListener('click', () => {
    live.respondReveal(false);
    input.focus();
  });

  offs.push(
    live.on('reveal', ({ kind, alias: requester } = {}) => {
      paintReveal();
      if (kind === 'requested') {
        // Announced only: focus stays where it is, so a keystroke meant for
        // the message box (Enter) never answers the request by accident.
        announce(`${requester || alias} wants to reveal identities. Accept or decline.`);
      } else if (kind === 'accepted') {
        announce('Revealed! Both identity cards are shown.');
      } else if (kind === 'declined') {
        announce(revealStatus.textContent);
      }
    }),
  );

  // --- end -------------------------------------------------------------------

  // Ending takes two presses: the first arms the button for a few seconds,
  // so a stray tap (it sits next to Reveal) ends nothing; a double click
  // counts as the first press only.
  let armEpoch = 0;
  let armedAt = 0;
  const arm = (armed) => {
    armEpoch += 1;
    armedAt = armed ? Date.now() : 0;
    endButton.dataset.armed = String(armed);
    endButton.textContent = armed ? 'End chat?' : 'End';
    endButton.setAttribute('aria-label', armed ? 'Press again to end the chat' : 'End the chat');
  };
  endButton.addEventListener('click', () => {
    if (endButton.dataset.armed !== 'true') {
      arm(true);
      announce('Press End again to end the chat.');
      const epoch = armEpoch;
      later(() => {
        if (epoch === armEpoch) arm(false);
      }, END_CONFIRM_MS);
      return;
    }
    if (Date.now() - armedAt < END_DOUBLE_MS) return;
    arm(false);
    if (live.endSession()) {
      endButton.disabled = true;
      later(() => (endButton.disabled = false), 8000);
    }
  });
  offs.push(
    live.on('error', (err) => {
      if (err?.action === 'end_session') endButton.disabled = false;
    }),
  );

  paintMessages();
  paintPresence(false);
  paintReveal();
  if (live.session?.reveal?.state === 'pending' && live.session.reveal.requestedBy === 'partner') {
    announce(`${alias} wants to reveal identities. Accept or decline.`);
  } else {
    announce(`You are chatting with ${alias}.`);
  }
  requestAnimationFrame(() => {
    list.scrollTop = list.scrollHeight;
    grow(); // a restored draft of several lines: measurable once attached
  });

  return {
    el,
    focus: input,
    dispose() {
      for (const o of offs) o();
      for (const t of timers) clearTimeout(t);
      live.stopTyping();
    },
  };
}

// --- rating -----------------------------------------------------------------


function ratingView(ctx) {
  const { live } = ctx;
  const session = live.session;
  const alias = session.partner?.alias || 'your stranger';
  const offs = [];

  const heading = h('h1', { class: 'title' }, 'Chat ended');
  const endedBy = session.endedBy;
  const who =
    endedBy === 'me' ? `You ended the chat with ${alias}.` : endedBy === 'partner' ? `${alias} ended the chat.` : `Your chat with ${alias} is over.`;

  const buttons = VIBES.map(([value, label, emoji]) =>
    h(
      'button',
      { class: `vibe vibe-${value}`, type: 'button', 'data-testid': `rate-${value}`, 'aria-pressed': 'false' },
      h('span', { class: 'emoji', 'aria-hidden': 'true' }, emoji),
      h('span', { class: 'vibe-label' }, label),
    ),
  );
  const thanks = h('p', { class: 'thanks', 'data-testid': 'rating-thanks', hidden: true });
  const again = h('button', { class: 'btn primary big', type: 'button', 'data-testid': 'again', hidden: true }, 'Again!');
  const home = h('button', { class: 'btn ghost', type: 'button', 'data-testid': 'back-home', hidden: true }, 'Home');
  const skip = h('button', { class: 'btn ghost', type: 'button', 'data-testid': 'skip-rating' }, 'Skip');

  // The conversation stays readable: a last message that arrived as the
  // chat ended is seen here, not lost with the chat screen.
  // Its box scrolls from the bottom up (app.css), so the newest message is
  // what shows first.
  const transcriptList = h('ol', { class: 'transcript-list' });
  const transcript = h(
    'div',
    { class: 'transcript', role: 'region', 'aria-label': `Your chat with ${alias}`, tabindex: '0', 'data-testid': 'transcript' },
    transcriptList,
  );
  const paintTranscript = () => {
    // Own messages that never went out (the chat ended first) stay, marked.
    const items = live.timeline.items().filter((m) => m.status === 'sent' || m.status === 'failed');
    transcript.hidden = items.length === 0;
    replaceChildren(
      transcriptList,
      items.map((m) => {
        const li = bubble(m, alias, 'transcript-message');
        li.classList.add(m.status);
        li.querySelector('.msg-meta').append(
          m.status === 'failed'
            ? h('span', { class: 'failed-text' }, `Not delivered: ${m.error || 'not sent'}`)
            : h('time', { datetime: m.createdAt ?? '' }, clock(m.createdAt)),
        );
        return li;
      }),
    );
  };
  paintTranscript();
  offs.push(live.on('messages', paintTranscript));

  const el = h(
    'section',
    { class: 'panel rating' },
    heading,
    h('p', { class: 'lede', 'data-testid': 'ended-by' }, who),
    transcript,
    // Above the rating (folded on a phone), so no one skips past them unseen.
    session.reveal?.state === 'accepted' && session.identities ? foldableCards(session.identities) : null,
    h('fieldset', { class: 'vibes' }, h('legend', {}, 'How was the vibe?'), h('div', { class: 'vibe-row' }, buttons)),
    thanks,
    h('div', { class: 'row center' }, again, home, skip),
  );

  const paintRated = (rating, announceIt) => {
    const vibe = VIBES.find(([v]) => v === rating);
    for (const [i, b] of buttons.entries()) {
      b.setAttribute('aria-pressed', String(i + 1 === rating));
      b.disabled = true;
    }
    thanks.textContent = `Thanks! You called it ${vibe ? vibe[1].toLowerCase() : rating}.`;
    thanks.hidden = false;
    again.hidden = false;
    home.hidden = false;
    skip.hidden = true;
    if (announceIt) {
      announce(thanks.textContent);
      focusEl(again);
    }
  };

  for (const [i, b] of buttons.entries()) {
    b.addEventListener('click', () => {
      if (live.rate(i + 1)) {
        for (const other of buttons) other.disabled = true;
        b.setAttribute('aria-pressed', 'true');
      }
    });
  }
  again.addEventListener('click', () => live.findMatch());
  home.addEventListener('click', () => live.leaveEnded());
  skip.addEventListener('click', () => live.skipRating());

  offs.push(live.on('rated', ({ rating }) => paintRated(rating, true)));
  offs.push(
    live.on('error', (err) => {
      if (err?.action !== 'rate_session') return;
      if (err.code === 'CONFLICT') {
        // Rated already (another tab): nothing left to do here.
        thanks.textContent = 'This chat is already rated.';
        thanks.hidden = false;
        again.hidden = false;
        home.hidden = false;
        skip.hidden = true;
        return;
      }
      for (const b of buttons) {
        b.disabled = false;
        b.setAttribute('aria-pressed', 'false');
      }
    }),
  );

  if (session.myRating) paintRated(session.myRating, false);
  announce(`${who} How was the vibe?`);

  return {
    el,
    focus: heading,
    dispose() {
      for (const o of offs) o();
    },
  };
}
