/**
 * One flow distributor, assembled: flow table + flow handler (mechanism),
 * rewrite policy over the registered service nodes (policy), data plane
 * (RX ring → handler → TX lanes), ownership mesh with its peers, and the
 * member agent that talks to the manager. Everything I/O comes in through
 * `io`, so the same node runs as a process or in an in-memory cluster.
 */
import type { NodeIo } from '../shared/io/node-io.js';
import { parseAddress, formatAddress, type Address } from '../shared/io/address.js';
import { FlowTable } from '../distributor/flow-table.js';
import { FlowHandler } from '../distributor/flow-handler.js';
import { HashRewritePolicy } from '../distributor/service-policy.js';
import { FdDataplane } from '../distributor/fd-dataplane.js';
import { OwnershipMesh } from '../distributor/ownership-mesh.js';
import { FD } from '../distributor/fd-counters.js';
import { MemberAgent } from '../shared/cluster/member-agent.js';
import type { ControlChannel } from '../shared/control/channel.js';
import { uplinkOf, uplinkOnLinkChange } from '../shared/cluster/uplink.js';
import { Role, MemberStatus, nodeInfo, body, failedDisengageReply, type FlowStats, type NodeInfo, type ScopeUpdate, type EnvelopeObject, type Body } from '../shared/control/messages.js';
import { buildVersion } from '../shared/build-info.js';
import { MigrationClient } from '../migration-client/migration-client.js';
import { UdpNet } from '../shared/io/datagram.js';
import { kernelUdpRxQueue } from '../shared/io/kernel-udp-stats.js';
import { warmUpMigrationPath } from '../migration-client/warm-up.js';
import { handleMigrationChunk } from '../migration-client/migration-receiver.js';
import { syncOwnershipTo } from '../migration-client/ownership-sync.js';
import { scopeWithIds } from '../shared/scope/hash-scope.js';
import { DP } from '../shared/dataplane/counters.js';
import { sumDrops } from '../shared/counters.js';
import { ipv4ToInt, IPPROTO_TCP, IPPROTO_UDP } from '../shared/packet/meta.js';
import type { BatonConfig, NodeConfig } from '../shared/config/config.js';
import { PpsMeter } from '../shared/observability/pps.js';
import { getLogger } from '../shared/observability/logger.js';
import { EdgePort } from '../shared/dataplane/edge-port.js';
import { EdgeEncap, VXLAN_GPE_PORT, GENEVE_EDGE_PORT } from '../shared/encap/edge.js';
import { EndpointHealth, EndpointState, ENDPOINT_STATE_NAMES, type Prober } from '../distributor/endpoint-health.js';
import { TcpConnectProber } from '../shared/io/tcp-probe.js';
import { ReplicationSender } from '../distributor/replication.js';
import { ErrorCode } from '../shared/errors.js';
import { ReplicaStore } from '../distributor/replica-store.js';
import { MigrationOp } from '../migration-client/migration-receiver.js';
import { Counters } from '../shared/counters.js';
import { FDSTOP, disengageBeforeStop } from './fd-stop.js';

export class FdNode {
  readonly table: FlowTable;
  readonly handler: FlowHandler;
  readonly policy: HashRewritePolicy;
  dataplane!: FdDataplane;
  mesh!: OwnershipMesh;
  agent!: MemberAgent;
  migration!: MigrationClient;
  /** Where peers (and later the migration manager) reach this FD's control plane. */
  controlAddress!: Address;
  /** Toward real servers (config realServers): the edge port and the endpoints' health. */
  edge: EdgePort | null = null;
  health: EndpointHealth | null = null;
  /** Flow-state replication (config replication; docs/failure.md): this FD's connections to their backups, and the replicas it holds. */
  replication: ReplicationSender | null = null;
  replicas: ReplicaStore | null = null;
  /** FAILED FDs whose replicas this FD has promoted (until they are no longer FAILED). */
  private readonly promoted = new Set<number>();
  private readonly pps: PpsMeter;
  private readonly log;

