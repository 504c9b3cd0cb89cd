/**
 * The FD's per-packet algorithm, as seed 003 ("flow-handling algorithm"):
 *
 *   - no entry + TCP SYN (or UDP datagram): create flow and reverse flow with
 *     the action the service policy picks, report ownership, apply action;
 *   - entry owned by a peer: redirect to the owner;
 *   - entry owned here: apply its action (forward | rewrite);
 *   - RST, or a FIN in each direction: mark the flow closing; it is removed
 *     after `lingerMs` so the closing handshake still passes. A FIN one way
 *     only is a half-close (the other side may go on sending for as long as
 *     it likes, as real TCP stacks do): the direction is marked FIN_SEEN and
 *     the flow carries on;
 *   - TCP non-SYN with no entry and no known owner: counted drop.
 *
 * Hot path: `handle()` allocates nothing, throws nothing, reads no clock —
 * the caller calls `tick()` once per batch, which samples the injected clock
 * and does the amortized housekeeping (linger removals, idle expiry).
 */
import { parseIPv4 } from '../shared/packet/parse.js';
import { rewriteDst, rewriteSrc } from '../shared/packet/rewrite.js';
import { PacketMeta, IPPROTO_TCP, TCP_SYN, TCP_ACK, TCP_FIN, TCP_RST } from '../shared/packet/meta.js';
import { Reject } from '../shared/packet/reject.js';
import type { Clock } from '../shared/clock.js';
import type { Counters } from '../shared/counters.js';
import { BatonError, ErrorCode } from '../shared/errors.js';
import { FlowTable, NetAction, FlowFlag, OWNER_NONE } from './flow-table.js';
import { FlowAction, type ServicePolicy } from './service-policy.js';
import { FD, rejectCounter, newFdCounters } from './fd-counters.js';
import { scopeHash } from './scope-hash.js';
import { FlowKey, partnerKey, forwardKey } from './flow-pair.js';
import type { ReplicationSink } from './replication.js';
import type { HashScope } from '../shared/scope/hash-scope.js';
import { writeTcpReset, TCP_RESET_LENGTH } from '../shared/packet/reset.js';

export const Verdict = {
  /** Send the (possibly rewritten) packet on to meta.dstIp:dstPort. */
  FORWARD: 0,
  /** Send the packet, unchanged, to peer FD `handler.redirectOwner`. */
  REDIRECT: 1,
  /** Drop it; `handler.dropCounter` is the counter id that was incremented. */
  DROP: 2,
} as const;
export type Verdict = (typeof Verdict)[keyof typeof Verdict];

/** Reports ownership changes (the broadcast to peers is built on this). No allocation per call. */
export interface OwnershipSink {
  flowCreated(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number, owner: number): void;
  flowRemoved?(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number): void;
}

export interface FlowHandlerOptions {
  /** This FD's node id (uint16, not 0xFFFF). */
  selfId: number;
  table: FlowTable;
  policy: ServicePolicy;
  clock: Clock;
  ownership?: OwnershipSink;
  counters?: Counters;
  /** How long a closing flow lingers after FIN/RST (default 2000 ms). */
  lingerMs?: number;
  /** Idle flows are removed after this (default 120 000 ms). */
  idleMs?: number;
  /**
   * Entries learned from peers are removed after this idle time (default
   * 10 x idleMs). Their owner says when its flow ends (closed or idle), and
   * announces its flows again from time to time (OwnershipMesh refreshMs),
   * so this only catches records that were lost.
   */
  learnedIdleMs?: number;
  /** Table slots examined for idle expiry per tick (default 1024). */
  expiryBudget?: number;
  /** Capacity of the linger queue (default 65536 flows). */
  lingerCapacity?: number;
  /**
   * Embryonic TCP connections (SYN seen, no ACK from the client yet) this FD
   * keeps at most (default a quarter of the table): a new one beyond it
   * evicts the oldest still embryonic (counted embryonic_evicted). A SYN
   * flood from spoofed sources cannot fill the table, and established
   * flows never make room for it.
   */
  embryonicCapacity?: number;
  /** Verify L4 checksums on ingress (default true). */
  verifyL4Checksum?: boolean;
  /**
   * The hash tier picks FDs by the client's end of a flow (hash.key client;
   * hash-tier/forwarding-engine.ts clientKeyHash): a packet to `vip` is a
   * client's (its source is the client), any other a reply (its destination
   * is). A leaving FD redirects by the same rule. Absent: the 5-tuple.
   */
  clientKeyVip?: number;
  /** hash.symmetric: the hash tier hashes both directions of a 5-tuple alike. */
  symmetricHash?: boolean;
}

const NOOP_SINK: OwnershipSink = { flowCreated() {} };

