import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decrementTtl, rewriteDst, rewriteSrc } from '../shared/packet/rewrite.js';
import { parseIPv4 } from '../shared/packet/parse.js';
import { buildPacket, type PacketSpec } from '../shared/packet/build.js';
import { PacketMeta } from '../shared/packet/meta.js';
import { Reject } from '../shared/packet/reject.js';
import { arbSpec, bytesToHex, hexToBytes, KAT, naiveIpChecksum, naiveL4Checksum, REAL_SYN, REAL_UDP } from './fixtures/packets.js';

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u16 = fc.integer({ min: 0, max: 0xffff });

/** Packet bytes at `lead` inside a larger buffer, parsed OK. */
function place(p: Uint8Array, lead: number): { buf: Uint8Array; meta: PacketMeta } {
  const buf = new Uint8Array(lead + p.length + 7).fill(0x3c);
  buf.set(p, lead);
  const meta = new PacketMeta();
  expect(parseIPv4(buf, lead, p.length + 7, meta)).toBe(Reject.OK);
  return { buf, meta };
}

const l4csOff = (meta: PacketMeta): number => meta.l4Offset + (meta.proto === 6 ? 16 : 6);
const rd16 = (b: Uint8Array, o: number): number => (b[o]! << 8) | b[o + 1]!;

describe('rewriteSrc / rewriteDst', () => {
  it('incremental checksums equal a full (naive) recompute; packet re-parses OK with the new tuple', () => {
    fc.assert(
      fc.property(arbSpec, fc.nat(24), fc.boolean(), u32, u16, (spec: PacketSpec, lead, dst, ip, port) => {
        const { buf, meta } = place(buildPacket(spec), lead);
        const before = new PacketMeta();
        before.copyFrom(meta);
        (dst ? rewriteDst : rewriteSrc)(buf, meta, ip, port);

        const pkt = buf.subarray(lead, lead + meta.totalLength);
        expect(rd16(buf, lead + 10)).toBe(naiveIpChecksum(pkt));
        const noUdpCk = spec.proto === 17 && spec.udpChecksum === false;
        expect(rd16(buf, l4csOff(meta))).toBe(noUdpCk ? 0 : naiveL4Checksum(pkt));

        const again = new PacketMeta();
        expect(parseIPv4(buf, lead, meta.totalLength, again)).toBe(Reject.OK);
        expect(again).toEqual(meta); // meta was updated exactly like a re-parse
        const expected = new PacketMeta();
        expected.copyFrom(before);
        if (dst) {
          expected.dstIp = ip;
          expected.dstPort = port;
        } else {
          expected.srcIp = ip;
          expected.srcPort = port;
        }
        expect(again).toEqual(expected);
        // Bytes outside the packet untouched.
        expect(buf.subarray(0, lead).every((x) => x === 0x3c)).toBe(true);
        expect(buf.subarray(lead + meta.totalLength).every((x) => x === 0x3c)).toBe(true);
      }),
      { seed: 0x4e7a01, numRuns: 1000 },
    );
  });

  it('a chain of rewrites stays equal to full recompute (no drift)', () => {
    fc.assert(
      fc.property(arbSpec, fc.array(fc.tuple(fc.boolean(), u32, u16), { minLength: 1, maxLength: 20 }), (spec: PacketSpec, steps) => {
        const { buf, meta } = place(buildPacket(spec), 0);
        for (const [dst, ip, port] of steps) (dst ? rewriteDst : rewriteSrc)(buf, meta, ip, port);
        const fresh = buildPacket({ ...spec, srcIp: meta.srcIp, srcPort: meta.srcPort, dstIp: meta.dstIp, dstPort: meta.dstPort });
        expect(bytesToHex(buf.subarray(0, meta.totalLength))).toBe(bytesToHex(fresh));
      }),
      { seed: 0x4e7a02, numRuns: 300 },
    );
  });

  it('UDP without checksum keeps checksum 0', () => {
    const { buf, meta } = place(hexToBytes(KAT.find((k) => k.name === 'UDP without checksum')!.hex), 5);
    rewriteDst(buf, meta, 0x01020304, 999);
    expect(rd16(buf, l4csOff(meta))).toBe(0);
    expect(parseIPv4(buf, 5, meta.totalLength, new PacketMeta())).toBe(Reject.OK);
  });

  it('UDP whose checksum computes to 0 is stored as 0xffff after rewrite (and round trips)', () => {
    const hex = KAT.find((k) => k.name === 'UDP whose checksum computes to 0 (stored 0xffff)')!.hex;
    const { buf, meta } = place(hexToBytes(hex), 0);
    const ip = meta.dstIp;
    const port = meta.dstPort;
    rewriteDst(buf, meta, 0x0b0b0b0b, 4242);
    expect(rd16(buf, l4csOff(meta))).toBe(naiveL4Checksum(buf));
    rewriteDst(buf, meta, ip, port);
    expect(rd16(buf, l4csOff(meta))).toBe(0xffff);
    expect(bytesToHex(buf.subarray(0, meta.totalLength))).toBe(hex);
  });

  it('TCP whose checksum computes to 0 stays 0x0000 (not 0xffff) after a round trip', () => {
    const hex = KAT.find((k) => k.name === 'TCP whose checksum computes to 0x0000')!.hex;
    const { buf, meta } = place(hexToBytes(hex), 0);
    const ip = meta.srcIp;
    const port = meta.srcPort;
    rewriteSrc(buf, meta, 0xc0a80001, 1);
    rewriteSrc(buf, meta, ip, port);
    expect(bytesToHex(buf.subarray(0, meta.totalLength))).toBe(hex);
  });

  it('real captured packets: rewrite to the same tuple is a no-op, to another is verified', () => {
    for (const hex of [REAL_SYN, REAL_UDP]) {
      const { buf, meta } = place(hexToBytes(hex), 0);
      rewriteDst(buf, meta, meta.dstIp, meta.dstPort);
      rewriteSrc(buf, meta, meta.srcIp, meta.srcPort);
      expect(bytesToHex(buf.subarray(0, meta.totalLength))).toBe(hex);
      rewriteDst(buf, meta, 0x0a000063, 8443);
      expect(parseIPv4(buf, 0, buf.length, new PacketMeta())).toBe(Reject.OK);
      expect(rd16(buf, l4csOff(meta))).toBe(naiveL4Checksum(buf));
    }
  });
});

describe('decrementTtl', () => {
  it('decrements with a correct header checksum; refuses at TTL <= 1', () => {
    fc.assert(
      fc.property(arbSpec, fc.nat(9), (spec: PacketSpec, lead) => {
        const { buf, meta } = place(buildPacket(spec), lead);
        const ttl = meta.ttl;
        const snapshot = buf.slice();
        const ok = decrementTtl(buf, meta);
        expect(ok).toBe(ttl > 1);
        if (!ok) {
          expect(buf).toEqual(snapshot);
          expect(meta.ttl).toBe(ttl);
          return;
        }
        expect(meta.ttl).toBe(ttl - 1);
        expect(buf[lead + 8]).toBe(ttl - 1);
        expect(rd16(buf, lead + 10)).toBe(naiveIpChecksum(buf.subarray(lead)));
        const again = new PacketMeta();
        expect(parseIPv4(buf, lead, meta.totalLength, again)).toBe(Reject.OK);
        expect(again).toEqual(meta);
      }),
      { seed: 0x4e7a03, numRuns: 500 },
    );
  });
});
