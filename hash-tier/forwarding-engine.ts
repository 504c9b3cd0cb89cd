/**
 * The hash tier's forwarding engine (the aggregation switch of seed 003):
 *   - CLIENT frames (ingress) and SERVICE frames (replies) are hashed on the
 *     inner 5-tuple over the current hash scope and sent to the chosen FD;
 *   - FD frames whose inner destination is a client go out to that client.
 *
 * Several hash tiers: a client may enter through one tier and its replies
 * leave through another (a member's uplink, or the tier it fails over to).
 * So the ingress tier writes the client's underlay address (where its
 * datagram came from) into the frame as the client-locator option
 * (docs/wire-encapsulation.md §3a); FDs and service nodes carry it on every
 * frame of the exchange, and whichever tier gets the FD's egress frame sends
 * it to the locator. No tier needs to have seen the client. A frame without
 * a locator (from a node of an older build) falls back to what this tier
 * learned itself (client virtual IP -> underlay address).
 *
 * Per-client state is bounded (hash-tier/client-table.ts; config
 * clientTable.*): the locator -> TX lane table and the learned-client table
 * have fixed capacities; idle entries are evicted by a budgeted sweep once
 * per batch, a full probe window evicts its least recently used entry; every
 * eviction is counted, and an evicted locator's lane is reused for the next
 * new one (frames it still holds leave to the old address first).
 *
 * A lane is per underlay address (ip:port), not per client: a datagram goes
 * to one address, and every client behind one address (a NAT, a generator's
 * socket) shares its lane. So TX lanes <= clientAddrCapacity + the FD lanes
 * (one per FD data address routed to); TX memory is the pool
 * (dataplane.txPoolBuffers x maxDatagramBytes). The flush at the end of a
 * batch walks only the lanes used in it. Not bounded: the per-destination
 * link counters of the loss books (TxLanes.links), one entry per address
 * ever sent to.
 *
 * The routing snapshot (scope + lanes) is built off the hot path and
 * swapped whole.
 */
import type { Scheduler } from '../shared/runtime/scheduler.js';
import type { DatagramSocket } from '../shared/io/datagram.js';
import type { Address } from '../shared/io/address.js';
import { Counters, defineCounters } from '../shared/counters.js';
import { Datapath, type DatapathOptions } from '../shared/dataplane/datapath.js';
import { DP } from '../shared/dataplane/counters.js';
import { EncapFlag, EncapMeta, Tier } from '../shared/encap/geneve.js';
import { ClientTable } from './client-table.js';
import { parseIPv4 } from '../shared/packet/parse.js';
import { PacketMeta } from '../shared/packet/meta.js';
import { Reject } from '../shared/packet/reject.js';
import { hashFiveTupleI32, hashFiveTupleSymmetricI32 } from '../shared/hash/xxh32.js';
import type { HashScope } from '../shared/scope/hash-scope.js';
import { IPPROTO_TCP, TCP_ACK, TCP_SYN } from '../shared/packet/meta.js';
import { Admission, AdmissionState, type AdmissionOptions } from './admission.js';
import type { QueueProbe } from '../shared/dataplane/queue-probe.js';
import { EdgeEncap } from '../shared/encap/edge.js';
import type { EdgePort } from '../shared/dataplane/edge-port.js';

const HT_STATIC = ['to_fd', 'to_fd_by_hint', 'to_client', 'clients_learned', 'drop_bad_inner', 'drop_empty_scope', 'drop_unknown_client', 'drop_bad_tier',
  // Client locators (several tiers on the data path) and the bounded client tables.
  'to_client_learned', // egress without a locator, delivered by what this tier learned
  'client_no_locator', // client frame from an address a locator cannot hold (not IPv4): forwarded without one
  'locator_unreadable', // a frame carried a locator option this build cannot read (skipped)
  'client_addrs_added', 'client_addrs_evicted_idle', 'client_addrs_evicted_full',
  'clients_evicted_idle', 'clients_evicted_full',
  // Admission control (hash-tier/admission.ts): frames refused at the edge, frames marked SHED, state entries.
  'drop_admission_syn', 'drop_admission_overload', 'admission_shed_marked', 'admission_to_open', 'admission_to_shed_syn', 'admission_to_shed_new', 'admission_to_dropping',
  // Per-FD admission (an FD whose receive path falls behind, seen by echo probes): entries into each state, summed over the FDs.
  'admission_fd_to_open', 'admission_fd_to_shed_syn', 'admission_fd_to_shed_new', 'admission_fd_to_dropping',
  // Service nodes' admission (their receive paths, by echo probes): entries into each state, summed over the services.
  'admission_service_to_open', 'admission_service_to_shed_syn', 'admission_service_to_shed_new', 'admission_service_to_dropping',
  // The edge (real hosts' kernels, docs/edge-encapsulation.md): clients' packets in, real servers' replies in, packets out to clients.
  'edge_client_frames', 'edge_server_frames', 'drop_edge_unknown_source', 'to_client_edge', 'drop_edge_no_port'] as const;
