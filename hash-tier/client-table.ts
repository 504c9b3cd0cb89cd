/**
 * A fixed-size table with counted eviction, for the hash tier's per-client
 * state: the client underlay addresses it delivers to (locator → TX lane)
 * and the client virtual IPs it learned from their traffic (the fallback for
 * frames that carry no locator).
 *
 * Keys are (a: int32, b: 1..65535); b = 0 marks an empty slot. Callers
 * pass a 32-bit key as int32 (`x | 0`): a uint32 above 2^31 handed to a
 * function V8 does not inline would be boxed, an allocation per call. Open
 * addressing with linear probing over a power-of-two capacity; a key always
 * sits within PROBE_LIMIT slots of its home, so a lookup touches at most
 * PROBE_LIMIT slots. Removal shifts the following entries back (no
 * tombstones). Two ways out:
 *   - idle: `sweep()` examines a budget of slots (round robin, once per
 *     batch) and removes entries not seen for `idleMs`;
 *   - full: an insert whose PROBE_LIMIT window is all taken replaces the
 *     least recently seen entry of that window.
 * Both call `onEvict(valA, valB, idle)`, so the owner can reclaim what the
 * value names (a TX lane) and count the eviction.
 *
 * Hot path: find / insert / touch allocate nothing (typed arrays only).
 */
import { BatonError, ErrorCode } from '../shared/errors.js';

/** Slots probed at most from a key's home slot. */
export const PROBE_LIMIT = 32;

export type EvictHook = (valA: number, valB: number, idle: boolean) => void;

export class ClientTable {
  readonly capacity: number;
  private readonly mask: number;
  private readonly keyA: Int32Array;
  private readonly keyB: Uint16Array;
  /** Values: two int32 per entry (meaning is the owner's). */
  readonly valA: Int32Array;
  readonly valB: Int32Array;
  private readonly seen: Float64Array;
  private count = 0;
  private cursor = 0;

  constructor(
    capacity: number,
    private readonly onEvict: EvictHook,
  ) {
    if (!Number.isInteger(capacity) || capacity < PROBE_LIMIT || capacity > 1 << 24 || (capacity & (capacity - 1)) !== 0) {
      throw new BatonError(ErrorCode.BAD_ARGUMENT, `client table capacity must be a power of two in ${PROBE_LIMIT}..${1 << 24}, got ${capacity}`);
    }
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.keyA = new Int32Array(capacity);
    this.keyB = new Uint16Array(capacity);
    this.valA = new Int32Array(capacity);
    this.valB = new Int32Array(capacity);
    this.seen = new Float64Array(capacity);
  }

  get size(): number {
    return this.count;
  }

  private home(a: number, b: number): number {
    let h = Math.imul(a ^ Math.imul(b, 0x9e3779b1), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    return h & this.mask;
  }

  /** The slot of (a, b), or -1. */
  find(a: number, b: number): number {
    const kA = this.keyA;
    const kB = this.keyB;
    const m = this.mask;
    let i = this.home(a, b);
    for (let n = 0; n < PROBE_LIMIT; n++) {
      const kb = kB[i]!;
      if (kb === 0) return -1;
      if (kb === b && kA[i] === a) return i;
      i = (i + 1) & m;
    }
    return -1;
  }

  /** Marks the entry at `slot` as seen at `now`. */
  touch(slot: number, now: number): void {
    this.seen[slot] = now;
  }

  /**
   * Adds (a, b) (the caller checked it is absent) seen at `now`; returns its
   * slot, whose values the caller sets. When the probe window is full, the
   * window's least recently seen entry is evicted (onEvict(..., false)) and
   * its slot reused.
   */
  insert(a: number, b: number, now: number): number {
    const kB = this.keyB;
    const seen = this.seen;
    const m = this.mask;
    let i = this.home(a, b);
    let victim = -1;
    for (let n = 0; n < PROBE_LIMIT; n++) {
      if (kB[i] === 0) {
        this.count++;
        return this.place(i, a, b, now);
      }
      if (victim < 0 || seen[i]! < seen[victim]!) victim = i;
      i = (i + 1) & m;
    }
    this.onEvict(this.valA[victim]!, this.valB[victim]!, false);
    return this.place(victim, a, b, now);
  }

  private place(i: number, a: number, b: number, now: number): number {
    this.keyA[i] = a;
    this.keyB[i] = b;
    this.valA[i] = 0;
    this.valB[i] = 0;
    this.seen[i] = now;
    return i;
  }

  /**
   * Examines up to `budget` slots from where the last sweep stopped and
   * evicts (onEvict(..., true)) entries last seen before `now - idleMs`.
   * Returns how many it evicted.
   */
  sweep(now: number, idleMs: number, budget: number): number {
    if (this.count === 0) return 0;
    const kB = this.keyB;
    const seen = this.seen;
    const m = this.mask;
    const cutoff = now - idleMs;
    let evicted = 0;
    let i = this.cursor;
    for (let n = 0; n < budget; n++) {
      if (kB[i] !== 0 && seen[i]! < cutoff) {
        this.onEvict(this.valA[i]!, this.valB[i]!, true);
        this.removeAt(i);
        evicted++;
        // removeAt may have shifted a later entry into slot i: look at it again (within the budget).
        continue;
      }
      i = (i + 1) & m;
    }
    this.cursor = i;
    return evicted;
  }

  /** Removes the entry at `slot`, shifting the entries after it back toward their home. */
  removeAt(slot: number): void {
    const kA = this.keyA;
    const kB = this.keyB;
    const m = this.mask;
    let hole = slot;
    let j = slot;
    for (;;) {
      j = (j + 1) & m;
      if (kB[j] === 0 || j === slot) break; // (j === slot: every slot was taken and all were looked at)
      const h = this.home(kA[j]!, kB[j]!);
      // The entry at j may move into the hole unless its home lies cyclically in (hole, j].
      const stays = hole <= j ? h > hole && h <= j : h > hole || h <= j;
      if (stays) continue;
      kA[hole] = kA[j]!;
      kB[hole] = kB[j]!;
      this.valA[hole] = this.valA[j]!;
      this.valB[hole] = this.valB[j]!;
      this.seen[hole] = this.seen[j]!;
      hole = j;
    }
    kB[hole] = 0;
    kA[hole] = 0;
    this.count--;
  }

  /** Every entry as [a, b, valA, valB] (off the hot path: tests, status). */
  entries(): [number, number, number, number][] {
    const out: [number, number, number, number][] = [];
    for (let i = 0; i < this.capacity; i++) if (this.keyB[i] !== 0) out.push([this.keyA[i]!, this.keyB[i]!, this.valA[i]!, this.valB[i]!]);
    return out;
  }
}
