// The realtime module against a fake server: join, resume, reconnect with
// the same clientMsgId, gap fill by seq, and the 4401 refresh path.
// Run: node --test web/tests/

import test, { after } from 'node:test';
import assert from 'node:assert/strict';

// --- a minimal browser --------------------------------------------------------

class MemoryStorage {
  constructor() {
    this.map = new Map();
  }
  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    this.map.set(k, String(v));
  }
  removeItem(k) {
    this.map.delete(k);
  }
}

const sockets = [];
class FakeWebSocket {
  static OPEN = 1;
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.listeners = {};
    sockets.push(this);
  }
  addEventListener(type, fn) {
    (this.listeners[type] ??= []).push(fn);
  }
  fire(type, event) {
    for (const fn of this.listeners[type] ?? []) fn(event);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code = 1000) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.fire('close', { code }));
  }
  // Test-side controls.
  open() {
    this.readyState = 1;
    this.fire('open', {});
  }
  receive(frame) {
    this.fire('message', { data: JSON.stringify(frame) });
  }
  drop(code) {
    this.readyState = 3;
    this.fire('close', { code });
  }
  frames(type) {
    return this.sent.filter((f) => f.type === type);
  }
}

const requests = [];
let routes = {};
globalThis.localStorage = new MemoryStorage();
globalThis.location = { protocol: 'http:', host: 'io.test' };
globalThis.WebSocket = FakeWebSocket;
globalThis.fetch = async (url, opts = {}) => {
  requests.push({ url, method: opts.method ?? 'GET', body: opts.body ? JSON.parse(opts.body) : null, headers: opts.headers });
  const key = `${opts.method ?? 'GET'} ${url.split('?')[0]}`;
  const handler = routes[key];
  if (!handler) return new Response(JSON.stringify({ error: { code: 'NOT_FOUND', message: key } }), { status: 404 });
  const [status, body] = handler(url, opts);
  return new Response(body === null ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' },
  });
};
// Reconnect at once: full jitter with a random of 0.
Math.random = () => 0;

const { live } = await import('../js/socket.js');

// --- helpers ------------------------------------------------------------------

const until = async (cond, what) => {
  for (let i = 0; i < 200; i += 1) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.fail(`timed out waiting for ${what}`);
};

const user = { id: 'u1', email: 'a@b.co', alias: 'NeonPanda42', gender: 'dude', seeking: 'girl', createdAt: '2024-01-01T00:00:00Z' };
const msg = (seq, extra = {}) => ({
  id: `id-${seq}`,
  sessionId: 's1',
  seq,
  content: `m${seq}`,
  createdAt: '2024-01-01T00:00:00Z',
  clientMsgId: `c-${seq}`,
  isMe: false,
  ...extra,
});
const session = (messages, extra = {}) => ({
  id: 's1',
  status: 'active',
  startedAt: '2024-01-01T00:00:00Z',
  partner: { alias: 'LunarFox10', gender: 'girl' },
  reveal: { state: 'none', requestedBy: null },
  messages,
  ...extra,
});

function reset() {
  live.stop();
  sockets.length = 0;
  requests.length = 0;
  routes = {};
  globalThis.localStorage = new MemoryStorage();
  localStorage.setItem('io.accessToken', 'A1');
  localStorage.setItem('io.refreshToken', 'R1');
  localStorage.setItem('io.accessExpiresAt', String(Date.now() + 15 * 60_000));
}

async function connectWith(sessionView, { onlineCount = 3 } = {}) {
  const before = sockets.length;
  await until(() => sockets.length > before, 'a socket');
  const ws = sockets.at(-1);
  ws.open();
  ws.receive({ type: 'connected', data: { user, node: 'n1', onlineCount, session: sessionView } });
  return ws;
}

// --- tests --------------------------------------------------------------------

