// The one owner of the WebSocket (design 3.3) and of the realtime state it
// feeds: connection status, online count, and where the user stands (idle,
// searching, in a chat, or on the rating screen of an ended one).
//
// Reliability rules kept here and nowhere else:
// - join first; resume from `connected.session` after every (re)connect;
// - reconnect with exponential backoff and full jitter after any close we did
//   not ask for; on 4401 refresh the access token first, and give up to the
//   sign-in screen only when the refresh itself is refused;
// - keep the access token fresh before it expires, so a reconnect never
//   starts with a stale one;
// - fill holes in the message list from the REST history (`after=` the last
//   contiguous seq), and resend unacknowledged messages with the SAME
//   clientMsgId (the server deduplicates), so the list has no duplicates and
//   no holes.
// Screens subscribe with `live.on(event, fn)` and call the action methods;
// they never touch the socket.

import { api, ApiError, freshAccessToken, loadTokens, refreshTokens, REFRESH_MARGIN_MS } from './api.js';
import { Timeline, backoffDelay } from './timeline.js';

/** No `connected` within this long after opening: treat the socket as dead. */
const JOIN_TIMEOUT_MS = 12_000;
/** An unacknowledged message this old on an open socket means it is half-dead. */
const ACK_TIMEOUT_MS = 15_000;
/** Hide the partner's typing indicator if no refresh came in this long. */
const TYPING_EXPIRE_MS = 6_000;
/** Send typing_stop after this much idle time. */
const TYPING_IDLE_MS = 2_500;
/** Re-send typing_start this often while typing, so the partner's indicator stays. */
const TYPING_REFRESH_MS = 3_000;
/** Minimum gap between typing frames: the server allows 2 per second. */
const TYPING_MIN_GAP_MS = 600;
/** History page size for gap fills. */
const PAGE = 100;
/** Automatic retries of one message after a transient error. */
const MAX_MESSAGE_RETRIES = 4;

const OUTBOX_KEY = 'io.outbox';
const SKIPPED_RATING_KEY = 'io.skippedRating';
/**
 * This tab was searching, `{user, at}`: a reload soon after keeps searching
 * (per tab, so a closed tab forgets it).
 */
const SEARCHING_KEY = 'io.searching';
/** How long the server's queue keeps a user with no socket. */
const SEARCH_RESUME_MS = 10_000;
/** Control characters the server refuses in a message (line breaks and tabs are text). */
const CONTROL_CHARS = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/g;
/**
 * Text that shows nothing: white space, zero-width and other format
 * characters, fillers (the server's `MessageContent` refuses it as empty).
 */
const INVISIBLE_ONLY =
  /^[\s\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\u{1d173}-\u{1d17a}\u{e0000}-\u{e0fff}]*$/u;

export const MAX_MESSAGE_CHARS = 2000;
/** Reveal requests one person may make in one chat (the server's limit). */
export const MAX_REVEAL_ASKS = 3;

/** A message's text as it is sent and counted: no control characters, trimmed. */
function messageText(text) {
  return String(text ?? '').replace(CONTROL_CHARS, '').trim();
}

/** A message's length as the server counts it: characters, not UTF-16 units. */
export function messageLength(text) {
  return [...messageText(text)].length;
}

/** A UUID for clientMsgId; randomUUID exists only in secure contexts. */
export function newClientMsgId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function readJson(key) {
  try {
    return JSON.parse(globalThis.localStorage?.getItem(key) ?? 'null');
  } catch {
    return null;
  }
}

function writeJson(key, value) {
  try {
    if (value === null) globalThis.localStorage?.removeItem(key);
    else globalThis.localStorage?.setItem(key, JSON.stringify(value));
  } catch {
    // Storage full or disabled: unsent messages then live only in memory.
  }
}

