/**
 * The migration manager's operations (seed 003, "migration manager"):
 *
 *   disengage: ACTIVE → DISENGAGING (still in scope, still serving), instruct
 *     the FD's migration client, wait for its confirmation, then
 *     DISENGAGING → DISENGAGED and shrink the hash scope. No confirmation in
 *     time: back to ACTIVE, in scope, serving, and a clear error.
 *   engage: DISENGAGED/new → JOINING, every ACTIVE peer sends the joiner the
 *     flows it owns (acknowledged), then JOINING → ACTIVE and the scope grows:
 *     existing flows keep their owner, only new flows move.
 */
import type { Scheduler } from '../shared/runtime/scheduler.js';
import { BatonError, ErrorCode, isBatonError } from '../shared/errors.js';
import { body, MemberStatus, Role, type DisengageReply, type DisengageRequest, type MigrationProgress, type EngageReply, type Member } from '../shared/control/messages.js';
import { statusName } from '../shared/membership/status.js';
import { getLogger, type Logger } from '../shared/observability/logger.js';
import type { ControlChannel } from '../shared/control/channel.js';
import type { Registry, MemberRecord } from './registry.js';
import { MGR } from './manager.js';
import type { Counters } from '../shared/counters.js';

export interface OperationsDeps {
  registry: Registry;
  scheduler: Scheduler;
  counters: Counters;
  channelTo: (id: number) => ControlChannel | undefined;
  publishScope: () => void;
  defaultTimeoutMs: number;
  logger?: Logger;
}

export interface DisengageOptions {
  target: string;
  policy?: string;
  inheritor?: string;
  backup?: string;
  timeoutMs?: number;
  chunkRecords?: number;
}

export class Operations {
  private nextMigration = 1;
  private readonly log: Logger;
  /** Progress listeners per migration id (the CLI channel that asked, tests). */
  private readonly listeners = new Map<number, (p: MigrationProgress) => void>();

  constructor(private readonly d: OperationsDeps) {
    this.log = d.logger ?? getLogger('operations');
  }

  /** A MigrationProgress message from an FD. */
  progress(p: MigrationProgress): void {
    this.listeners.get(p.migrationId)?.(p);
  }

  private fd(name: string): MemberRecord {
    const r = this.d.registry;
    const rec = r.byName(name);
    const fds = r.all().filter((m) => m.info.role === Role.FD);
    if (!rec) throw new BatonError(ErrorCode.UNKNOWN_NODE, `unknown node ${JSON.stringify(name)}; FDs: ${fds.map((m) => `${m.info.name} (${statusName(m.machine.status)})`).join(', ') || 'none'}`);
    if (rec.info.role !== Role.FD) throw new BatonError(ErrorCode.BAD_ARGUMENT, `${name} is not a flow distributor; only FDs can be disengaged or engaged`);
    return rec;
  }

