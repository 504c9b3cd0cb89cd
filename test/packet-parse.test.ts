import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseIPv4 } from '../shared/packet/parse.js';
import { buildPacket, type PacketSpec } from '../shared/packet/build.js';
import { PacketMeta } from '../shared/packet/meta.js';
import { Reject, REJECT_NAMES } from '../shared/packet/reject.js';
import { arbSpec, FIXTURES, hexToBytes, type MetaFields } from './fixtures/packets.js';


const FIELDS: readonly (keyof MetaFields)[] = [
  'srcIp', 'dstIp', 'srcPort', 'dstPort', 'proto', 'tcpFlags', 'ipOffset', 'ipHeaderLength',
  'totalLength', 'l4Offset', 'l4HeaderLength', 'payloadOffset', 'payloadLength', 'ttl',
];

function fieldsOf(m: PacketMeta): MetaFields {
  const o = {} as Record<keyof MetaFields, number>;
  for (const f of FIELDS) o[f] = m[f];
  return o;
}

/** A meta full of garbage, to prove parse overwrites every field. */
function dirtyMeta(): PacketMeta {
  const m = new PacketMeta();
  for (const f of FIELDS) m[f] = 0xdead;
  return m;
}

describe('parseIPv4 fixtures', () => {
  it.each(FIXTURES.map((f) => [`${f.name} -> ${REJECT_NAMES[f.expect]}`, f] as const))('%s', (_n, f) => {
    const buf = hexToBytes(f.hex);
    const off = f.off ?? 0;
    const meta = dirtyMeta();
    const code = parseIPv4(buf, off, f.len ?? buf.length - off, meta, f.verify ?? true);
    expect(REJECT_NAMES[code]).toBe(REJECT_NAMES[f.expect]);
    if (f.fields) expect(fieldsOf(meta)).toMatchObject(f.fields);
    expect(meta.ipOffset).toBe(off);
    for (const k of FIELDS) expect(meta[k], k).not.toBe(0xdead);
  });

  it('covers every packet reject reason at least once', () => {
    const seen = new Set(FIXTURES.map((f) => f.expect));
    for (let c = Reject.OK; c <= Reject.BAD_L4_CHECKSUM; c++) expect(seen.has(c as Reject), REJECT_NAMES[c]).toBe(true);
  });

  it('on rejection, fields after the failing check are 0 (no stale values from the previous packet)', () => {
    const meta = new PacketMeta();
    const good = hexToBytes(FIXTURES[0]!.hex);
    expect(parseIPv4(good, 0, good.length, meta)).toBe(Reject.OK);
    const v6 = good.slice();
    v6[0] = 0x65;
    expect(parseIPv4(v6, 0, v6.length, meta)).toBe(Reject.BAD_VERSION);
    expect(fieldsOf(meta)).toEqual({ ...fieldsOf(new PacketMeta()), ipOffset: 0 });
  });

  it('clamps len to the buffer instead of reading past it', () => {
    const good = hexToBytes(FIXTURES[0]!.hex);
    const meta = new PacketMeta();
    expect(parseIPv4(good, 0, good.length + 100, meta)).toBe(Reject.OK);
    expect(parseIPv4(good.subarray(0, 40), 0, 60, meta)).toBe(Reject.BAD_TOTAL_LENGTH);
    expect(parseIPv4(good, -1, 60, meta)).toBe(Reject.TRUNCATED);
  });
});

describe('parseIPv4 properties', () => {
  const meta = new PacketMeta();

  it('build -> parse round trip at any offset with trailing padding', () => {
    fc.assert(
      fc.property(arbSpec, fc.nat(40), fc.nat(30), (spec: PacketSpec, lead, pad) => {
        const p = buildPacket(spec);
        const buf = new Uint8Array(lead + p.length + pad).fill(0xa5);
        buf.set(p, lead);
        expect(parseIPv4(buf, lead, p.length + pad, meta)).toBe(Reject.OK);
        const l4h = spec.proto === 6 ? 20 + ((((spec.tcpOptions?.length ?? 0) + 3) >> 2) << 2) : 8;
        expect(fieldsOf(meta)).toEqual({
          srcIp: spec.srcIp, dstIp: spec.dstIp, srcPort: spec.srcPort, dstPort: spec.dstPort, proto: spec.proto,
          tcpFlags: spec.proto === 6 ? (spec.tcpFlags ?? 0x10) : 0, ipOffset: lead, ipHeaderLength: 20, totalLength: p.length,
          l4Offset: lead + 20, l4HeaderLength: l4h, payloadOffset: lead + 20 + l4h, payloadLength: spec.payload?.length ?? 0, ttl: spec.ttl ?? 64,
        });
        expect(buf.subarray(meta.payloadOffset, meta.payloadOffset + meta.payloadLength)).toEqual(spec.payload ?? new Uint8Array(0));
      }),
      { seed: 0x5eed01, numRuns: 400 },
    );
  });

  it('random mutations and truncations never throw and return a known code', () => {
    fc.assert(
      fc.property(
        arbSpec,
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
        fc.nat(),
        fc.integer({ min: -5, max: 5 }),
        fc.boolean(),
        (spec: PacketSpec, edits, cut, lenSkew, verify) => {
          const buf = buildPacket(spec).slice();
          for (const [o, v] of edits) buf[o % buf.length] = v;
          const n = cut % (buf.length + 1);
          const code = parseIPv4(buf.subarray(0, n), 0, n + lenSkew, meta, verify);
          expect(Number.isInteger(code) && code >= Reject.OK && code <= Reject.BAD_L4_CHECKSUM).toBe(true);
        },
      ),
      { seed: 0x5eed02, numRuns: 2000 },
    );
  });

  it('truncating a valid packet by any amount is rejected', () => {
    fc.assert(
      fc.property(arbSpec, fc.nat(), (spec: PacketSpec, cut) => {
        const p = buildPacket(spec);
        const n = cut % p.length; // strictly shorter
        expect(parseIPv4(p.subarray(0, n), 0, n, meta)).not.toBe(Reject.OK);
      }),
      { seed: 0x5eed03, numRuns: 500 },
    );
  });

  // The Internet checksum detects every change confined to one byte, so any
  // single-byte corruption of checksummed bytes must be rejected — except
  // zeroing a UDP checksum, which legitimately means "no checksum".
  it('any single-byte corruption is rejected (checksum verification on)', () => {
    fc.assert(
      fc.property(arbSpec, fc.nat(), fc.integer({ min: 1, max: 255 }), (spec: PacketSpec, pos, delta) => {
        const buf = buildPacket(spec).slice();
        const i = pos % buf.length;
        buf[i] = (buf[i]! + delta) & 0xff;
        const code = parseIPv4(buf, 0, buf.length, meta);
        const udpCkZeroed = spec.proto === 17 && (i === 26 || i === 27) && buf[26] === 0 && buf[27] === 0;
        const uncovered = spec.proto === 17 && spec.udpChecksum === false && i >= 20; // no L4 checksum at all
        if (uncovered) return;
        if (udpCkZeroed) expect(code).toBe(Reject.OK);
        else expect(code).not.toBe(Reject.OK);
      }),
      { seed: 0x5eed04, numRuns: 3000 },
    );
  });
});