export const HT = defineCounters([...DP.names, ...HT_STATIC] as unknown as readonly [...typeof DP.names, ...typeof HT_STATIC]);

/** The client tables' defaults; config clientTable.* has the same (test/client-table-config.test.ts). */
export const CLIENT_TABLE_DEFAULTS = { addrCapacity: 4096, capacity: 65_536, idleMs: 300_000, sweepBudget: 64 } as const;

export interface ForwardingEngineOptions extends DatapathOptions {
  id: number;
  hashSeed: number;
  symmetricHash?: boolean;
  /**
   * Pick the FD by the client's end of the flow alone (address, port, protocol):
   * a client's packets by their source, a server's reply by its destination,
   * so a real server's reply — which carries no owner hint and whose source
   * is the rewritten backend, not the VIP — lands on the FD that owns the
   * flow, even before that FD's ownership broadcast reaches its peers.
   * `hash.key: client` (the default with realServers).
   */
  clientKeyHash?: boolean;
  /**
   * Send a service node's reply straight to the FD its owner hint names (when
   * that FD is in scope) instead of hashing it: saves the redirect hop a reply
   * takes when the hash picks another FD. Default true.
   */
  replyByOwnerHint?: boolean;
  /** Client underlay addresses (locator -> TX lane) kept at most, so client TX lanes too; a power of two (config clientTable.addrCapacity, default 4096). */
  clientAddrCapacity?: number;
  /** Learned clients (virtual IP -> underlay address, the no-locator fallback) kept at most; a power of two (clientTable.capacity, default 65536). */
  clientCapacity?: number;
  /** A client address or learned client not seen for this long is evicted (clientTable.idleMs, default 300 000 ms). */
  clientIdleMs?: number;
  /** Table slots the idle sweep examines per batch, per table (clientTable.sweepBudget, default 64). */
  clientSweepBudget?: number;
  /** Admission control at ingress (absent: every client frame is admitted). */
  admission?: AdmissionOptions & { probeMs: number };
}

/** One immutable routing snapshot: scope + the TX lane of each scope member (by index and by node id). */
export interface Routing {
  scope: HashScope | null;
  laneOfMember: Int32Array;
  laneOfId: Int32Array;
}

export interface FdAdmission {
  /** The FD's or service node's name. */
  fd: string;
  data: string;
  state: AdmissionState;
  /** Round trip of the FD's echo probe now (its receive path plus this tier's), and the largest seen. */
  delayMs: number;
  maxDelayMs: number;
  /** How long it has answered no probe (0: answering, or never answered yet). */
  silentMs: number;
}

export interface ScopeMember {
  name: string;
  id: number;
  data: Address;
}

