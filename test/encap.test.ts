import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  ENCAP_DEFAULT_HOP_LIMIT,
  ENCAP_HEADER_LEN,
  ENCAP_HEADER_LEN_LOCATOR,
  ENCAP_LOCATOR_DATA_LEN,
  ENCAP_LOCATOR_TYPE,
  ENCAP_LOCATOR_VERSION,
  LOCATOR_AF_IPV4,
  ENCAP_OPTION_CLASS,
  ENCAP_OPTION_DATA_LEN,
  ENCAP_OPTION_TYPE,
  ENCAP_VERSION,
  EncapFlag,
  EncapMeta,
  GENEVE_DEFAULT_PORT,
  Tier,
  decodeEncap,
  encapHeaderLen,
  encodeEncap,
  hopLimitExceeded,
  writeEncapHeader,
} from '../shared/encap/geneve.js';
import { Reject } from '../shared/packet/reject.js';

const SEED = 0x6e6e7665;

function hex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, '');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}
function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/**
 * Bytes shaped like an IPv4 packet of `len` bytes: the encap layer only reads
 * the total-length field (bytes 2-3), so the rest is filler (not a packet
 * builder: inner parsing/checksums are the IPv4 codec's business).
 */
function innerOf(len: number, fill = 0xa5): Uint8Array {
  const p = new Uint8Array(len).fill(fill);
  p[0] = 0x45;
  p[2] = len >>> 8;
  p[3] = len & 0xff;
  return p;
}

function metaOf(f: Partial<EncapMeta>): EncapMeta {
  const m = new EncapMeta();
  Object.assign(m, f);
  return m;
}

const GOLDEN_META = {
  tier: Tier.FD,
  flags: EncapFlag.REDIRECTED,
  hopCount: 1,
  senderId: 0x1234,
  ownerHint: 0x0007,
  scopeVersion: 0xdeadbeef,
  vni: 0xabcdef,
};
// Literal on purpose: any accidental layout change must fail here (and the
// docs/wire-encapsulation.md example shows the same bytes).
const GOLDEN_HEADER_HEX =
  '04000800' + // Ver=0, OptLen=4 words | O=0 C=0 | Protocol Type 0x0800
  'abcdef00' + // VNI 0xabcdef | Reserved
  'fffb0103' + // Option Class 0xfffb | Type 0x01 (critical bit clear) | R=0, Length=3 words
  '12010100' + // data version 1, tier FD(2) | flags REDIRECTED | hop count 1 | reserved
  '12340007' + // sender node id 0x1234 | owner hint 0x0007
  'deadbeef'; //  hash-scope version

// The same header with the client locator 127.0.0.1:40000 (0x7f000001, 0x9c40).
const GOLDEN_LOCATOR = { locatorIp: 0x7f000001, locatorPort: 40000 };
const GOLDEN_LOCATOR_HEADER_HEX =
  '07000800' + // Ver=0, OptLen=7 words (Baton option 4 + locator 3) | O=0 C=0 | Protocol Type 0x0800
  'abcdef00' + // VNI | Reserved
  'fffb0103' + // Baton option, as above
  '12010100' +
  '12340007' +
  'deadbeef' +
  'fffb0202' + // Option Class 0xfffb | Type 0x02 (critical bit clear) | R=0, Length=2 words
  '14009c40' + // data version 1, family IPv4 (4) | reserved | port 40000
  '7f000001'; //  IPv4 127.0.0.1

/** A valid frame: golden header + 28-byte inner. */
function validFrame(): Uint8Array {
  const out = new Uint8Array(ENCAP_HEADER_LEN + 28);
  const n = encodeEncap(out, 0, metaOf(GOLDEN_META), innerOf(28), 0, 28);
  expect(n).toBe(out.length);
  return out;
}