  constructor(
    readonly cfg: BatonConfig,
    readonly me: NodeConfig,
    private readonly io: NodeIo,
    private readonly manager: Address | Address[],
  ) {
    this.log = getLogger('fd-node');
    this.table = new FlowTable(cfg.flowTable.maxFlows, { seed: cfg.flowTable.seed });
    this.policy = new HashRewritePolicy([], 0, cfg.hash.seed ^ 0x9e3779b9);
    const vip = ipv4ToInt(cfg.cluster.vip);
    this.policy.setServices(cfg.cluster.services.map((s) => ({ ip: vip, port: s.port, proto: s.proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP, affinity: s.affinity })));
    this.handler = new FlowHandler({
      selfId: me.id,
      table: this.table,
      policy: this.policy,
      clock: io.scheduler.clock,
      lingerMs: cfg.flowTable.lingerMs,
      idleMs: cfg.flowTable.idleMs,
      learnedIdleMs: learnedIdle(cfg),
      embryonicCapacity: cfg.flowTable.maxEmbryonic,
      verifyL4Checksum: cfg.dataplane.verifyL4Checksum,
      clientKeyVip: cfg.hash.key === 'client' ? ipv4ToInt(cfg.cluster.vip) : undefined,
      symmetricHash: cfg.hash.symmetric,
    });
    this.handler.setBackendDeath(cfg.cluster.services.map((s) => ({ port: s.port, proto: s.proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP, onBackendDeath: s.onBackendDeath })));
    this.pps = new PpsMeter(io.scheduler.clock, () => this.handler.counters.get(FD.rx_packets));
  }

