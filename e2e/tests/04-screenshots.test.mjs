// Screenshots of every screen at desktop (1280x800) and phone (390x844)
// width into artifacts/screenshots/, for people to look at. Checked here:
// each one was written with the right width, and no screen scrolls
// sideways on a phone.

import assert from 'node:assert/strict';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { before, test } from 'node:test';
import { DESKTOP, PHONE, SCREENSHOTS, TEST_MS, browserForFile } from '../lib/harness.mjs';
import { SCREENS, tour } from '../lib/tour.mjs';

const SIZES = [
  ['desktop', DESKTOP],
  ['phone', PHONE],
];

const browser = browserForFile();
before(async () => {
  await mkdir(SCREENSHOTS, { recursive: true });
});

/** Width and height from a PNG's IHDR chunk. */
function pngSize(bytes) {
  assert.equal(bytes.subarray(1, 4).toString('latin1'), 'PNG', 'not a PNG');
  return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) };
}

/** Two animation frames: layout and paint after a viewport change. */
function settle(page) {
  return page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
}

/** From the top: a full-page shot of a scrolled page paints the sticky header mid-page. */
async function toTop(page) {
  await page.evaluate(() => window.scrollTo(0, 0));
  await settle(page);
}

test('screenshots of every screen at desktop and phone width', { timeout: TEST_MS }, async (t) => {
  const written = [];
  const overflow = [];
  await tour(browser(), 'shots', async (user, screen) => {
    const { page } = user;
    const index = String(SCREENS.indexOf(screen) + 1).padStart(2, '0');
    assert.notEqual(index, '00', `unknown screen ${screen}`);
    const original = page.viewportSize();
    // The still the app itself shows to people who ask for less motion (the radar's rings stay put).
    await page.emulateMedia({ reducedMotion: 'reduce' });
    for (const [label, size] of SIZES) {
      await page.setViewportSize(size);
      await toTop(page);
      const file = path.join(SCREENSHOTS, `${index}-${screen}-${label}.png`);
      await page.screenshot({ path: file, fullPage: true, animations: 'disabled', caret: 'hide' });
      written.push({ file, screen, label, size });
      const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
      if (scrollWidth > size.width) overflow.push(`${screen} (${label}): page is ${scrollWidth}px wide`);
    }
    await page.setViewportSize(original);
    await page.emulateMedia({ reducedMotion: null });
    await settle(page);
  });

  assert.deepEqual(
    [...new Set(written.map((w) => w.screen))],
    SCREENS,
    'every screen was photographed, in order',
  );
  assert.deepEqual(overflow, [], 'screens that scroll sideways');
  for (const { file, size } of written) {
    const bytes = await readFile(file);
    assert.ok(bytes.length > 2000, `${file} is suspiciously small (${bytes.length} bytes)`);
    const png = pngSize(bytes);
    assert.equal(png.width, size.width, `${file} width`);
    assert.ok(png.height >= size.height, `${file} height ${png.height} < ${size.height}`);
  }
  t.diagnostic(`${written.length} screenshots in ${SCREENSHOTS}`);
});
