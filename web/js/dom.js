// Small DOM helpers. The one rule they exist for: text from users or the
// server is only ever placed with text nodes, never parsed as HTML, so a
// message like `<img src=x onerror=alert(1)>` shows up as literal text.

/**
 * Build an element. `attrs` keys: `class`, `text` (textContent), `on<Event>`
 * (listener), `data-*`/`aria-*` and anything else via setAttribute, or a
 * boolean for boolean attributes. Children are nodes or strings (as text).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'value' && 'value' in el) el.value = value;
    else if (key === 'checked' && 'checked' in el) el.checked = Boolean(value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace every child of `el` (text stays text). */
export function replaceChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** Show/hide without layout tricks; `hidden` also hides from screen readers. */
export function show(el, visible) {
  el.hidden = !visible;
}

/**
 * Move focus to `el` for keyboard and screen reader users after a screen
 * change; headings get tabindex=-1 so they can take focus without joining
 * the tab order.
 */
export function focusEl(el) {
  if (!el) return;
  if (!el.hasAttribute('tabindex') && !isFocusable(el)) el.setAttribute('tabindex', '-1');
  el.focus({ preventScroll: false });
}

function isFocusable(el) {
  return ['INPUT', 'TEXTAREA', 'BUTTON', 'SELECT', 'A'].includes(el.tagName);
}

let announceTimer = 0;

/**
 * Mark a button busy while its request runs, or not. Unlike `disabled`, a
 * busy button keeps the keyboard focus (a disabled one drops it to <body>,
 * and a screen reader user loses their place); handlers ignore presses
 * while `isBusy`.
 */
export function setBusy(button, busy) {
  if (busy) button.setAttribute('aria-disabled', 'true');
  else button.removeAttribute('aria-disabled');
}

export function isBusy(button) {
  return button.getAttribute('aria-disabled') === 'true';
}

/** Sentences one announcement reads at most; older ones are counted. */
const ANNOUNCE_AT_ONCE = 5;
let announcePending = [];

/**
 * Say something through the polite live region. The text is cleared first
 * and set a moment later so repeating the same sentence is read again;
 * sentences that come within that moment (a burst of messages, a message
 * and a notice) are read together: the last five, the ones before counted.
 */
export function announce(message) {
  const region = document.getElementById('announcer');
  if (!region) return;
  announcePending.push(message);
  region.textContent = '';
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => {
    const said = announcePending;
    announcePending = [];
    const read = said.slice(-ANNOUNCE_AT_ONCE);
    const skipped = said.length - read.length;
    // One block per sentence, each ending in a stop, so that read as one
    // text (the region is atomic) they do not run together.
    const lines = skipped ? [`${skipped} more before these.`, ...read] : read;
    const stopped = (line) => (/[.!?…:]\s*$/u.test(line) ? line : `${line}.`);
    region.replaceChildren(...lines.map((line) => h('div', {}, stopped(line))));
  }, 50);
}

/** A labelled form field with an error slot wired through aria-describedby. */
export function field({ id, label, input, hint, testid }) {
  const errorId = `${id}-error`;
  const hintId = hint ? `${id}-hint` : null;
  input.id = id;
  if (testid) input.setAttribute('data-testid', testid);
  input.setAttribute('aria-describedby', [hintId, errorId].filter(Boolean).join(' '));
  const error = h('p', {
    id: errorId,
    class: 'field-error',
    'data-testid': testid ? `${testid}-error` : null,
    hidden: true,
  });
  const wrapper = h(
    'div',
    { class: 'field' },
    h('label', { for: id }, label),
    input,
    hint ? h('p', { id: hintId, class: 'hint' }, hint) : null,
    error,
  );
  return {
    wrapper,
    input,
    setError(message) {
      error.textContent = message || '';
      error.hidden = !message;
      if (message) input.setAttribute('aria-invalid', 'true');
      else input.removeAttribute('aria-invalid');
    },
  };
}

/** A short relative clock label such as "14:05". */
export function clock(iso) {
  const d = iso ? new Date(iso) : new Date();
  if (Number.isNaN(d.getTime())) return '';
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}
