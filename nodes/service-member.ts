/**
 * A service node process: the echo backend (ServiceNode) plus its member
 * agent, which registers the node (virtual ip:port + data address) with the
 * manager so FDs can rewrite flows to it, and learns the hash tier's data
 * address (where replies go) from the scope updates.
 *
 * Leaving is a drain (docs/disengage.md, "Service nodes"): stop() — SIGTERM
 * of the process — first asks the manager to drain this node (the same
 * DisengageRequest `baton disengage svc-N` sends, with `stopping`) and
 * waits, bounded (serviceStopBoundMs), until the manager answers that it is
 * DISENGAGED: FDs chose it for no new flow, it went quiet (or the drain
 * timed out), and every FD dropped its route. The manager asks this node to
 * answer once quiet (a DisengageRequest, stage FINISH, with the quiet
 * interval): drainQuiet(). Only then does the node stop answering; frames
 * that still arrive are counted (drop_after_stop).
 */
import type { BatonConfig, ServiceConfig } from '../shared/config/config.js';
import { parseAddress, formatAddress, sameAddress, type Address } from '../shared/io/address.js';
import type { DatagramSocket } from '../shared/io/datagram.js';
import { MemberAgent } from '../shared/cluster/member-agent.js';
import { uplinkOf, uplinkOnLinkChange, type TierLinkState } from '../shared/cluster/uplink.js';
import { Role, nodeInfo, emptyFlowStats, emptyDisengageReply, DEFAULT_SERVICE_QUIET_MS, body, type FlowStats, type ScopeUpdate, type DisengageRequest, type DisengageReply, type EnvelopeObject, type Body } from '../shared/control/messages.js';
import { UdpNet } from '../shared/io/datagram.js';
import { kernelUdpRxQueue } from '../shared/io/kernel-udp-stats.js';
import { ErrorCode, errorCodeFromWire, isBatonError } from '../shared/errors.js';
import { getLogger } from '../shared/observability/logger.js';
import { buildVersion } from '../shared/build-info.js';
import { Counters } from '../shared/counters.js';
import { ServiceNode, ServiceLinks, SN } from '../service-node/service-node.js';
import type { NodeIo } from '../shared/io/node-io.js';
import { PpsMeter } from '../shared/observability/pps.js';

/**
 * How long a stopping service node waits for the manager to drain it: the
 * quiet wait's bound, the two scope acknowledgements (DISENGAGING, then
 * DISENGAGED), and 3 s for the commits and the round trips. The launcher's
 * SIGTERM grace and the process's own exit timer allow this (and a little more).
 */
export function serviceStopBoundMs(cfg: BatonConfig): number {
  const o = cfg.operations;
  return o.serviceDrainTimeoutMs + 2 * o.scopeAckTimeoutMs + 3000;
}

/** Refusals a stopping node does not ask again (it stops at once): the manager will not drain it. */
const FINAL_REFUSALS = new Set<ErrorCode>([ErrorCode.INVALID_TRANSITION, ErrorCode.UNKNOWN_NODE, ErrorCode.BAD_ARGUMENT]);

export class ServiceMember {
  node: ServiceNode | null = null;
  agent!: MemberAgent;
  socket!: DatagramSocket;
  readonly counters = new Counters(SN);
  /** Per-link frame counts across every ServiceNode instance this member runs (the loss books). */
  readonly links = new ServiceLinks();
  private pps: PpsMeter;
  private readonly log = getLogger('service-member');
  /** The drain's quiet wait in progress (a repeated request joins it). */
  private quiet: Promise<DisengageReply> | null = null;
  private stopping: Promise<void> | null = null;

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
      onRequest: (env) => this.managerRequest(env),
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

  /** Requests from the migration manager: the drain's quiet wait. */
  private managerRequest(env: EnvelopeObject): Promise<Body> | undefined {
    if (env.body.case !== 'disengageRequest') return undefined;
    return this.drainQuiet(env.body.value).then((r) => body('disengageReply', r));
  }

  /**
   * Answers once no frame reached this node for `req.quietMs` (its flows
   * ended), nothing it sent is still unreported and its data socket's kernel
   * receive queue is empty (real UDP sockets); at `req.timeoutMs` answers
   * BATON_TIMEOUT (`drainTimedOut`). Keeps serving meanwhile (and after).
   */
  drainQuiet(req: DisengageRequest): Promise<DisengageReply> {
    if (this.quiet) return this.quiet;
    const p = this.waitQuiet(req).finally(() => {
      this.quiet = null;
    });
    this.quiet = p;
    return p;
  }

