/**
 * Benchmark contract. Every performance claim in Baton is a BenchResult that,
 * where a baseline was measured in the same run, carries `baseline` and
 * `ratio` (= value / baseline for rates; for times, baseline / value so that
 * > 1 always means "we are better").
 */
export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  baseline?: number;
  baselineName?: string;
  ratio?: number;
  note?: string;
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

/**
 * Runs `fn(iterations)` repeatedly and returns the best rate (ops/s) of
 * `rounds` rounds. Best-of-N is the right statistic on a noisy 2-core box:
 * noise only ever slows a round down.
 */
export function bestRate(fn: (iterations: number) => void, iterations: number, rounds = 5): number {
  fn(Math.min(iterations, 10_000)); // warm-up / JIT
  let best = 0;
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    fn(iterations);
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    const rate = iterations / dt;
    if (rate > best) best = rate;
  }
  return best;
}

/** Iterations so that one call of `fn(n)` takes about `targetMs` (doubles as JIT warm-up). */
export function calibrate(fn: (n: number) => void, targetMs: number): number {
  let n = 10_000;
  for (;;) {
    const t0 = process.hrtime.bigint();
    fn(n);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (ms >= 15 || n >= 1 << 26) return Math.max(10_000, Math.round((n * targetMs) / Math.max(ms, 0.001)));
    n *= 4;
  }
}

/** Best-of-5 rate of `fn`, with rounds calibrated to ~60 ms each. */
export function measureRate(fn: (n: number) => void): number {
  return bestRate(fn, calibrate(fn, 60), 5);
}

/** Best (smallest) wall time in ms of `rounds` calls. */
export function bestTimeMs(fn: () => void, rounds = 5): number {
  fn();
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    fn();
    const dt = Number(process.hrtime.bigint() - t0) / 1e6;
    if (dt < best) best = dt;
  }
  return best;
}

export function rateResult(name: string, value: number, unit: string, baseline?: number, baselineName?: string, note?: string): BenchResult {
  const r: BenchResult = { name, value, unit };
  if (baseline !== undefined) {
    r.baseline = baseline;
    if (baselineName !== undefined) r.baselineName = baselineName;
    r.ratio = value / baseline;
  }
  if (note !== undefined) r.note = note;
  return r;
}

export function timeResult(name: string, valueMs: number, baselineMs?: number, baselineName?: string, note?: string): BenchResult {
  const r: BenchResult = { name, value: valueMs, unit: 'ms' };
  if (baselineMs !== undefined) {
    r.baseline = baselineMs;
    if (baselineName !== undefined) r.baselineName = baselineName;
    r.ratio = baselineMs / valueMs;
  }
  if (note !== undefined) r.note = note;
  return r;
}

export { mulberry32 } from '../shared/random.js';
