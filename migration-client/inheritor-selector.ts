/**
 * Inheritor selection (seed 003, "inheritor selector"): which peer FD takes
 * which of the departing FD's flows. Every policy yields a deterministic
 * function of the connection's forward key, so both entries of a connection
 * (forward and reverse) always go to the same inheritor.
 *
 *   least-flows   the peer with the fewest flows (from the manager's stats)
 *   spread        flows divided so that every peer ends with an even total
 *   named         one inheritor named by the operator (e.g. a fresh FD)
 *   random        one peer, chosen with a seeded PRNG
 *   hash-aligned  each flow to the FD the shrunken scope sends its packets
 *                 to, so no flow needs a redirect hop afterwards (ours)
 *
 * A backup inheritor (optional, any policy) also receives the entries.
 */
import { BatonError, ErrorCode } from '../shared/errors.js';
import { hashFiveTuple } from '../shared/hash/xxh32.js';
import type { HashScope } from '../shared/scope/hash-scope.js';
import { mulberry32 } from '../shared/random.js';
import { INHERITOR_POLICIES, type InheritorPolicy } from '../shared/config/config.js';

export interface PeerInfo {
  id: number;
  name: string;
  flowsOwned: number;
}

export interface SelectorInput {
  policy: string;
  self: { id: number; name: string };
  /** ACTIVE peers (the target excluded). */
  peers: readonly PeerInfo[];
  /** Connections (forward flows) the target owns. */
  ownFlows: number;
  inheritor?: string;
  backup?: string;
  /** The scope without the target, and each member's node id. */
  nextScope: HashScope;
  nextIds: Uint16Array;
  hashSeed: number;
  randomSeed?: number;
}

export interface InheritorPlan {
  policy: InheritorPolicy;
  inheritors: PeerInfo[];
  backup: PeerInfo | null;
  /** Index into `inheritors` for the connection whose forward key this is. */
  assign(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number): number;
}

export function isPolicy(p: string): p is InheritorPolicy {
  return (INHERITOR_POLICIES as readonly string[]).includes(p);
}

export function selectInheritors(i: SelectorInput): InheritorPlan {
  if (!isPolicy(i.policy)) {
    throw new BatonError(ErrorCode.BAD_ARGUMENT, `unknown inheritor policy ${JSON.stringify(i.policy)}; use one of ${INHERITOR_POLICIES.join(', ')}`);
  }
  const peers = i.peers.filter((p) => p.id !== i.self.id).sort((a, b) => a.id - b.id);
  if (peers.length === 0) {
    throw new BatonError(ErrorCode.EMPTY_SCOPE, `${i.self.name} has no ACTIVE peer to hand its flows to: the last FD cannot disengage`);
  }
  const byName = (name: string, what: string): PeerInfo => {
    const p = peers.find((x) => x.name === name);
    if (!p) {
      const why = name === i.self.name ? 'it is the node being disengaged' : 'it is not an ACTIVE peer';
      throw new BatonError(ErrorCode.UNKNOWN_NODE, `${what} ${JSON.stringify(name)} cannot be used: ${why} (ACTIVE peers: ${peers.map((p) => p.name).join(', ')})`);
    }
    return p;
  };
  const backup = i.backup ? byName(i.backup, 'backup inheritor') : null;
  const single = (p: PeerInfo): InheritorPlan => {
    if (backup && backup.id === p.id) throw new BatonError(ErrorCode.BAD_ARGUMENT, `the backup inheritor must differ from the inheritor (${p.name})`);
    return { policy: i.policy as InheritorPolicy, inheritors: [p], backup, assign: () => 0 };
  };

  switch (i.policy as InheritorPolicy) {
    case 'least-flows': {
      let best = peers[0]!;
      for (const p of peers) if (p.flowsOwned < best.flowsOwned && p.id !== backup?.id) best = p;
      if (best.id === backup?.id) best = peers.find((p) => p.id !== backup.id) ?? best;
      return single(best);
    }
    case 'named':
      if (!i.inheritor) throw new BatonError(ErrorCode.BAD_ARGUMENT, 'policy "named" needs an inheritor name (--inheritor <fd>)');
      return single(byName(i.inheritor, 'inheritor'));
    case 'random': {
      const candidates = peers.filter((p) => p.id !== backup?.id);
      const r = mulberry32(i.randomSeed ?? Date.now())();
      return single(candidates[r % candidates.length] ?? peers[0]!);
    }
    case 'spread': {
      // Fill each peer up to the even total: weights are the deficits.
      const total = peers.reduce((n, p) => n + p.flowsOwned, 0) + i.ownFlows;
      const even = total / peers.length;
      let weights = peers.map((p) => Math.max(0, even - p.flowsOwned));
      if (weights.every((w) => w === 0)) weights = peers.map(() => 1);
      const sum = weights.reduce((a, b) => a + b, 0);
      const cum = new Float64Array(peers.length);
      let acc = 0;
      weights.forEach((w, k) => (cum[k] = acc += (w / sum) * 4294967296));
      cum[peers.length - 1] = 4294967296;
      const seed = (i.hashSeed ^ 0x5a17) >>> 0;
      return {
        policy: 'spread',
        inheritors: peers,
        backup,
        assign(s, d, sp, dp, pr) {
          const h = hashFiveTuple(s, d, sp, dp, pr, seed);
          let k = 0;
          while (h >= cum[k]!) k++;
          return k;
        },
      };
    }
    case 'hash-aligned': {
      const scope = i.nextScope;
      const ids = i.nextIds;
      const index = new Map(peers.map((p, k) => [p.id, k]));
      const col = new Int32Array(ids.length);
      ids.forEach((id, k) => {
        const at = index.get(id);
        if (at === undefined) throw new BatonError(ErrorCode.UNKNOWN_NODE, `next scope member ${scope.members[k]} (${id}) is not an ACTIVE peer`);
        col[k] = at;
      });
      const seed = i.hashSeed >>> 0;
      return {
        policy: 'hash-aligned',
        inheritors: peers,
        backup,
        assign: (s, d, sp, dp, pr) => col[scope.pick(hashFiveTuple(s, d, sp, dp, pr, seed))]!,
      };
    }
  }
}