  private waitQuiet(req: DisengageRequest): Promise<DisengageReply> {
    const c = this.counters;
    const sched = this.io.scheduler;
    const clock = sched.clock;
    const quietMs = req.quietMs || DEFAULT_SERVICE_QUIET_MS;
    const timeoutMs = req.timeoutMs || this.cfg.operations.serviceDrainTimeoutMs;
    const kernelRxQueue = this.io.datagrams instanceof UdpNet ? () => kernelUdpRxQueue(this.socket.address) : () => 0;
    c.inc(SN.drains);
    const t0 = clock.now();
    const f0 = c.get(SN.rx_frames);
    let last = f0;
    let since = t0;
    const poll = Math.max(1, Math.min(50, Math.floor(quietMs / 4)));
    const base = emptyDisengageReply(this.me.name);
    return new Promise((resolve) => {
      const check = (): void => {
        const rx = c.get(SN.rx_frames);
        const now = clock.now();
        if (rx !== last) {
          last = rx;
          since = now;
          c.inc(SN.drain_quiet_restarts);
        }
        let kernel = -1;
        const pending = this.node?.pendingSends ?? 0;
        if (now - since >= quietMs && pending === 0) {
          kernel = kernelRxQueue() ?? 0;
          if (kernel === 0) {
            resolve({ ...base, ok: true, drainMs: now - t0, quietMs: now - since, framesDrained: rx - f0 });
            return;
          }
        }
        if (now - t0 >= timeoutMs) {
          c.inc(SN.drain_timeouts);
          const k = kernel >= 0 ? `${kernel} B` : 'not read';
          resolve({
            ...base,
            errorCode: ErrorCode.TIMEOUT,
            errorMessage: `${this.me.name} did not go quiet within ${timeoutMs} ms: last frame ${Math.round(now - since)} ms ago (needs ${quietMs} ms), ${pending} sends unreported, kernel receive queue ${k}`,
            drainMs: now - t0,
            quietMs: now - since,
            framesDrained: rx - f0,
            drainTimedOut: true,
          });
          return;
        }
        sched.after(poll, check);
      };
      check();
    });
  }

  /**
   * Stopping (SIGTERM): asks the manager to drain this node, bounded by
   * serviceStopBoundMs (`drain: false` skips it: a teardown of a whole
   * in-memory cluster), then stops answering, lets the replies handed to the
   * socket go out and closes it. Idempotent.
   */
  stop(opts: { drain?: boolean } = {}): Promise<void> {
    return (this.stopping ??= this.stopNow(opts.drain ?? true));
  }

  /**
   * Asks the manager (any registered link; a follower forwards to the
   * leader) until it answers DISENGAGED or the bound runs out: a manager
   * that is away or changing leaders is asked again; a drain already done
   * is answered ok at once.
   */
  private async drainBeforeStop(): Promise<void> {
    const sched = this.io.scheduler;
    const clock = sched.clock;
    const end = clock.now() + serviceStopBoundMs(this.cfg);
    this.counters.inc(SN.stop_drains);
    const req = body('disengageRequest', {
      target: this.me.name,
      targetId: this.me.id,
      policy: '',
      inheritor: '',
      backup: '',
      timeoutMs: this.cfg.operations.serviceDrainTimeoutMs,
      migrationId: 0,
      peers: [],
      nextScope: { version: 0, members: [], tableSize: 0, hashSeed: 0, anchor: [] },
      chunkRecords: 0,
      randomSeed: 0,
      stopping: true,
    });
    let why = 'no answer';
    // No manager link at all for control.deadAfterMs: the managers are gone (or
    // already count this node FAILED); do not wait out the whole bound.
    let unlinkedSince = -1;
    while (clock.now() < end) {
      if (!this.agent.registered) {
        if (unlinkedSince < 0) unlinkedSince = clock.now();
        else if (clock.now() - unlinkedSince >= this.cfg.control.deadAfterMs) {
          why = `registered with no manager for ${this.cfg.control.deadAfterMs} ms`;
          break;
        }
      } else unlinkedSince = -1;
      try {
        const r = await this.agent.request(req, Math.max(1, end - clock.now()));
        if (r.body.case === 'disengageReply') {
          const v = r.body.value;
          if (v.ok) {
            this.counters.inc(SN.stop_drains_confirmed);
            this.log.info('drained: stopping', { node: this.me.name, ms: Math.round(v.durationMs), frames: v.framesDrained ?? 0, timedOut: v.drainTimedOut ?? false });
            return;
          }
          why = `${v.errorCode}: ${v.errorMessage}`;
          if (FINAL_REFUSALS.has(errorCodeFromWire(v.errorCode))) break;
        } else why = `answered ${r.body.case}`;
      } catch (e) {
        why = isBatonError(e) ? `${e.code}: ${e.message}` : String(e);
      }
      // A manager away or changing leaders, or a drain that failed midway: ask again.
      await new Promise<void>((r) => sched.after(Math.min(200, Math.max(1, end - clock.now())), r));
    }
    this.counters.inc(SN.stop_drains_unconfirmed);
    this.log.warn('stopping without a confirmed drain: frames that still reach this node are counted', { node: this.me.name, why });
  }

  private async stopNow(drain: boolean): Promise<void> {
    if (drain && this.agent) await this.drainBeforeStop();
    this.agent?.stop();
    this.node?.stop();
    // Let the replies handed to the socket go out (their callbacks count them), at most 1 s.
    const end = this.io.scheduler.clock.now() + 1000;
    while (this.node && this.node.pendingSends > 0 && this.io.scheduler.clock.now() < end) await new Promise<void>((r) => this.io.scheduler.after(5, r));
    await this.socket?.close();
  }
}
