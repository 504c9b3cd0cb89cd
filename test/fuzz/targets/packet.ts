/**
 * parseIPv4 (shared/packet/parse.ts): never throws, returns a Reject code
 * (0 = accepted) whose REJECT_NAMES entry is the drop counter's label, and
 * writes every field of the meta. An accepted packet is what the header
 * claims (checked against independent oracles: the naive checksums of
 * test/fixtures) and rebuilds byte for byte from its parsed fields.
 */
import fc from 'fast-check';
import { parseIPv4 } from '../../../shared/packet/parse.js';
import { PacketMeta } from '../../../shared/packet/meta.js';
import { Reject, REJECT_NAMES } from '../../../shared/packet/reject.js';
import { buildPacket } from '../../../shared/packet/build.js';
import { ensure, hex, noThrow, Tally, type FuzzTarget } from '../check.js';
import { fuzzBytes } from '../mutate.js';
import { arbPacket, fixIpv4, ipv4Fields, ipHeaderChecksumOk, l4ChecksumOk } from '../frames.js';

const FIELDS = ['srcIp', 'dstIp', 'srcPort', 'dstPort', 'proto', 'tcpFlags', 'ipOffset', 'ipHeaderLength', 'totalLength', 'l4Offset', 'l4HeaderLength', 'payloadOffset', 'payloadLength', 'ttl'] as const;
/** The codes parseIPv4 returns (the encapsulation's are decodeEncap's). */
const PARSE_CODES: ReadonlySet<number> = new Set(Object.values(Reject).filter((c) => c !== Reject.BAD_ENCAP && c !== Reject.BAD_ENCAP_VERSION));

export interface PacketInput {
  bytes: Uint8Array;
  /** Bytes in front of the packet (the parser is given an offset). */
  pre: number;
  /** Garbage after it (padding the parser must ignore). */
  post: Uint8Array;
  /** len argument: the rest of the buffer, a random value, or past the buffer's end. */
  len: { k: 'rest' } | { k: 'value'; v: number } | { k: 'beyond'; v: number };
  /** A negative or out-of-range offset instead of `pre`. */
  badOff: number | null;
  verify: boolean;
}

const arbInput: fc.Arbitrary<PacketInput> = fc.record({
  bytes: fuzzBytes(arbPacket, { fields: (b) => ipv4Fields(b), fix: fixIpv4 }),
  pre: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 7 }) }),
  post: fc.oneof({ weight: 3, arbitrary: fc.constant(new Uint8Array(0)) }, { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  len: fc.oneof(
    { weight: 6, arbitrary: fc.constant({ k: 'rest' as const }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('value' as const), v: fc.integer({ min: -4, max: 1600 }) }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('beyond' as const), v: fc.integer({ min: 1, max: 1 << 20 }) }) },
  ),
  badOff: fc.oneof({ weight: 12, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.oneof(fc.integer({ min: -8, max: -1 }), fc.integer({ min: 0, max: 2000 })) }),
  verify: fc.boolean(),
});

const tally = new Tally();
const meta = new PacketMeta();

function dirty(m: PacketMeta): void {
  for (const f of FIELDS) m[f] = Number.NaN; // no value a parse can write
}

export const packetTarget: FuzzTarget<PacketInput> = {
  name: 'packet/parseIPv4',
  covers: 'shared/packet/parse.ts parseIPv4 (IPv4 + TCP/UDP)',
  arbitrary: arbInput,
  tally,
  mustReach: REJECT_NAMES.filter((n) => n !== 'bad_encap' && n !== 'bad_encap_version'),
  check(input) {
    const buf = new Uint8Array(input.pre + input.bytes.length + input.post.length);
    buf.set(input.bytes, input.pre);
    buf.set(input.post, input.pre + input.bytes.length);
    const off = input.badOff ?? input.pre;
    const len = input.len.k === 'rest' ? buf.length - off : input.len.k === 'value' ? input.len.v : buf.length - off + input.len.v;
    dirty(meta);
    const code = noThrow('parseIPv4', () => parseIPv4(buf, off, len, meta, input.verify));
    ensure(PARSE_CODES.has(code), `parseIPv4 returned ${code}, not a parse Reject code`);
    tally.add(REJECT_NAMES[code]!);
    for (const f of FIELDS) ensure(Number.isInteger(meta[f]), `meta.${f} = ${meta[f]} after ${REJECT_NAMES[code]} (every field is written)`);
    ensure(meta.ipOffset === off, `ipOffset ${meta.ipOffset} != off ${off}`);
    if (!input.verify) ensure(code !== Reject.BAD_L4_CHECKSUM, 'BAD_L4_CHECKSUM without verifyL4Checksum');
    if (code !== Reject.OK) return;
    checkAccepted(buf, off, Math.min(len, buf.length - off), input.verify);
  },
};

