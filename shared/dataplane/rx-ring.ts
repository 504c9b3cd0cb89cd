/**
 * Bounded receive ring of datagrams (references, no copies). A datagram that
 * arrives when the ring is full is dropped and counted; the depth is
 * observable (the disengage waits for it to reach zero).
 */
import type { Counters } from '../counters.js';
import type { Address } from '../io/address.js';
import { BatonError, ErrorCode } from '../errors.js';

export interface RingCounterIds {
  enqueued: number;
  dequeued: number;
  dropped_full: number;
}

export class RxRing {
  private readonly slots: (Uint8Array | null)[];
  private readonly froms: (Address | null)[];
  /** Sender of the datagram returned by the last shift(). */
  lastFrom: Address | null = null;
  private head = 0;
  private count = 0;
  constructor(
    readonly capacity: number,
    private readonly counters: Counters,
    private readonly ids: RingCounterIds,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new BatonError(ErrorCode.BAD_ARGUMENT, `RxRing capacity must be a positive integer, got ${capacity}`);
    this.slots = new Array<Uint8Array | null>(capacity).fill(null);
    this.froms = new Array<Address | null>(capacity).fill(null);
  }
  get depth(): number {
    return this.count;
  }
  push(d: Uint8Array, from: Address | null = null): boolean {
    if (this.count === this.capacity) {
      this.counters.inc(this.ids.dropped_full);
      return false;
    }
    let i = this.head + this.count;
    if (i >= this.capacity) i -= this.capacity;
    this.slots[i] = d;
    this.froms[i] = from;
    this.count++;
    this.counters.inc(this.ids.enqueued);
    return true;
  }
  shift(): Uint8Array | null {
    if (this.count === 0) return null;
    const d = this.slots[this.head]!;
    this.slots[this.head] = null;
    this.lastFrom = this.froms[this.head]!;
    this.froms[this.head] = null;
    this.head = this.head + 1 === this.capacity ? 0 : this.head + 1;
    this.count--;
    this.counters.inc(this.ids.dequeued);
    return d;
  }
}
