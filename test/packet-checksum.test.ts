import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  csumReplace16,
  csumReplace32,
  fold16,
  foldChecksum,
  ipv4HeaderChecksum,
  l4Checksum,
  onesSum,
} from '../shared/packet/checksum.js';
import { buildPacket } from '../shared/packet/build.js';
import { arbSpec, FIXTURES, hexToBytes, naiveChecksum, naiveIpChecksum, naiveL4Checksum, REAL_RST } from './fixtures/packets.js';
import { Reject } from '../shared/packet/reject.js';

describe('onesSum / foldChecksum known answers', () => {
  it('RFC 1071 section 3 example: 0001 f203 f4f5 f6f7 sums to 0xddf2, checksum 0x220d', () => {
    const b = hexToBytes('0001f203f4f5f6f7');
    expect(onesSum(b, 0, 8)).toBe(0xddf2);
    expect(foldChecksum(onesSum(b, 0, 8))).toBe(0x220d);
  });

  it('Wikipedia IPv4 header example: checksum 0xb861', () => {
    const h = hexToBytes('450000730000400040110000c0a80001c0a800c7');
    expect(ipv4HeaderChecksum(h, 0, 20)).toBe(0xb861);
    h[10] = 0xff; // the stored field is ignored
    expect(ipv4HeaderChecksum(h, 0, 20)).toBe(0xb861);
  });

  it('odd length pads the trailing byte with zero', () => {
    expect(onesSum(hexToBytes('0102ab'), 0, 3)).toBe(0x0102 + 0xab00);
    expect(onesSum(hexToBytes('ff'), 0, 1)).toBe(0xff00);
  });

  it('never reads past the buffer', () => {
    expect(onesSum(hexToBytes('0102'), 0, 100)).toBe(0x0102);
    expect(onesSum(hexToBytes('0102'), 5, 4)).toBe(0);
  });

  it('chains through `initial` (even split)', () => {
    const b = hexToBytes('0001f203f4f5f6f7');
    expect(onesSum(b, 4, 4, onesSum(b, 0, 4))).toBe(0xddf2);
  });

  it('fold16 handles sums beyond 32 bits exactly', () => {
    expect(fold16(0)).toBe(0);
    expect(fold16(0xffff)).toBe(0xffff);
    expect(fold16(0x10000)).toBe(1);
    expect(fold16(0x1fffe)).toBe(0xffff);
    expect(fold16(2 ** 48 - 1)).toBe(0xffff); // three all-ones words
    expect(fold16(2 ** 40 - 1)).toBe(0x00ff); // ffff + ffff + 00ff
    expect(fold16(2 ** 48)).toBe(1);
    // End-around carry is arithmetic mod 0xffff, with 0 only for 0.
    fc.assert(
      fc.property(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), (x) => {
        const f = fold16(x);
        expect(f >= 1 && f <= 0xffff).toBe(true);
        expect(f % 0xffff).toBe(x % 0xffff);
      }),
      { seed: 0xf01d, numRuns: 2000 },
    );
  });
});

describe('onesSum agrees with a naive implementation', () => {
  it('random buffers, offsets and lengths (odd and even), and one > 64 KiB buffer crossing the internal fold', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 200 }), fc.nat(), fc.nat(), (b, o, l) => {
        const off = b.length === 0 ? 0 : o % b.length;
        const len = l % (b.length - off + 1);
        expect(foldChecksum(onesSum(b, off, len))).toBe(naiveChecksum(b.subarray(off, off + len)));
      }),
      { seed: 0xc5c5, numRuns: 1000 },
    );
    const big = new Uint8Array(70_001).fill(0xff);
    big[12_345] = 0x12;
    expect(foldChecksum(onesSum(big, 1, big.length - 1))).toBe(naiveChecksum(big.subarray(1)));
  });
});

