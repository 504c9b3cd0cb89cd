/**
 * TxLanes: the end-of-batch flush walks only the lanes that queued a frame
 * (the dirty stack), every queued frame leaves exactly once to the address
 * its lane had when the frame was queued, a lane pointed elsewhere sends
 * what it holds first, and closing counts what was left.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { TxLanes } from '../shared/dataplane/tx-lanes.js';
import { DP, newDataplaneCounters } from '../shared/dataplane/counters.js';
import type { DatagramSocket } from '../shared/io/datagram.js';
import { formatAddress, type Address } from '../shared/io/address.js';
import { measureAllocation } from './helpers/alloc.js';

/** Records every datagram sent; reports sends done when `complete()` is called (as a socket does after the batch). */
class RecordingSocket implements DatagramSocket {
  readonly address: Address = { host: '127.0.0.1', port: 6000 };
  readonly sent: { to: string; bytes: Uint8Array }[] = [];
  private pending: ((err: Error | null) => void)[] = [];
  record = true;
  send(d: Uint8Array, to: Address, onSent?: (err: Error | null) => void): void {
    if (this.record) this.sent.push({ to: formatAddress(to), bytes: d.slice() });
    if (onSent) this.pending.push(onSent);
  }
  complete(): void {
    const p = this.pending;
    this.pending = [];
    for (const f of p) f(null);
  }
  onMessage(): void {}
  sendQueueBytes(): number {
    return 0;
  }
  sendQueueCount(): number {
    return 0;
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

const addr = (i: number): Address => ({ host: '10.0.0.1', port: 1000 + i });

/** Queues one frame of `len` bytes in `lane`, its bytes all `tag`. */
function put(tx: TxLanes, lane: number, len: number, tag: number): boolean {
  const b = tx.reserve(lane, len);
  if (b === null) return false;
  b.fill(tag, tx.writeOffset, tx.writeOffset + len);
  return true;
}

describe('TxLanes', () => {
  it('flushAll sends the lanes used since the last flush, and only those', () => {
    const s = new RecordingSocket();
    const c = newDataplaneCounters();
    const tx = new TxLanes(s, c, DP, { maxDatagramBytes: 1024, poolBuffers: 16 });
    for (let i = 0; i < 10_000; i++) tx.addLane(addr(i));
    put(tx, 7, 100, 1);
    put(tx, 9_999, 50, 2);
    put(tx, 7, 100, 3);
    put(tx, 42, 10, 4);
    expect(tx.dirtyLanes).toBe(3);
    tx.flushAll();
    expect(tx.dirtyLanes).toBe(0);
    expect(s.sent.map((x) => [x.to, x.bytes.length])).toEqual([
      [formatAddress(addr(7)), 200],
      [formatAddress(addr(9_999)), 50],
      [formatAddress(addr(42)), 10],
    ]);
    expect([c.get(DP.tx_frames), c.get(DP.tx_datagrams), c.get(DP.tx_bytes)]).toEqual([4, 3, 260]);
    tx.flushAll(); // nothing queued: nothing sent
    expect(s.sent).toHaveLength(3);
    s.complete();
    expect(tx.freeBuffers).toBe(16);
    expect(tx.depth).toBe(0);
  });

  it('a lane that filled mid-batch sends its first datagram then, the rest at flushAll; no empty datagram', () => {
    const s = new RecordingSocket();
    const tx = new TxLanes(s, newDataplaneCounters(), DP, { maxDatagramBytes: 256, poolBuffers: 8 });
    const a = tx.addLane(addr(0));
    const b = tx.addLane(addr(1));
    put(tx, a, 200, 1);
    put(tx, a, 200, 2); // does not fit: the first datagram leaves now
    expect(s.sent.map((x) => x.bytes.length)).toEqual([200]);
    put(tx, b, 200, 3);
    put(tx, b, 200, 4); // b filled too; b is not used again in this batch
    tx.flushAll();
    expect(s.sent.map((x) => [x.to, x.bytes.length, x.bytes[0]])).toEqual([
      [formatAddress(addr(0)), 200, 1],
      [formatAddress(addr(1)), 200, 3],
      [formatAddress(addr(0)), 200, 2],
      [formatAddress(addr(1)), 200, 4],
    ]);
  });

  it('setLaneAddress sends what the lane holds to its old address first', () => {
    const s = new RecordingSocket();
    const tx = new TxLanes(s, newDataplaneCounters(), DP, { maxDatagramBytes: 1024, poolBuffers: 4 });
    const l = tx.addLane(addr(0));
    put(tx, l, 100, 1);
    tx.setLaneAddress(l, addr(1));
    put(tx, l, 100, 2);
    tx.flushAll();
    expect(s.sent.map((x) => [x.to, x.bytes[0]])).toEqual([
      [formatAddress(addr(0)), 1],
      [formatAddress(addr(1)), 2],
    ]);
    expect(tx.laneAddress(l)).toEqual(addr(1));
  });

  it('discardQueued counts the frames left in lanes (drop_at_close) and returns their buffers', () => {
    const s = new RecordingSocket();
    const c = newDataplaneCounters();
    const tx = new TxLanes(s, c, DP, { maxDatagramBytes: 1024, poolBuffers: 4 });
    for (let i = 0; i < 100; i++) tx.addLane(addr(i));
    put(tx, 3, 10, 1);
    put(tx, 3, 10, 1);
    put(tx, 50, 10, 1);
    expect(tx.discardQueued()).toBe(3);
    expect(c.get(DP.drop_at_close)).toBe(3);
    expect([tx.freeBuffers, tx.depth, tx.dirtyLanes]).toEqual([4, 0, 0]);
    tx.flushAll();
    expect(s.sent).toHaveLength(0);
  });

  it('one batch reaches at most poolBuffers lanes; past that, frames are tx_dropped_full', () => {
    const s = new RecordingSocket();
    const c = newDataplaneCounters();
    const tx = new TxLanes(s, c, DP, { maxDatagramBytes: 1024, poolBuffers: 8 });
    for (let i = 0; i < 20; i++) tx.addLane(addr(i));
    let ok = 0;
    for (let i = 0; i < 20; i++) if (put(tx, i, 10, 1)) ok++;
    expect([ok, c.get(DP.tx_dropped_full)]).toEqual([8, 12]);
    tx.flushAll();
    expect(s.sent).toHaveLength(8);
    s.complete();
    expect(tx.freeBuffers).toBe(8);
  });

  it('every frame leaves once, to the address its lane had when it was queued (property, against a model)', () => {
    const op = fc.oneof(
      fc.record({ k: fc.constant('put' as const), lane: fc.nat(15), len: fc.integer({ min: 1, max: 300 }) }),
      fc.record({ k: fc.constant('flush' as const) }),
      fc.record({ k: fc.constant('complete' as const) }),
      fc.record({ k: fc.constant('move' as const), lane: fc.nat(15) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const s = new RecordingSocket();
        const c = newDataplaneCounters();
        const tx = new TxLanes(s, c, DP, { maxDatagramBytes: 512, poolBuffers: 6 });
        const where: number[] = [];
        for (let i = 0; i < 16; i++) {
          tx.addLane(addr(i));
          where.push(i);
        }
        // Model: frames queued (tag -> address index), in order.
        const expected = new Map<string, number[]>(); // address -> frame tags in send order
        let tag = 0;
        let moves = 0;
        for (const o of ops) {
          if (o.k === 'put') {
            tag = (tag % 250) + 1;
            if (put(tx, o.lane, o.len, tag)) {
              const key = formatAddress(addr(where[o.lane]!));
              expected.set(key, [...(expected.get(key) ?? []), tag, o.len]);
            }
          } else if (o.k === 'flush') tx.flushAll();
          else if (o.k === 'complete') s.complete();
          else {
            // A fresh address per move: each address is one lane's, so its frames keep their queue order.
            const to = 100 + moves++;
            tx.setLaneAddress(o.lane, addr(to));
            where[o.lane] = to;
          }
          expect(tx.dirtyLanes).toBeLessThanOrEqual(16);
        }
        tx.flushAll();
        s.complete();
        // Read back each destination's frames from its datagrams: runs of one tag.
        const got = new Map<string, number[]>();
        for (const d of s.sent) {
          expect(d.bytes.length).toBeGreaterThan(0);
          expect(d.bytes.length).toBeLessThanOrEqual(512);
          const list = got.get(d.to) ?? [];
          let i = 0;
          while (i < d.bytes.length) {
            let j = i;
            while (j < d.bytes.length && d.bytes[j] === d.bytes[i]) j++;
            list.push(d.bytes[i]!, j - i);
            i = j;
          }
          got.set(d.to, list);
        }
        // Adjacent frames with the same tag (same lane, same datagram) read back as one run: merge them in the model too.
        const merge = (l: number[]): number[] => {
          const out: number[] = [];
          for (let i = 0; i < l.length; i += 2) {
            if (out.length > 0 && out[out.length - 2] === l[i]) out[out.length - 1]! += l[i + 1]!;
            else out.push(l[i]!, l[i + 1]!);
          }
          return out;
        };
        for (const [k, v] of got) got.set(k, merge(v));
        for (const [k, v] of expected) expected.set(k, merge(v));
        expect(got).toEqual(expected);
        expect(c.get(DP.tx_frames) + c.get(DP.tx_dropped_full)).toBe(ops.filter((o) => o.k === 'put').length);
        expect([tx.freeBuffers, tx.depth, tx.dirtyLanes]).toEqual([6, 0, 0]);
      }),
      { seed: 0x7a1e5, numRuns: 300 },
    );
  });

  it('queueing frames into many lanes and flushing them allocates nothing but the one send view and callback per datagram', () => {
    const s = new RecordingSocket();
    s.record = false;
    const tx = new TxLanes(s, newDataplaneCounters(), DP, { maxDatagramBytes: 65507, poolBuffers: 128 });
    for (let i = 0; i < 4096; i++) tx.addLane(addr(i));
    let k = 0;
    const run = (n: number): number => {
      for (let i = 0; i < n; i++, k++) {
        put(tx, (k * 61) & 63, 64, 1); // 64 of the 4096 lanes in use
        if ((k & 0xffff) === 0) {
          tx.flushAll();
          s.complete();
        }
      }
      return n;
    };
    const { gcs, growth } = measureAllocation(run, 1_000_000, 200_000);
    tx.flushAll();
    s.complete();
    // ~1 M x 64 B / 65507 B ≈ 1,000 full datagrams + 64 per flush x 15 flushes: ~2,000 datagrams, a few hundred bytes
    // of garbage each (the send view, the callback, the recording socket's list). One 16-byte allocation per frame would be 16 MB.
    expect(gcs).toBe(0);
    expect(growth).toBeLessThan(1024 * 1024);
  });
});
