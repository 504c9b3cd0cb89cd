/**
 * The anchored hash-scope table: Maglev over an anchor list (every FD the
 * scope has held since it was last rebalanced), with the buckets of anchor
 * members that are out of scope handed to in-scope members through a fixed
 * per-bucket preference list. Parameters and properties: docs/hashing.md,
 * "Anchored tables".
 *
 * Why: a Maglev table rebuilt from the smaller member set also moves buckets
 * between survivors (at M = 65537, N = 64: 1.35/N of the table instead of
 * 1/N). Here every bucket b has a preference list that depends only on the
 * anchor (names, M, seed), and its owner is the first in-scope member of that
 * list. Taking a member out therefore moves exactly its own buckets, whatever
 * else is out, and putting it back restores the table it had.
 *
 * The list of bucket b:
 *  1. its owner y in the Maglev table of the anchor;
 *  2. the member y's buckets are dealt to: y's g buckets, in ascending
 *     order, go round-robin over the other n-1 anchor members in a rank
 *     order fixed per y, floor(g/(n-1)) full rounds, and the remainder to the
 *     members with fewer Maglev buckets first. With only y out, every
 *     survivor's share is within one bucket of every other's;
 *  3. then every other member by rendezvous score mix(mix(b) ^ h(name)),
 *     highest first.
 * With several members out, shares drift a little from the mean (the
 * per-member deals round independently, and rendezvous is random); the
 * registry watches that drift and rebalances (scope-plan.ts).
 *
 * Off the hot path (runs on a scope change).
 */
import { buildMaglevTable } from './maglev.js';
import { xxh32Utf8 } from '../hash/xxh32.js';
import { BatonError, ErrorCode } from '../errors.js';

/** Tie-break rank seed, "MAGR"; the build seed is XOR-ed in. Frozen. */
export const ANCHOR_RANK_SEED = 0x4d414752;
/** Rendezvous seed, "MAGH"; the build seed is XOR-ed in. Frozen. */
export const ANCHOR_HRW_SEED = 0x4d414748;

/** murmur3 fmix32: a cheap bijective mixer of one uint32. */
function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Builds the table for the members with `inScope[i] !== 0` of the sorted,
 * unique `anchor` (arguments checked by buildMaglevTable). Returns
 * entry[bucket] = anchor index of the owner, always an in-scope member. With
 * every anchor member in scope it is exactly buildMaglevTable(anchor, size,
 * seed). Throws BatonError EMPTY_SCOPE if no member is in scope.
 */
export function buildAnchoredTable(anchor: readonly string[], inScope: Uint8Array, size: number, seed = 0): Uint16Array {
  const table = buildMaglevTable(anchor, size, seed);
  const n = anchor.length;
  let out = 0;
  for (let i = 0; i < n; i++) if (!inScope[i]) out++;
  if (out === 0) return table;
  if (out === n) throw new BatonError(ErrorCode.EMPTY_SCOPE, 'buildAnchoredTable: no anchor member is in scope');

  const shares = new Float64Array(n); // Maglev shares
  const first = new Int32Array(size); // per owner, its buckets in ascending order (counting sort)
  for (let b = 0; b < size; b++) shares[table[b]!]!++;
  const start = new Int32Array(n + 1);
  for (let i = 0; i < n; i++) start[i + 1] = start[i]! + shares[i]!;
  const fill = start.slice(0, n);
  for (let b = 0; b < size; b++) {
    const o = table[b]!;
    first[fill[o]!++] = b;
  }
  const rankKey = new Uint32Array(n);
  const hrwKey = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    rankKey[i] = xxh32Utf8(anchor[i]!, seed ^ ANCHOR_RANK_SEED);
    hrwKey[i] = xxh32Utf8(anchor[i]!, seed ^ ANCHOR_HRW_SEED);
  }

  const order: number[] = [];
  const rank = new Uint32Array(n);
  for (let y = 0; y < n; y++) {
    if (inScope[y]) continue;
    // Deal y's buckets (their second preference). It depends on the anchor
    // and y only, so it is the same whichever other members are out.
    const ky = mix32(rankKey[y]!);
    order.length = 0;
    for (let z = 0; z < n; z++) {
      if (z === y) continue;
      rank[z] = mix32(rankKey[z]! ^ ky);
      order.push(z);
    }
    // Full rounds in rank order, then the remainder to the members with the
    // fewer Maglev buckets first (so with only y out, every share is within
    // one bucket of every other).
    order.sort((a, b) => rank[a]! - rank[b]! || a - b);
    const g = start[y + 1]! - start[y]!;
    const full = Math.floor(g / order.length) * order.length;
    const rest = order.slice().sort((a, b) => shares[a]! - shares[b]! || rank[a]! - rank[b]! || a - b);
    for (let j = 0; j < g; j++) {
      const b = first[start[y]! + j]!;
      const z = j < full ? order[j % order.length]! : rest[j - full]!;
      table[b] = inScope[z] ? z : rendezvous(b, inScope, hrwKey, n);
    }
  }
  return table;
}

/** In-scope member with the highest rendezvous score for bucket b (ties: lower index). */
function rendezvous(b: number, inScope: Uint8Array, hrwKey: Uint32Array, n: number): number {
  let best = -1;
  let bestScore = -1;
  const hb = mix32(b ^ ANCHOR_HRW_SEED);
  for (let z = 0; z < n; z++) {
    if (!inScope[z]) continue;
    const s = mix32(hb ^ hrwKey[z]!);
    if (s > bestScore) {
      bestScore = s;
      best = z;
    }
  }
  return best;
}
