/**
 * Internet checksum (RFC 1071) and incremental update (RFC 1624).
 * Hot-path safe: no allocation, no exceptions, integer arithmetic only.
 *
 * Conventions:
 * - A "sum" is the ones'-complement sum of big-endian 16-bit words.
 *   `onesSum` returns it FOLDED to 16 bits (0..0xffff, end-around carry
 *   applied) but NOT complemented, so it can be chained through `initial`.
 * - A "checksum" is the value stored in a header: `~sum & 0xffff`
 *   (`foldChecksum`).
 */

/** Folds any non-negative integer < 2^53 to 16 bits with end-around carry. */
export function fold16(sum: number): number {
  // Bitwise ops see only the low 32 bits, so fold big sums with exact division first.
  while (sum > 0xffffffff) sum = (sum & 0xffff) + (sum - (sum & 0xffff)) / 65536;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/**
 * Ones'-complement sum of `len` bytes of `buf` from `off` as big-endian
 * 16-bit words (an odd trailing byte is padded with zero), plus `initial`
 * (any non-negative integer, e.g. a previous onesSum). Returns the sum folded
 * to 16 bits, not complemented. Only bytes inside `buf` are read.
 */
export function onesSum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  let end = off + len;
  if (end > buf.length) end = buf.length;
  let sum = initial;
  let i = off;
  // Two words per step; the running sum stays < 2^31 for any buffer < 32 KiB
  // between folds, so fold every 16 Ki words to stay in small-integer range.
  while (i + 1 < end) {
    let chunkEnd = i + 32768;
    if (chunkEnd > end - 1) chunkEnd = end - 1;
    let s = 0;
    for (; i < chunkEnd; i += 2) s += (buf[i]! << 8) | buf[i + 1]!;
    sum = fold16(sum + s);
  }
  if (i < end) sum += buf[i]! << 8;
  return fold16(sum);
}

/** Folds carries and returns the 16-bit checksum to store: ~fold(sum) & 0xffff. */
export function foldChecksum(sum: number): number {
  return ~fold16(sum) & 0xffff;
}

/**
 * IPv4 header checksum as it must be stored at ipOff+10, computed with the
 * checksum field treated as zero. `headerLen` in bytes (IHL*4).
 */
export function ipv4HeaderChecksum(buf: Uint8Array, ipOff: number, headerLen: number): number {
  const s = onesSum(buf, ipOff, 10, 0);
  return foldChecksum(onesSum(buf, ipOff + 12, headerLen - 12, s));
}

/**
 * Sum of the TCP/UDP pseudo-header (src, dst, zero|proto, L4 length) for the
 * IPv4 packet at ipOff. Folded, not complemented.
 */
export function pseudoHeaderSum(buf: Uint8Array, ipOff: number, proto: number, l4Len: number): number {
  const s =
    ((buf[ipOff + 12]! << 8) | buf[ipOff + 13]!) +
    ((buf[ipOff + 14]! << 8) | buf[ipOff + 15]!) +
    ((buf[ipOff + 16]! << 8) | buf[ipOff + 17]!) +
    ((buf[ipOff + 18]! << 8) | buf[ipOff + 19]!) +
    proto +
    l4Len;
  return fold16(s);
}

/**
 * TCP or UDP checksum (pseudo-header included) as it must be stored, for the
 * IPv4 packet at ipOff, computed with the L4 checksum field treated as zero.
 * Takes IHL, total length and protocol from the IPv4 header. For UDP a
 * computed 0 is returned as 0xffff (RFC 768: 0 means "no checksum").
 * Returns -1 (never throws) if the protocol is not TCP/UDP or the header
 * lengths do not fit the buffer; parseIPv4 rules those out before calling.
 */
export function l4Checksum(buf: Uint8Array, ipOff: number): number {
  if (ipOff < 0 || ipOff + 20 > buf.length) return -1;
  const ihl = (buf[ipOff]! & 0x0f) << 2;
  const total = (buf[ipOff + 2]! << 8) | buf[ipOff + 3]!;
  const proto = buf[ipOff + 9]!;
  const l4Len = total - ihl;
  const l4Off = ipOff + ihl;
  let csOff: number;
  if (proto === 6) csOff = 16;
  else if (proto === 17) csOff = 6;
  else return -1;
  if (ihl < 20 || l4Len < csOff + 2 || ipOff + total > buf.length) return -1;
  let s = pseudoHeaderSum(buf, ipOff, proto, l4Len);
  s = onesSum(buf, l4Off, csOff, s);
  s = onesSum(buf, l4Off + csOff + 2, l4Len - csOff - 2, s);
  const c = foldChecksum(s);
  return proto === 17 && c === 0 ? 0xffff : c;
}

/**
 * RFC 1624 eqn. 3: the checksum after one 16-bit word of the covered data
 * changed from oldWord to newWord. HC' = ~(~HC + ~m + m').
 */
export function csumReplace16(csum: number, oldWord: number, newWord: number): number {
  const s = (~csum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff);
  return ~fold16(s) & 0xffff;
}

/** As csumReplace16, for a 32-bit value (two words, e.g. an IPv4 address). */
export function csumReplace32(csum: number, oldVal: number, newVal: number): number {
  const s =
    (~csum & 0xffff) +
    (~(oldVal >>> 16) & 0xffff) +
    (~oldVal & 0xffff) +
    ((newVal >>> 16) & 0xffff) +
    (newVal & 0xffff);
  return ~fold16(s) & 0xffff;
}
