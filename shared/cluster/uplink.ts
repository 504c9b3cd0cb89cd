/**
 * Which hash tier a member sends through (its uplink: FD egress toward
 * clients, a service node's replies): the tier its config names, else the
 * first configured tier; if that one is not in the scope update (its store
 * lease ran out) or the member's link to its manager is down (the process
 * died: its connections closed), the first tier listed whose link is up.
 * A tier the member keeps no link to, or whose first connection is still
 * being made, counts as up; when every listed tier's link is down, links
 * are ignored. With one hash tier, always that one.
 *
 * Any tier will do: egress frames carry the client's locator
 * (docs/wire-encapsulation.md §3a), so the uplink need not be the tier the
 * client entered through. Members re-pick on every scope update, and on a
 * link change (MemberAgent onLinkChange) when the uplink's own link went
 * down (uplinkOnLinkChange), so a dead uplink is left as soon as its control
 * connection closes. Going back to the configured tier waits for the next
 * scope update: a tier that restarted may have a new data address, which
 * only an update carries.
 */
import type { BatonConfig } from '../config/config.js';
import { Role, type NodeInfo, type ScopeUpdate } from '../control/messages.js';

/** Is the member's link to this tier's manager up? undefined = no link kept (unknown). */
export type TierLinkState = (tier: NodeInfo) => boolean | undefined;

function tiersOf(u: ScopeUpdate): NodeInfo[] {
  return u.members.filter((m) => m.node.role === Role.HASH_TIER && m.node.dataAddr).map((m) => m.node);
}

export function uplinkOf(u: ScopeUpdate, cfg: BatonConfig, uplink: string | undefined, linkUp?: TierLinkState): NodeInfo | null {
  const tiers = tiersOf(u);
  const want = uplink ?? cfg.hashTiers[0]?.name;
  const live = linkUp ? tiers.filter((t) => linkUp(t) !== false) : tiers;
  const pool = live.length > 0 ? live : tiers;
  return pool.find((t) => t.name === want) ?? pool[0] ?? null;
}

/**
 * A manager link went up or down: the tier to move to, or null to stay.
 * A member leaves its uplink (data address `current`) only when that tier's
 * link is down; otherwise it stays.
 */
export function uplinkOnLinkChange(u: ScopeUpdate, cfg: BatonConfig, uplink: string | undefined, linkUp: TierLinkState, current: string | null): NodeInfo | null {
  const cur = current === null ? undefined : tiersOf(u).find((t) => t.dataAddr === current);
  if (cur !== undefined && linkUp(cur) !== false) return null;
  const next = uplinkOf(u, cfg, uplink, linkUp);
  return next && next.dataAddr !== current ? next : null;
}
