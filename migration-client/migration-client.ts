/**
 * The migration client of one FD (seed 003, "flow migration algorithm"), in
 * the steps the manager asks for one at a time (DisengageRequest.stage):
 *
 *   HAND_OVER (run(), one method per phase)
 *   1. enterLeavingMode: new flows go to the FD the shrunken scope picks;
 *   2. selectInheritors: the inheritor(s) of every owned entry;
 *   3. copyWithAcks: the flow table to them point to point, in chunks with
 *      acknowledgements (a backup inheritor gets standby copies); the copies
 *      are staged (migration-staging.ts): redirects to this FD at the
 *      inheritors until a commit every primary acknowledges, handed back if
 *      the hand-over fails or is aborted before the switch;
 *      reassignFromLeaving: a share refused by an inheritor that is leaving
 *      too goes to one that took its own (no backup named);
 *      fallBackToBackup: a failed inheritor's share goes to the backup;
 *      commitCopies: every primary makes its share its own;
 *   4. switchOwners: every migrated entry here now names its inheritor as
 *      owner, so packets that still arrive are redirected to it;
 *   5. broadcastOwnership: the new ownership to every peer, acknowledged;
 *      handedOverReply: "handed over" (the manager then takes this FD out of
 *      the scope and waits until every hash tier and member runs that scope);
 *      abortHandOver: any failure before the switch;
 *   FINISH (runFinish(), only once every tier and member runs the scope without this FD)
 *   6. purge the flow table;
 *   7. drain: the flow table, the RX and TX rings and the socket send queue
 *      empty (bounded);
 *   8. quiet: no frame received for `quietMs` and the kernel receive queue
 *      empty (bounded);
 *   9. finishedReply: report (the manager then reports DISENGAGED).
 *   ABORT: the manager stopped waiting for the hand-over: abort it unless the
 *      switch happened; the reply says which (`handedOver`).
 *
 * A failure before the switch (an inheritor that dies or times out) falls
 * back to the backup inheritor when there is one, and otherwise aborts:
 * leaving mode off, every flow still owned here, nothing lost. After the
 * switch nothing goes back: the flows belong to the inheritors.
 */
import type { Scheduler } from '../shared/runtime/scheduler.js';
import { BatonError, ErrorCode, errorCodeFromWire, isBatonError, remoteCodeOf } from '../shared/errors.js';
import { body, DisengageStage, failedDisengageReply, type DisengageRequest, type DisengageReply, type MigrationProgress, type Member } from '../shared/control/messages.js';
import { scopeWithIds } from '../shared/scope/hash-scope.js';
import type { FlowTable } from '../distributor/flow-table.js';
import { parseAddress } from '../shared/io/address.js';
import { exportFlowSlots, exportedSize } from '../distributor/flow-export.js';
import { FlowKey, forwardKey } from '../distributor/flow-pair.js';
import type { FlowHandler } from '../distributor/flow-handler.js';
import type { OwnershipMesh, BatchOutcome } from '../distributor/ownership-mesh.js';
import { OwnershipFlag, OWNERSHIP_RECORD_SIZE, OWNERSHIP_RECORD_VERSION, packOwnership } from '../shared/control/ownership.js';
import { FD } from '../distributor/fd-counters.js';
import { Counters } from '../shared/counters.js';
import { MIG } from './counters.js';
import { getLogger, type Logger } from '../shared/observability/logger.js';
import { selectInheritors, type InheritorPlan, type PeerInfo } from './inheritor-selector.js';
import { StagedCopies } from './migration-staging.js';

export interface MigrationDeps {
  selfId: number;
  selfName: string;
  table: FlowTable;
  handler: FlowHandler;
  mesh: OwnershipMesh;
  scheduler: Scheduler;
  /** RX ring depth, TX ring depth, socket send-queue bytes of the data plane. */
  queues: () => { rx: number; tx: number; sendQueueBytes: number };
  /** Bytes in the data socket's kernel receive queue (shared/io/kernel-udp-stats.ts); null/absent: not known (in memory). */
  kernelRxQueue?: () => number | null;
  counters?: Counters;
  logger?: Logger;
}

const DEFAULT_CHUNK = 16384;
const WINDOW = 8; // chunks in flight per inheritor
const ACK_TIMEOUT_MS = 5000;
const DRAIN_POLL_MS = 1;
/** FINISH without a timeout in the request: how long drain + quiet may take. */
const DEFAULT_FINISH_MS = 10_000;

type Progress = (p: MigrationProgress) => void;

/** The scope without this FD, as leaving mode runs it. */
interface NextScope {
  scope: ReturnType<typeof scopeWithIds>['scope'];
  ids: ReturnType<typeof scopeWithIds>['ids'];
  hashSeed: number;
}

/** What the phases of one hand-over pass to each other (run()). */
interface HandOverState {
  req: DisengageRequest;
  t0: number;
  /** The redirect counter when the hand-over started. */
  redirects0: number;
  base: { migrationId: number; target: string };
  /** Progress to the manager: phase, entries copied of total, queue depths, redirects since the start. */
  say: (phase: string, copied: number, total: number) => void;
  /** A chunk of `n` entries was acknowledged. */
  onCopied: (n: number) => void;
  /** Set once the copies are staged: an abort makes the inheritors hand them back. */
  staging: StagedCopies | null;
  copied: number;
  total: number;
  fellBack: boolean;
  copyMs: number;
  broadcastMs: number;
  switched: boolean;
}