describe('encap constants', () => {
  it('has the documented fixed sizes and values', () => {
    expect(ENCAP_HEADER_LEN).toBe(24);
    expect(ENCAP_OPTION_DATA_LEN).toBe(12);
    expect(ENCAP_OPTION_CLASS).toBe(0xfffb);
    expect(ENCAP_OPTION_CLASS).toBeGreaterThanOrEqual(0xff00); // RFC 8926 experimental range
    expect(ENCAP_OPTION_TYPE & 0x80).toBe(0); // not critical
    expect(ENCAP_VERSION).toBe(1);
    expect(GENEVE_DEFAULT_PORT).toBe(6081);
    expect(Tier).toEqual({ HASH: 1, FD: 2, SERVICE: 3, CLIENT: 4 });
    expect(EncapFlag).toEqual({ REDIRECTED: 1, MIGRATED: 2, SHED: 4 });
    expect(ENCAP_LOCATOR_TYPE).toBe(0x02);
    expect(ENCAP_LOCATOR_TYPE & 0x80).toBe(0); // not critical either
    expect(ENCAP_LOCATOR_VERSION).toBe(1);
    expect(LOCATOR_AF_IPV4).toBe(4);
    expect(ENCAP_LOCATOR_DATA_LEN).toBe(8);
    expect(ENCAP_HEADER_LEN_LOCATOR).toBe(36);
  });
});

describe('golden vector', () => {
  it('writeEncapHeader produces the exact bytes', () => {
    const buf = new Uint8Array(ENCAP_HEADER_LEN + 4).fill(0xee);
    writeEncapHeader(buf, 2, metaOf(GOLDEN_META));
    expect(toHex(buf.subarray(2, 2 + ENCAP_HEADER_LEN))).toBe(GOLDEN_HEADER_HEX);
    expect(buf[0]).toBe(0xee); // nothing written outside [off, off+ENCAP_HEADER_LEN)
    expect(buf[1]).toBe(0xee);
    expect(buf[2 + ENCAP_HEADER_LEN]).toBe(0xee);
    expect(buf[3 + ENCAP_HEADER_LEN]).toBe(0xee);
  });

  it('decodes the literal bytes', () => {
    const frame = new Uint8Array(ENCAP_HEADER_LEN + 28);
    frame.set(hex(GOLDEN_HEADER_HEX), 0);
    frame.set(innerOf(28), ENCAP_HEADER_LEN);
    const m = new EncapMeta();
    expect(decodeEncap(frame, 0, frame.length, m)).toBe(Reject.OK);
    expect({ ...m }).toEqual({
      version: 1,
      ...GOLDEN_META,
      locatorIp: 0,
      locatorPort: 0,
      locatorEncap: 0,
      locatorUnreadable: false,
      innerOffset: 24,
      innerLength: 28,
      frameLength: 52,
    });
  });

  it('with a client locator: the exact bytes, and they decode', () => {
    const meta = metaOf({ ...GOLDEN_META, ...GOLDEN_LOCATOR });
    expect(encapHeaderLen(meta)).toBe(ENCAP_HEADER_LEN_LOCATOR);
    const buf = new Uint8Array(ENCAP_HEADER_LEN_LOCATOR + 2).fill(0xee);
    expect(writeEncapHeader(buf, 1, meta)).toBe(ENCAP_HEADER_LEN_LOCATOR);
    expect(toHex(buf.subarray(1, 1 + ENCAP_HEADER_LEN_LOCATOR))).toBe(GOLDEN_LOCATOR_HEADER_HEX);
    expect(buf[0]).toBe(0xee);
    expect(buf[1 + ENCAP_HEADER_LEN_LOCATOR]).toBe(0xee);
    const frame = new Uint8Array(ENCAP_HEADER_LEN_LOCATOR + 28);
    frame.set(hex(GOLDEN_LOCATOR_HEADER_HEX), 0);
    frame.set(innerOf(28), ENCAP_HEADER_LEN_LOCATOR);
    const m = new EncapMeta();
    expect(decodeEncap(frame, 0, frame.length, m)).toBe(Reject.OK);
    expect({ ...m }).toEqual({
      version: 1,
      ...GOLDEN_META,
      ...GOLDEN_LOCATOR,
      locatorEncap: 0,
      locatorUnreadable: false,
      innerOffset: 36,
      innerLength: 28,
      frameLength: 64,
    });
  });

  it('masks every field to its wire width and always writes version 1', () => {
    const buf = new Uint8Array(ENCAP_HEADER_LEN);
    writeEncapHeader(
      buf,
      0,
      metaOf({ version: 9, tier: 0x12, flags: 0x1ff, hopCount: 0x102, senderId: 0x1abcd, ownerHint: 0x12345, scopeVersion: -1, vni: 0x1234567 }),
    );
    expect(toHex(buf)).toBe('04000800' + '23456700' + 'fffb0103' + '12ff0200' + 'abcd2345' + 'ffffffff');
    const withLoc = new Uint8Array(ENCAP_HEADER_LEN_LOCATOR);
    writeEncapHeader(withLoc, 0, metaOf({ locatorIp: 0x1c0a80001, locatorPort: 0x1abcd }));
    expect(toHex(withLoc.subarray(24))).toBe('fffb0202' + '1400abcd' + 'c0a80001');
  });
});

