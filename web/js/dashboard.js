// Home inside /app: how many people are online, and "find someone random"
// with its searching state (waiting counts, cancel). The phase comes from
// the socket; this screen only renders it.

import { api } from './api.js';
import { announce, h, replaceChildren } from './dom.js';

/** Waiting counts are not pushed; poll them this often while searching. */
const WAITING_POLL_MS = 4_000;
/** And the online count this often while idle (pushes cover most changes). */
const IDLE_POLL_MS = 30_000;
/** A search this long without a match explains why people waiting are not matches. */
const HINT_AFTER_MS = 12_000;

const SEEKING_TEXT = { girl: 'girls', dude: 'dudes', any: 'anyone' };

export function mount(root, ctx) {
  const { live } = ctx;
  let alive = true;
  let pollTimer = 0;

  const heading = h('h1', { class: 'title' });
  const countNumber = h('strong', { class: 'count' }, '–');
  const online = h('p', { class: 'online', 'data-testid': 'online-count' }, h('span', { class: 'dot', 'aria-hidden': 'true' }), countNumber, ' online now');

  const findButton = h('button', { class: 'btn primary huge', type: 'button', 'data-testid': 'find-match' }, 'Find someone random');
  const seekingNote = h('p', { class: 'muted small' });
  const idleBox = h('div', { class: 'idle stack center' }, findButton, seekingNote);

  const searchHeading = h('h2', { class: 'subtitle' }, 'Looking for someone…');
  const waiting = h('p', { class: 'muted', 'data-testid': 'waiting-counts' });
  const hint = h(
    'p',
    { class: 'muted small', 'data-testid': 'search-hint', hidden: true },
    'Still looking. The counts are everyone searching, you too, but IO never pairs the same two people twice and only pairs people looking for each other, so someone waiting may not be a match for you.',
  );
  let hintTimer = 0;
  const cancel = h('button', { class: 'btn ghost', type: 'button', 'data-testid': 'cancel-search' }, 'Cancel');
  const searchBox = h(
    'div',
    { class: 'searching stack center', 'data-testid': 'searching', 'aria-busy': 'true' },
    h('div', { class: 'radar', 'aria-hidden': 'true' }, h('span'), h('span'), h('span')),
    searchHeading,
    waiting,
    hint,
    cancel,
  );

  root.append(h('section', { class: 'panel dashboard' }, heading, online, idleBox, searchBox));

  const paintHeading = () => {
    heading.textContent = ctx.me?.alias ? `Hey, ${ctx.me.alias}` : 'Hey there';
    const seeking = SEEKING_TEXT[ctx.me?.seeking] ?? 'anyone';
    replaceChildren(seekingNote, `You are meeting ${seeking}. `, h('a', { href: '/profile', 'data-link': true }, 'Change'));
  };

  const paintCount = (count) => {
    if (Number.isFinite(count)) countNumber.textContent = String(count);
  };

  const paintWaiting = (w) => {
    if (!w) return;
    const dudes = Number(w.dude) || 0;
    const girls = Number(w.girl) || 0;
    // While searching, the counts include this user: say so, or a lone
    // searcher reads "1 dude" as somebody else.
    const you = live.phase === 'searching' && live.searchConfirmed ? ', you included' : '';
    waiting.textContent = `Waiting right now${you}: ${dudes} ${dudes === 1 ? 'dude' : 'dudes'} · ${girls} ${girls === 1 ? 'girl' : 'girls'}`;
    waiting.dataset.dude = String(dudes);
    waiting.dataset.girl = String(girls);
  };

  // Only the newest poll paints and schedules the next one, so overlapping
  // polls (a timer and a `searching` confirmation) never fork the chain.
  let pollSeq = 0;
  const poll = async () => {
    clearTimeout(pollTimer);
    const seq = ++pollSeq;
    try {
      const body = await api.get('/api/users/online-count');
      if (!alive || seq !== pollSeq) return;
      paintCount(body?.count);
      paintWaiting(body?.waiting);
    } catch {
      // The pushed online_count keeps the number roughly right meanwhile.
    }
    if (alive && seq === pollSeq) pollTimer = setTimeout(poll, live.phase === 'searching' ? WAITING_POLL_MS : IDLE_POLL_MS);
  };

  /**
   * Until the server confirms the search the user is not in its queue yet,
   * so counts fetched now would leave them out: say so, and fetch once the
   * `searching` event arrives (the timer is only a fallback).
   */
  const awaitConfirmation = () => {
    pollSeq += 1;
    clearTimeout(pollTimer);
    waiting.textContent = 'Joining the queue…';
    delete waiting.dataset.dude;
    delete waiting.dataset.girl;
    pollTimer = setTimeout(poll, WAITING_POLL_MS);
  };

  // A search the server confirmed; one it refused (a rate limit) never ran.
  let confirmed = live.phase === 'searching' && live.searchConfirmed;
  const paintPhase = (announceIt) => {
    const searching = live.phase === 'searching';
    const stopped = confirmed && !searching;
    if (!searching) confirmed = false;
    idleBox.hidden = searching;
    searchBox.hidden = !searching;
    clearTimeout(hintTimer);
    hint.hidden = true;
    if (searching) {
      hintTimer = setTimeout(() => (hint.hidden = false), HINT_AFTER_MS);
      if (announceIt) announce('Searching for someone. Press Cancel to stop.');
      if (document.activeElement === findButton || document.activeElement === document.body) cancel.focus();
      if (live.searchConfirmed) poll();
      else awaitConfirmation();
    } else if (announceIt && stopped) {
      announce('Search stopped.');
      if (document.activeElement === cancel || document.activeElement === document.body) findButton.focus();
    }
  };

  findButton.addEventListener('click', () => live.findMatch());
  cancel.addEventListener('click', () => live.cancelSearch());

  const offs = [
    live.on('online', paintCount),
    live.on('phase', () => paintPhase(true)),
    live.on('searching', () => {
      confirmed = true;
      poll();
    }),
    live.on('user', paintHeading),
  ];

  paintHeading();
  paintCount(live.onlineCount);
  paintPhase(false);
  if (live.phase !== 'searching') poll();

  return {
    focus: live.phase === 'searching' ? cancel : heading,
    unmount() {
      alive = false;
      clearTimeout(pollTimer);
      clearTimeout(hintTimer);
      for (const off of offs) off();
    },
  };
}
