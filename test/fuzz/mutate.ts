/**
 * Byte mutations of valid frames, as fast-check arbitraries: a fuzzer that
 * only draws random bytes rarely gets past a decoder's first check (a magic,
 * a version, a checksum), so most inputs here start from a valid frame of
 * the format and change it a little — bit flips, byte writes, truncation,
 * appended / deleted / duplicated ranges, and length fields set to extremes
 * (0, 1, the field's maximum, one off the real value, the buffer's length).
 * A format's `fix` (recompute a checksum) is applied to some of the mutants,
 * so the checks behind the checksum are reached too.
 *
 * Everything is a plain value drawn by fast-check (offsets are naturals
 * taken modulo the current length), so a failing input shrinks and replays
 * from its seed and path.
 */
import fc from 'fast-check';

/** A length (or count) field of a frame: `width` bytes at `at`, big-endian unless `le`; `mask`/`shift` for a field of a few bits. */
export interface LengthField {
  at: number;
  width: 1 | 2 | 4;
  le?: boolean;
  /** Bits of the field within the (width-byte) word, before `shift` (a nibble: width 1, mask 0xf0, shift 4). */
  mask?: number;
  shift?: number;
}

/** The length fields of a frame (as it is now: called on the mutated bytes, so it must not throw on garbage). */
export type FieldsOf = (b: Uint8Array) => readonly LengthField[];

export type Extreme = 'zero' | 'one' | 'max' | 'minus1' | 'plus1' | 'len' | 'lenMinus1' | 'lenPlus1' | 'half' | 'random';
const EXTREMES: readonly Extreme[] = ['zero', 'one', 'max', 'minus1', 'plus1', 'len', 'lenMinus1', 'lenPlus1', 'half', 'random'];

export type Op =
  | { k: 'flip'; i: number; bit: number }
  | { k: 'byte'; i: number; v: number }
  | { k: 'truncate'; n: number }
  | { k: 'append'; bytes: Uint8Array }
  | { k: 'delete'; i: number; n: number }
  | { k: 'dup'; i: number; n: number; at: number }
  | { k: 'overwrite'; i: number; bytes: Uint8Array }
  | { k: 'field'; f: number; v: Extreme; r: number };

const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x40, 0x3f, 0x20];

export const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ k: fc.constant('flip' as const), i: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('byte' as const), i: fc.nat(), v: fc.oneof(fc.constantFrom(...INTERESTING_BYTES), fc.integer({ min: 0, max: 255 })) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('truncate' as const), n: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('append' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 24 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('delete' as const), i: fc.nat(), n: fc.integer({ min: 1, max: 16 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('dup' as const), i: fc.nat(), n: fc.integer({ min: 1, max: 64 }), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('overwrite' as const), i: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('field' as const), f: fc.nat(), v: fc.constantFrom(...EXTREMES), r: fc.nat() }) },
);

function wordOf(b: Uint8Array, f: LengthField): number {
  let v = 0;
  for (let j = 0; j < f.width; j++) v = v * 256 + (b[f.le ? f.at + f.width - 1 - j : f.at + j] ?? 0);
  return v;
}

/** The field's largest value (its bits are contiguous, starting at `shift`). */
function fieldMax(f: LengthField): number {
  return Math.floor((f.mask ?? 2 ** (8 * f.width) - 1) / 2 ** (f.shift ?? 0));
}

function readField(b: Uint8Array, f: LengthField): number {
  return Math.floor(wordOf(b, f) / 2 ** (f.shift ?? 0)) % (fieldMax(f) + 1);
}

function writeField(b: Uint8Array, f: LengthField, value: number): void {
  if (f.at < 0 || f.at + f.width > b.length) return;
  const span = fieldMax(f) + 1;
  const unit = 2 ** (f.shift ?? 0);
  const v = ((value % span) + span) % span;
  const old = wordOf(b, f);
  let w = old - (Math.floor(old / unit) % span) * unit + v * unit;
  for (let j = f.width - 1; j >= 0; j--) {
    b[f.le ? f.at + f.width - 1 - j : f.at + j] = w % 256;
    w = Math.floor(w / 256);
  }
}

