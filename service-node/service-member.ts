/**
 * A service node process: the echo backend (ServiceNode) plus its member
 * agent, which registers the node (virtual ip:port + data address) with the
 * manager so FDs can rewrite flows to it, and learns the hash tier's data
 * address (where replies go) from the scope updates.
 */
import type { BatonConfig, ServiceConfig } from '../shared/config/config.js';
import { parseAddress, formatAddress, sameAddress, type Address } from '../shared/io/address.js';
import type { DatagramSocket } from '../shared/io/datagram.js';
import { MemberAgent } from '../shared/cluster/member-agent.js';
import { uplinkOf, uplinkOnLinkChange, type TierLinkState } from '../shared/cluster/uplink.js';
import { Role, nodeInfo, emptyFlowStats, type FlowStats, type ScopeUpdate } from '../shared/control/messages.js';
import { buildVersion } from '../shared/build-info.js';
import { Counters } from '../shared/counters.js';
import { ServiceNode, ServiceLinks, SN } from './service-node.js';
import type { NodeIo } from '../distributor/fd-node.js';
import { PpsMeter } from '../shared/observability/pps.js';

export class ServiceMember {
  node: ServiceNode | null = null;
  agent!: MemberAgent;
  socket!: DatagramSocket;
  readonly counters = new Counters(SN);
  /** Per-link frame counts across every ServiceNode instance this member runs (the loss books). */
  readonly links = new ServiceLinks();
  private pps: PpsMeter;

  constructor(
    readonly cfg: BatonConfig,
    readonly me: ServiceConfig,
    private readonly io: NodeIo,
    private readonly manager: Address | Address[],
  ) {
    this.pps = new PpsMeter(io.scheduler.clock, () => this.counters.get(SN.rx_frames));
  }

  async start(): Promise<void> {
    const { cfg, me, io } = this;
    this.socket = await io.datagrams.bind({ host: me.host, port: me.dataPort });
    this.agent = new MemberAgent({
      node: nodeInfo({
        id: me.id,
        name: me.name,
        role: Role.SERVICE,
        dataAddr: formatAddress(this.socket.address),
        virtualIp: me.virtualIp,
        virtualPort: me.virtualPort,
        pid: process.pid,
        version: buildVersion(),
      }),
      manager: this.manager,
      net: io.messages,
      scheduler: io.scheduler,
      heartbeatMs: cfg.control.heartbeatMs,
      requestTimeoutMs: cfg.control.requestTimeoutMs,
      stats: () => this.stats(),
      counters: () => this.counters.snapshot(),
      onScope: (u) => this.applyScope(u),
      onLinkChange: () => {
        // Leave the uplink when its link went down; back to the configured tier with the next scope update.
        const u = this.agent?.lastScope;
        if (!u) return;
        const next = uplinkOnLinkChange(u, this.cfg, this.me.uplink, this.tierLink, this.node ? formatAddress(this.node.returnTo) : null);
        if (next) this.returnTo(parseAddress(next.dataAddr));
      },
    });
    await this.agent.start();
  }

  private readonly tierLink: TierLinkState = (t) => (t.controlAddr ? this.agent.linkUp(t.controlAddr) : undefined);

  /** Replies go to the uplink tier (a live one: see shared/cluster/uplink.ts). */
  private applyScope(u: ScopeUpdate): void {
    const ht = uplinkOf(u, this.cfg, this.me.uplink, this.tierLink);
    if (ht) this.returnTo(parseAddress(ht.dataAddr));
  }

  private returnTo(to: Address): void {
    if (this.node && sameAddress(this.node.returnTo, to)) return;
    if (this.node) this.counters.inc(SN.uplink_changes);
    this.node?.stop();
    this.node = new ServiceNode({ id: this.me.id, socket: this.socket, scheduler: this.io.scheduler, returnTo: to, vni: this.cfg.cluster.vni, counters: this.counters, links: this.links });
  }

  stats(): FlowStats {
    return { ...emptyFlowStats(), rxPackets: this.counters.get(SN.rx_frames), txPackets: this.counters.get(SN.tx_frames), pps: this.pps.sample() };
  }

  async stop(): Promise<void> {
    this.agent?.stop();
    this.node?.stop();
    // Let the replies handed to the socket go out (their callbacks count them), at most 1 s.
    const end = this.io.scheduler.clock.now() + 1000;
    while (this.node && this.node.pendingSends > 0 && this.io.scheduler.clock.now() < end) await new Promise<void>((r) => this.io.scheduler.after(5, r));
    await this.socket?.close();
  }
}
