/**
 * Maglev table build time (typed arrays, incremental permutation position)
 * vs a naive textbook build in the same run (plain Arrays, `%` and a multiply
 * per probe), at M = 65537. Plus informational quality numbers: worst share
 * deviation from the mean, and the fraction of buckets that change owner
 * when one of 64 members is removed (ideal: exactly 1/64 = 1.5625%).
 */
import { bestTimeMs, timeResult } from '../lib.js';
import type { BenchCase, BenchResult } from '../lib.js';
import {
  MAGLEV_DEFAULT_SIZE,
  MAGLEV_OFFSET_SEED,
  MAGLEV_SKIP_SEED,
  buildMaglevTable,
} from '../../shared/scope/maglev.js';
import { xxh32Utf8 } from '../../shared/hash/xxh32.js';

const M = MAGLEV_DEFAULT_SIZE;

/** Textbook Maglev population (NSDI'16 pseudo-code), no attention to speed. */
function naiveMaglev(members: readonly string[], size: number): number[] {
  const offset: number[] = [];
  const skip: number[] = [];
  for (const m of members) {
    offset.push(xxh32Utf8(m, MAGLEV_OFFSET_SEED) % size);
    skip.push((xxh32Utf8(m, MAGLEV_SKIP_SEED) % (size - 1)) + 1);
  }
  const next: number[] = members.map(() => 0);
  const entry: number[] = new Array<number>(size).fill(-1);
  let n = 0;
  for (;;) {
    for (let i = 0; i < members.length; i++) {
      let c = (offset[i]! + next[i]! * skip[i]!) % size;
      while (entry[c]! >= 0) {
        next[i]!++;
        c = (offset[i]! + next[i]! * skip[i]!) % size;
      }
      entry[c] = i;
      next[i]!++;
      if (++n === size) return entry;
    }
  }
}

const names = (n: number) => Array.from({ length: n }, (_, i) => `fd-${String(i).padStart(3, '0')}`).sort();

function maxShareDeviationPct(t: Uint16Array, n: number): number {
  const counts = new Uint32Array(n);
  for (let j = 0; j < t.length; j++) counts[t[j]!]!++;
  const mean = t.length / n;
  let worst = 0;
  for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(counts[i]! - mean) / mean);
  return worst * 100;
}

const bench: BenchCase = {
  id: 'maglev',
  title: 'Maglev table build (M=65537): typed arrays vs naive textbook',
  async run(progress) {
    const out: BenchResult[] = [];
    for (const n of [8, 64, 256]) {
      const members = names(n);
      // Same table from both before timing.
      if (buildMaglevTable(members, M).join() !== naiveMaglev(members, M).join()) {
        throw new Error(`maglev bench: naive and typed builds disagree for ${n} members`);
      }
      progress(`build ${n} members`);
      const ours = bestTimeMs(() => void buildMaglevTable(members, M), 9);
      const naive = bestTimeMs(() => void naiveMaglev(members, M), 5);
      out.push(timeResult(`build ${n} members, M=${M}`, ours, naive, 'naive textbook (Array, % per probe)'));
    }

    progress('share deviation');
    for (const n of [64, 256]) {
      const dev = maxShareDeviationPct(buildMaglevTable(names(n), M), n);
      out.push({ name: `max share deviation from mean, ${n} members`, value: dev, unit: '%', note: 'informational' });
    }

    progress('removal disruption, 64 members');
    const members = names(64);
    const full = buildMaglevTable(members, M);
    let worst = 0;
    let sum = 0;
    for (const gone of members) {
      const rest = members.filter((m) => m !== gone);
      const t = buildMaglevTable(rest, M);
      let moved = 0;
      for (let j = 0; j < M; j++) if (members[full[j]!] !== rest[t[j]!]) moved++;
      const f = (moved / M) * 100;
      sum += f;
      if (f > worst) worst = f;
    }
    const note = `informational; ideal 1/64 = ${(100 / 64).toFixed(4)}%`;
    out.push({ name: 'buckets moved removing 1 of 64 (mean over all 64)', value: sum / 64, unit: '%', note });
    out.push({ name: 'buckets moved removing 1 of 64 (worst of 64)', value: worst, unit: '%', note });
    return out;
  },
};

export default bench;
