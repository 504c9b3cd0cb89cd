/**
 * The hash tier process: the forwarding engine (data plane) and the
 * migration manager (control plane) it hosts.
 */
import type { BatonConfig } from '../shared/config/config.js';
import { formatAddress, type Address } from '../shared/io/address.js';
import { ForwardingEngine, HT } from '../hash-tier/forwarding-engine.js';
import { Manager } from '../migration-manager/manager.js';
import { Role, MemberStatus, nodeInfo, type FlowStats } from '../shared/control/messages.js';
import { MGR } from '../migration-manager/counters.js';
import type { Timer } from '../shared/runtime/scheduler.js';
import { buildVersion } from '../shared/build-info.js';
import { PpsMeter } from '../shared/observability/pps.js';
import { getLogger } from '../shared/observability/logger.js';
import type { NodeIo } from '../shared/io/node-io.js';
import { sumDrops } from '../shared/counters.js';
import { BatonError, ErrorCode } from '../shared/errors.js';
import { checkSharedStore } from '../shared/config/config.js';
import type { ClusterStore } from '../shared/store/store.js';
import { openStore } from '../shared/store/open.js';
import { EdgePort } from '../shared/dataplane/edge-port.js';
import { EdgeEncap } from '../shared/encap/edge.js';
import { ipv4ToInt } from '../shared/packet/meta.js';

export class HashTierNode {
  engine!: ForwardingEngine;
  manager!: Manager;
  private pps!: PpsMeter;
  store!: ClusterStore;
  /** Edge ports real hosts talk to (VXLAN-GPE, Geneve), when this tier has an edgeHost. */
  readonly edges: EdgePort[] = [];

  constructor(
    readonly cfg: BatonConfig,
    private readonly io: NodeIo,
    /** Which of cfg.hashTiers this process is (default the first). */
    readonly name: string = cfg.hashTiers[0]!.name,
    /** A store to use instead of opening cfg.store.url (simulations: several tiers sharing one MemoryBackend). */
    private readonly injectedStore?: ClusterStore,
  ) {}

  async start(): Promise<{ data: Address; control: Address }> {
    const { cfg, io } = this;
    const me = cfg.hashTiers.find((t) => t.name === this.name);
    if (!me) throw new BatonError(ErrorCode.UNKNOWN_NODE, `no hash tier named ${JSON.stringify(this.name)} in the config (have ${cfg.hashTiers.map((t) => t.name).join(', ')})`);
    const sock = await io.datagrams.bind({ host: me.host, port: me.dataPort });
    this.engine = new ForwardingEngine(sock, io.scheduler, {
      id: me.id,
      vni: cfg.cluster.vni,
      hashSeed: cfg.hash.seed,
      symmetricHash: cfg.hash.symmetric,
      clientKeyHash: cfg.hash.key === 'client',
      clientAddrCapacity: cfg.clientTable.addrCapacity,
      clientCapacity: cfg.clientTable.capacity,
      clientIdleMs: cfg.clientTable.idleMs,
      clientSweepBudget: cfg.clientTable.sweepBudget,
      replyByOwnerHint: cfg.hash.replyByOwnerHint,
      admission: cfg.admission.enabled ? { probeMs: cfg.admission.probeMs, synAboveMs: cfg.admission.synAboveMs, shedAboveMs: cfg.admission.shedAboveMs, dropAboveMs: cfg.admission.dropAboveMs, holdMs: cfg.admission.holdMs, trendMs: cfg.admission.trendMs } : undefined,
      rxCapacity: cfg.dataplane.rxCapacity,
      batchDatagrams: cfg.dataplane.batchDatagrams,
      tx: { maxDatagramBytes: cfg.dataplane.maxDatagramBytes, poolBuffers: cfg.dataplane.txPoolBuffers },
    });
    if (me.edgeHost) {
      const vips = [ipv4ToInt(cfg.cluster.vip)];
      const servers = (cfg.realServers?.endpoints ?? []).map((e) => ipv4ToInt(e.host));
      const ports: [EdgeEncap, number][] = [[EdgeEncap.VXLAN_GPE, cfg.edge.vxlanGpePort]];
      if (cfg.edge.genevePort) ports.push([EdgeEncap.GENEVE, cfg.edge.genevePort]);
      for (const [kind, port] of ports) {
        const edge = new EdgePort(await io.datagrams.bind({ host: me.edgeHost, port }), io.scheduler, { kind, vni: cfg.cluster.vni, peerPort: port, rxCapacity: cfg.dataplane.rxCapacity, batchDatagrams: cfg.dataplane.batchDatagrams });
        this.engine.attachEdge(edge, { vips, servers });
        this.edges.push(edge);
      }
    }
    if (!this.injectedStore) checkSharedStore(cfg);
    this.store = this.injectedStore ?? await openStore(cfg.store.url, { scheduler: io.scheduler, timeoutMs: cfg.store.timeoutMs, onError: (e) => getLogger('store').warn('store error', { err: String(e) }) });
    this.pps = new PpsMeter(io.scheduler.clock, () => this.engine.counters.get(HT.rx_frames));
    this.manager = new Manager({
      self: nodeInfo({ id: me.id, name: me.name, role: Role.HASH_TIER, dataAddr: formatAddress(sock.address), pid: process.pid, version: buildVersion() }),
      net: io.messages,
      scheduler: io.scheduler,
      listen: { host: me.host, port: me.controlPort },
      engine: this.engine,
      tableSize: cfg.hash.tableSize,
      hashSeed: cfg.hash.seed,
      rebalanceAbovePct: cfg.hash.rebalanceAbovePct,
      heartbeatMs: cfg.control.heartbeatMs,
      deadAfterMs: cfg.control.deadAfterMs,
      operationTimeoutMs: cfg.operations.timeoutMs,
      quietMs: cfg.operations.quietMs,
      scopeAckTimeoutMs: cfg.operations.scopeAckTimeoutMs,
      serviceDrainTimeoutMs: cfg.operations.serviceDrainTimeoutMs,
      serviceQuietMs: cfg.operations.serviceQuietMs,
      powerdown: cfg.powerdown,
      store: this.store,
      storeTtlMs: cfg.store.ttlMs,
      soleTier: cfg.hashTiers.length === 1,
      selfStats: () => this.stats(),
      selfCounters: () => ({ ...this.engine.counters.snapshot(), ...prefixed('mgr_', this.manager.counters.snapshot()) }),
    });
    const control = await this.manager.start();
    this.dataLiveness = io.scheduler.every(Math.max(10, cfg.control.heartbeatMs), () => this.checkDataPlanes());
    // The manager's own NodeInfo carries the control address only once it is bound.
    this.manager.registry.self.controlAddr = formatAddress(control);
    getLogger('hash-tier').info('hash tier started', { data: sock.address, control });
    return { data: sock.address, control };
  }