  /**
   * Binds the sockets and starts the node. `register: false` leaves out the
   * member agent (no manager): benches and tests that drive the migration
   * client directly use it.
   */
  async start(opts: { register?: boolean; prober?: Prober } = {}): Promise<void> {
    const { cfg, me, io } = this;
    const sock = await io.datagrams.bind({ host: me.host, port: me.dataPort });
    this.dataplane = new FdDataplane(this.handler, sock, io.scheduler, {
      vni: cfg.cluster.vni,
      rxCapacity: cfg.dataplane.rxCapacity,
      batchDatagrams: cfg.dataplane.batchDatagrams,
      hopLimit: cfg.dataplane.hopLimit,
      tx: { maxDatagramBytes: cfg.dataplane.maxDatagramBytes, poolBuffers: cfg.dataplane.txPoolBuffers },
    });
    const rs = cfg.realServers;
    if (rs && me.edgeHost) {
      // Real servers: their tunnel endpoints take our packets from this FD's underlay address.
      const kind = rs.encap === 'geneve' ? EdgeEncap.GENEVE : EdgeEncap.VXLAN_GPE;
      const peerPort = kind === EdgeEncap.GENEVE ? cfg.edge.genevePort || GENEVE_EDGE_PORT : cfg.edge.vxlanGpePort || VXLAN_GPE_PORT;
      this.edge = new EdgePort(await io.datagrams.bind({ host: me.edgeHost, port: 0 }), io.scheduler, { kind, vni: cfg.cluster.vni, peerPort });
      this.edge.start(() => {}); // nothing is expected back here (servers reply through the hash tier's edge)
      this.dataplane.attachEdge(this.edge);
      const endpoints = rs.endpoints.map((e, i) => ({ host: e.host, name: e.name ?? `server-${i + 1}` }));
      this.health = new EndpointHealth(endpoints, rs.health, opts.prober ?? new TcpConnectProber(), io.scheduler, (healthy, changed) => {
        this.log.info('real server health', { endpoint: changed.name, host: changed.host, state: ENDPOINT_STATE_NAMES[changed.state], healthy: healthy.map((e) => e.name) });
        this.policy.setBackends(healthy.map((e) => ({ ip: ipv4ToInt(e.host), port: 0 })));
        this.dataplane.setDownEndpoints(endpoints.filter((e) => !healthy.some((u) => u.host === e.host)).map((e) => ipv4ToInt(e.host))); // their flows: rehomed or ended
      });
      this.health.start();
    }
    // Learned entries age out after learnedIdleMs; every owned flow is announced again three times within it.
    this.mesh = new OwnershipMesh(me.id, this.handler, io.messages, io.scheduler, cfg.control.ownershipFlushMs, { refreshMs: Math.max(1000, Math.floor(learnedIdle(cfg) / 3)) });
    this.handler.setOwnershipSink(this.mesh);
    this.migration = new MigrationClient({
      selfId: me.id,
      selfName: me.name,
      table: this.table,
      handler: this.handler,
      mesh: this.mesh,
      scheduler: io.scheduler,
      queues: () => ({ rx: this.dataplane.dp.rx.depth, tx: this.dataplane.dp.tx.depth, sendQueueBytes: this.dataplane.dp.socket.sendQueueBytes() }),
      // A disengage ends quiet only with the data socket's kernel receive queue empty (real UDP sockets; in memory there is none).
      kernelRxQueue: io.datagrams instanceof UdpNet ? () => kernelUdpRxQueue(sock.address) : undefined,
    });
    const rp = cfg.replication;
    if (rp.enabled) {
      this.replicas = new ReplicaStore(rp.maxReplicas ?? cfg.flowTable.maxFlows, cfg.flowTable.seed);
      this.replication = new ReplicationSender(me.id, this.table, (id) => this.mesh.peer(id), io.scheduler, {
        lagMs: rp.lagMs,
        maxPendingChanges: rp.maxPendingChanges,
        maxInFlight: rp.maxInFlight,
        resyncEveryMs: rp.resyncEveryMs,
        requestTimeoutMs: cfg.control.requestTimeoutMs,
        clientKeyVip: cfg.hash.key === 'client' ? ipv4ToInt(cfg.cluster.vip) : -1,
        symmetric: cfg.hash.symmetric,
      });
      this.handler.setReplicationSink(this.replication);
      this.replication.start();
      // A promotion the frozen table put off (this FD was migrating its own flows) runs at the thaw.
      this.handler.onThaw(() => this.promoteFailed());
    }
    // Peer channels: chunks of a peer's flow table (inheritor side), and replicas of its connections (backup side).
    this.mesh.peerRequestHandler = (env) => {
      if (env.body.case === 'migrationChunk') {
        const c = env.body.value;
        const r = handleMigrationChunk(this.table, this.handler, this.migration.counters, c);
        // Flows that became this FD's (a commit, or a copy that is not staged) need backups.
        if (c.op === MigrationOp.COMMIT || c.op === MigrationOp.DONE || (c.op === MigrationOp.COPY && !c.staged)) this.replication?.resyncAll();
        return r;
      }
      if (env.body.case === 'replicaBatch') return this.replicas ? this.replicas.apply(env.body.value, this.handler.nowMs) : body('errorReply', { code: ErrorCode.REPLICA_REFUSED, message: 'replication is off on this FD' });
      return undefined;
    };
    const control = await this.mesh.start({ host: me.host, port: me.controlPort });
    this.controlAddress = control;
    this.agent = new MemberAgent({
      node: nodeInfo({
        id: me.id,
        name: me.name,
        role: Role.FD,
        dataAddr: formatAddress(sock.address),
        controlAddr: formatAddress(control),
        pid: process.pid,
        version: buildVersion(),
      }),
      manager: this.manager,
      net: io.messages,
      scheduler: io.scheduler,
      heartbeatMs: cfg.control.heartbeatMs,
      requestTimeoutMs: cfg.control.requestTimeoutMs,
      stats: () => this.stats(),
      counters: () => ({ ...this.handler.counters.snapshot(), ...this.dataplane.counters.snapshot() }),
      onScope: (u) => this.applyScope(u),
      onLinkChange: () => this.refreshUplink(),
      onRequest: (env, from) => this.managerRequest(env, from),
    });
    warmUpMigrationPath();
    if (opts.register !== false) await this.agent.start();
    this.log.info('fd started', { node: me.name, data: sock.address, control });
  }

  get dataAddress(): Address {
    return this.dataplane.address;
  }