class Live {
  constructor() {
    this.listeners = new Map();
    /** `offline` (stopped) | `connecting` | `online` | `reconnecting`. */
    this.status = 'offline';
    /** Whether we want a connection (false after stop / sign-out). */
    this.running = false;
    this.ws = null;
    /** The chat view's unsent text, `{sessionId, text}`, kept while the user is on another page. */
    this.draft = null;
    /** True while a connect is fetching its token, so two never race. */
    this.connecting = false;
    this.attempt = 0;
    this.retryTimer = 0;
    this.joinTimer = 0;
    this.refreshTimer = 0;
    this.refSeq = 0;
    /** ref → {onError, at}: errors answer the frame that carried the ref. */
    this.pendingRefs = new Map();
    this.user = null;
    this.node = null;
    this.onlineCount = null;
    /** `idle` | `searching` | `chat` | `ended`. */
    this.phase = 'idle';
    /**
     * The server has answered the current search with `searching`, so the
     * user is in its queue (the phase turns `searching` at the click, before).
     */
    this.searchConfirmed = false;
    /** The current SessionView (without `messages`), or null. */
    this.session = null;
    this.timeline = new Timeline();
    this.partnerTyping = false;
    this.partnerOnline = true;
    this.typingTimer = 0;
    this.typingState = { sent: 'typing_stop', lastAt: 0, lastStartAt: 0, next: null, timer: 0, idle: 0 };
    this.fillInFlight = null;
    this.fillRetryTimer = 0;
    this.ackTimers = new Map();
    this.retries = new Map();
    this.busy = new Set();
    this.onWindowOnline = () => {
      if (this.running && !this.ws) this.connectNow();
    };
    // A reload's clock for resuming a search starts when the page goes.
    this.onPageHide = () => this.noteSearching();
    // Offline, a socket can stay open for a long time while nothing gets
    // through: drop it, so the page says so, and reconnect once online.
    this.onWindowOffline = () => {
      const ws = this.ws;
      if (!this.running || !ws) return;
      this.onClose(ws, { code: 4000 }, null);
      ws.close(4000, 'offline');
    };
  }

  // --- events ---------------------------------------------------------------

