// Profile: gender, whom to meet, alias (with a "spin" for a suggestion) and
// the optional identity card that only a mutual reveal shows. Used for the
// first visit (`/onboarding`) and for later edits (`/profile`).

import { api, ApiError } from './api.js';
import { announce, field, focusEl, h, isBusy, replaceChildren, setBusy } from './dom.js';

const ALIAS_RE = /^[A-Za-z0-9_]{3,24}$/;
const OTHER = { dude: 'girl', girl: 'dude' };

/** A group of radio "pills"; each input keeps its own data-testid. */
function choiceGroup({ name, legend, options, testidPrefix }) {
  const errorId = `${name}-error`;
  const error = h('p', { id: errorId, class: 'field-error', 'data-testid': `${name}-error`, hidden: true });
  const inputs = options.map(([value, label, emoji]) =>
    h('input', { type: 'radio', name, value, id: `${name}-${value}`, 'data-testid': `${testidPrefix}-${value}` }),
  );
  const fieldset = h(
    'fieldset',
    { class: 'choices', 'aria-describedby': errorId },
    h('legend', {}, legend),
    h(
      'div',
      { class: 'pills' },
      options.map(([value, label, emoji], i) =>
        h('label', { class: 'pill', for: `${name}-${value}` }, inputs[i], h('span', { 'aria-hidden': 'true', class: 'emoji' }, emoji), ` ${label}`),
      ),
    ),
    error,
  );
  return {
    fieldset,
    inputs,
    get value() {
      return inputs.find((i) => i.checked)?.value ?? null;
    },
    set value(v) {
      for (const i of inputs) i.checked = i.value === v;
    },
    setError(message) {
      error.textContent = message || '';
      error.hidden = !message;
    },
    focus() {
      (inputs.find((i) => i.checked) ?? inputs[0]).focus();
    },
  };
}