const metaArb = fc.record({
  tier: fc.integer({ min: 0, max: 15 }),
  flags: fc.integer({ min: 0, max: 255 }),
  hopCount: fc.integer({ min: 0, max: 255 }),
  senderId: fc.integer({ min: 0, max: 0xffff }),
  ownerHint: fc.integer({ min: 0, max: 0xffff }),
  scopeVersion: fc.integer({ min: 0, max: 0xffffffff }),
  vni: fc.integer({ min: 0, max: 0xffffff }),
  locatorIp: fc.integer({ min: 0, max: 0xffffffff }),
  locatorPort: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 0xffff })),
  locatorEncap: fc.integer({ min: 0, max: 2 }),
});

describe('round trip', () => {
  it('encode -> decode returns the same metadata and inner bytes (property)', () => {
    fc.assert(
      fc.property(
        metaArb,
        fc.integer({ min: 20, max: 1500 }),
        fc.integer({ min: 0, max: 64 }),
        fc.integer({ min: 0, max: 255 }),
        (fields, innerLen, off, fill) => {
          const inner = innerOf(innerLen, fill);
          const hl = fields.locatorPort !== 0 ? ENCAP_HEADER_LEN_LOCATOR : ENCAP_HEADER_LEN;
          const out = new Uint8Array(off + hl + innerLen + 7);
          const n = encodeEncap(out, off, metaOf(fields), inner, 0, innerLen);
          expect(n).toBe(hl + innerLen);
          const m = new EncapMeta();
          // `len` deliberately longer than the frame: trailing bytes belong to "the next frame".
          expect(decodeEncap(out, off, out.length - off, m)).toBe(Reject.OK);
          expect({ ...m }).toEqual({
            version: ENCAP_VERSION,
            ...fields,
            locatorIp: fields.locatorPort !== 0 ? fields.locatorIp : 0, // no locator: nothing to report
            locatorEncap: fields.locatorPort !== 0 ? fields.locatorEncap : 0,
            locatorUnreadable: false,
            innerOffset: off + hl,
            innerLength: innerLen,
            frameLength: n,
          });
          expect(out.subarray(m.innerOffset, m.innerOffset + m.innerLength)).toEqual(inner);
        },
      ),
      { seed: SEED, numRuns: 400 },
    );
  });

  it('copies an inner range out of a larger buffer (small and large packets)', () => {
    for (const len of [20, 60, 128, 129, 1400]) {
      const src = new Uint8Array(len + 40).fill(7);
      src.set(innerOf(len, 0x3c), 17);
      const out = new Uint8Array(ENCAP_HEADER_LEN + len);
      expect(encodeEncap(out, 0, metaOf(GOLDEN_META), src, 17, len)).toBe(out.length);
      expect(out.subarray(ENCAP_HEADER_LEN)).toEqual(src.subarray(17, 17 + len));
    }
  });

  it('encapsulates in place when the inner packet sits in the output buffer (overlapping)', () => {
    for (const len of [28, 300]) {
      const buf = new Uint8Array(ENCAP_HEADER_LEN + len + 10);
      const inner = innerOf(len, 0x42);
      for (let i = 20; i < len; i++) inner[i] = i & 0xff;
      buf.set(inner, 0); // inner at 0, header will go at 0 too: the inner must move first
      expect(encodeEncap(buf, 0, metaOf(GOLDEN_META), buf, 0, len)).toBe(ENCAP_HEADER_LEN + len);
      expect(buf.subarray(ENCAP_HEADER_LEN, ENCAP_HEADER_LEN + len)).toEqual(inner);
      expect(toHex(buf.subarray(0, ENCAP_HEADER_LEN))).toBe(GOLDEN_HEADER_HEX);
      // Same again through a second view of the same memory (inner is a sub-range of the view,
      // and the destination lies after the source, where a forward byte loop would smear it).
      const buf2 = new Uint8Array(ENCAP_HEADER_LEN + len + 8);
      buf2.set(inner, 4);
      const view = new Uint8Array(buf2.buffer, 2, len + 6);
      expect(encodeEncap(buf2, 0, metaOf(GOLDEN_META), view, 2, len)).toBe(ENCAP_HEADER_LEN + len);
      expect(buf2.subarray(ENCAP_HEADER_LEN, ENCAP_HEADER_LEN + len)).toEqual(inner);
      expect(toHex(buf2.subarray(0, ENCAP_HEADER_LEN))).toBe(GOLDEN_HEADER_HEX);
    }
  });

  it('returns -1 without writing when the output or the inner range is unusable', () => {
    const inner = innerOf(40);
    const exact = new Uint8Array(ENCAP_HEADER_LEN + 40);
    expect(encodeEncap(exact, 0, metaOf(GOLDEN_META), inner, 0, 40)).toBe(64);
    const cases: Array<[string, Uint8Array, number, Uint8Array, number, number]> = [
      ['out one byte short', new Uint8Array(ENCAP_HEADER_LEN + 39), 0, inner, 0, 40],
      ['offset pushes past the end', new Uint8Array(ENCAP_HEADER_LEN + 40), 1, inner, 0, 40],
      ['negative offset', new Uint8Array(100), -1, inner, 0, 40],
      ['inner range beyond inner', new Uint8Array(100), 0, inner, 1, 40],
      ['negative inner offset', new Uint8Array(100), 0, inner, -1, 40],
      ['innerLen below an IPv4 header', new Uint8Array(100), 0, innerOf(19), 0, 19],
      ['innerLen != IPv4 total length', new Uint8Array(100), 0, inner, 0, 39],
    ];
    for (const [name, out, off, src, so, sl] of cases) {
      out.fill(0x5a);
      expect(encodeEncap(out, off, metaOf(GOLDEN_META), src, so, sl), name).toBe(-1);
      expect(out.every((b) => b === 0x5a), `${name}: nothing written`).toBe(true);
    }
  });
});