  stats(): FlowStats {
    const c = this.engine.counters;
    return {
      flowsOwned: 0,
      flowsTotal: 0,
      rxPackets: c.get(HT.rx_frames),
      txPackets: c.get(HT.tx_frames),
      drops: sumDrops(c),
      rxDepth: this.engine.dp.rx.depth,
      txDepth: this.engine.dp.tx.depth,
      sendQueueBytes: this.engine.dp.socket.sendQueueBytes(),
      realServersUp: 0,
      realServersDown: '',
      pps: this.pps.sample(),
    };
  }

  /**
   * Stops the way a crash would (simulations and tests): sockets and
   * connections close, nothing is said to anyone — no lease revoked, no
   * leadership resigned; the others notice when the TTL runs out.
   */
  private dataLiveness: Timer | null = null;
  private readonly failing = new Set<number>();

  /**
   * The data-plane half of failure detection (docs/failure.md): a member in
   * scope whose echo probes (the ones admission control sends) go
   * unanswered for control.dataDeadAfterMs is declared FAILED by the leader,
   * even though its heartbeats still arrive: its process is alive but
   * forwards nothing. A member that never answered a probe gives no signal.
   */
  private checkDataPlanes(): void {
    const mgr = this.manager;
    if (!mgr.isLeader) return;
    const limit = this.cfg.control.dataDeadAfterMs;
    for (const s of this.engine.fdAdmissionStates()) {
      if (!(s.silentMs > limit)) continue;
      const m = mgr.registry.all().find((r) => r.info.name === s.fd && r.info.role !== Role.HASH_TIER);
      if (!m || this.failing.has(m.info.id)) continue;
      const st = m.machine.status;
      if (st !== MemberStatus.ACTIVE && st !== MemberStatus.DISENGAGING) continue;
      this.failing.add(m.info.id);
      mgr.counters.inc(MGR.members_failed_data_plane);
      getLogger('hash-tier').warn('member failed: data plane silent', { node: s.fd, id: m.info.id, silentMs: Math.round(s.silentMs) });
      mgr
        .changeStatus(m.info.id, MemberStatus.FAILED, `data plane answered no echo probe for ${Math.round(s.silentMs)} ms (heartbeats still arriving)`)
        .catch((e: unknown) => getLogger('hash-tier').warn('could not declare the member FAILED', { node: s.fd, err: String(e) }))
        .finally(() => this.failing.delete(m.info.id));
    }
  }

  async crash(): Promise<void> {
    this.dataLiveness?.cancel();
    await this.store?.close(); // keep-alives stop, leases are left to expire
    await this.manager?.stop();
    await this.engine?.close();
    for (const e of this.edges) await e.close();
  }

  async stop(): Promise<void> {
    this.dataLiveness?.cancel();
    await this.manager?.stop();
    await this.engine?.close();
    for (const e of this.edges) await e.close();
    await this.store?.close();
  }
}

function prefixed(p: string, o: Record<string, number>): Record<string, number> {
  const r: Record<string, number> = {};
  for (const [k, v] of Object.entries(o)) r[p + k] = v;
  return r;
}
