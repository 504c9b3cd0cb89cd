/**
 * Every fuzz target, in the order `npm run fuzz` runs them, and the seed
 * each runs with: fixed per target (derived from its name), so a run is
 * reproducible and `--only` replays exactly what the full run did.
 */
import type { FuzzTarget } from './check.js';
import { packetTarget } from './targets/packet.js';
import { encapTarget } from './targets/encap.js';
import { batchTarget } from './targets/batch.js';
import { edgeGpeTarget, edgeGeneveTarget } from './targets/edge.js';
import { controlTarget } from './targets/control.js';
import { channelTarget } from './targets/channel.js';
import { streamTarget } from './targets/stream.js';
import { flowExportTarget } from './targets/flow-export.js';
import { ownershipTarget } from './targets/ownership.js';
import { queueProbeTarget } from './targets/queue-probe.js';
import { parseConfigTarget, loadConfigTarget } from './targets/config.js';

export const TARGETS: readonly FuzzTarget<never>[] = [
  packetTarget,
  encapTarget,
  batchTarget,
  edgeGpeTarget,
  edgeGeneveTarget,
  controlTarget,
  channelTarget,
  streamTarget,
  flowExportTarget,
  ownershipTarget,
  queueProbeTarget,
  parseConfigTarget,
  loadConfigTarget,
] as unknown as FuzzTarget<never>[];

/** The default seed of a target: FNV-1a of its name (a 31-bit integer, as fast-check takes it). */
export function seedOf(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return (h >>> 0) & 0x7fffffff;
}
