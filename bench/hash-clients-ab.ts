/**
 * Before/after for the hash-clients case in one process, rounds interleaved
 * (so both see the same machine load): the engine of an earlier commit
 * against the engine of this tree, on the same frames.
 *
 *   npx tsx bench/hash-clients-ab.ts <commit> [rounds=7] [direct|memory]
 *
 * The commit's tree is extracted with `git archive` into a temp dir (this
 * tree's node_modules linked), and this tree's bench/cases/hash-clients.ts
 * and bench/lib.ts are copied into it, so both sides run the same case code.
 * Prints ns/frame min / median / max per side, for 1 and 100 k client
 * addresses. docs/decisions/0008-tx-lanes-per-address.md has a run.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

type Case = typeof import('./cases/hash-clients.js');

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const [commit, roundsArg, transportArg] = process.argv.slice(2);
if (!commit) {
  console.error('usage: npx tsx bench/hash-clients-ab.ts <commit> [rounds] [direct|memory]');
  process.exit(2);
}
const rounds = Number(roundsArg ?? 7);
const transport = transportArg === 'memory' ? 'memory' : 'direct';

const dir = mkdtempSync(join(tmpdir(), 'baton-ab-'));
try {
  execFileSync('sh', ['-c', `git -C "${root}" archive "${commit}" | tar -x -C "${dir}"`]);
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
  for (const f of ['bench/cases/hash-clients.ts', 'bench/lib.ts']) copyFileSync(join(root, f), join(dir, f));
  const before = (await import(pathToFileURL(join(dir, 'bench/cases/hash-clients.ts')).href)) as Case;
  const after = (await import(pathToFileURL(join(root, 'bench/cases/hash-clients.ts')).href)) as Case;
  const frames = { one: after.buildFrames(false), many: after.buildFrames(true) };
  const ms = new Map<string, number[]>();
  for (let r = -1; r < rounds; r++) {
    for (const key of ['one', 'many'] as const) {
      for (const [side, m] of [['before', before], ['after', after]] as const) {
        const x = m.round(transport, key === 'many', frames[key]);
        if (r < 0) continue; // warm-up
        const k = `${side} ${key}`;
        ms.set(k, [...(ms.get(k) ?? []), x.ms]);
      }
    }
  }
  const median = (v: number[]): number => [...v].sort((a, b) => a - b)[v.length >> 1]!;
  const ns = (t: number): string => ((t * 1e6) / 200_000).toFixed(0);
  console.log(`${transport}, before = ${commit}, after = this tree, ${rounds} rounds each`);
  for (const [k, v] of ms) console.log(`  ${k.padEnd(12)} ns/frame min ${ns(Math.min(...v))} median ${ns(median(v))} max ${ns(Math.max(...v))}`);
  for (const side of ['before', 'after']) console.log(`  ${side}: 100 k addresses / 1 address, medians: ${(median(ms.get(`${side} many`)!) / median(ms.get(`${side} one`)!)).toFixed(2)}x per frame`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