describe('in-place header rewrite (forwarder)', () => {
  it('rewrites the header in front of a received frame without touching the inner packet', () => {
    const frame = validFrame();
    const inner = frame.slice(ENCAP_HEADER_LEN);
    const m = new EncapMeta();
    expect(decodeEncap(frame, 0, frame.length, m)).toBe(Reject.OK);
    m.hopCount++;
    m.flags |= EncapFlag.MIGRATED;
    m.tier = Tier.FD;
    m.senderId = 7;
    writeEncapHeader(frame, m.innerOffset - ENCAP_HEADER_LEN, m);
    const m2 = new EncapMeta();
    expect(decodeEncap(frame, 0, frame.length, m2)).toBe(Reject.OK);
    expect(m2.hopCount).toBe(2);
    expect(m2.flags).toBe(EncapFlag.REDIRECTED | EncapFlag.MIGRATED);
    expect(m2.senderId).toBe(7);
    expect(m2.scopeVersion).toBe(0xdeadbeef);
    expect(frame.subarray(ENCAP_HEADER_LEN)).toEqual(inner);
  });

  it('a forwarder keeps the locator: same header length, rewritten in place', () => {
    const frame = new Uint8Array(ENCAP_HEADER_LEN_LOCATOR + 28);
    expect(encodeEncap(frame, 0, metaOf({ ...GOLDEN_META, ...GOLDEN_LOCATOR }), innerOf(28), 0, 28)).toBe(frame.length);
    const m = new EncapMeta();
    expect(decodeEncap(frame, 0, frame.length, m)).toBe(Reject.OK);
    m.tier = Tier.SERVICE;
    expect(writeEncapHeader(frame, m.innerOffset - encapHeaderLen(m), m)).toBe(ENCAP_HEADER_LEN_LOCATOR);
    const m2 = new EncapMeta();
    expect(decodeEncap(frame, 0, frame.length, m2)).toBe(Reject.OK);
    expect(m2.tier).toBe(Tier.SERVICE);
    expect([m2.locatorIp, m2.locatorPort]).toEqual([0x7f000001, 40000]);
    expect(m2.innerOffset).toBe(ENCAP_HEADER_LEN_LOCATOR);
  });

  it('hopLimitExceeded compares against the limit', () => {
    const m = new EncapMeta();
    m.hopCount = ENCAP_DEFAULT_HOP_LIMIT;
    expect(hopLimitExceeded(m)).toBe(false);
    m.hopCount++;
    expect(hopLimitExceeded(m)).toBe(true);
    expect(hopLimitExceeded(m, 255)).toBe(false);
    m.hopCount = 1;
    expect(hopLimitExceeded(m, 0)).toBe(true);
  });
});