export class ForwardingEngine {
  readonly dp: Datapath;
  readonly counters: Counters;
  private routing: Routing = { scope: null, laneOfMember: new Int32Array(0), laneOfId: new Int32Array(65536).fill(-1) };
  /** Client underlay address (IPv4, port) -> TX lane (valA). */
  readonly clientAddrs: ClientTable;
  /** Client virtual IP (key b = 1) -> underlay address (valA = IPv4, valB = port): the fallback for frames without a locator. */
  readonly clients: ClientTable;
  /** Lanes of evicted client addresses, reused for new ones (so lanes stay bounded too). */
  private readonly freeLanes: Int32Array;
  private freeLaneCount = 0;
  private readonly clientIdleMs: number;
  private readonly sweepBudget: number;
  private readonly clock: Scheduler['clock'];
  /** Time sampled once per batch (integer ms): what entries are stamped with. */
  private nowMs = 0;
  // Locator of the datagram the last client frame came in (frames of one datagram share `from`).
  private locFrom: Address | null = null;
  private locIp = 0;
  private locPort = 0;
  // The edge: ports by EdgeEncap, the VIPs (a packet to one is a client's), the real servers (a packet from one is a reply).
  private readonly edges: (EdgePort | null)[] = [null, null, null];
  private edgeVips = new Set<number>();
  private edgeServers = new Set<number>();
  private readonly edgeMeta = new EncapMeta();
  /** While an edge client frame is handled: how it speaks (EdgeEncap) and the port its host's tunnel listens on. */
  private edgeKind = 0;
  private edgePeerPort = 0;
  private edgeFrom: Address | null = null;
  private edgeFromIp = -1;
  private readonly out = new EncapMeta();
  private readonly pkt = new PacketMeta();
  private readonly id: number;
  private readonly seed: number;
  private readonly symmetric: boolean;
  private readonly clientKey: boolean;
  private readonly byHint: boolean;
  /** Admission control, or null when off; `admit` is its state as of this batch. */
  readonly admission: Admission | null;
  private admit: AdmissionState = AdmissionState.OPEN;
  private readonly admissionOpts: (AdmissionOptions & { probeMs: number }) | null;
  /**
   * Per scope member (index): admission on the FD's own receive path, measured
   * by an echo probe (null: no data address). A client frame is admitted by
   * the stricter of the hash tier's state and its FD's (`memberAdmit`), so an
   * FD that falls behind sheds its new work here while the others take theirs.
   * The FD's state counts at DROPPING only (below that it is scheduling jitter).
   */
  private fdAdmission: (Admission | null)[] = [];
  /** The service nodes' (any flow may be sent to any of them): one at DROPPING applies to every client frame. */
  private serviceAdmission: Admission[] = [];
  private memberAdmit = new Uint8Array(0);
  private readonly admissionOfProbe = new Map<QueueProbe, { admission: Admission; fd: string }>();

  constructor(socket: DatagramSocket, scheduler: Scheduler, opts: ForwardingEngineOptions) {
    this.counters = new Counters(HT);
    this.dp = new Datapath(socket, scheduler, this.counters, opts.admission ? { ...opts, queueProbeMs: opts.admission.probeMs } : opts);
    this.admission = opts.admission && this.dp.probe ? new Admission(this.dp.probe, scheduler.clock, opts.admission) : null;
    this.admissionOpts = this.admission ? opts.admission! : null;
    this.id = opts.id;
    this.seed = opts.hashSeed >>> 0;
    this.symmetric = opts.symmetricHash ?? false;
    this.clientKey = opts.clientKeyHash ?? false;
    this.byHint = opts.replyByOwnerHint ?? true;
    this.out.vni = opts.vni;
    this.clock = scheduler.clock;
    const d = CLIENT_TABLE_DEFAULTS;
    this.clientIdleMs = opts.clientIdleMs ?? d.idleMs;
    this.sweepBudget = opts.clientSweepBudget ?? d.sweepBudget;
    this.clientAddrs = new ClientTable(opts.clientAddrCapacity ?? d.addrCapacity, this.onAddrEvicted);
    this.clients = new ClientTable(opts.clientCapacity ?? d.capacity, this.onClientEvicted);
    this.freeLanes = new Int32Array(this.clientAddrs.capacity);
    this.nowMs = Math.floor(this.clock.now());
    this.dp.start((buf, m, from) => this.frame(buf, m, from), this.tick);
  }

  /** Once per batch: the clock, the idle sweeps, admission control. */
  private readonly tick = (): void => {
    const now = Math.floor(this.clock.now());
    this.nowMs = now;
    this.clientAddrs.sweep(now, this.clientIdleMs, this.sweepBudget);
    this.clients.sweep(now, this.clientIdleMs, this.sweepBudget);
    if (this.admission) this.beforeBatch();
  };

