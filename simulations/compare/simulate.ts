/**
 * `npm run simulate` — without options, the disengage timeline
 * (simulations/disengage-timeline.ts); with `--compare`, the comparison of
 * issue 15 (docs/comparison.md): one seeded trace and one churn script
 * through Baton and the field's strategies, printed as tables, written as
 * JSON and plotted (SVG, vega-lite). `--scale` times Baton alone at several
 * sizes, each in a process of its own.
 *
 *   npm run simulate -- --compare [--fds 32] [--backends 16] [--flows 50000] [--seed 15] [--out simulations/out/compare]
 *   npm run simulate -- --scale [--sizes 16x100000,64x250000,64x1000000]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { makeTrace, DEFAULT_TRACE, type Trace } from './trace.js';
import { fieldScenario, type Scenario } from './churn.js';
import { run, type RunResult } from './runner.js';
import { BatonFlow } from './baton-flow.js';
import { compareField, compareCheetah, formatTables, writePlots, fmt } from './compare.js';

const here = dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const has = (name: string): boolean => argv.includes(`--${name}`);
const arg = (name: string, dflt: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? (argv[i + 1] ?? dflt) : dflt;
};

async function compareMain(): Promise<void> {
  const t0 = performance.now();
  const out = arg('out', join(here, '..', 'out', 'compare'));
  const seed = Number(arg('seed', '15'));
  const log = (s: string): void => void process.stdout.write(`${s}\n`);
  log('running the field comparison ...');
  const field = compareField({ fds: Number(arg('fds', '32')), backends: Number(arg('backends', '16')), flows: Number(arg('flows', '50000')), seed, log });
  log('running the Cheetah-shaped experiment ...');
  const cheetah = compareCheetah({ seed, flows: Number(arg('cheetah-flows', '2000')), log });
  log('');
  log(formatTables(field.trace, field.scenario, field.results));
  log('');
  log(formatTables(cheetah.trace, cheetah.scenario, cheetah.results));
  mkdirSync(out, { recursive: true });
  const json = join(out, 'compare.json');
  const doc = (x: { trace: Trace; scenario: Scenario; results: RunResult[] }) => ({ trace: x.trace.params, connections: x.trace.n, ratePerS: x.trace.ratePerS, scenario: x.scenario, results: x.results });
  writeFileSync(json, JSON.stringify({ command: `npm run simulate -- ${argv.join(' ')}`, field: doc(field), cheetah: doc(cheetah) }, null, 1));
  const plots = await writePlots(out, field, cheetah);
  log(`\nJSON: ${json}\nplots: ${plots.join(', ')}\ntotal ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

/** One Baton run at a size, in this process: prints a JSON line. */
function scaleOne(fds: number, flows: number): void {
  const trace = makeTrace({ ...DEFAULT_TRACE, seed: 15, concurrent: flows });
  const sc = fieldScenario(fds, 16, 3, 8);
  const r = run(new BatonFlow({ idleMs: Number(arg('idle', '30000')), policy: 'hash-aligned' }), trace, sc);
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  console.log(JSON.stringify({ fds, backends: 16, flows, connections: trace.n, maxOpen: r.maxOpen, runS: r.runMs / 1000, rssMB: r.rssMB, arrayBuffersMB: r.arrayBuffersMB, heapMB: r.heapMB, broken: r.total.broken, statePerFlow: r.total.statePerFlow }));
}

function scaleMain(): void {
  const sizes = arg('sizes', '16x100000,64x250000,64x1000000')
    .split(',')
    .map((s) => s.split('x').map(Number) as [number, number]);
  console.log('Baton at flow level (hash-aligned, flowTable.idleMs 30 s, field churn with a rolling upgrade of 8 FDs), one process per size:');
  console.log('FDS  SERVICES  OPEN AT ONCE  CONNECTIONS   RUN (s)   RSS (MB)  TABLES (MB)  BROKEN  ENTRIES/CONN');
  for (const [fds, flows] of sizes) {
    const line = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--scale-one', String(fds), String(flows), '--idle', arg('idle', '30000')], { encoding: 'utf8', maxBuffer: 1 << 24 }).trim().split('\n').pop()!;
    const r = JSON.parse(line) as { fds: number; flows: number; connections: number; maxOpen: number; runS: number; rssMB: number; arrayBuffersMB: number; broken: number; statePerFlow: number };
    console.log(`${String(r.fds).padStart(3)}  ${'16'.padStart(8)}  ${fmt(r.maxOpen).padStart(12)}  ${fmt(r.connections).padStart(11)}  ${r.runS.toFixed(1).padStart(8)}  ${fmt(r.rssMB).padStart(9)}  ${fmt(r.arrayBuffersMB).padStart(11)}  ${String(r.broken).padStart(6)}  ${r.statePerFlow.toFixed(1).padStart(12)}`);
  }
}

if (has('scale-one')) {
  const i = argv.indexOf('--scale-one');
  scaleOne(Number(argv[i + 1]), Number(argv[i + 2]));
} else if (has('scale')) scaleMain();
else if (has('compare')) {
  compareMain().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
} else await import('../disengage-timeline.js');
