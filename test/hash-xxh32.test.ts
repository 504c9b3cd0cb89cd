import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import xxhash from 'xxhash-wasm';
import {
  FIVE_TUPLE_KEY_LEN,
  hashFiveTuple,
  hashFiveTupleSymmetric,
  writeFiveTupleKey,
  xxh32,
  xxh32Utf8,
} from '../shared/hash/xxh32.js';
import { isBatonError, ErrorCode } from '../shared/errors.js';
import { mulberry32 } from '../shared/random.js';

// xxhash-wasm is the oracle (an independent C implementation compiled to wasm).
let h32Raw: (b: Uint8Array, seed?: number) => number;
beforeAll(async () => {
  ({ h32Raw } = await xxhash());
});

const enc = new TextEncoder();
const bytes = (s: string) => enc.encode(s);
const oracleKey = (s: number, d: number, sp: number, dp: number, p: number, seed: number): number => {
  const k = new Uint8Array(FIVE_TUPLE_KEY_LEN);
  writeFiveTupleKey(k, 0, s, d, sp, dp, p);
  return h32Raw(k, seed);
};

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const port = fc.integer({ min: 0, max: 0xffff });
const proto = fc.integer({ min: 0, max: 0xff });
const seedArb = fc.oneof(u32, fc.constantFrom(0, 1, 0x7fffffff, 0x80000000, 0xffffffff));
const ipArb = fc.oneof(u32, fc.constantFrom(0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 0x0a000001, 0xc0a80001));
const portArb = fc.oneof(port, fc.constantFrom(0, 1, 0xff, 0x100, 0x7fff, 0x8000, 0xffff));

describe('xxh32 (generic byte-wise)', () => {
  // Published XXH32 vectors (seed 0 unless stated), fixed as literals so a
  // broken oracle cannot hide a broken implementation.
  const vectors: Array<[string, number, number]> = [
    ['', 0, 0x02cc5d05],
    ['a', 0, 0x550d7456],
    ['abc', 0, 0x32d153ff],
    ['Nobody inspects the spammish repetition', 0, 0xe2293b2f],
  ];
  it.each(vectors)('known vector %j seed %d', (s, seed, want) => {
    const b = bytes(s);
    expect(xxh32(b, 0, b.length, seed)).toBe(want);
    expect(h32Raw(b, seed)).toBe(want);
    expect(xxh32Utf8(s, seed)).toBe(want);
  });

  it('seed defaults to 0', () => {
    const b = bytes('abc');
    expect(xxh32(b, 0, 3)).toBe(xxh32(b, 0, 3, 0));
  });

  it('matches the oracle for every length 0..100 (random bytes, several seeds, non-zero offset)', () => {
    const rnd = mulberry32(12345);
    const buf = new Uint8Array(7 + 100 + 5);
    for (let i = 0; i < buf.length; i++) buf[i] = rnd() & 0xff;
    for (const seed of [0, 1, 0x9e3779b1, 0xffffffff, rnd()]) {
      for (let len = 0; len <= 100; len++) {
        const want = h32Raw(buf.slice(7, 7 + len), seed);
        expect(xxh32(buf, 7, len, seed), `len=${len} seed=${seed}`).toBe(want);
      }
    }
  });

  it('matches the oracle on random buffers and seeds (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), seedArb, fc.nat(8), (b, seed, pad) => {
        const host = new Uint8Array(pad + b.length);
        host.set(b, pad);
        return xxh32(host, pad, b.length, seed) === h32Raw(b, seed);
      }),
      { seed: 42, numRuns: 2000 },
    );
  });

  it('returns a uint32', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), seedArb, (b, seed) => {
        const h = xxh32(b, 0, b.length, seed);
        return Number.isInteger(h) && h >= 0 && h <= 0xffffffff;
      }),
      { seed: 7, numRuns: 500 },
    );
  });

  it('a negative (int32) seed equals its uint32 twin', () => {
    const b = bytes('seed');
    expect(xxh32(b, 0, b.length, -1)).toBe(xxh32(b, 0, b.length, 0xffffffff));
  });

  it.each([
    [0, 5, 4],
    [-1, 1, 4],
    [2, 3, 4],
    [0.5, 1, 4],
    [0, -1, 4],
  ])('rejects off=%d len=%d outside a %d-byte buffer with BAD_ARGUMENT', (off, len, size) => {
    let err: unknown;
    try {
      xxh32(new Uint8Array(size), off, len);
    } catch (e) {
      err = e;
    }
    expect(isBatonError(err, ErrorCode.BAD_ARGUMENT)).toBe(true);
    expect((err as Error).message).toMatch(/off=.*len=.*length 4/);
  });
});