  private readonly onAddrEvicted = (lane: number, _unused: number, idle: boolean): void => {
    this.counters.inc(idle ? HT.client_addrs_evicted_idle : HT.client_addrs_evicted_full);
    // Frames the lane still holds (a full eviction mid-batch) leave to the old address when it is reused (TxLanes.setLaneAddress).
    this.freeLanes[this.freeLaneCount++] = lane;
  };

  private readonly onClientEvicted = (_ip: number, _port: number, idle: boolean): void => {
    this.counters.inc(idle ? HT.clients_evicted_idle : HT.clients_evicted_full);
  };

  get address(): Address {
    return this.dp.socket.address;
  }
  get scope(): HashScope | null {
    return this.routing.scope;
  }

  /** Installs a new scope; `fds` gives every FD's id and data address. Built off the hot path, swapped whole. */
  setScope(scope: HashScope | null, fds: readonly ScopeMember[], services: readonly ScopeMember[] = []): void {
    const lanes = new Int32Array(scope ? scope.members.length : 0).fill(-1);
    const byId = new Int32Array(65536).fill(-1);
    if (scope) {
      const byName = new Map(fds.map((f) => [f.name, f]));
      scope.members.forEach((name, i) => {
        const f = byName.get(name);
        if (!f) return;
        lanes[i] = this.dp.laneTo(f.data);
        byId[f.id] = lanes[i]!;
      });
    }
    if (this.admissionOpts) this.probeMembers(scope, fds, services);
    this.routing = { scope, laneOfMember: lanes, laneOfId: byId };
  }

  /** One echo probe and admission state machine per scope member (kept across scopes for members that stay). */
  private probeMembers(scope: HashScope | null, fds: readonly ScopeMember[], services: readonly ScopeMember[]): void {
    const o = this.admissionOpts!;
    const byName = new Map(fds.map((f) => [f.name, f]));
    const members = scope ? scope.members.map((n) => byName.get(n)) : [];
    const probed = members.filter((f) => f !== undefined);
    const probes = this.dp.probeTo([...probed.map((f) => f.data), ...services.map((s) => s.data)], o.probeMs);
    const live = new Set(probes);
    for (const p of this.admissionOfProbe.keys()) if (!live.has(p)) this.admissionOfProbe.delete(p);
    let k = 0;
    this.fdAdmission = members.map((f) => {
      if (f === undefined) return null;
      const p = probes[k++]!;
      let a = this.admissionOfProbe.get(p);
      if (!a) this.admissionOfProbe.set(p, (a = { admission: new Admission(p, this.clock, o), fd: f.name }));
      return a.admission;
    });
    this.serviceAdmission = services.map((svc, i) => {
      const p = probes[probed.length + i]!;
      let a = this.admissionOfProbe.get(p);
      if (!a) this.admissionOfProbe.set(p, (a = { admission: new Admission(p, this.clock, o), fd: svc.name }));
      return a.admission;
    });
    this.memberAdmit = new Uint8Array(members.length).fill(this.admit);
  }

  /** Per-FD admission as of the last batch (FD name, data address "host:port"): for status and metrics. Off the hot path. */
  fdAdmissionStates(): FdAdmission[] {
    const out: FdAdmission[] = [];
    for (const [p, a] of this.admissionOfProbe) out.push({ fd: a.fd, data: `${p.echo!.to.host}:${p.echo!.to.port}`, state: a.admission.state, delayMs: p.delayMs(), maxDelayMs: a.admission.maxDelayMs, silentMs: p.silentMs() });
    return out;
  }

  private readonly beforeBatch = (): void => {
    const before = this.admit;
    const now = this.admission!.update();
    if (now !== before) {
      this.admit = now;
      this.counters.inc(HT.admission_to_open + now); // the four counters are in AdmissionState order
    }
    // The service tier: a service queue at its bound (DROPPING, as for an FD) refuses client frames for every FD.
    let all: number = now;
    for (const a of this.serviceAdmission) {
      const was = a.state;
      const sv = a.update();
      if (sv !== was) this.counters.inc(HT.admission_service_to_open + sv);
      if (sv === AdmissionState.DROPPING) all = sv;
    }
    const fa = this.fdAdmission;
    const ma = this.memberAdmit;
    for (let i = 0; i < fa.length; i++) {
      const a = fa[i]!;
      let s: number = all;
      if (a !== null) {
        const was = a.state;
        const fd = a.update();
        if (fd !== was) this.counters.inc(HT.admission_fd_to_open + fd);
        // At DROPPING only: a peer's round trip includes its process getting the CPU, and on a busy 2-core
        // machine planned events alone (a rolling upgrade's process starts) took FD and service round trips
        // past shedAboveMs at half load (measured 290 ms, test/chaos.test.ts), never past dropAboveMs.
        if (fd === AdmissionState.DROPPING) s = fd;
      }
      ma[i] = s;
    }
  };