  /**
   * Routes, peers and backends from the manager's view (a whole snapshot each
   * time). Service nodes: an ACTIVE one is a route and a backend; a
   * DISENGAGING one (draining: docs/disengage.md, "Service nodes") keeps its
   * route, so the flows established to it go on, but no new flow chooses it;
   * a DISENGAGED or FAILED one is neither (a flow still rewritten to it is
   * rehomed or ended at its next packet: docs/disengage.md, "Dead backends").
   */
  private applyScope(u: ScopeUpdate): void {
    let hashTier: Address | null = null;
    const peers: { id: number; data: Address }[] = [];
    const meshPeers: { id: number; controlAddr: string }[] = [];
    const services: { virtualIp: number; data: Address; port: number; id: number; draining: boolean }[] = [];
    const goneServices: number[] = [];
    for (const m of u.members) {
      const n = m.node;
      if (!n.dataAddr) continue;
      if (n.role === Role.HASH_TIER) continue;
      else if (n.role === Role.FD && m.status !== MemberStatus.FAILED) {
        peers.push({ id: n.id, data: parseAddress(n.dataAddr) });
        meshPeers.push({ id: n.id, controlAddr: n.controlAddr });
      } else if (n.role === Role.SERVICE && (m.status === MemberStatus.ACTIVE || m.status === MemberStatus.DISENGAGING) && n.virtualIp) {
        services.push({ id: n.id, virtualIp: ipv4ToInt(n.virtualIp), data: parseAddress(n.dataAddr), port: n.virtualPort, draining: m.status === MemberStatus.DISENGAGING });
      } else if (n.role === Role.SERVICE && n.virtualIp) goneServices.push(ipv4ToInt(n.virtualIp));
    }
    const up = uplinkOf(u, this.cfg, this.me.uplink, this.tierLink);
    if (up) hashTier = parseAddress(up.dataAddr);
    services.sort((a, b) => a.id - b.id); // every FD picks backends from the same ordered list
    const realServers = this.cfg.realServers ? this.cfg.realServers.endpoints.map((e) => ipv4ToInt(e.host)) : undefined;
    this.dataplane.setRoutes({ hashTier, peers, services, goneServices, realServers });
    const backends = services.filter((s) => !s.draining);
    // With real servers the backends are the healthy endpoints (EndpointHealth sets them); else the service nodes.
    if (!this.health) this.policy.setBackends(backends.map((s) => ({ ip: s.virtualIp, port: s.port })));
    this.mesh.setPeers(meshPeers);
    // Engaged again after a disengage: back to an ordinary member once the
    // scope holds this FD again (until then, redirecting by the scope without
    // it is right: that is where the hash tier sends).
    const mine = u.members.find((m) => m.node.id === this.me.id);
    if (mine && mine.inScope && mine.status === MemberStatus.ACTIVE && this.handler.leaving && !this.migration.migrating) this.migration.rejoin();
    else if (this.handler.leaving) {
      // Still leaving: follow the cluster's scope (without this FD) as it
      // changes, e.g. when a peer fails, so no packet is sent to a dead FD —
      // nor to another FD that is leaving too: two leavers that redirected
      // to each other would bounce a packet until its hop limit.
      const next = u.members.filter((m) => m.node.role === Role.FD && m.inScope && m.status === MemberStatus.ACTIVE && m.node.id !== this.me.id);
      if (next.length > 0) {
        const { scope, ids } = scopeWithIds(u.version, next.map((m) => m.node), u.tableSize, u.hashSeed, u.anchor);
        this.handler.setLeaving(scope, ids, u.hashSeed);
      }
    }
    // Embryonic connections (SYN, no ACK yet) are in every FD's table: this FD's own and its peers'.
    // Each keeps its share of maxEmbryonic (default a quarter of the table), so that together they stay within it.
    const fdsInScope = Math.max(1, u.members.filter((m) => m.node.role === Role.FD && m.inScope).length);
    this.handler.setEmbryonicBudget((this.cfg.flowTable.maxEmbryonic ?? Math.floor(this.cfg.flowTable.maxFlows / 4)) / 2 / fdsInScope);
    this.applyFailures(u);
    this.log.info('scope applied', { version: u.version, peers: peers.length, services: services.length, backends: backends.length });
  }

