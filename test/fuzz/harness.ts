/**
 * Runs one fuzz target under fast-check (npm run fuzz and test/fuzz.test.ts
 * share it): a fixed seed, numRuns inputs, the failing input shrunk, and a
 * report that names the seed and path to replay it with.
 */
import fc from 'fast-check';
import { FuzzViolation, type FuzzTarget } from './check.js';

export interface RunOptions {
  numRuns: number;
  seed: number;
  /** Replays one failure: the path fast-check printed with the seed. */
  path?: string;
}

export interface RunResult {
  name: string;
  /** Inputs run (all of them, or up to the first failure). */
  runs: number;
  ms: number;
  seed: number;
  failed: boolean;
  /** fast-check's report (seed, path, shrunk counterexample) and the violation. */
  report: string;
}

function describeError(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  // A violation says what broke; anything else escaped the property itself: its stack says where.
  const own = e instanceof FuzzViolation ? `${e.name}: ${e.message}` : (e.stack ?? `${e.name}: ${e.message}`);
  const cause = e.cause instanceof Error ? `\ncaused by ${e.cause.stack ?? e.cause.message}` : '';
  return own + cause;
}

export async function runTarget(t: FuzzTarget<never>, o: RunOptions): Promise<RunResult> {
  const params = { numRuns: o.numRuns, seed: o.seed, ...(o.path ? { path: o.path } : {}) };
  t.tally.reset();
  await t.setup?.();
  const t0 = performance.now();
  let details: fc.RunDetails<[never]>;
  try {
    details = t.async
      ? await fc.check(fc.asyncProperty(t.arbitrary, async (x) => void (await t.check(x))), params)
      : fc.check(fc.property(t.arbitrary, (x) => void t.check(x)), params);
  } finally {
    await t.teardown?.();
  }
  const ms = performance.now() - t0;
  const fcReport = (fc.defaultReportMessage(details) ?? '').replace(/\n*Hint: .*$/gm, '');
  const report = details.failed ? `${fcReport}\n${describeError(details.errorInstance)}` : '';
  return { name: t.name, runs: details.failed ? details.numRuns : o.numRuns, ms, seed: o.seed, failed: details.failed, report };
}