  private frame(buf: Uint8Array, m: EncapMeta, from: Address | null): void {
    const c = this.counters;
    const p = this.pkt;
    // The switch does not verify L4 checksums (the FD does); it needs the 5-tuple.
    const r = parseIPv4(buf, m.innerOffset, m.innerLength, p, false);
    if (r !== Reject.OK) {
      c.inc(HT.drop_bad_inner);
      return;
    }
    const o = this.out;
    o.tier = Tier.HASH;
    o.senderId = this.id;
    o.flags = m.flags;
    o.hopCount = m.hopCount;
    o.ownerHint = m.ownerHint;
    const tier = m.tier;
    if (m.locatorUnreadable) c.inc(HT.locator_unreadable);
    if (tier === Tier.FD) {
      this.toClient(buf, m, p.dstIp | 0);
      return;
    }
    // Toward an FD: a service's reply keeps the locator it echoed; a client frame gets this datagram's source.
    o.locatorIp = m.locatorIp;
    o.locatorPort = m.locatorPort;
    o.locatorEncap = m.locatorEncap;
    const rt = this.routing;
    const scope = rt.scope;
    if (tier === Tier.CLIENT) {
      if (scope === null) {
        c.inc(HT.drop_empty_scope);
        return;
      }
      const h = this.hash(p);
      const member = scope.pick(h);
      // Offered more than the cluster carries: refuse new work here, counted (hash-tier/admission.ts):
      // by the stricter of this tier's state and the FD's the flow hashes to.
      const a = this.admission === null ? AdmissionState.OPEN : member < this.memberAdmit.length ? this.memberAdmit[member]! : this.admit;
      if (a === AdmissionState.DROPPING) {
        c.inc(HT.drop_admission_overload);
        return;
      }
      if (a !== AdmissionState.OPEN && p.proto === IPPROTO_TCP && (p.tcpFlags & (TCP_SYN | TCP_ACK)) === TCP_SYN) {
        c.inc(HT.drop_admission_syn);
        return;
      }
      if (a === AdmissionState.SHED_NEW) {
        o.flags = m.flags | EncapFlag.SHED;
        c.inc(HT.admission_shed_marked);
      } else o.flags = m.flags & ~EncapFlag.SHED;
      this.stampLocator(p.srcIp | 0, from);
      this.toMember(buf, m, rt, scope, member);
      return;
    }
    if (tier !== Tier.SERVICE) {
      c.inc(HT.drop_bad_tier);
      return;
    }
    if (scope === null) {
      c.inc(HT.drop_empty_scope);
      return;
    }
    if (tier === Tier.SERVICE && this.byHint) {
      const hinted = rt.laneOfId[m.ownerHint]!; // -1 for OWNER_NONE (0xFFFF) and FDs out of scope
      if (hinted >= 0) {
        o.scopeVersion = scope.version;
        if (this.dp.emit(hinted, o, buf, m.innerOffset, m.innerLength)) c.inc(HT.to_fd_by_hint);
        return;
      }
    }
    this.toMember(buf, m, rt, scope, scope.pick(this.clientKey ? hashFiveTupleI32(p.dstIp | 0, 0, p.dstPort, 0, p.proto, this.seed) : this.hash(p)));
  }

  /** The hash the scope picks a client frame's FD by. int32 in and out (the I32 forms): nothing is boxed whether or not V8 inlines the hash. */
  private hash(p: PacketMeta): number {
    if (this.clientKey) return hashFiveTupleI32(p.srcIp | 0, 0, p.srcPort, 0, p.proto, this.seed);
    return this.symmetric
      ? hashFiveTupleSymmetricI32(p.srcIp | 0, p.dstIp | 0, p.srcPort, p.dstPort, p.proto, this.seed)
      : hashFiveTupleI32(p.srcIp | 0, p.dstIp | 0, p.srcPort, p.dstPort, p.proto, this.seed);
  }

