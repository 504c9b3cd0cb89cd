/**
 * An FD's data plane: frames from the hash tier (or redirected by a peer FD)
 * go through the flow handler; the verdict picks the TX lane:
 *   FORWARD to a service node  → that node's lane (owner hint = this FD)
 *   FORWARD to a real server   → the edge port (edge encapsulation, one
 *                                packet per datagram, to the server's tunnel port)
 *   FORWARD to anything else   → the hash tier (egress toward the client)
 *   REDIRECT                   → the owner FD's lane (hop count + 1)
 * Every frame sent carries the client locator of the frame received (the
 * client's underlay address, written by the hash tier it entered through),
 * so whichever tier gets the egress frame can deliver it. The hash tier is
 * this FD's uplink (shared/cluster/uplink.ts); `setUplink` moves it alone
 * when that tier dies.
 * Routes (peers, service nodes, hash tier) are snapshots installed off the
 * hot path by the control agent.
 * A packet rewritten to a backend that is gone — a service node that left
 * (FAILED or DISENGAGED: `goneServices`), a real server the health check
 * says is down (`setDownEndpoints`) — is the flow handler's to rehome or end
 * (FlowHandler.backendDied; docs/disengage.md, "Dead backends"): sent on to
 * the new backend, answered with an RST toward the client, or dropped, counted.
 */
import type { Scheduler } from '../shared/runtime/scheduler.js';
import type { DatagramSocket } from '../shared/io/datagram.js';
import type { Address } from '../shared/io/address.js';
import { Counters, defineCounters } from '../shared/counters.js';
import { Datapath, type DatapathOptions } from '../shared/dataplane/datapath.js';
import { DP } from '../shared/dataplane/counters.js';
import { EncapMeta, EncapFlag, Tier, ENCAP_DEFAULT_HOP_LIMIT } from '../shared/encap/geneve.js';
import { FlowHandler, Verdict, BackendDeath } from './flow-handler.js';
import { OWNER_NONE } from './flow-table.js';
import type { EdgePort } from '../shared/dataplane/edge-port.js';

export const FDP = defineCounters([...DP.names, 'uplink_changes'] as unknown as readonly [...typeof DP.names, 'uplink_changes']);

export interface FdDataplaneOptions extends DatapathOptions {
  hopLimit?: number;
}

interface Routes {
  hashTierLane: number; // -1 until known
  peerLane: Int32Array; // node id -> lane, -1 unknown
  serviceLane: Map<number, number>; // service virtual IP -> lane; -1: a service node that left (its flows are rehomed or ended: deadBackend)
  realServer: Set<number>; // real-server endpoint addresses (reached through the edge port)
}

export class FdDataplane {
  readonly dp: Datapath;
  readonly counters: Counters;
  private readonly out = new EncapMeta();
  private readonly hopLimit: number;
  private routes: Routes = { hashTierLane: -1, peerLane: new Int32Array(65536).fill(-1), serviceLane: new Map(), realServer: new Set() };
  /** Toward real servers (config realServers), or null. */
  private edge: EdgePort | null = null;

  constructor(
    readonly handler: FlowHandler,
    socket: DatagramSocket,
    scheduler: Scheduler,
    opts: FdDataplaneOptions,
  ) {
    this.counters = new Counters(FDP);
    this.dp = new Datapath(socket, scheduler, this.counters, opts);
    this.hopLimit = opts.hopLimit ?? ENCAP_DEFAULT_HOP_LIMIT;
    this.out.vni = opts.vni;
    this.dp.start(
      (buf, m) => this.frame(buf, m),
      () => handler.tick(),
    );
  }

  get address(): Address {
    return this.dp.socket.address;
  }

  /**
   * Installs a whole new route snapshot. Off the hot path. `goneServices`:
   * virtual IPs of service nodes that left (DISENGAGED, FAILED): a packet of
   * a flow still rewritten to one goes to deadBackend (its flow rehomed or
   * ended), not on toward the hash tier as if it were egress to a client.
   */
  setRoutes(r: { hashTier: Address | null; peers: { id: number; data: Address }[]; services: { virtualIp: number; data: Address }[]; goneServices?: number[]; realServers?: number[] }): void {
    const peerLane = new Int32Array(65536).fill(-1);
    for (const p of r.peers) if (p.id !== this.handler.selfId) peerLane[p.id] = this.dp.laneTo(p.data);
    const serviceLane = new Map<number, number>();
    for (const ip of r.goneServices ?? []) serviceLane.set(ip >>> 0, -1);
    for (const s of r.services) serviceLane.set(s.virtualIp >>> 0, this.dp.laneTo(s.data));
    const realServer = new Set((r.realServers ?? []).map((ip) => ip >>> 0));
    this.routes = { hashTierLane: r.hashTier ? this.dp.laneTo(r.hashTier) : -1, peerLane, serviceLane, realServer };
    this.noteUplink(r.hashTier);
  }

