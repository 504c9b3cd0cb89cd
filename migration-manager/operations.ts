/**
 * The migration manager's operations (seed 003, "migration manager"):
 *
 *   disengage: ACTIVE → DISENGAGING (still in scope, still serving), then
 *     1. HAND_OVER: the FD's migration client copies its flows to the
 *        inheritors, switches and broadcasts the new ownership;
 *     2. the FD leaves the hash scope (committed, published) and the manager
 *        waits, bounded, until every hash tier and every connected member
 *        acknowledges running that scope;
 *     3. FINISH: the FD purges its table, drains its queues and stays quiet
 *        (no frame for `quietMs`, kernel receive queue empty);
 *     4. DISENGAGING → DISENGAGED: the FD may be stopped.
 *     Before the hand-over completes, a failure or timeout takes the FD back
 *     to ACTIVE only once it is known to keep its flows (it said so, or it
 *     answered an ABORT before its switch); after it, never back to ACTIVE.
 *   engage: DISENGAGED/new → JOINING, every ACTIVE peer sends the joiner the
 *     flows it owns (acknowledged), then JOINING → ACTIVE and the scope grows:
 *     existing flows keep their owner, only new flows move.
 *
 * Disengages run together; an engage runs alone (operation-gate.ts).
 */
import type { Scheduler } from '../shared/runtime/scheduler.js';
import { BatonError, ErrorCode, errorFromWire, isBatonError } from '../shared/errors.js';
import { body, DEFAULT_SERVICE_QUIET_MS, DisengageStage, emptyDisengageReply, MemberStatus, Role, type DisengageReply, type DisengageRequest, type MigrationProgress, type EngageReply, type Member } from '../shared/control/messages.js';
import { statusName } from '../shared/membership/status.js';
import { getLogger, type Logger } from '../shared/observability/logger.js';
import type { ControlChannel } from '../shared/control/channel.js';
import type { DisengageRecord } from '../shared/store/store.js';
import type { Registry, MemberRecord } from './registry.js';
import { MGR } from './counters.js';
import type { Counters } from '../shared/counters.js';
import { OperationGate } from './operation-gate.js';

/** What a bounded wait for scope acknowledgements found (manager.confirmScope). */
export interface ScopeConfirmation {
  /** Tiers and members that run the version (or a newer one). */
  acked: string[];
  /** Members not connected to this manager, FAILED members, tiers whose process does not run: not waited for. */
  skipped: string[];
  /** Connected members and running tiers that did not acknowledge in time (or refused). */
  failed: { name: string; why: string }[];
}

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
   * `disengage`: the record kept with a DISENGAGING FD.
   */
  changeStatus: (id: number, to: number, reason: string, disengage?: DisengageRecord | null) => Promise<void>;
  /** A DISENGAGING FD that handed its flows over leaves the scope: committed, then published (undone if not committed). */
  releaseFromScope: (id: number, reason: string) => Promise<void>;
  /** Waits at most `timeoutMs` until every hash tier and connected member runs scope `version` or newer. */
  confirmScope: (version: number, timeoutMs: number) => Promise<ScopeConfirmation>;
  defaultTimeoutMs: number;
  /** Bound of the wait for scope acknowledgements (ms). */
  scopeAckTimeoutMs?: number;
  /** How long a disengaged FD must receive nothing before DISENGAGED (ms). */
  quietMs?: number;
  /** How long the manager waits for the answer to an ABORT (ms). */
  abortTimeoutMs?: number;
  /** Bound of a service node's wait to be quiet while it drains (ms). */
  serviceDrainTimeoutMs?: number;
  /** A draining service node is quiet once no frame reached it for this long (ms). */
  serviceQuietMs?: number;
  logger?: Logger;
}

export interface DisengageOptions {
  target: string;
  policy?: string;
  inheritor?: string;
  backup?: string;
  timeoutMs?: number;
  chunkRecords?: number;
  /**
   * The target asks for its own disengage or drain: its process is stopping
   * (DisengageRequest.stopping). A service node is drained even if it is the
   * last ACTIVE one; an FD is disengaged as usual (the last ACTIVE FD is still
   * refused), and one already DISENGAGED is answered ok at once.
   */
  stopping?: boolean;
}

