/**
 * `npm run bench [-- --only id1,id2] [-- --out file.json]`
 * Loads every bench/cases/*.ts, runs them one after another (never in
 * parallel: the machine has 2 cores), prints a table and writes JSON
 * entries { name, value, unit, baseline?, baselineName?, ratio?, note? }.
 */
import { readdir, writeFile, mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import os from 'node:os';
import type { BenchCase, BenchResult } from './lib.js';
import { configureLogging } from '../shared/observability/logger.js';

// In-process nodes log through winston: keep the bench output to its table.
configureLogging({ silent: process.env.BATON_LOG_LEVEL === undefined });

const here = dirname(fileURLToPath(import.meta.url));

function parseArgs(argv: string[]): { only: Set<string> | null; out: string } {
  let only: Set<string> | null = null;
  let out = join(here, 'results', 'latest.json');
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--only') only = new Set((argv[++i] ?? '').split(',').filter(Boolean));
    else if (a.startsWith('--only=')) only = new Set(a.slice(7).split(',').filter(Boolean));
    else if (a === '--out') out = argv[++i] ?? out;
    else if (a.startsWith('--out=')) out = a.slice(6);
    else if (a === '--help' || a === '-h') {
      console.log('usage: npm run bench [-- --only id[,id...]] [--out file.json]');
      process.exit(0);
    } else {
      console.error(`bench: unknown argument ${JSON.stringify(a)} (try --help)`);
      process.exit(2);
    }
  }
  return { only, out };
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

async function main(): Promise<void> {
  const { only, out } = parseArgs(process.argv.slice(2));
  const files = (await readdir(join(here, 'cases'))).filter((f) => f.endsWith('.ts')).sort();
  const cases: BenchCase[] = [];
  for (const f of files) {
    const mod = (await import(pathToFileURL(join(here, 'cases', f)).href)) as { default: BenchCase };
    if (!only || only.has(mod.default.id)) cases.push(mod.default);
  }
  if (only) {
    const known = new Set(cases.map((c) => c.id));
    const missing = [...only].filter((id) => !known.has(id));
    if (missing.length) {
      console.error(`bench: no case with id ${missing.join(', ')}; known: ${files.map((f) => f.replace(/\.ts$/, '')).join(', ')}`);
      process.exit(2);
    }
  }
  const all: (BenchResult & { case: string })[] = [];
  const t0 = Date.now();
  for (const [i, c] of cases.entries()) {
    console.log(`\n[${i + 1}/${cases.length}] ${c.id}: ${c.title}`);
    const results = await c.run((msg) => console.log(`  … ${msg}`));
    for (const r of results) all.push({ case: c.id, ...r });
    console.table(
      results.map((r) => ({
        name: r.name,
        value: `${fmt(r.value)} ${r.unit}`,
        baseline: r.baseline === undefined ? '' : `${fmt(r.baseline)} ${r.unit} (${r.baselineName ?? 'baseline'})`,
        ratio: r.ratio === undefined ? '' : `${r.ratio.toFixed(2)}x`,
        note: r.note ?? '',
      })),
    );
  }
  const report = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    durationS: (Date.now() - t0) / 1000,
    results: all,
  };
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, JSON.stringify(report, null, 2) + '\n');
  console.log(`\n${all.length} results in ${report.durationS.toFixed(1)} s → ${out}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
