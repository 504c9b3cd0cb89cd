/**
 * Valid frames of every format the fuzz targets decode (the seeds that
 * test/fuzz/mutate.ts mutates), where their length fields are, and how to
 * fix what a mutation breaks first (checksums). Generators are kept small
 * (short payloads; a long one is a cheap fill) so a million inputs take
 * seconds, not minutes.
 */
import fc from 'fast-check';
import { crc32 } from 'node:zlib';
import { buildPacket, type PacketSpec } from '../../shared/packet/build.js';
import { EncapMeta, encodeEncap, ENCAP_OPTION_CLASS, ENCAP_OPTION_TYPE, ENCAP_LOCATOR_TYPE } from '../../shared/encap/geneve.js';
import { EdgeEncap, writeEdgeHeader } from '../../shared/encap/edge.js';
import { naiveChecksum } from '../fixtures/packets.js';
import type { LengthField } from './mutate.js';

export const u8 = fc.integer({ min: 0, max: 0xff });
export const u16 = fc.integer({ min: 0, max: 0xffff });
export const u24 = fc.integer({ min: 0, max: 0xffffff });
export const u32 = fc.integer({ min: 0, max: 0xffffffff });

// ------------------------------------------------------------------ IPv4

/** A payload: a few random bytes, or (one in five) a long cheap fill. */
const payload = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 24 }) },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 0, max: 1460 }), u8).map(([n, v]) => new Uint8Array(n).fill(v)) },
);
/** TCP options: none, an MSS/SACK-permitted/window-scale set as a SYN carries, or random bytes. */
const tcpOptions = fc.oneof(
  fc.constant(undefined),
  fc.constant(Uint8Array.from([2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, 7])),
  fc.uint8Array({ maxLength: 40 }),
);

export const arbPacketSpec: fc.Arbitrary<PacketSpec> = fc.oneof(
  fc.record({ srcIp: u32, dstIp: u32, srcPort: u16, dstPort: u16, proto: fc.constant(6), tcpFlags: u8, seq: u32, ack: u32, window: u16, tcpOptions, payload, ttl: u8, id: u16 }),
  fc.record({ srcIp: u32, dstIp: u32, srcPort: u16, dstPort: u16, proto: fc.constant(17), payload, ttl: u8, id: u16, udpChecksum: fc.boolean() }),
);

/**
 * A valid packet: buildPacket's (IHL 5, DF), or one with IPv4 options
 * inserted (IHL 6..15, header checksum recomputed; the L4 checksum does not
 * cover the IP header, so it stays right).
 */
export const arbPacket: fc.Arbitrary<Uint8Array> = fc
  .tuple(arbPacketSpec, fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 10 }) }), u8)
  .map(([spec, optWords, fill]) => {
    const p = buildPacket(spec);
    return optWords === 0 ? p : withIpOptions(p, optWords, fill);
  });

function withIpOptions(p: Uint8Array, words: number, fill: number): Uint8Array {
  const extra = words * 4;
  const out = new Uint8Array(p.length + extra);
  out.set(p.subarray(0, 20));
  out.fill(fill, 20, 20 + extra);
  out.set(p.subarray(20), 20 + extra);
  out[0] = 0x40 | (5 + words);
  const total = p.length + extra;
  out[2] = total >>> 8;
  out[3] = total & 0xff;
  return fixIpv4Header(out, 0);
}

/** The IPv4 header checksum of the packet at b[off] recomputed (a no-op when the header is not within b). */
export function fixIpv4Header(b: Uint8Array, off: number): Uint8Array {
  const ihl = ((b[off] ?? 0) & 0x0f) * 4;
  if (ihl < 20 || off + ihl > b.length) return b;
  b[off + 10] = 0;
  b[off + 11] = 0;
  const c = naiveChecksum(b.subarray(off, off + ihl));
  b[off + 10] = c >>> 8;
  b[off + 11] = c & 0xff;
  return b;
}