  /**
   * Failure handling from a scope update (docs/failure.md): FDs the scope
   * says are FAILED are no owners any more (their flows are promoted here
   * from replicas, re-created by the second line, or counted drops); this
   * FD, if it is the one declared FAILED, fences itself; and replication
   * follows the scope (backups = the scope without this FD).
   */
  private applyFailures(u: ScopeUpdate): void {
    const fds = u.members.filter((m) => m.node.role === Role.FD);
    const failed = fds.filter((m) => m.status === MemberStatus.FAILED && m.node.id !== this.me.id).map((m) => m.node.id);
    const failedSet = new Set(failed);
    this.handler.setFailed(failed);
    this.mesh.refuseFrom = (id) => failedSet.has(id);
    for (const id of this.promoted) if (!failedSet.has(id)) this.promoted.delete(id);
    const mine = fds.find((m) => m.node.id === this.me.id);
    if (mine?.status === MemberStatus.FAILED) {
      this.fence();
      return;
    }
    if (this.handler.fenced && mine && mine.inScope && mine.status === MemberStatus.ACTIVE) {
      // Engaged again (re-registered, synced by its peers, back in the scope).
      this.handler.fenced = false;
      this.mesh.fenced = false;
      this.log.warn('fence lifted: this FD is ACTIVE in the scope again', { node: this.me.name });
    }
    const store = this.replicas;
    const repl = this.replication;
    if (!store || !repl) return;
    const live = new Set(fds.filter((m) => m.status !== MemberStatus.FAILED && m.status !== MemberStatus.DISENGAGED).map((m) => m.node.id));
    store.acceptFrom = (id) => live.has(id);
    this.canPromote = !!mine && mine.inScope && mine.status === MemberStatus.ACTIVE && !this.handler.leaving;
    this.pendingPromotions = failed;
    this.promoteFailed();
    // Replicas of FDs that left (DISENGAGED: their flows moved by migration) or failed and were not promoted here go.
    store.retain((id) => live.has(id));
    const others = fds.filter((m) => m.inScope && m.node.id !== this.me.id);
    if (others.length === 0 || this.handler.fenced) repl.setScope(null, new Uint16Array(0), u.hashSeed);
    else {
      const { scope, ids } = scopeWithIds(u.version, others.map((m) => m.node), u.tableSize, u.hashSeed, u.anchor);
      repl.setScope(scope, ids, u.hashSeed);
    }
  }
  private canPromote = false;
  private pendingPromotions: number[] = [];

  /** Promotes the replicas of every FAILED owner not yet promoted (again at a thaw, if the table was frozen). */
  private promoteFailed(): void {
    const store = this.replicas;
    if (!store || !this.canPromote || this.handler.fenced) return;
    for (const id of this.pendingPromotions) {
      if (this.promoted.has(id)) continue;
      const t0 = this.io.scheduler.clock.now();
      const n = store.promote(id, this.handler, this.mesh);
      if (n < 0) return; // frozen: at the thaw
      this.promoted.add(id);
      if (n > 0) {
        this.mesh.flush();
        this.replication?.resyncAll();
        this.log.warn('promoted the replicas of a failed FD', { failed: id, entries: n, ms: Math.round((this.io.scheduler.clock.now() - t0) * 10) / 10 });
      }
    }
  }

