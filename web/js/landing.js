// The front door: what IO is, and the way in.

import { h } from './dom.js';

export function mount(root) {
  const enter = h('a', { class: 'btn primary big', href: '/signin', 'data-link': true, 'data-testid': 'enter' }, 'Enter');
  root.append(
    h(
      'section',
      { class: 'landing' },
      h('h1', { class: 'title hero' }, h('span', { class: 'logo' }, 'IO'), h('span', { class: 'tagline' }, 'talk to someone random')),
      h(
        'p',
        { class: 'lede' },
        'An anonymous one-to-one chat for your community. No profiles to scroll, no history to keep up with: press a button, meet a stranger, see where it goes.',
      ),
      h(
        'ol',
        { class: 'steps' },
        h('li', {}, h('strong', {}, 'Sign in with your email. '), 'We send you a magic link, no password.'),
        h('li', {}, h('strong', {}, 'Pick an alias. '), 'Nobody sees your name unless you want them to.'),
        h('li', {}, h('strong', {}, 'Find someone random. '), 'Chat, and if you both say yes, reveal who you are.'),
        h('li', {}, h('strong', {}, 'Rate the vibe. '), 'Boring, okay, fire or legendary. You never meet the same person twice.'),
      ),
      enter,
    ),
  );
  return { focus: root.querySelector('h1') };
}
