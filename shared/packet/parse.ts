/**
 * IPv4 + TCP/UDP parser for the per-packet path: fills a reused PacketMeta,
 * returns a numeric Reject code, never throws, never allocates.
 */
import { Reject } from './reject.js';
import type { PacketMeta } from './meta.js';
import { fold16, onesSum, pseudoHeaderSum } from './checksum.js';

/**
 * Parses the IPv4 packet at buf[off .. off+len). Returns Reject.OK (0) or the
 * first failing check, in this order: TRUNCATED (len < 20), BAD_VERSION,
 * BAD_IHL (IHL < 5 or header beyond len), BAD_TOTAL_LENGTH (total < header
 * or > len; bytes after total length are padding and ignored),
 * BAD_IP_CHECKSUM, FRAGMENT (MF or offset != 0), UNSUPPORTED_PROTOCOL (not
 * TCP/UDP), BAD_L4_HEADER (TCP segment < 20 bytes, data offset < 5 or beyond
 * the segment; UDP segment < 8 bytes or UDP length != total - IHL),
 * BAD_L4_CHECKSUM (only if verifyL4Checksum; a UDP checksum of 0 means
 * "none" and is accepted).
 *
 * Every field of `out` is written on every call: on rejection the fields
 * established before the failing check are filled and the rest are 0
 * (ipOffset is always `off`). `len` is clamped to the buffer.
 */
export function parseIPv4(
  buf: Uint8Array,
  off: number,
  len: number,
  out: PacketMeta,
  verifyL4Checksum = true,
): number {
  out.srcIp = 0;
  out.dstIp = 0;
  out.srcPort = 0;
  out.dstPort = 0;
  out.proto = 0;
  out.tcpFlags = 0;
  out.ipOffset = off;
  out.ipHeaderLength = 0;
  out.totalLength = 0;
  out.l4Offset = 0;
  out.l4HeaderLength = 0;
  out.payloadOffset = 0;
  out.payloadLength = 0;
  out.ttl = 0;

  if (off < 0 || len < 20 || off + 20 > buf.length) return Reject.TRUNCATED;
  if (len > buf.length - off) len = buf.length - off;

  const b0 = buf[off]!;
  if (b0 >>> 4 !== 4) return Reject.BAD_VERSION;
  const ihl = (b0 & 0x0f) << 2;
  if (ihl < 20 || ihl > len) return Reject.BAD_IHL;
  out.ipHeaderLength = ihl;

  const total = (buf[off + 2]! << 8) | buf[off + 3]!;
  if (total < ihl || total > len) return Reject.BAD_TOTAL_LENGTH;
  out.totalLength = total;

  const proto = buf[off + 9]!;
  out.ttl = buf[off + 8]!;
  out.proto = proto;
  out.srcIp = ((buf[off + 12]! << 24) | (buf[off + 13]! << 16) | (buf[off + 14]! << 8) | buf[off + 15]!) >>> 0;
  out.dstIp = ((buf[off + 16]! << 24) | (buf[off + 17]! << 16) | (buf[off + 18]! << 8) | buf[off + 19]!) >>> 0;

  // A correct header (checksum field included) sums to 0xffff (-0).
  if (onesSum(buf, off, ihl, 0) !== 0xffff) return Reject.BAD_IP_CHECKSUM;

  // Flags/fragment offset word: MF = 0x2000, offset = low 13 bits. DF ignored.
  if ((((buf[off + 6]! << 8) | buf[off + 7]!) & 0x3fff) !== 0) return Reject.FRAGMENT;

  const l4 = off + ihl;
  const l4Len = total - ihl;
  let csOff: number;
  let l4h: number;
  if (proto === 6) {
    if (l4Len < 20) return Reject.BAD_L4_HEADER;
    l4h = (buf[l4 + 12]! >>> 4) << 2;
    if (l4h < 20 || l4h > l4Len) return Reject.BAD_L4_HEADER;
    out.tcpFlags = buf[l4 + 13]!;
    csOff = 16;
  } else if (proto === 17) {
    if (l4Len < 8 || ((buf[l4 + 4]! << 8) | buf[l4 + 5]!) !== l4Len) return Reject.BAD_L4_HEADER;
    l4h = 8;
    csOff = 6;
  } else {
    return Reject.UNSUPPORTED_PROTOCOL;
  }
  out.l4Offset = l4;
  out.srcPort = (buf[l4]! << 8) | buf[l4 + 1]!;
  out.dstPort = (buf[l4 + 2]! << 8) | buf[l4 + 3]!;
  out.l4HeaderLength = l4h;
  out.payloadOffset = l4 + l4h;
  out.payloadLength = l4Len - l4h;

  if (verifyL4Checksum && (proto === 6 || ((buf[l4 + csOff]! << 8) | buf[l4 + csOff + 1]!) !== 0)) {
    // Receiver check (RFC 1071): pseudo-header + segment incl. checksum == -0.
    const s = onesSum(buf, l4, l4Len, pseudoHeaderSum(buf, off, proto, l4Len));
    if (fold16(s) !== 0xffff) return Reject.BAD_L4_CHECKSUM;
  }
  return Reject.OK;
}
