/**
 * Benchmark contract. Every performance claim in Baton is a BenchResult that,
 * where a baseline was measured in the same run, carries `baseline` and
 * `ratio` (= value / baseline for rates; for times, baseline / value so that
 * > 1 always means "we are better").
 *
 * Repetitions: a measurement repeated n times is a `Spread` (min, median,
 * max, n). A result built from spreads reports the median as `value` (and
 * `baseline`), so the ratio compares medians, and keeps both spreads
 * (`spread`, `baselineSpread`) next to them: the table prints them and the
 * results file records them. A value measured once (one round, a
 * deterministic count) has no spread.
 *
 * Micro-benchmarks (a tight loop over typed arrays, nanoseconds per
 * operation) are sampled by tinybench (`sampleRate`, `sampleTimeMs`): it
 * does the warm-up, the time budget and the statistics; the case keeps its
 * own loop, so that loop overhead is what it was and each sample is the
 * mean over one batch. Process-level cases (e2e, migration) keep their own
 * harness and build spreads from their rounds with `spreadOf`.
 */
import { Bench } from 'tinybench';

export interface Spread {
  min: number;
  median: number;
  max: number;
  /** Repetitions (samples) the spread is over. */
  n: number;
}

export interface BenchResult {
  name: string;
  /** The median when the result was built from a Spread. */
  value: number;
  unit: string;
  baseline?: number;
  baselineName?: string;
  ratio?: number;
  note?: string;
  /** value's min / median / max over the repetitions, in `unit`. */
  spread?: Spread;
  /** baseline's min / median / max over its repetitions, in `unit`. */
  baselineSpread?: Spread;
}

export interface BenchCase {
  /** Short id used by `npm run bench -- --only <id>`. */
  id: string;
  title: string;
  run(progress: (msg: string) => void): Promise<BenchResult[]>;
}

/** Prevents the optimiser from deleting a benchmark loop. */
export let sink = 0;
export function consume(v: number): void {
  sink = (sink + v) | 0;
}

/** min / median / max of repeated measurements (at least one). */
export function spreadOf(values: readonly number[]): Spread {
  if (values.length === 0) throw new Error('spreadOf: no values');
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length & 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { min: s[0]!, median, max: s[s.length - 1]!, n: s.length };
}

/** A spread scaled by a positive factor (e.g. per batch -> per record). */
export function scaleSpread(s: Spread, k: number): Spread {
  return { min: s.min * k, median: s.median * k, max: s.max * k, n: s.n };
}

/** Rates (per second) from durations: the slowest duration is the lowest rate. */
export function ratesFromMs(s: Spread, ops: number): Spread {
  return { min: (ops * 1000) / s.max, median: (ops * 1000) / s.median, max: (ops * 1000) / s.min, n: s.n };
}