export class FlowHandler {
  readonly selfId: number;
  readonly table: FlowTable;
  readonly counters: Counters;
  /** The parse result of the last packet (dst fields are the rewritten ones after FORWARD). */
  readonly meta = new PacketMeta();
  /** Set when handle() returns REDIRECT: where to send the packet. */
  redirectOwner = 0;
  /** Set when handle() returns REDIRECT: the owner hint to write (the known owner, or OWNER_NONE). */
  redirectHint = OWNER_NONE;
  /** Set when handle() returns DROP. */
  dropCounter = 0;
  /**
   * owner id -> 1 while the scope says that FD is FAILED (setFailed). A
   * packet of a flow it owned is not redirected to it: a promoted replica
   * has taken it over here, or it is re-created by the stateless second
   * line, or it is a counted drop_owner_failed (docs/failure.md).
   */
  readonly failedOwners = new Uint8Array(0x10000);
  /** Time sampled by the last tick(). */
  nowMs: number;

  private readonly policy: ServicePolicy;
  private readonly clock: Clock;
  private sink: OwnershipSink;
  private readonly lingerMs: number;
  private readonly idleMs: number;
  private readonly learnedIdleMs: number;
  /** Keys of own entries the last expiry step removed (4 words each; 256 per tick at most). */
  private readonly expiredKeys = new Uint32Array(256 * 4);
  private readonly expiryBudget: number;
  private readonly verifyL4: boolean;
  private readonly action = new FlowAction();
  // Linger queue: FIFO ring of flow keys with their removal deadlines.
  // Deadlines are pushed in time order (constant linger), so the head is the soonest.
  private readonly lingerKeys: Uint32Array; // 4 words per entry: srcIp, dstIp, ports, proto
  // Embryonic ring: FIFO of the forward keys of connections created by a SYN, oldest first.
  private readonly embryoKeys: Uint32Array; // 4 words per entry: srcIp, dstIp, ports, proto
  private embryoHead = 0;
  private embryoCount = 0;
  private readonly lingerDeadline: Float64Array;
  private lingerHead = 0;
  private lingerCount = 0;
  // Scratch for the partner (other direction) key.
  private readonly p = new FlowKey();

  constructor(o: FlowHandlerOptions) {
    if (!Number.isInteger(o.selfId) || o.selfId < 0 || o.selfId >= 0xffff) {
      throw new BatonError(ErrorCode.BAD_ARGUMENT, `selfId must be an integer in 0..65534, got ${o.selfId}`);
    }
    this.selfId = o.selfId;
    this.table = o.table;
    this.policy = o.policy;
    this.clock = o.clock;
    this.sink = o.ownership ?? NOOP_SINK;
    this.counters = o.counters ?? newFdCounters();
    this.lingerMs = positive('lingerMs', o.lingerMs ?? 2000);
    this.clientKeyVip = o.clientKeyVip === undefined ? -1 : o.clientKeyVip >>> 0;
    this.idleMs = positive('idleMs', o.idleMs ?? 120_000);
    this.learnedIdleMs = positive('learnedIdleMs', o.learnedIdleMs ?? this.idleMs * 10);
    this.expiryBudget = positive('expiryBudget', o.expiryBudget ?? 1024);
    const emb = positive('embryonicCapacity', o.embryonicCapacity ?? Math.max(1, Math.floor(o.table.maxFlows / 4)));
    this.embryoKeys = new Uint32Array(emb * 4);
    const cap = positive('lingerCapacity', o.lingerCapacity ?? 65536);
    this.lingerKeys = new Uint32Array(cap * 4);
    this.lingerDeadline = new Float64Array(cap);
    this.verifyL4 = o.verifyL4Checksum ?? true;
    this.symmetric = o.symmetricHash ?? false;
    this.nowMs = Math.floor(this.clock.now());
  }

