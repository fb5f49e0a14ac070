// The message list of one chat session as a pure data structure, kept apart
// from the DOM and the socket so its guarantees can be tested on their own:
//
// - a committed message appears once, however often it arrives (live event,
//   reconnect snapshot, gap fill, another tab): deduplicated by `id`;
// - the sender's optimistic copy is replaced by the committed message with
//   the same `clientMsgId`, never shown next to it;
// - committed messages are ordered by `seq`, and `contiguousSeq()` says up
//   to where the list has no holes, which is the `after=` of the next gap
//   fill. Pending (unacknowledged) messages come last, in the order typed.

export class Timeline {
  constructor() {
    /** Committed messages by id. */
    this.byId = new Map();
    /** Committed messages by seq, to find holes. */
    this.bySeq = new Map();
    /** Own messages not yet acknowledged, by clientMsgId, in the order sent. */
    this.pending = new Map();
    /** clientMsgIds of own committed messages, so a late resend is ignored. */
    this.committedClientIds = new Set();
    /** Seqs at or below this are older history that was never loaded. */
    this.floor = null;
    /** Highest seq known. */
    this.maxSeq = 0;
    /** Cached answer of contiguousSeq(); only grows until the floor moves. */
    this.contiguous = null;
  }

  /** A fresh session: everything from seq 1 on belongs to the list. */
  startFromBeginning() {
    if (this.floor === null || this.floor > 0) this.setFloor(0);
  }

  setFloor(seq) {
    this.floor = seq;
    this.contiguous = null;
  }

  /**
   * Add committed messages (any order, duplicates allowed). Returns the
   * messages that were new and the clientMsgIds of own pending messages
   * they acknowledged.
   */
  merge(messages) {
    const added = [];
    const acked = [];
    const list = (messages ?? []).filter(isMessage);
    if (list.length && this.floor === null) {
      this.setFloor(Math.min(...list.map((m) => m.seq)) - 1);
    }
    for (const m of list) {
      if (this.byId.has(m.id) || this.bySeq.has(m.seq)) {
        this.ackIfPending(m, acked);
        continue;
      }
      this.byId.set(m.id, m);
      this.bySeq.set(m.seq, m);
      if (m.seq > this.maxSeq) this.maxSeq = m.seq;
      if (this.floor !== null && m.seq <= this.floor) this.setFloor(m.seq - 1);
      this.ackIfPending(m, acked);
      added.push(m);
    }
    added.sort((a, b) => a.seq - b.seq);
    return { added, acked };
  }

  ackIfPending(m, acked) {
    if (!m.isMe || !m.clientMsgId) return;
    this.committedClientIds.add(m.clientMsgId);
    if (this.pending.delete(m.clientMsgId)) acked.push(m.clientMsgId);
  }

  /** The highest seq up to which no committed message is missing. */
  contiguousSeq() {
    if (this.floor === null) return 0;
    let s = this.contiguous ?? this.floor;
    while (this.bySeq.has(s + 1)) s += 1;
    this.contiguous = s;
    return s;
  }

  /** True when a later message arrived before an earlier one. */
  hasGap() {
    return this.maxSeq > this.contiguousSeq();
  }

  /** Show an own message before the server has it. Returns false if known. */
  addPending(clientMsgId, content, createdAt = new Date().toISOString()) {
    if (this.pending.has(clientMsgId) || this.committedClientIds.has(clientMsgId)) return false;
    this.pending.set(clientMsgId, { clientMsgId, content, createdAt, status: 'pending', error: null });
    return true;
  }

  markFailed(clientMsgId, error) {
    const p = this.pending.get(clientMsgId);
    if (p) Object.assign(p, { status: 'failed', error });
    return Boolean(p);
  }

  markPending(clientMsgId) {
    const p = this.pending.get(clientMsgId);
    if (p) Object.assign(p, { status: 'pending', error: null });
    return Boolean(p);
  }

  discard(clientMsgId) {
    return this.pending.delete(clientMsgId);
  }

  /** Own messages still waiting for their ack (not the failed ones). */
  unacked() {
    return [...this.pending.values()].filter((p) => p.status === 'pending');
  }

  /** Committed messages by seq, then pending ones in the order typed. */
  items() {
    const committed = [...this.byId.values()].sort((a, b) => a.seq - b.seq);
    const pending = [...this.pending.values()].map((p) => ({
      id: null,
      seq: null,
      content: p.content,
      createdAt: p.createdAt,
      clientMsgId: p.clientMsgId,
      isMe: true,
      status: p.status,
      error: p.error,
    }));
    return [...committed.map((m) => ({ ...m, status: 'sent', error: null })), ...pending];
  }

  /** The pending list, for keeping unsent messages across a reload. */
  pendingSnapshot() {
    return [...this.pending.values()].map(({ clientMsgId, content, createdAt, status }) => ({
      clientMsgId,
      content,
      createdAt,
      status,
    }));
  }

  restorePending(list) {
    for (const p of list ?? []) {
      if (!p || typeof p.clientMsgId !== 'string' || typeof p.content !== 'string') continue;
      if (this.addPending(p.clientMsgId, p.content, p.createdAt) && p.status === 'failed') {
        this.markFailed(p.clientMsgId, 'not sent');
      }
    }
  }
}

function isMessage(m) {
  return m && typeof m.id === 'string' && Number.isInteger(m.seq) && m.seq > 0;
}

/**
 * Delay before reconnect attempt `attempt` (0-based): "full jitter", a
 * uniform pick in [0, min(cap, base·2^attempt)], so a node's thousands of
 * clients do not all come back in the same instant.
 */
export function backoffDelay(attempt, { base = 500, cap = 10_000, random = Math.random } = {}) {
  const ceiling = Math.min(cap, base * 2 ** Math.max(0, attempt));
  return Math.floor(random() * ceiling);
}