/** Everything an accepted packet claims, checked from the bytes. */
function checkAccepted(buf: Uint8Array, off: number, len: number, verify: boolean): void {
  const m = meta;
  const ihl = (buf[off]! & 0x0f) * 4;
  const total = (buf[off + 2]! << 8) | buf[off + 3]!;
  const what = (): string => `accepted packet ${hex(buf.subarray(off, off + Math.min(len, 80)))}`;
  ensure(buf[off]! >>> 4 === 4 && ihl >= 20 && m.ipHeaderLength === ihl, () => `${what()}: version/IHL`);
  ensure(m.totalLength === total && total >= ihl && total <= len && off + total <= buf.length, () => `${what()}: total length ${total} vs len ${len}`);
  ensure(ipHeaderChecksumOk(buf, off, ihl), () => `${what()}: IP header checksum is wrong (oracle)`);
  ensure((((buf[off + 6]! << 8) | buf[off + 7]!) & 0x3fff) === 0, () => `${what()}: a fragment`);
  ensure(m.proto === 6 || m.proto === 17, () => `${what()}: proto ${m.proto}`);
  ensure(m.l4Offset === off + ihl, () => `${what()}: l4Offset`);
  const l4Len = total - ihl;
  if (m.proto === 6) {
    const doff = (buf[off + ihl + 12]! >>> 4) * 4;
    ensure(l4Len >= 20 && doff >= 20 && doff <= l4Len && m.l4HeaderLength === doff, () => `${what()}: TCP data offset ${doff}`);
    ensure(m.tcpFlags === buf[off + ihl + 13], () => `${what()}: tcpFlags`);
  } else {
    ensure(m.l4HeaderLength === 8 && ((buf[off + ihl + 4]! << 8) | buf[off + ihl + 5]!) === l4Len, () => `${what()}: UDP length`);
    ensure(m.tcpFlags === 0, () => `${what()}: tcpFlags set on UDP`);
  }
  ensure(m.payloadOffset === m.l4Offset + m.l4HeaderLength && m.payloadOffset + m.payloadLength === off + total && m.payloadLength >= 0, () => `${what()}: payload range`);
  if (verify) ensure(l4ChecksumOk(buf, off, ihl, total, m.proto), () => `${what()}: L4 checksum is wrong (oracle)`);

  // Round trip: the packet alone, at offset 0, parses to the same fields, offsets shifted.
  const alone = buf.slice(off, off + total);
  const again = new PacketMeta();
  ensure(parseIPv4(alone, 0, alone.length, again, verify) === Reject.OK, () => `${what()}: refused once copied out alone`);
  for (const f of FIELDS) {
    const shift = f === 'ipOffset' || f === 'l4Offset' || f === 'payloadOffset' ? off : 0;
    ensure(again[f] + shift === m[f], () => `${what()}: ${f} ${again[f]} alone vs ${m[f]} at offset ${off}`);
  }

  // Rebuilt from its fields by buildPacket (when the header is in buildPacket's form: IHL 5, TOS 0, DF, offset 0):
  // the same bytes, checksums included (the L4 checksum only when it was verified; 0 and 0xffff both mean zero).
  if (ihl !== 20 || buf[off + 1] !== 0 || ((buf[off + 6]! << 8) | buf[off + 7]!) !== 0x4000) return;
  const l4 = off + 20;
  const isTcp = m.proto === 6;
  const u16 = (o: number): number => (buf[o]! << 8) | buf[o + 1]!;
  const u32 = (o: number): number => ((buf[o]! << 24) | (buf[o + 1]! << 16) | (buf[o + 2]! << 8) | buf[o + 3]!) >>> 0;
  const csAt = isTcp ? 16 : 6;
  const udpNone = !isTcp && u16(l4 + 6) === 0;
  const rebuilt = buildPacket({
    srcIp: m.srcIp,
    dstIp: m.dstIp,
    srcPort: m.srcPort,
    dstPort: m.dstPort,
    proto: m.proto,
    ttl: m.ttl,
    id: u16(off + 4),
    payload: buf.slice(m.payloadOffset, m.payloadOffset + m.payloadLength),
    ...(isTcp
      ? { tcpFlags: m.tcpFlags, seq: u32(l4 + 4), ack: u32(l4 + 8), window: u16(l4 + 14), tcpOptions: buf.slice(l4 + 20, l4 + m.l4HeaderLength) }
      : { udpChecksum: !udpNone }),
  });
  ensure(rebuilt.length === total, () => `${what()}: rebuilt as ${rebuilt.length} bytes`);
  const zeroAlike = (a: number, b: number): boolean => a === b || ((a | b) === 0xffff && (a & b) === 0);
  const ipA = u16(off + 10);
  const ipB = (rebuilt[10]! << 8) | rebuilt[11]!;
  ensure(zeroAlike(ipA, ipB), () => `${what()}: IP header checksum 0x${ipA.toString(16)} rebuilt as 0x${ipB.toString(16)}`);
  for (let i = 0; i < total; i++) {
    if (i === 10 || i === 11 || i === 20 + csAt || i === 20 + csAt + 1) continue;
    if (isTcp && (i === 38 || i === 39)) continue; // the urgent pointer: no field of PacketSpec (buildPacket writes 0)
    if (isTcp && i === 20 + 12) {
      // The data offset byte's low nibble (reserved bits) is not a field buildPacket writes.
      ensure(rebuilt[i]! >>> 4 === buf[off + i]! >>> 4, () => `${what()}: rebuilt data offset differs`);
      continue;
    }
    ensure(rebuilt[i] === buf[off + i], () => `${what()}: rebuilt byte ${i} is ${rebuilt[i]}, was ${buf[off + i]}`);
  }
  if (verify && !udpNone && !(isTcp && ((buf[l4 + 12]! & 0x0f) !== 0 || u16(l4 + 18) !== 0))) {
    const a = u16(l4 + csAt);
    const b = (rebuilt[20 + csAt]! << 8) | rebuilt[20 + csAt + 1]!;
    ensure(zeroAlike(a, b), () => `${what()}: verified L4 checksum 0x${a.toString(16)} rebuilt as 0x${b.toString(16)}`);
  }
}