  /** Egress goes to another hash tier (the uplink died or came back); the rest of the routes stay. Off the hot path. */
  setUplink(hashTier: Address | null): void {
    const lane = hashTier ? this.dp.laneTo(hashTier) : -1;
    if (lane === this.routes.hashTierLane) return;
    this.routes = { ...this.routes, hashTierLane: lane };
    this.noteUplink(hashTier);
  }

  /** Real servers are reached through `port` (its socket on this FD's edge address). */
  attachEdge(port: EdgePort): void {
    this.edge = port;
  }

  /** The hash tier egress goes to now. */
  get uplink(): Address | null {
    return this.uplinkAddr;
  }
  private uplinkAddr: Address | null = null;
  private noteUplink(a: Address | null): void {
    const was = this.uplinkAddr;
    if (a && was && a.host === was.host && a.port === was.port) return;
    if (a && was) this.counters.inc(FDP.uplink_changes);
    this.uplinkAddr = a;
  }

  private frame(buf: Uint8Array, m: EncapMeta): void {
    const c = this.counters;
    if (m.hopCount > this.hopLimit) {
      c.inc(DP.drop_hop_limit);
      return;
    }
    const h = this.handler;
    const v = h.handle(buf, m.innerOffset, m.innerLength, m.ownerHint, (m.flags & EncapFlag.SHED) !== 0);
    if (v === Verdict.DROP) return;
    const o = this.out;
    o.senderId = h.selfId;
    o.scopeVersion = m.scopeVersion;
    o.tier = Tier.FD;
    o.locatorIp = m.locatorIp;
    o.locatorPort = m.locatorPort;
    o.locatorEncap = m.locatorEncap;
    const rt = this.routes;
    let lane: number;
    if (v === Verdict.REDIRECT) {
      lane = rt.peerLane[h.redirectOwner]!;
      if (lane < 0) {
        c.inc(DP.drop_unknown_owner);
        return;
      }
      o.flags = m.flags | EncapFlag.REDIRECTED;
      o.hopCount = m.hopCount + 1;
      o.ownerHint = h.redirectHint;
    } else {
      const dst = h.meta.dstIp;
      if (this.edge !== null && rt.realServer.has(dst)) {
        if (this.down.length > 0 && this.isDown(dst)) this.deadBackend(buf, m);
        else this.edge.send(dst, buf, m.innerOffset, m.innerLength); // counted by the edge port (sent, or a named drop)
        return;
      }
      const svc = rt.serviceLane.get(dst);
      if (svc === -1) {
        this.deadBackend(buf, m); // a service node that left
        return;
      }
      lane = svc === undefined ? rt.hashTierLane : svc;
      if (lane < 0) {
        c.inc(DP.drop_no_route);
        return;
      }
      o.flags = m.flags;
      o.hopCount = m.hopCount;
      o.ownerHint = svc === undefined ? OWNER_NONE : h.selfId;
    }
    this.dp.emit(lane, o, buf, m.innerOffset, m.innerLength);
  }

  /**
   * The packet just FORWARDed is rewritten to a backend that is gone: the
   * handler rehomes its flow (send the packet on to the new backend) or ends
   * it (send its RST toward the client through the hash tier, or nothing).
   * `out` holds the frame's sender, scope and locator already.
   */
  private deadBackend(buf: Uint8Array, m: EncapMeta): void {
    const h = this.handler;
    const r = h.backendDied(buf);
    if (r === BackendDeath.ENDED) return; // counted by the handler (drop_dead_backend)
    const c = this.counters;
    if (r === BackendDeath.NOT_MINE) {
      c.inc(DP.drop_no_route); // as before: no route to where its entry points
      return;
    }
    const o = this.out;
    const rt = this.routes;
    o.flags = m.flags;
    o.hopCount = m.hopCount;
    if (r === BackendDeath.RESET) {
      if (rt.hashTierLane < 0) {
        c.inc(DP.drop_no_route);
        return;
      }
      o.ownerHint = OWNER_NONE;
      this.dp.emit(rt.hashTierLane, o, h.resetPacket, 0, h.resetLength);
      return;
    }
    const dst = h.meta.dstIp; // REHOMED: the new backend's
    if (this.edge !== null && rt.realServer.has(dst)) {
      this.edge.send(dst, buf, m.innerOffset, m.innerLength);
      return;
    }
    const lane = rt.serviceLane.get(dst);
    if (lane === undefined || lane < 0) {
      c.inc(DP.drop_no_route);
      return;
    }
    o.ownerHint = h.selfId;
    this.dp.emit(lane, o, buf, m.innerOffset, m.innerLength);
  }

  /** Real-server endpoints that are not up (the health check's view): their flows' packets go to deadBackend. Off the hot path. */
  setDownEndpoints(ips: readonly number[]): void {
    this.down = Int32Array.from(ips, (ip) => ip | 0);
  }
  private down = new Int32Array(0);
  private isDown(ip: number): boolean {
    const d = this.down;
    const k = ip | 0;
    for (let i = 0; i < d.length; i++) if (d[i] === k) return true;
    return false;
  }

  close(): Promise<void> {
    return this.dp.close();
  }
}