function timeOnce(fn: (n: number) => void, n: number): number {
  const t0 = process.hrtime.bigint();
  fn(n);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/**
 * Iterations so that one call of `fn(n)` takes about `targetMs`. Grows n
 * until a call takes >= 5 ms, then times that n again: the first calls run
 * in unoptimised code (and may include a compile), which would make the
 * batch far too small.
 */
export function calibrate(fn: (n: number) => void, targetMs: number): number {
  let n = 1_000;
  while (n < 1 << 26 && timeOnce(fn, n) < 5) n *= 4;
  const ms = Math.min(timeOnce(fn, n), timeOnce(fn, n));
  return Math.max(1_000, Math.round((n * targetMs) / Math.max(ms, 0.001)));
}

export interface SampleOptions {
  /** Time budget of the measured samples, ms (default 300). */
  timeMs?: number;
  /** At least this many samples (default 10). */
  minSamples?: number;
  /** Warm-up budget, ms (default 50; at least 2 calls). */
  warmupMs?: number;
  /** Untimed work before each sample (tinybench beforeEach). */
  beforeEach?: () => void;
}

/**
 * Durations in ms of `fn()`, sampled by tinybench: warm-up (excluded), then
 * calls until both `timeMs` and `minSamples` are reached. Pass
 * `{ timeMs: 0, minSamples: k, warmupMs: 0 }` for exactly k timed calls
 * (tinybench still makes its minimum of warm-up calls unless `warmup` is 0).
 */
export function sampleTimeMs(fn: () => void, opts: SampleOptions & { warmup?: number } = {}): Spread {
  const warmupCalls = opts.warmup ?? 2;
  const bench = new Bench({
    time: opts.timeMs ?? 300,
    iterations: opts.minSamples ?? 10,
    warmup: warmupCalls > 0,
    warmupTime: opts.warmupMs ?? 50,
    warmupIterations: warmupCalls,
    timestampProvider: 'hrtimeNow',
    throws: true,
  });
  bench.add('case', fn, { async: false, ...(opts.beforeEach ? { beforeEach: opts.beforeEach } : {}) });
  const task = bench.runSync()[0]!;
  const r = task.result;
  if (r.state !== 'completed') throw new Error(`bench: tinybench task ended ${r.state}`);
  return { min: r.latency.min, median: r.latency.p50, max: r.latency.max, n: r.latency.samplesCount };
}

/**
 * Exactly `k` timed calls of `fn` after `warmup` untimed ones (default 1),
 * sampled by tinybench: for work of many ms per call (a table build, a pass
 * over 1 M flows), where a time budget would add nothing.
 */
export function repeatMs(fn: () => void, k: number, opts: { warmup?: number; beforeEach?: () => void } = {}): Spread {
  return sampleTimeMs(fn, { timeMs: 0, minSamples: k, warmupMs: 0, warmup: opts.warmup ?? 1, ...(opts.beforeEach ? { beforeEach: opts.beforeEach } : {}) });
}

/**
 * Rate (ops/s) of `k` timed passes of `fn(ops)` (ops operations each, e.g.
 * one lookup of each of 1 M keys) after one short untimed pass of
 * min(ops, 10 000) that warms the JIT without touching every key first.
 */
export function passRate(fn: (n: number) => void, ops: number, k: number): Spread {
  fn(Math.min(ops, 10_000));
  return ratesFromMs(repeatMs(() => fn(ops), k, { warmup: 0 }), ops);
}

/**
 * Rate (ops/s) of a batched loop `fn(n)` that performs n operations. The
 * batch is calibrated to ~`batchMs` (default 20 ms), then tinybench samples
 * `fn(batch)` (see sampleTimeMs); each sample is the batch's mean rate.
 */
export function sampleRate(fn: (n: number) => void, opts: SampleOptions & { batchMs?: number; batch?: number } = {}): Spread {
  const batch = opts.batch ?? calibrate(fn, opts.batchMs ?? 20);
  return ratesFromMs(sampleTimeMs(() => fn(batch), opts), batch);
}

/**
 * @deprecated The median of sampleRate (kept for cases written against the
 * old helpers); use sampleRate, which keeps the spread.
 */
export function measureRate(fn: (n: number) => void): number {
  return sampleRate(fn).median;
}

/** @deprecated The median rate of `rounds` calls of fn(iterations); use passRate or sampleRate. */
export function bestRate(fn: (iterations: number) => void, iterations: number, rounds = 5): number {
  return passRate(fn, iterations, rounds).median;
}

/** @deprecated The median time of `rounds` calls; use sampleTimeMs. */
export function bestTimeMs(fn: () => void, rounds = 5): number {
  return repeatMs(fn, rounds).median;
}

function valueOf(v: number | Spread): number {
  return typeof v === 'number' ? v : v.median;
}

function result(name: string, value: number | Spread, unit: string, baseline: number | Spread | undefined, baselineName: string | undefined, note: string | undefined, ratio: (v: number, b: number) => number): BenchResult {
  const r: BenchResult = { name, value: valueOf(value), unit };
  if (typeof value !== 'number') r.spread = value;
  if (baseline !== undefined) {
    r.baseline = valueOf(baseline);
    if (typeof baseline !== 'number') r.baselineSpread = baseline;
    if (baselineName !== undefined) r.baselineName = baselineName;
    r.ratio = ratio(r.value, r.baseline);
  }
  if (note !== undefined) r.note = note;
  return r;
}

/** A rate (higher is better): ratio = value / baseline (medians when spreads are given). */
export function rateResult(name: string, value: number | Spread, unit: string, baseline?: number | Spread, baselineName?: string, note?: string): BenchResult {
  return result(name, value, unit, baseline, baselineName, note, (v, b) => v / b);
}

/** A time in ms (lower is better): ratio = baseline / value (medians when spreads are given). */
export function timeResult(name: string, valueMs: number | Spread, baselineMs?: number | Spread, baselineName?: string, note?: string): BenchResult {
  return result(name, valueMs, 'ms', baselineMs, baselineName, note, (v, b) => b / v);
}

export { mulberry32 } from '../shared/random.js';
