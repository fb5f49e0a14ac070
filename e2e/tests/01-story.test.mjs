// The whole story with two people in two browser contexts: magic-link
// sign-in through real mail, onboarding as a dude and a girl, matching,
// chatting both ways with the typing indicator, a reveal both accept, the
// end of the chat and a rating on each side.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  TEST_MS,
  assertHealthy,
  browserForFile,
  closeAll,
  eventually,
  h1Text,
  pairUp,
  readyUser,
  seeHidden,
  seeMessage,
  seeText,
  seeVisible,
  shownMessages,
} from '../lib/harness.mjs';

const browser = browserForFile();

/** `from` types `text` slowly; `to` sees "<alias> is typing", then the message, then no indicator. */
async function chatLine(from, to, text) {
  const input = from.page.getByTestId('message-input');
  await input.pressSequentially(text.slice(0, 6), { delay: 40 });
  const indicator = to.page.getByTestId('typing-indicator');
  await seeText(indicator, `${from.alias} is typing`);
  await input.pressSequentially(text.slice(6), { delay: 10 });
  await input.press('Enter');
  assert.equal(await input.inputValue(), '', `${from.name}: the composer was not cleared after sending`);
  await seeMessage(to, text, { mine: false });
  await seeMessage(from, text, { mine: true });
  await seeHidden(indicator);
}

test('two people sign in by mail, match, chat, reveal, end and rate', { timeout: TEST_MS }, async () => {
  let dude;
  let girl;
  try {
    dude = await readyUser(browser(), 'story-dude', 'dude', {
      card: { realName: 'Dario Dude', details: 'Second year, physics', revealEmail: true },
    });
    girl = await readyUser(browser(), 'story-girl', 'girl', {
      card: { realName: 'Gina Girl', details: 'Plays the cello' },
    });

    // The dashboard counts both of us once the pushes or polls catch up.
    await eventually('the online count to reach 2', async () => {
      const n = Number(await dude.page.getByTestId('online-count').locator('strong').innerText());
      return n >= 2;
    });

    await pairUp(dude, girl);
    for (const u of [dude, girl]) {
      await seeText(u.page.getByTestId('partner-status'), 'here');
      await seeText(u.page.getByTestId('connection-status'), 'online');
    }

    await chatLine(dude, girl, 'hey there, stranger');
    await chatLine(girl, dude, 'hi! what brings you here?');
    await chatLine(dude, girl, 'procrastination, mostly');

    // Both sides show the same conversation in the same order.
    const dudeView = await shownMessages(dude.page);
    const girlView = await shownMessages(girl.page);
    assert.deepEqual(
      dudeView.map((m) => [m.seq, m.text, m.mine]),
      [
        [1, 'hey there, stranger', true],
        [2, 'hi! what brings you here?', false],
        [3, 'procrastination, mostly', true],
      ],
    );
    assert.deepEqual(
      girlView.map((m) => [m.seq, m.text, !m.mine]),
      dudeView.map((m) => [m.seq, m.text, m.mine]),
    );

    // Reveal: the girl asks while the dude is typing; the request does not
    // take his composer's focus (an Enter meant for a message must never
    // answer it); then he accepts.
    await dude.page.getByTestId('message-input').focus();
    await girl.page.getByTestId('reveal-request').click();
    await seeText(girl.page.getByTestId('reveal-status'), `Waiting for ${dude.alias}`);
    await seeHidden(girl.page.getByTestId('reveal-request'));
    const prompt = dude.page.getByTestId('reveal-prompt');
    await seeText(prompt, `${girl.alias} wants to reveal identities`);
    assert.equal(
      await dude.page.evaluate(() => document.activeElement?.dataset.testid),
      'message-input',
      'a reveal request leaves the focus in the composer',
    );
    // His card has a name on it: no warning that it is empty.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await dude.page.getByTestId('empty-card-hint').isVisible(), false, 'his card is not empty');
    await dude.page.getByTestId('reveal-accept').click();
    await seeHidden(prompt);

    const cards = {
      [dude.name]: { me: ['Dario Dude', 'Second year, physics', dude.email], partner: ['Gina Girl', 'Plays the cello'] },
      [girl.name]: { me: ['Gina Girl', 'Plays the cello'], partner: ['Dario Dude', 'Second year, physics', dude.email] },
    };
    for (const u of [dude, girl]) {
      await seeText(u.page.getByTestId('reveal-status'), 'You both said yes');
      await seeVisible(u.page.getByTestId('identity-cards'));
      for (const text of cards[u.name].me) await seeText(u.page.getByTestId('identity-card-me'), text);
      for (const text of cards[u.name].partner) await seeText(u.page.getByTestId('identity-card-partner'), text);
    }
    // The girl did not tick "show my email": it must not leak onto either card.
    for (const u of [dude, girl]) {
      const all = await u.page.getByTestId('identity-cards').innerText();
      assert.ok(!all.includes(girl.email), `${u.name}: the girl's email is shown although she did not choose to`);
    }

    // The dude ends it; both land on the rating screen with the cards.
    // End takes two presses: the first only arms the button, and a double
    // click is one press.
    const end = dude.page.getByTestId('end-session');
    await end.dblclick();
    await seeText(end, 'End chat?');
    await new Promise((r) => setTimeout(r, 500));
    for (const u of [dude, girl]) {
      assert.equal(await u.page.getByTestId('rate-1').count(), 0, `${u.name}: one press ends nothing`);
    }
    // His goodbye goes out just before the end: she still gets to read it.
    await dude.page.getByTestId('message-input').fill('gotta run, bye!');
    await dude.page.getByTestId('message-input').press('Enter');
    await end.click();
    for (const u of [dude, girl]) {
      await seeVisible(u.page.getByTestId('rate-1'));
      assert.equal(await h1Text(u.page), 'Chat ended');
      await seeVisible(u.page.getByTestId('identity-card-partner'));
      await seeText(u.page.getByTestId('transcript'), 'gotta run, bye!');
      assert.equal(await u.page.getByTestId('transcript-message').count(), 4, `${u.name}: the whole conversation`);
    }
    await seeText(dude.page.getByTestId('ended-by'), `You ended the chat with ${girl.alias}.`);
    await seeText(girl.page.getByTestId('ended-by'), `${dude.alias} ended the chat.`);
    await seeHidden(dude.page.getByTestId('message-input'));

    for (const [u, rating, word] of [
      [dude, 4, 'legendary'],
      [girl, 3, 'fire'],
    ]) {
      await u.page.getByTestId(`rate-${rating}`).click();
      await seeText(u.page.getByTestId('rating-thanks'), `You called it ${word}`);
      await seeVisible(u.page.getByTestId('again'));
      await seeVisible(u.page.getByTestId('back-home'));
      await seeHidden(u.page.getByTestId('skip-rating'));
      assert.equal(await u.page.getByTestId(`rate-${rating}`).getAttribute('aria-pressed'), 'true');
      assert.equal(await u.page.getByTestId('rate-1').getAttribute('aria-pressed'), 'false');
    }

    // "Home" leaves the rating screen for the dashboard.
    await girl.page.getByTestId('back-home').click();
    await seeVisible(girl.page.getByTestId('find-match'));

    assertHealthy(dude, girl);
  } finally {
    await closeAll(dude, girl);
  }
});
