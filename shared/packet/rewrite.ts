/**
 * In-place NAT-style rewrites for the per-packet path: no allocation, no
 * exceptions. Checksums are patched incrementally (RFC 1624 eqn. 3) rather
 * than recomputed, so the cost does not depend on the payload length.
 *
 * Precondition: `meta` is the result of a successful parseIPv4 of this very
 * buffer (its ipOffset/l4Offset/proto are trusted, not re-checked). The old
 * address/port are read from the buffer, not from meta.
 */
import type { PacketMeta } from './meta.js';
import { fold16 } from './checksum.js';

const SRC = 12; // IPv4 header offset of the source address (dst = 16)

function rewrite(buf: Uint8Array, meta: PacketMeta, addrOff: number, portOff: number, newIp: number, newPort: number): void {
  const ip = meta.ipOffset;
  const a = ip + addrOff;
  const oldHi = (buf[a]! << 8) | buf[a + 1]!;
  const oldLo = (buf[a + 2]! << 8) | buf[a + 3]!;
  const newHi = (newIp >>> 16) & 0xffff;
  const newLo = newIp & 0xffff;

  // IPv4 header checksum covers the address only.
  const ipcs = (buf[ip + 10]! << 8) | buf[ip + 11]!;
  const s = (~ipcs & 0xffff) + (~oldHi & 0xffff) + (~oldLo & 0xffff) + newHi + newLo;
  const nipcs = ~fold16(s) & 0xffff;
  buf[ip + 10] = nipcs >>> 8;
  buf[ip + 11] = nipcs;
  buf[a] = newHi >>> 8;
  buf[a + 1] = newHi;
  buf[a + 2] = newLo >>> 8;
  buf[a + 3] = newLo;

  const proto = meta.proto;
  const isTcp = proto === 6;
  if (!isTcp && proto !== 17) return; // no ports to rewrite

  const l4 = meta.l4Offset;
  const p = l4 + portOff;
  const oldPort = (buf[p]! << 8) | buf[p + 1]!;
  const np = newPort & 0xffff;
  buf[p] = np >>> 8;
  buf[p + 1] = np;

  // TCP/UDP checksum covers the address (pseudo-header) and the port.
  const c = isTcp ? l4 + 16 : l4 + 6;
  const cs = (buf[c]! << 8) | buf[c + 1]!;
  if (!isTcp && cs === 0) return; // UDP without checksum stays without
  const t = (~cs & 0xffff) + (~oldHi & 0xffff) + (~oldLo & 0xffff) + newHi + newLo + (~oldPort & 0xffff) + np;
  let ncs = ~fold16(t) & 0xffff;
  if (!isTcp && ncs === 0) ncs = 0xffff; // RFC 768: a computed 0 is sent as all ones
  buf[c] = ncs >>> 8;
  buf[c + 1] = ncs;
}

/** Rewrites the destination address and port in place; updates meta.dstIp/dstPort. */
export function rewriteDst(buf: Uint8Array, meta: PacketMeta, newIp: number, newPort: number): void {
  rewrite(buf, meta, SRC + 4, 2, newIp, newPort);
  meta.dstIp = newIp >>> 0;
  meta.dstPort = newPort & 0xffff;
}

/** Rewrites the source address and port in place; updates meta.srcIp/srcPort. */
export function rewriteSrc(buf: Uint8Array, meta: PacketMeta, newIp: number, newPort: number): void {
  rewrite(buf, meta, SRC, 0, newIp, newPort);
  meta.srcIp = newIp >>> 0;
  meta.srcPort = newPort & 0xffff;
}

/**
 * Decrements the IPv4 TTL in place (patching the header checksum) and
 * updates meta.ttl. Returns false, leaving the packet untouched, if the TTL
 * is already 0 or 1 (the packet must not be forwarded).
 */
export function decrementTtl(buf: Uint8Array, meta: PacketMeta): boolean {
  const ip = meta.ipOffset;
  const ttl = buf[ip + 8]!;
  if (ttl <= 1) return false;
  const proto = buf[ip + 9]!;
  const cs = (buf[ip + 10]! << 8) | buf[ip + 11]!;
  const s = (~cs & 0xffff) + (~((ttl << 8) | proto) & 0xffff) + (((ttl - 1) << 8) | proto);
  const ncs = ~fold16(s) & 0xffff;
  buf[ip + 8] = ttl - 1;
  buf[ip + 10] = ncs >>> 8;
  buf[ip + 11] = ncs;
  meta.ttl = ttl - 1;
  return true;
}
