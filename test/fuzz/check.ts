/**
 * What every fuzz target shares: the target's shape, the violation error,
 * "only the documented typed error escapes", outcome tallies (so a run shows
 * which rejections its inputs reached), and a deep equality for round trips
 * (Object.is on numbers, bytes by content).
 */
import type fc from 'fast-check';
import { BatonError, type ErrorCode } from '../../shared/errors.js';

/** A property of a decoder that an input broke. */
export class FuzzViolation extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'FuzzViolation';
  }
}

export function violated(message: string, cause?: unknown): never {
  throw new FuzzViolation(message, cause === undefined ? undefined : { cause });
}

export function ensure(cond: boolean, message: string | (() => string)): asserts cond {
  if (!cond) violated(typeof message === 'string' ? message : message());
}

/** Counts of each outcome (accepted, each rejection reason, each error code) over a run. */
export class Tally {
  readonly counts = new Map<string, number>();
  total = 0;
  /** Other things a run counted (e.g. the yaml library's warnings), printed after the outcomes. */
  readonly notes = new Map<string, number>();
  add(outcome: string): void {
    this.total++;
    this.counts.set(outcome, (this.counts.get(outcome) ?? 0) + 1);
  }
  reset(): void {
    this.counts.clear();
    this.notes.clear();
    this.total = 0;
  }
  /** "ok 21.0%, bad_ip_checksum 30.1%, ..." (largest first; past `max` outcomes, how many more). */
  format(max = 14): string {
    const rows = [...this.counts].sort((a, b) => b[1] - a[1]);
    const pct = (n: number): string => `${((100 * n) / Math.max(1, this.total)).toFixed(n * 1000 < this.total ? 3 : 1)}%`;
    const shown = rows.slice(0, max).map(([k, n]) => `${k} ${pct(n)}`);
    const rest = rows.slice(max);
    if (rest.length > 0) shown.push(`${rest.length} more ${pct(rest.reduce((s, r) => s + r[1], 0))}`);
    const notes = [...this.notes].map(([k, n]) => `${k}: ${n}`);
    return shown.join(', ') + (notes.length > 0 ? ` (${notes.join(', ')})` : '');
  }
}

export interface FuzzTarget<T = unknown> {
  /** Short name, e.g. "packet/parseIPv4". */
  readonly name: string;
  /** The decoder functions an input goes through. */
  readonly covers: string;
  readonly arbitrary: fc.Arbitrary<T>;
  /** Throws a FuzzViolation (or anything) when the decoder breaks its contract on `input`; tallies the outcome. */
  check(input: T): void | Promise<void>;
  /** check returns a promise. */
  readonly async?: boolean;
  readonly tally: Tally;
  /** Outcomes a bounded run (the unit share) is expected to reach: the generators' coverage, pinned. */
  readonly mustReach?: readonly string[];
  setup?(): Promise<void>;
  teardown?(): Promise<void>;
}

export type Outcome<V> = { ok: true; value: V } | { ok: false; error: BatonError };

/**
 * Runs `fn`; a BatonError with one of `codes` is the documented rejection,
 * anything else thrown (a TypeError, a RangeError, a BatonError of another
 * code) is a violation.
 */
export function typedOnly<V>(what: string, codes: readonly ErrorCode[], fn: () => V): Outcome<V> {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    if (e instanceof BatonError && codes.includes(e.code)) return { ok: false, error: e };
    const desc = e instanceof BatonError ? `BatonError ${e.code}: ${e.message}` : e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    return violated(`${what} threw ${desc} (only BatonError ${codes.join(' | ')} may escape)`, e);
  }
}

/** Runs `fn`, which must not throw at all (the per-packet decoders). */
export function noThrow<V>(what: string, fn: () => V): V {
  try {
    return fn();
  } catch (e) {
    return violated(`${what} threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)} (documented never to throw)`, e);
  }
}

/**
 * Deep equality for decoded values: numbers by Object.is (NaN = NaN, 0 != -0;
 * with `signlessZero` 0 = -0, for values that went through JSON), typed
 * arrays by content, plain objects by own keys (one holding undefined is
 * none). Returns where they differ.
 */
export function sameValue(a: unknown, b: unknown, path = '$', signlessZero = false): string | null {
  if (typeof a === 'number' && typeof b === 'number') return Object.is(a, b) || (signlessZero && a === 0 && b === 0) ? null : `${path}: ${a} != ${b}`;
  if (a instanceof Uint8Array && b instanceof Uint8Array) {
    if (a.length !== b.length) return `${path}: ${a.length} bytes != ${b.length} bytes`;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return `${path}[${i}]: ${a[i]} != ${b[i]}`;
    return null;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) return `${path}: length ${a.length} != ${b.length}`;
    for (let i = 0; i < a.length; i++) {
      const d = sameValue(a[i], b[i], `${path}[${i}]`, signlessZero);
      if (d) return d;
    }
    return null;
  }
  if (a !== null && b !== null && typeof a === 'object' && typeof b === 'object') {
    // A key holding undefined is no key (as JSON has it).
    const ka = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined).sort();
    const kb = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined).sort();
    if (ka.join('\0') !== kb.join('\0')) return `${path}: keys [${ka.join(',')}] != [${kb.join(',')}]`;
    for (const k of ka) {
      const d = sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${path}.${k}`, signlessZero);
      if (d) return d;
    }
    return null;
  }
  return Object.is(a, b) ? null : `${path}: ${String(a)} != ${String(b)}`;
}

export function hex(b: Uint8Array, max = 64): string {
  const s = Buffer.from(b.buffer, b.byteOffset, Math.min(b.length, max)).toString('hex');
  return b.length > max ? `${s}… (${b.length} bytes)` : s;
}