test('joins with the token and resumes the chat from `connected`', async () => {
  reset();
  routes['GET /api/chat/sessions/s1/messages'] = () => [200, { messages: [] }];
  live.start();
  const ws = await connectWith(session([msg(1), msg(2)]));
  assert.equal(ws.url, 'ws://io.test/ws');
  assert.deepEqual(ws.sent[0], { type: 'join', data: { token: 'A1' } });
  assert.equal(live.status, 'online');
  assert.equal(live.phase, 'chat');
  assert.equal(live.onlineCount, 3);
  assert.deepEqual(live.timeline.items().map((m) => m.seq), [1, 2]);
  live.stop();
});

test('a (re)connect learns whether the partner is still there', async () => {
  reset();
  routes['GET /api/chat/sessions/s1/messages'] = () => [200, { messages: [] }];
  const seen = [];
  const off = live.on('presence', (online) => seen.push(online));
  live.start();
  await connectWith(session([msg(1)], { partnerOnline: false }));
  assert.equal(live.partnerOnline, false);
  assert.deepEqual(seen, [false]);
  off();
  live.stop();
});

test('after a reload, the asks a declined asker has left come from the server', async () => {
  reset();
  routes['GET /api/chat/sessions/s1/messages'] = () => [200, { messages: [] }];
  live.start();
  await connectWith(session([msg(1)], { reveal: { state: 'declined', requestedBy: 'me', asksLeft: 0 } }));
  assert.equal(live.session.myAsks, 3, 'out of asks: the chat offers no fourth');
  live.stop();
});

test('an unacked message is resent with the same clientMsgId after a reconnect, never duplicated', async () => {
  reset();
  let history = [];
  routes['GET /api/chat/sessions/s1/messages'] = (url) => {
    const after = Number(new URL(url, 'http://x').searchParams.get('after'));
    return [200, { messages: history.filter((m) => m.seq > after) }];
  };
  live.start();
  const ws1 = await connectWith(session([msg(1)]));
  // Nothing visible is nothing to send.
  assert.equal(live.sendMessage(' \u200b\ufeff\u2800 '), false);
  assert.equal(live.sendMessage('  hello <img src=x onerror=alert(1)>  '), true);
  const [frame] = ws1.frames('send_message');
  const cmid = frame.data.clientMsgId;
  assert.equal(frame.data.content, 'hello <img src=x onerror=alert(1)>');
  assert.equal(frame.ref, `m:${cmid}`);
  assert.equal(live.timeline.items().at(-1).status, 'pending');

  // The node dies before the ack; meanwhile the partner wrote seq 2 and 3.
  ws1.drop(1012);
  assert.equal(live.status, 'reconnecting');
  history = [msg(1), msg(2), msg(3)];
  const ws2 = await connectWith(session([msg(3)]));
  await until(() => ws2.frames('send_message').length === 1, 'the resend');
  assert.equal(ws2.frames('send_message')[0].data.clientMsgId, cmid);
  assert.deepEqual(live.timeline.items().map((m) => m.seq), [1, 2, 3, null]);

  // The ack, then a duplicate delivery of seq 3 and of the ack.
  const committed = msg(4, { isMe: true, clientMsgId: cmid, content: frame.data.content });
  ws2.receive({ type: 'message_received', data: { message: committed }, ref: `m:${cmid}` });
  ws2.receive({ type: 'message_received', data: { message: msg(3) } });
  ws2.receive({ type: 'message_received', data: { message: committed } });
  const items = live.timeline.items();
  assert.deepEqual(items.map((m) => m.seq), [1, 2, 3, 4]);
  assert.equal(items.at(-1).status, 'sent');
  assert.equal(items.at(-1).isMe, true);
  live.stop();
});

