/**
 * Which hash tier a member sends through (its uplink: FD egress toward
 * clients, a service node's replies): the tier its config names, else the
 * first configured tier; if that one is not in the scope update (not alive),
 * the first tier the update lists. With one hash tier, always that one.
 */
import type { BatonConfig } from '../config/config.js';
import { Role, type NodeInfo, type ScopeUpdate } from '../control/messages.js';

export function uplinkOf(u: ScopeUpdate, cfg: BatonConfig, uplink: string | undefined): NodeInfo | null {
  const tiers = u.members.filter((m) => m.node.role === Role.HASH_TIER && m.node.dataAddr).map((m) => m.node);
  const want = uplink ?? cfg.hashTiers[0]?.name;
  return tiers.find((t) => t.name === want) ?? tiers[0] ?? null;
}
