import { xxh32 } from '../../shared/hash/xxh32.js';

/** xxh32 of a lookup table's bytes in a fixed (little-endian) order, independent of the host. */
export function tableDigest(t: Uint16Array): number {
  const b = new Uint8Array(t.length * 2);
  for (let i = 0; i < t.length; i++) {
    b[2 * i] = t[i]! & 0xff;
    b[2 * i + 1] = t[i]! >>> 8;
  }
  return xxh32(b, 0, b.length, 0);
}
