/**
 * Control dispatch: the manager's side of every control connection.
 *
 * Job: accepts control channels and keeps the member channels by node id
 * (registered members get scope updates and the manager's requests through
 * them) and the orchestrator's; routes each message (heartbeats, migration
 * progress) and request (register, status, ping, scope acknowledgement,
 * disengage, engage, upgrade, power-down, orchestrator hello) to the part that
 * serves it. On a follower the operations only the leader runs (FORWARDED)
 * go to the leader proxy.
 *
 * Lifecycle: created with the manager; a channel lives until it closes (a
 * member's close marks it disconnected in the registry); `stop()` closes
 * every channel still open.
 */
import type { Scheduler } from '../shared/runtime/scheduler.js';
import type { ControlChannel } from '../shared/control/channel.js';
import { body, failedDisengageReply, Role, type EnvelopeObject, type Body, type FlowStats } from '../shared/control/messages.js';
import { ErrorCode, isBatonError } from '../shared/errors.js';
import type { Logger } from '../shared/observability/logger.js';
import type { Counters } from '../shared/counters.js';
import { MGR } from './counters.js';
import type { Registry } from './registry.js';
import type { Operations } from './operations.js';
import type { Workflows } from './workflows.js';
import type { PowerdownSchedule } from './timers.js';
import { FORWARDED } from './leader-proxy.js';

export interface DispatchDeps {
  scheduler: Scheduler;
  registry: Registry;
  ops: Operations;
  workflows: Workflows;
  counters: Counters;
  heartbeatMs: number;
  operationTimeoutMs: number;
  powerdown: PowerdownSchedule | undefined;
  selfStats: () => FlowStats;
  selfCounters: () => Record<string, number>;
  isLeader: () => boolean;
  publishScope: () => Promise<boolean>;
  /** The leader asks this tier to acknowledge a scope version (scope-ack.ts). */
  ackScope: (version: number) => Promise<Body>;
  /** A follower's way to run a FORWARDED operation (leader-proxy.ts). */
  forwardToLeader: (req: Body, client: ControlChannel) => Promise<Body>;
  log: Logger;
}

export class Dispatch {
  private readonly channels = new Set<ControlChannel>();
  private readonly channelOf = new Map<number, ControlChannel>();
  private orchestratorChannel: ControlChannel | null = null;

  constructor(private readonly d: DispatchDeps) {}

  /** The channel of a registered member (for requests the manager initiates). */
  channelTo(id: number): ControlChannel | undefined {
    return this.channelOf.get(id);
  }

  /** The channels of the registered members. */
  memberChannels(): Iterable<ControlChannel> {
    return this.channelOf.values();
  }

  /** The orchestrator that registered, while its channel is open. */
  orchestrator(): ControlChannel | null {
    const o = this.orchestratorChannel;
    return o && !o.closed ? o : null;
  }

  accept(ch: ControlChannel): void {
    const d = this.d;
    this.channels.add(ch);
    let memberId = 0;
    ch.onClose(() => {
      this.channels.delete(ch);
      if (memberId && this.channelOf.get(memberId) === ch) {
        this.channelOf.delete(memberId);
        d.registry.disconnected(memberId);
      }
    });
    ch.onMessage((env) => {
      if (env.body.case === 'heartbeat') {
        const h = env.body.value;
        d.counters.inc(MGR.heartbeats);
        const now = d.scheduler.clock.now();
        if (!d.registry.heartbeat(h.nodeId, h.stats, h.counters, h.appliedScopeVersion, now)) {
          d.counters.inc(MGR.heartbeats_unknown);
        } else if (d.powerdown?.enabled) {
          d.workflows.observeLoad(h.nodeId, h.stats.pps, d.powerdown.thresholdPps, now);
        }
      } else if (env.body.case === 'migrationProgress') {
        d.ops.progress(env.body.value);
      } else d.counters.inc(MGR.unexpected_messages);
    });
    ch.onRequest((env) => {
      const r = this.handleRequest(env, ch);
      if (r.registered) memberId = r.registered;
      return r.reply;
    });
  }

