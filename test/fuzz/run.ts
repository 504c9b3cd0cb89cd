/**
 * npm run fuzz: every decoder under property-based fuzzing (docs/fuzzing.md),
 * a million generated inputs each by default, random bytes and mutants of
 * valid frames. Prints, per target, the inputs run, the time, the seed and
 * how the inputs came out (accepted, each rejection reason); a failure
 * prints fast-check's seed and path (replay with --only NAME --seed S
 * --path P) and the shrunk input, and the run exits 1.
 *
 *   npm run fuzz                              # all targets, 1,000,000 inputs each
 *   npm run fuzz -- --runs 100000 --only packet,encap
 *   npm run fuzz -- --jobs 2                  # targets in 2 child processes at once
 *   npm run fuzz -- --list
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { TARGETS, seedOf } from './targets.js';
import { runTarget, type RunResult } from './harness.js';

interface Args {
  runs: number;
  only: string[];
  seed: number | undefined;
  path: string | undefined;
  jobs: number;
  list: boolean;
  /** Child mode: run exactly this target, print one RESULT line. */
  worker: string | undefined;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { runs: 1_000_000, only: [], seed: undefined, path: undefined, jobs: 1, list: false, worker: undefined };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k} needs a value`);
      return x;
    };
    if (k === '--runs') a.runs = Number(v().replace(/[_,]/g, ''));
    else if (k === '--only') a.only = v().split(',').filter(Boolean);
    else if (k === '--seed') a.seed = Number(v());
    else if (k === '--path') a.path = v();
    else if (k === '--jobs') a.jobs = Number(v());
    else if (k === '--list') a.list = true;
    else if (k === '--worker') a.worker = v();
    else throw new Error(`unknown argument ${k} (--runs N, --only a,b, --seed S, --path P, --jobs J, --list)`);
  }
  if (!(Number.isInteger(a.runs) && a.runs > 0)) throw new Error(`--runs must be a positive integer, got ${a.runs}`);
  if (!(Number.isInteger(a.jobs) && a.jobs > 0)) throw new Error(`--jobs must be a positive integer, got ${a.jobs}`);
  return a;
}

const fmt = (n: number): string => n.toLocaleString('en-US');

function selected(a: Args): typeof TARGETS {
  if (a.only.length === 0) return TARGETS;
  const ts = TARGETS.filter((t) => a.only.some((o) => t.name === o || t.name.includes(o)));
  if (ts.length === 0) throw new Error(`--only ${a.only.join(',')} matches no target (npm run fuzz -- --list)`);
  return ts;
}

function line(r: RunResult, tally: string): string {
  const rate = r.runs / (r.ms / 1000);
  const head = `${r.name.padEnd(26)} ${fmt(r.runs).padStart(10)} inputs  ${(r.ms / 1000).toFixed(1).padStart(7)} s  ${fmt(Math.round(rate)).padStart(8)}/s  seed ${r.seed}  ${r.failed ? 'FAILED' : 'ok'}`;
  return `${head}\n    ${tally}`;
}

async function runOne(a: Args, name: string): Promise<{ r: RunResult; tally: string }> {
  const t = TARGETS.find((x) => x.name === name)!;
  const r = await runTarget(t, { numRuns: a.runs, seed: a.seed ?? seedOf(t.name), ...(a.path ? { path: a.path } : {}) });
  return { r, tally: t.tally.format() };
}

/** Runs each target in a child process, `jobs` at a time; the children print one RESULT line each. */
function runChildren(a: Args, names: string[], onDone: (x: { r: RunResult; tally: string }) => void): Promise<void> {
  const self = fileURLToPath(import.meta.url);
  const queue = [...names];
  const pass = ['--runs', String(a.runs), ...(a.seed !== undefined ? ['--seed', String(a.seed)] : []), ...(a.path ? ['--path', a.path] : [])];
  const next = (): Promise<void> => {
    const name = queue.shift();
    if (name === undefined) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const child = fork(self, [...pass, '--worker', name], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'], execArgv: process.execArgv });
      let out = '';
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      child.on('error', reject);
      child.on('exit', (code) => {
        const m = /^RESULT (.*)$/m.exec(out);
        if (!m) return reject(new Error(`fuzz worker for ${name} exited ${code} without a result:\n${out}`));
        onDone(JSON.parse(m[1]!) as { r: RunResult; tally: string });
        resolve(next());
      });
    });
  };
  return Promise.all(Array.from({ length: Math.min(a.jobs, names.length) }, next)).then(() => undefined);
}

async function main(): Promise<number> {
  const a = parseArgs(process.argv.slice(2));
  if (a.worker !== undefined) {
    process.stdout.write(`RESULT ${JSON.stringify(await runOne(a, a.worker))}\n`);
    return 0;
  }
  const ts = selected(a);
  if (a.list) {
    for (const t of ts) console.log(`${t.name.padEnd(26)} seed ${seedOf(t.name)}  ${t.covers}`);
    return 0;
  }
  console.log(`fuzzing ${ts.length} targets, ${fmt(a.runs)} inputs each${a.jobs > 1 ? `, ${a.jobs} at a time` : ''} (node ${process.version})`);
  const t0 = performance.now();
  const results: RunResult[] = [];
  const done = ({ r, tally }: { r: RunResult; tally: string }): void => {
    results.push(r);
    console.log(line(r, tally));
    if (r.failed) console.log(r.report.replace(/^/gm, '    | '));
  };
  if (a.jobs > 1) await runChildren(a, ts.map((t) => t.name), done);
  else for (const t of ts) done(await runOne(a, t.name));
  const wall = (performance.now() - t0) / 1000;
  const total = results.reduce((n, r) => n + r.runs, 0);
  const failed = results.filter((r) => r.failed);
  console.log(`\n${fmt(total)} inputs over ${results.length} targets in ${wall.toFixed(1)} s wall (${(results.reduce((s, r) => s + r.ms, 0) / 1000).toFixed(1)} s in targets); ${failed.length === 0 ? 'no property failed' : `FAILED: ${failed.map((r) => r.name).join(', ')}`}`);
  return failed.length === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(2);
  },
);
