/**
 * Baton at flow level, on its real components (docs/comparison.md, "What is
 * executed and what is modelled").
 *
 * Executed, the code the FD and hash-tier processes run:
 *  - the hash tier's choice of FD: hashFiveTuple (shared/hash/xxh32.ts) over
 *    the anchored Maglev scope planned by planScope (shared/scope/), anchor
 *    kept across changes as the registry keeps it;
 *  - every FD's FlowHandler (distributor/flow-handler.ts) on its own
 *    FlowTable, fed real IPv4 TCP/UDP packets (shared/packet/build.ts): SYN
 *    and first datagram create the flow and its reverse flow, the service
 *    policy (HashRewritePolicy, as FdNode configures it) picks the backend,
 *    peers' packets are redirected, FIN each way starts the linger, tick()
 *    removes lingering and idle entries;
 *  - the ownership a handler reports goes to every other FD's
 *    learnOwnership / forgetOwnership (what OwnershipMesh applies);
 *  - a disengage: leaving mode (setLeaving with the next scope),
 *    slotsOwnedBy, selectInheritors (migration-client/inheritor-selector.ts),
 *    each connection assigned by its forward key as the migration client
 *    does, the copy through exportFlowSlots / importFlows
 *    (distributor/flow-export.ts) into each inheritor's table,
 *    setOwners (the switch), the broadcast (remapOwner for one inheritor,
 *    learnOwnership per record for several), the scope without the leaver,
 *    the purge (clear);
 *  - an engage: the joiner learns every flow its peers own (the sync), then
 *    the scope with it (the anchor gets it back).
 * Modelled:
 *  - time: a disengage or engage happens at one instant (the in-memory
 *    cluster's run measures how long one takes, docs/comparison.md); the
 *    broadcast reaches every peer at once (the ~1 ms flush is not modelled:
 *    the packet-level cross-check covers it);
 *  - one packet per connection per evaluation (after each churn step and on
 *    the runner's tick) stands for all its packets until the next one;
 *  - several FDs leaving at once: one next scope without all of them, and
 *    inheritors among the FDs that stay (the real disengages run side by
 *    side, each refusing the others as inheritors);
 *  - an FD that leaves is stopped (power-down, upgrade): a join is a new
 *    process with an empty table;
 *  - a failure: the FD's table is gone; the hash tier keeps sending to it
 *    for the detection window (control.deadAfterMs), then its scope shrinks;
 *    peers redirect its flows to it, which drops them (drop_unknown_owner):
 *    what Baton does today (docs/loss-accounting.md: "the flows it owned").
 */
import { FlowTable, OWNER_NONE } from '../../distributor/flow-table.js';
import { FlowHandler, Verdict, type OwnershipSink } from '../../distributor/flow-handler.js';
import { HashRewritePolicy } from '../../distributor/service-policy.js';
import { exportFlowSlots, exportedSize, importFlows, chunkKeys } from '../../distributor/flow-export.js';
import { FlowKey, forwardKey } from '../../distributor/flow-pair.js';
import { selectInheritors, type PeerInfo } from '../../migration-client/inheritor-selector.js';
import { planScope } from '../../shared/scope/scope-plan.js';
import type { HashScope } from '../../shared/scope/hash-scope.js';
import { hashFiveTuple } from '../../shared/hash/xxh32.js';
import { buildPacket } from '../../shared/packet/build.js';
import { IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_SYN } from '../../shared/packet/meta.js';
import { DROPPED, LOST_IN_WINDOW, backendIp, type Env, type Step, type Strategy } from './strategy.js';
import { VIP, dstPortOf } from './trace.js';

export interface BatonFlowOptions {
  policy: string;
  /** flowTable.idleMs (default 120 000, the config's). */
  idleMs: number;
  lingerMs: number;
  /** hash.seed, hash.tableSize, hash.rebalanceAbovePct, flowTable.seed. */
  hashSeed: number;
  tableSize: number;
  rebalanceAbovePct: number;
  flowSeed: number;
  hopLimit: number;
  /** Entries per FD table (flowTable.maxFlows); 0 = sized from the trace. */
  maxFlows: number;
}

