/**
 * The migration client of one FD (seed 003, "flow migration algorithm"):
 *
 *   1. leaving mode on: new flows go to the FD the shrunken scope picks;
 *   2. select inheritor(s);
 *   3. copy the flow table to them point to point, in chunks with
 *      acknowledgements (a backup inheritor gets standby copies);
 *   4. switch: every migrated entry here now names its inheritor as owner,
 *      so packets that still arrive are redirected to it;
 *   5. broadcast the new ownership to every peer, acknowledged;
 *   6. purge the flow table;
 *   7. wait until the flow table, the RX and TX rings and the socket send
 *      queue are empty; report DISENGAGED (the manager then shrinks the scope).
 *
 * A failure before the switch (an inheritor that dies or times out) falls
 * back to the backup inheritor when there is one, and otherwise aborts:
 * leaving mode off, every flow still owned here, nothing lost.
 */
import type { Scheduler } from '../shared/runtime/scheduler.js';
import { BatonError, ErrorCode, isBatonError } from '../shared/errors.js';
import { body, type DisengageRequest, type DisengageReply, type MigrationProgress, type Member } from '../shared/control/messages.js';
import { scopeWithIds } from '../shared/scope/hash-scope.js';
import type { FlowTable } from '../distributor/flow-table.js';
import { parseAddress } from '../shared/io/address.js';
import { exportFlowSlots, exportedSize } from '../distributor/flow-export.js';
import { FlowKey, forwardKey } from '../distributor/flow-pair.js';
import type { FlowHandler } from '../distributor/flow-handler.js';
import type { OwnershipMesh } from '../distributor/ownership-mesh.js';
import { OwnershipFlag, OWNERSHIP_RECORD_SIZE, OWNERSHIP_RECORD_VERSION, packOwnership } from '../shared/control/ownership.js';
import { FD } from '../distributor/fd-counters.js';
import { Counters, defineCounters } from '../shared/counters.js';
import { getLogger, type Logger } from '../shared/observability/logger.js';
import { selectInheritors, type InheritorPlan, type PeerInfo } from './inheritor-selector.js';

export const MIG = defineCounters([
  'disengages_started',
  'disengages_completed',
  'disengages_aborted',
  'disengages_rejoined', // a repeated request (e.g. from a manager that took over) answered with the running or finished migration
  'fallbacks_to_backup',
  'chunks_sent',
  'chunks_acked',
  'entries_copied',
  'entries_switched',
  'broadcast_records',
  'broadcast_peer_failures',
  'entries_purged',
  'chunks_received',
  'entries_imported',
  'chunks_rejected',
] as const);

export interface MigrationDeps {
  selfId: number;
  selfName: string;
  table: FlowTable;
  handler: FlowHandler;
  mesh: OwnershipMesh;
  scheduler: Scheduler;
  /** RX ring depth, TX ring depth, socket send-queue bytes of the data plane. */
  queues: () => { rx: number; tx: number; sendQueueBytes: number };
  counters?: Counters;
  logger?: Logger;
}

const DEFAULT_CHUNK = 16384;
const WINDOW = 8; // chunks in flight per inheritor
const ACK_TIMEOUT_MS = 5000;
const DRAIN_POLL_MS = 1;

type Progress = (p: MigrationProgress) => void;

export class MigrationClient {
  readonly counters: Counters;
  private readonly log: Logger;
  private busy = false;
  private readonly key = new FlowKey();

  constructor(private readonly d: MigrationDeps) {
    this.counters = d.counters ?? new Counters(MIG);
    this.log = d.logger ?? getLogger('migration-client');
  }

  get migrating(): boolean {
    return this.busy;
  }

  /**
   * Disengages this FD. Idempotent for the manager: a request that arrives
   * while a migration runs gets that migration's reply (and its progress from
   * then on), and one that arrives after a successful migration, while this
   * FD is still out (leaving mode, not engaged again), gets the same reply
   * again — so a manager that takes over from one that died midway can
   * re-send the request and finish the disengage exactly once.
   */
  disengage(req: DisengageRequest, progress: Progress = () => {}): Promise<DisengageReply> {
    if (this.current) {
      this.counters.inc(MIG.disengages_rejoined);
      this.listeners.push(progress);
      return this.current;
    }
    if (this.lastDone && this.d.handler.leaving) {
      this.counters.inc(MIG.disengages_rejoined);
      return Promise.resolve(this.lastDone);
    }
    this.lastDone = null;
    this.listeners = [progress];
    const run = this.run(req, (p) => {
      for (const l of this.listeners) l(p);
    });
    const settle = (): void => {
      this.current = null;
      this.listeners = [];
    };
    this.current = run.then(
      (r) => {
        settle();
        if (r.ok) this.lastDone = r;
        return r;
      },
      (e: unknown) => {
        settle();
        throw e;
      },
    );
    return this.current;
  }

  private current: Promise<DisengageReply> | null = null;
  private listeners: Progress[] = [];
  private lastDone: DisengageReply | null = null;

