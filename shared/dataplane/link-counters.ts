/**
 * Per-link frame counts: the raw material of the loss books
 * (traffic/loss-books.ts, docs/loss-accounting.md).
 *
 * A link is one sender node (by the sender id in Baton's option) and one
 * receiving socket (by its address). The sender counts the frames the kernel
 * accepted for each destination address (`LinkTx`, on the send callback's
 * success); the receiver counts the frames it decoded from each sender id
 * (`LinkRx`). Once traffic has stopped, `sent − received` on a link is the
 * number of frames lost between the two user spaces — in the receiver's
 * kernel buffer (full), after the receiver closed its socket, or to an
 * address nobody listens on — counted in frames, not datagrams, whatever
 * the batching.
 *
 * Hot path: `LinkRx.add` and `LinkTx.add` are one indexed add each on a
 * preallocated Float64Array; slots are assigned off the hot path.
 */
import { formatAddress, type Address } from '../io/address.js';

export class LinkRx {
  /** Frames decoded, by sender node id (uint16). */
  readonly frames = new Float64Array(65536);
  add(senderId: number, n = 1): void {
    this.frames[senderId & 0xffff]! += n; // a uint16 id into 65,536 slots: in range
  }
  /** Non-zero entries as [sender id, frames]. Off the hot path (scrape time). */
  entries(): [number, number][] {
    const out: [number, number][] = [];
    const f = this.frames;
    for (let i = 0; i < f.length; i++) if (f[i] !== 0) out.push([i, f[i]!]);
    return out;
  }
}

export class LinkTx {
  private readonly keys: string[] = [];
  private readonly slotOf = new Map<string, number>();
  private counts = new Float64Array(16);
  /** The slot for destination `to`, created on first use. Off the hot path. */
  slot(to: Address): number {
    const key = formatAddress(to);
    let s = this.slotOf.get(key);
    if (s === undefined) {
      s = this.keys.length;
      this.keys.push(key);
      this.slotOf.set(key, s);
      if (s >= this.counts.length) {
        const grown = new Float64Array(this.counts.length * 2);
        grown.set(this.counts);
        this.counts = grown;
      }
    }
    return s;
  }
  /** `n` frames the kernel accepted for the slot's destination. */
  add(slot: number, n: number): void {
    this.counts[slot]! += n; // a slot slot() returned: counts grows with the slots
  }
  /** Every destination as [address "host:port", frames]. Off the hot path. */
  entries(): [string, number][] {
    return this.keys.map((k, i) => [k, this.counts[i]!] as [string, number]);
  }
}
