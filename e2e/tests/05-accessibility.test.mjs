// Basic accessibility on every screen, as the browser's own accessibility
// tree sees it: every form control and button has an accessible name, there
// is exactly one h1, the polite live region exists and screen changes are
// announced through it, and focus lands somewhere after a screen change.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TEST_MS, browserForFile, eventually, recordAnnouncements } from '../lib/harness.mjs';
import { SCREENS, tour } from '../lib/tour.mjs';

const browser = browserForFile();

/** What the live region must have said by the time a screen is shown. */
const ANNOUNCED = {
  'check-mail': 'Check your mail',
  'onboarding-filled': 'Alias suggestion: ',
  searching: 'Searching for someone',
  chat: 'You are chatting with ',
  'reveal-prompt': 'wants to reveal identities',
  'identity-cards': 'Both identity cards are shown',
  rating: 'How was the vibe?',
  rated: 'Thanks! You called it',
};

/** Named controls a person must find by role and name (Playwright's own name computation). */
const NAMED = {
  signin: [['textbox', 'Your email'], ['button', 'Send me a link']],
  onboarding: [['radio', 'dude'], ['radio', 'girl'], ['radio', 'anyone'], ['textbox', 'Alias'], ['button', 'Spin: suggest a random alias']],
  dashboard: [['button', 'Find someone random']],
  searching: [['button', 'Cancel']],
  chat: [['textbox', /^Message to \w+$/], ['button', 'Send'], ['button', 'Ask to reveal identities'], ['button', 'End the chat']],
  'reveal-prompt': [['button', 'Yes, reveal'], ['button', 'No thanks']],
  rating: [['button', 'Boring'], ['button', 'Okay'], ['button', 'Fire'], ['button', 'Legendary'], ['button', 'Skip']],
  rated: [['button', 'Again!'], ['button', 'Home']],
};

/** Every control in the accessibility tree (hidden ones are not) whose accessible name is empty. */
async function unnamedControls(cdp) {
  const { root } = await cdp.send('DOM.getDocument', { depth: 0 });
  const { nodeIds } = await cdp.send('DOM.querySelectorAll', {
    nodeId: root.nodeId,
    selector: 'input, textarea, select, button, a[href], summary, [role="button"], [contenteditable="true"]',
  });
  const unnamed = [];
  let checked = 0;
  for (const nodeId of nodeIds) {
    const { nodes } = await cdp.send('Accessibility.getPartialAXTree', { nodeId, fetchRelatives: false });
    const node = nodes.find((n) => !n.ignored) ?? null;
    if (!node) continue;
    checked += 1;
    if (!String(node.name?.value ?? '').trim()) {
      const { outerHTML } = await cdp.send('DOM.getOuterHTML', { nodeId });
      unnamed.push(outerHTML.slice(0, 200));
    }
  }
  return { checked, unnamed };
}

test('every screen: named controls, one h1, a live region that speaks, focus placed', { timeout: TEST_MS }, async (t) => {
  const cdps = new Map();
  const problems = [];
  const outlineNotes = [];
  const visited = [];

  await tour(
    browser(),
    'a11y',
    async (user, screen) => {
      visited.push(screen);
      const { page } = user;
      const where = `${screen} (${user.name})`;
      const cdp = cdps.get(user) ?? (await page.context().newCDPSession(page));
      cdps.set(user, cdp);
      await cdp.send('Accessibility.enable');

      const { checked, unnamed } = await unnamedControls(cdp);
      assert.ok(checked > 0, `${where}: no controls found at all`);
      for (const html of unnamed) problems.push(`${where}: control without an accessible name: ${html}`);

      for (const [role, name] of NAMED[screen] ?? []) {
        const count = await page.getByRole(role, { name, exact: true }).count();
        if (count < 1) problems.push(`${where}: no ${role} named ${name}`);
      }

      const facts = await page.evaluate(() => {
        const visible = (e) => e.checkVisibility() && !e.closest('[hidden]');
        const headings = [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')].filter(visible);
        const region = document.getElementById('announcer');
        const style = region ? getComputedStyle(region) : null;
        const active = document.activeElement;
        return {
          lang: document.documentElement.lang,
          title: document.title,
          h1s: headings.filter((e) => e.tagName === 'H1').map((e) => e.textContent.trim()),
          levels: headings.map((e) => Number(e.tagName[1])),
          liveRegion: region && {
            live: region.getAttribute('aria-live'),
            rendered: style.display !== 'none' && style.visibility !== 'hidden',
          },
          otherLive: document.querySelectorAll('[aria-live], [role="alert"], [role="status"]').length,
          focus: active && active !== document.body && active !== document.documentElement ? active.tagName : null,
        };
      });
      if (!facts.lang) problems.push(`${where}: <html> has no lang`);
      if (!facts.title) problems.push(`${where}: the document has no title`);
      if (facts.h1s.length !== 1 || !facts.h1s[0]) problems.push(`${where}: expected exactly one non-empty h1, saw ${JSON.stringify(facts.h1s)}`);
      if (facts.levels[0] !== 1) problems.push(`${where}: the first heading is not the h1 (levels ${facts.levels.join(',')})`);
      for (let i = 1; i < facts.levels.length; i += 1) {
        if (facts.levels[i] > facts.levels[i - 1] + 1) {
          outlineNotes.push(`${where}: heading level jumps h${facts.levels[i - 1]} → h${facts.levels[i]}`);
        }
      }
      if (!facts.liveRegion) problems.push(`${where}: no #announcer live region`);
      else {
        if (facts.liveRegion.live !== 'polite') problems.push(`${where}: #announcer aria-live is ${facts.liveRegion.live}`);
        if (!facts.liveRegion.rendered) problems.push(`${where}: #announcer is not rendered (display/visibility)`);
      }
      if (!facts.focus) problems.push(`${where}: focus was left on the page body after the screen change`);

      const expected = ANNOUNCED[screen];
      if (expected) {
        try {
          await eventually(`the live region to say "${expected}" on ${where}`, async () =>
            (await page.evaluate(() => window.__announced ?? [])).some((s) => s.includes(expected)),
          );
        } catch {
          const said = await page.evaluate(() => window.__announced ?? []);
          problems.push(`${where}: live region never said "${expected}" (said ${JSON.stringify(said)})`);
        }
      }
    },
    { setup: (user) => user.context.addInitScript(recordAnnouncements) },
  );

  assert.deepEqual(visited, SCREENS, 'every screen was checked');
  for (const note of outlineNotes) t.diagnostic(`note: ${note}`);
  assert.deepEqual(problems, [], 'accessibility problems');
});
