/**
 * Copy bytes between buffers without allocating a subarray view.
 * Packet-sized copies are a plain loop: Buffer.prototype.copy (offsets, no
 * allocation) costs more in call overhead than it saves below ~512 bytes
 * (profiled: docs/decisions/0006-copy-bytes-loop.md).
 */
const bufCopy = Buffer.prototype.copy;

export function copyBytes(src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number, len: number): void {
  if (len <= 512) {
    for (let i = 0; i < len; i++) dst[dstOff + i] = src[srcOff + i]!;
  } else {
    bufCopy.call(src, dst, dstOff, srcOff, srcOff + len);
  }
}
