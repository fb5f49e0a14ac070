// A walk through every screen of the client with two people, calling
// `onScreen(user, name)` once each screen is settled: used for the
// screenshots and for the accessibility checks.

import {
  assertHealthy,
  closeAll,
  magicLink,
  newUser,
  onboard,
  pairUp,
  seeHidden,
  seeMessage,
  seeText,
  seeVisible,
  signIn,
  typeAndSend,
  uniqueEmail,
} from './harness.mjs';

/** Screens in the order the tour visits them (with the user who shows it). */
export const SCREENS = [
  'landing',
  'signin',
  'check-mail',
  'onboarding',
  'onboarding-filled',
  'link-used',
  'dashboard',
  'searching',
  'chat',
  'reveal-prompt',
  'identity-cards',
  'rating',
  'rated',
];

export async function tour(browser, tag, onScreen, { setup = async () => {} } = {}) {
  const girl = await newUser(browser, `${tag}-girl`);
  const dude = await newUser(browser, `${tag}-dude`);
  const spare = await newUser(browser, `${tag}-spare`);
  for (const u of [girl, dude, spare]) await setup(u);
  try {
    const visit = (user) => (name) => onScreen(user, name);
    await signIn(girl, uniqueEmail(girl.name), { onScreen: visit(girl) });
    await onboard(girl, 'girl', {
      card: { realName: 'Tara Tour', details: 'Film club, third year. Ask me about Tarkovsky.', revealEmail: true },
      onScreen: visit(girl),
    });

    // The girl's link again, in a browser that is not signed in: spent.
    await spare.page.goto(await magicLink(girl.email));
    await seeText(spare.page.getByTestId('verify-error'), 'expired or was already used');
    await onScreen(spare, 'link-used');

    await onScreen(girl, 'dashboard');
    await signIn(dude, uniqueEmail(dude.name));
    await onboard(dude, 'dude', { card: { realName: 'Theo Tour', details: 'Climbs, cooks, codes.' } });
    await pairUp(girl, dude, { onSearching: () => onScreen(girl, 'searching') });

    for (const [from, to, text] of [
      [girl, dude, 'hey! first time here?'],
      [dude, girl, 'yes, a friend told me about it. you?'],
      [girl, dude, 'third chat tonight, the last one talked only about his cat 🐈'],
    ]) {
      await typeAndSend(from, text);
      await seeMessage(to, text, { mine: false });
      await seeMessage(from, text, { mine: true });
    }
    // The dude is typing while the girl looks at the chat. The tour is for
    // screenshots and accessibility (the story test asserts typing itself),
    // so it keeps typing until the indicator shows rather than betting on
    // one burst landing inside the server's typing budget.
    const indicator = girl.page.getByTestId('typing-indicator');
    let shown = false;
    let typed = '';
    for (const chunk of ['haha, cats are', ' the', ' best']) {
      typed += chunk;
      await dude.page.getByTestId('message-input').pressSequentially(chunk, { delay: 30 });
      shown = await indicator
        .waitFor({ state: 'visible', timeout: 4000 })
        .then(() => true, () => false);
      if (shown) break;
    }
    if (!shown) await seeVisible(indicator);
    await onScreen(girl, 'chat');
    await dude.page.getByTestId('message-input').press('Enter');
    await seeMessage(girl, typed, { mine: false });

    await girl.page.getByTestId('reveal-request').click();
    await seeVisible(dude.page.getByTestId('reveal-prompt'));
    await onScreen(dude, 'reveal-prompt');
    await dude.page.getByTestId('reveal-accept').click();
    await seeVisible(girl.page.getByTestId('identity-card-partner'));
    await seeText(girl.page.getByTestId('identity-card-partner'), 'Theo Tour');
    await seeText(dude.page.getByTestId('identity-card-partner'), 'Tara Tour');
    await onScreen(girl, 'identity-cards');

    // Two presses, not a double click (that counts as one).
    await girl.page.getByTestId('end-session').click();
    await seeText(girl.page.getByTestId('end-session'), 'End chat?');
    await new Promise((r) => setTimeout(r, 500));
    await girl.page.getByTestId('end-session').click();
    await seeVisible(dude.page.getByTestId('rate-4'));
    await seeText(dude.page.getByTestId('ended-by'), `${girl.alias} ended the chat.`);
    await onScreen(dude, 'rating');
    await seeVisible(girl.page.getByTestId('rate-3'));
    await girl.page.getByTestId('rate-3').click();
    await seeVisible(girl.page.getByTestId('again'));
    await seeHidden(girl.page.getByTestId('skip-rating'));
    await onScreen(girl, 'rated');

    assertHealthy(girl, dude, spare);
  } finally {
    await closeAll(girl, dude, spare);
  }
}