export const DEFAULT_SCOPE_ACK_TIMEOUT_MS = 5000;
export const DEFAULT_QUIET_MS = 100;
export const DEFAULT_ABORT_TIMEOUT_MS = 10_000;
/** Service drains (config operations.serviceDrainTimeoutMs / serviceQuietMs have the same defaults; DEFAULT_SERVICE_QUIET_MS is in shared/control/messages.ts, the service node uses it too). */
export const DEFAULT_SERVICE_DRAIN_TIMEOUT_MS = 30_000;

export class Operations {
  private nextMigration = 1;
  private readonly log: Logger;
  /** Progress listeners per migration id (the CLI channel that asked, tests). */
  private readonly listeners = new Map<number, (p: MigrationProgress) => void>();
  /** Disengages this manager drives right now, by target. */
  private readonly driving = new Set<string>();
  readonly gate: OperationGate;
  private readonly scopeAckTimeoutMs: number;
  readonly quietMs: number;
  private readonly abortTimeoutMs: number;
  readonly serviceDrainTimeoutMs: number;
  readonly serviceQuietMs: number;
  /** Service drains in progress, by name (a repeated request joins the running one). */
  private readonly serviceDrains = new Map<string, Promise<DisengageReply>>();

  constructor(private readonly d: OperationsDeps) {
    this.log = d.logger ?? getLogger('operations');
    this.gate = new OperationGate(d.scheduler, { queued: () => d.counters.inc(MGR.operations_queued), timedOut: () => d.counters.inc(MGR.operations_queue_timeouts) });
    this.scopeAckTimeoutMs = d.scopeAckTimeoutMs ?? DEFAULT_SCOPE_ACK_TIMEOUT_MS;
    this.quietMs = d.quietMs ?? DEFAULT_QUIET_MS;
    this.abortTimeoutMs = d.abortTimeoutMs ?? DEFAULT_ABORT_TIMEOUT_MS;
    this.serviceDrainTimeoutMs = d.serviceDrainTimeoutMs ?? DEFAULT_SERVICE_DRAIN_TIMEOUT_MS;
    this.serviceQuietMs = d.serviceQuietMs ?? DEFAULT_SERVICE_QUIET_MS;
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

  private now(): number {
    return this.d.scheduler.clock.now();
  }

  private enter(kind: 'disengage' | 'engage', timeoutMs: number, what: string): Promise<() => void> {
    return this.gate.enter(kind, timeoutMs, what);
  }

  /**
   * Disengages an ACTIVE FD. A DISENGAGING FD that no operation drives (a
   * disengage that failed after its hand-over, or one a manager that died
   * started) is resumed instead, with the options recorded for it.
   */
  async disengage(o: DisengageOptions, onProgress?: (p: MigrationProgress) => void): Promise<DisengageReply> {
    const d = this.d;
    const svc = d.registry.byName(o.target);
    if (svc && svc.info.role === Role.SERVICE) return this.drainService(svc, o);
    const t0 = this.now();
    const timeoutMs = o.timeoutMs ?? d.defaultTimeoutMs;
    if (o.stopping && this.fd(o.target).machine.status === MemberStatus.DISENGAGED) {
      // An FD whose process is stopping (nodes/fd-stop.ts) that is already disengaged (an upgrade's or power-down's stop): safe to stop now.
      d.counters.inc(MGR.fd_stops_already_disengaged);
      return { ...emptyDisengageReply(o.target), ok: true, scopeVersion: d.registry.scopeVersion };
    }
    this.check(this.fd(o.target), o.target); // clear refusals at once, before any wait
    const release = await this.enter('disengage', timeoutMs, `disengage of ${o.target}`);
    try {
      const rec = this.fd(o.target);
      if (this.check(rec, o.target) === 'resume') return await this.resumeLocked(rec, t0, onProgress);
      const ch = d.channelTo(rec.info.id);
      if (!ch) throw new BatonError(ErrorCode.CONNECTION_CLOSED, `cannot disengage ${o.target}: it is not connected to the manager`);
      const peers = this.activePeers(rec);
      if (peers.length === 0) throw new BatonError(ErrorCode.EMPTY_SCOPE, `cannot disengage ${o.target}: it is the last ACTIVE FD`);
      const migrationId = this.nextMigration++;
      const intent: DisengageRecord = {
        migrationId,
        policy: o.policy || 'least-flows',
        inheritor: o.inheritor ?? '',
        backup: o.backup ?? '',
        timeoutMs: o.timeoutMs ?? 0,
        chunkRecords: o.chunkRecords ?? 0,
        outOfScope: false,
      };
      // Committed before the FD is told, with the options: of two managers, or
      // two requests, exactly one gets here, and a manager that takes over
      // resumes the disengage as it was asked.
      this.driving.add(rec.info.name);
      try {
        await d.changeStatus(rec.info.id, MemberStatus.DISENGAGING, `disengage #${migrationId}`, intent); // still in scope: the table is unchanged
        d.counters.inc(MGR.disengages_started);
        return await this.drive(rec, intent, t0, onProgress);
      } finally {
        this.driving.delete(rec.info.name);
      }
    } finally {
      release();
    }
  }

  /** Refuses what cannot be disengaged; 'resume' for a DISENGAGING FD no operation here drives. */
  private check(rec: MemberRecord, target: string): 'start' | 'resume' {
    const st = rec.machine.status;
    if (st === MemberStatus.ACTIVE) return 'start';
    if (st === MemberStatus.DISENGAGING && !this.driving.has(rec.info.name)) return 'resume';
    const why = st === MemberStatus.DISENGAGING ? 'it is already disengaging' : st === MemberStatus.DISENGAGED ? 'it is already disengaged' : `it is ${statusName(st)}`;
    throw new BatonError(ErrorCode.INVALID_TRANSITION, `cannot disengage ${target}: ${why}`);
  }

  /**
   * Finishes a disengage another manager started, or one that stopped after
   * its hand-over (the cluster state shows the FD DISENGAGING): asks the FD
   * again with the options recorded in the cluster state — its migration
   * client answers with the migration in progress or its result — and
   * completes the steps still missing.
   */
  async resumeDisengage(target: string, onProgress?: (p: MigrationProgress) => void): Promise<DisengageReply> {
    const t0 = this.now();
    const first = this.fd(target);
    const timeoutMs = first.disengage?.timeoutMs || this.d.defaultTimeoutMs;
    const release = await this.enter('disengage', timeoutMs, `resumed disengage of ${target}`);
    try {
      return await this.resumeLocked(this.fd(target), t0, onProgress);
    } finally {
      release();
    }
  }

  private async resumeLocked(rec: MemberRecord, t0: number, onProgress?: (p: MigrationProgress) => void): Promise<DisengageReply> {
    const target = rec.info.name;
    if (rec.machine.status !== MemberStatus.DISENGAGING) throw new BatonError(ErrorCode.INVALID_TRANSITION, `${target} is ${statusName(rec.machine.status)}, not DISENGAGING`);
    if (this.driving.has(target)) throw new BatonError(ErrorCode.INVALID_TRANSITION, `cannot disengage ${target}: it is already disengaging`);
    if (!this.d.channelTo(rec.info.id)) throw new BatonError(ErrorCode.CONNECTION_CLOSED, `cannot resume the disengage of ${target}: it is not connected to this manager`);
    let intent = rec.disengage;
    if (!intent) {
      // A record written before disengages were recorded: the FD answers with
      // the migration it runs or ran anyway; a new one would use least-flows.
      this.d.counters.inc(MGR.disengages_resumed_unrecorded);
      this.log.warn('resuming a disengage with no recorded options: least-flows', { target });
      intent = { migrationId: this.nextMigration++, policy: 'least-flows', inheritor: '', backup: '', timeoutMs: 0, chunkRecords: 0, outOfScope: rec.machine.outOfScope };
    }
    this.nextMigration = Math.max(this.nextMigration, intent.migrationId + 1);
    this.d.counters.inc(MGR.disengages_resumed);
    this.log.info('resuming disengage', { target, policy: intent.policy, inheritor: intent.inheritor, backup: intent.backup, outOfScope: rec.machine.outOfScope });
    this.driving.add(target);
    try {
      return await this.drive(rec, intent, t0, onProgress);
    } finally {
      this.driving.delete(target);
    }
  }

  private activePeers(rec: MemberRecord): MemberRecord[] {
    return this.d.registry.all().filter((m) => m.info.role === Role.FD && m.info.id !== rec.info.id && m.machine.status === MemberStatus.ACTIVE);
  }

  /** The request for `stage` of the disengage `intent` of `rec` (plan fields from the registry as it is now). */
  private request(rec: MemberRecord, intent: DisengageRecord, stage: number, timeoutMs: number): DisengageRequest {
    const d = this.d;
    const peers = this.activePeers(rec);
    // The scope once the target is out, planned as the registry will build it
    // (same anchor, same rebalance rule), so hash-aligned inheritors match it.
    // (Out of scope already: the current scope is that scope.)
    const plan = rec.machine.outOfScope ? null : d.registry.planWithout(rec.info.name);
    const members = plan ? plan.scope.members : d.registry.scopeMembers();
    const anchor = plan ? [...plan.anchor] : [...d.registry.scopeAnchor()];
    return {
      target: rec.info.name,
      targetId: rec.info.id,
      policy: intent.policy,
      inheritor: intent.inheritor,
      backup: intent.backup,
      timeoutMs,
      migrationId: intent.migrationId,
      peers: peers.map((m): Member => ({ node: m.info, status: m.machine.status, inScope: true, stats: m.stats })),
      nextScope: {
        version: d.registry.scopeVersion + (plan ? 1 : 0),
        members: members.map((n) => ({ name: n, id: d.registry.byName(n)!.info.id })),
        tableSize: d.registry.tableSize,
        hashSeed: d.registry.hashSeed,
        anchor,
      },
      chunkRecords: intent.chunkRecords,
      randomSeed: intent.migrationId,
      stage,
      quietMs: this.quietMs,
    };
  }

  /** Sends one stage and returns the FD's DisengageReply (rejects on timeout, a closed connection, another answer). */
  private async ask(rec: MemberRecord, req: DisengageRequest, timeoutMs: number): Promise<DisengageReply> {
    const ch = this.d.channelTo(rec.info.id);
    if (!ch) throw new BatonError(ErrorCode.CONNECTION_CLOSED, `${rec.info.name} is not connected to the manager`);
    const r = await ch.request(body('disengageRequest', req), Math.max(1, timeoutMs));
    if (r.body.case !== 'disengageReply') throw new BatonError(ErrorCode.REMOTE_ERROR, `${rec.info.name} answered ${r.body.case}`);
    return r.body.value;
  }

  /**
   * Drives a DISENGAGING FD to DISENGAGED: hand-over (unless done), out of
   * scope (unless already), scope acknowledged everywhere, finish, commit.
   * The whole disengage is bounded by the operator's timeout from `t0`; the
   * steps after the hand-over get at least `tailMs` (they cannot go back to
   * ACTIVE, so giving up early gains nothing).
   */
  private async drive(rec: MemberRecord, intent: DisengageRecord, t0: number, onProgress?: (p: MigrationProgress) => void): Promise<DisengageReply> {
    const d = this.d;
    const name = rec.info.name;
    const timeoutMs = intent.timeoutMs || d.defaultTimeoutMs;
    const deadline = t0 + timeoutMs;
    const left = (): number => Math.max(0, deadline - this.now());
    const tailMs = this.quietMs * 4 + 2000;
    const migrationId = intent.migrationId;
    if (onProgress) this.listeners.set(migrationId, onProgress);
    this.log.info('disengage started', { target: name, policy: intent.policy, migrationId, outOfScope: rec.machine.outOfScope });
    const failWith = (err: BatonError): never => {
      d.counters.inc(MGR.disengages_failed);
      this.log.warn('disengage failed', { target: name, err: err.message });
      throw err;
    };
    const fail = (code: ErrorCode, msg: string, cause?: unknown): never => failWith(new BatonError(code, msg, undefined, cause === undefined ? undefined : { cause }));
    /** The FD refused with `wireCode` (its reply's errorCode, checked). */
    const refused = (wireCode: string, msg: string): never => failWith(errorFromWire(wireCode, msg));
    try {
      // 1. Hand-over (a repeated request is answered with the one that ran).
      let h: DisengageReply;
      try {
        h = await this.ask(rec, this.request(rec, intent, DisengageStage.HAND_OVER, timeoutMs), left());
      } catch (e) {
        h = await this.abort(rec, intent, timeoutMs, e as Error);
      }
      if (!h.handedOver) {
        // The FD keeps every flow (it said so): back to ACTIVE, serving.
        const why = h.errorMessage || 'hand-over failed';
        if (rec.machine.outOfScope) return refused(h.errorCode, `${name}: ${why}; it is out of scope and stays DISENGAGING`);
        await d.changeStatus(rec.info.id, MemberStatus.ACTIVE, `disengage #${migrationId} failed`).catch((ce: Error) => this.log.warn('could not commit ACTIVE after a failed disengage', { err: ce.message }));
        const timedOut = h.errorCode === ErrorCode.TIMEOUT && this.now() >= deadline;
        return refused(h.errorCode, timedOut ? `${name} did not confirm within ${timeoutMs} ms; it stays ACTIVE and in scope (hand-over aborted, it keeps its flows)` : `${name}: ${why}; ${name} stays ACTIVE and in scope`);
      }
      // 2. Out of the scope, everywhere.
      if (!rec.machine.outOfScope) {
        try {
          await d.releaseFromScope(rec.info.id, `disengage #${migrationId}: flows handed over`);
        } catch (e) {
          return fail(isBatonError(e) ? e.code : ErrorCode.STORE_UNAVAILABLE, `${name} handed its flows over, but the scope without it was not committed (${(e as Error).message}); it stays DISENGAGING, in scope, redirecting, and the disengage completes when asked again`, e);
        }
      }
      const version = d.registry.scopeVersion;
      onProgress?.({ migrationId, target: name, phase: 'scope', copied: h.entriesMoved, total: h.entriesMoved, rxDepth: 0, txDepth: 0, sendQueueBytes: 0, redirects: h.redirectsServed });
      const ackMs = Math.min(this.scopeAckTimeoutMs, Math.max(left(), tailMs));
      const conf = await d.confirmScope(version, ackMs);
      if (conf.failed.length > 0) {
        return fail(ErrorCode.TIMEOUT, `${name} is out of scope v${version}, but ${conf.failed.map((f) => `${f.name} (${f.why})`).join(', ')} did not acknowledge it within ${ackMs} ms; ${name} stays DISENGAGING, not purged (it redirects to the inheritors), and the disengage completes when asked again`);
      }
      // 3. Purge, drain, quiet.
      const finishMs = Math.max(left(), tailMs);
      let f: DisengageReply;
      try {
        f = await this.ask(rec, this.request(rec, intent, DisengageStage.FINISH, finishMs), finishMs + 1000);
      } catch (e) {
        return fail(isBatonError(e) ? e.code : ErrorCode.REMOTE_ERROR, `${name} did not finish (purge, drain, quiet): ${(e as Error).message}; it stays DISENGAGING, out of scope, and the disengage completes when asked again`, e);
      }
      if (!f.ok) return refused(f.errorCode, `${name}: ${f.errorMessage}; it stays DISENGAGING, out of scope, and the disengage completes when asked again`);
      // 4. DISENGAGED: safe to stop.
      try {
        await d.changeStatus(rec.info.id, MemberStatus.DISENGAGED, `disengage #${migrationId} confirmed`);
      } catch (e) {
        return fail(isBatonError(e) ? e.code : ErrorCode.STORE_UNAVAILABLE, `${name} is out of scope and quiet, but DISENGAGED was not committed (${(e as Error).message}); it stays DISENGAGING and the disengage completes when asked again`, e);
      }
      d.counters.inc(MGR.disengages_completed);
      this.log.info('disengaged', { target: name, entries: f.entriesMoved, acked: conf.acked.length, skipped: conf.skipped });
      return { ...f, ok: true, errorCode: '', errorMessage: '', durationMs: this.now() - t0, scopeVersion: d.registry.scopeVersion, scopeAcked: conf.acked, scopeSkipped: conf.skipped };
    } finally {
      this.listeners.delete(migrationId);
    }
  }

  /**
   * The hand-over did not answer in time (or the connection dropped): ask the
   * FD to abort. Its answer says whether it still owns its flows (aborted
   * before the switch) or handed them over. No answer: its state is unknown,
   * so it stays DISENGAGING and in scope — it serves its flows or redirects
   * them to their inheritors either way — and never goes back to ACTIVE.
   */
  private async abort(rec: MemberRecord, intent: DisengageRecord, timeoutMs: number, why: Error): Promise<DisengageReply> {
    const d = this.d;
    d.counters.inc(MGR.disengage_aborts_sent);
    this.log.warn('hand-over not confirmed; asking the FD to abort', { target: rec.info.name, err: why.message });
    try {
      return await this.ask(rec, this.request(rec, intent, DisengageStage.ABORT, this.abortTimeoutMs), this.abortTimeoutMs);
    } catch (e) {
      d.counters.inc(MGR.disengages_failed);
      d.counters.inc(MGR.disengages_left_unresolved);
      const msg = `${rec.info.name} did not confirm within ${timeoutMs} ms (${why.message}) and did not answer the abort (${(e as Error).message}); it stays DISENGAGING and in scope (serving its flows or redirecting them to their inheritors); ask again to finish the disengage`;
      this.log.warn('disengage unresolved', { target: rec.info.name, err: msg });
      throw new BatonError(isBatonError(why) ? why.code : ErrorCode.TIMEOUT, msg, undefined, { cause: why });
    }
  }

  /**
   * Brings a JOINING or DISENGAGED FD into the scope once every peer that
   * may own flows has sent it the flows it owns. Runs alone: no disengage
   * moves flows while the joiner learns them.
   */
  async engage(target: string, timeoutMs = this.d.defaultTimeoutMs): Promise<EngageReply> {
    const svc = this.d.registry.byName(target);
    if (svc && svc.info.role === Role.SERVICE) return this.engageService(svc);
    this.checkEngage(this.fd(target), target);
    const release = await this.enter('engage', timeoutMs, `engage of ${target}`);
    try {
      return await this.engageLocked(target, timeoutMs);
    } finally {
      release();
    }
  }

  private checkEngage(rec: MemberRecord, target: string): void {
    const st = rec.machine.status;
    if (st === MemberStatus.ACTIVE) throw new BatonError(ErrorCode.INVALID_TRANSITION, `${target} is already ACTIVE`);
    if (st === MemberStatus.DISENGAGED && !rec.connected) throw new BatonError(ErrorCode.CONNECTION_CLOSED, `${target} is DISENGAGED and not running; start it and it joins by itself`);
    if (st !== MemberStatus.DISENGAGED && st !== MemberStatus.JOINING) throw new BatonError(ErrorCode.INVALID_TRANSITION, `cannot engage ${target}: it is ${statusName(st)}`);
  }

  private async engageLocked(target: string, timeoutMs: number): Promise<EngageReply> {
    const d = this.d;
    const rec = this.fd(target);
    this.checkEngage(rec, target);
    if (rec.machine.status === MemberStatus.DISENGAGED) await d.changeStatus(rec.info.id, MemberStatus.JOINING, 'engage');
    void d.publishScope(); // peers learn the joiner's control address and connect to it
    // Every FD that may own flows: ACTIVE ones, and a DISENGAGING one left by a
    // disengage that did not complete (it owns its flows, or none once handed over).
    const peers = d.registry.all().filter((m) => m.info.role === Role.FD && m.info.id !== rec.info.id && (m.machine.status === MemberStatus.ACTIVE || m.machine.status === MemberStatus.DISENGAGING));
    let records = 0;
    try {
      const replies = await Promise.all(
        peers.map(async (p) => {
          const ch = d.channelTo(p.info.id);
          if (!ch) {
            if (p.machine.status === MemberStatus.DISENGAGING) {
              this.log.warn('engage: a DISENGAGING peer is not connected; not synced from it', { target, peer: p.info.name });
              return 0;
            }
            throw new BatonError(ErrorCode.CONNECTION_CLOSED, `peer ${p.info.name} is not connected`);
          }
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

  // ---- Service nodes (docs/disengage.md, "Service nodes") ----

  private activeServices(): MemberRecord[] {
    return this.d.registry.all().filter((m) => m.info.role === Role.SERVICE && m.machine.status === MemberStatus.ACTIVE);
  }

  /**
   * Drains a service node: DISENGAGING (committed, published: FDs stop
   * choosing it for new flows and keep its route, so established flows go
   * on), every tier and member acknowledges that, the node answers once no
   * frame reached it for `serviceQuietMs` (or at the drain timeout), then
   * DISENGAGED (its route removed everywhere, acknowledged): only now may its
   * process exit. No flow state moves, so it does not wait for FD operations
   * (the operation gate). A request for a node already draining joins that
   * drain.
   */
  drainService(rec: MemberRecord, o: DisengageOptions): Promise<DisengageReply> {
    const d = this.d;
    const name = rec.info.name;
    const running = this.serviceDrains.get(name);
    if (running) {
      d.counters.inc(MGR.service_drains_joined);
      return running;
    }
    const st = rec.machine.status;
    const refuse = (code: ErrorCode, msg: string): Promise<never> => {
      d.counters.inc(MGR.service_drains_refused);
      return Promise.reject(new BatonError(code, msg));
    };
    if (st === MemberStatus.DISENGAGED) {
      if (o.stopping) {
        d.counters.inc(MGR.service_drains_already_done);
        return Promise.resolve({ ...emptyDisengageReply(name), ok: true, scopeVersion: d.registry.scopeVersion });
      }
      return refuse(ErrorCode.INVALID_TRANSITION, `cannot disengage ${name}: it is already disengaged (drained); stop its process, or engage it again`);
    }
    if (st !== MemberStatus.ACTIVE && st !== MemberStatus.DISENGAGING) return refuse(ErrorCode.INVALID_TRANSITION, `cannot disengage ${name}: it is ${statusName(st)}`);
    if (st === MemberStatus.ACTIVE && !o.stopping && this.activeServices().length <= 1) {
      return refuse(ErrorCode.EMPTY_SCOPE, `cannot disengage ${name}: it is the last ACTIVE service node (new flows would find no backend); stopping its process drains it anyway`);
    }
    if (!d.channelTo(rec.info.id)) return refuse(ErrorCode.CONNECTION_CLOSED, `cannot drain ${name}: it is not connected to the manager`);
    if (st === MemberStatus.DISENGAGING) d.counters.inc(MGR.service_drains_resumed);
    const p = this.driveServiceDrain(rec, o).finally(() => this.serviceDrains.delete(name));
    this.serviceDrains.set(name, p);
    return p;
  }

  /** A DISENGAGING service node no drain here drives (the manager that drove it died): drain it again. */
  resumeServiceDrain(target: string): Promise<DisengageReply> {
    const rec = this.d.registry.byName(target);
    if (!rec || rec.info.role !== Role.SERVICE) return Promise.reject(new BatonError(ErrorCode.UNKNOWN_NODE, `no service node ${target}`));
    return this.drainService(rec, { target, stopping: true });
  }

  private async driveServiceDrain(rec: MemberRecord, o: DisengageOptions): Promise<DisengageReply> {
    const d = this.d;
    const name = rec.info.name;
    const id = rec.info.id;
    const t0 = this.now();
    // The quiet wait is bounded by the configured drain timeout, and by the
    // request's timeout when that is shorter (1 s left for the commit and the
    // acknowledgement of DISENGAGED).
    const deadline = o.timeoutMs ? t0 + o.timeoutMs : Infinity;
    const failWith = (err: BatonError): never => {
      d.counters.inc(MGR.service_drains_failed);
      this.log.warn('service drain failed', { target: name, err: err.message });
      throw err;
    };
    const fail = (code: ErrorCode, msg: string, cause?: unknown): never => failWith(new BatonError(code, msg, undefined, cause === undefined ? undefined : { cause }));
    /** The node refused with `wireCode` (its reply's errorCode, checked). */
    const refused = (wireCode: string, msg: string): never => failWith(errorFromWire(wireCode, msg));
    // 1. DISENGAGING: FDs choose it for no new flow, and keep its route.
    if (rec.machine.status === MemberStatus.ACTIVE) {
      try {
        await d.changeStatus(id, MemberStatus.DISENGAGING, o.stopping ? 'drain: its process is stopping' : 'drain (disengage)');
      } catch (e) {
        return fail(isBatonError(e) ? e.code : ErrorCode.STORE_UNAVAILABLE, `cannot drain ${name}: DISENGAGING was not committed (${(e as Error).message}); it stays ACTIVE`, e);
      }
      d.counters.inc(MGR.service_drains_started);
    }
    this.log.info('service drain started', { target: name, stopping: !!o.stopping, quietMs: this.serviceQuietMs, timeoutMs: o.timeoutMs ?? this.serviceDrainTimeoutMs });
    const c1 = await d.confirmScope(d.registry.scopeVersion, this.scopeAckTimeoutMs);
    if (c1.failed.length > 0) {
      // Counted by confirmScope. Not fatal: an FD that still picks the node for new
      // flows keeps it from going quiet, so the drain then ends at its timeout.
      this.log.warn('service drain: members did not acknowledge the scope with it DISENGAGING', { target: name, failed: c1.failed });
    }
    // 2. Quiet: the node answers once nothing reached it for serviceQuietMs (its
    //    established flows ended), or at the drain timeout.
    const q = emptyDisengageReply(name);
    let timedOut = false;
    let answer: DisengageReply;
    const drainTimeoutMs = Math.round(Math.max(100, Math.min(this.serviceDrainTimeoutMs, deadline - this.now() - 1000)));
    try {
      answer = await this.ask(rec, { ...this.serviceRequest(rec), timeoutMs: drainTimeoutMs }, drainTimeoutMs + 2000);
    } catch (e) {
      return fail(isBatonError(e) ? e.code : ErrorCode.REMOTE_ERROR, `${name} did not answer the drain (${(e as Error).message}); it stays DISENGAGING (FDs keep its route, choose it for no new flow) until it is drained again or fails`, e);
    }
    if (!answer.ok) {
      if (answer.errorCode !== ErrorCode.TIMEOUT) return refused(answer.errorCode, `${name}: ${answer.errorMessage}; it stays DISENGAGING`);
      timedOut = true;
      d.counters.inc(MGR.service_drain_timeouts);
      this.log.warn('service drain timed out: DISENGAGED anyway; what still reaches it is counted', { target: name, err: answer.errorMessage });
    } else d.counters.inc(MGR.service_drains_quiet);
    // 3. DISENGAGED: its route goes from every FD (acknowledged); then it may stop.
    try {
      await d.changeStatus(id, MemberStatus.DISENGAGED, timedOut ? 'drain timed out' : 'drained: quiet');
    } catch (e) {
      return fail(isBatonError(e) ? e.code : ErrorCode.STORE_UNAVAILABLE, `${name} is drained, but DISENGAGED was not committed (${(e as Error).message}); it stays DISENGAGING`, e);
    }
    const version = d.registry.scopeVersion;
    const c2 = await d.confirmScope(version, this.scopeAckTimeoutMs);
    d.counters.inc(MGR.service_drains_completed);
    const reply: DisengageReply = {
      ...q,
      ok: true,
      durationMs: this.now() - t0,
      drainMs: answer.drainMs,
      quietMs: answer.quietMs,
      scopeVersion: version,
      scopeAcked: c2.acked,
      scopeSkipped: c2.skipped,
      framesDrained: answer.framesDrained ?? 0,
      drainTimedOut: timedOut,
      ...(timedOut ? { errorCode: ErrorCode.TIMEOUT, errorMessage: `${name} was still receiving at the drain timeout (${answer.errorMessage}); DISENGAGED anyway` } : {}),
    };
    if (c2.failed.length > 0) {
      d.counters.inc(MGR.service_drain_ack_failures, c2.failed.length);
      return {
        ...reply,
        ok: false,
        errorCode: ErrorCode.TIMEOUT,
        errorMessage: `${name} is DISENGAGED, but ${c2.failed.map((f) => `${f.name} (${f.why})`).join(', ')} did not acknowledge the scope without its route within ${this.scopeAckTimeoutMs} ms: frames they still send to it are counted (link loss, or drop_after_stop once it stopped)`,
      };
    }
    this.log.info('service drained', { target: name, ms: Math.round(reply.durationMs), frames: reply.framesDrained, timedOut });
    return reply;
  }

  /** The manager's request to a draining service node: answer once quiet (FINISH, with the quiet interval). */
  private serviceRequest(rec: MemberRecord): DisengageRequest {
    return {
      target: rec.info.name,
      targetId: rec.info.id,
      policy: '',
      inheritor: '',
      backup: '',
      timeoutMs: this.serviceDrainTimeoutMs,
      migrationId: 0,
      peers: [],
      nextScope: { version: this.d.registry.scopeVersion, members: [], tableSize: 0, hashSeed: 0, anchor: [] },
      chunkRecords: 0,
      randomSeed: 0,
      stage: DisengageStage.FINISH,
      quietMs: this.serviceQuietMs,
    };
  }

  /** A DISENGAGED service node that still runs serves again: JOINING → ACTIVE at once (it holds no flow state). */
  private async engageService(rec: MemberRecord): Promise<EngageReply> {
    const d = this.d;
    const name = rec.info.name;
    const st = rec.machine.status;
    if (st === MemberStatus.ACTIVE) throw new BatonError(ErrorCode.INVALID_TRANSITION, `${name} is already ACTIVE`);
    if (st !== MemberStatus.DISENGAGED) throw new BatonError(ErrorCode.INVALID_TRANSITION, `cannot engage ${name}: it is ${statusName(st)}`);
    if (!rec.connected) throw new BatonError(ErrorCode.CONNECTION_CLOSED, `${name} is DISENGAGED and not running; start it and it joins by itself`);
    await d.changeStatus(rec.info.id, MemberStatus.JOINING, 'engage');
    await d.changeStatus(rec.info.id, MemberStatus.ACTIVE, 'engaged (service node: no state to sync)');
    d.counters.inc(MGR.service_engages);
    this.log.info('service node engaged', { target: name });
    return { ok: true, errorCode: '', errorMessage: '', scopeVersion: d.registry.scopeVersion, recordsSynced: 0 };
  }
}