export const DEFAULT_BATON: BatonFlowOptions = {
  policy: 'least-flows',
  idleMs: 120_000,
  lingerMs: 2_000,
  hashSeed: 24301,
  tableSize: 65537,
  rebalanceAbovePct: 3,
  flowSeed: 0x5eed15,
  hopLimit: 4,
  maxFlows: 0,
};

class VClock {
  t = 0;
  now(): number {
    return this.t;
  }
}

interface Fd {
  name: string;
  id: number;
  table: FlowTable;
  handler: FlowHandler;
  policy: HashRewritePolicy;
  up: boolean; // process running
  failed: boolean;
}

const FD_ID_BASE = 11; // fd-1 is node 11, as in the default config

export class BatonFlow implements Strategy {
  readonly name: string;
  readonly follows = 'this repository: the real FlowTable, FlowHandler, planScope, selectInheritors, flow export (docs/disengage.md)';
  hops = 0;
  private env!: Env;
  private readonly o: BatonFlowOptions;
  private readonly clock = new VClock();
  private fds: Fd[] = [];
  private byName = new Map<string, Fd>();
  private byId = new Map<number, Fd>();
  private members: string[] = [];
  private anchor: readonly string[] = [];
  private version = 1;
  private scope!: HashScope;
  private scopeIds = new Uint16Array(0);
  private active: string[] = []; // backends offered to new flows, sorted by index
  private ipToBackend = new Map<number, number>();
  private readonly pkt = new Uint8Array(64);
  private pktLen = 0;
  /** Owner FD id that answered the last FORWARD (where a reply goes by owner hint). */
  private lastOwner = 0;
  private readonly key = new FlowKey();
  private maxFlows = 0;

  constructor(opts: Partial<BatonFlowOptions> = {}) {
    this.o = { ...DEFAULT_BATON, ...opts };
    this.name = this.o.policy === 'least-flows' ? 'baton' : `baton (${this.o.policy})`;
  }

  init(env: Env): void {
    this.env = env;
    const tr = env.trace;
    // Each FD holds 2 entries per connection it owns and 2 per connection a
    // peer owns that it learned and that has not idled out.
    const idleS = this.o.idleMs / 1000;
    // A joiner learns every open connection (its sync), so after an engage a table holds them all.
    const recent = Math.min(tr.n, tr.params.concurrent * 1.05 + tr.ratePerS * Math.min(idleS + 5, tr.params.durationS));
    this.maxFlows = this.o.maxFlows || Math.min(16_000_000, Math.ceil(2.3 * recent) + 1024);
    env.allBackends.forEach((b, i) => this.ipToBackend.set(backendIp(i), i));
    this.active = env.backends.slice();
    for (const name of env.allFds) {
      const fd = this.newFd(name, env.allFds.indexOf(name));
      fd.up = env.fds.includes(name);
      this.fds.push(fd);
      this.byName.set(name, fd);
      this.byId.set(fd.id, fd);
    }
    this.members = env.fds.slice();
    this.replan();
    this.setBackends();
  }

