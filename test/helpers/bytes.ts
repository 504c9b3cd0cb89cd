/**
 * A copy of `buf` with byte `index` XORed with `mask` (a negative index counts
 * from the end). Throws if there is no such byte: a typed array ignores an
 * out-of-range write, and a test that corrupts nothing would pass for the
 * wrong reason.
 */
export function flipped(buf: Uint8Array, index: number, mask: number): Uint8Array {
  const i = index < 0 ? buf.length + index : index;
  const b = buf[i];
  if (b === undefined) throw new RangeError(`no byte ${index} in a ${buf.length}-byte buffer`);
  const out = Uint8Array.from(buf);
  out[i] = b ^ mask;
  return out;
}