export function mount(root, ctx, { firstTime = true } = {}) {
  let alive = true;
  const heading = h('h1', { class: 'title' }, firstTime ? 'Who are you tonight?' : 'Your profile');
  const section = h('section', { class: 'panel' }, heading, h('p', { class: 'muted', 'aria-live': 'polite' }, 'Loading your profile…'));
  root.append(section);

  const gender = choiceGroup({
    name: 'gender',
    legend: 'I am a',
    testidPrefix: 'gender',
    options: [
      ['dude', 'dude', '🕺'],
      ['girl', 'girl', '💃'],
    ],
  });
  const seeking = choiceGroup({
    name: 'seeking',
    legend: 'I want to meet',
    testidPrefix: 'seeking',
    options: [
      ['girl', 'girls', '💃'],
      ['dude', 'dudes', '🕺'],
      ['any', 'anyone', '✨'],
    ],
  });
  // Seeking follows gender (the other one) until the user picks it.
  let seekingTouched = false;
  for (const i of seeking.inputs) i.addEventListener('change', () => (seekingTouched = true));
  for (const i of gender.inputs) {
    i.addEventListener('change', () => {
      gender.setError('');
      if (!seekingTouched) seeking.value = OTHER[gender.value] ?? 'any';
    });
  }

  const aliasInput = h('input', { type: 'text', name: 'alias', autocomplete: 'off', spellcheck: 'false', maxlength: 24, required: true });
  const alias = field({ id: 'alias', label: 'Alias', input: aliasInput, testid: 'alias-input', hint: '3–24 letters, digits or _. This is all a stranger sees.' });
  const spin = h('button', { class: 'btn cyan', type: 'button', 'data-testid': 'alias-spin' }, h('span', { 'aria-hidden': 'true' }, '🎲 '), 'Spin');
  spin.setAttribute('aria-label', 'Spin: suggest a random alias');
  alias.wrapper.append(h('div', { class: 'row' }, spin));
  // A complaint goes as soon as the alias it was about is fixed.
  aliasInput.addEventListener('input', () => {
    if (ALIAS_RE.test(aliasInput.value.trim())) alias.setError('');
  });

  const realNameInput = h('input', { type: 'text', name: 'realName', autocomplete: 'name', maxlength: 80, dir: 'auto' });
  const realName = field({ id: 'real-name', label: 'Real name', input: realNameInput, testid: 'real-name-input' });
  const detailsInput = h('textarea', { name: 'details', rows: 3, maxlength: 500, dir: 'auto' });
  const details = field({
    id: 'details',
    label: 'About you',
    input: detailsInput,
    testid: 'details-input',
    hint: 'Anything you would share once you both agree: a handle, your course, a fun fact.',
  });
  const revealEmailInput = h('input', { type: 'checkbox', name: 'revealEmail', id: 'reveal-email', 'data-testid': 'reveal-email' });
  const revealEmail = h('div', { class: 'check' }, revealEmailInput, h('label', { for: 'reveal-email' }, 'Show my email on my card'));

  const card = h(
    'details',
    { class: 'card-editor' },
    h('summary', {}, 'Identity card ', h('span', { class: 'muted' }, '(optional, shown only after you both agree to reveal)')),
    realName.wrapper,
    details.wrapper,
    revealEmail,
  );

  const formError = h('p', { class: 'form-error', role: 'alert', 'data-testid': 'form-error', hidden: true });
  const save = h('button', { class: 'btn primary big', type: 'submit', 'data-testid': 'save-profile' }, firstTime ? "Let's go" : 'Save');
  const form = h('form', { class: 'stack', novalidate: true }, gender.fieldset, seeking.fieldset, alias.wrapper, card, formError, save);
  if (!firstTime) form.append(h('a', { class: 'btn ghost', href: '/app', 'data-link': true }, 'Back'));

  const fields = {
    gender,
    seeking,
    alias,
    realName,
    details,
  };

  const clearErrors = () => {
    for (const f of Object.values(fields)) f.setError('');
    formError.hidden = true;
  };

  spin.addEventListener('click', async () => {
    if (isBusy(spin)) return;
    setBusy(spin, true);
    try {
      const body = await api.get('/api/users/alias-suggestion');
      if (!alive) return;
      if (body?.alias) {
        aliasInput.value = body.alias;
        alias.setError('');
        announce(`Alias suggestion: ${body.alias}`);
      }
    } catch (e) {
      if (alive) alias.setError(e instanceof ApiError && e.status ? e.message : 'Could not get a suggestion.');
    } finally {
      setBusy(spin, false);
    }
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (isBusy(save)) return;
    clearErrors();
    const value = aliasInput.value.trim();
    let firstBad = null;
    if (!gender.value) {
      gender.setError('Pick one, so we know whom to pair you with.');
      firstBad ??= gender;
    }
    if (!ALIAS_RE.test(value)) {
      alias.setError('3–24 characters: letters, digits or _.');
      firstBad ??= { focus: () => aliasInput.focus() };
    }
    if (firstBad) {
      firstBad.focus();
      return;
    }
    setBusy(save, true);
    try {
      const body = await api.put('/api/users/profile', {
        alias: value,
        gender: gender.value,
        seeking: seeking.value ?? OTHER[gender.value],
        realName: realNameInput.value.trim(),
        details: detailsInput.value.trim(),
        revealEmail: revealEmailInput.checked,
      });
      if (!alive) return;
      const p = body?.profile ?? {};
      ctx.setMe({ alias: p.alias ?? value, gender: p.gender ?? gender.value, seeking: p.seeking ?? seeking.value });
      announce('Profile saved.');
      // The first-time form is a step, not a place: Back from /app must
      // not open it again.
      ctx.navigate('/app', { replace: firstTime });
    } catch (e) {
      if (!alive) return;
      setBusy(save, false);
      showError(e);
    }
  });

  const FIELD_ALIASES = { real_name: 'realName', reveal_email: 'revealEmail', revealEmail: 'revealEmail' };

  function showError(e) {
    const name = e instanceof ApiError ? (FIELD_ALIASES[e.field] ?? e.field) : null;
    if (name === 'revealEmail') {
      formError.textContent = e.message;
      formError.hidden = false;
      return;
    }
    const target = name ? fields[name] : null;
    if (target) {
      if (name === 'realName' || name === 'details') card.open = true;
      target.setError(e.message);
      if (target.focus) target.focus();
      else target.input.focus();
      return;
    }
    formError.textContent = e instanceof ApiError && e.status ? e.message : 'Could not reach the server. Try again.';
    formError.hidden = false;
  }

  (async () => {
    let profile = null;
    try {
      profile = (await api.get('/api/users/profile'))?.profile ?? null;
    } catch (e) {
      if (!alive) return;
      if (!(e instanceof ApiError) || e.code !== 'NOT_FOUND') {
        formError.textContent = 'Could not load your profile; you can still fill it in.';
        formError.hidden = false;
      }
    }
    if (!alive) return;
    if (profile?.gender) {
      gender.value = profile.gender;
      seekingTouched = true;
    }
    seeking.value = profile?.gender ? profile.seeking : null;
    aliasInput.value = profile?.alias ?? ctx.me?.alias ?? '';
    realNameInput.value = profile?.realName ?? '';
    detailsInput.value = profile?.details ?? '';
    revealEmailInput.checked = Boolean(profile?.revealEmail);
    if (profile?.realName || profile?.details) card.open = true;
    // Sent here to fill in the card (from a reveal prompt): open at it.
    const toCard = location.hash === '#card';
    if (toCard) card.open = true;
    replaceChildren(
      section,
      heading,
      h('p', { class: 'muted' }, firstTime ? 'Pick how strangers see you. You can change it later.' : 'Change how strangers see you.'),
      form,
    );
    if (!alive) return;
    if (toCard) focusEl(realNameInput);
    else if (document.activeElement === heading || document.activeElement === document.body) focusEl(heading);
  })();

  return {
    focus: heading,
    unmount() {
      alive = false;
    },
  };
}
