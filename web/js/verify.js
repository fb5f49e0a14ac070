// The page a magic link opens: `/auth/verify#token=…`. The token lives in
// the fragment so it never reaches a server log, and is spent only by this
// page's POST, so a mail scanner that follows the link cannot use it up.

import { api, ApiError, saveTokens } from './api.js';
import { focusEl, h, replaceChildren } from './dom.js';

function takeToken() {
  const fromHash = new URLSearchParams(location.hash.replace(/^#/, '')).get('token');
  const fromQuery = new URLSearchParams(location.search).get('token');
  // Drop the token from the address bar and the history entry right away.
  history.replaceState(null, '', '/auth/verify');
  return fromHash || fromQuery || null;
}

export function mount(root, ctx) {
  const token = takeToken();
  const section = h('section', { class: 'panel narrow center', 'aria-busy': 'true' });
  root.append(section);
  let alive = true;

  const fail = (title, text, retry) => {
    section.removeAttribute('aria-busy');
    const heading = h('h1', { class: 'title small', 'data-testid': 'verify-error' }, title);
    replaceChildren(
      section,
      heading,
      h('p', { class: 'muted' }, text),
      h(
        'div',
        { class: 'row center' },
        retry ? h('button', { class: 'btn primary', type: 'button', onclick: retry }, 'Try again') : null,
        h('a', { class: retry ? 'btn ghost' : 'btn primary', href: '/signin', 'data-link': true }, 'Get a new link'),
      ),
    );
    focusEl(heading);
  };

  const run = async () => {
    replaceChildren(section, h('h1', { class: 'title small' }, 'Signing you in…'), h('div', { class: 'pulse', 'aria-hidden': 'true' }));
    if (!token) {
      fail('This link is incomplete', 'Open the link from your email again, or ask for a new one.');
      return;
    }
    try {
      const body = await api.post('/api/auth/verify-token', { token }, { auth: false });
      if (!alive) return;
      // A link for another account may be opened in a signed-in tab.
      ctx.live.stop();
      saveTokens(body);
      ctx.setMe(null);
      ctx.setMe(body.user ?? null);
      ctx.navigate(body.user?.gender ? '/app' : '/onboarding', { replace: true });
    } catch (e) {
      if (!alive) return;
      if (e instanceof ApiError && e.code === 'RATE_LIMITED') {
        fail('Too many attempts', 'Wait a little and try again.', run);
      } else if (e instanceof ApiError && e.status >= 400 && e.status < 500) {
        fail('This link has expired or was already used', 'Links work once and only for a short while. Ask for a fresh one.');
      } else {
        fail('Could not reach the server', 'Check your connection and try again.', run);
      }
    }
  };

  run();
  return {
    focus: section.querySelector('h1'),
    unmount() {
      alive = false;
    },
  };
}