describe('canonical 5-tuple key', () => {
  it('has the frozen 13-byte network-order layout', () => {
    const k = new Uint8Array(2 + FIVE_TUPLE_KEY_LEN + 2).fill(0xee);
    writeFiveTupleKey(k, 2, 0xc0a80001, 0x0a000002, 0x3039, 0x01bb, 6);
    expect(FIVE_TUPLE_KEY_LEN).toBe(13);
    expect(Array.from(k)).toEqual([
      0xee, 0xee,
      0xc0, 0xa8, 0x00, 0x01, // srcIp 192.168.0.1
      0x0a, 0x00, 0x00, 0x02, // dstIp 10.0.0.2
      0x30, 0x39, // srcPort 12345
      0x01, 0xbb, // dstPort 443
      0x06, // proto TCP
      0xee, 0xee,
    ]);
  });

  it('fixed 5-tuple hash literal (changing byte order or algorithm breaks this)', () => {
    expect(hashFiveTuple(0xc0a80001, 0x0a000002, 12345, 443, 6, 7)).toBe(0x4abd2ae7);
    expect(oracleKey(0xc0a80001, 0x0a000002, 12345, 443, 6, 7)).toBe(0x4abd2ae7);
  });
});

describe('hashFiveTuple', () => {
  it('is bit-identical to xxh32 over the canonical key (property, oracle = xxhash-wasm)', () => {
    const k = new Uint8Array(FIVE_TUPLE_KEY_LEN);
    fc.assert(
      fc.property(ipArb, ipArb, portArb, portArb, proto, seedArb, (s, d, sp, dp, p, seed) => {
        const h = hashFiveTuple(s, d, sp, dp, p, seed);
        writeFiveTupleKey(k, 0, s, d, sp, dp, p);
        return h === h32Raw(k, seed) && h === xxh32(k, 0, FIVE_TUPLE_KEY_LEN, seed);
      }),
      { seed: 2024, numRuns: 20000 },
    );
  });

  it('treats int32 and uint32 forms of the same address/seed alike', () => {
    fc.assert(
      fc.property(u32, u32, port, port, proto, u32, (s, d, sp, dp, p, seed) => {
        return hashFiveTuple(s | 0, d | 0, sp, dp, p, seed | 0) === hashFiveTuple(s, d, sp, dp, p, seed);
      }),
      { seed: 3, numRuns: 2000 },
    );
  });

  it('depends on every field and on direction', () => {
    const base = hashFiveTuple(0x0a000001, 0x0a000002, 1000, 80, 6, 0);
    expect(hashFiveTuple(0x0a000003, 0x0a000002, 1000, 80, 6, 0)).not.toBe(base);
    expect(hashFiveTuple(0x0a000001, 0x0a000003, 1000, 80, 6, 0)).not.toBe(base);
    expect(hashFiveTuple(0x0a000001, 0x0a000002, 1001, 80, 6, 0)).not.toBe(base);
    expect(hashFiveTuple(0x0a000001, 0x0a000002, 1000, 81, 6, 0)).not.toBe(base);
    expect(hashFiveTuple(0x0a000001, 0x0a000002, 1000, 80, 17, 0)).not.toBe(base);
    expect(hashFiveTuple(0x0a000001, 0x0a000002, 1000, 80, 6, 1)).not.toBe(base);
    expect(hashFiveTuple(0x0a000002, 0x0a000001, 80, 1000, 6, 0)).not.toBe(base);
  });
});

describe('hashFiveTupleSymmetric', () => {
  it('gives the same value in both directions (property)', () => {
    fc.assert(
      fc.property(ipArb, ipArb, portArb, portArb, proto, seedArb, (s, d, sp, dp, p, seed) => {
        return hashFiveTupleSymmetric(s, d, sp, dp, p, seed) === hashFiveTupleSymmetric(d, s, dp, sp, p, seed);
      }),
      { seed: 99, numRuns: 10000 },
    );
  });

  it('equals hashFiveTuple of the canonically ordered tuple (smaller (ip, port) first, unsigned)', () => {
    fc.assert(
      fc.property(ipArb, ipArb, portArb, portArb, proto, seedArb, (s, d, sp, dp, p, seed) => {
        const srcFirst = s < d || (s === d && sp <= dp);
        const want = srcFirst ? oracleKey(s, d, sp, dp, p, seed) : oracleKey(d, s, dp, sp, p, seed);
        return hashFiveTupleSymmetric(s, d, sp, dp, p, seed) === want;
      }),
      { seed: 100, numRuns: 10000 },
    );
  });

  it('orders IPs as unsigned (0x80000000 sorts after 0x7fffffff), then by port', () => {
    // High-bit address as a negative int32 must still sort as the larger one.
    expect(hashFiveTupleSymmetric(0x80000000 | 0, 0x7fffffff, 1, 2, 6, 0)).toBe(
      hashFiveTuple(0x7fffffff, 0x80000000, 2, 1, 6, 0),
    );
    expect(hashFiveTupleSymmetric(0x0a000001, 0x0a000001, 9000, 80, 17, 5)).toBe(
      hashFiveTuple(0x0a000001, 0x0a000001, 80, 9000, 17, 5),
    );
    expect(hashFiveTupleSymmetric(0x0a000001, 0x0a000002, 9000, 80, 17, 5)).toBe(
      hashFiveTuple(0x0a000001, 0x0a000002, 9000, 80, 17, 5),
    );
  });
});