  /**
   * Process one IPv4 packet in place at buf[off, off+len). Returns a Verdict;
   * on FORWARD the packet may have been rewritten (length unchanged).
   *
   * `ownerHint` is the owner FD named by the encapsulation (a service node
   * echoes the id of the FD that sent it the request). It only matters when
   * this FD has no entry for a non-SYN packet: the ownership broadcast may
   * not have arrived yet, so the packet is redirected to the hinted owner
   * instead of being dropped. OWNER_NONE (0xFFFF) or 0 means no hint.
   * `shed`: the frame carried EncapFlag.SHED — a packet that would create a
   * flow is dropped instead (drop_shed_new_flow); established flows are unaffected.
   */
  handle(buf: Uint8Array, off: number, len: number, ownerHint = OWNER_NONE, shed = false): Verdict {
    const c = this.counters;
    const m = this.meta;
    c.inc(FD.rx_packets);
    c.inc(FD.rx_bytes, len);
    // Declared FAILED (it was hung, and is running again): its flows are promoted elsewhere; it stays out.
    if (this.fenced) return this.drop(FD.drop_fenced);
    const rej = parseIPv4(buf, off, len, m, this.verifyL4);
    if (rej !== Reject.OK) return this.drop(rejectCounter(rej));

    const t = this.table;
    let slot = t.find(m.srcIp, m.dstIp, m.srcPort, m.dstPort, m.proto);
    const isTcp = m.proto === IPPROTO_TCP;
    const flags = m.tcpFlags;
    const isSyn = isTcp && (flags & (TCP_SYN | TCP_ACK)) === TCP_SYN;

    if (slot >= 0 && isSyn && (t.flags(slot) & FlowFlag.CLOSING) !== 0 && t.owner(slot) === this.selfId && !this.frozen) {
      // Port reuse: a new connection on a 5-tuple that is still lingering.
      this.removePair(slot);
      slot = -1;
    }

    if (slot < 0) {
      if (ownerHint !== OWNER_NONE && ownerHint !== 0 && ownerHint !== this.selfId && this.failedOwners[ownerHint] === 0) {
        this.redirectOwner = ownerHint;
        this.redirectHint = ownerHint;
        c.inc(FD.redirected_by_hint);
        return Verdict.REDIRECT;
      }
      const next = this.nextScope;
      if (next !== null) {
        // Leaving the cluster: this FD creates no flow any more. A packet it has
        // no entry for goes where the shrunken scope will send it; that FD owns
        // the flow, knows its owner from the (acknowledged) broadcasts, or, for
        // a SYN, creates it.
        const h = scopeHash(m.srcIp, m.dstIp, m.srcPort, m.dstPort, m.proto, this.nextSeed, this.clientKeyVip, this.symmetric);
        this.redirectOwner = this.nextIds[next.pick(h)]!;
        this.redirectHint = OWNER_NONE;
        c.inc(FD.redirected_leaving);
        return Verdict.REDIRECT;
      }
      if (isTcp && !isSyn) return this.drop(FD.drop_no_flow);
      // The hash tier is shedding load (EncapFlag.SHED, hash-tier/admission.ts): no new flow.
      if (shed) return this.drop(FD.drop_shed_new_flow);
      slot = this.createFlow();
      if (slot < 0) return Verdict.DROP; // createFlow counted the reason
    } else if (t.owner(slot) !== this.selfId && this.failedOwners[t.owner(slot)] !== 0) {
      // Its owner is dead and no replica of it was promoted here: the second line.
      slot = this.recreate(slot);
      if (slot < 0) return Verdict.DROP; // counted
    } else if (t.owner(slot) !== this.selfId) {
      // Touch keeps a learned entry alive while its flow is active here.
      t.touch(slot, len, this.nowMs);
      this.redirectOwner = t.owner(slot);
      this.redirectHint = this.redirectOwner;
      c.inc(FD.redirected);
      return Verdict.REDIRECT;
    }

    t.touch(slot, len, this.nowMs);
    // The client's ACK (no SYN) on the forward entry: the handshake is done, the connection is established.
    if (isTcp && (flags & (TCP_SYN | TCP_ACK)) === TCP_ACK && (t.flags(slot) & (FlowFlag.EMBRYONIC | FlowFlag.REVERSE)) === FlowFlag.EMBRYONIC) t.setFlags(slot, t.flags(slot) & ~FlowFlag.EMBRYONIC);
    if (isTcp && (flags & (TCP_FIN | TCP_RST)) !== 0 && (t.flags(slot) & FlowFlag.CLOSING) === 0) this.onClose(slot, (flags & TCP_RST) !== 0);
    if (t.netAction(slot) === NetAction.REWRITE) {
      if ((t.flags(slot) & FlowFlag.REWRITE_SRC) !== 0) rewriteSrc(buf, m, t.rewriteIp(slot), t.rewritePort(slot));
      else rewriteDst(buf, m, t.rewriteIp(slot), t.rewritePort(slot));
      c.inc(FD.rewritten);
    } else {
      c.inc(FD.forwarded);
    }
    this.forwardedSlot = slot; // for backendDied()
    return Verdict.FORWARD;
  }

  /**
   * Housekeeping, once per batch: samples the clock, removes flows whose
   * linger ended, and examines up to `expiryBudget` slots for idle expiry.
   */
  tick(): void {
    // Integer milliseconds: a fractional number passed to a table method V8 did
    // not inline would be boxed (an allocation per packet).
    const now = Math.floor(this.clock.now());
    this.nowMs = now;
    // While the table is being migrated no entry may move (slots are the
    // migration's handles), so removals wait; the purge empties it anyway.
    if (this.frozen) return;
    while (this.lingerCount > 0 && this.lingerDeadline[this.lingerHead]! <= now) {
      const k = this.lingerHead * 4;
      const w = this.lingerKeys;
      const ports = w[k + 2]!;
      const slot = this.table.find(w[k]!, w[k + 1]!, ports >>> 16, ports & 0xffff, w[k + 3]!);
      // Only an entry still ours: one whose ownership moved on (a migration
      // rolled back, a conflict yielded) is removed by its owner's broadcast.
      if (slot >= 0 && (this.table.flags(slot) & FlowFlag.CLOSING) !== 0 && this.table.owner(slot) === this.selfId) {
        this.removePair(slot);
        this.counters.inc(FD.flows_closed);
      }
      this.lingerHead = this.lingerHead + 1 === this.lingerDeadline.length ? 0 : this.lingerHead + 1;
      this.lingerCount--;
    }
    const t = this.table;
    const expired = t.expireStepOwned(now, this.idleMs, this.learnedIdleMs, this.selfId, this.expiryBudget, this.expiredKeys);
    if (expired > 0) {
      this.counters.inc(FD.flows_expired, expired);
      // Peers forget them too: a learned entry is not aged out while its flow lives.
      const s = this.sink;
      const n = t.lastExpiredOwned;
      if (s.flowRemoved && n > 0) {
        const k = this.expiredKeys;
        for (let i = 0; i < n * 4; i += 4) s.flowRemoved(k[i]!, k[i + 1]!, k[i + 2]! >>> 16, k[i + 2]! & 0xffff, k[i + 3]! & 0xff);
      }
    }
  }