/** Builds a frame with an arbitrary option list (for foreign-sender and malformed cases). */
function frameWithOptions(options: Uint8Array[], innerLen = 28, optLenWords?: number): Uint8Array {
  const optBytes = options.reduce((a, o) => a + o.length, 0);
  const out = new Uint8Array(8 + optBytes + innerLen);
  out.set(hex(GOLDEN_HEADER_HEX).subarray(0, 8), 0);
  out[0] = optLenWords ?? optBytes / 4;
  let p = 8;
  for (const o of options) {
    out.set(o, p);
    p += o.length;
  }
  out.set(innerOf(innerLen), p);
  return out;
}
const BATON_OPT = hex(GOLDEN_HEADER_HEX).subarray(8, 24);
const FOREIGN_OPT = hex('01020301' + 'cafebabe'); // class 0x0102 (OVN), type 0x03, 1 word of data
const FOREIGN_CRITICAL_OPT = hex('01028300'); // type 0x83: critical, 0 words
const OUR_CLASS_OTHER_TYPE = hex('fffb0301' + '00000000'); // a future Baton option type, not critical
const LOCATOR_OPT = hex(GOLDEN_LOCATOR_HEADER_HEX).subarray(24, 36);

describe('option walking', () => {
  it('skips non-critical foreign options before and after ours', () => {
    const frame = frameWithOptions([FOREIGN_OPT, BATON_OPT, OUR_CLASS_OTHER_TYPE, hex('ffff0000')]);
    const m = new EncapMeta();
    expect(decodeEncap(frame, 0, frame.length, m)).toBe(Reject.OK);
    expect(m.innerOffset).toBe(8 + 8 + 16 + 8 + 4);
    expect(m.innerLength).toBe(28);
    expect(m.frameLength).toBe(frame.length);
    expect(m.senderId).toBe(0x1234);
  });

  it('uses the first Baton option when there are two', () => {
    const second = BATON_OPT.slice();
    second[8] = 0x99; // sender id high byte
    const frame = frameWithOptions([BATON_OPT, second]);
    const m = new EncapMeta();
    expect(decodeEncap(frame, 0, frame.length, m)).toBe(Reject.OK);
    expect(m.senderId).toBe(0x1234);
  });
});

