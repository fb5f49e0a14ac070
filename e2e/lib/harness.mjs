// Shared pieces of the browser tests: the browser, one context per user,
// sign-in through the real magic-link mail, onboarding, pairing two users,
// and small polling assertions (playwright-core has no `expect`).
//
// The tests run against a server started by scripts/e2e-browser, which
// passes where it is through the environment:
//   IO_E2E_BASE_URL     the server's public URL (the WebSocket Origin must match it)
//   IO_E2E_MAIL_DIR     where the SMTP sink writes one JSON file per mail
//   IO_E2E_CHROMIUM     the browser binary
//   IO_E2E_SCREENSHOTS  where screenshots go

import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { chromium } from 'playwright-core';

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the browser tests through scripts/e2e-browser`);
  return value;
}

export const BASE = required('IO_E2E_BASE_URL').replace(/\/+$/, '');
export const MAIL_DIR = required('IO_E2E_MAIL_DIR');
export const SCREENSHOTS = process.env.IO_E2E_SCREENSHOTS ?? path.resolve('..', 'artifacts', 'screenshots');
const CHROMIUM = process.env.IO_E2E_CHROMIUM ?? '/usr/bin/chromium';

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

/** How long a user-visible change may take (matching, a message, a reconnect). */
export const STEP_MS = 15_000;
/** Budget of one test. */
export const TEST_MS = 90_000;

/** Aliases the server accepts (onboarding checks the same). */
export const ALIAS_RE = /^[A-Za-z0-9_]{3,24}$/;

const RUN = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;

/** A fresh address for this run (sign-in limits are per email, and users never meet twice). */
export function uniqueEmail(tag) {
  return `${tag}-${RUN}@e2e.example.com`;
}

/**
 * One browser for the test file that calls this: launched before its first
 * test, closed after its last. Call it at the top of the file; it returns a
 * getter, as the browser exists only once `before` has run.
 */
export function browserForFile() {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });
  return () => browser;
}

async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * One person: their own browser context (own localStorage, own socket),
 * with everything that should never happen recorded for `assertHealthy`.
 */
export async function newUser(browser, name, { viewport = DESKTOP } = {}) {
  const context = await browser.newContext({ viewport, baseURL: BASE, locale: 'en-US' });
  context.setDefaultTimeout(STEP_MS);
  const page = await context.newPage();
  const user = { name, context, page, alias: null, email: null, dialogs: [], pageErrors: [], cspViolations: [] };
  page.on('dialog', (dialog) => {
    user.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  page.on('pageerror', (error) => user.pageErrors.push(String(error?.stack ?? error)));
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const text = message.text();
    if (/Content Security Policy/i.test(text)) user.cspViolations.push(text);
    // socket.js swallows exceptions thrown by screen listeners and logs them like this.
    if (/listener failed/.test(text)) user.pageErrors.push(text);
  });
  return user;
}

/**
 * Record everything the polite live region says (it is cleared between
 * sentences) into `window.__announced`; an init script:
 * `context.addInitScript(recordAnnouncements)`.
 */
export function recordAnnouncements() {
  window.__announced = [];
  document.addEventListener('DOMContentLoaded', () => {
    const region = document.getElementById('announcer');
    if (!region) return;
    new MutationObserver(() => {
      const text = region.textContent.trim();
      if (text) window.__announced.push(text);
    }).observe(region, { childList: true, characterData: true, subtree: true });
  });
}

/** No alert/confirm dialog, no uncaught exception, no CSP violation on this user's pages. */
export function assertHealthy(...users) {
  for (const u of users) {
    assert.deepEqual(u.dialogs, [], `${u.name}: a dialog opened`);
    assert.deepEqual(u.pageErrors, [], `${u.name}: uncaught errors in the page`);
    assert.deepEqual(u.cspViolations, [], `${u.name}: Content Security Policy violations`);
  }
}

// --- polling assertions ------------------------------------------------------

/** Poll `probe` until it returns a truthy value; fail with `what` and the last value seen. */
export async function eventually(what, probe, { timeout = STEP_MS, interval = 100 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  let lastError;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      const seen = lastError ? `last error: ${lastError.message}` : `last value: ${JSON.stringify(last)}`;
      throw new assert.AssertionError({ message: `timed out after ${timeout} ms waiting for ${what} (${seen})` });
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** Wait until `locator` is visible and its visible text contains `text` (string or RegExp). */
export async function seeText(locator, text, what = String(text)) {
  await locator.waitFor({ state: 'visible' });
  return eventually(`visible text ${what}`, async () => {
    const inner = await locator.innerText();
    return (typeof text === 'string' ? inner.includes(text) : text.test(inner)) && inner;
  });
}

export async function seeVisible(locator) {
  await locator.waitFor({ state: 'visible' });
}

export async function seeHidden(locator) {
  await locator.waitFor({ state: 'hidden' });
}

/** The h1 of the current screen (there must be exactly one visible). */
export async function h1Text(page) {
  const texts = await page.$$eval('h1', (els) => els.filter((e) => e.checkVisibility()).map((e) => e.innerText.trim()));
  assert.equal(texts.length, 1, `expected one visible h1, saw ${JSON.stringify(texts)}`);
  return texts[0];
}

// --- mail --------------------------------------------------------------------

const LINK_RE = new RegExp(`${BASE.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/auth/verify#token=[A-Za-z0-9._~%-]+`);

/** The newest magic link mailed to `email` (read from the SMTP sink's files). */
export async function magicLink(email, { timeout = STEP_MS } = {}) {
  return eventually(`a magic-link mail to ${email}`, async () => {
    const names = (await readdir(MAIL_DIR)).filter((n) => n.endsWith('.json')).sort().reverse();
    for (const name of names) {
      const mail = JSON.parse(await readFile(path.join(MAIL_DIR, name), 'utf8'));
      if (!mail.to?.some((to) => to.toLowerCase() === email.toLowerCase())) continue;
      const link = mail.text?.match(LINK_RE)?.[0];
      assert.ok(link, `the mail to ${email} has no ${BASE}/auth/verify#token=… link in its text part:\n${mail.text}`);
      const inHtml = mail.html?.includes(link.replace(/&/g, '&amp;'));
      assert.ok(inHtml, `the HTML part of the mail to ${email} does not carry the same link`);
      return link;
    }
    return null;
  }, { timeout, interval: 150 });
}

// --- flows -------------------------------------------------------------------

/**
 * Landing → "Enter" → email → "check your mail" → the link from the mail,
 * opened in the same tab → onboarding. `onScreen(name)` is called on each
 * screen on the way (screenshots, accessibility checks).
 */
export async function signIn(user, email, { onScreen = async () => {} } = {}) {
  const { page } = user;
  user.email = email;
  await page.goto('/');
  await seeVisible(page.getByTestId('enter'));
  await onScreen('landing');
  await page.getByTestId('enter').click();
  await page.waitForURL('**/signin');
  await seeVisible(page.getByTestId('email-input'));
  await onScreen('signin');
  await page.getByTestId('email-input').fill(email);
  await page.getByTestId('send-link').click();
  await seeText(page.getByTestId('check-mail'), 'Check your mail');
  await seeText(page.locator('main'), email);
  await onScreen('check-mail');
  const link = await magicLink(email);
  await page.goto(link);
  await page.waitForURL('**/onboarding');
  // The token must not stay in the address bar.
  assert.ok(!page.url().includes('token='), `the token is still in the address bar: ${page.url()}`);
}

/**
 * Onboarding: gender (seeking follows it), an alias from "Spin", optionally
 * an identity card; lands on the dashboard. Sets `user.alias`.
 */
export async function onboard(user, gender, { card = null, onScreen = async () => {} } = {}) {
  const { page } = user;
  const other = gender === 'dude' ? 'girl' : 'dude';
  assert.equal(await h1Text(page), 'Who are you tonight?');
  await seeVisible(page.getByTestId('save-profile'));
  await onScreen('onboarding');

  // The radios are styled as pills: a person clicks the label.
  await page.locator(`label[for="gender-${gender}"]`).click();
  assert.ok(await page.getByTestId(`gender-${gender}`).isChecked(), `gender ${gender} is not checked`);
  assert.ok(await page.getByTestId(`seeking-${other}`).isChecked(), `seeking did not follow the gender (${other})`);

  const aliasInput = page.getByTestId('alias-input');
  const before = await aliasInput.inputValue();
  await page.getByTestId('alias-spin').click();
  const alias = await eventually('an alias from Spin', async () => {
    const v = await aliasInput.inputValue();
    return v && v !== before && ALIAS_RE.test(v) && v;
  });

  if (card) {
    await page.locator('details.card-editor > summary').click();
    if (card.realName !== undefined) await page.getByTestId('real-name-input').fill(card.realName);
    if (card.details !== undefined) await page.getByTestId('details-input').fill(card.details);
    if (card.revealEmail) await page.locator('label[for="reveal-email"]').click();
  }
  await onScreen('onboarding-filled');

  await page.getByTestId('save-profile').click();
  await page.waitForURL('**/app');
  await seeVisible(page.getByTestId('find-match'));
  assert.equal(await h1Text(page), `Hey, ${alias}`);
  await seeText(page.getByTestId('connection-status'), 'online');
  user.alias = alias;
  user.gender = gender;
  return alias;
}

/** A new signed-in, onboarded user in its own context. */
export async function readyUser(browser, name, gender, options = {}) {
  const user = await newUser(browser, name, options);
  await options.setup?.(user);
  await signIn(user, uniqueEmail(name), options);
  await onboard(user, gender, options);
  return user;
}

/**
 * Two new users, `a` = [name, gender, options] searching first, matched with
 * each other; runs `body(a, b)`, checks both stayed healthy, and always
 * closes them.
 */
export async function withMatchedPair(browser, a, b, body) {
  const users = [];
  try {
    for (const [name, gender, options] of [a, b]) users.push(await readyUser(browser, name, gender, options));
    await pairUp(...users);
    await body(...users);
    assertHealthy(...users);
  } finally {
    await closeAll(...users);
  }
}

/** `a` searches first, then `b`; both end up in the chat with each other. */
export async function pairUp(a, b, { onSearching = async () => {} } = {}) {
  await a.page.getByTestId('find-match').click();
  await seeVisible(a.page.getByTestId('searching'));
  await seeVisible(a.page.getByTestId('cancel-search'));
  // The waiting line counts the searcher (it is polled every few seconds).
  const waiting = a.page.getByTestId('waiting-counts');
  await eventually(`${a.name} to see themself among the waiting ${a.gender}s`, async () => {
    const n = Number(await waiting.getAttribute(`data-${a.gender}`));
    return n >= 1 && new RegExp(`\\b${n} ${a.gender}s?\\b`).test(await waiting.innerText());
  });
  await onSearching();
  await b.page.getByTestId('find-match').click();
  for (const [me, partner] of [
    [a, b],
    [b, a],
  ]) {
    await seeVisible(me.page.getByTestId('message-input'));
    // Seen: the partner's alias; heard (accessible name): who and which gender.
    await seeText(me.page.locator('h1'), partner.alias);
    const name = `Chatting with ${partner.alias} (${partner.gender})`;
    await seeVisible(me.page.getByRole('heading', { level: 1, name, exact: true }));
  }
}

/** What the message list shows, in page order. */
export async function shownMessages(page) {
  return page.getByTestId('message').evaluateAll((els) =>
    els.map((li) => ({
      text: li.querySelector('.msg-text')?.textContent ?? null,
      mine: li.dataset.mine === 'true',
      status: li.dataset.status,
      seq: li.dataset.seq ? Number(li.dataset.seq) : null,
      visible: li.checkVisibility(),
    })),
  );
}

/** Type `text` key by key into the composer and send it with Enter. */
export async function typeAndSend(user, text, { delay = 0 } = {}) {
  const input = user.page.getByTestId('message-input');
  if (delay) await input.pressSequentially(text, { delay });
  else await input.fill(text);
  await input.press('Enter');
}

/** Wait until `user` shows a committed bubble with exactly `text` (from `mine` or the partner). */
export async function seeMessage(user, text, { mine }) {
  return eventually(`${user.name} to show ${mine ? 'own' : "the partner's"} message ${JSON.stringify(text)}`, async () => {
    const found = (await shownMessages(user.page)).find((m) => m.text === text && m.mine === mine);
    return found && found.visible && found.status === 'sent' && found.seq && found;
  });
}

export async function closeAll(...users) {
  await Promise.all(users.filter(Boolean).map((u) => u.context.close().catch(() => {})));
}
