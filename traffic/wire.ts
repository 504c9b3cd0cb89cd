/**
 * What the traffic generator puts on the wire: the payload header every data
 * packet starts with, and an allocation-free writer for the client's
 * IPv4 + TCP/UDP packets. Layout documented in docs/traffic.md.
 *
 *   0..3   magic 'BTN1'
 *   4..7   flow id         uint32 BE
 *   8..11  sequence number uint32 BE (0-based, per flow)
 *   12..19 send timestamp  float64 BE, ms on the generator's Scheduler clock
 *   20..   padding: byte at payload index i is (seq + i) & 0xff
 */
import { ipv4HeaderChecksum, l4Checksum } from '../shared/packet/checksum.js';
import { IPPROTO_TCP } from '../shared/packet/meta.js';

export const PAYLOAD_MAGIC = 0x42544e31; // 'BTN1'
export const PAYLOAD_HEADER_LEN = 20;
export const IPV4_HEADER_LEN = 20;
export const TCP_HEADER_LEN = 20;
export const UDP_HEADER_LEN = 8;
export const CLIENT_TTL = 64;

// One scratch area to read/write float64s at any alignment without a DataView per buffer.
const f64 = new Float64Array(1);
const f64b = new Uint8Array(f64.buffer);
// Float64Array uses the platform's byte order; the wire is big-endian.
const LITTLE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function writeF64BE(buf: Uint8Array, off: number, v: number): void {
  f64[0] = v;
  if (LITTLE) for (let i = 0; i < 8; i++) buf[off + i] = f64b[7 - i]!;
  else for (let i = 0; i < 8; i++) buf[off + i] = f64b[i]!;
}

export function readF64BE(buf: Uint8Array, off: number): number {
  if (LITTLE) for (let i = 0; i < 8; i++) f64b[7 - i] = buf[off + i]!;
  else for (let i = 0; i < 8; i++) f64b[i] = buf[off + i]!;
  return f64[0]!;
}

/** Largest latency latencyUs reports (2^30 us, about 18 minutes): keeps the result a small integer. */
export const MAX_LATENCY_US = 0x3fffffff;

/**
 * Latency in whole microseconds of the float64 BE send stamp at `off`, as seen
 * at `nowMs`; clamped to 0..MAX_LATENCY_US (NaN -> 0). Returns a small
 * integer on purpose: a fresh double returned from a call that V8 does not
 * inline is boxed (a heap allocation per packet); an integer is not.
 */
export function latencyUs(buf: Uint8Array, off: number, nowMs: number): number {
  if (LITTLE) for (let i = 0; i < 8; i++) f64b[7 - i] = buf[off + i]!;
  else for (let i = 0; i < 8; i++) f64b[i] = buf[off + i]!;
  const us = Math.round((nowMs - f64[0]!) * 1000);
  return us > 0 ? (us < MAX_LATENCY_US ? us : MAX_LATENCY_US) : 0;
}

export function readU32BE(buf: Uint8Array, off: number): number {
  return ((buf[off]! << 24) | (buf[off + 1]! << 16) | (buf[off + 2]! << 8) | buf[off + 3]!) >>> 0;
}

export function writeU32BE(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 24;
  buf[off + 1] = v >>> 16;
  buf[off + 2] = v >>> 8;
  buf[off + 3] = v;
}

/** Writes a whole data payload (header + padding) of `size` >= PAYLOAD_HEADER_LEN bytes at `off`. */
export function writeDataPayload(buf: Uint8Array, off: number, size: number, flowId: number, seq: number, sentAtMs: number): void {
  writeU32BE(buf, off, PAYLOAD_MAGIC);
  writeU32BE(buf, off + 4, flowId);
  writeU32BE(buf, off + 8, seq);
  writeF64BE(buf, off + 12, sentAtMs);
  for (let i = PAYLOAD_HEADER_LEN; i < size; i++) buf[off + i] = (seq + i) & 0xff;
}