  /** Record that peer `owner` owns a flow (from an ownership broadcast). Off the per-packet path. */
  learnOwnership(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number, owner: number): boolean {
    if (this.frozen) return false; // a migration holds slot indexes: nothing may move
    const t = this.table;
    const slot = t.find(srcIp, dstIp, srcPort, dstPort, proto);
    if (slot >= 0) {
      if (t.owner(slot) === this.selfId && owner !== this.selfId) {
        // Two FDs created the same flow: a packet reached each before the
        // other's broadcast did (e.g. around a scope change, the hash tier
        // already on the new table, this FD not yet). Taking the peer's word
        // on both sides would make each redirect to the other (a loop). Both
        // apply one rule instead: the lower node id keeps the flow. The
        // keeper says so again so that every peer ends on the same owner.
        if (owner > this.selfId) {
          this.counters.inc(FD.ownership_conflicts_kept);
          this.sink.flowCreated(srcIp, dstIp, srcPort, dstPort, proto, this.selfId);
          return true;
        }
        this.counters.inc(FD.ownership_conflicts_yielded);
      }
      t.setOwner(slot, owner);
      t.refresh(slot, this.nowMs); // announced again: the flow lives
    } else if (t.insert(srcIp, dstIp, srcPort, dstPort, proto, owner, NetAction.REDIRECT, 0, 0, 0, 0, this.nowMs) < 0) {
      this.counters.inc(FD.learn_table_full); // an ownership record, not a frame: not a drop_ counter
      return false;
    }
    this.counters.inc(FD.flows_learned);
    return true;
  }

  /**
   * The part of learnOwnership that is safe while frozen: an existing entry
   * of a peer's flow names `owner` from now on (moves no entry, adds none;
   * entries this FD owns are left to learnOwnership's conflict rule). Returns
   * true when the entry exists and was updated. Off the per-packet path.
   */
  updateLearnedOwner(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number, owner: number): boolean {
    const t = this.table;
    const slot = t.find(srcIp, dstIp, srcPort, dstPort, proto);
    if (slot < 0 || t.owner(slot) === this.selfId || owner === this.selfId) return false;
    t.setOwner(slot, owner);
    return true;
  }

  /**
   * Enter (scope, ids, seed) or leave (null) "leaving" mode: while this FD
   * disengages, packets it has no entry for are redirected to the FD that
   * `scope` (the cluster without this FD) picks, and no flow is created here.
   * `ids[i]` is the node id of scope member i. Off the hot path.
   */
  setLeaving(scope: HashScope | null, ids: Uint16Array | null = null, seed = 0): void {
    if (scope !== null && (ids === null || ids.length !== scope.members.length)) {
      throw new BatonError(ErrorCode.BAD_ARGUMENT, 'setLeaving: ids must give a node id for every scope member');
    }
    this.nextScope = scope;
    this.nextIds = ids ?? new Uint16Array(0);
    this.nextSeed = seed >>> 0;
  }
  get leaving(): boolean {
    return this.nextScope !== null;
  }

  /**
   * While frozen no entry is added or removed (no learning, no linger or idle
   * removals): a migration walks the table by slot index. Packets are still
   * handled, and their counters still move. Ownership records that arrive
   * meanwhile are queued by the mesh and applied when the freeze ends
   * (onThaw).
   */
  get frozen(): boolean {
    return this.isFrozen;
  }
  set frozen(v: boolean) {
    const thawed = this.isFrozen && !v;
    this.isFrozen = v;
    if (thawed) for (const fn of this.thawListeners) fn();
  }
  /** Called (in order) each time the table stops being frozen. Off the hot path. */
  onThaw(fn: () => void): void {
    this.thawListeners.push(fn);
  }
  private isFrozen = false;
  private readonly thawListeners: (() => void)[] = [];
  private nextScope: HashScope | null = null;
  private nextIds: Uint16Array = new Uint16Array(0);
  private nextSeed = 0;
  /** The VIP when the scope hashes the client's end of a flow (clientKeyVip), else -1. */
  private readonly clientKeyVip: number;

  /** Where ownership changes are reported (set once the broadcast mesh exists). */
  setOwnershipSink(sink: OwnershipSink): void {
    this.sink = sink;
  }

  /** Where changes of own connections are reported for replication (null: none). */
  setReplicationSink(sink: ReplicationSink | null): void {
    this.repl = sink;
  }
  private repl: ReplicationSink | null = null;
  private readonly fk = new FlowKey();
  private readonly symmetric: boolean;

  /** The FDs the scope says are FAILED, from now on (a whole set each time). Off the hot path. */
  setFailed(ids: Iterable<number>): void {
    this.failedOwners.fill(0);
    for (const id of ids) if (id !== this.selfId) this.failedOwners[id & 0xffff] = 1;
  }

