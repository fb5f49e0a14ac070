// What keeps a conversation flowing for the person reading it: every message
// of a burst is read out, the newest message stays in view when the cards
// open, a half-typed message survives a look at the profile, and the
// sign-out question fits on a phone.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  PHONE,
  TEST_MS,
  browserForFile,
  eventually,
  recordAnnouncements,
  seeMessage,
  seeText,
  seeVisible,
  typeAndSend,
  withMatchedPair,
} from '../lib/harness.mjs';

const browser = browserForFile();

/** After a moment to settle, `user`'s message list shows its newest message (within a few px). */
async function seeNewestInView(user, when) {
  await new Promise((r) => setTimeout(r, 300));
  const below = await user.page
    .getByTestId('messages')
    .evaluate((el) => Math.round(el.scrollHeight - el.scrollTop - el.clientHeight));
  assert.ok(below < 8, `${when}: the newest message in view (${below} px below)`);
}

test('a burst is read out whole and the accepter keeps the newest message in view', { timeout: TEST_MS }, async () => {
  // A card of several lines: the cards take more room than the prompt gave back.
  const details = 'Climbs on weekends, reads on trains, bakes bread badly. Find me as @ada.flow almost anywhere. Lisbon, by way of Porto.';
  const adaSpec = ['flow-ada', 'girl', { card: { realName: 'Ada Flow', details } }];
  const boSpec = [
    'flow-bo',
    'dude',
    { card: { realName: 'Bo Flow', details }, setup: (user) => user.context.addInitScript(recordAnnouncements) },
  ];
  await withMatchedPair(browser(), adaSpec, boSpec, async (ada, bo) => {
    // Three messages sent in one go: they reach him together, and he hears all three.
    const burst = ['burst one', 'burst two', 'burst three'];
    await ada.page.evaluate((texts) => {
      const input = document.querySelector('[data-testid="message-input"]');
      for (const text of texts) {
        input.value = text;
        input.closest('form').requestSubmit();
      }
    }, burst);
    await seeMessage(bo, 'burst three', { mine: false });
    await eventually('every message of the burst to be read out', async () => {
      const said = (await bo.page.evaluate(() => window.__announced)).join('\n');
      return burst.every((text) => said.includes(`${ada.alias}: ${text}`));
    });
    // Enough back and forth to scroll the list, then she asks and he says yes.
    for (let i = 1; i <= 4; i += 1) {
      await typeAndSend(ada, `from ada ${i}`);
      await typeAndSend(bo, `from bo ${i}`);
    }
    await seeMessage(bo, 'from ada 4', { mine: false });
    await seeMessage(bo, 'from bo 4', { mine: true });
    const list = bo.page.getByTestId('messages');
    assert.ok((await list.evaluate((el) => el.scrollHeight - el.clientHeight)) > 0, 'the list scrolls');
    await ada.page.getByTestId('reveal-request').click();
    await seeVisible(bo.page.getByTestId('reveal-prompt'));
    await bo.page.getByTestId('reveal-accept').click();
    await seeText(bo.page.getByTestId('identity-cards'), 'Ada Flow');
    await seeNewestInView(bo, 'cards shown');
  });
});

test('on a phone, opening the folded cards keeps the newest message in view', { timeout: TEST_MS }, async () => {
  const details = 'Paints murals, fixes bikes, sings off key. Ask me about the best bakery in town and the worst film I ever loved. '.repeat(3);
  const eveSpec = ['flow-eve', 'girl', { viewport: PHONE, card: { realName: 'Eve Flow', details } }];
  const faySpec = ['flow-fay', 'dude', { viewport: PHONE, card: { realName: 'Fay Flow', details } }];
  await withMatchedPair(browser(), eveSpec, faySpec, async (eve, fay) => {
    for (let i = 1; i <= 8; i += 1) {
      await typeAndSend(i % 2 ? eve : fay, `line ${i} of a chat that scrolls on a phone`);
    }
    await seeMessage(fay, 'line 8 of a chat that scrolls on a phone', { mine: true });
    await eve.page.getByTestId('reveal-request').click();
    await seeVisible(fay.page.getByTestId('reveal-prompt'));
    await fay.page.getByTestId('reveal-accept').click();
    await seeText(fay.page.getByTestId('reveal-status'), 'You both said yes');
    await seeNewestInView(fay, 'cards folded');
    await fay.page.locator('details.cards-wrap > summary').click();
    await seeVisible(fay.page.getByTestId('identity-cards'));
    await seeNewestInView(fay, 'cards opened');
  });
});

test('a draft survives a look at the profile; the sign-out question fits a phone', { timeout: TEST_MS }, async () => {
  await withMatchedPair(browser(), ['flow-cy', 'dude', { viewport: PHONE }], ['flow-di', 'girl'], async (cy, di) => {
    const input = cy.page.getByTestId('message-input');
    await input.fill('half a thought');
    await cy.page.getByTestId('edit-profile').click();
    await eventually('the profile page', async () => new URL(cy.page.url()).pathname === '/profile');
    await cy.page.goBack();
    await seeVisible(input);
    assert.equal(await input.inputValue(), 'half a thought', 'the draft is back');
    await input.press('Enter');
    await seeMessage(di, 'half a thought', { mine: false });

    const signOut = cy.page.getByTestId('sign-out');
    await signOut.click();
    await seeText(signOut, 'End chat & sign out?');
    const fits = await cy.page.evaluate(() => ({
      page: document.documentElement.scrollWidth,
      view: window.innerWidth,
      button: document.querySelector('[data-testid="sign-out"]').getBoundingClientRect().right,
    }));
    assert.ok(fits.page <= fits.view && fits.button <= fits.view, `the armed button fits: ${JSON.stringify(fits)}`);
  });
});