function extremeValue(b: Uint8Array, f: LengthField, e: Extreme, r: number): number {
  const max = fieldMax(f);
  const cur = readField(b, f);
  switch (e) {
    case 'zero':
      return 0;
    case 'one':
      return 1;
    case 'max':
      return max;
    case 'minus1':
      return cur - 1;
    case 'plus1':
      return cur + 1;
    case 'len':
      return b.length;
    case 'lenMinus1':
      return b.length - 1;
    case 'lenPlus1':
      return b.length + 1;
    case 'half':
      return Math.floor(max / 2) + 1;
    case 'random':
      return r;
  }
}

/** Applies `ops` to a copy of `seed`; `fields` names the length fields (of the bytes at the time of each op). */
export function applyOps(seed: Uint8Array, ops: readonly Op[], fields?: FieldsOf): Uint8Array {
  let b = Uint8Array.from(seed);
  for (const op of ops) {
    const n = b.length;
    switch (op.k) {
      case 'flip':
        if (n > 0) b[op.i % n]! ^= 1 << op.bit;
        break;
      case 'byte':
        if (n > 0) b[op.i % n] = op.v;
        break;
      case 'truncate':
        b = b.slice(0, n === 0 ? 0 : op.n % n);
        break;
      case 'append': {
        const c = new Uint8Array(n + op.bytes.length);
        c.set(b);
        c.set(op.bytes, n);
        b = c;
        break;
      }
      case 'delete': {
        if (n === 0) break;
        const i = op.i % n;
        const c = new Uint8Array(n - Math.min(op.n, n - i));
        c.set(b.subarray(0, i));
        c.set(b.subarray(i + Math.min(op.n, n - i)), i);
        b = c;
        break;
      }
      case 'dup': {
        if (n === 0) break;
        const i = op.i % n;
        const piece = b.slice(i, Math.min(n, i + op.n));
        const at = op.at % (n + 1);
        const c = new Uint8Array(n + piece.length);
        c.set(b.subarray(0, at));
        c.set(piece, at);
        c.set(b.subarray(at), at + piece.length);
        b = c;
        break;
      }
      case 'overwrite':
        if (n > 0) {
          const i = op.i % n;
          for (let j = 0; j < op.bytes.length && i + j < n; j++) b[i + j] = op.bytes[j]!;
        }
        break;
      case 'field': {
        if (!fields) {
          if (n > 0) b[op.r % n] = INTERESTING_BYTES[op.f % INTERESTING_BYTES.length]!;
          break;
        }
        const fs = fields(b);
        if (fs.length === 0) break;
        const f = fs[op.f % fs.length]!;
        writeField(b, f, extremeValue(b, f, op.v, op.r));
        break;
      }
    }
  }
  return b;
}

export interface MutationOptions {
  fields?: FieldsOf;
  /** Recomputes what a mutation breaks first (a checksum); applied to about half of the mutants. Must not throw on garbage. */
  fix?: (b: Uint8Array) => Uint8Array;
  /** Most ops per input (default 4). */
  maxOps?: number;
}

/** Mutants of `seed`'s frames (0 ops: the valid frame itself, about one input in six). */
export function mutated(seed: fc.Arbitrary<Uint8Array>, o: MutationOptions = {}): fc.Arbitrary<Uint8Array> {
  return fc.record({ s: seed, ops: fc.array(opArb, { maxLength: o.maxOps ?? 4 }), fix: fc.boolean() }).map(({ s, ops, fix }) => {
    const b = applyOps(s, ops, o.fields);
    return fix && o.fix && ops.length > 0 ? o.fix(b) : b;
  });
}

/** Random bytes (weight 1) or mutants of valid frames (weight 4): the usual input of a byte decoder. */
export function fuzzBytes(seed: fc.Arbitrary<Uint8Array>, o: MutationOptions & { maxRandom?: number } = {}): fc.Arbitrary<Uint8Array> {
  return fc.oneof({ weight: 1, arbitrary: fc.uint8Array({ maxLength: o.maxRandom ?? 96 }) }, { weight: 4, arbitrary: mutated(seed, o) });
}
