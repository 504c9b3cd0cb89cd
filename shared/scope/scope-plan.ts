/**
 * Policy: which anchor the next hash scope is built on (docs/hashing.md,
 * "Anchored tables"). The mechanism -- the table for an anchor and a member
 * set -- is HashScope.build; this decides the anchor:
 *
 *  - the anchor keeps every FD the scope has held since the last rebalance,
 *    so an FD that leaves moves exactly its own buckets and one that comes
 *    back gets exactly them back;
 *  - members new to the anchor join it (a Maglev addition);
 *  - if the anchored table would leave some member's share more than
 *    `rebalanceAbovePct` off the mean, the anchor is reset to the members (a
 *    plain Maglev table: every share within one bucket), which moves more
 *    buckets once.
 *
 * The manager plans with it both the scope it publishes and the scope a
 * disengage announces in advance (DisengageRequest.next_scope), so both are
 * the same table.
 */
import { HashScope } from './hash-scope.js';

/** Default of config `hash.rebalanceAbovePct`. */
export const DEFAULT_REBALANCE_ABOVE_PCT = 3;

export interface PlannedScope {
  scope: HashScope;
  /** The anchor to remember (= scope.anchor). */
  anchor: readonly string[];
  /** True if the anchor was reset to the members because the anchored table was too uneven. */
  rebalanced: boolean;
  /** Worst share deviation of the anchored table before any rebalance (fraction of the mean). */
  anchoredDeviation: number;
}

/**
 * Plans the scope of `members` given the anchor so far. Throws what
 * HashScope.build throws (e.g. EMPTY_SCOPE for no members).
 */
export function planScope(
  version: number,
  anchor: Iterable<string>,
  members: Iterable<string>,
  size: number,
  seed: number,
  rebalanceAbovePct: number,
): PlannedScope {
  const scope = HashScope.build(version, members, size, seed, anchor);
  const dev = scope.maxShareDeviation();
  // A plain table (anchor = members) is as even as Maglev gets: nothing to reset.
  if (scope.anchor === scope.members || dev * 100 <= rebalanceAbovePct) return { scope, anchor: scope.anchor, rebalanced: false, anchoredDeviation: dev };
  const plain = HashScope.build(version, scope.members, size, seed);
  return { scope: plain, anchor: plain.anchor, rebalanced: true, anchoredDeviation: dev };
}