  /** Subscribe; returns the unsubscribe function. */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type)?.delete(fn);
  }

  emit(type, detail) {
    for (const fn of this.listeners.get(type) ?? []) {
      try {
        fn(detail);
      } catch (e) {
        console.error(`live: ${type} listener failed`, e);
      }
    }
  }

  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.emit('status', status);
  }

  setPhase(phase) {
    if (this.phase === phase) return;
    if (phase !== 'searching') this.searchConfirmed = false;
    this.phase = phase;
    this.noteSearching();
    this.emit('phase', phase);
  }

  // --- lifecycle ------------------------------------------------------------

  /** Connect (idempotent). */
  start() {
    if (this.running) return;
    this.running = true;
    this.attempt = 0;
    globalThis.addEventListener?.('online', this.onWindowOnline);
    globalThis.addEventListener?.('offline', this.onWindowOffline);
    globalThis.addEventListener?.('pagehide', this.onPageHide);
    this.setStatus('connecting');
    this.connect();
    this.scheduleRefresh();
  }

  /** Disconnect for good (sign-out) and forget the realtime state. */
  stop() {
    this.running = false;
    this.draft = null;
    globalThis.removeEventListener?.('online', this.onWindowOnline);
    globalThis.removeEventListener?.('offline', this.onWindowOffline);
    globalThis.removeEventListener?.('pagehide', this.onPageHide);
    clearTimeout(this.retryTimer);
    clearTimeout(this.joinTimer);
    clearTimeout(this.refreshTimer);
    clearTimeout(this.fillRetryTimer);
    for (const t of this.ackTimers.values()) clearTimeout(t);
    this.ackTimers.clear();
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, 'bye');
    this.user = null;
    this.onlineCount = null;
    this.clearSession();
    this.phase = 'idle';
    this.noteSearching();
    this.searchConfirmed = false;
    this.setStatus('offline');
  }

  connectNow() {
    clearTimeout(this.retryTimer);
    this.connect();
  }

  async connect() {
    if (!this.running || this.ws || this.connecting) return;
    let token;
    this.connecting = true;
    try {
      token = await freshAccessToken();
    } catch (e) {
      if (e instanceof ApiError && e.code === 'UNAUTHORIZED') return this.authLost();
      return this.scheduleReconnect();
    } finally {
      this.connecting = false;
    }
    if (!this.running || this.ws) return;
    if (!token) return this.authLost();
    const scheme = globalThis.location.protocol === 'https:' ? 'wss' : 'ws';
    let ws;
    try {
      ws = new WebSocket(`${scheme}://${globalThis.location.host}/ws`);
    } catch {
      return this.scheduleReconnect();
    }
    this.ws = ws;
    ws.addEventListener('open', () => {
      ws.send(JSON.stringify({ type: 'join', data: { token } }));
    });
    ws.addEventListener('message', (e) => this.onFrame(ws, e.data));
    ws.addEventListener('close', (e) => this.onClose(ws, e, token));
    clearTimeout(this.joinTimer);
    this.joinTimer = setTimeout(() => {
      if (this.ws === ws && this.status !== 'online') ws.close(4000, 'join timeout');
    }, JOIN_TIMEOUT_MS);
  }

  async onClose(ws, event, token) {
    if (ws !== this.ws) return;
    this.ws = null;
    clearTimeout(this.joinTimer);
    for (const t of this.ackTimers.values()) clearTimeout(t);
    this.ackTimers.clear();
    this.setPartnerTyping(false);
    if (!this.running) return;
    this.setStatus('reconnecting');
    if (event.code === 4401) {
      try {
        await refreshTokens(token);
      } catch (e) {
        if (e instanceof ApiError && e.code === 'UNAUTHORIZED') return this.authLost();
      }
    }
    // Rate limited by the server: start further up the backoff curve.
    if (event.code === 4429) this.attempt = Math.max(this.attempt, 4);
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (!this.running) return;
    this.setStatus('reconnecting');
    clearTimeout(this.retryTimer);
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  authLost() {
    this.stop();
    this.emit('auth-lost');
  }

  /** Rotate the access token shortly before it expires. */
  scheduleRefresh(delayOverride) {
    clearTimeout(this.refreshTimer);
    if (!this.running) return;
    const { expiresAt } = loadTokens();
    const delay = delayOverride ?? Math.max(5_000, expiresAt - Date.now() - REFRESH_MARGIN_MS);
    this.refreshTimer = setTimeout(async () => {
      try {
        await refreshTokens(loadTokens().access);
        this.scheduleRefresh();
      } catch (e) {
        if (e instanceof ApiError && e.code === 'UNAUTHORIZED') return this.authLost();
        this.scheduleRefresh(30_000);
      }
    }, delay);
  }

  // --- frames ---------------------------------------------------------------

  /** Send a frame; returns its ref, or null when not connected. */
  send(type, data = {}, { ref = null, onError = null } = {}) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.status !== 'online') return null;
    const r = ref ?? `r${++this.refSeq}`;
    if (onError) {
      this.prunePendingRefs();
      this.pendingRefs.set(r, { onError, at: Date.now() });
    }
    this.ws.send(JSON.stringify({ type, data, ref: r }));
    return r;
  }

  prunePendingRefs() {
    const old = Date.now() - 60_000;
    for (const [r, entry] of this.pendingRefs) if (entry.at < old) this.pendingRefs.delete(r);
  }

  onFrame(ws, raw) {
    if (ws !== this.ws) return;
    let frame;
    try {
      frame = JSON.parse(raw);
    } catch {
      return;
    }
    if (!frame || typeof frame.type !== 'string') return;
    const data = frame.data ?? {};
    if (frame.type === 'error') {
      const handler = frame.ref ? this.pendingRefs.get(frame.ref) : null;
      if (handler) {
        this.pendingRefs.delete(frame.ref);
        handler.onError(data);
      } else {
        this.emit('error', data);
      }
      return;
    }
    if (frame.ref) this.pendingRefs.delete(frame.ref);
    const handle = this.handlers[frame.type];
    if (handle) handle.call(this, data);
  }

  isCurrent(sessionId) {
    return Boolean(this.session && sessionId === this.session.id);
  }

  handlers = {
    connected(d) {
      clearTimeout(this.joinTimer);
      this.attempt = 0;
      this.user = d.user ?? this.user;
      this.node = d.node ?? null;
      this.setStatus('online');
      this.emit('user', this.user);
      if (Number.isFinite(d.onlineCount)) this.setOnline(d.onlineCount);
      this.resume(d.session ?? null);
    },
    searching() {
      if (this.phase === 'idle' || this.phase === 'ended') this.setPhase('searching');
      if (this.phase !== 'searching') return;
      this.searchConfirmed = true;
      // Now the server's waiting counts include this user.
      this.emit('searching');
    },
    search_cancelled() {
      if (this.phase === 'searching') this.setPhase('idle');
    },
    match_found(d) {
      if (!d.session?.id) return;
      this.adoptSession(d.session);
      this.timeline.startFromBeginning();
      this.setPhase('chat');
      this.emit('matched', this.session);
    },
    message_received(d) {
      const m = d.message;
      if (!m) return;
      if (!this.isCurrent(m.sessionId)) {
        // A message of a session this tab has not heard of: its
        // `match_found` is still on the way (events of different senders
        // have no order between them). Ask where the user stands.
        if (!this.session) this.resync();
        return;
      }
      // The partner's message is what their typing was for: the indicator
      // goes with it, not with their late typing_stop.
      if (!m.isMe) this.setPartnerTyping(false);
      this.mergeMessages([m]);
      if (this.timeline.hasGap()) this.fillGaps();
    },
    user_typing(d) {
      if (this.isCurrent(d.sessionId)) this.setPartnerTyping(true);
    },
    user_stopped_typing(d) {
      if (this.isCurrent(d.sessionId)) this.setPartnerTyping(false);
    },
    reveal_requested(d) {
      if (!this.isCurrent(d.sessionId)) return;
      this.session.reveal = { state: 'pending', requestedBy: 'partner' };
      this.emit('reveal', { kind: 'requested', alias: d.requesterAlias });
    },
    reveal_response(d) {
      if (!this.isCurrent(d.sessionId)) return;
      const requestedBy = this.session.reveal?.requestedBy ?? null;
      this.session.reveal = { state: d.status, requestedBy };
      if (d.status === 'accepted' && d.identities) this.session.identities = d.identities;
      this.emit('reveal', { kind: d.status, requestedBy });
    },
    session_ended(d) {
      if (!this.isCurrent(d.sessionId)) return;
      this.busy.delete('end');
      this.session.status = 'ended';
      this.session.endedBy = d.endedBy;
      this.setPartnerTyping(false);
      this.resetTyping();
      this.failUnsent();
      this.emit('ended', { endedBy: d.endedBy });
      this.setPhase('ended');
    },
    session_rated(d) {
      if (!this.isCurrent(d.sessionId)) return;
      this.busy.delete('rate');
      this.session.myRating = d.rating;
      this.emit('rated', { rating: d.rating });
    },
    user_joined(d) {
      if (this.isCurrent(d.sessionId)) this.setPartnerOnline(true);
    },
    user_left(d) {
      if (this.isCurrent(d.sessionId)) this.setPartnerOnline(false);
    },
    online_count(d) {
      if (Number.isFinite(d.count)) this.setOnline(d.count);
    },
  };

  setOnline(count) {
    this.onlineCount = count;
    this.emit('online', count);
  }

  setPartnerOnline(online) {
    this.partnerOnline = online;
    if (!online) this.setPartnerTyping(false);
    this.emit('presence', online);
  }

  setPartnerTyping(on) {
    clearTimeout(this.typingTimer);
    if (on) this.typingTimer = setTimeout(() => this.setPartnerTyping(false), TYPING_EXPIRE_MS);
    if (this.partnerTyping === on) return;
    this.partnerTyping = on;
    this.emit('typing', on);
  }

  // --- session state --------------------------------------------------------

  /** Make `s` the current session (a new timeline if it is another one). */
  adoptSession(s) {
    // Messages go to the timeline, the partner's presence to `partnerOnline`
    // (resume): a copy of either here would only go stale.
    const { messages: _messages, partnerOnline: _online, ...view } = s;
    const same = this.session?.id === view.id;
    if (!same) {
      this.timeline = new Timeline();
      this.partnerOnline = true;
      this.setPartnerTyping(false);
      const saved = readJson(OUTBOX_KEY);
      if (saved?.sessionId === view.id) this.timeline.restorePending(saved.items);
    }
    this.session = { ...(same ? this.session : {}), ...view };
    // The server counts the last asker's asks, a reload included.
    const left = view.reveal?.asksLeft;
    if (Number.isInteger(left)) this.session.myAsks = MAX_REVEAL_ASKS - left;
    this.emit('session', this.session);
  }

  clearSession() {
    this.session = null;
    this.timeline = new Timeline();
    this.setPartnerTyping(false);
    this.busy.clear();
  }

  /** Where the user stands after a (re)connect. */
  resume(session) {
    if (!session) {
      // No session left (ended and rated, perhaps in another tab).
      const wasSearching = this.wasSearching();
      if (this.session) this.clearSession();
      this.resumeSearch(wasSearching);
      return;
    }
    if (session.status === 'active') {
      this.adoptSession(session);
      // The partner may have left (or come back) while this page was away.
      if (typeof session.partnerOnline === 'boolean' && session.partnerOnline !== this.partnerOnline) {
        this.setPartnerOnline(session.partnerOnline);
      }
      if (Array.isArray(session.messages)) {
        if (this.timeline.floor === null && session.messages.length === 0) {
          this.timeline.startFromBeginning();
        }
        this.mergeMessages(session.messages);
      }
      this.setPhase('chat');
      this.emit('resumed', this.session);
      this.fillGaps().finally(() => this.resendUnacked());
      return;
    }
    const skipped = readJson(SKIPPED_RATING_KEY);
    const alreadyRated = session.myRating !== undefined && session.myRating !== null;
    if ((alreadyRated || skipped === session.id) && !(this.phase === 'ended' && this.isCurrent(session.id))) {
      const wasSearching = this.wasSearching();
      this.clearSession();
      this.resumeSearch(wasSearching);
      return;
    }
    this.adoptSession(session);
    // The rating screen shows the conversation: after a reload, its latest
    // messages.
    if (Array.isArray(session.messages)) this.mergeMessages(session.messages);
    this.setPhase('ended');
    // What is unsent is decided against the whole history, not only the
    // latest messages the snapshot carries: one may have been committed.
    this.fillGaps().finally(() => this.failUnsent());
  }

  /**
   * The chat ended with own messages still unsent (typed offline, say):
   * they can no longer go anywhere, so they stay in view marked as not
   * delivered instead of vanishing, and leave the saved outbox.
   */
  failUnsent() {
    const unsent = this.timeline.unacked();
    for (const p of unsent) {
      clearTimeout(this.ackTimers.get(p.clientMsgId));
      this.ackTimers.delete(p.clientMsgId);
      this.timeline.markFailed(p.clientMsgId, 'the chat had ended');
    }
    writeJson(OUTBOX_KEY, null);
    if (unsent.length) this.emit('messages', { added: [], acked: [] });
  }

  /**
   * Searching before this (re)connect: in this page, or in this tab just
   * before a reload, as the same user, while the server's queue still
   * holds them.
   */
  wasSearching() {
    if (this.phase === 'searching') return true;
    try {
      const was = JSON.parse(globalThis.sessionStorage?.getItem(SEARCHING_KEY) ?? 'null');
      return Boolean(was && was.user === this.user?.id && Date.now() - was.at < SEARCH_RESUME_MS);
    } catch {
      return false;
    }
  }

  /** Idle, or searching again: the queue forgets a user whose sockets all closed. */
  resumeSearch(wasSearching) {
    this.setPhase(wasSearching ? 'searching' : 'idle');
    if (wasSearching) this.findMatch();
  }

  /** Keep this tab's searching flag in step with the phase. */
  noteSearching() {
    try {
      if (this.phase === 'searching' && this.user) {
        globalThis.sessionStorage?.setItem(SEARCHING_KEY, JSON.stringify({ user: this.user.id, at: Date.now() }));
      } else {
        globalThis.sessionStorage?.removeItem(SEARCHING_KEY);
      }
    } catch {
      // Storage may be off; a reload then starts idle.
    }
  }

  mergeMessages(messages) {
    const result = this.timeline.merge(messages);
    for (const cmid of result.acked) {
      clearTimeout(this.ackTimers.get(cmid));
      this.ackTimers.delete(cmid);
      this.retries.delete(cmid);
    }
    if (result.added.length || result.acked.length) {
      this.saveOutbox();
      this.emit('messages', result);
    }
    return result;
  }

  /**
   * Fetch every committed message after the last contiguous seq. Single
   * flight; bounded; retried later when the API is unreachable.
   */
  fillGaps() {
    if (this.fillInFlight) return this.fillInFlight;
    const session = this.session;
    if (!session) return Promise.resolve();
    this.fillInFlight = (async () => {
      for (let page = 0; page < 50; page += 1) {
        if (this.session?.id !== session.id) return;
        const after = this.timeline.contiguousSeq();
        const body = await api.get(
          `/api/chat/sessions/${encodeURIComponent(session.id)}/messages?after=${after}&limit=${PAGE}`,
        );
        if (this.session?.id !== session.id) return;
        const list = Array.isArray(body?.messages) ? body.messages : [];
        this.mergeMessages(list);
        if (list.length < PAGE || this.timeline.contiguousSeq() === after) return;
      }
    })()
      .catch((e) => {
        console.warn('live: gap fill failed', e);
        clearTimeout(this.fillRetryTimer);
        this.fillRetryTimer = setTimeout(() => {
          if (this.session?.id === session.id && this.timeline.hasGap()) this.fillGaps();
        }, 5_000);
      })
      .finally(() => {
        this.fillInFlight = null;
      });
    return this.fillInFlight;
  }

  saveOutbox() {
    if (!this.session) return;
    const items = this.timeline.pendingSnapshot();
    writeJson(OUTBOX_KEY, items.length ? { sessionId: this.session.id, items } : null);
  }

  // --- messages -------------------------------------------------------------

  /** Queue a message: shown at once as pending, sent when connected. */
  sendMessage(text) {
    const content = messageText(text);
    if (INVISIBLE_ONLY.test(content) || messageLength(content) > MAX_MESSAGE_CHARS) return false;
    if (!this.session || this.phase !== 'chat') return false;
    const clientMsgId = newClientMsgId();
    this.timeline.addPending(clientMsgId, content);
    this.saveOutbox();
    this.emit('messages', { added: [], acked: [], pending: clientMsgId });
    this.stopTyping();
    this.transmit(clientMsgId);
    return true;
  }

  /** Send (or resend) one pending message with its original clientMsgId. */
  transmit(clientMsgId) {
    const p = this.timeline.pending.get(clientMsgId);
    if (!p || p.status !== 'pending' || !this.session) return;
    const ws = this.ws;
    const sent = this.send(
      'send_message',
      { sessionId: this.session.id, content: p.content, clientMsgId },
      { ref: `m:${clientMsgId}`, onError: (err) => this.onMessageError(clientMsgId, err) },
    );
    if (!sent) return;
    clearTimeout(this.ackTimers.get(clientMsgId));
    this.ackTimers.set(
      clientMsgId,
      setTimeout(() => {
        // Open but silent: force a reconnect, which resends.
        this.ackTimers.delete(clientMsgId);
        if (this.ws === ws && this.timeline.pending.has(clientMsgId)) ws.close(4000, 'ack timeout');
      }, ACK_TIMEOUT_MS),
    );
  }

  onMessageError(clientMsgId, err) {
    clearTimeout(this.ackTimers.get(clientMsgId));
    this.ackTimers.delete(clientMsgId);
    const transient = ['RATE_LIMITED', 'INTERNAL_ERROR', 'SERVICE_UNAVAILABLE'].includes(err.code);
    const tries = (this.retries.get(clientMsgId) ?? 0) + 1;
    this.retries.set(clientMsgId, tries);
    if (transient && tries <= MAX_MESSAGE_RETRIES) {
      setTimeout(() => this.transmit(clientMsgId), 1_000 * 2 ** tries);
      return;
    }
    this.timeline.markFailed(clientMsgId, err.message || err.code || 'not sent');
    this.saveOutbox();
    this.emit('messages', { added: [], acked: [], failed: clientMsgId });
  }

  retryMessage(clientMsgId) {
    this.retries.delete(clientMsgId);
    if (this.timeline.markPending(clientMsgId)) {
      this.saveOutbox();
      this.emit('messages', { added: [], acked: [] });
      this.transmit(clientMsgId);
    }
  }

  discardMessage(clientMsgId) {
    if (this.timeline.discard(clientMsgId)) {
      this.saveOutbox();
      this.emit('messages', { added: [], acked: [] });
    }
  }

  resendUnacked() {
    if (this.phase !== 'chat') return;
    for (const p of this.timeline.unacked()) this.transmit(p.clientMsgId);
  }

  // --- typing ---------------------------------------------------------------

  /** Call on every keystroke in the composer. */
  noteTyping() {
    if (!this.session || this.phase !== 'chat') return;
    const t = this.typingState;
    const now = Date.now();
    if (t.sent !== 'typing_start' || now - t.lastStartAt > TYPING_REFRESH_MS) {
      t.lastStartAt = now;
      this.queueTyping('typing_start');
    }
    clearTimeout(t.idle);
    t.idle = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
  }

  /** Call when the composer empties, loses focus, or a message is sent. */
  stopTyping() {
    const t = this.typingState;
    clearTimeout(t.idle);
    if (t.sent === 'typing_start' || t.next === 'typing_start') this.queueTyping('typing_stop');
  }

  /** Forget the typing state without telling anyone (the session is over). */
  resetTyping() {
    const t = this.typingState;
    clearTimeout(t.idle);
    clearTimeout(t.timer);
    Object.assign(t, { sent: 'typing_stop', next: null, timer: 0, idle: 0 });
  }

  /** Coalesce typing frames so they stay under the server's 2 per second. */
  queueTyping(type) {
    const t = this.typingState;
    t.next = type;
    if (t.timer) return;
    const wait = Math.max(0, t.lastAt + TYPING_MIN_GAP_MS - Date.now());
    t.timer = setTimeout(() => {
      t.timer = 0;
      const next = t.next;
      t.next = null;
      if (!next || !this.session || this.phase !== 'chat' || (next === 'typing_stop' && t.sent === 'typing_stop')) return;
      t.lastAt = Date.now();
      t.sent = next;
      // A typing frame that fails is not worth telling anyone about.
      this.send(next, { sessionId: this.session.id }, { onError: () => {} });
    }, wait);
  }

  // --- actions --------------------------------------------------------------

  /** Report an action that could not even be sent. */
  offline(action) {
    this.emit('error', { code: 'OFFLINE', message: 'Not connected. Try again in a moment.', action });
    return false;
  }

  findMatch() {
    if (this.phase === 'chat') return false;
    const ref = this.send('find_match', {}, {
      onError: (err) => {
        if (this.phase === 'searching') this.setPhase('idle');
        this.emit('error', { ...err, action: 'find_match' });
      },
    });
    if (!ref) return this.offline('find_match');
    if (this.phase === 'ended') this.clearSession();
    this.searchConfirmed = false;
    this.setPhase('searching');
    return true;
  }

  cancelSearch() {
    const ref = this.send('cancel_search', {}, {
      onError: (err) => {
        // A match was made first: the chat, not idle, is where the user is.
        if (err.code === 'CONFLICT') this.resync();
        else this.emit('error', { ...err, action: 'cancel_search' });
      },
    });
    this.setPhase('idle');
    return Boolean(ref);
  }

  requestReveal() {
    if (!this.session || this.phase !== 'chat') return false;
    const before = this.session.reveal;
    const ref = this.send('reveal_request', { sessionId: this.session.id }, {
      onError: (err) => {
        // Put back what was there, unless news came meanwhile (the partner's
        // own request, say): that is the state now.
        const mine = this.session?.reveal;
        if (mine?.state === 'pending' && mine.requestedBy === 'me') this.session.reveal = before;
        if (this.session) this.session.myAsks = Math.max(0, (this.session.myAsks ?? 1) - 1);
        this.emit('reveal', { kind: 'error' });
        this.emit('error', { ...err, action: 'reveal_request' });
      },
    });
    if (!ref) return this.offline('reveal_request');
    // Counted here, so the chat stops offering a fourth ask (this page
    // only: after a reload the server's refusal says it).
    this.session.myAsks = (this.session.myAsks ?? 0) + 1;
    this.session.reveal = { state: 'pending', requestedBy: 'me' };
    this.emit('reveal', { kind: 'sent' });
    return true;
  }

  respondReveal(accept) {
    if (!this.session || this.phase !== 'chat') return false;
    const before = this.session.reveal;
    const ref = this.send('reveal_respond', { sessionId: this.session.id, accept: Boolean(accept) }, {
      onError: (err) => {
        // Put back the prompt only if nothing answered it meanwhile; a
        // CONFLICT means something did (this user's other tab): the
        // server's state is the truth, and no error to show.
        if (this.session?.reveal?.state === 'answering') this.session.reveal = before;
        this.emit('reveal', { kind: 'error' });
        if (err.code === 'CONFLICT') this.resync();
        else this.emit('error', { ...err, action: 'reveal_respond' });
      },
    });
    if (!ref) return this.offline('reveal_respond');
    this.session.reveal = { ...before, state: 'answering' };
    this.emit('reveal', { kind: 'answering' });
    return true;
  }

  endSession() {
    if (!this.session || this.phase !== 'chat' || this.busy.has('end')) return false;
    const ref = this.send('end_session', { sessionId: this.session.id }, {
      onError: (err) => {
        this.busy.delete('end');
        this.emit('error', { ...err, action: 'end_session' });
      },
    });
    if (!ref) return this.offline('end_session');
    this.busy.add('end');
    this.stopTyping();
    return true;
  }

  rate(rating) {
    if (!this.session || this.phase !== 'ended' || this.busy.has('rate')) return false;
    const ref = this.send('rate_session', { sessionId: this.session.id, rating }, {
      onError: (err) => {
        this.busy.delete('rate');
        this.emit('error', { ...err, action: 'rate_session' });
      },
    });
    if (!ref) return this.offline('rate_session');
    this.busy.add('rate');
    return true;
  }

  /** Leave the rating screen without rating; not offered again on resume. */
  skipRating() {
    if (this.session) writeJson(SKIPPED_RATING_KEY, this.session.id);
    this.clearSession();
    this.setPhase('idle');
  }

  /**
   * Ask the API where the user stands and adopt it, for when the socket and
   * the screen disagree (e.g. find_match answered CONFLICT).
   */
  async resync() {
    try {
      const body = await api.get('/api/chat/current-session');
      if (this.running) this.resume(body?.session ?? null);
    } catch (e) {
      console.warn('live: resync failed', e);
    }
  }

  /** From the rating screen back to the dashboard. */
  leaveEnded() {
    this.clearSession();
    this.setPhase('idle');
  }
}

/** The single realtime connection of this tab. */
export const live = new Live();