/** True when buf[off, off+len) starts with the magic (and is long enough for the header). */
export function hasPayloadHeader(buf: Uint8Array, off: number, len: number): boolean {
  return len >= PAYLOAD_HEADER_LEN && readU32BE(buf, off) === PAYLOAD_MAGIC;
}

/** Checks the padding pattern of an echoed payload (header already read). */
export function paddingIntact(buf: Uint8Array, off: number, len: number, seq: number): boolean {
  for (let i = PAYLOAD_HEADER_LEN; i < len; i++) if (buf[off + i] !== ((seq + i) & 0xff)) return false;
  return true;
}

/** Where the payload of a client packet written at `ipOff` starts. */
export function payloadOffset(ipOff: number, proto: number): number {
  return ipOff + IPV4_HEADER_LEN + (proto === IPPROTO_TCP ? TCP_HEADER_LEN : UDP_HEADER_LEN);
}

/**
 * Writes the IPv4 (IHL 5, DF) and TCP (no options) / UDP headers of a client
 * packet at `ipOff`, whose `payloadLen` payload bytes the caller has ALREADY
 * written at payloadOffset(ipOff, proto), then both checksums. Returns the
 * IPv4 total length. No validation: the generator checked its options once.
 */
export function writeClientPacket(
  buf: Uint8Array,
  ipOff: number,
  proto: number,
  srcIp: number,
  dstIp: number,
  srcPort: number,
  dstPort: number,
  tcpFlags: number,
  seq: number,
  ack: number,
  payloadLen: number,
  ipId: number,
): number {
  const isTcp = proto === IPPROTO_TCP;
  const l4h = isTcp ? TCP_HEADER_LEN : UDP_HEADER_LEN;
  const total = IPV4_HEADER_LEN + l4h + payloadLen;
  const p = ipOff;
  buf[p] = 0x45;
  buf[p + 1] = 0;
  buf[p + 2] = total >>> 8;
  buf[p + 3] = total;
  buf[p + 4] = ipId >>> 8;
  buf[p + 5] = ipId;
  buf[p + 6] = 0x40; // DF
  buf[p + 7] = 0;
  buf[p + 8] = CLIENT_TTL;
  buf[p + 9] = proto;
  buf[p + 10] = 0;
  buf[p + 11] = 0;
  writeU32BE(buf, p + 12, srcIp);
  writeU32BE(buf, p + 16, dstIp);
  const l4 = p + IPV4_HEADER_LEN;
  buf[l4] = srcPort >>> 8;
  buf[l4 + 1] = srcPort;
  buf[l4 + 2] = dstPort >>> 8;
  buf[l4 + 3] = dstPort;
  if (isTcp) {
    writeU32BE(buf, l4 + 4, seq);
    writeU32BE(buf, l4 + 8, ack);
    buf[l4 + 12] = 5 << 4;
    buf[l4 + 13] = tcpFlags;
    buf[l4 + 14] = 0xff; // window 65535
    buf[l4 + 15] = 0xff;
    buf[l4 + 16] = 0;
    buf[l4 + 17] = 0;
    buf[l4 + 18] = 0;
    buf[l4 + 19] = 0;
  } else {
    const ul = UDP_HEADER_LEN + payloadLen;
    buf[l4 + 4] = ul >>> 8;
    buf[l4 + 5] = ul;
    buf[l4 + 6] = 0;
    buf[l4 + 7] = 0;
  }
  const ipcs = ipv4HeaderChecksum(buf, p, IPV4_HEADER_LEN);
  buf[p + 10] = ipcs >>> 8;
  buf[p + 11] = ipcs;
  const cs = l4Checksum(buf, p);
  const csOff = isTcp ? l4 + 16 : l4 + 6;
  buf[csOff] = cs >>> 8;
  buf[csOff + 1] = cs;
  return total;
}