/** The selected inheritors and the owned entries they take (the assignment and the plan change on a reassignment or fallback). */
interface Selection {
  /** Owned slots (the table is frozen: they stay valid until the purge). */
  owned: Int32Array;
  sel: InheritorPlan;
  /** Inheritor index (into sel.inheritors) of every owned entry. */
  assignment: Uint16Array;
  addrOf: Map<number, string>;
  staging: StagedCopies;
  tCopy: number;
  /** Node id of every inheritor, once switched. */
  ownerOf: number[];
}

interface CopyOutcome {
  results: PromiseSettledResult<void>[];
  standbyOk: boolean;
  failed: InheritorPlan['inheritors'];
}

function abortedBeforeSwitch(): BatonError {
  return new BatonError(ErrorCode.TIMEOUT, 'the manager stopped waiting (ABORT) before the switch');
}

export class MigrationClient {
  readonly counters: Counters;
  private readonly log: Logger;
  private busy = false;
  private readonly key = new FlowKey();

  constructor(private readonly d: MigrationDeps) {
    this.counters = d.counters ?? new Counters(MIG);
    this.log = d.logger ?? getLogger('migration-client');
  }

  /** A hand-over or a finish is running (fd-node must not leave leaving mode meanwhile). */
  get migrating(): boolean {
    return this.busy || this.finishing !== null;
  }

  /** The flows were handed over (and not yet engaged again): the table holds redirects to the inheritors or nothing. */
  get handedOver(): boolean {
    return this.handover !== null && this.d.handler.leaving;
  }

  /**
   * One step of a disengage (`req.stage`, docs/disengage.md). Idempotent for
   * the manager: a HAND_OVER that arrives while one runs gets that run's
   * reply (and its progress from then on), and one that arrives after the
   * flows were handed over, while this FD is still out (leaving mode, not
   * engaged again), gets the same reply again; FINISH likewise. A manager
   * that takes over from one that died midway therefore re-sends the steps
   * and finishes the disengage exactly once.
   */
  disengage(req: DisengageRequest, progress: Progress = () => {}): Promise<DisengageReply> {
    switch (req.stage ?? DisengageStage.ALL) {
      case DisengageStage.HAND_OVER:
        return this.handOver(req, progress);
      case DisengageStage.FINISH:
        return this.finish(req, progress);
      case DisengageStage.ABORT:
        return this.abort(req);
      default:
        return this.all(req, progress);
    }
  }

  /** Stage ALL: hand over, then finish at once (no manager in between to change the scope). */
  private async all(req: DisengageRequest, progress: Progress): Promise<DisengageReply> {
    const t0 = this.d.scheduler.clock.now();
    const h = await this.handOver(req, progress);
    if (!h.ok) return h;
    const f = await this.finish(req, progress);
    return { ...f, durationMs: this.d.scheduler.clock.now() - t0 };
  }

  private handOver(req: DisengageRequest, progress: Progress): Promise<DisengageReply> {
    if (this.current) {
      this.counters.inc(MIG.disengages_rejoined);
      this.listeners.push(progress);
      return this.current;
    }
    if (this.handover && this.d.handler.leaving) {
      this.counters.inc(MIG.disengages_rejoined);
      return Promise.resolve(this.handover);
    }
    this.handover = null;
    this.finished = null;
    this.abortAsked = false;
    this.listeners = [progress];
    const run = this.run(req, (p) => {
      for (const l of this.listeners) l(p);
    });
    this.current = run.then(
      (r) => {
        this.current = null;
        this.listeners = [];
        if (r.handedOver) this.handover = r;
        return r;
      },
      (e: unknown) => {
        this.current = null;
        this.listeners = [];
        throw e;
      },
    );
    return this.current;
  }

  private async finish(req: DisengageRequest, progress: Progress): Promise<DisengageReply> {
    if (this.finishing) {
      this.counters.inc(MIG.disengages_rejoined);
      return this.finishing;
    }
    if (this.finished && this.d.handler.leaving) {
      this.counters.inc(MIG.disengages_rejoined);
      return this.finished;
    }
    if (this.current) await this.current.catch(() => null); // a hand-over still running (a repeated request): finish after it
    const h = this.handover;
    if (!h || !this.d.handler.leaving) {
      this.counters.inc(MIG.finish_without_handover);
      return this.failed(req, new BatonError(ErrorCode.INVALID_TRANSITION, `${this.d.selfName} has no handed-over migration to finish (it keeps what it has)`), false, 0);
    }
    if (this.finishing) return this.finishing; // another FINISH got here while this one waited
    const run = this.runFinish(req, h, progress);
    this.finishing = run.then((r) => {
      this.finishing = null;
      if (r.ok) this.finished = r;
      return r;
    });
    return this.finishing;
  }

