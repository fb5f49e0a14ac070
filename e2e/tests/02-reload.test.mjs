// A reload in the middle of a chat loses nothing: what was sent before is
// shown once each, in seq order, and what the partner sent while the page
// was gone appears after it.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  TEST_MS,
  assertHealthy,
  browserForFile,
  closeAll,
  eventually,
  pairUp,
  readyUser,
  seeMessage,
  seeText,
  seeVisible,
  shownMessages,
  typeAndSend,
} from '../lib/harness.mjs';

const browser = browserForFile();

/** Expected bubbles as `reader` sees them: [seq, text, mine]. */
function expected(log, reader) {
  return log.map(([who, text], i) => [i + 1, text, who === reader]);
}

function view(messages) {
  return messages.map((m) => [m.seq, m.text, m.mine]);
}

test('a reload mid-chat shows every message once, in order, including those sent meanwhile', { timeout: TEST_MS }, async () => {
  let ann;
  let bob;
  try {
    // Ann's socket goes through a relay that can swallow one acknowledgement,
    // so a message of hers is still unacknowledged (in her outbox) when the
    // page reloads: the case where a careless client shows it twice. It can
    // also deliver every message twice, as an at-least-once path may.
    const swallow = new Set();
    let deliverTwice = false;
    ann = await readyUser(browser(), 'reload-ann', 'girl', {
      setup: (u) =>
        u.context.routeWebSocket(/\/ws$/, (ws) => {
          const server = ws.connectToServer();
          server.onMessage((raw) => {
            try {
              const frame = JSON.parse(String(raw));
              const content = frame.type === 'message_received' ? frame.data?.message?.content : null;
              if (content && swallow.delete(content)) return;
              if (content && deliverTwice) ws.send(raw);
            } catch {
              // not JSON: pass it on untouched
            }
            ws.send(raw);
          });
        }),
    });
    bob = await readyUser(browser(), 'reload-bob', 'dude');
    await pairUp(ann, bob);

    /** [sender name, text] in commit order. */
    const log = [];
    const say = async (from, to, text) => {
      await typeAndSend(from, text);
      await seeMessage(from, text, { mine: true });
      await seeMessage(to, text, { mine: false });
      log.push([from.name, text]);
    };
    await say(ann, bob, 'first from ann');
    await say(bob, ann, 'first from bob');
    await say(ann, bob, 'second from ann');
    // A quick burst: one socket, so commit order is send order.
    const burst = ['burst one', 'burst two', 'burst three'];
    for (const text of burst) await typeAndSend(ann, text);
    for (const text of burst) {
      await seeMessage(ann, text, { mine: true });
      await seeMessage(bob, text, { mine: false });
      log.push([ann.name, text]);
    }
    assert.deepEqual(view(await shownMessages(ann.page)), expected(log, ann.name), 'before the reload');

    // Committed (Bob has it) but never acknowledged to Ann: still "sending…" on her side.
    const unacked = 'sent just before the reload';
    swallow.add(unacked);
    await typeAndSend(ann, unacked);
    await seeMessage(bob, unacked, { mine: false });
    log.push([ann.name, unacked]);
    await new Promise((r) => setTimeout(r, 300));
    const pending = (await shownMessages(ann.page)).filter((m) => m.text === unacked);
    assert.deepEqual(pending.map((m) => [m.status, m.seq]), [['pending', null]], 'the unacknowledged message before the reload');
    assert.equal(swallow.size, 0, 'the relay swallowed the acknowledgement');

    // Reload, and hold the app's script until Bob has written: Ann's old
    // socket is closed and her new one not open while he sends.
    let release;
    const gate = new Promise((r) => (release = r));
    await ann.page.route('**/js/app.js', async (route) => {
      await gate;
      await route.continue();
    });
    const reloading = ann.page.reload();
    await seeText(bob.page.getByTestId('partner-banner'), `${ann.alias} is away`);
    const meanwhile = ['sent while you were gone', 'and another one', 'third while away'];
    for (const text of meanwhile) {
      await typeAndSend(bob, text);
      await seeMessage(bob, text, { mine: true });
      log.push([bob.name, text]);
    }
    release();
    await reloading;
    await ann.page.unroute('**/js/app.js');

    // Back in the chat, with the whole conversation once and in order.
    await seeVisible(ann.page.getByTestId('message-input'));
    await seeText(ann.page.locator('h1'), bob.alias);
    await eventually('Ann to show all messages after the reload', async () => {
      const shown = await shownMessages(ann.page);
      return shown.length >= log.length && shown.every((m) => m.status === 'sent' && m.visible);
    });
    // Give late duplicates (resends, a second gap fill) a moment to show up.
    await new Promise((r) => setTimeout(r, 1000));
    const after = await shownMessages(ann.page);
    assert.deepEqual(view(after), expected(log, ann.name), 'after the reload: every message once, in seq order');
    await seeText(bob.page.getByTestId('partner-banner'), `${ann.alias} is back`);

    // And the chat goes on both ways, even when Ann gets every event twice.
    deliverTwice = true;
    await say(ann, bob, 'back again');
    await say(bob, ann, 'welcome back');
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(view(await shownMessages(ann.page)), expected(log, ann.name), 'Ann at the end');
    assert.deepEqual(view(await shownMessages(bob.page)), expected(log, bob.name), 'Bob at the end');

    assertHealthy(ann, bob);
  } finally {
    await closeAll(ann, bob);
  }
});
