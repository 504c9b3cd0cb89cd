import { defineConfig } from 'vitest/config';

/**
 * Two projects: `unit` (fast, in-process, files in parallel) and `system`
 * (real processes and sockets at high packet rates: one file at a time, so
 * the 2-core machine is not shared with other test files). `npm test` runs
 * unit, then system.
 */
const SYSTEM = ['test/two-tiers-etcd.test.ts', 'test/cluster-processes.test.ts', 'test/chaos.test.ts', 'test/overload.test.ts', 'test/upgrade-version.test.ts', 'test/multi-tier-datapath.test.ts', 'test/lab.test.ts', 'test/real-traffic.test.ts', 'test/multi-host-lab.test.ts', 'test/fd-failure.test.ts', 'test/dead-service.test.ts', 'test/fd-sigterm.test.ts'];

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    globalSetup: ['test/setup/kernel.ts'],
    // gc() for the allocation tests (test/helpers/alloc.ts).
    execArgv: ['--expose-gc'],
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/**/*.test.ts'], exclude: SYSTEM, maxWorkers: 2 } },
      { extends: true, test: { name: 'system', include: SYSTEM, maxWorkers: 1, fileParallelism: false } },
    ],
  },
});