/** The TCP/UDP checksum of the packet at b[off] recomputed, when its lengths are within b (the naive oracle of test/fixtures). */
export function fixL4(b: Uint8Array, off: number): Uint8Array {
  const ihl = ((b[off] ?? 0) & 0x0f) * 4;
  if (ihl < 20 || off + 20 > b.length) return b;
  const total = ((b[off + 2]! << 8) | b[off + 3]!) >>> 0;
  const proto = b[off + 9]!;
  const l4Len = total - ihl;
  const at = proto === 6 ? 16 : proto === 17 ? 6 : -1;
  if (at < 0 || l4Len < at + 2 || off + total > b.length) return b;
  const l4 = off + ihl;
  b[l4 + at] = 0;
  b[l4 + at + 1] = 0;
  let c = naiveChecksum(pseudoAndSegment(b, off, ihl, l4Len, proto));
  if (proto === 17 && c === 0) c = 0xffff;
  b[l4 + at] = c >>> 8;
  b[l4 + at + 1] = c & 0xff;
  return b;
}

function pseudoAndSegment(b: Uint8Array, off: number, ihl: number, l4Len: number, proto: number): Uint8Array {
  const s = new Uint8Array(12 + l4Len);
  s.set(b.subarray(off + 12, off + 20), 0);
  s[9] = proto;
  s[10] = l4Len >>> 8;
  s[11] = l4Len & 0xff;
  s.set(b.subarray(off + ihl, off + ihl + l4Len), 12);
  return s;
}

/** Oracle: the IPv4 header at b[off] (ihl bytes) has a correct checksum (naive RFC 1071 sum, independent of shared/packet/checksum.ts). */
export function ipHeaderChecksumOk(b: Uint8Array, off: number, ihl: number): boolean {
  return naiveChecksum(b.subarray(off, off + ihl)) === 0;
}

/** Oracle: the segment's checksum is correct (UDP 0 = none counts as correct). */
export function l4ChecksumOk(b: Uint8Array, off: number, ihl: number, total: number, proto: number): boolean {
  const l4Len = total - ihl;
  if (proto === 17 && b[off + ihl + 6] === 0 && b[off + ihl + 7] === 0) return true;
  return naiveChecksum(pseudoAndSegment(b, off, ihl, l4Len, proto)) === 0;
}

/** Length fields of an IPv4 packet at b[off]: IHL, total length, fragment offset, TCP data offset or UDP length. */
export function ipv4Fields(b: Uint8Array, off = 0): LengthField[] {
  const f: LengthField[] = [
    { at: off, width: 1, mask: 0x0f },
    { at: off + 2, width: 2 },
    { at: off + 6, width: 2, mask: 0x3fff },
  ];
  const ihl = ((b[off] ?? 0) & 0x0f) * 4;
  const proto = b[off + 9];
  if (ihl >= 20 && proto === 6) f.push({ at: off + ihl + 12, width: 1, mask: 0xf0, shift: 4 });
  else if (ihl >= 20 && proto === 17) f.push({ at: off + ihl + 4, width: 2 });
  return f;
}

/** Both checksums of the packet at b[0] recomputed. */
export function fixIpv4(b: Uint8Array): Uint8Array {
  return fixL4(fixIpv4Header(b, 0), 0);
}

// ---------------------------------------------------------- Baton's Geneve

export const arbEncapMeta: fc.Arbitrary<EncapMeta> = fc
  .record({
    tier: fc.integer({ min: 0, max: 15 }),
    flags: u8,
    hopCount: u8,
    senderId: u16,
    ownerHint: u16,
    scopeVersion: u32,
    vni: u24,
    locator: fc.option(fc.record({ ip: u32, port: fc.integer({ min: 1, max: 0xffff }), encap: fc.oneof(fc.integer({ min: 0, max: 2 }), u8) }), { freq: 2 }),
  })
  .map((r) => {
    const m = new EncapMeta();
    m.tier = r.tier;
    m.flags = r.flags;
    m.hopCount = r.hopCount;
    m.senderId = r.senderId;
    m.ownerHint = r.ownerHint;
    m.scopeVersion = r.scopeVersion;
    m.vni = r.vni;
    if (r.locator) {
      m.locatorIp = r.locator.ip;
      m.locatorPort = r.locator.port;
      m.locatorEncap = r.locator.encap;
    }
    return m;
  });

/** A frame as Baton writes it (encodeEncap). */
export const arbBatonFrame: fc.Arbitrary<Uint8Array> = fc.tuple(arbEncapMeta, arbPacket).map(([m, p]) => {
  const out = new Uint8Array(36 + p.length);
  const n = encodeEncap(out, 0, m, p, 0, p.length);
  return out.subarray(0, n);
});

/** One Geneve option TLV: class, type, data (a multiple of 4 bytes, at most 31 words). */
interface Tlv {
  cls: number;
  type: number;
  data: Uint8Array;
}

