import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  OWNERSHIP_RECORD_SIZE,
  OWNERSHIP_RECORD_VERSION,
  OwnershipBuffer,
  OwnershipCheck,
  OwnershipFlag,
  forEachOwnership,
  forEachOwnershipBatch,
  packOwnership,
} from '../shared/control/ownership.js';
import { decodeEnvelope, encodeEnvelope } from '../shared/control/codec.js';
import { PROTOCOL_VERSION } from '../shared/control/messages.js';
import { IPPROTO_TCP, IPPROTO_UDP, ipv4ToInt } from '../shared/packet/meta.js';
import { ErrorCode, isBatonError } from '../shared/errors.js';

const SEED = 0x0e4e5;

type Rec = [srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number, flags: number, owner: number];

function collect(records: Uint8Array, count: number): { code: number; recs: Rec[] } {
  const recs: Rec[] = [];
  const code = forEachOwnership(records, count, (...r) => recs.push(r));
  return { code, recs };
}

const arbRec: fc.Arbitrary<Rec> = fc.tuple(
  fc.integer({ min: 0, max: 0xffffffff }),
  fc.integer({ min: 0, max: 0xffffffff }),
  fc.integer({ min: 0, max: 0xffff }),
  fc.integer({ min: 0, max: 0xffff }),
  fc.integer({ min: 0, max: 0xff }),
  fc.integer({ min: 0, max: 0xff }),
  fc.integer({ min: 0, max: 0xffff }),
);

describe('ownership record layout', () => {
  it('constants', () => {
    expect(OWNERSHIP_RECORD_SIZE).toBe(16);
    expect(OWNERSHIP_RECORD_VERSION).toBe(1);
    expect(OwnershipFlag).toEqual({ REMOVED: 1, MIGRATED: 2 });
  });

  it('known answer: byte by byte, big-endian', () => {
    const out = new Uint8Array(20).fill(0xee);
    packOwnership(out, 2, ipv4ToInt('192.0.2.10'), ipv4ToInt('198.51.100.1'), 40000, 443, IPPROTO_TCP, OwnershipFlag.MIGRATED, 0x0102);
    expect(Buffer.from(out).toString('hex')).toBe(
      'eeee' + // untouched before off
        'c000020a' + // srcIp 192.0.2.10
        'c6336401' + // dstIp 198.51.100.1
        '9c40' + // srcPort 40000
        '01bb' + // dstPort 443
        '06' + // proto TCP
        '02' + // flags MIGRATED
        '0102' + // owner 258
        'eeee', // untouched after
    );
  });

  it('property: pack then forEach gives the same records in order', () => {
    fc.assert(
      fc.property(fc.array(arbRec, { maxLength: 50 }), (recs) => {
        const buf = new Uint8Array(recs.length * OWNERSHIP_RECORD_SIZE);
        recs.forEach((r, i) => packOwnership(buf, i * OWNERSHIP_RECORD_SIZE, ...r));
        expect(collect(buf, recs.length)).toEqual({ code: OwnershipCheck.OK, recs });
      }),
      { seed: SEED, numRuns: 300 },
    );
  });

  it('truncates values to their field widths (no exceptions on the data path)', () => {
    const buf = new Uint8Array(16);
    packOwnership(buf, 0, 0x1_0000_0001, -1, 0x1_0005, 0x2_0006, 0x106, 0x1ff, 0x1_0007);
    expect(collect(buf, 1).recs).toEqual([[1, 0xffffffff, 5, 6, 6, 0xff, 7]]);
  });

  // [count, byteLength]
  const MISMATCH: [number, number][] = [
    [1, 15],
    [1, 17],
    [2, 16],
    [0, 16],
    [3, 0],
    [-1, 0],
    [0.5, 8],
    [Number.NaN, 0],
  ];
  it.each(MISMATCH)('count %d with %d bytes: BAD_LENGTH and nothing applied', (count, len) => {
    const buf = new Uint8Array(len);
    expect(collect(buf, count)).toEqual({ code: OwnershipCheck.BAD_LENGTH, recs: [] });
  });

  it('zero records is OK and calls nothing', () => {
    expect(collect(new Uint8Array(0), 0)).toEqual({ code: OwnershipCheck.OK, recs: [] });
  });

  it('forEachOwnershipBatch checks record_version, then length', () => {
    const records = new Uint8Array(32);
    packOwnership(records, 0, 1, 2, 3, 4, IPPROTO_UDP, 0, 9);
    packOwnership(records, 16, 5, 6, 7, 8, IPPROTO_TCP, OwnershipFlag.REMOVED, 9);
    const seen: number[] = [];
    const fn = (s: number) => void seen.push(s);
    expect(forEachOwnershipBatch({ owner: 9, recordVersion: 2, count: 2, records, remapFrom: 0, remapTo: 0 }, fn)).toBe(OwnershipCheck.BAD_RECORD_VERSION);
    expect(forEachOwnershipBatch({ owner: 9, recordVersion: 1, count: 3, records, remapFrom: 0, remapTo: 0 }, fn)).toBe(OwnershipCheck.BAD_LENGTH);
    expect(seen).toEqual([]);
    expect(forEachOwnershipBatch({ owner: 9, recordVersion: 1, count: 2, records, remapFrom: 0, remapTo: 0 }, fn)).toBe(OwnershipCheck.OK);
    expect(seen).toEqual([1, 5]);
  });

  it('survives an OwnershipBatch envelope round trip', () => {
    const records = new Uint8Array(3 * 16);
    for (let i = 0; i < 3; i++) packOwnership(records, i * 16, 0xc0000200 + i, 0xc6336401, 1000 + i, 80, IPPROTO_TCP, i, 4);
    const bytes = encodeEnvelope({
      protocolVersion: PROTOCOL_VERSION,
      seq: 1,
      replyTo: 0,
      wantsReply: false,
      body: { case: 'ownershipBatch', value: { owner: 4, recordVersion: OWNERSHIP_RECORD_VERSION, count: 3, records, remapFrom: 0, remapTo: 0 } },
    });
    const r = decodeEnvelope(bytes);
    if (!r.ok || r.env.body.case !== 'ownershipBatch') throw new Error('decode failed');
    const got: Rec[] = [];
    expect(forEachOwnershipBatch(r.env.body.value, (...x) => got.push(x))).toBe(OwnershipCheck.OK);
    expect(got).toEqual([0, 1, 2].map((i) => [0xc0000200 + i, 0xc6336401, 1000 + i, 80, IPPROTO_TCP, i, 4]));
  });
});

