/**
 * The migration manager, hosted by the hash tier (seed 003: "a migration
 * manager may be provisioned in each aggregation router/switch"). In this
 * issue it runs membership: registrations, heartbeats, liveness, the
 * versioned hash scope (installed in the forwarding engine and pushed to
 * every member), and status queries. Disengage/engage build on it.
 */
import type { Scheduler, Timer } from '../shared/runtime/scheduler.js';
import type { MessageNet, MessageListener } from '../shared/io/stream.js';
import type { Address } from '../shared/io/address.js';
import { parseAddress } from '../shared/io/address.js';
import { ControlChannel, CHANNEL_COUNTERS } from '../shared/control/channel.js';
import { body, Role, type NodeInfo, type EnvelopeObject, type Body, type FlowStats } from '../shared/control/messages.js';
import { isBatonError } from '../shared/errors.js';
import { getLogger, type Logger } from '../shared/observability/logger.js';
import { Counters, defineCounters } from '../shared/counters.js';
import { Registry } from './registry.js';
import { Operations } from './operations.js';
import { Workflows } from './workflows.js';
import type { DisengageReply } from '../shared/control/messages.js';
import type { ForwardingEngine } from '../hash-tier/forwarding-engine.js';

export const MGR = defineCounters([
  'registrations',
  'registrations_refused',
  'heartbeats',
  'heartbeats_unknown',
  'members_failed',
  'scope_updates',
  'status_requests',
  'unexpected_messages',
  'disengages_started',
  'disengages_completed',
  'disengages_failed',
  'engages',
  'engages_failed',
] as const);

export interface ManagerOptions {
  self: NodeInfo;
  net: MessageNet;
  scheduler: Scheduler;
  listen: Address;
  engine: ForwardingEngine;
  tableSize: number;
  hashSeed: number;
  heartbeatMs: number;
  deadAfterMs: number;
  selfStats: () => FlowStats;
  selfCounters: () => Record<string, number>;
  /** How long a disengage or engage may take by default (ms). */
  operationTimeoutMs?: number;
  /** Scheduled power-down of idle FDs (off when absent or disabled). */
  powerdown?: { enabled: boolean; everyMs: number; thresholdPps: number; sustainMs: number; minActive: number; policy: string; stopProcesses: boolean };
  logger?: Logger;
}

export class Manager {
  readonly registry: Registry;
  readonly counters = new Counters(MGR);
  /** Every control connection the manager accepted, summed (decode failures of garbage peers included). */
  readonly channelCounters = new Counters(CHANNEL_COUNTERS);
  private listener: MessageListener | null = null;
  private readonly channels = new Set<ControlChannel>();
  private readonly channelOf = new Map<number, ControlChannel>();
  private liveness: Timer | null = null;
  private readonly log: Logger;
  readonly ops: Operations;
  readonly workflows: Workflows;
  private orchestrator: ControlChannel | null = null;
  private powerdownTimer: Timer | null = null;

  constructor(private readonly o: ManagerOptions) {
    this.registry = new Registry(o.self, o.tableSize, o.hashSeed);
    this.log = o.logger ?? getLogger('manager');
    this.ops = new Operations({
      registry: this.registry,
      scheduler: o.scheduler,
      counters: this.counters,
      channelTo: (id) => this.channelOf.get(id),
      publishScope: () => this.publishScope(),
      defaultTimeoutMs: o.operationTimeoutMs ?? 30_000,
      logger: this.log,
    });
    this.workflows = new Workflows({
      registry: this.registry,
      ops: this.ops,
      scheduler: o.scheduler,
      orchestrator: () => (this.orchestrator && !this.orchestrator.closed ? this.orchestrator : null),
      heartbeatMs: o.heartbeatMs,
      logger: this.log,
    });
  }

  get address(): Address | null {
    return this.listener?.address ?? null;
  }