const foreignTlv: fc.Arbitrary<Tlv> = fc.record({
  cls: fc.oneof(u16, fc.constant(ENCAP_OPTION_CLASS)),
  type: fc.oneof(fc.integer({ min: 0, max: 0x7f }), u8),
  data: fc.integer({ min: 0, max: 4 }).chain((w) => fc.uint8Array({ minLength: w * 4, maxLength: w * 4 })),
});

const batonTlv: fc.Arbitrary<Tlv> = fc.record({
  cls: fc.constant(ENCAP_OPTION_CLASS),
  type: fc.constant(ENCAP_OPTION_TYPE),
  data: fc.tuple(fc.oneof({ weight: 5, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 15 }) }), fc.uint8Array({ minLength: 11, maxLength: 11 })).map(([ver, rest]) => {
    const d = new Uint8Array(12);
    d[0] = (ver << 4) | (rest[0]! & 0x0f);
    d.set(rest.subarray(1), 1);
    return d;
  }),
});

const locatorTlv: fc.Arbitrary<Tlv> = fc.record({
  cls: fc.constant(ENCAP_OPTION_CLASS),
  type: fc.constant(ENCAP_LOCATOR_TYPE),
  data: fc.oneof(
    { weight: 4, arbitrary: fc.uint8Array({ minLength: 7, maxLength: 7 }).map((r) => Uint8Array.from([0x14, ...r])) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 3 }).chain((w) => fc.uint8Array({ minLength: w * 4, maxLength: w * 4 })) },
  ),
});

/**
 * A Geneve frame as another sender may write it: other options before and
 * after Baton's, a locator (readable or not), the O/C bits and reserved
 * fields as given; Opt Len always covers the options (the mutations break it).
 */
export const arbForeignFrame: fc.Arbitrary<Uint8Array> = fc
  .record({
    before: fc.array(fc.oneof(foreignTlv, locatorTlv), { maxLength: 3 }),
    baton: fc.option(batonTlv, { freq: 8 }),
    after: fc.array(fc.oneof(foreignTlv, locatorTlv, batonTlv), { maxLength: 2 }),
    b1: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: u8 }),
    vni: u24,
    rsvd: fc.oneof(fc.constant(0), u8),
    inner: arbPacket,
  })
  .map((r) => {
    const tlvs = [...r.before, ...(r.baton ? [r.baton] : []), ...r.after];
    let optBytes = tlvs.reduce((n, t) => n + 4 + t.data.length, 0);
    while (optBytes > 252) optBytes -= 4 + tlvs.pop()!.data.length;
    const out = new Uint8Array(8 + optBytes + r.inner.length);
    out[0] = optBytes >>> 2;
    out[1] = r.b1;
    out[2] = 0x08;
    out[3] = 0x00;
    out[4] = r.vni >>> 16;
    out[5] = (r.vni >>> 8) & 0xff;
    out[6] = r.vni & 0xff;
    out[7] = r.rsvd;
    let p = 8;
    for (const t of tlvs) {
      out[p] = t.cls >>> 8;
      out[p + 1] = t.cls & 0xff;
      out[p + 2] = t.type;
      out[p + 3] = t.data.length >>> 2;
      out.set(t.data, p + 4);
      p += 4 + t.data.length;
    }
    out.set(r.inner, p);
    return out;
  });

export const arbEncapFrame: fc.Arbitrary<Uint8Array> = fc.oneof({ weight: 3, arbitrary: arbBatonFrame }, { weight: 2, arbitrary: arbForeignFrame });

/**
 * Length fields of the Geneve frames back to back in b, found by a naive
 * walk (independent of decodeEncap): Opt Len, every option's Length, the
 * inner IPv4 total length (and the inner packet's own fields).
 */
export function encapFields(b: Uint8Array): LengthField[] {
  const f: LengthField[] = [];
  let start = 0;
  for (let frames = 0; frames < 16 && start + 8 <= b.length; frames++) {
    f.push({ at: start, width: 1, mask: 0x3f });
    const hl = 8 + (b[start]! & 0x3f) * 4;
    for (let p = start + 8; p + 4 <= start + hl && p + 4 <= b.length; ) {
      f.push({ at: p + 3, width: 1, mask: 0x1f });
      p += 4 + (b[p + 3]! & 0x1f) * 4;
    }
    const inner = start + hl;
    if (inner + 4 > b.length) break;
    f.push(...ipv4Fields(b, inner));
    const total = (b[inner + 2]! << 8) | b[inner + 3]!;
    if (total < 20) break;
    start = inner + total;
  }
  return f;
}