  /**
   * The manager stopped waiting for the hand-over. Before the switch the
   * hand-over stops (no further chunk, no switch) and this FD keeps every
   * flow; after it, the answer is the hand-over's result (`handedOver`).
   */
  private async abort(req: DisengageRequest): Promise<DisengageReply> {
    if (this.current && !this.switchedNow) {
      this.abortAsked = true;
      this.counters.inc(MIG.aborts_accepted);
      this.log.warn('disengage aborted at the manager\'s request', { migrationId: req.migrationId });
      return this.failed(req, new BatonError(ErrorCode.TIMEOUT, `the manager stopped waiting; hand-over aborted before the switch, ${this.d.selfName} keeps its flows`), false, 0);
    }
    if (this.current) {
      this.counters.inc(MIG.aborts_after_switch);
      return this.current;
    }
    if (this.handover && this.d.handler.leaving) {
      this.counters.inc(MIG.aborts_after_switch);
      return this.handover;
    }
    return this.failed(req, new BatonError(ErrorCode.TIMEOUT, `no hand-over runs; ${this.d.selfName} keeps its flows`), false, 0);
  }

  private current: Promise<DisengageReply> | null = null;
  private listeners: Progress[] = [];
  /** The last hand-over that reached the switch (kept until engaged again). */
  private handover: DisengageReply | null = null;
  private finishing: Promise<DisengageReply> | null = null;
  private finished: DisengageReply | null = null;
  /** An ABORT arrived before the switch: the running hand-over must not switch. */
  private abortAsked = false;
  /** The running hand-over has switched (set in the same step as the abort check). */
  private switchedNow = false;

  private failed(req: DisengageRequest, e: unknown, handedOver: boolean, t0: number): DisengageReply {
    return {
      ...failedReplyOf(req, e),
      target: this.d.selfName,
      handedOver,
      durationMs: t0 ? this.d.scheduler.clock.now() - t0 : 0,
    };
  }

  /**
   * HAND_OVER, seed 003's method step by step: leaving mode, select the
   * inheritors, copy with acknowledgements (a share refused by an inheritor
   * that is leaving too goes to another inheritor; a failed inheritor's to
   * the backup), commit, switch, broadcast. Never rejects: a failure is an
   * ok=false reply (abortHandOver: only before the switch).
   */
  private async run(req: DisengageRequest, progress: Progress): Promise<DisengageReply> {
    const d = this.d;
    if (this.busy) return this.failed(req, new BatonError(ErrorCode.INVALID_TRANSITION, `${d.selfName} is already migrating its flows`), false, 0);
    this.busy = true;
    this.switchedNow = false;
    this.counters.inc(MIG.disengages_started);
    const s = this.startHandOver(req, progress);
    try {
      const x = this.selectInheritors(s, this.enterLeavingMode(req));
      const outcome = await this.copyWithAcks(s, x);
      if (this.abortAsked) throw abortedBeforeSwitch();
      await this.reassignFromLeaving(s, x, outcome);
      await this.fallBackToBackup(s, x, outcome);
      await this.commitCopies(s, x);
      this.switchOwners(s, x);
      await this.broadcastOwnership(s, x);
      return this.handedOverReply(s, x);
    } catch (e) {
      return this.abortHandOver(s, e);
    } finally {
      this.busy = false;
      // A hand-over that switched stays frozen (the table holds the switched
      // slots) until FINISH purges it or an engage takes this FD back.
    }
  }

  /** The state the phases of one hand-over pass to each other, before anything is selected. */
  private startHandOver(req: DisengageRequest, progress: Progress): HandOverState {
    const d = this.d;
    const redirects0 = this.redirects();
    this.redirects0 = redirects0;
    const base = { migrationId: req.migrationId, target: d.selfName };
    const s: HandOverState = {
      req,
      t0: d.scheduler.clock.now(),
      redirects0,
      base,
      say: (phase, copied, total) => {
        const q = d.queues();
        progress({ ...base, phase, copied, total, rxDepth: q.rx, txDepth: q.tx, sendQueueBytes: q.sendQueueBytes, redirects: this.redirects() - redirects0 });
      },
      onCopied: (n) => {
        s.copied += n;
        s.say('copy', s.copied, s.total);
      },
      staging: null,
      copied: 0,
      total: 0,
      fellBack: false,
      copyMs: 0,
      broadcastMs: 0,
      switched: false,
    };
    return s;
  }

  /** 1. Leaving mode: new flows go to the FD the next scope picks; the table is frozen (no entry moves). */
  private enterLeavingMode(req: DisengageRequest): NextScope {
    const plan = req.nextScope;
    const { scope, ids } = scopeWithIds(plan.version, plan.members, plan.tableSize, plan.hashSeed, plan.anchor);
    this.d.handler.setLeaving(scope, ids, plan.hashSeed);
    this.d.handler.frozen = true;
    return { scope, ids, hashSeed: plan.hashSeed };
  }