  async disengage(o: DisengageOptions, onProgress?: (p: MigrationProgress) => void): Promise<DisengageReply> {
    const d = this.d;
    const rec = this.fd(o.target);
    const st = rec.machine.status;
    if (st !== MemberStatus.ACTIVE) {
      const why =
        st === MemberStatus.DISENGAGING ? 'it is already disengaging' : st === MemberStatus.DISENGAGED ? 'it is already disengaged' : `it is ${statusName(st)}`;
      throw new BatonError(ErrorCode.INVALID_TRANSITION, `cannot disengage ${o.target}: ${why}`);
    }
    const ch = d.channelTo(rec.info.id);
    if (!ch) throw new BatonError(ErrorCode.CONNECTION_CLOSED, `cannot disengage ${o.target}: it is not connected to the manager`);
    const peers = d.registry.all().filter((m) => m.info.role === Role.FD && m.info.id !== rec.info.id && m.machine.status === MemberStatus.ACTIVE);
    if (peers.length === 0) throw new BatonError(ErrorCode.EMPTY_SCOPE, `cannot disengage ${o.target}: it is the last ACTIVE FD`);
    const now = () => d.scheduler.clock.now();
    const migrationId = this.nextMigration++;
    const timeoutMs = o.timeoutMs ?? d.defaultTimeoutMs;
    d.registry.setStatus(rec.info.id, MemberStatus.DISENGAGING, `disengage #${migrationId}`, now());
    d.publishScope(); // status shows DISENGAGING; the table is unchanged (DISENGAGING stays in scope)
    d.counters.inc(MGR.disengages_started);
    const next = d.registry.scopeMembers().filter((n) => n !== rec.info.name).sort();
    const req: DisengageRequest = {
      target: rec.info.name,
      targetId: rec.info.id,
      policy: o.policy ?? 'least-flows',
      inheritor: o.inheritor ?? '',
      backup: o.backup ?? '',
      timeoutMs,
      migrationId,
      peers: peers.map((m): Member => ({ node: m.info, status: m.machine.status, inScope: true, stats: m.stats })),
      nextScope: {
        version: d.registry.scopeVersion + 1,
        members: next.map((n) => ({ name: n, id: d.registry.byName(n)!.info.id })),
        tableSize: d.registry.tableSize,
        hashSeed: d.registry.hashSeed,
      },
      chunkRecords: o.chunkRecords ?? 0,
      randomSeed: migrationId,
    };
    if (onProgress) this.listeners.set(migrationId, onProgress);
    this.log.info('disengage started', { target: rec.info.name, policy: req.policy, migrationId });
    let answered = false;
    try {
      const r = await ch.request(body('disengageRequest', req), timeoutMs);
      answered = true;
      if (r.body.case !== 'disengageReply') throw new BatonError(ErrorCode.REMOTE_ERROR, `${o.target} answered ${r.body.case}`);
      const reply = r.body.value;
      if (!reply.ok) throw new BatonError((reply.errorCode || ErrorCode.REMOTE_ERROR) as ErrorCode, `${o.target}: ${reply.errorMessage}`);
      // Confirmed: out of the scope, which shrinks everywhere it is used.
      d.registry.setStatus(rec.info.id, MemberStatus.DISENGAGED, `disengage #${migrationId} confirmed`, now());
      d.publishScope();
      d.counters.inc(MGR.disengages_completed);
      this.log.info('disengaged', { target: rec.info.name, entries: reply.entriesMoved, ms: Math.round(reply.durationMs) });
      return { ...reply, scopeVersion: d.registry.scopeVersion };
    } catch (e) {
      // Not confirmed: the node stays in scope and serving.
      if (rec.machine.status === MemberStatus.DISENGAGING) {
        d.registry.setStatus(rec.info.id, MemberStatus.ACTIVE, `disengage #${migrationId} failed`, now());
        d.publishScope();
      }
      d.counters.inc(MGR.disengages_failed);
      const err = e as Error;
      const code = isBatonError(e) ? e.code : ErrorCode.REMOTE_ERROR;
      const msg = !answered && code === ErrorCode.TIMEOUT ? `${o.target} did not confirm within ${timeoutMs} ms; it stays ACTIVE and in scope` : `${err.message}; ${o.target} stays ACTIVE and in scope`;
      this.log.warn('disengage failed', { target: rec.info.name, err: msg });
      throw new BatonError(code, msg);
    } finally {
      this.listeners.delete(migrationId);
    }
  }

  /**
   * Brings a JOINING or DISENGAGED FD into the scope once every ACTIVE peer
   * has sent it the flows it owns.
   */
  async engage(target: string, timeoutMs = this.d.defaultTimeoutMs): Promise<EngageReply> {
    const d = this.d;
    const rec = this.fd(target);
    const now = () => d.scheduler.clock.now();
    if (rec.machine.status === MemberStatus.ACTIVE) throw new BatonError(ErrorCode.INVALID_TRANSITION, `${target} is already ACTIVE`);
    if (rec.machine.status === MemberStatus.DISENGAGED) {
      if (!rec.connected) throw new BatonError(ErrorCode.CONNECTION_CLOSED, `${target} is DISENGAGED and not running; start it and it joins by itself`);
      d.registry.setStatus(rec.info.id, MemberStatus.JOINING, 'engage', now());
    } else if (rec.machine.status !== MemberStatus.JOINING) {
      throw new BatonError(ErrorCode.INVALID_TRANSITION, `cannot engage ${target}: it is ${statusName(rec.machine.status)}`);
    }
    d.publishScope(); // peers learn the joiner's control address and connect to it
    const peers = d.registry.all().filter((m) => m.info.role === Role.FD && m.info.id !== rec.info.id && m.machine.status === MemberStatus.ACTIVE);
    let records = 0;
    try {
      const replies = await Promise.all(
        peers.map(async (p) => {
          const ch = d.channelTo(p.info.id);
          if (!ch) throw new BatonError(ErrorCode.CONNECTION_CLOSED, `peer ${p.info.name} is not connected`);
          const r = await ch.request(body('syncRequest', { joinerId: rec.info.id, joinerControlAddr: rec.info.controlAddr }), timeoutMs);
          if (r.body.case !== 'syncReply') throw new BatonError(ErrorCode.REMOTE_ERROR, `${p.info.name} answered ${r.body.case} to a sync request`);
          return r.body.value.records;
        }),
      );
      records = replies.reduce((a, b) => a + b, 0);
    } catch (e) {
      this.log.warn('engage: sync failed; the node stays out of scope', { target, err: (e as Error).message });
      throw e;
    }
    if (rec.machine.status !== MemberStatus.JOINING) throw new BatonError(ErrorCode.INVALID_TRANSITION, `${target} left JOINING during the engage (${statusName(rec.machine.status)})`);
    d.registry.setStatus(rec.info.id, MemberStatus.ACTIVE, `engaged (${records} ownership records synced)`, now());
    d.publishScope();
    d.counters.inc(MGR.engages);
    this.log.info('engaged', { target, records });
    return { ok: true, errorCode: '', errorMessage: '', scopeVersion: d.registry.scopeVersion, recordsSynced: records };
  }
}
