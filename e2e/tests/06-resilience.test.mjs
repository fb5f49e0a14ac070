// The page keeps telling the truth when the browser does something abrupt:
// a reload while searching goes on searching (the server's queue still
// holds the user), and going offline says so at once (the partner's state
// then unknown) and reconnects when the network is back; news of the chat
// reaches a person on their profile page.

import { test } from 'node:test';
import {
  TEST_MS,
  assertHealthy,
  browserForFile,
  closeAll,
  eventually,
  readyUser,
  seeText,
  seeVisible,
} from '../lib/harness.mjs';

const browser = browserForFile();

const status = (user) => user.page.getByTestId('connection-status').getAttribute('data-state');

test('a reload while searching goes on searching; offline and back reconnects', { timeout: TEST_MS }, async () => {
  let dan;
  let gia;
  try {
    dan = await readyUser(browser(), 'resilient-dan', 'dude');
    gia = await readyUser(browser(), 'resilient-gia', 'girl');

    await dan.page.getByTestId('find-match').click();
    await seeVisible(dan.page.getByTestId('cancel-search'));
    await dan.page.reload();
    await seeVisible(dan.page.getByTestId('searching'));
    await seeVisible(dan.page.getByTestId('cancel-search'));
    // Still in the queue: a searcher of the other gender meets him.
    await gia.page.getByTestId('find-match').click();
    await seeVisible(dan.page.getByTestId('message-input'));
    await seeVisible(gia.page.getByTestId('message-input'));

    await gia.context.setOffline(true);
    await eventually('the offline page to stop saying online', async () => (await status(gia)) !== 'online' && (await status(gia)));
    // Offline, she cannot know whether her partner is still there.
    const partner = gia.page.getByTestId('partner-status');
    await eventually('the partner shown as unknown', async () => (await partner.getAttribute('data-state')) === 'unknown');
    await gia.context.setOffline(false);
    await eventually('the page to be online again', async () => (await status(gia)) === 'online');
    await eventually('the partner shown again', async () => (await partner.getAttribute('data-state')) === 'online');
    await seeVisible(gia.page.getByTestId('message-input'));

    // On his profile page, a message from her still reaches him, with a way back.
    await dan.page.getByTestId('edit-profile').click();
    await seeVisible(dan.page.getByTestId('save-profile'));
    await gia.page.getByTestId('message-input').fill('still there?');
    await gia.page.getByTestId('message-input').press('Enter');
    await seeText(dan.page.getByTestId('toast'), `New message from ${gia.alias}`);
    await dan.page.getByTestId('toast-action').click();
    await seeText(dan.page.getByTestId('messages'), 'still there?');
    assertHealthy(dan, gia);
  } finally {
    await closeAll(dan, gia);
  }
});