  /** 2. Inheritors: chosen by the policy, one for every owned entry (both directions of a connection the same). */
  private selectInheritors(s: HandOverState, next: NextScope): Selection {
    const d = this.d;
    const req = s.req;
    const t = d.table;
    s.say('select', 0, 0);
    const ownedBuf = new Int32Array(t.size);
    const reverseFlows = new Int32Array(1);
    const owned = ownedBuf.subarray(0, t.slotsOwnedBy(d.selfId, ownedBuf, reverseFlows));
    const forwardFlows = owned.length - reverseFlows[0]!;
    const peers: PeerInfo[] = req.peers.map((m: Member) => ({ id: m.node.id, name: m.node.name, flowsOwned: m.stats.flowsOwned }));
    const sel = selectInheritors({
      policy: req.policy || 'least-flows',
      self: { id: d.selfId, name: d.selfName },
      peers,
      ownFlows: forwardFlows,
      inheritor: req.inheritor,
      backup: req.backup,
      nextScope: next.scope,
      nextIds: next.ids,
      hashSeed: next.hashSeed,
      randomSeed: req.randomSeed || req.migrationId,
    });
    const assignment = this.assign(sel, owned);
    const addrOf = new Map(req.peers.map((m) => [m.node.id, m.node.controlAddr]));
    // Staged copies (migration-staging.ts): the inheritors hold the entries as
    // redirects to this FD until the commit just before the switch, and hand
    // them back on an abort, so a copy that does not complete leaves one owner per flow.
    const staging = new StagedCopies(d.mesh, req.migrationId, d.selfId, d.handler.counters, addrOf, ACK_TIMEOUT_MS);
    s.staging = staging;
    s.total = owned.length;
    return { owned, sel, assignment, addrOf, staging, tCopy: 0, ownerOf: [] };
  }

  /** 3. Copy to every inheritor, with acknowledgements; the backup gets standby copies (owner = the primary). */
  private async copyWithAcks(s: HandOverState, x: Selection): Promise<CopyOutcome> {
    const { req } = s;
    const { sel, staging: st, addrOf, owned, assignment } = x;
    x.tCopy = this.d.scheduler.clock.now();
    const backup = sel.backup;
    const copies = sel.inheritors.map((inh, k) => this.copyTo(req, st, inh.id, addrOf.get(inh.id), inh.id, false, owned, assignment, k, s.onCopied));
    // The backup gets standby copies: each entry names its primary inheritor as owner.
    const standby = backup ? Promise.all(sel.inheritors.map((inh, k) => this.copyTo(req, st, backup.id, addrOf.get(backup.id), inh.id, true, owned, assignment, k, () => {}))) : null;
    const results = await Promise.allSettled(copies);
    const standbyOk = standby ? (await Promise.allSettled([standby]))[0]!.status === 'fulfilled' : false;
    const failed = sel.inheritors.filter((_, k) => results[k]!.status === 'rejected');
    return { results, standbyOk, failed };
  }

  /**
   * 3a. Another FD's disengage started after this one was asked (two leaving at once): the peer refuses a
   * share it cannot take (BATON_PEER_MIGRATING) before storing any of it. Without a backup, that share
   * goes to an inheritor that took its own; the staged copies keep one owner per flow meanwhile.
   */
  private async reassignFromLeaving(s: HandOverState, x: Selection, o: CopyOutcome): Promise<void> {
    const { failed, results } = o;
    if (failed.length === 0) return;
    const backupOk = x.sel.backup !== null && o.standbyOk;
    const leaving = (r: PromiseSettledResult<unknown>) => r.status === 'fulfilled' || (r.reason instanceof BatonError && r.reason.details?.remoteCode === ErrorCode.PEER_MIGRATING);
    const sel = x.sel;
    const took = sel.inheritors.filter((_, k) => results[k]!.status === 'fulfilled');
    if (!backupOk && took.length > 0 && results.every(leaving)) {
      const to = took[0]!;
      this.counters.inc(MIG.reassigned_from_leaving, failed.length);
      this.log.warn('inheritor is leaving too; its share goes to another inheritor', { leaving: failed.map((f) => f.name), to: to.name });
      for (const f of failed) await this.copyTo(s.req, x.staging, to.id, x.addrOf.get(to.id), to.id, false, x.owned, x.assignment, sel.inheritors.indexOf(f), s.onCopied);
      const remap = sel.inheritors.map((p) => took.indexOf(failed.includes(p) ? to : p));
      const assignment = x.assignment;
      for (let i = 0; i < assignment.length; i++) assignment[i] = remap[assignment[i]!]!;
      x.sel = { ...sel, inheritors: took };
    }
  }