test('a message that skips a seq triggers a gap fill from the last contiguous seq', async () => {
  reset();
  const afters = [];
  routes['GET /api/chat/sessions/s1/messages'] = (url) => {
    const after = Number(new URL(url, 'http://x').searchParams.get('after'));
    afters.push(after);
    return [200, { messages: [msg(1), msg(2), msg(3), msg(4), msg(5)].filter((m) => m.seq > after) }];
  };
  live.start();
  const ws = await connectWith(session([msg(1), msg(2)]));
  await until(() => afters.length === 1, 'the resume fill');
  ws.receive({ type: 'message_received', data: { message: msg(7) } });
  await until(() => live.timeline.contiguousSeq() >= 5, 'the gap fill');
  // 6 is not committed yet as far as the server knows: still a hole.
  assert.deepEqual(live.timeline.items().map((m) => m.seq), [1, 2, 3, 4, 5, 7]);
  ws.receive({ type: 'message_received', data: { message: msg(6) } });
  assert.equal(live.timeline.hasGap(), false);
  live.stop();
});

test('errors answer the frame that carried the ref', async () => {
  reset();
  routes['GET /api/chat/sessions/s1/messages'] = () => [200, { messages: [] }];
  live.start();
  const ws = await connectWith(session([]));
  live.sendMessage('too much');
  const { ref, data } = ws.frames('send_message')[0];
  ws.receive({ type: 'error', data: { code: 'VALIDATION_ERROR', message: 'nope' }, ref });
  const item = live.timeline.items().find((m) => m.clientMsgId === data.clientMsgId);
  assert.equal(item.status, 'failed');
  assert.equal(item.error, 'nope');
  live.stop();
});

test('close 4401 refreshes the token, stores the rotated one, and rejoins', async () => {
  reset();
  routes['POST /api/auth/refresh'] = () => [200, { accessToken: 'A2', refreshToken: 'R2', expiresIn: 900 }];
  live.start();
  await until(() => sockets.length === 1, 'a socket');
  sockets[0].open();
  sockets[0].drop(4401);
  await until(() => sockets.length === 2, 'the second socket');
  const refresh = requests.find((r) => r.url === '/api/auth/refresh');
  assert.deepEqual(refresh.body, { refreshToken: 'R1' });
  assert.equal(localStorage.getItem('io.refreshToken'), 'R2');
  sockets[1].open();
  assert.deepEqual(sockets[1].sent[0], { type: 'join', data: { token: 'A2' } });
  live.stop();
});

test('a refused refresh ends in auth-lost', async () => {
  reset();
  routes['POST /api/auth/refresh'] = () => [401, { error: { code: 'UNAUTHORIZED', message: 'reused' } }];
  let lost = false;
  const off = live.on('auth-lost', () => (lost = true));
  live.start();
  await until(() => sockets.length === 1, 'a socket');
  sockets[0].open();
  sockets[0].drop(4401);
  await until(() => lost, 'auth-lost');
  assert.equal(live.running, false);
  assert.equal(localStorage.getItem('io.refreshToken'), null);
  off();
});

test('an ended, unrated session resumes on the rating screen; a rated one does not', async () => {
  reset();
  routes['GET /api/chat/sessions/s1/messages'] = () => [200, { messages: [] }];
  // Typed before the end and never sent: kept in view, marked, out of the outbox.
  const unsent = { clientMsgId: 'c-late', content: 'still there?', createdAt: '2024-01-01T00:09:00Z', status: 'pending' };
  localStorage.setItem('io.outbox', JSON.stringify({ sessionId: 's1', items: [unsent] }));
  live.start();
  await connectWith(session([], { status: 'ended', endedAt: '2024-01-01T00:10:00Z', endedBy: 'partner' }));
  assert.equal(live.phase, 'ended');
  assert.equal(live.session.endedBy, 'partner');
  await until(
    () => live.timeline.items().some((m) => m.clientMsgId === 'c-late' && m.status === 'failed'),
    'the unsent message marked as not delivered',
  );
  assert.equal(localStorage.getItem('io.outbox'), null);
  assert.equal(sockets.at(-1).frames('send_message').length, 0, 'nothing sent into an ended chat');
  live.stop();

  reset();
  live.start();
  await connectWith(session([], { status: 'ended', myRating: 3 }));
  assert.equal(live.phase, 'idle');
  live.stop();
});

