// Email sign-in: ask for a magic link, then wait for the user to open it
// (here or in another tab; app.js moves on when the tokens appear).

import { api, ApiError } from './api.js';
import { announce, field, focusEl, h, isBusy, replaceChildren, setBusy } from './dom.js';

/**
 * Whether the server runs its development mailer (links land in
 * /dev/mailbox instead of an inbox). The SPA fallback answers unknown paths
 * with index.html and status 200, so a page that is our own shell does not
 * count.
 */
async function devMailboxAvailable() {
  try {
    const response = await fetch('/dev/mailbox', { headers: { Accept: 'text/html' } });
    if (!response.ok) return false;
    const text = await response.text();
    return !text.includes('data-io-spa');
  } catch {
    return false;
  }
}

export function mount(root, ctx) {
  const section = h('section', { class: 'panel narrow' });
  root.append(section);
  let alive = true;

  const showForm = (initialEmail = '') => {
    const heading = h('h1', { class: 'title' }, 'Sign in');
    const input = h('input', {
      type: 'email',
      name: 'email',
      autocomplete: 'email',
      inputmode: 'email',
      required: true,
      maxlength: 254,
      value: initialEmail,
      spellcheck: 'false',
    });
    const email = field({ id: 'email', label: 'Your email', input, testid: 'email-input', hint: 'We send a one-time sign-in link. No password.' });
    const submit = h('button', { class: 'btn primary', type: 'submit', 'data-testid': 'send-link' }, 'Send me a link');
    const formError = h('p', { class: 'form-error', 'data-testid': 'form-error', role: 'alert', hidden: true });
    const form = h('form', { class: 'stack', novalidate: true }, email.wrapper, formError, submit);

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (isBusy(submit)) return;
      email.setError('');
      formError.hidden = true;
      const value = input.value.trim();
      if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(value)) {
        email.setError('Enter a valid email address.');
        input.focus();
        return;
      }
      setBusy(submit, true);
      submit.textContent = 'Sending…';
      try {
        await api.post('/api/auth/send-magic-link', { email: value }, { auth: false });
        if (alive) showSent(value);
      } catch (e) {
        if (!alive) return;
        setBusy(submit, false);
        submit.textContent = 'Send me a link';
        if (e instanceof ApiError && e.code === 'VALIDATION_ERROR' && (!e.field || e.field === 'email')) {
          email.setError(e.message);
          input.focus();
        } else if (e instanceof ApiError && e.code === 'RATE_LIMITED') {
          const wait = e.retryAfter ? ` Try again in ${Math.ceil(e.retryAfter / 60)} min.` : '';
          formError.textContent = `Too many links requested.${wait}`;
          formError.hidden = false;
        } else {
          formError.textContent = e instanceof ApiError && e.status ? e.message : 'Could not reach the server. Try again.';
          formError.hidden = false;
        }
      }
    });

    replaceChildren(
      section,
      heading,
      h('p', { class: 'muted' }, 'Use your community email address.'),
      form,
      h('p', { class: 'muted small' }, h('a', { href: '/', 'data-link': true }, '← What is IO?')),
    );
    return heading;
  };

  const showSent = (email) => {
    const heading = h('h1', { class: 'title', 'data-testid': 'check-mail' }, 'Check your mail');
    const devSlot = h('p', { class: 'dev-note', hidden: true });
    replaceChildren(
      section,
      heading,
      h('p', { class: 'lede' }, 'If ', h('strong', { class: 'break' }, email), ' may sign in, a link is on its way. Open it on this device; this page moves on by itself.'),
      h('p', { class: 'muted small' }, 'The link works once and expires soon.'),
      devSlot,
      h(
        'div',
        { class: 'row' },
        h('button', { class: 'btn ghost', type: 'button', 'data-testid': 'use-another-email', onclick: () => focusEl(showForm(email)) }, 'Use another email'),
      ),
    );
    announce('Link sent. Check your mail.');
    focusEl(heading);
    devMailboxAvailable().then((available) => {
      if (!available || !alive) return;
      replaceChildren(
        devSlot,
        'Developer? The dev mailer is on: ',
        h('a', { href: '/dev/mailbox', 'data-testid': 'dev-mailbox' }, 'see /dev/mailbox'),
      );
      devSlot.hidden = false;
    });
  };

  const heading = showForm();
  return {
    focus: heading,
    unmount() {
      alive = false;
    },
  };
}