  /**
   * The scope says this FD is FAILED (it hung past control.deadAfterMs, or
   * lost the manager): its flows were promoted elsewhere. It forwards,
   * broadcasts and replicates nothing more and empties its table (counted
   * flows_fenced), so it cannot fight the new owners. Idempotent.
   */
  private fence(): void {
    if (this.handler.fenced) return;
    const t = this.table;
    let owned = 0;
    for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) if (t.owner(s) === this.me.id) owned++;
    this.handler.fenced = true;
    this.mesh.fenced = true;
    this.replication?.setScope(null, new Uint16Array(0), 0);
    this.replicas?.retain(() => false);
    if (!this.handler.frozen) t.clear();
    this.handler.counters.inc(FD.flows_fenced, owned);
    this.log.error('declared FAILED by the manager: fenced, forwarding nothing', { node: this.me.name, flowsOwned: owned });
  }

  /** Is this FD's control link to the tier up? (undefined: no link to it) */
  private readonly tierLink = (t: NodeInfo): boolean | undefined => (t.controlAddr ? this.agent.linkUp(t.controlAddr) : undefined);

  /** A manager link went up or down: egress moves to a live tier if the uplink's went down (back to the configured one with the next scope update). */
  private refreshUplink(): void {
    const u = this.agent?.lastScope;
    if (!u || !this.dataplane) return;
    const cur = this.dataplane.uplink;
    const next = uplinkOnLinkChange(u, this.cfg, this.me.uplink, this.tierLink, cur ? formatAddress(cur) : null);
    if (next) this.dataplane.setUplink(parseAddress(next.dataAddr));
  }

  /** Requests from the migration manager. */
  private managerRequest(env: EnvelopeObject, from: ControlChannel): Body | void | Promise<Body> {
    switch (env.body.case) {
      case 'disengageRequest': {
        const req = env.body.value;
        return this.migration
          .disengage(req, (p) => from.send(body('migrationProgress', p)))
          .then(
            (r) => body('disengageReply', r),
            (e: Error) => body('disengageReply', failedDisengageReply(req, e)),
          );
      }
      case 'syncRequest': {
        const q = env.body.value;
        return syncOwnershipTo(this.me.id, this.table, this.mesh, q.joinerId, q.joinerControlAddr, this.cfg.control.requestTimeoutMs).then((records) => body('syncReply', { records }));
      }
      default:
        return undefined;
    }
  }

  stats(): FlowStats {
    const c = this.handler.counters;
    const d = this.dataplane.counters;
    let owned = 0;
    const t = this.table;
    // Off the hot path (heartbeat): count owned entries.
    for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) if (t.owner(s) === this.me.id) owned++;
    return {
      flowsOwned: owned,
      flowsTotal: t.size,
      rxPackets: c.get(FD.rx_packets),
      txPackets: d.get(DP.tx_frames),
      drops: sumDrops(c) + sumDrops(d),
      rxDepth: this.dataplane.dp.rx.depth,
      txDepth: this.dataplane.dp.tx.depth,
      sendQueueBytes: this.dataplane.dp.socket.sendQueueBytes(),
      pps: this.pps.sample(),
      ...(this.health ? realServerStats(this.health) : { realServersUp: 0, realServersDown: '' }),
    };
  }

  /** The stop's own disengage (nodes/fd-stop.ts): stop_disengages, _confirmed, _unconfirmed, _cut_short. */
  readonly stopCounters = new Counters(FDSTOP);
  private stopping: Promise<void> | null = null;
  /** Aborted by a stop at once: cuts a running disengage wait short. */
  private readonly stopCut = new AbortController();

  /**
   * Stops the node. `disengage: true` (SIGTERM of the process: cli/node-main.ts)
   * first asks the manager to disengage this FD and waits until it is
   * DISENGAGED, bounded by fdStopBoundMs (nodes/fd-stop.ts); without it (the
   * default: in-memory teardowns, benches, a whole cluster torn down) it
   * closes at once. Idempotent: a later call without `disengage` (a second
   * SIGTERM) cuts a running disengage wait short, and the node closes then.
   */
  stop(opts: { disengage?: boolean } = {}): Promise<void> {
    if (!opts.disengage) this.stopCut.abort();
    return (this.stopping ??= (async () => {
      if (opts.disengage && this.agent) {
        await disengageBeforeStop({ cfg: this.cfg, name: this.me.name, id: this.me.id, agent: this.agent, scheduler: this.io.scheduler, counters: this.stopCounters, log: this.log }, this.stopCut.signal);
      }
      this.agent?.stop();
      this.replication?.stop();
      this.health?.stop();
      await this.mesh?.stop();
      await this.dataplane?.close();
      await this.edge?.close();
    })());
  }
}

/** flowTable.learnedIdleMs, default 10 x idleMs. */
function learnedIdle(cfg: BatonConfig): number {
  return cfg.flowTable.learnedIdleMs ?? cfg.flowTable.idleMs * 10;
}

/** The health check's view for the heartbeat (and so `baton status`). */
function realServerStats(h: EndpointHealth): { realServersUp: number; realServersDown: string } {
  const all = h.status();
  return { realServersUp: all.filter((e) => e.state === EndpointState.UP).length, realServersDown: all.filter((e) => e.state !== EndpointState.UP).map((e) => e.name).join(',') };
}