// ------------------------------------------------------------------ edge

export const EDGE_KINDS = [EdgeEncap.VXLAN_GPE, EdgeEncap.GENEVE] as const;

/** An edge datagram of `kind` for `vni`: the 8-byte header, one IPv4 packet. */
export function arbEdgeFrame(kind: EdgeEncap, vni: fc.Arbitrary<number> = u24): fc.Arbitrary<Uint8Array> {
  return fc.tuple(vni, arbPacket).map(([v, p]) => {
    const out = new Uint8Array(8 + p.length);
    writeEdgeHeader(kind, out, 0, v);
    out.set(p, 8);
    return out;
  });
}

export function edgeFields(b: Uint8Array): LengthField[] {
  return [{ at: 0, width: 1, mask: 0x3f }, ...ipv4Fields(b, 8)];
}

// ----------------------------------------------------------- flow export

const MAGIC = 0x574c4642;

/** One export record: 9 little-endian words (key, meta, action with netAction 0..2 mostly, rewrite ip, counters, idle). */
const arbRecordWords: fc.Arbitrary<number[]> = fc
  .tuple(u32, u32, u32, u8, u8, u16, fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: 2 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 15 }) }), u32, u32, u32, u32, fc.oneof(fc.integer({ min: 0, max: 100_000 }), u32))
  .map(([src, dst, ports, proto, flags, owner, act, actRest, rwip, pkts, bytes, idle]) => [
    src,
    dst,
    ports,
    (proto | (flags << 8) | (owner << 16)) >>> 0,
    ((actRest & ~0xf) | act) >>> 0,
    rwip,
    pkts,
    bytes,
    idle,
  ]);

/** A chunk of `records` (each 9 words), version 1 or 2, with its checksum. */
export function buildChunk(records: readonly (readonly number[])[], version: number): Uint8Array {
  const out = new Uint8Array(20 + records.length * 36);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint16(4, version, true);
  dv.setUint16(6, 36, true);
  dv.setUint32(8, records.length, true);
  dv.setUint32(12, 0, true);
  records.forEach((r, i) => r.forEach((w, j) => dv.setUint32(20 + i * 36 + j * 4, w, true)));
  return fixChunkChecksum(out);
}

/** Checksum version 1 as docs/flow-export-format.md defines it (a second implementation). */
function checksumV1(b: Uint8Array, count: number): number {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let h = 0x811c9dc5;
  for (let off = 20; off + 4 <= 20 + count * 36 && off + 4 <= b.length; off += 4) {
    h = Math.imul(h ^ dv.getUint32(off, true), 0x9e3779b1);
    h ^= h >>> 15;
  }
  h = Math.imul(h ^ count, 0x9e3779b1);
  h ^= h >>> 15;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  return (h ^ (h >>> 13)) >>> 0;
}

/** The chunk's checksum recomputed for the version its header names (1, else CRC-32 as version 2), over the records its count names that are present. */
export function fixChunkChecksum(b: Uint8Array): Uint8Array {
  if (b.length < 20) return b;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const version = dv.getUint16(4, true);
  const count = dv.getUint32(8, true);
  const end = Math.min(b.length, 20 + count * 36);
  const ck = version === 1 ? checksumV1(b, count) : crc32(b.subarray(20, end), crc32(b.subarray(0, 16))) >>> 0;
  dv.setUint32(16, ck, true);
  return b;
}

export const arbChunk: fc.Arbitrary<Uint8Array> = fc
  .tuple(fc.array(arbRecordWords, { maxLength: 12 }), fc.oneof({ weight: 3, arbitrary: fc.constant(2) }, { weight: 1, arbitrary: fc.constant(1) }), fc.nat())
  .map(([recs, version, dup]) => {
    // Sometimes a key twice (an import overwrites: the later record wins).
    const rs = recs.length > 1 && dup % 3 === 0 ? [...recs, [...recs[dup % recs.length]!.slice(0, 4), ...recs[0]!.slice(4)]] : recs;
    return buildChunk(rs, version);
  });

export function chunkFields(): LengthField[] {
  return [
    { at: 4, width: 2, le: true },
    { at: 6, width: 2, le: true },
    { at: 8, width: 4, le: true },
    { at: 12, width: 4, le: true },
  ];
}