  private newFd(name: string, index: number, table?: FlowTable): Fd {
    const id = FD_ID_BASE + index;
    const t = table ?? new FlowTable(this.maxFlows, { seed: this.o.flowSeed });
    const policy = new HashRewritePolicy([], 0, this.o.hashSeed ^ 0x9e3779b9); // as FdNode
    policy.setServices([
      { ip: VIP, port: 80, proto: IPPROTO_TCP },
      { ip: VIP, port: 53, proto: IPPROTO_UDP },
    ]);
    const sink: OwnershipSink = {
      flowCreated: (s, d, sp, dp, pr, owner) => {
        for (const p of this.fds) if (p.up && p.id !== id) p.handler.learnOwnership(s, d, sp, dp, pr, owner);
      },
      flowRemoved: (s, d, sp, dp, pr) => {
        for (const p of this.fds) if (p.up && p.id !== id) p.handler.forgetOwnership(s, d, sp, dp, pr, id);
      },
    };
    const handler = new FlowHandler({
      selfId: id,
      table: t,
      policy,
      clock: this.clock,
      ownership: sink,
      lingerMs: this.o.lingerMs,
      idleMs: this.o.idleMs,
      verifyL4Checksum: false, // dataplane.verifyL4Checksum's default
      // One full expiry pass per ~idleMs/8 of ticks (the runner ticks every 250 ms).
      expiryBudget: Math.max(1024, Math.ceil(t.slots / Math.max(1, this.o.idleMs / 8 / 250))),
      lingerCapacity: 1 << 18,
    });
    return { name, id, table: t, handler, policy, up: false, failed: false };
  }

  private replan(exclude: readonly string[] = []): void {
    const members = this.members.filter((m) => !exclude.includes(m));
    const plan = planScope(++this.version, this.anchor, members, this.o.tableSize, this.o.hashSeed, this.o.rebalanceAbovePct);
    this.scope = plan.scope;
    this.anchor = plan.anchor;
    this.scopeIds = Uint16Array.from(plan.scope.members, (n) => this.byName.get(n)!.id);
  }

  private setBackends(): void {
    const list = this.active
      .map((b) => this.env.allBackends.indexOf(b))
      .sort((a, b) => a - b)
      .map((i) => ({ ip: backendIp(i), port: 0 }));
    for (const fd of this.fds) fd.policy.setBackends(list);
  }

  private build(f: number, flags: number): void {
    const tr = this.env.trace;
    const proto = tr.proto[f]!;
    this.pktLen = buildPacket({ srcIp: tr.srcIp[f]!, dstIp: VIP, srcPort: tr.srcPort[f]!, dstPort: dstPortOf(proto), proto, tcpFlags: flags }, this.pkt).length;
  }

  /** Sends the packet in this.pkt into the cluster; returns the backend it reaches. */
  private send(f: number): number {
    const tr = this.env.trace;
    const proto = tr.proto[f]!;
    const h = hashFiveTuple(tr.srcIp[f]!, VIP, tr.srcPort[f]!, dstPortOf(proto), proto, this.o.hashSeed);
    let fd = this.byId.get(this.scopeIds[this.scope.pick(h)]!)!;
    this.hops = 0;
    if (!fd.up) return fd.failed ? LOST_IN_WINDOW : DROPPED;
    for (;;) {
      const v = fd.handler.handle(this.pkt, 0, this.pktLen, OWNER_NONE);
      if (v === Verdict.FORWARD) {
        this.lastOwner = fd.id;
        return this.ipToBackend.get(fd.handler.meta.dstIp) ?? DROPPED;
      }
      if (v === Verdict.DROP) return DROPPED;
      const next = this.byId.get(fd.handler.redirectOwner);
      if (!next || !next.up || ++this.hops >= this.o.hopLimit) return DROPPED; // drop_unknown_owner / drop_hop_limit
      fd = next;
    }
  }

  open(f: number, t: number): number {
    this.clock.t = t;
    this.build(f, this.env.trace.proto[f] === IPPROTO_TCP ? TCP_SYN : 0);
    return this.send(f);
  }

  route(f: number, t: number): number {
    this.clock.t = t;
    this.build(f, TCP_ACK);
    return this.send(f);
  }

  close(f: number, t: number, broken: boolean): void {
    const tr = this.env.trace;
    if (broken || tr.proto[f] !== IPPROTO_TCP) return; // UDP: idle expiry; broken: the client gave up (its entries idle out)
    this.clock.t = t;
    this.build(f, TCP_FIN | TCP_ACK);
    const b = this.send(f);
    if (b < 0) return;
    // The server's FIN comes back through the hash tier, which hands it to the owner named by the hint.
    const owner = this.byId.get(this.lastOwner)!;
    const proto = tr.proto[f]!;
    this.pktLen = buildPacket({ srcIp: backendIp(b), dstIp: tr.srcIp[f]!, srcPort: dstPortOf(proto), dstPort: tr.srcPort[f]!, proto, tcpFlags: TCP_FIN | TCP_ACK }, this.pkt).length;
    owner.handler.handle(this.pkt, 0, this.pktLen, owner.id);
  }