describe('the client-locator option', () => {
  it('is found wherever it sits among the options, before or after Baton\'s', () => {
    for (const opts of [[BATON_OPT, LOCATOR_OPT], [LOCATOR_OPT, BATON_OPT], [FOREIGN_OPT, LOCATOR_OPT, OUR_CLASS_OTHER_TYPE, BATON_OPT]]) {
      const frame = frameWithOptions(opts);
      const m = new EncapMeta();
      expect(decodeEncap(frame, 0, frame.length, m)).toBe(Reject.OK);
      expect([m.locatorIp, m.locatorPort, m.locatorUnreadable]).toEqual([0x7f000001, 40000, false]);
      expect(m.senderId).toBe(0x1234);
    }
  });

  it('the first locator wins', () => {
    const second = LOCATOR_OPT.slice();
    second[11] = 0x09; // address 127.0.0.9
    const frame = frameWithOptions([BATON_OPT, LOCATOR_OPT, second]);
    const m = new EncapMeta();
    expect(decodeEncap(frame, 0, frame.length, m)).toBe(Reject.OK);
    expect(m.locatorIp).toBe(0x7f000001);
  });

  it('one this build cannot read is skipped, not rejected: the frame decodes without a locator, flagged', () => {
    const variant = (fn: (o: Uint8Array) => Uint8Array) => fn(LOCATOR_OPT.slice());
    const cases: [string, Uint8Array][] = [
      ['data version 2', variant((o) => ((o[4] = 0x24), o))],
      ['family 6', variant((o) => ((o[4] = 0x16), o))],
      ['length 3 words', hex('fffb0203' + '14009c40' + '7f000001' + '00000000')],
      ['length 0', hex('fffb0200')],
    ];
    for (const [name, opt] of cases) {
      const frame = frameWithOptions([BATON_OPT, opt]);
      const m = new EncapMeta();
      m.locatorPort = 1; // left over from an earlier frame: must be cleared
      expect(decodeEncap(frame, 0, frame.length, m), name).toBe(Reject.OK);
      expect([m.locatorPort, m.locatorIp, m.locatorUnreadable], name).toEqual([0, 0, true]);
      expect(m.innerLength, name).toBe(28);
    }
  });

  it('a frame without one decodes with locatorPort 0 (also after a frame that had one)', () => {
    const m = new EncapMeta();
    const a = frameWithOptions([BATON_OPT, LOCATOR_OPT]);
    expect(decodeEncap(a, 0, a.length, m)).toBe(Reject.OK);
    const b = validFrame();
    expect(decodeEncap(b, 0, b.length, m)).toBe(Reject.OK);
    expect([m.locatorPort, m.locatorIp, m.locatorUnreadable]).toEqual([0, 0, false]);
  });
});

