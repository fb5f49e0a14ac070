// Unit tests of the message list's guarantees: no duplicates, no holes,
// optimistic copies replaced by their committed message.
// Run: node --test web/tests/

import test from 'node:test';
import assert from 'node:assert/strict';
import { Timeline, backoffDelay } from '../js/timeline.js';

const msg = (seq, extra = {}) => ({
  id: `id-${seq}`,
  sessionId: 's1',
  seq,
  content: `m${seq}`,
  createdAt: new Date(seq * 1000).toISOString(),
  clientMsgId: `c-${seq}`,
  isMe: false,
  ...extra,
});

test('duplicates by id are dropped and order follows seq', () => {
  const t = new Timeline();
  t.startFromBeginning();
  t.merge([msg(2), msg(1)]);
  const { added } = t.merge([msg(1), msg(3), msg(2)]);
  assert.deepEqual(added.map((m) => m.seq), [3]);
  assert.deepEqual(t.items().map((m) => m.seq), [1, 2, 3]);
});

test('a hole is detected and contiguousSeq is the after= of the fill', () => {
  const t = new Timeline();
  t.startFromBeginning();
  t.merge([msg(1), msg(2), msg(5)]);
  assert.equal(t.hasGap(), true);
  assert.equal(t.contiguousSeq(), 2);
  t.merge([msg(3), msg(4)]);
  assert.equal(t.hasGap(), false);
  assert.equal(t.contiguousSeq(), 5);
});

test('a snapshot of the latest messages sets the floor, not a hole', () => {
  const t = new Timeline();
  t.merge([msg(51), msg(52), msg(53)]);
  assert.equal(t.contiguousSeq(), 53);
  assert.equal(t.hasGap(), false);
});

test('a newer snapshot after a long disconnect leaves a hole to fill', () => {
  const t = new Timeline();
  t.startFromBeginning();
  t.merge([msg(1), msg(2)]);
  t.merge([msg(10), msg(11)]);
  assert.equal(t.contiguousSeq(), 2);
  assert.equal(t.hasGap(), true);
});

test('the optimistic copy is replaced by its committed message', () => {
  const t = new Timeline();
  t.startFromBeginning();
  assert.equal(t.addPending('mine-1', 'hello'), true);
  assert.deepEqual(t.items().map((m) => m.status), ['pending']);
  const { acked } = t.merge([msg(1, { isMe: true, clientMsgId: 'mine-1', content: 'hello' })]);
  assert.deepEqual(acked, ['mine-1']);
  const items = t.items();
  assert.equal(items.length, 1);
  assert.equal(items[0].status, 'sent');
  assert.equal(items[0].seq, 1);
  // A late duplicate ack or resend changes nothing.
  t.merge([msg(1, { isMe: true, clientMsgId: 'mine-1', content: 'hello' })]);
  assert.equal(t.addPending('mine-1', 'hello'), false);
  assert.equal(t.items().length, 1);
});

test('pending messages stay after committed ones, in typing order', () => {
  const t = new Timeline();
  t.startFromBeginning();
  t.addPending('a', 'first');
  t.addPending('b', 'second');
  t.merge([msg(1)]);
  assert.deepEqual(
    t.items().map((m) => m.content),
    ['m1', 'first', 'second'],
  );
  t.markFailed('a', 'nope');
  assert.deepEqual(t.unacked().map((p) => p.clientMsgId), ['b']);
  t.markPending('a');
  assert.deepEqual(t.unacked().map((p) => p.clientMsgId), ['a', 'b']);
});

test('pending messages survive a snapshot/restore round trip', () => {
  const t = new Timeline();
  t.addPending('a', 'x');
  t.addPending('b', 'y');
  t.markFailed('b', 'err');
  const u = new Timeline();
  u.restorePending(JSON.parse(JSON.stringify(t.pendingSnapshot())));
  assert.deepEqual(u.unacked().map((p) => p.clientMsgId), ['a']);
  assert.equal(u.items()[1].status, 'failed');
});

test('malformed messages are ignored', () => {
  const t = new Timeline();
  const { added } = t.merge([null, { id: 'x' }, { id: 'y', seq: 0 }, msg(1)]);
  assert.deepEqual(added.map((m) => m.seq), [1]);
});

test('backoff uses full jitter under an exponential, capped ceiling', () => {
  assert.equal(backoffDelay(0, { random: () => 0.999999 }), 499);
  assert.equal(backoffDelay(3, { random: () => 0.5 }), 2000);
  assert.equal(backoffDelay(30, { random: () => 0.999999 }), 9_999);
  assert.equal(backoffDelay(5, { random: () => 0 }), 0);
});