test('searching survives a reconnect by asking again', async () => {
  reset();
  live.start();
  const ws1 = await connectWith(null);
  live.findMatch();
  assert.equal(ws1.frames('find_match').length, 1);
  assert.equal(live.phase, 'searching');
  ws1.drop(1001);
  const ws2 = await connectWith(null);
  assert.equal(ws2.frames('find_match').length, 1);
  assert.equal(live.phase, 'searching');
  ws2.receive({ type: 'match_found', data: { session: session(undefined), user: { alias: 'LunarFox10', gender: 'girl' } } });
  assert.equal(live.phase, 'chat');
  live.stop();
});

test('a message of a session not yet announced makes the client ask where it stands', async () => {
  reset();
  routes['GET /api/chat/current-session'] = () => [200, { session: session([msg(1)]) }];
  routes['GET /api/chat/sessions/s1/messages'] = () => [200, { messages: [] }];
  live.start();
  const ws = await connectWith(null);
  live.findMatch();
  ws.receive({ type: 'searching', data: {} });
  ws.receive({ type: 'message_received', data: { message: msg(1) } });
  await until(() => live.phase === 'chat', 'the session adopted');
  assert.equal(live.session.id, 's1');
  assert.deepEqual(live.timeline.items().map((m) => m.seq), [1]);
  live.stop();
});

test('a search counts as confirmed only once the server answers `searching`', async () => {
  reset();
  live.start();
  const ws = await connectWith(null);
  const confirmations = [];
  const off = live.on('searching', () => confirmations.push(live.phase));
  live.findMatch();
  assert.equal(live.phase, 'searching');
  assert.equal(live.searchConfirmed, false, 'not in the queue before the answer');
  ws.receive({ type: 'searching', data: {}, ref: ws.frames('find_match')[0].ref });
  assert.equal(live.searchConfirmed, true);
  assert.deepEqual(confirmations, ['searching']);

  live.cancelSearch();
  assert.equal(live.phase, 'idle');
  assert.equal(live.searchConfirmed, false);
  // Searching again waits for a new answer.
  live.findMatch();
  assert.equal(live.searchConfirmed, false);
  assert.deepEqual(confirmations, ['searching']);
  off();
  live.stop();
});

test('typing: one start while typing, a stop after, and never more than two frames a second', async () => {
  reset();
  routes['GET /api/chat/sessions/s1/messages'] = () => [200, { messages: [] }];
  live.start();
  const ws = await connectWith(session([]));
  const typing = () => ws.sent.filter((f) => f.type.startsWith('typing_')).map((f) => f.type);
  for (let i = 0; i < 12; i += 1) {
    live.noteTyping();
    await new Promise((r) => setTimeout(r, 50));
  }
  live.stopTyping();
  await until(() => typing().length === 2, 'start and stop');
  assert.deepEqual(typing(), ['typing_start', 'typing_stop']);
  assert.deepEqual(ws.sent.find((f) => f.type === 'typing_start').data, { sessionId: 's1' });

  // Start/stop flapping for a second: throttled to one frame per 600 ms.
  await new Promise((r) => setTimeout(r, 650));
  const before = typing().length;
  const startedAt = Date.now();
  while (Date.now() - startedAt < 1000) {
    live.noteTyping();
    await new Promise((r) => setTimeout(r, 40));
    live.stopTyping();
    await new Promise((r) => setTimeout(r, 40));
  }
  await new Promise((r) => setTimeout(r, 650));
  const burst = typing().length - before;
  assert.ok(burst >= 1 && burst <= 3, `sent ${burst} typing frames in ~1.6 s`);
  assert.equal(typing().at(-1), 'typing_stop');
  live.stop();
});

after(() => live.stop());