describe('malformed frames are rejected with their code', () => {
  type Case = [name: string, build: () => Uint8Array, code: number, len?: (f: Uint8Array) => number];
  const mutate = (fn: (f: Uint8Array) => void) => () => {
    const f = validFrame();
    fn(f);
    return f;
  };
  const B = Reject.BAD_ENCAP;
  const V = Reject.BAD_ENCAP_VERSION;
  const cases: Case[] = [
    ['empty', () => new Uint8Array(0), B],
    ['7 bytes (shorter than the base header)', () => validFrame().slice(0, 7), B],
    ['header only, no inner', () => validFrame().slice(0, ENCAP_HEADER_LEN), B],
    ['options cut short', () => validFrame().slice(0, 20), B],
    ['Geneve version 1', mutate((f) => (f[0] = f[0]! | 0x40)), B],
    ['Geneve version 2', mutate((f) => (f[0] = f[0]! | 0x80)), B],
    ['Geneve version 3', mutate((f) => (f[0] = f[0]! | 0xc0)), B],
    ['O (OAM) bit set', mutate((f) => (f[1] = 0x80)), B],
    ['protocol type IPv6', mutate((f) => ((f[2] = 0x86), (f[3] = 0xdd))), B],
    ['protocol type Ethernet (0x6558)', mutate((f) => ((f[2] = 0x65), (f[3] = 0x58))), B],
    ['Opt Len 0 (our option missing)', () => frameWithOptions([]), B],
    ['Opt Len 63 (beyond the frame)', mutate((f) => (f[0] = 63)), B],
    ['Opt Len 3 words: our TLV overruns the options', () => frameWithOptions([BATON_OPT], 28, 3), B],
    ['trailing foreign option whose Length overruns Opt Len', () => frameWithOptions([BATON_OPT, hex('ffff0001')], 28, 5), B],
    ['option Length 4 words overruns Opt Len', mutate((f) => (f[11] = 4)), B],
    ['wrong option class (another experimental class)', mutate((f) => (f[9] = 0xfa)), B],
    ['wrong option type', mutate((f) => (f[10] = 0x02)), B],
    ['our type with the critical bit (0x81)', mutate((f) => (f[10] = 0x81)), B],
    [
      'our option with Length 2 words',
      () => {
        const o = BATON_OPT.slice(0, 12);
        o[3] = 2;
        return frameWithOptions([o]);
      },
      B,
    ],
    [
      'our option with Length 4 words',
      () => {
        const o = new Uint8Array(20);
        o.set(BATON_OPT, 0);
        o[3] = 4;
        return frameWithOptions([o]);
      },
      B,
    ],
    ['our option with Length 0', () => frameWithOptions([hex('fffb0100')]), B],
    ['only a foreign option', () => frameWithOptions([FOREIGN_OPT]), B],
    ['unknown critical option before ours', () => frameWithOptions([FOREIGN_CRITICAL_OPT, BATON_OPT]), B],
    ['unknown critical option after ours', () => frameWithOptions([BATON_OPT, FOREIGN_CRITICAL_OPT]), B],
    ['inner 19 bytes', () => frameWithOptions([BATON_OPT], 28).slice(0, ENCAP_HEADER_LEN + 19), B],
    ['inner total length beyond the frame', mutate((f) => (f[ENCAP_HEADER_LEN + 3] = 29)), B],
    ['inner total length 65535', mutate((f) => ((f[ENCAP_HEADER_LEN + 2] = 0xff), (f[ENCAP_HEADER_LEN + 3] = 0xff))), B],
    ['inner total length 19', mutate((f) => ((f[ENCAP_HEADER_LEN + 2] = 0), (f[ENCAP_HEADER_LEN + 3] = 19))), B],
    ['inner total length 0', mutate((f) => ((f[ENCAP_HEADER_LEN + 2] = 0), (f[ENCAP_HEADER_LEN + 3] = 0))), B],
    ['len one short of the frame', () => validFrame(), B, (f) => f.length - 1],
    ['option data version 0', mutate((f) => (f[12] = 0x02)), V],
    ['option data version 2', mutate((f) => (f[12] = 0x22)), V],
    ['option data version 15', mutate((f) => (f[12] = 0xf2)), V],
    [
      'version 2 with a longer (future) option: version wins',
      () => {
        const o = new Uint8Array(20);
        o.set(BATON_OPT, 0);
        o[3] = 4;
        o[4] = 0x22;
        return frameWithOptions([o]);
      },
      V,
    ],
  ];

  it('the unmutated base frame is accepted (so each case tests its own mutation)', () => {
    const f = validFrame();
    expect(decodeEncap(f, 0, f.length, new EncapMeta())).toBe(Reject.OK);
    const g = frameWithOptions([BATON_OPT]);
    expect(toHex(g)).toBe(toHex(f));
  });

  it.each(cases)('%s', (_name, build, code, lenOf) => {
    const f = build();
    const len = lenOf ? lenOf(f) : f.length;
    expect(decodeEncap(f, 0, len, new EncapMeta())).toBe(code);
  });

  it('rejects off/len outside the buffer', () => {
    const f = validFrame();
    const m = new EncapMeta();
    expect(decodeEncap(f, 0, f.length + 1, m)).toBe(B);
    expect(decodeEncap(f, -1, f.length, m)).toBe(B);
    expect(decodeEncap(f, 1, f.length, m)).toBe(B);
    expect(decodeEncap(f, f.length, 0, m)).toBe(B);
  });
});