  private toMember(buf: Uint8Array, m: EncapMeta, rt: Routing, scope: HashScope, member: number): void {
    const lane = rt.laneOfMember[member]!;
    if (lane < 0) {
      this.counters.inc(DP.drop_no_route);
      return;
    }
    const o = this.out;
    o.scopeVersion = scope.version;
    if (this.dp.emit(lane, o, buf, m.innerOffset, m.innerLength)) this.counters.inc(HT.to_fd);
  }

  /**
   * Real hosts' traffic on an edge port (docs/edge-encapsulation.md): a
   * packet to one of `vips` is a client's (admitted, hashed and stamped with
   * a locator that says how the client speaks, like a Baton client's); a
   * packet from one of `servers` (underlay addresses) is a real server's
   * reply, which carries no owner hint: hashed to an FD, which redirects it
   * to the owner if it is not (at most one hop). Anything else is a counted
   * drop. Off the hot path; the handler is not.
   */
  attachEdge(port: EdgePort, opts: { vips: readonly number[]; servers: readonly number[] }): void {
    this.edges[port.kind] = port;
    this.edgeVips = new Set(opts.vips.map((v) => v >>> 0));
    this.edgeServers = new Set(opts.servers.map((v) => v >>> 0));
    const m = this.edgeMeta;
    m.vni = this.out.vni;
    port.start(
      (buf, off, len, from) => this.edgeFrame(port, buf, off, len, from),
      this.tick,
      () => this.dp.tx.flushAll(),
    );
  }

  private edgeFrame(port: EdgePort, buf: Uint8Array, off: number, len: number, from: Address): void {
    const m = this.edgeMeta;
    m.flags = 0;
    m.hopCount = 0;
    m.ownerHint = 0xffff;
    m.locatorPort = 0;
    m.locatorIp = 0;
    m.locatorEncap = 0;
    m.innerOffset = off;
    m.innerLength = len;
    const dst = ((buf[off + 16]! << 24) | (buf[off + 17]! << 16) | (buf[off + 18]! << 8) | buf[off + 19]!) >>> 0;
    if (this.edgeVips.has(dst)) {
      m.tier = Tier.CLIENT;
      this.counters.inc(HT.edge_client_frames);
      this.edgeKind = port.kind;
      this.edgePeerPort = port.peerPort;
      this.frame(buf, m, from);
      this.edgeKind = 0;
      return;
    }
    if (from !== this.edgeFrom) {
      this.edgeFrom = from;
      this.edgeFromIp = parseIPv4Host(from.host);
    }
    if (this.edgeFromIp < 0 || !this.edgeServers.has(this.edgeFromIp >>> 0)) {
      this.counters.inc(HT.drop_edge_unknown_source);
      return;
    }
    m.tier = Tier.SERVICE;
    this.counters.inc(HT.edge_server_frames);
    this.frame(buf, m, from);
  }

  /** Egress toward a client: to its locator, whichever tier it entered through; without one, to the address learned for `clientIp` (int32). */
  private toClient(buf: Uint8Array, m: EncapMeta, clientIp: number): void {
    const c = this.counters;
    let lane: number;
    if (m.locatorPort !== 0) {
      if (m.locatorEncap !== 0) {
        this.toEdgeClient(m.locatorEncap, m.locatorIp, buf, m);
        return;
      }
      lane = this.laneOfAddr(m.locatorIp | 0, m.locatorPort);
    } else {
      const k = this.clients.find(clientIp, 1);
      if (k < 0) {
        c.inc(HT.drop_unknown_client);
        return;
      }
      c.inc(HT.to_client_learned);
      const b = this.clients.valB[k]!; // port | encap << 16
      if (b >>> 16 !== 0) {
        this.toEdgeClient(b >>> 16, this.clients.valA[k]!, buf, m);
        return;
      }
      lane = this.laneOfAddr(this.clients.valA[k]!, b);
    }
    const o = this.out;
    o.scopeVersion = m.scopeVersion;
    o.locatorPort = 0; // the client needs no locator
    if (this.dp.emit(lane, o, buf, m.innerOffset, m.innerLength)) c.inc(HT.to_client);
  }

