/**
 * The comparison's runs and tables (docs/comparison.md): the field scenario
 * through every strategy, the Cheetah-shaped experiment, the printed tables
 * and the plots. simulate.ts is the command line around it.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTrace, DEFAULT_TRACE, type Trace } from './trace.js';
import { fieldScenario, cheetahScenario, type Scenario } from './churn.js';
import { run, type RunResult } from './runner.js';
import type { Strategy } from './strategy.js';
import { BatonFlow } from './baton-flow.js';
import { MaglevModel } from './models/maglev.js';
import { GlbModel } from './models/glb.js';
import { BeamerModel } from './models/beamer.js';
import { ModuloModel } from './models/modulo.js';
import { brokenSpec, hopsSpec, cumulativeSpec, renderSvg } from './plots.js';

export interface CompareOptions {
  fds: number;
  backends: number;
  flows: number;
  seed: number;
  idleMs?: number;
  rollingFds?: number;
  log?: (s: string) => void;
}

/** The field comparison: every strategy through the same trace and churn. */
export function compareField(o: CompareOptions): { trace: Trace; scenario: Scenario; results: RunResult[] } {
  const trace = makeTrace({ ...DEFAULT_TRACE, seed: o.seed, concurrent: o.flows });
  const scenario = fieldScenario(o.fds, o.backends, 3, o.rollingFds);
  const idle = o.idleMs === undefined ? {} : { idleMs: o.idleMs };
  const strategies: Strategy[] = [new BatonFlow(idle), new BatonFlow({ ...idle, policy: 'hash-aligned' }), new MaglevModel(), new GlbModel(), new BeamerModel(), new ModuloModel()];
  return { trace, scenario, results: strategies.map((s) => runLogged(s, trace, scenario, o.log)) };
}

/** The shape of Cheetah's churn experiment: the server pool changes every few seconds under long connections. */
export function compareCheetah(o: { seed: number; flows: number; log?: (s: string) => void }): { trace: Trace; scenario: Scenario; results: RunResult[] } {
  const trace = makeTrace({ ...DEFAULT_TRACE, seed: o.seed, concurrent: o.flows, durationS: 56, medianS: 30, sigma: 1 });
  const scenario = cheetahScenario(4, 16, 12, 4, 4);
  const strategies: Strategy[] = [new BatonFlow(), new MaglevModel(false), new MaglevModel(), new GlbModel(), new BeamerModel(), new ModuloModel()];
  return { trace, scenario, results: strategies.map((s) => runLogged(s, trace, scenario, o.log)) };
}

function runLogged(s: Strategy, trace: Trace, sc: Scenario, log?: (s: string) => void): RunResult {
  const r = run(s, trace, sc);
  log?.(`  ${sc.name}: ${r.strategy.padEnd(32)} ${(r.runMs / 1000).toFixed(1).padStart(6)} s, heap ${r.heapMB.toFixed(0)} MB, array buffers ${r.arrayBuffersMB.toFixed(0)} MB`);
  return r;
}

export const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

export function formatTables(trace: Trace, sc: Scenario, results: RunResult[]): string {
  const out: string[] = [];
  const names = results.map((r) => r.strategy);
  const w0 = Math.max(12, ...sc.events.map((e) => e.label.length + 4));
  const w = Math.max(8, ...names.map((n) => n.length)) + 2;
  const row = (label: string, cells: string[]): string => label.padEnd(w0) + cells.map((c) => c.padStart(w)).join('');
  out.push(`scenario ${sc.name}: ${sc.fds.length} balancers, ${sc.backends.length} backends, ${fmt(trace.n)} connections (${fmt(trace.params.concurrent)} open at once on average, ${fmt(trace.ratePerS)}/s, lognormal durations median ${trace.params.medianS} s sigma ${trace.params.sigma}), ${trace.params.durationS} s of virtual time, seed ${trace.params.seed}`);
  out.push('', 'broken connections per churn event (* = graceful):', row('event', names));
  sc.events.forEach((e, i) => out.push(row(`${i + 1}. ${e.label}${e.graceful ? ' *' : ''}`, results.map((r) => fmt(r.events[i]!.broken)))));
  out.push(row('total', results.map((r) => fmt(r.total.broken))));
  out.push('', 'extra hops per packet in each event window [event, next event):', row('event', names));
  sc.events.forEach((e, i) => out.push(row(`${i + 1}. ${e.label}`, results.map((r) => r.events[i]!.extraHopsPerPacket.toFixed(4)))));
  out.push(row('whole run', results.map((r) => r.total.extraHopsPerPacket.toFixed(4))));
  out.push('', 'time to converge after each event (s; + = still converging at the end of the trace):', row('event', names));
  sc.events.forEach((e, i) => out.push(row(`${i + 1}. ${e.label}`, results.map((r) => `${r.events[i]!.convergeS.toFixed(1)}${r.events[i]!.convergeCensored ? '+' : ''}`))));
  out.push('', 'per strategy:', row('', names));
  out.push(row('state per open connection at the balancers (entries)', results.map((r) => r.total.statePerFlow.toFixed(1))));
  out.push(row('  ... bytes', results.map((r) => fmt(r.total.stateBytesPerFlow))));
  out.push(row('packets lost in failure windows', results.map((r) => fmt(r.total.lostInWindowPackets))));
  out.push(row('run time (s)', results.map((r) => (r.runMs / 1000).toFixed(1))));
  return out.join('\n');
}

export async function writePlots(dir: string, field: { results: RunResult[] }, cheetah: { results: RunResult[] }): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const files: [string, Promise<string>][] = [
    ['compare-broken.svg', renderSvg(brokenSpec(field.results, 'Broken connections per churn event (same trace, same churn)'))],
    ['compare-hops.svg', renderSvg(hopsSpec(field.results, 'Extra hops per packet over time (numbers: churn events)'))],
    ['compare-cheetah.svg', renderSvg(cumulativeSpec(cheetah.results, "Cheetah's churn experiment, its shape: a server drained or added every 4 s"))],
  ];
  const written: string[] = [];
  for (const [name, svg] of files) {
    const f = join(dir, name);
    writeFileSync(f, await svg);
    written.push(f);
  }
  return written;
}

