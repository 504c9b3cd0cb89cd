/** Deterministic flow-table contents for the migration bench: `connections` forward+reverse pairs. */
import { FlowTable, NetAction, FlowFlag } from '../distributor/flow-table.js';
import { mulberry32 } from '../shared/random.js';

const VIP = 0xc6336401; // 198.51.100.1

/**
 * Owned (learnedOnly = false): both entries of each connection, owned by
 * `owner` with the rewrite action. Learned (true): the forward entry only, as
 * a redirect to `owner` — what a peer holds after the ownership broadcast.
 */
export function fillConnections(t: FlowTable, connections: number, seed: number, owner: number, learnedOnly: boolean): void {
  const rnd = mulberry32(seed);
  for (let i = 0; i < connections; i++) {
    const c = (0xc0000000 | (rnd() & 0x3fffffff)) >>> 0;
    const cp = 1024 + (i % 60000);
    const b = (0x0a010000 | (i & 3)) >>> 0;
    if (learnedOnly) {
      t.insert(c, VIP, cp, 80, 6, owner, NetAction.REDIRECT, 0, 0, 0, 0, 0);
      continue;
    }
    t.insert(c, VIP, cp, 80, 6, owner, NetAction.REWRITE, 0, b, 8080, 0, 0);
    t.insert(b, c, 8080, cp, 6, owner, NetAction.REWRITE, 0, VIP, 80, FlowFlag.REVERSE | FlowFlag.REWRITE_SRC, 0);
  }
}
