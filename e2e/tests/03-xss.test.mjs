// User text is text: markup in a message or on an identity card shows as
// literal characters, no element is created from it and no script runs.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  TEST_MS,
  assertHealthy,
  browserForFile,
  closeAll,
  pairUp,
  readyUser,
  seeMessage,
  seeText,
  seeVisible,
  typeAndSend,
} from '../lib/harness.mjs';

const browser = browserForFile();

const PAYLOAD = '<img src=x onerror=alert(1)>';
const CARD_PAYLOAD = '<img src=y onerror=alert(2)><b>bold?</b>';

/** Nothing the payloads could have created exists, and no script ran. */
async function assertInert(user) {
  const found = await user.page.evaluate(() => ({
    imgs: document.querySelectorAll('main img').length,
    bolds: document.querySelectorAll('main b').length,
    pwned: Boolean(window.__pwned),
  }));
  assert.deepEqual(found, { imgs: 0, bolds: 0, pwned: false }, `${user.name}: markup from user text became elements`);
  assert.equal(await user.page.locator('[data-testid="messages"] img').count(), 0);
}

test('markup in messages and identity cards is shown as literal text', { timeout: TEST_MS }, async () => {
  let eve;
  let joe;
  try {
    eve = await readyUser(browser(), 'xss-eve', 'girl', { card: { realName: 'Eve', details: CARD_PAYLOAD } });
    joe = await readyUser(browser(), 'xss-joe', 'dude', { card: { realName: 'Joe', details: 'nothing to see' } });
    await pairUp(eve, joe);

    await typeAndSend(eve, PAYLOAD);
    await seeMessage(eve, PAYLOAD, { mine: true });
    await seeMessage(joe, PAYLOAD, { mine: false });
    const withScript = `<script>window.__pwned = true</script>${PAYLOAD.replace('alert(1)', 'window.__pwned=true')}`;
    await typeAndSend(joe, withScript);
    await seeMessage(eve, withScript, { mine: false });
    await seeMessage(joe, withScript, { mine: true });

    // What a person reads is the markup itself.
    for (const u of [eve, joe]) {
      await seeText(u.page.getByTestId('messages'), PAYLOAD);
      await seeText(u.page.getByTestId('messages'), '<script>window.__pwned = true</script>');
    }

    // The same for an identity card after a mutual reveal.
    await eve.page.getByTestId('reveal-request').click();
    await joe.page.getByTestId('reveal-accept').click();
    await seeText(joe.page.getByTestId('identity-card-partner'), CARD_PAYLOAD);
    await seeText(eve.page.getByTestId('identity-card-me'), CARD_PAYLOAD);

    // An image error fires asynchronously: give it time to (not) happen.
    await new Promise((r) => setTimeout(r, 700));
    for (const u of [eve, joe]) {
      await seeVisible(u.page.getByTestId('message-input'));
      await assertInert(u);
    }
    assertHealthy(eve, joe);

    // After a reload the history comes from the server: still text.
    await joe.page.reload();
    await seeMessage(joe, PAYLOAD, { mine: false });
    await seeText(joe.page.getByTestId('identity-card-partner'), CARD_PAYLOAD);
    await new Promise((r) => setTimeout(r, 500));
    await assertInert(joe);
    assertHealthy(eve, joe);
  } finally {
    await closeAll(eve, joe);
  }
});