  private async run(req: DisengageRequest, progress: Progress): Promise<DisengageReply> {
    const d = this.d;
    if (this.busy) throw new BatonError(ErrorCode.INVALID_TRANSITION, `${d.selfName} is already migrating its flows`);
    this.busy = true;
    this.counters.inc(MIG.disengages_started);
    const t0 = d.scheduler.clock.now();
    const redirects0 = this.redirects();
    const base = { migrationId: req.migrationId, target: d.selfName };
    const say = (phase: string, copied: number, total: number): void => {
      const q = d.queues();
      progress({ ...base, phase, copied, total, rxDepth: q.rx, txDepth: q.tx, sendQueueBytes: q.sendQueueBytes, redirects: this.redirects() - redirects0 });
    };
    const h = d.handler;
    const t = d.table;
    let switched = false;
    try {
      // 1. Leaving mode.
      const plan = req.nextScope;
      const { scope, ids } = scopeWithIds(plan.version, plan.members, plan.tableSize, plan.hashSeed, plan.anchor);
      h.setLeaving(scope, ids, plan.hashSeed);
      h.frozen = true;

      // 2. Inheritors.
      say('select', 0, 0);
      const ownedBuf = new Int32Array(t.size);
      const reverseFlows = new Int32Array(1);
      const owned = ownedBuf.subarray(0, t.slotsOwnedBy(d.selfId, ownedBuf, reverseFlows));
      const forwardFlows = owned.length - reverseFlows[0]!;
      const peers: PeerInfo[] = req.peers.map((m: Member) => ({ id: m.node.id, name: m.node.name, flowsOwned: m.stats.flowsOwned }));
      let sel = selectInheritors({
        policy: req.policy || 'least-flows',
        self: { id: d.selfId, name: d.selfName },
        peers,
        ownFlows: forwardFlows,
        inheritor: req.inheritor,
        backup: req.backup,
        nextScope: scope,
        nextIds: ids,
        hashSeed: plan.hashSeed,
        randomSeed: req.randomSeed || req.migrationId,
      });
      const assignment = this.assign(sel, owned);
      const addrOf = new Map(req.peers.map((m) => [m.node.id, m.node.controlAddr]));

      // 3. Copy, with acknowledgements; a failed inheritor falls back to the backup.
      const tCopy = d.scheduler.clock.now();
      const total = owned.length;
      let copied = 0;
      let fellBack = false;
      const onCopied = (n: number): void => {
        copied += n;
        say('copy', copied, total);
      };
      const backup = sel.backup;
      const copies = sel.inheritors.map((inh, k) => this.copyTo(req, inh.id, addrOf.get(inh.id), inh.id, false, owned, assignment, k, onCopied));
      // The backup gets standby copies: each entry names its primary inheritor as owner.
      const standby = backup ? Promise.all(sel.inheritors.map((inh, k) => this.copyTo(req, backup.id, addrOf.get(backup.id), inh.id, true, owned, assignment, k, () => {}))) : null;
      const results = await Promise.allSettled(copies);
      const standbyOk = standby ? (await Promise.allSettled([standby]))[0]!.status === 'fulfilled' : false;
      const failed = sel.inheritors.filter((_, k) => results[k]!.status === 'rejected');
      if (failed.length > 0) {
        const why = (results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason as Error;
        const backupOk = backup !== null && standbyOk;
        if (!backupOk) throw new BatonError(ErrorCode.REMOTE_ERROR, `copy to ${failed.map((f) => f.name).join(', ')} failed (${why.message})${backup ? ' and the backup failed too' : ' and no backup inheritor was named'}`);
        // Fall back: the backup owns everything that was meant for a failed inheritor.
        this.counters.inc(MIG.fallbacks_to_backup);
        fellBack = true;
        this.log.warn('inheritor failed; falling back to the backup', { failed: failed.map((f) => f.name), backup: backup.name, err: why.message });
        const failedIdx = new Set(failed.map((f) => sel.inheritors.indexOf(f)));
        const inheritors = [...sel.inheritors.filter((_, k) => !failedIdx.has(k)), backup];
        const remap = sel.inheritors.map((p) => (failedIdx.has(sel.inheritors.indexOf(p)) ? inheritors.length - 1 : inheritors.indexOf(p)));
        for (let i = 0; i < assignment.length; i++) assignment[i] = remap[assignment[i]!]!;
        // The backup holds standby copies (owner = the failed inheritor): make it the owner.
        await this.copyTo(req, backup.id, addrOf.get(backup.id), backup.id, false, owned, assignment, inheritors.length - 1, () => {});
        sel = { ...sel, inheritors, backup: null };
      }
      const copyMs = d.scheduler.clock.now() - tCopy;

      // 4. Switch: from now on this FD redirects the migrated flows to their inheritors.
      say('switch', copied, total);
      const ownerOf = sel.inheritors.map((p) => p.id);
      // The table is frozen (no entry moved since slotsOwnedBy()): slots are still valid.
      t.setOwners(owned, assignment, ownerOf);
      switched = true;
      this.counters.inc(MIG.entries_switched, owned.length);

      // 5. Broadcast the new ownership to every peer, acknowledged.
      const tB = d.scheduler.clock.now();
      say('broadcast', copied, total);
      await this.broadcast(req, owned, assignment, ownerOf, addrOf);
      const broadcastMs = d.scheduler.clock.now() - tB;

      // 6. Purge.
      say('purge', copied, total);
      this.counters.inc(MIG.entries_purged, t.size);
      t.clear(); // still frozen: nothing is learned until the drain is over

      // 7. Drain: table, RX/TX rings and the socket send queue empty.
      const tD = d.scheduler.clock.now();
      await this.waitDrained(say, copied, total);
      const drainMs = d.scheduler.clock.now() - tD;
      say('done', copied, total);

      const shares = sel.inheritors.map((p, idx) => ({ node: { id: p.id, name: p.name }, flows: count(assignment, idx), backup: fellBack && idx === sel.inheritors.length - 1 }));
      this.counters.inc(MIG.disengages_completed);
      return {
        ok: true,
        errorCode: '',
        errorMessage: '',
        ...base,
        policy: sel.policy,
        shares,
        entriesMoved: owned.length,
        durationMs: d.scheduler.clock.now() - t0,
        copyMs,
        broadcastMs,
        drainMs,
        redirectsServed: this.redirects() - redirects0,
        scopeVersion: 0,
        fellBackToBackup: fellBack,
        packetsLost: 0,
      };
    } catch (e) {
      this.counters.inc(MIG.disengages_aborted);
      if (!switched) h.setLeaving(null); // still the owner of every flow: keep serving
      say('failed', 0, 0);
      const err = e as Error;
      this.log.warn('disengage failed', { err: err.message, switched });
      return {
        ok: false,
        errorCode: isBatonError(e) ? e.code : 'BATON_INTERNAL',
        errorMessage: switched ? `${err.message} (after the switch: flows belong to their inheritors)` : `${err.message}; disengage aborted, ${d.selfName} keeps its flows`,
        ...base,
        policy: req.policy,
        shares: [],
        entriesMoved: 0,
        durationMs: d.scheduler.clock.now() - t0,
        copyMs: 0,
        broadcastMs: 0,
        drainMs: 0,
        redirectsServed: this.redirects() - redirects0,
        scopeVersion: 0,
        fellBackToBackup: false,
        packetsLost: 0,
      };
    } finally {
      this.busy = false;
      h.frozen = false;
    }
  }

  /** Leaves leaving mode (an engage of this FD after a disengage). */
  rejoin(): void {
    this.lastDone = null;
    this.d.handler.setLeaving(null);
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
      this.counters.inc(MIG.chunks_sent);
      const p = ch
        .request(body('migrationChunk', { migrationId: req.migrationId, seq: s, owner, standby, count: n, records: buf }), ACK_TIMEOUT_MS)
        .then((ack) => {
          if (ack.body.case !== 'migrationAck' || ack.body.value.errorCode) {
            const v = ack.body.case === 'migrationAck' ? ack.body.value : null;
            throw new BatonError(ErrorCode.REMOTE_ERROR, `chunk ${s} to peer ${peerId} refused: ${v?.errorCode ?? ack.body.case} ${v?.errorMessage ?? ''}`);
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
    const results = await Promise.allSettled(
      peers.map(async (id) => {
        const addr = addrOf.get(id);
        const ch = await d.mesh.channelTo(id, addr ? parseAddress(addr) : undefined);
        await Promise.all(
          batches.map((b) =>
            ch.request(body('ownershipBatch', { owner: d.selfId, recordVersion: OWNERSHIP_RECORD_VERSION, count: b.count, records: b.buf, remapFrom: remapTo ? d.selfId : 0, remapTo }), ACK_TIMEOUT_MS).then((r) => {
              if (r.body.case !== 'pong') throw new BatonError(ErrorCode.REMOTE_ERROR, `peer ${id} refused an ownership batch (${r.body.case})`);
            }),
          ),
        );
      }),
    );
    // A peer that does not acknowledge (dead, hung) does not stop the disengage:
    // should it come back with stale ownership, its redirects still reach the
    // owner through this FD (by table until the purge, then by the next scope).
    results.forEach((r, i) => {
      if (r.status === 'rejected') {
        this.counters.inc(MIG.broadcast_peer_failures);
        this.log.warn('ownership broadcast not acknowledged', { peer: peers[i], err: (r.reason as Error).message });
      }
    });
  }

  private waitDrained(say: (phase: string, copied: number, total: number) => void, copied: number, total: number): Promise<void> {
    const d = this.d;
    return new Promise((resolve) => {
      let polls = 0;
      const check = (): void => {
        const q = d.queues();
        if (d.table.size === 0 && q.rx === 0 && q.tx === 0 && q.sendQueueBytes === 0) {
          resolve();
          return;
        }
        if (++polls % 50 === 0) say('drain', copied, total);
        d.scheduler.after(DRAIN_POLL_MS, check);
      };
      check();
    });
  }
}

function onlyZeros(a: Uint16Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== 0) return false;
  return true;
}

function count(a: Uint16Array, v: number): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === v) n++;
  return n;
}