  /** 3b. A failed inheritor's share goes to the backup (which already holds standby copies); without one the hand-over aborts. */
  private async fallBackToBackup(s: HandOverState, x: Selection, o: CopyOutcome): Promise<void> {
    const { failed, results } = o;
    const sel = x.sel;
    if (!(failed.length > 0 && sel.inheritors.some((p) => failed.includes(p)))) return;
    const why = (results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason as Error;
    const backup = sel.backup;
    const backupOk = backup !== null && o.standbyOk;
    if (!backupOk) throw new BatonError(ErrorCode.REMOTE_ERROR, `copy to ${failed.map((f) => f.name).join(', ')} failed (${why.message})${backup ? ' and the backup failed too' : ' and no backup inheritor was named'}`, undefined, { cause: why });
    // Fall back: the backup owns everything that was meant for a failed inheritor.
    this.counters.inc(MIG.fallbacks_to_backup);
    s.fellBack = true;
    this.log.warn('inheritor failed; falling back to the backup', { failed: failed.map((f) => f.name), backup: backup.name, err: why.message });
    const failedIdx = new Set(failed.map((f) => sel.inheritors.indexOf(f)));
    const inheritors = [...sel.inheritors.filter((_, k) => !failedIdx.has(k)), backup];
    const remap = sel.inheritors.map((p) => (failedIdx.has(sel.inheritors.indexOf(p)) ? inheritors.length - 1 : inheritors.indexOf(p)));
    const assignment = x.assignment;
    for (let i = 0; i < assignment.length; i++) assignment[i] = remap[assignment[i]!]!;
    // The backup holds standby copies (owner = the failed inheritor): make it the owner.
    await this.copyTo(s.req, x.staging, backup.id, x.addrOf.get(backup.id), backup.id, false, x.owned, assignment, inheritors.length - 1, () => {});
    x.sel = { ...sel, inheritors, backup: null };
  }

  /**
   * Commit: every primary inheritor makes its share its own (all must
   * acknowledge); the backup's standby copy becomes redirects to the primaries.
   */
  private async commitCopies(s: HandOverState, x: Selection): Promise<void> {
    if (this.abortAsked) throw abortedBeforeSwitch();
    s.say('commit', s.copied, s.total);
    await x.staging.commit(
      x.sel.inheritors.map((p) => p.id),
      x.sel.backup ? [x.sel.backup.id] : [],
    );
    s.copyMs = this.d.scheduler.clock.now() - x.tCopy;
  }

  /**
   * 4. Switch: from now on this FD redirects the migrated flows to their inheritors.
   * The abort check and the switch are one synchronous step: an ABORT either
   * stops the hand-over here or is answered "handed over".
   */
  private switchOwners(s: HandOverState, x: Selection): void {
    if (this.abortAsked) throw abortedBeforeSwitch();
    s.say('switch', s.copied, s.total);
    x.ownerOf = x.sel.inheritors.map((p) => p.id);
    // The table is frozen (no entry moved since slotsOwnedBy()): slots are still valid.
    this.d.table.setOwners(x.owned, x.assignment, x.ownerOf);
    s.switched = true;
    this.switchedNow = true;
    this.counters.inc(MIG.entries_switched, x.owned.length);
    this.counters.inc(MIG.handovers);
    x.staging.done(); // the peers may forget their staging logs
  }

  /**
   * 5. Broadcast the new ownership to every peer, acknowledged. After the
   * switch nothing fails the hand-over: a peer that does not acknowledge is
   * counted, and its stale redirects still reach the inheritor through this
   * FD (by table until the purge, then by the next scope).
   */
  private async broadcastOwnership(s: HandOverState, x: Selection): Promise<void> {
    const tB = this.d.scheduler.clock.now();
    s.say('broadcast', s.copied, s.total);
    try {
      await this.broadcast(s.req, x.owned, x.assignment, x.ownerOf, x.addrOf);
    } catch (e) {
      this.counters.inc(MIG.broadcast_peer_failures);
      this.log.warn('ownership broadcast failed', { err: (e as Error).message });
    }
    s.broadcastMs = this.d.scheduler.clock.now() - tB;
    s.say('handed-over', s.copied, s.total);
  }

  /** Reply "handed over": the manager then takes this FD out of the scope and waits until every tier and member runs it. */
  private handedOverReply(s: HandOverState, x: Selection): DisengageReply {
    const sel = x.sel;
    const shares = sel.inheritors.map((p, idx) => ({ node: { id: p.id, name: p.name }, flows: count(x.assignment, idx), backup: s.fellBack && idx === sel.inheritors.length - 1 }));
    return {
      ok: true,
      errorCode: '',
      errorMessage: '',
      ...s.base,
      policy: sel.policy,
      shares,
      entriesMoved: x.owned.length,
      durationMs: this.d.scheduler.clock.now() - s.t0,
      copyMs: s.copyMs,
      broadcastMs: s.broadcastMs,
      drainMs: 0,
      redirectsServed: this.redirects() - s.redirects0,
      scopeVersion: 0,
      fellBackToBackup: s.fellBack,
      packetsLost: 0,
      handedOver: true,
      quietMs: 0,
      scopeAcked: [],
      scopeSkipped: [],
    };
  }

  /**
   * A failure, only before the switch (nothing after it throws): still the
   * owner of every flow. The inheritors hand back what they were sent (also a
   * commit that went through) before this FD leaves leaving mode.
   */
  private async abortHandOver(s: HandOverState, e: unknown): Promise<DisengageReply> {
    const h = this.d.handler;
    this.counters.inc(MIG.disengages_aborted);
    if (s.staging) {
      const untold = await s.staging.abort();
      if (untold.length > 0) this.log.warn('staged copy: some inheritors could not be told to hand back (their copies stay redirects to this FD)', { peers: untold });
    }
    h.setLeaving(null);
    h.frozen = false;
    s.say('failed', 0, 0);
    const err = e as Error;
    this.log.warn('disengage failed', { err: err.message, switched: s.switched });
    return {
      ...this.failed(s.req, new BatonError(isBatonError(e) ? e.code : ErrorCode.REMOTE_ERROR, `${err.message}; disengage aborted, ${this.d.selfName} keeps its flows`, undefined, { cause: e }), false, s.t0),
      policy: s.req.policy,
      redirectsServed: this.redirects() - s.redirects0,
    };
  }

  /** Redirect counter at the start of the last hand-over (the finish reports the whole disengage's redirects). */
  private redirects0 = 0;

  /** FINISH: purge, drain (bounded), quiet (bounded), report. Never rejects. */
  private async runFinish(req: DisengageRequest, h: DisengageReply, progress: Progress): Promise<DisengageReply> {
    const d = this.d;
    const t0 = d.scheduler.clock.now();
    const deadline = t0 + (req.timeoutMs || DEFAULT_FINISH_MS);
    const total = h.entriesMoved;
    const say = (phase: string): void => {
      const q = d.queues();
      progress({ migrationId: h.migrationId, target: d.selfName, phase, copied: total, total, rxDepth: q.rx, txDepth: q.tx, sendQueueBytes: q.sendQueueBytes, redirects: this.redirects() - this.redirects0 });
    };
    d.handler.frozen = true; // nothing is learned until the drain and the quiet interval are over
    try {
      this.purge(say);
      const drainMs = await this.drain(deadline, say);
      const quietMs = await this.quiet(req, deadline, say);
      return this.finishedReply(h, t0, drainMs, quietMs, say);
    } catch (e) {
      say('failed');
      const err = e as Error;
      this.log.warn('disengage finish failed', { err: err.message });
      return {
        ...h,
        ok: false,
        errorCode: isBatonError(e) ? e.code : ErrorCode.INTERNAL,
        errorMessage: `${err.message} (the flows belong to the inheritors; ${d.selfName} is purged and redirects what still arrives)`,
        drainMs: 0,
        quietMs: 0,
        durationMs: d.scheduler.clock.now() - t0,
      };
    } finally {
      d.handler.frozen = false;
    }
  }

  /**
   * 6. Purge: every tier and member runs a scope without this FD, so
   * whatever still arrives is a straggler the next scope places (leaving
   * mode redirects it).
   */
  private purge(say: (phase: string) => void): void {
    const t = this.d.table;
    say('purge');
    this.counters.inc(MIG.entries_purged, t.size);
    t.clear();
  }

  /** 7. Drain: the table, the RX and TX rings and the socket send queue empty (bounded); returns how long it took. */
  private async drain(deadline: number, say: (phase: string) => void): Promise<number> {
    const clock = this.d.scheduler.clock;
    say('drain');
    const tD = clock.now();
    await this.waitDrained(deadline, () => say('drain'));
    return clock.now() - tD;
  }

  /** 8. Quiet: no frame for `quietMs` and the kernel receive queue empty (bounded); returns how long it took. */
  private async quiet(req: DisengageRequest, deadline: number, say: (phase: string) => void): Promise<number> {
    const clock = this.d.scheduler.clock;
    say('quiet');
    const tQ = clock.now();
    await this.waitQuiet(req.quietMs ?? 0, deadline);
    return clock.now() - tQ;
  }

  /** 9. Report: the finish's reply (the manager then commits DISENGAGED). */
  private finishedReply(h: DisengageReply, t0: number, drainMs: number, quietMs: number, say: (phase: string) => void): DisengageReply {
    say('done');
    this.counters.inc(MIG.disengages_completed);
    this.counters.inc(MIG.finishes);
    return { ...h, ok: true, errorCode: '', errorMessage: '', drainMs, quietMs, durationMs: this.d.scheduler.clock.now() - t0, redirectsServed: this.redirects() - this.redirects0 };
  }

  /** Leaves leaving mode (an engage of this FD after a disengage). */
  rejoin(): void {
    this.handover = null;
    this.finished = null;
    this.d.handler.setLeaving(null);
    this.d.handler.frozen = false;
  }

  private redirects(): number {
    const c = this.d.handler.counters;
    return c.get(FD.redirected) + c.get(FD.redirected_leaving) + c.get(FD.redirected_by_hint);
  }

  /** Inheritor index of every owned entry; both entries of a connection get the same one. */
  private assign(plan: InheritorPlan, owned: Int32Array): Uint16Array {
    const t = this.d.table;
    const k = this.key;
    const a = new Uint16Array(owned.length);
    if (plan.inheritors.length === 1) return a; // everything to inheritor 0
    for (let i = 0; i < owned.length; i++) {
      forwardKey(t, owned[i]!, k);
      a[i] = plan.assign(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto);
    }
    return a;
  }

  /**
   * Sends the entries assigned to inheritor `index` to peer `peerId` in
   * chunks, WINDOW in flight, each acknowledged. The receiver writes `owner`
   * into every entry: the peer itself (it inherits them) or, for a backup's
   * standby copy, the primary inheritor (the backup then redirects to it).
   */
  private async copyTo(
    req: DisengageRequest,
    staging: StagedCopies,
    peerId: number,
    addr: string | undefined,
    owner: number,
    standby: boolean,
    owned: Int32Array,
    assignment: Uint16Array,
    index: number,
    onCopied: (n: number) => void,
  ): Promise<void> {
    const d = this.d;
    const ch = await d.mesh.channelTo(peerId, addr ? parseAddress(addr) : undefined);
    const maxChunk = req.chunkRecords || DEFAULT_CHUNK;
    // Start small and double: the first acknowledgement (the receiver's import
    // code not yet optimised) comes back fast and the pipeline fills sooner.
    let chunk = Math.min(maxChunk, 2048);
    const t = d.table;
    const pick = (i: number): boolean => assignment[i] === index;
    // Walk owned entries in order; a chunk = one exportFlows over the slots it selects.
    const inFlight = new Set<Promise<void>>();
    let seq = 0;
    let i = 0;
    const all = index === 0 && onlyZeros(assignment);
    const scratch = new Int32Array(maxChunk);
    while (i < owned.length) {
      if (this.abortAsked) break; // ABORT: no further chunk; the hand-over fails before the switch
      let sel: Int32Array;
      if (all) {
        sel = owned.subarray(i, Math.min(owned.length, i + chunk));
        i += sel.length;
      } else {
        let n = 0;
        while (i < owned.length && n < chunk) {
          if (pick(i)) scratch[n++] = owned[i]!;
          i++;
        }
        sel = scratch.subarray(0, n);
      }
      if (sel.length === 0) break;
      chunk = Math.min(maxChunk, chunk * 2);
      const buf = new Uint8Array(exportedSize(sel.length));
      const n = exportFlowSlots(t, sel, buf, 0, d.handler.nowMs);
      const s = ++seq;
      staging.touch(peerId);
      this.counters.inc(MIG.chunks_sent);
      const p = ch
        .request(body('migrationChunk', { migrationId: req.migrationId, seq: s, owner, standby, count: n, records: buf, ...staging.chunkFields }), ACK_TIMEOUT_MS)
        .then((ack) => {
          if (ack.body.case !== 'migrationAck' || ack.body.value.errorCode) {
            const v = ack.body.case === 'migrationAck' ? ack.body.value : null;
            this.counters.inc(MIG.chunks_refused);
            throw new BatonError(ErrorCode.REMOTE_ERROR, `chunk ${s} to peer ${peerId} refused: ${v?.errorCode ?? ack.body.case} ${v?.errorMessage ?? ''}`, {
              peer: peerId,
              seq: s,
              sent: n,
              imported: v?.imported ?? 0,
              remoteCode: v ? errorCodeFromWire(v.errorCode) : ErrorCode.REMOTE_ERROR,
            });
          }
          // An acknowledgement means stored: one that stored fewer entries
          // than were sent is a refusal too (the copy falls back or aborts).
          if (ack.body.value.imported !== n) {
            this.counters.inc(MIG.chunks_refused);
            this.counters.inc(MIG.chunks_short);
            throw new BatonError(ErrorCode.REMOTE_ERROR, `chunk ${s} to peer ${peerId} refused: it stored ${ack.body.value.imported} of ${n} entries`, {
              peer: peerId,
              seq: s,
              sent: n,
              imported: ack.body.value.imported,
            });
          }
          this.counters.inc(MIG.chunks_acked);
          this.counters.inc(MIG.entries_copied, n);
          onCopied(n);
        });
      inFlight.add(p);
      p.then(
        () => inFlight.delete(p),
        () => inFlight.delete(p),
      );
      if (inFlight.size >= WINDOW) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
  }

  private async broadcast(req: DisengageRequest, owned: Int32Array, assignment: Uint16Array, ownerOf: number[], addrOf: Map<number, string>): Promise<void> {
    const d = this.d;
    const t = d.table;
    const PER = 8192;
    // One inheritor: a single "all of mine now belong to X" message, which each
    // peer applies in one table walk. Several: explicit 16-byte records.
    const remapTo = ownerOf.length === 1 ? ownerOf[0]! : 0;
    const batches: { buf: Uint8Array; count: number }[] = [];
    if (remapTo !== 0) batches.push({ buf: new Uint8Array(0), count: 0 });
    else {
      for (let i = 0; i < owned.length; i += PER) {
        const n = Math.min(PER, owned.length - i);
        const buf = new Uint8Array(n * OWNERSHIP_RECORD_SIZE);
        for (let j = 0; j < n; j++) {
          const s = owned[i + j]!;
          packOwnership(buf, j * OWNERSHIP_RECORD_SIZE, t.srcIp(s), t.dstIp(s), t.srcPort(s), t.dstPort(s), t.proto(s), OwnershipFlag.MIGRATED, ownerOf[assignment[i + j]!]!);
        }
        batches.push({ buf, count: n });
      }
    }
    this.counters.inc(MIG.broadcast_records, owned.length);
    const peers = req.peers.map((m) => m.node.id).filter((id) => id !== d.selfId);
    // Each batch through the mesh's requestBatch, which counts every outcome
    // (FD.ownership_batches_acked / _deferred / _refused, ownership_batch_failures).
    // A peer that is itself migrating (frozen) answers DEFERRED: it queued the
    // records and applies them when its migration ends (or drops them if it
    // leaves too) — not a failure.
    const results = await Promise.allSettled(
      peers.map(async (id): Promise<BatchOutcome> => {
        const addr = addrOf.get(id);
        const ch = await d.mesh.channelTo(id, addr ? parseAddress(addr) : undefined);
        const outcomes = await Promise.all(
          batches.map((b) =>
            d.mesh.requestBatch(id, ch, { owner: d.selfId, recordVersion: OWNERSHIP_RECORD_VERSION, count: b.count, records: b.buf, remapFrom: remapTo ? d.selfId : 0, remapTo }, ACK_TIMEOUT_MS),
          ),
        );
        return outcomes.includes('deferred') ? 'deferred' : 'applied';
      }),
    );
    // A peer that does not apply it (refused, dead, hung) does not stop the
    // disengage: should it come back with stale ownership, its redirects still
    // reach the owner through this FD (by table until the purge, then by the
    // next scope).
    results.forEach((r, i) => {
      if (r.status === 'fulfilled') {
        this.counters.inc(r.value === 'deferred' ? MIG.broadcast_peers_deferred : MIG.broadcast_peers_acked);
        return;
      }
      const err = r.reason as Error;
      const remoteCode = remoteCodeOf(err);
      if (remoteCode !== undefined) this.counters.inc(MIG.broadcast_peers_refused);
      this.counters.inc(MIG.broadcast_peer_failures);
      this.log.warn(remoteCode !== undefined ? `ownership broadcast refused by peer ${peers[i]}: ${remoteCode}` : `ownership broadcast not acknowledged by peer ${peers[i]}`, {
        peer: peers[i],
        code: remoteCode ?? (isBatonError(err) ? err.code : ErrorCode.INTERNAL),
        err: err.message,
      });
    });
  }

  /** Until the table, the RX/TX rings and the socket send queue are empty; rejects TIMEOUT at `deadline`. */
  private waitDrained(deadline: number, onSlow: () => void): Promise<void> {
    const d = this.d;
    return new Promise((resolve, reject) => {
      let polls = 0;
      const check = (): void => {
        const q = d.queues();
        if (d.table.size === 0 && q.rx === 0 && q.tx === 0 && q.sendQueueBytes === 0) {
          resolve();
          return;
        }
        if (d.scheduler.clock.now() >= deadline) {
          this.counters.inc(MIG.drain_timeouts);
          reject(new BatonError(ErrorCode.TIMEOUT, `${d.selfName} did not drain in time: table ${d.table.size} entries, RX ring ${q.rx}, TX ring ${q.tx}, send queue ${q.sendQueueBytes} B`));
          return;
        }
        if (++polls % 50 === 0) onSlow();
        d.scheduler.after(DRAIN_POLL_MS, check);
      };
      check();
    });
  }

  /**
   * Until no frame has reached this FD for `quietMs`, the rings and the
   * socket send queue are empty and the kernel receive queue is empty (read
   * only once the interval has passed: it costs a /proc read); rejects
   * TIMEOUT at `deadline`. Frames that still arrive are redirected by the
   * next scope (leaving mode) and start the interval again.
   */
  private waitQuiet(quietMs: number, deadline: number): Promise<void> {
    const d = this.d;
    const c = d.handler.counters;
    const clock = d.scheduler.clock;
    let last = c.get(FD.rx_packets);
    let since = clock.now();
    const poll = Math.max(DRAIN_POLL_MS, Math.min(5, Math.floor(quietMs / 4)));
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const rx = c.get(FD.rx_packets);
        const now = clock.now();
        if (rx !== last) {
          last = rx;
          since = now;
          this.counters.inc(MIG.quiet_restarts);
        }
        const q = d.queues();
        let kernel = -1;
        if (now - since >= quietMs && q.rx === 0 && q.tx === 0 && q.sendQueueBytes === 0) {
          kernel = d.kernelRxQueue?.() ?? 0;
          if (kernel === 0) {
            resolve();
            return;
          }
        }
        if (now >= deadline) {
          this.counters.inc(MIG.quiet_timeouts);
          const k = kernel >= 0 ? `${kernel} B` : 'not read';
          reject(new BatonError(ErrorCode.TIMEOUT, `${d.selfName} did not go quiet in time: last frame ${Math.round(now - since)} ms ago (needs ${quietMs} ms), RX ring ${q.rx}, TX ring ${q.tx}, send queue ${q.sendQueueBytes} B, kernel receive queue ${k}`));
          return;
        }
        d.scheduler.after(poll, check);
      };
      check();
    });
  }
}

/** A failed reply to `req` (shared/control/messages.ts failedDisengageReply). */
export const failedReplyOf = failedDisengageReply;

function onlyZeros(a: Uint16Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== 0) return false;
  return true;
}

function count(a: Uint16Array, v: number): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === v) n++;
  return n;
}