  private handleRequest(env: EnvelopeObject, ch: ControlChannel): { reply: Body | void | Promise<Body>; registered?: number } {
    const d = this.d;
    const now = d.scheduler.clock.now();
    if (FORWARDED.has(env.body.case) && !d.isLeader()) return { reply: d.forwardToLeader(env.body, ch) };
    switch (env.body.case) {
      case 'register': {
        const info = env.body.value.node;
        try {
          d.registry.register(info, now, d.isLeader());
        } catch (e) {
          d.counters.inc(MGR.registrations_refused);
          d.log.warn('registration refused', { node: info.name, id: info.id, err: (e as Error).message });
          return {
            reply: body('registerAck', {
              accepted: false,
              errorCode: isBatonError(e) ? e.code : ErrorCode.INTERNAL,
              errorMessage: (e as Error).message,
              scopeVersion: d.registry.scopeVersion,
              heartbeatIntervalMs: d.heartbeatMs,
            }),
          };
        }
        d.counters.inc(MGR.registrations);
        this.channelOf.set(info.id, ch);
        d.log.info('member registered', { node: info.name, id: info.id, role: info.role, data: info.dataAddr });
        // The ack goes first; the new scope follows to everyone (the new member
        // included); an FD then joins the scope once its peers synced it.
        d.scheduler.defer(() => {
          if (!d.isLeader()) return; // the leader publishes and engages
          void d.publishScope();
          if (info.role === Role.FD) {
            d.ops.engage(info.name).catch((e: Error) => {
              d.counters.inc(MGR.engages_failed);
              d.log.warn('automatic engage failed', { node: info.name, err: e.message });
            });
          }
        });
        return {
          registered: info.id,
          reply: body('registerAck', {
            accepted: true,
            errorCode: '',
            errorMessage: '',
            scopeVersion: d.registry.scopeVersion,
            heartbeatIntervalMs: d.heartbeatMs,
          }),
        };
      }
      case 'statusRequest':
        d.counters.inc(MGR.status_requests);
        return {
          reply: body('statusResponse', {
            scopeVersion: d.registry.scopeVersion,
            nodes: d.registry.status(now, d.selfStats(), d.selfCounters()),
          }),
        };
      case 'ping':
        return { reply: body('pong', {}) };
      case 'scopeUpdate':
        // The leader asks this tier to acknowledge a scope version.
        return { reply: d.ackScope(env.body.value.version) };
      case 'disengageRequest': {
        const q = env.body.value;
        const opts = { target: q.target, policy: q.policy || 'least-flows', inheritor: q.inheritor, backup: q.backup, ...(q.timeoutMs ? { timeoutMs: q.timeoutMs } : {}), ...(q.chunkRecords ? { chunkRecords: q.chunkRecords } : {}), ...(q.stopping ? { stopping: true } : {}) };
        return {
          reply: d.ops
            .disengage(opts, (p) => ch.send(body('migrationProgress', p)))
            .then(
              (r) => body('disengageReply', r),
              (e: Error) => body('disengageReply', failedDisengageReply({ target: q.target, policy: q.policy }, e)),
            ),
        };
      }
      case 'orchestratorHello':
        this.orchestratorChannel = ch;
        d.log.info('orchestrator registered', { name: env.body.value.name });
        ch.onClose(() => {
          if (this.orchestratorChannel === ch) this.orchestratorChannel = null;
        });
        return { reply: body('pong', {}) };
      case 'upgradeRequest': {
        const q = env.body.value;
        const say = (message: string): void => {
          ch.send(body('operationProgress', { operation: 'upgrade', message }));
        };
        return { reply: d.workflows.upgrade({ batch: q.batch, policy: q.policy || 'hash-aligned', timeoutMs: q.timeoutMs || d.operationTimeoutMs, bundle: q.bundle ?? '', command: q.command ?? [] }, say).then((r) => body('upgradeReply', r)) };
      }
      case 'powerdownRequest': {
        const q = env.body.value;
        const say = (message: string): void => {
          ch.send(body('operationProgress', { operation: 'powerdown', message }));
        };
        return {
          reply: d.workflows
            .powerdown({ thresholdPps: q.thresholdPps, minActive: q.minActive, sustainMs: q.sustainMs, policy: q.policy || 'least-flows', stopProcesses: q.stopProcesses, timeoutMs: d.operationTimeoutMs }, say)
            .then((r) => body('powerdownReply', r)),
        };
      }
      case 'engageRequest':
        return {
          reply: d.ops.engage(env.body.value.target, env.body.value.timeoutMs || undefined).then(
            (r) => body('engageReply', r),
            (e: Error) => body('engageReply', { ok: false, errorCode: isBatonError(e) ? e.code : ErrorCode.INTERNAL, errorMessage: e.message, scopeVersion: d.registry.scopeVersion, recordsSynced: 0 }),
          ),
        };
      default:
        d.counters.inc(MGR.unexpected_messages);
        return { reply: body('errorReply', { code: ErrorCode.UNKNOWN_MESSAGE, message: `the manager does not serve ${env.body.case}` }) };
    }
  }

  stop(): void {
    for (const ch of this.channels) ch.close();
  }
}
