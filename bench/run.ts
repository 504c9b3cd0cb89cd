/**
 * `npm run bench [-- --only id1,id2] [-- --out file.json]`
 * Runs the cases registered below one after another (never in parallel: the
 * machine has 2 cores), prints a table per case and writes JSON: the run's
 * git commit (and whether the work tree had uncommitted changes), date,
 * Node version, CPU model, durations, and entries { case, name, value,
 * unit, spread?, baseline?, baselineName?, baselineSpread?, ratio?, note? }
 * (bench/lib.ts). Without --out it writes bench/results/latest.json and a
 * dated copy, bench/results/<UTC date-time>-<commit>[-<ids>].json.
 */
import { execFileSync } from 'node:child_process';
import { writeFile, mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import type { BenchCase, BenchResult, Spread } from './lib.js';
import { configureLogging } from '../shared/observability/logger.js';
import codec from './cases/codec.js';
import control from './cases/control.js';
import e2e from './cases/e2e.js';
import encap from './cases/encap.js';
import flowTable from './cases/flow-table.js';
import flowVerdicts from './cases/flow-verdicts.js';
import hash from './cases/hash.js';
import hashClients from './cases/hash-clients.js';
import maglev from './cases/maglev.js';
import migration from './cases/migration.js';
import realTraffic from './cases/real-traffic.js';
import failure from './cases/failure.js';

/** Every case, in the order they run. A new case file is registered here. */
const CASES: readonly BenchCase[] = [codec, control, e2e, encap, failure, flowTable, flowVerdicts, hash, hashClients, maglev, migration, realTraffic];

// In-process nodes log through winston: keep the bench output to its table.
configureLogging({ silent: process.env.BATON_LOG_LEVEL === undefined });

const here = dirname(fileURLToPath(import.meta.url));

function parseArgs(argv: string[]): { only: Set<string> | null; out: string | null } {
  let only: Set<string> | null = null;
  let out: string | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--only') only = new Set((argv[++i] ?? '').split(',').filter(Boolean));
    else if (a.startsWith('--only=')) only = new Set(a.slice(7).split(',').filter(Boolean));
    else if (a === '--out') out = argv[++i] ?? out;
    else if (a.startsWith('--out=')) out = a.slice(6);
    else if (a === '--help' || a === '-h') {
      console.log(`usage: npm run bench [-- --only id[,id...]] [--out file.json]\ncases: ${CASES.map((c) => c.id).join(', ')}`);
      process.exit(0);
    } else {
      console.error(`bench: unknown argument ${JSON.stringify(a)} (try --help)`);
      process.exit(2);
    }
  }
  return { only, out };
}

/** The commit the run measured, and whether tracked files differed from it. */
function gitInfo(): { commit: string; dirty: boolean | null } {
  const git = (...args: string[]): string => execFileSync('git', args, { cwd: here, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    const commit = git('rev-parse', 'HEAD');
    let dirty: boolean | null = null;
    try {
      dirty = git('status', '--porcelain', '--untracked-files=no').length > 0;
    } catch {
      /* unknown */
    }
    return { commit, dirty };
  } catch {
    return { commit: 'unknown', dirty: null };
  }
}

function fmt(v: number | undefined): string {
  if (v === undefined || Number.isNaN(v)) return '';
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(2)} M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(1)} k`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return v.toFixed(2);
  return v.toPrecision(3);
}

function fmtSpread(s: Spread | undefined): string {
  if (!s) return '';
  return s.n === 1 ? 'n=1' : `${fmt(s.min)} – ${fmt(s.max)} (n=${s.n})`;
}

async function main(): Promise<void> {
  const { only, out } = parseArgs(process.argv.slice(2));
  if (only) {
    const missing = [...only].filter((id) => !CASES.some((c) => c.id === id));
    if (missing.length) {
      console.error(`bench: no case with id ${missing.join(', ')}; known: ${CASES.map((c) => c.id).join(', ')}`);
      process.exit(2);
    }
  }
  const cases = CASES.filter((c) => !only || only.has(c.id));
  const git = gitInfo();
  const started = new Date();
  console.log(`bench at ${git.commit.slice(0, 12)}${git.dirty ? ' (+ uncommitted changes)' : ''}, ${process.version}, ${os.cpus()[0]?.model ?? 'unknown CPU'} x ${os.cpus().length}`);
  console.log('value = median over the repetitions; min – max (n) beside it; ratio of medians (> 1 = Baton better)');
  const all: (BenchResult & { case: string })[] = [];
  const caseDurationS: Record<string, number> = {};
  const t0 = Date.now();
  for (const [i, c] of cases.entries()) {
    console.log(`\n[${i + 1}/${cases.length}] ${c.id}: ${c.title}`);
    const tc = Date.now();
    const results = await c.run((msg) => console.log(`  … ${msg}`));
    caseDurationS[c.id] = (Date.now() - tc) / 1000;
    for (const r of results) all.push({ case: c.id, ...r });
    console.table(
      results.map((r) => ({
        name: r.name,
        value: `${fmt(r.value)} ${r.unit}`,
        'min – max': fmtSpread(r.spread),
        baseline: r.baseline === undefined ? '' : `${fmt(r.baseline)} ${r.unit} (${r.baselineName ?? 'baseline'})`,
        'baseline min – max': fmtSpread(r.baselineSpread),
        ratio: r.ratio === undefined ? '' : `${r.ratio.toFixed(2)}x`,
        note: r.note ?? '',
      })),
    );
    console.log(`  ${c.id}: ${caseDurationS[c.id]!.toFixed(1)} s`);
  }
  const report = {
    commit: git.commit,
    dirty: git.dirty,
    date: started.toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    statistic: 'value and baseline are medians over repetitions; spread = { min, median, max, n }',
    only: only ? [...only] : null,
    durationS: (Date.now() - t0) / 1000,
    caseDurationS,
    results: all,
  };
  const body = JSON.stringify(report, null, 2) + '\n';
  const files: string[] = [];
  if (out) files.push(out);
  else {
    const stamp = started.toISOString().slice(0, 16).replace(/:/g, '').replace('T', '-'); // 2026-12-04-0123
    const ids = only ? `-${[...only].join('+')}` : '';
    files.push(join(here, 'results', 'latest.json'), join(here, 'results', `${stamp}-${git.commit.slice(0, 7)}${ids}.json`));
  }
  for (const f of files) {
    await mkdir(dirname(f), { recursive: true });
    await writeFile(f, body);
  }
  console.log(`\n${all.length} results in ${report.durationS.toFixed(1)} s → ${files.join(', ')}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