describe('robustness', () => {
  it('random bytes never throw and any accept is self-consistent (property)', () => {
    const m = new EncapMeta();
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 200 }),
        fc.integer({ min: -4, max: 210 }),
        fc.integer({ min: -4, max: 210 }),
        (buf, off, len) => {
          const r = decodeEncap(buf, off, len, m);
          expect([Reject.OK, Reject.BAD_ENCAP, Reject.BAD_ENCAP_VERSION]).toContain(r);
          if (r === Reject.OK) {
            expect(m.frameLength).toBeGreaterThanOrEqual(ENCAP_HEADER_LEN - 16 + 20);
            expect(off + m.frameLength).toBeLessThanOrEqual(off + len);
            expect(m.innerOffset + m.innerLength).toBe(off + m.frameLength);
          }
        },
      ),
      { seed: SEED, numRuns: 3000 },
    );
  });

  it('random corruption of a valid frame never throws (property)', () => {
    const m = new EncapMeta();
    let accepted = 0;
    let rejected = 0;
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: ENCAP_HEADER_LEN + 27 }), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 4,
        }),
        (edits) => {
          const f = validFrame();
          for (const [i, v] of edits) f[i] = v;
          const r = decodeEncap(f, 0, f.length, m);
          expect([Reject.OK, Reject.BAD_ENCAP, Reject.BAD_ENCAP_VERSION]).toContain(r);
          if (r === Reject.OK) accepted++;
          else rejected++;
        },
      ),
      { seed: SEED, numRuns: 2000 },
    );
    // Both outcomes occur (payload edits are accepted, header edits mostly not).
    expect(accepted).toBeGreaterThan(0);
    expect(rejected).toBeGreaterThan(0);
  });
});

describe('batching: several frames in one datagram', () => {
  it('walks frames by frameLength and ends exactly at the datagram end (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(metaArb, fc.integer({ min: 20, max: 300 })), { minLength: 1, maxLength: 12 }),
        (frames) => {
          // Frames with and without a locator mixed: every header length delimits its frame.
          const hl = (f: { locatorPort: number }) => (f.locatorPort !== 0 ? ENCAP_HEADER_LEN_LOCATOR : ENCAP_HEADER_LEN);
          const total = frames.reduce((a, [f, l]) => a + hl(f) + l, 0);
          const dgram = new Uint8Array(total);
          let off = 0;
          frames.forEach(([fields, l], i) => {
            const n = encodeEncap(dgram, off, metaOf(fields), innerOf(l, i), 0, l);
            expect(n).toBe(hl(fields) + l);
            off += n;
          });
          const m = new EncapMeta();
          let p = 0;
          let i = 0;
          while (p < dgram.length) {
            expect(decodeEncap(dgram, p, dgram.length - p, m)).toBe(Reject.OK);
            const [fields, l] = frames[i]!;
            expect(m.senderId).toBe(fields.senderId);
            expect(m.scopeVersion).toBe(fields.scopeVersion);
            expect(m.innerLength).toBe(l);
            expect(m.innerOffset).toBe(p + hl(fields));
            expect(m.locatorPort).toBe(fields.locatorPort);
            expect(dgram[m.innerOffset + 4]).toBe(i & 0xff); // the filler identifies the frame
            p += m.frameLength;
            i++;
          }
          expect(p).toBe(dgram.length);
          expect(i).toBe(frames.length);
        },
      ),
      { seed: SEED, numRuns: 300 },
    );
  });

  it('walks a batch that contains a frame with foreign options, and flags a truncated tail', () => {
    const a = validFrame();
    const b = frameWithOptions([FOREIGN_OPT, BATON_OPT], 40);
    const c = validFrame();
    const dgram = new Uint8Array(a.length + b.length + c.length - 5); // last frame truncated
    dgram.set(a, 0);
    dgram.set(b, a.length);
    dgram.set(c.subarray(0, c.length - 5), a.length + b.length);
    const m = new EncapMeta();
    let p = 0;
    const seen: number[] = [];
    for (;;) {
      const r = decodeEncap(dgram, p, dgram.length - p, m);
      if (r !== Reject.OK) {
        seen.push(-r);
        break;
      }
      seen.push(m.innerLength);
      p += m.frameLength;
    }
    expect(seen).toEqual([28, 40, -Reject.BAD_ENCAP]);
    expect(p).toBe(a.length + b.length);
  });
});