  async start(): Promise<Address> {
    this.listener = await this.o.net.listen(this.o.listen, (conn) => this.accept(new ControlChannel(conn, this.o.scheduler, { counters: this.channelCounters })));
    this.liveness = this.o.scheduler.every(Math.max(10, Math.floor(this.o.heartbeatMs / 2)), () => this.checkLiveness());
    const pd = this.o.powerdown;
    if (pd?.enabled) {
      this.powerdownTimer = this.o.scheduler.every(pd.everyMs, () => {
        this.workflows
          .powerdown({ ...pd, timeoutMs: this.o.operationTimeoutMs ?? 30_000 }, (msg) => this.log.info('scheduled power-down', { msg }))
          .then((r) => {
            if (!r.ok) this.log.warn('scheduled power-down failed', { err: r.errorMessage });
          });
      });
    }
    this.log.info('manager listening', { control: this.listener.address });
    return this.listener.address;
  }

  private accept(ch: ControlChannel): void {
    this.channels.add(ch);
    let memberId = 0;
    ch.onClose(() => {
      this.channels.delete(ch);
      if (memberId && this.channelOf.get(memberId) === ch) {
        this.channelOf.delete(memberId);
        this.registry.disconnected(memberId);
      }
    });
    ch.onMessage((env) => {
      if (env.body.case === 'heartbeat') {
        const h = env.body.value;
        this.counters.inc(MGR.heartbeats);
        const now = this.o.scheduler.clock.now();
        if (!this.registry.heartbeat(h.nodeId, h.stats, h.counters, h.appliedScopeVersion, now)) {
          this.counters.inc(MGR.heartbeats_unknown);
        } else if (this.o.powerdown?.enabled) {
          this.workflows.observeLoad(h.nodeId, h.stats.pps, this.o.powerdown.thresholdPps, now);
        }
      } else if (env.body.case === 'migrationProgress') {
        this.ops.progress(env.body.value);
      } else this.counters.inc(MGR.unexpected_messages);
    });
    ch.onRequest((env) => {
      const r = this.handleRequest(env, ch);
      if (r.registered) memberId = r.registered;
      return r.reply;
    });
  }

  private handleRequest(env: EnvelopeObject, ch: ControlChannel): { reply: Body | void | Promise<Body>; registered?: number } {
    const now = this.o.scheduler.clock.now();
    switch (env.body.case) {
      case 'register': {
        const info = env.body.value.node;
        try {
          this.registry.register(info, now);
        } catch (e) {
          this.counters.inc(MGR.registrations_refused);
          this.log.warn('registration refused', { node: info.name, id: info.id, err: (e as Error).message });
          return {
            reply: body('registerAck', {
              accepted: false,
              errorCode: isBatonError(e) ? e.code : 'BATON_INTERNAL',
              errorMessage: (e as Error).message,
              scopeVersion: this.registry.scopeVersion,
              heartbeatIntervalMs: this.o.heartbeatMs,
            }),
          };
        }
        this.counters.inc(MGR.registrations);
        this.channelOf.set(info.id, ch);
        this.log.info('member registered', { node: info.name, id: info.id, role: info.role, data: info.dataAddr });
        // The ack goes first; the new scope follows to everyone (the new member
        // included); an FD then joins the scope once its peers synced it.
        this.o.scheduler.defer(() => {
          this.publishScope();
          if (info.role === Role.FD) {
            this.ops.engage(info.name).catch((e: Error) => {
              this.counters.inc(MGR.engages_failed);
              this.log.warn('automatic engage failed', { node: info.name, err: e.message });
            });
          }
        });
        return {
          registered: info.id,
          reply: body('registerAck', {
            accepted: true,
            errorCode: '',
            errorMessage: '',
            scopeVersion: this.registry.scopeVersion,
            heartbeatIntervalMs: this.o.heartbeatMs,
          }),
        };
      }
      case 'statusRequest':
        this.counters.inc(MGR.status_requests);
        return {
          reply: body('statusResponse', {
            scopeVersion: this.registry.scopeVersion,
            nodes: this.registry.status(now, this.o.selfStats(), this.o.selfCounters()),
          }),
        };
      case 'ping':
        return { reply: body('pong', {}) };
      case 'disengageRequest': {
        const q = env.body.value;
        const opts = { target: q.target, policy: q.policy || 'least-flows', inheritor: q.inheritor, backup: q.backup, ...(q.timeoutMs ? { timeoutMs: q.timeoutMs } : {}), ...(q.chunkRecords ? { chunkRecords: q.chunkRecords } : {}) };
        return {
          reply: this.ops
            .disengage(opts, (p) => ch.send(body('migrationProgress', p)))
            .then(
              (r) => body('disengageReply', r),
              (e: Error) => body('disengageReply', failedReply(q.target, q.policy, e)),
            ),
        };
      }
      case 'orchestratorHello':
        this.orchestrator = ch;
        this.log.info('orchestrator registered', { name: env.body.value.name });
        ch.onClose(() => {
          if (this.orchestrator === ch) this.orchestrator = null;
        });
        return { reply: body('pong', {}) };
      case 'upgradeRequest': {
        const q = env.body.value;
        const say = (message: string): void => {
          ch.send(body('operationProgress', { operation: 'upgrade', message }));
        };
        return { reply: this.workflows.upgrade({ batch: q.batch, policy: q.policy || 'hash-aligned', timeoutMs: q.timeoutMs || (this.o.operationTimeoutMs ?? 30_000) }, say).then((r) => body('upgradeReply', r)) };
      }
      case 'powerdownRequest': {
        const q = env.body.value;
        const say = (message: string): void => {
          ch.send(body('operationProgress', { operation: 'powerdown', message }));
        };
        return {
          reply: this.workflows
            .powerdown({ thresholdPps: q.thresholdPps, minActive: q.minActive, sustainMs: q.sustainMs, policy: q.policy || 'least-flows', stopProcesses: q.stopProcesses, timeoutMs: this.o.operationTimeoutMs ?? 30_000 }, say)
            .then((r) => body('powerdownReply', r)),
        };
      }
      case 'engageRequest':
        return {
          reply: this.ops.engage(env.body.value.target, env.body.value.timeoutMs || undefined).then(
            (r) => body('engageReply', r),
            (e: Error) => body('engageReply', { ok: false, errorCode: isBatonError(e) ? e.code : 'BATON_INTERNAL', errorMessage: e.message, scopeVersion: this.registry.scopeVersion, recordsSynced: 0 }),
          ),
        };
      default:
        this.counters.inc(MGR.unexpected_messages);
        return { reply: body('errorReply', { code: 'BATON_UNKNOWN_MESSAGE', message: `the manager does not serve ${env.body.case}` }) };
    }
  }

