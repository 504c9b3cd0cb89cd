/**
 * The hash scope: which FDs the hash tier sprays over (spec: "changing a hash
 * scope in a hashing algorithm to remove the target node"). A HashScope is an
 * immutable, versioned snapshot (sorted members + Maglev table); a
 * ScopeHolder is the one mutable cell the hot path reads, swapped whole.
 */
import { BatonError, ErrorCode } from '../errors.js';
import { MAGLEV_DEFAULT_SIZE, checkMaglevArgs } from './maglev.js';
import { buildAnchoredTable } from './anchored.js';

export class HashScope {
  readonly version: number;
  /** Sorted (plain code-unit order), unique, frozen. */
  readonly members: readonly string[];
  /**
   * The anchor the table was built on (docs/hashing.md, "Anchored tables"):
   * sorted, unique, frozen, a superset of `members`. Equal to `members` for a
   * plain Maglev table.
   */
  readonly anchor: readonly string[];
  /** table[bucket] = index into members. Treat as read-only. */
  readonly table: Uint16Array;
  readonly size: number;

  private constructor(version: number, members: readonly string[], anchor: readonly string[], table: Uint16Array) {
    this.version = version;
    this.members = members;
    this.anchor = anchor;
    this.table = table;
    this.size = table.length;
  }

  /**
   * Builds a snapshot. Members are deduplicated and sorted with the default
   * Array.prototype.sort (UTF-16 code-unit order, locale-independent), so
   * every node given the same set -- in any order, with repeats -- builds a
   * byte-identical table. `anchor` (default: the members) names the FDs the
   * table is anchored on; the members are added to it. Anchor members that
   * are not members own no bucket: their Maglev buckets go to members by a
   * fixed preference list (shared/scope/anchored.ts). Throws BatonError
   * (EMPTY_SCOPE, BAD_ARGUMENT).
   */
  static build(
    version: number,
    members: Iterable<string>,
    size: number = MAGLEV_DEFAULT_SIZE,
    seed = 0,
    anchor: Iterable<string> = [],
  ): HashScope {
    if (!Number.isSafeInteger(version) || version < 0) {
      throw new BatonError(
        ErrorCode.BAD_ARGUMENT,
        `HashScope: version ${version} must be a non-negative safe integer`,
        { version },
      );
    }
    const sorted = Object.freeze([...new Set(members)].sort());
    checkMaglevArgs(sorted, size, seed);
    const inScope = new Set(sorted);
    const all = new Set(sorted);
    for (const a of anchor) all.add(a);
    const anchorSorted = all.size === sorted.length ? sorted : Object.freeze([...all].sort());
    const flags = Uint8Array.from(anchorSorted, (a) => (inScope.has(a) ? 1 : 0));
    const table = buildAnchoredTable(anchorSorted, flags, size, seed);
    if (anchorSorted !== sorted) {
      // Anchor index -> member index (both lists are sorted).
      const toMember = new Uint16Array(anchorSorted.length);
      for (let i = 0, j = 0; i < anchorSorted.length; i++) if (flags[i]) toMember[i] = j++;
      for (let b = 0; b < table.length; b++) table[b] = toMember[table[b]!]!;
    }
    return new HashScope(version, sorted, anchorSorted, table);
  }

  /**
   * How far the most-loaded or least-loaded member's bucket count is from
   * the mean, as a fraction of the mean (0.01 = 1%). O(M); off the hot path.
   */
  maxShareDeviation(): number {
    const counts = new Float64Array(this.members.length);
    for (let b = 0; b < this.size; b++) counts[this.table[b]!]!++;
    const mean = this.size / this.members.length;
    let worst = 0;
    for (const c of counts) worst = Math.max(worst, Math.abs(c - mean) / mean);
    return worst;
  }

  /** Member index owning a 32-bit hash. Hot path: one % and one load. */
  pick(hash: number): number {
    return this.table[(hash >>> 0) % this.size]!;
  }

  /** Name of the member owning a hash (no allocation: returns the stored string). */
  memberOf(hash: number): string {
    return this.members[this.table[(hash >>> 0) % this.size]!]!;
  }

  /** Index of a member name, or -1. Off the hot path (linear scan). */
  indexOf(name: string): number {
    return this.members.indexOf(name);
  }

  has(name: string): boolean {
    return this.members.includes(name);
  }
}

export type ScopeListener = (next: HashScope, prev: HashScope) => void;

/**
 * Holds the current HashScope. The hot path reads `holder.current` (a plain
 * field) once per packet; apply() replaces it whole, so a reader sees either
 * the old or the new snapshot, never a mix.
 */
export class ScopeHolder {
  /** The current snapshot. Read freely; change only through apply(). */
  readonly current: HashScope;
  private readonly listeners: ScopeListener[] = [];

  constructor(initial: HashScope) {
    this.current = initial;
  }

  /**
   * Swaps to `next` only if next.version > current.version; returns whether
   * it swapped. Re-applying the same or an older version is a no-op (false),
   * so scope updates can be delivered more than once or out of order.
   * Listeners run after the swap; if any throws, the rest still run and the
   * first error is rethrown (the swap stands).
   */
  apply(next: HashScope): boolean {
    const prev = this.current;
    if (!(next.version > prev.version)) return false;
    (this as { current: HashScope }).current = next;
    let firstError: unknown;
    let failed = false;
    for (const l of this.listeners.slice()) {
      try {
        l(next, prev);
      } catch (e) {
        if (!failed) {
          failed = true;
          firstError = e;
        }
      }
    }
    if (failed) throw firstError;
    return true;
  }

  /** Registers a swap listener (off the hot path); returns an unsubscribe function. */
  onSwap(listener: ScopeListener): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }
}

/**
 * A scope over named members together with each member's node id, in the
 * scope's (sorted) member order: `ids[scope.pick(hash)]` is the chosen node.
 */
export function scopeWithIds(
  version: number,
  members: readonly { name: string; id: number }[],
  size: number,
  seed: number,
  anchor: Iterable<string> = [],
): { scope: HashScope; ids: Uint16Array } {
  const scope = HashScope.build(version, members.map((m) => m.name), size, seed, anchor);
  const idOf = new Map(members.map((m) => [m.name, m.id]));
  return { scope, ids: Uint16Array.from(scope.members, (n) => idOf.get(n)!) };
}
