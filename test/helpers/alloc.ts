/**
 * Allocation measurement for "the hot path allocates nothing" tests: warm
 * up, a full GC (so no leftover garbage from setup can trigger a collection
 * during the measured run), a re-warm (a full GC may drop compiled code),
 * then the measured run under v8.GCProfiler, which records every GC, minor
 * ones included. gc() is the one vitest.config.ts exposes (--expose-gc);
 * outside vitest the flag is set at run time.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

export interface AllocResult {
  /** GCs (any kind) during the measured run. */
  gcs: number;
  /** heapUsed after minus before the measured run, in bytes. */
  growth: number;
  /** What the measured run returned. */
  result: number;
}

export function exposeGc(): () => void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === 'function') return g;
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

export function measureAllocation(run: (n: number) => number, n: number, warm = 100_000, rewarm = 20_000): AllocResult {
  const gc = exposeGc();
  run(warm);
  gc();
  run(rewarm);
  const profiler = new v8.GCProfiler();
  const before = process.memoryUsage().heapUsed;
  profiler.start();
  const result = run(n);
  const gcs = profiler.stop().statistics.length;
  return { gcs, growth: process.memoryUsage().heapUsed - before, result };
}
