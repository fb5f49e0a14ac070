// Awkward moments of a chat, each with a fresh pair (no pair meets twice):
// both people asking to reveal at the same time; a paste longer than a
// message may be (and a reveal request to someone whose card is empty); a
// message typed offline when the partner ends the chat meanwhile; signing
// out in the middle of a chat.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  TEST_MS,
  assertHealthy,
  browserForFile,
  closeAll,
  eventually,
  readyUser,
  seeMessage,
  seeHidden,
  seeText,
  seeVisible,
  shownMessages,
  typeAndSend,
  withMatchedPair,
} from '../lib/harness.mjs';

const browser = browserForFile();

test('two people asking to reveal at once both said yes', { timeout: TEST_MS }, async () => {
  const kaiSpec = ['crossing-kai', 'dude', { card: { realName: 'Kai Cross' } }];
  const leaSpec = ['crossing-lea', 'girl', { card: { realName: 'Lea Cross' } }];
  await withMatchedPair(browser(), kaiSpec, leaSpec, async (kai, lea) => {
    // Dispatched, not clicked: a click would wait for a button that the
    // partner's request, arriving first, may already have hidden.
    await Promise.all([kai, lea].map((u) => u.page.getByTestId('reveal-request').dispatchEvent('click')));
    for (const [me, partner] of [
      [kai, lea],
      [lea, kai],
    ]) {
      await seeText(me.page.getByTestId('reveal-status'), 'You both said yes');
      await seeText(me.page.getByTestId('identity-cards'), partner === kai ? 'Kai Cross' : 'Lea Cross');
    }
  });
});

test('a paste over the limit is refused whole, with the count', { timeout: TEST_MS }, async () => {
  await withMatchedPair(browser(), ['paste-max', 'dude'], ['paste-nia', 'girl'], async (max, nia) => {
    const long = `${'a'.repeat(2090)} https://example.org/end`;
    const input = max.page.getByTestId('message-input');
    await input.fill(long);
    await seeText(max.page.locator('.counter'), '114 too many');
    await input.press('Enter');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await input.inputValue(), long, 'the text stays whole in the composer');
    assert.equal((await shownMessages(max.page)).length, 0, 'nothing was sent');
    // Shortened to the limit, it goes.
    await input.fill('a'.repeat(2000));
    await input.press('Enter');
    await seeMessage(nia, 'a'.repeat(2000), { mine: false });
    // Neither filled in a card: asked to reveal, she is told hers is empty.
    await max.page.getByTestId('reveal-request').click();
    await seeText(nia.page.getByTestId('reveal-prompt'), `${max.alias} wants to reveal identities`);
    await seeText(nia.page.getByTestId('empty-card-hint'), 'Your identity card is empty');
    // She says no three times; then he is not offered a fourth ask.
    for (let ask = 1; ask <= 3; ask += 1) {
      if (ask > 1) {
        await max.page.getByTestId('reveal-request').click();
        await seeVisible(nia.page.getByTestId('reveal-prompt'));
      }
      await nia.page.getByTestId('reveal-decline').click();
      await seeVisible(max.page.getByTestId('reveal-declined'));
    }
    await seeText(max.page.getByTestId('reveal-declined'), `${nia.alias} declined 3 times`);
    await seeHidden(max.page.getByTestId('reveal-request'));
  });
});

test('a message typed offline is kept, marked, when the chat ends meanwhile', { timeout: TEST_MS }, async () => {
  await withMatchedPair(browser(), ['offline-oli', 'dude'], ['offline-pia', 'girl'], async (oli, pia) => {
    await pia.context.setOffline(true);
    await eventually('the offline page to notice', async () => {
      return (await pia.page.getByTestId('connection-status').getAttribute('data-state')) !== 'online';
    });
    await typeAndSend(pia, 'are you still there?');
    const end = oli.page.getByTestId('end-session');
    await end.click();
    await seeText(end, 'End chat?');
    await new Promise((r) => setTimeout(r, 500));
    await end.click();
    await seeVisible(oli.page.getByTestId('rate-1'));
    await pia.context.setOffline(false);
    await seeVisible(pia.page.getByTestId('rate-1'));
    // She missed the live end, but the session she reconnects to says who.
    await seeText(pia.page.getByTestId('ended-by'), `${oli.alias} ended the chat.`);
    const transcript = pia.page.getByTestId('transcript');
    await seeText(transcript, 'are you still there?');
    await seeText(transcript, 'Not delivered: the chat had ended');
  });
});

test('signing out in a chat ends it, after a second press', { timeout: TEST_MS }, async () => {
  await withMatchedPair(browser(), ['signout-quinn', 'dude'], ['signout-rae', 'girl'], async (quinn, rae) => {
    const signOut = quinn.page.getByTestId('sign-out');
    await signOut.click();
    await seeText(signOut, 'End chat & sign out?');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await rae.page.getByTestId('rate-1').count(), 0, 'one press ends nothing');
    await signOut.click();
    await seeText(rae.page.getByTestId('ended-by'), `${quinn.alias} ended the chat.`);
    await eventually('the landing page', async () => new URL(quinn.page.url()).pathname === '/');
  });
});

test('signing out while searching leaves the queue at once', { timeout: TEST_MS }, async () => {
  let sam;
  let tia;
  try {
    sam = await readyUser(browser(), 'signout-sam', 'dude');
    tia = await readyUser(browser(), 'signout-tia', 'girl');
    await sam.page.getByTestId('find-match').click();
    await seeVisible(sam.page.getByTestId('cancel-search'));
    await sam.page.getByTestId('sign-out').click();
    await eventually('the landing page', async () => new URL(sam.page.url()).pathname === '/');
    // Within the queue's 10 s grace for a closed socket, he is gone already:
    // she searches and finds nobody.
    await tia.page.getByTestId('find-match').click();
    const waiting = tia.page.getByTestId('waiting-counts');
    await eventually('her waiting counts', async () => (await waiting.getAttribute('data-girl')) === '1');
    assert.equal(await waiting.getAttribute('data-dude'), '0', 'no dude left waiting');
    await new Promise((r) => setTimeout(r, 1_000));
    assert.equal(await tia.page.getByTestId('message-input').count(), 0, 'not paired with someone who signed out');
    assertHealthy(sam, tia);
  } finally {
    await closeAll(sam, tia);
  }
});