describe('l4Checksum', () => {
  it('matches the stored checksum of every accepted fixture at offset 0', () => {
    for (const f of FIXTURES) {
      if (f.expect !== Reject.OK || (f.off ?? 0) !== 0 || f.verify === false) continue;
      const b = hexToBytes(f.hex);
      const co = (b[0]! & 15) * 4 + (b[9] === 6 ? 16 : 6);
      const stored = b[co]! * 256 + b[co + 1]!;
      if (stored === 0 && b[9] === 17) continue; // "no checksum"
      expect(l4Checksum(b, 0), f.name).toBe(stored);
      expect(naiveL4Checksum(b), f.name).toBe(stored);
    }
  });

  it('matches the naive oracle for random packets at a non-zero offset', () => {
    fc.assert(
      fc.property(arbSpec, fc.nat(16), (spec, lead) => {
        const p = buildPacket(spec);
        const buf = new Uint8Array(lead + p.length + 3).fill(0x5a);
        buf.set(p, lead);
        if (spec.proto === 17 && spec.udpChecksum === false) expect(buf[lead + 26]! | buf[lead + 27]!).toBe(0);
        else expect(l4Checksum(buf, lead)).toBe(naiveL4Checksum(p));
        expect(ipv4HeaderChecksum(buf, lead, 20)).toBe(naiveIpChecksum(p));
      }),
      { seed: 0xc5c6, numRuns: 300 },
    );
  });

  it('returns -1 rather than throwing on non-TCP/UDP or impossible lengths', () => {
    const b = hexToBytes(REAL_RST);
    b[9] = 1;
    expect(l4Checksum(b, 0)).toBe(-1);
    expect(l4Checksum(hexToBytes(REAL_RST).subarray(0, 30), 0)).toBe(-1);
    expect(l4Checksum(hexToBytes(REAL_RST), 25)).toBe(-1);
    expect(l4Checksum(hexToBytes(REAL_RST), -1)).toBe(-1);
  });
});

describe('csumReplace16 / csumReplace32 (RFC 1624 eqn. 3)', () => {
  // Checksum over `words` via the naive oracle.
  const full = (words: number[]): number => {
    const b = new Uint8Array(words.length * 2);
    words.forEach((w, i) => {
      b[2 * i] = w >>> 8;
      b[2 * i + 1] = w & 0xff;
    });
    return naiveChecksum(b);
  };

  it('RFC 1624 section 4 example: eqn. 3 yields 0x0000 where eqn. 2 would give 0xffff', () => {
    // HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives HC' = 0x0000.
    expect(csumReplace16(0xdd2f, 0x5555, 0x3285)).toBe(0x0000);
  });

  it('incremental update equals full recompute for any single-word change', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 2, maxLength: 30 }), fc.nat(), fc.integer({ min: 0, max: 0xffff }), (words, at, nw) => {
        fc.pre(words.some((w) => w !== 0)); // real headers are never all-zero (+0/-0 ambiguity)
        const i = at % words.length;
        const before = full(words);
        const old = words[i]!;
        words[i] = nw;
        fc.pre(words.some((w) => w !== 0));
        expect(csumReplace16(before, old, nw)).toBe(full(words));
      }),
      { seed: 0xc5c7, numRuns: 2000 },
    );
  });

  it('incremental 32-bit update equals full recompute', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 2, maxLength: 30 }),
        fc.nat(),
        fc.integer({ min: 0, max: 0xffffffff }),
        (words, at, nv) => {
          const i = at % (words.length - 1);
          fc.pre(words.some((w) => w !== 0));
          const before = full(words);
          const old = ((words[i]! << 16) | words[i + 1]!) >>> 0;
          words[i] = nv >>> 16;
          words[i + 1] = nv & 0xffff;
          fc.pre(words.some((w) => w !== 0));
          expect(csumReplace32(before, old, nv)).toBe(full(words));
        },
      ),
      { seed: 0xc5c8, numRuns: 2000 },
    );
  });
});