  /**
   * Fenced: the scope says this FD is FAILED (it hung and runs again, or
   * lost the manager for longer than deadAfterMs). Its flows were promoted
   * elsewhere: every packet that still reaches it is a counted
   * drop_fenced, and it creates, broadcasts and replicates nothing. Its
   * table is emptied by the caller. Off the hot path.
   */
  fenced = false;

  /**
   * Every entry owned by `from` now belongs to `to` (a peer handed all its
   * flows to one inheritor). One walk over the table; moves no entry, so it
   * is safe while frozen. Returns how many entries changed.
   */
  remapOwner(from: number, to: number): number {
    if (from === this.selfId) return 0; // our own flows only move by our own migration
    const n = this.table.reassignOwner(from, to);
    this.counters.inc(FD.flows_remapped, n);
    return n;
  }

  /** Forget a peer's flow (its owner ended it). Entries this FD owns are never touched. */
  forgetOwnership(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number, owner: number): boolean {
    if (this.frozen) return false;
    const t = this.table;
    const slot = t.find(srcIp, dstIp, srcPort, dstPort, proto);
    if (slot < 0 || t.owner(slot) !== owner || owner === this.selfId) return false;
    t.removeAt(slot);
    this.counters.inc(FD.flows_forgotten);
    return true;
  }

  /** Flows currently lingering after FIN/RST. */
  get lingering(): number {
    return this.lingerCount;
  }

  /**
   * The entry at `slot` arrived already closing (FIN/RST seen at the FD it
   * migrated from) and is now owned here: it lingers here like a local one,
   * a full `lingerMs` from now (the exporter's linger deadline does not
   * travel), and is then removed with its other direction. A connection is
   * queued once: by its forward entry, or by the reverse one when the
   * forward entry is absent. Returns true when queued. Off the hot path
   * (migration import and commit).
   */
  adoptClosing(slot: number): boolean {
    const t = this.table;
    const f = t.flags(slot);
    if ((f & FlowFlag.CLOSING) === 0 || t.owner(slot) !== this.selfId) return false;
    if ((f & FlowFlag.REVERSE) !== 0) {
      const pk = this.p;
      partnerKey(t, slot, pk);
      if (t.find(pk.srcIp, pk.dstIp, pk.srcPort, pk.dstPort, pk.proto) >= 0) return false; // queued by the forward entry
    }
    this.counters.inc(FD.flows_closing_imported);
    this.enqueueLinger(slot);
    return true;
  }

  private drop(counter: number): Verdict {
    this.dropCounter = counter;
    this.counters.inc(counter);
    return Verdict.DROP;
  }

  /** Creates forward + reverse entries for the packet in `meta`; returns the forward slot or -1 (counted). */
  private createFlow(): number {
    if (!this.policy.choose(this.meta, this.action)) {
      this.drop(FD.drop_no_backend);
      return -1;
    }
    return this.createWith();
  }

  /**
   * The stateless second line (docs/failure.md, "Second line"): the entry at
   * `slot` is a learned one whose owner is FAILED, and no replica of it was
   * promoted here. Where the service choice is a pure function of the
   * 5-tuple and the backend set (policy.pure) and this packet is the
   * client's (the policy recognises its service), the flow is created again
   * here, as its SYN would have created it; otherwise a counted drop.
   */
  private recreate(slot: number): number {
    if (this.policy.pure !== true || this.frozen || this.nextScope !== null || !this.policy.choose(this.meta, this.action)) {
      this.drop(FD.drop_owner_failed);
      return -1;
    }
    this.table.removeAt(slot);
    const s = this.createWith();
    if (s >= 0) this.counters.inc(FD.flows_recreated_stateless);
    return s;
  }

  /** createFlow once the policy has filled `action`. */
  private createWith(): number {
    const m = this.meta;
    const a = this.action;
    const t = this.table;
    const self = this.selfId;
    const now = this.nowMs;
    // Reverse flow: the key of the reply as it comes back. With a destination
    // rewrite to backend B, the reply is B -> client and must get its source
    // rewritten back to the original destination (the VIP).
    let rSrcIp = m.dstIp;
    let rSrcPort = m.dstPort;
    let rFlags = FlowFlag.REVERSE;
    if (a.netAction === NetAction.REWRITE) {
      rSrcIp = a.rewriteIp;
      rSrcPort = a.rewritePort;
      rFlags |= FlowFlag.REWRITE_SRC;
    }
    const rev = t.insert(rSrcIp, m.srcIp, rSrcPort, m.srcPort, m.proto, self, a.netAction, a.appAction, m.dstIp, m.dstPort, rFlags, now);
    if (rev < 0) {
      this.drop(FD.drop_table_full);
      return -1;
    }
    const syn = m.proto === IPPROTO_TCP && (m.tcpFlags & (TCP_SYN | TCP_ACK)) === TCP_SYN;
    if (syn) this.makeRoomForEmbryo();
    const fwd = t.insert(m.srcIp, m.dstIp, m.srcPort, m.dstPort, m.proto, self, a.netAction, a.appAction, a.rewriteIp, a.rewritePort, syn ? FlowFlag.EMBRYONIC : 0, now);
    if (fwd < 0) {
      t.remove(rSrcIp, m.srcIp, rSrcPort, m.srcPort, m.proto);
      this.drop(FD.drop_table_full);
      return -1;
    }
    this.counters.inc(FD.flows_created);
    if (syn) this.pushEmbryo(m.srcIp, m.dstIp, m.srcPort, m.dstPort);
    this.sink.flowCreated(m.srcIp, m.dstIp, m.srcPort, m.dstPort, m.proto, self);
    this.sink.flowCreated(rSrcIp, m.srcIp, rSrcPort, m.srcPort, m.proto, self);
    this.repl?.connectionChanged(m.srcIp, m.dstIp, m.srcPort, m.dstPort, m.proto);
    return fwd;
  }