  private checkLiveness(): void {
    const dead = this.registry.expire(this.o.scheduler.clock.now(), this.o.deadAfterMs);
    if (dead.length === 0) return;
    for (const m of dead) {
      this.counters.inc(MGR.members_failed);
      this.log.warn('member failed: no heartbeat', { node: m.info.name, id: m.info.id });
    }
    this.publishScope();
  }

  /** Installs the current scope in the forwarding engine and pushes it to every member. */
  publishScope(): void {
    const reg = this.registry;
    const fds = reg
      .all()
      .filter((m) => m.info.role === Role.FD && m.info.dataAddr)
      .map((m) => ({ name: m.info.name, id: m.info.id, data: parseAddress(m.info.dataAddr) }));
    this.o.engine.setScope(reg.currentScope, fds);
    const update = reg.scopeUpdate();
    this.counters.inc(MGR.scope_updates);
    for (const ch of this.channelOf.values()) ch.send(body('scopeUpdate', update));
    this.log.info('scope published', { version: update.version, inScope: reg.scopeMembers() });
  }

  /** The channel of a registered member (for requests the manager initiates). */
  channelTo(id: number): ControlChannel | undefined {
    return this.channelOf.get(id);
  }

  async stop(): Promise<void> {
    this.liveness?.cancel();
    this.powerdownTimer?.cancel();
    for (const ch of this.channels) ch.close();
    await this.listener?.close();
  }
}

export function failedReply(target: string, policy: string, e: Error): DisengageReply {
  return {
    ok: false,
    errorCode: isBatonError(e) ? e.code : 'BATON_INTERNAL',
    errorMessage: e.message,
    migrationId: 0,
    target,
    policy,
    shares: [],
    entriesMoved: 0,
    durationMs: 0,
    copyMs: 0,
    broadcastMs: 0,
    drainMs: 0,
    redirectsServed: 0,
    scopeVersion: 0,
    fellBackToBackup: false,
    packetsLost: 0,
  };
}
