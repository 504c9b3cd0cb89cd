/**
 * Copy bytes between buffers without allocating a subarray view.
 * Small copies (the common SYN/ACK sizes) are a plain loop; larger ones use
 * Buffer.prototype.copy, which takes offsets and allocates nothing.
 */
const bufCopy = Buffer.prototype.copy;

export function copyBytes(src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number, len: number): void {
  if (len <= 64) {
    for (let i = 0; i < len; i++) dst[dstOff + i] = src[srcOff + i]!;
  } else {
    bufCopy.call(src, dst, dstOff, srcOff, srcOff + len);
  }
}