  /**
   * Before a SYN's connection is created: with the embryonic ring full, the
   * oldest ring entry goes — evicted (both entries removed, counted
   * embryonic_evicted) if it is still embryonic and this FD's, skipped if
   * its handshake completed or it ended meanwhile. At most one eviction per
   * SYN, no allocation. Never while frozen (a migration holds slots): the
   * new connection then simply has no ring entry.
   */
  private makeRoomForEmbryo(): void {
    // A shrunken budget (more FDs) is met a few evictions per SYN at a time.
    for (let n = 0; n < 4 && this.embryoCount > 0 && (this.embryoCount >= this.embryoBudget || this.embryoCount * 4 === this.embryoKeys.length) && !this.frozen; n++) this.evictOldestEmbryo();
  }

  private evictOldestEmbryo(): void {
    const k = this.embryoHead * 4;
    const w = this.embryoKeys;
    const ports = w[k + 2]!;
    this.embryoHead = (this.embryoHead + 1) * 4 === w.length ? 0 : this.embryoHead + 1;
    this.embryoCount--;
    const t = this.table;
    const s = t.find(w[k]!, w[k + 1]!, ports >>> 16, ports & 0xffff, IPPROTO_TCP);
    if (s >= 0 && t.owner(s) === this.selfId && (t.flags(s) & FlowFlag.EMBRYONIC) !== 0) {
      this.removePair(s);
      this.counters.inc(FD.embryonic_evicted);
    }
  }

  private pushEmbryo(srcIp: number, dstIp: number, srcPort: number, dstPort: number): void {
    const w = this.embryoKeys;
    const cap = w.length >>> 2;
    if (this.embryoCount === cap) return; // frozen and full: no ring entry (idle expiry still removes it)
    let i = this.embryoHead + this.embryoCount;
    if (i >= cap) i -= cap;
    const k = i * 4;
    w[k] = srcIp;
    w[k + 1] = dstIp;
    w[k + 2] = ((srcPort << 16) | (dstPort & 0xffff)) >>> 0;
    w[k + 3] = IPPROTO_TCP;
    this.embryoCount++;
  }

  /**
   * How many of its own embryonic connections this FD keeps (at most the
   * ring's capacity, embryonicCapacity). Every FD's table also holds its
   * peers' (learned from their broadcasts), so the node sets it to its share
   * of the cluster's budget from each scope update. Off the hot path.
   */
  setEmbryonicBudget(n: number): void {
    this.embryoBudget = Math.max(1, Math.min(Math.floor(n), this.embryoKeys.length >>> 2));
  }
  private embryoBudget = Number.MAX_SAFE_INTEGER;

  /** Connections in the embryonic ring (some may have completed their handshake since). */
  get embryonic(): number {
    return this.embryoCount;
  }

  /** RST: closing now. FIN: this direction is done; closing once the other direction's FIN was seen too. */
  private onClose(slot: number, rst: boolean): void {
    const t = this.table;
    if (!rst) {
      t.setFlags(slot, t.flags(slot) | FlowFlag.FIN_SEEN);
      const pk = this.p;
      partnerKey(t, slot, pk);
      const p = t.find(pk.srcIp, pk.dstIp, pk.srcPort, pk.dstPort, pk.proto);
      if (p >= 0 && (t.flags(p) & FlowFlag.FIN_SEEN) === 0) {
        this.counters.inc(FD.flows_half_closed);
        this.replicate(slot);
        return;
      }
    }
    this.startLinger(slot);
    this.replicate(slot);
  }

  /** Reports the connection of the (own) entry at `slot` changed, to its backup. */
  private replicate(slot: number): void {
    const r = this.repl;
    if (r === null) return;
    const k = this.fk;
    forwardKey(this.table, slot, k);
    r.connectionChanged(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto);
  }

  private startLinger(slot: number): void {
    const t = this.table;
    t.setFlags(slot, t.flags(slot) | FlowFlag.CLOSING);
    const pk = this.p;
    partnerKey(t, slot, pk);
    const proto = pk.proto;
    const p = t.find(pk.srcIp, pk.dstIp, pk.srcPort, pk.dstPort, proto);
    if (p >= 0) t.setFlags(p, t.flags(p) | FlowFlag.CLOSING);
    this.counters.inc(FD.flows_closing);
    this.enqueueLinger(slot);
  }

