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
  publishScope: () => Promise<boolean>;
  /**
   * Moves a member to another status (validated), commits the new cluster
   * state to the store and publishes the scope. The local change happens at
   * once (a concurrent request sees it); if the commit fails it is undone and
   * the promise rejects (e.g. STORE_UNAVAILABLE): the change did not happen.
   */
  changeStatus: (id: number, to: number, reason: string) => Promise<void>;
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
    const peers = this.activePeers(rec);
    if (peers.length === 0) throw new BatonError(ErrorCode.EMPTY_SCOPE, `cannot disengage ${o.target}: it is the last ACTIVE FD`);
    const migrationId = this.nextMigration++;
    // Committed before the FD is told: of two managers, or two requests, exactly one gets here.
    await d.changeStatus(rec.info.id, MemberStatus.DISENGAGING, `disengage #${migrationId}`); // still in scope: the table is unchanged
    d.counters.inc(MGR.disengages_started);
    return this.drive(rec, o, migrationId, onProgress);
  }

  /**
   * Finishes a disengage another manager started (the cluster state shows the
   * FD DISENGAGING): asks the FD again — its migration client answers with
   * the migration in progress or its result — and shrinks the scope.
   */
  async resumeDisengage(target: string, onProgress?: (p: MigrationProgress) => void): Promise<DisengageReply> {
    const rec = this.fd(target);
    if (rec.machine.status !== MemberStatus.DISENGAGING) throw new BatonError(ErrorCode.INVALID_TRANSITION, `${target} is ${statusName(rec.machine.status)}, not DISENGAGING`);
    if (!this.d.channelTo(rec.info.id)) throw new BatonError(ErrorCode.CONNECTION_CLOSED, `cannot resume the disengage of ${target}: it is not connected to this manager`);
    this.d.counters.inc(MGR.disengages_resumed);
    this.log.info('resuming disengage', { target });
    return this.drive(rec, { target, policy: 'least-flows' }, this.nextMigration++, onProgress);
  }

  private activePeers(rec: MemberRecord): MemberRecord[] {
    return this.d.registry.all().filter((m) => m.info.role === Role.FD && m.info.id !== rec.info.id && m.machine.status === MemberStatus.ACTIVE);
  }

  /** Instructs the DISENGAGING FD, waits for its confirmation, then DISENGAGED (scope shrinks) — or back to ACTIVE. */
  private async drive(rec: MemberRecord, o: DisengageOptions, migrationId: number, onProgress?: (p: MigrationProgress) => void): Promise<DisengageReply> {
    const d = this.d;
    const timeoutMs = o.timeoutMs ?? d.defaultTimeoutMs;
    const peers = this.activePeers(rec);
    // The scope once the target is out, planned as the registry will build it
    // (same anchor, same rebalance rule), so hash-aligned inheritors match it.
    const plan = d.registry.planWithout(rec.info.name);
    const next = plan ? plan.scope.members : [];
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
        anchor: plan ? [...plan.anchor] : [],
      },
      chunkRecords: o.chunkRecords ?? 0,
      randomSeed: migrationId,
    };
    if (onProgress) this.listeners.set(migrationId, onProgress);
    this.log.info('disengage started', { target: rec.info.name, policy: req.policy, migrationId });
    let answered = false;
    let confirmed = false;
    try {
      const ch = d.channelTo(rec.info.id);
      if (!ch) throw new BatonError(ErrorCode.CONNECTION_CLOSED, `${o.target} is not connected to the manager`);
      const r = await ch.request(body('disengageRequest', req), timeoutMs);
      answered = true;
      if (r.body.case !== 'disengageReply') throw new BatonError(ErrorCode.REMOTE_ERROR, `${o.target} answered ${r.body.case}`);
      const reply = r.body.value;
      if (!reply.ok) throw new BatonError((reply.errorCode || ErrorCode.REMOTE_ERROR) as ErrorCode, `${o.target}: ${reply.errorMessage}`);
      confirmed = true;
      // Confirmed: out of the scope, which shrinks everywhere it is used.
      await d.changeStatus(rec.info.id, MemberStatus.DISENGAGED, `disengage #${migrationId} confirmed`);
      d.counters.inc(MGR.disengages_completed);
      this.log.info('disengaged', { target: rec.info.name, entries: reply.entriesMoved, ms: Math.round(reply.durationMs) });
      return { ...reply, scopeVersion: d.registry.scopeVersion };
    } catch (e) {
      d.counters.inc(MGR.disengages_failed);
      const err = e as Error;
      const code = isBatonError(e) ? e.code : ErrorCode.REMOTE_ERROR;
      if (confirmed) {
        // The FD handed its flows over but the new state did not commit (the
        // store is away): it stays DISENGAGING, in scope, redirecting what it
        // gets; the disengage is finished by asking again (resumeDisengage).
        this.log.warn('disengage confirmed but not committed', { target: rec.info.name, err: err.message });
        throw new BatonError(code, `${o.target} handed its flows over, but the new cluster state was not committed (${err.message}); it stays DISENGAGING and redirects, and the disengage completes when asked again`);
      }
      // Not confirmed: the node stays in scope and serving.
      if (rec.machine.status === MemberStatus.DISENGAGING) {
        await d.changeStatus(rec.info.id, MemberStatus.ACTIVE, `disengage #${migrationId} failed`).catch((ce: Error) => this.log.warn('could not commit ACTIVE after a failed disengage', { err: ce.message }));
      }
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
    if (rec.machine.status === MemberStatus.ACTIVE) throw new BatonError(ErrorCode.INVALID_TRANSITION, `${target} is already ACTIVE`);
    if (rec.machine.status === MemberStatus.DISENGAGED) {
      if (!rec.connected) throw new BatonError(ErrorCode.CONNECTION_CLOSED, `${target} is DISENGAGED and not running; start it and it joins by itself`);
      await d.changeStatus(rec.info.id, MemberStatus.JOINING, 'engage');
    } else if (rec.machine.status !== MemberStatus.JOINING) {
      throw new BatonError(ErrorCode.INVALID_TRANSITION, `cannot engage ${target}: it is ${statusName(rec.machine.status)}`);
    }
    void d.publishScope(); // peers learn the joiner's control address and connect to it
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
    await d.changeStatus(rec.info.id, MemberStatus.ACTIVE, `engaged (${records} ownership records synced)`);
    d.counters.inc(MGR.engages);
    this.log.info('engaged', { target, records });
    return { ok: true, errorCode: '', errorMessage: '', scopeVersion: d.registry.scopeVersion, recordsSynced: records };
  }
}