  /**
   * A client frame: the locator is where its datagram came from (parsed once
   * per datagram; no allocation), and the client is learned for the
   * no-locator fallback. IPv4 addresses travel as int32 (`| 0`) between
   * methods: a uint32 above 2^31 would be boxed.
   */
  /** To a real client host: its kernel tunnel takes one packet per datagram, in the encapsulation it spoke. */
  private toEdgeClient(kind: number, ip: number, buf: Uint8Array, m: EncapMeta): void {
    const port = kind <= EdgeEncap.GENEVE ? this.edges[kind]! : null;
    if (port === null) {
      this.counters.inc(HT.drop_edge_no_port);
      return;
    }
    if (port.send(ip, buf, m.innerOffset, m.innerLength)) this.counters.inc(HT.to_client_edge);
  }

  private stampLocator(clientIp: number, from: Address | null): void {
    const o = this.out;
    if (from === null) {
      o.locatorPort = 0;
      return;
    }
    if (from !== this.locFrom) {
      this.locFrom = from;
      const ip = parseIPv4Host(from.host);
      this.locIp = ip | 0;
      this.locPort = ip < 0 ? 0 : from.port;
    }
    if (this.locPort === 0) {
      o.locatorPort = 0;
      this.counters.inc(HT.client_no_locator);
      return;
    }
    o.locatorIp = this.locIp >>> 0;
    // An edge client's replies go to its host's tunnel port (the datagram's source port varies per connection).
    const port = this.edgeKind !== 0 ? this.edgePeerPort : this.locPort;
    const learned = port | (this.edgeKind << 16);
    o.locatorPort = port;
    o.locatorEncap = this.edgeKind;
    const t = this.clients;
    let k = t.find(clientIp, 1);
    if (k < 0) {
      k = t.insert(clientIp, 1, this.nowMs);
      this.counters.inc(HT.clients_learned);
    } else if (t.valA[k] !== this.locIp || t.valB[k] !== learned) {
      this.counters.inc(HT.clients_learned); // the client moved (a new underlay address)
    } else {
      t.touch(k, this.nowMs);
      return;
    }
    t.valA[k] = this.locIp;
    t.valB[k] = learned;
    t.touch(k, this.nowMs);
  }

  /** The TX lane to underlay address (ip as int32, port), added on first use (a lane of an evicted address is reused). */
  private laneOfAddr(ip: number, port: number): number {
    const t = this.clientAddrs;
    let k = t.find(ip, port);
    if (k >= 0) {
      t.touch(k, this.nowMs);
      return t.valA[k]!;
    }
    k = t.insert(ip, port, this.nowMs); // may evict (and free a lane)
    const to = { host: ipv4String(ip), port }; // once per new address, not per packet
    let lane: number;
    if (this.freeLaneCount > 0) {
      lane = this.freeLanes[--this.freeLaneCount]!;
      this.dp.tx.setLaneAddress(lane, to);
    } else lane = this.dp.tx.addLane(to);
    t.valA[k] = lane;
    this.counters.inc(HT.client_addrs_added);
    return lane;
  }

  /** Client addresses with a lane, learned clients, TX lanes in use (FDs + client addresses) (gauges). */
  get clientAddrCount(): number {
    return this.clientAddrs.size;
  }
  get lanesInUse(): number {
    return this.dp.tx.laneCount - this.freeLaneCount;
  }
  get clientCount(): number {
    return this.clients.size;
  }

  close(): Promise<void> {
    return this.dp.close();
  }
}

/** "a.b.c.d" -> uint32, or -1 when `s` is not a dotted-quad IPv4 address. Allocates nothing. */
export function parseIPv4Host(s: string): number {
  let ip = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const ch = s.charCodeAt(i);
    if (ch >= 48 && ch <= 57) {
      part = part * 10 + (ch - 48);
      if (++digits > 3 || part > 255) return -1;
    } else if (ch === 46 && digits > 0 && dots < 3) {
      ip = ip * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else return -1;
  }
  if (dots !== 3 || digits === 0) return -1;
  return ip * 256 + part;
}

function ipv4String(ip: number): string {
  return `${(ip >>> 24) & 0xff}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}`;
}