  /** Queues the entry at `slot` for removal `lingerMs` from now (ring full: counted, idle expiry removes it). */
  private enqueueLinger(slot: number): void {
    const t = this.table;
    const cap = this.lingerDeadline.length;
    if (this.lingerCount === cap) {
      this.counters.inc(FD.linger_overflow); // idle expiry will remove it
      return;
    }
    let i = this.lingerHead + this.lingerCount;
    if (i >= cap) i -= cap;
    const k = i * 4;
    this.lingerKeys[k] = t.srcIp(slot);
    this.lingerKeys[k + 1] = t.dstIp(slot);
    this.lingerKeys[k + 2] = ((t.srcPort(slot) << 16) | t.dstPort(slot)) >>> 0;
    this.lingerKeys[k + 3] = t.proto(slot);
    this.lingerDeadline[i] = this.nowMs + this.lingerMs;
    this.lingerCount++;
  }

  /** Removes the flow at `slot` and its other direction (slots move on removal: partner is looked up by key). */
  private removePair(slot: number): void {
    const t = this.table;
    const k = this.p;
    partnerKey(t, slot, k);
    const proto = k.proto;
    const sIp = t.srcIp(slot);
    const dIp = t.dstIp(slot);
    const sP = t.srcPort(slot);
    const dP = t.dstPort(slot);
    const rev = (t.flags(slot) & FlowFlag.REVERSE) !== 0;
    t.removeAt(slot);
    t.remove(k.srcIp, k.dstIp, k.srcPort, k.dstPort, proto);
    const r = this.repl;
    if (r !== null) {
      if (rev) r.connectionRemoved(k.srcIp, k.dstIp, k.srcPort, k.dstPort, proto, sIp, dIp, sP, dP);
      else r.connectionRemoved(sIp, dIp, sP, dP, proto, k.srcIp, k.dstIp, k.srcPort, k.dstPort);
    }
    const s = this.sink;
    if (s.flowRemoved) {
      s.flowRemoved(sIp, dIp, sP, dP, proto);
      s.flowRemoved(k.srcIp, k.dstIp, k.srcPort, k.dstPort, proto);
    }
  }

  // ---------------------------------------------------------------- dead backends
  // (docs/disengage.md, "Dead backends")

  /** Set when handle() returns FORWARD: the slot of the entry it applied (valid until the table next changes). */
  forwardedSlot = -1;
  /** Set when backendDied() returns RESET: the RST to send toward the client is resetPacket[0, resetLength). */
  readonly resetPacket = new Uint8Array(TCP_RESET_LENGTH);
  resetLength = 0;
  private deathKeys = new Int32Array(0);
  private deathRehome = new Uint8Array(0);
  private readonly rehomeMeta = new PacketMeta();

  /**
   * What a flow gets when its backend dies, per service (the VIP's port and
   * protocol; config cluster.services[].onBackendDeath). A service not
   * listed: 'reset' for TCP, 'rehome' otherwise. Off the hot path.
   */
  setBackendDeath(services: readonly { port: number; proto: number; onBackendDeath: 'reset' | 'rehome' }[]): void {
    const keys = new Int32Array(services.length);
    const rehome = new Uint8Array(services.length);
    services.forEach((s, i) => {
      keys[i] = deathKey(s.port, s.proto);
      rehome[i] = s.onBackendDeath === 'rehome' ? 1 : 0;
    });
    this.deathKeys = keys;
    this.deathRehome = rehome;
  }

  /**
   * The packet handle() just FORWARDed (in `buf`, parsed in `meta`) is
   * rewritten to a backend that is gone (the data plane knows: a service
   * node FAILED or DISENGAGED, a real server the health check says is down).
   * Per its service:
   *   'rehome': the backend a new flow of this 5-tuple would get now (the
   *     policy's choice over the live backends) becomes the flow's; its
   *     reverse entry, whose key holds the backend, is replaced (ownership
   *     of the old key withdrawn, of the new one announced) and the packet
   *     rewritten to it: REHOMED, send it on (flows_rehomed). Nowhere to go
   *     (no live backend, the new reverse key taken, table full): counted
   *     flows_rehome_failed, and ended as with 'reset';
   *   'reset': the flow ends (both entries removed, removal announced); a
   *     TCP packet is answered with an RST from the VIP: RESET, send
   *     resetPacket toward the client (flows_reset_dead_backend); any other
   *     packet is dropped: ENDED (flows_ended_dead_backend, drop_dead_backend).
   * NOT_MINE: the packet's entry is not the forward entry of a rewritten flow
   * owned here, or the table is frozen (this FD's own migration: no entry may
   * move; the flow's next owner acts): the caller drops it as it would have.
   * No allocation.
   */
  backendDied(buf: Uint8Array): BackendDeath {
    const t = this.table;
    let slot = this.forwardedSlot;
    if (slot < 0 || this.frozen || t.owner(slot) !== this.selfId || t.netAction(slot) !== NetAction.REWRITE || (t.flags(slot) & FlowFlag.REVERSE) !== 0) {
      return BackendDeath.NOT_MINE;
    }
    const c = this.counters;
    const proto = t.proto(slot);
    const vip = t.dstIp(slot) | 0;
    const vport = t.dstPort(slot);
    if (this.rehomes(vport, proto)) {
      if (this.rehome(buf, slot)) {
        c.inc(FD.flows_rehomed);
        return BackendDeath.REHOMED;
      }
      c.inc(FD.flows_rehome_failed);
      slot = this.forwardedSlot; // unchanged unless the table moved
    }
    this.resetLength = proto === IPPROTO_TCP ? writeTcpReset(buf, this.meta, vip, vport, this.resetPacket) : 0;
    this.removePair(slot);
    this.forwardedSlot = -1;
    if (this.resetLength > 0) {
      c.inc(FD.flows_reset_dead_backend);
      return BackendDeath.RESET;
    }
    c.inc(FD.flows_ended_dead_backend);
    this.drop(FD.drop_dead_backend);
    return BackendDeath.ENDED;
  }