  tick(t: number): void {
    this.clock.t = t;
    for (const fd of this.fds) if (fd.up) fd.handler.tick();
  }

  step(s: Step, t: number): void {
    this.clock.t = t;
    for (const fd of this.fds) if (fd.up) fd.handler.tick();
    switch (s.kind) {
      case 'fd-leave':
        this.disengage(s.fds);
        break;
      case 'fd-join':
        for (const n of s.fds) this.engage(n);
        break;
      case 'fd-fail':
        for (const n of s.fds) {
          const fd = this.byName.get(n)!;
          fd.up = false;
          fd.failed = true; // the hash tier still sends to it until it is detected
        }
        break;
      case 'fd-fail-detected':
        this.members = this.members.filter((m) => !s.fds.includes(m));
        this.replan();
        for (const n of s.fds) {
          const fd = this.byName.get(n)!;
          fd.failed = false;
          fd.table.clear();
        }
        break;
      case 'backend-add':
        this.active.push(s.backend);
        this.setBackends();
        break;
      case 'backend-drain':
        // DISENGAGING: the FDs keep its route but offer it to no new flow.
        this.active = this.active.filter((b) => b !== s.backend);
        this.setBackends();
        break;
      case 'backend-remove':
        break; // DISENGAGED once it held no connection (the drain's quiet): nothing routes to it
    }
  }

  /** Several FDs disengaged at once, then stopped. */
  private disengage(leavers: string[]): void {
    const stay = this.members.filter((m) => !leavers.includes(m));
    const plan = planScope(this.version + 1, this.anchor, stay, this.o.tableSize, this.o.hashSeed, this.o.rebalanceAbovePct);
    const nextIds = Uint16Array.from(plan.scope.members, (n) => this.byName.get(n)!.id);
    // The manager's statistics (heartbeats): flows each peer owns; counted once per step.
    const needStats = this.o.policy === 'least-flows' || this.o.policy === 'spread';
    const owns = new Map(stay.map((n) => [n, needStats ? this.ownedForward(this.byName.get(n)!) : 0]));
    const peersOf = (): PeerInfo[] =>
      stay.map((n) => {
        const p = this.byName.get(n)!;
        return { id: p.id, name: p.name, flowsOwned: owns.get(n)! };
      });
    for (const name of leavers) {
      const x = this.byName.get(name)!;
      const h = x.handler;
      h.setLeaving(plan.scope, nextIds, this.o.hashSeed);
      const t = x.table;
      const buf = new Int32Array(t.size);
      const rev = new Int32Array(1);
      const owned = buf.subarray(0, t.slotsOwnedBy(x.id, buf, rev));
      const sel = selectInheritors({
        policy: this.o.policy,
        self: { id: x.id, name },
        peers: peersOf(),
        ownFlows: owned.length - rev[0]!,
        nextScope: plan.scope,
        nextIds,
        hashSeed: this.o.hashSeed,
        randomSeed: this.version,
      });
      // As MigrationClient.assign: each entry by its connection's forward key.
      const a = new Uint16Array(owned.length);
      if (sel.inheritors.length > 1) {
        for (let i = 0; i < owned.length; i++) {
          forwardKey(t, owned[i]!, this.key);
          a[i] = sel.assign(this.key.srcIp, this.key.dstIp, this.key.srcPort, this.key.dstPort, this.key.proto);
        }
      }
      // Copy: each inheritor imports its share as its own (the staged copy and its commit).
      sel.inheritors.forEach((inh, k) => {
        const slots = owned.filter((_, i) => a[i] === k);
        if (slots.length === 0) return;
        const chunk = new Uint8Array(exportedSize(slots.length));
        const n = exportFlowSlots(t, slots, chunk, 0, h.nowMs);
        const target = this.byId.get(inh.id)!;
        importFlows(target.table, chunk, 0, exportedSize(n), { owner: inh.id, nowMs: target.handler.nowMs });
        // Closing flows linger at their inheritor (migration-receiver.ts does the same).
        const keys = chunkKeys(chunk, 0, exportedSize(n));
        for (let r = 0; r < n; r++) {
          const q = r * 4;
          const slot = target.table.find(keys[q]!, keys[q + 1]!, keys[q + 2]! >>> 16, keys[q + 2]! & 0xffff, keys[q + 3]! & 0xff);
          if (slot >= 0) target.handler.adoptClosing(slot);
        }
      });
      // Switch, then broadcast.
      const ownerOf = sel.inheritors.map((p) => p.id);
      t.setOwners(owned, a, ownerOf);
      if (needStats) sel.inheritors.forEach((p, k) => owns.set(p.name, owns.get(p.name)! + a.filter((x) => x === k).length / 2));
      if (ownerOf.length === 1) {
        for (const p of this.fds) if (p.up && p !== x) p.handler.remapOwner(x.id, ownerOf[0]!);
      } else {
        for (let i = 0; i < owned.length; i++) {
          const s = owned[i]!;
          const o = ownerOf[a[i]!]!;
          for (const p of this.fds) if (p.up && p !== x && p.id !== o) p.handler.learnOwnership(t.srcIp(s), t.dstIp(s), t.srcPort(s), t.dstPort(s), t.proto(s), o);
        }
      }
    }
    // The scope without them; every tier and member acknowledges; purge; stopped.
    this.members = stay;
    this.scope = plan.scope;
    this.anchor = plan.anchor;
    this.version = plan.scope.version;
    this.scopeIds = nextIds;
    for (const name of leavers) {
      const x = this.byName.get(name)!;
      x.table.clear();
      x.up = false;
    }
  }