describe('OwnershipBuffer', () => {
  function harness(capacity: number) {
    const batches: { count: number; recs: Rec[] }[] = [];
    const buf = new OwnershipBuffer(capacity, (records, count) => {
      expect(records.length).toBe(count * OWNERSHIP_RECORD_SIZE);
      batches.push({ count, recs: collect(records, count).recs }); // decode now: the view is reused after return
    });
    return { buf, batches };
  }
  const rec = (i: number): Rec => [i, i + 1, i & 0xffff, 80, IPPROTO_TCP, 0, 3];

  it('flushes exactly when full, then keeps accumulating', () => {
    const { buf, batches } = harness(4);
    for (let i = 0; i < 3; i++) buf.add(...rec(i));
    expect(batches).toEqual([]);
    expect(buf.pending).toBe(3);
    buf.add(...rec(3));
    expect(batches).toEqual([{ count: 4, recs: [0, 1, 2, 3].map(rec) }]);
    expect(buf.pending).toBe(0);
    for (let i = 4; i < 10; i++) buf.add(...rec(i));
    expect(batches.map((b) => b.count)).toEqual([4, 4]);
    expect(batches[1]!.recs).toEqual([4, 5, 6, 7].map(rec)); // the reused storage was overwritten only after the sink returned
    expect(buf.pending).toBe(2);
    expect({ flushes: buf.flushes, fullFlushes: buf.fullFlushes, records: buf.records }).toEqual({ flushes: 2, fullFlushes: 2, records: 8 });
  });

  it('manual flush hands over what is pending; an empty flush is a no-op', () => {
    const { buf, batches } = harness(8);
    expect(buf.flush()).toBe(0);
    expect(batches).toEqual([]);
    buf.add(...rec(1));
    buf.add(...rec(2));
    expect(buf.flush()).toBe(2);
    expect(buf.flush()).toBe(0);
    expect(batches).toEqual([{ count: 2, recs: [rec(1), rec(2)] }]);
    expect({ flushes: buf.flushes, fullFlushes: buf.fullFlushes, records: buf.records }).toEqual({ flushes: 1, fullFlushes: 0, records: 2 });
  });

  it('capacity 1 flushes every record', () => {
    const { buf, batches } = harness(1);
    buf.add(...rec(5));
    buf.add(...rec(6));
    expect(batches).toEqual([
      { count: 1, recs: [rec(5)] },
      { count: 1, recs: [rec(6)] },
    ]);
  });

  it('property: any interleaving of adds and flushes delivers every record once, in order', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 7 }), fc.array(fc.oneof(arbRec, fc.constant('flush' as const)), { maxLength: 60 }), (cap, ops) => {
        const { buf, batches } = harness(cap);
        const want: Rec[] = [];
        for (const op of ops) {
          if (op === 'flush') buf.flush();
          else {
            buf.add(...op);
            want.push(op);
          }
        }
        buf.flush();
        expect(batches.flatMap((b) => b.recs)).toEqual(want);
        for (const b of batches) expect(b.count).toBeLessThanOrEqual(cap);
      }),
      { seed: SEED + 1, numRuns: 300 },
    );
  });

  it.each([0, -1, 1.5, Number.NaN, 2_000_000])('rejects capacity %d with BAD_ARGUMENT', (cap) => {
    let err: unknown;
    try {
      new OwnershipBuffer(cap, () => {});
    } catch (e) {
      err = e;
    }
    expect(isBatonError(err, ErrorCode.BAD_ARGUMENT)).toBe(true);
    expect((err as Error).message).toContain('capacityRecords');
  });
});