  private rehomes(port: number, proto: number): boolean {
    const k = deathKey(port, proto);
    const keys = this.deathKeys;
    for (let i = 0; i < keys.length; i++) if (keys[i] === k) return this.deathRehome[i] === 1;
    return proto !== IPPROTO_TCP;
  }

  /** The flow at forward slot `slot` moves to the policy's choice now; false (nothing changed) when it cannot. */
  private rehome(buf: Uint8Array, slot: number): boolean {
    const t = this.table;
    const self = this.selfId;
    const cIp = t.srcIp(slot) | 0;
    const vip = t.dstIp(slot) | 0;
    const cPort = t.srcPort(slot);
    const vport = t.dstPort(slot);
    const proto = t.proto(slot);
    const rm = this.rehomeMeta;
    rm.srcIp = cIp >>> 0;
    rm.dstIp = vip >>> 0;
    rm.srcPort = cPort;
    rm.dstPort = vport;
    rm.proto = proto;
    const a = this.action;
    if (!this.policy.choose(rm, a) || a.netAction !== NetAction.REWRITE) return false;
    const deadIp = t.rewriteIp(slot) | 0;
    const deadPort = t.rewritePort(slot);
    const nIp = a.rewriteIp | 0;
    const nPort = a.rewritePort;
    if (nIp === deadIp && nPort === deadPort) return false; // the policy still names it: nowhere else to go
    if (t.find(nIp, cIp, nPort, cPort, proto) >= 0) return false; // another connection's reverse entry has the new key
    const app = t.appAction(slot);
    let rFlags = FlowFlag.REVERSE | FlowFlag.REWRITE_SRC;
    let packets = 0;
    let bytes = 0;
    const old = t.find(deadIp, cIp, deadPort, cPort, proto);
    if (old >= 0) {
      // Removed first, so the new entry has room; the forward entry may move (found again below).
      rFlags |= t.flags(old) & (FlowFlag.FIN_SEEN | FlowFlag.CLOSING);
      packets = t.packets(old);
      bytes = t.bytes(old);
      t.removeAt(old);
    }
    const rev = t.insert(nIp, cIp, nPort, cPort, proto, self, NetAction.REWRITE, app, vip, vport, rFlags, this.nowMs);
    if (old >= 0) slot = t.find(cIp, vip, cPort, vport, proto);
    this.forwardedSlot = slot;
    if (rev < 0) return false; // no old entry and the table is full: nothing changed
    t.setCounters(rev, packets, bytes, this.nowMs);
    t.setAction(slot, NetAction.REWRITE, app, nIp, nPort);
    const s = this.sink;
    if (old >= 0 && s.flowRemoved) s.flowRemoved(deadIp, cIp, deadPort, cPort, proto);
    s.flowCreated(nIp, cIp, nPort, cPort, proto, self);
    const r = this.repl;
    if (r !== null) {
      // The backup drops the old reverse entry (the forward one, still here, is sent again) and gets both as they are now.
      r.connectionRemoved(cIp, vip, cPort, vport, proto, deadIp, cIp, deadPort, cPort);
      r.connectionChanged(cIp, vip, cPort, vport, proto);
    }
    rewriteDst(buf, this.meta, nIp >>> 0, nPort);
    return true;
  }
}

/** What FlowHandler.backendDied() did with the packet of a flow whose backend died. */
export const BackendDeath = {
  /** Not a flow of this FD with a backend (or the table is frozen): nothing changed, drop it as before. */
  NOT_MINE: 0,
  /** Moved to a live backend: the packet is rewritten to it, send it on. */
  REHOMED: 1,
  /** Ended; send handler.resetPacket (an RST from the VIP) toward the client instead of the packet. */
  RESET: 2,
  /** Ended; the packet is dropped (counted). */
  ENDED: 3,
} as const;
export type BackendDeath = (typeof BackendDeath)[keyof typeof BackendDeath];

function deathKey(port: number, proto: number): number {
  return ((port & 0xffff) << 8) | (proto & 0xff);
}

function positive(name: string, v: number): number {
  if (!(Number.isFinite(v) && v > 0)) throw new BatonError(ErrorCode.BAD_ARGUMENT, `${name} must be a positive number, got ${v}`);
  return v;
}