  private ownedForward(p: Fd): number {
    const buf = new Int32Array(p.table.size);
    const rev = new Int32Array(1);
    return p.table.slotsOwnedBy(p.id, buf, rev) - rev[0]!;
  }

  /** A new process of `name` registers and is engaged: it learns every flow its peers own, then the scope grows. */
  private engage(name: string): void {
    const old = this.byName.get(name)!;
    old.table.clear();
    const fd = this.newFd(name, this.env.allFds.indexOf(name), old.table);
    this.fds[this.fds.indexOf(old)] = fd;
    this.byName.set(name, fd);
    this.byId.set(fd.id, fd);
    this.setBackends(); // the new process learns the backends from the scope update it registers with
    fd.handler.tick();
    for (const p of this.fds) {
      if (!p.up || p === fd) continue;
      const t = p.table;
      const buf = new Int32Array(t.size);
      const n = t.slotsOwnedBy(p.id, buf);
      for (let i = 0; i < n; i++) {
        const s = buf[i]!;
        fd.handler.learnOwnership(t.srcIp(s), t.dstIp(s), t.srcPort(s), t.dstPort(s), t.proto(s), p.id);
      }
    }
    fd.up = true;
    this.members = [...this.members, name];
    this.replan();
  }

  state(): { entries: number; bytes: number } {
    let entries = 0;
    for (const fd of this.fds) if (fd.up) entries += fd.table.size;
    return { entries, bytes: entries * 46.25 };
  }

  /** Allocated table memory (every FD's typed arrays). */
  allocatedBytes(): number {
    let b = 0;
    for (const fd of this.fds) b += fd.table.bytesAllocated;
    return b;
  }

  /** Sum of one FD counter over every FD. */
  counter(id: number): number {
    let n = 0;
    for (const fd of this.fds) n += fd.handler.counters.get(id);
    return n;
  }

  dispose(): void {
    this.fds = [];
    this.byName.clear();
    this.byId.clear();
  }
}

