/**
 * "An acknowledgement means applied" (issue 11, item 6), at the departing
 * FD, with the real node code on virtual time:
 *   - the ownership broadcast counts each peer's outcome as what it is: a
 *     peer that is itself migrating (frozen) answers BATON_OWNERSHIP_DEFERRED
 *     — queued, applied when its migration ends — and is not a failure; a
 *     peer that refuses records (table full) is a failure, counted as a
 *     refusal;
 *   - a chunk acknowledged without an error code but storing fewer entries
 *     than were sent is a refusal: the copy aborts (or falls back to the
 *     backup), never a success.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { InMemoryCluster } from '../simulations/in-memory-cluster.js';
import { TrafficGenerator } from '../traffic/generator.js';
import type { FdNode } from '../nodes/fd-node.js';
import type { TrafficOptions } from '../traffic/options.js';
import { body, type Body, type EnvelopeObject, type OwnershipBatch } from '../shared/control/messages.js';
import { OwnershipNack } from '../distributor/ownership-mesh.js';
import { FD } from '../distributor/fd-counters.js';
import { MIG } from '../migration-client/counters.js';

/** Keys (as strings) of the entries `fd` has whose owner is `owner`. */
function keysOwnedBy(fd: FdNode, owner: number): Set<string> {
  const t = fd.table;
  const out = new Set<string>();
  for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) {
    if (t.owner(s) === owner) out.add(`${t.srcIp(s)}:${t.srcPort(s)}>${t.dstIp(s)}:${t.dstPort(s)}/${t.proto(s)}`);
  }
  return out;
}

/** Every key owned (by its own table) by more than one FD. */
function doubleOwned(fds: FdNode[]): string[] {
  const seen = new Map<string, number>();
  for (const f of fds) for (const k of keysOwnedBy(f, f.me.id)) seen.set(k, (seen.get(k) ?? 0) + 1);
  return [...seen].filter(([, n]) => n > 1).map(([k]) => k);
}

/** Inheritor `fd` imports every COPY chunk but acknowledges one entry fewer than it was sent (no error code). */
function ackShort(fd: FdNode): void {
  const inner = fd.mesh.peerRequestHandler!;
  fd.mesh.peerRequestHandler = async (env: EnvelopeObject, ch) => {
    const r = (await inner(env, ch)) as Body | undefined;
    if (env.body.case === 'migrationChunk' && (env.body.value.op ?? 0) === 0 && r?.case === 'migrationAck' && !r.value.errorCode) {
      return body('migrationAck', { ...r.value, imported: r.value.imported - 1 });
    }
    return r;
  };
}

describe('migration client: every acknowledgement counted as what it says', () => {
  let c: InMemoryCluster | null = null;
  afterEach(async () => {
    await c?.stop();
    c = null;
  });

  async function run(raw: unknown, during: (c: InMemoryCluster) => Promise<void>) {
    c = new InMemoryCluster(raw);
    await c.start();
    const opts: TrafficOptions = { concurrency: 60, totalFlows: 60, packetsPerFlow: 300, udpRatio: 0.3, ratePps: 6000 };
    const socket = c.net.bindSync({ host: '127.0.0.1', port: 0 });
    const gen = new TrafficGenerator(opts, { socket, scheduler: c.scheduler, target: c.hashTierData });
    const done = gen.run();
    await c.runFor(300);
    await during(c);
    const report = await c.drive(done, 120_000);
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
  }

  const disengage = (c: InMemoryCluster, o: { policy: string; inheritor?: string; backup?: string }) =>
    c.drive(c.hashTier.manager.ops.disengage({ target: 'fd-2', chunkRecords: 4, ...o }), 30_000).then(
      (r) => r,
      (e: Error) => ({ ok: false, errorMessage: e.message, fellBackToBackup: false }),
    );

  it('a peer that is itself migrating defers the broadcast: counted deferred, not a failure; applied when it thaws', async () => {
    await run({}, async (c) => {
      const [fd1, fd2, fd3] = c.fds as [FdNode, FdNode, FdNode];
      expect(keysOwnedBy(fd2, fd2.me.id).size).toBeGreaterThan(8);
      fd1.handler.frozen = true; // fd-1 holds its table still, as its own migration would
      const r = await disengage(c, { policy: 'named', inheritor: 'fd-3' });
      expect(r.ok).toBe(true);
      const mig = fd2.migration.counters;
      expect(mig.get(MIG.broadcast_peers_deferred)).toBe(1); // fd-1
      expect(mig.get(MIG.broadcast_peers_acked)).toBe(1); // fd-3
      expect(mig.get(MIG.broadcast_peer_failures)).toBe(0);
      expect(mig.get(MIG.broadcast_peers_refused)).toBe(0);
      expect(fd2.handler.counters.get(FD.ownership_batches_deferred)).toBeGreaterThan(0);
      expect(fd1.handler.counters.get(FD.ownership_nacks_sent)).toBeGreaterThan(0);
      // One inheritor: the broadcast is a remap "fd-2 → fd-3", which moves no
      // entry and is applied at once even while frozen (and queued for the thaw).
      expect(keysOwnedBy(fd1, fd2.me.id).size).toBe(0);
      fd1.handler.frozen = false;
      expect(fd1.mesh.deferredPending).toBe(0);
      expect(keysOwnedBy(fd1, fd2.me.id).size).toBe(0);
      expect(doubleOwned([fd1, fd2, fd3])).toEqual([]);
    });
  });

  it('a peer that refuses broadcast records (table full) is a failure, counted as a refusal; the disengage still completes', async () => {
    await run({}, async (c) => {
      const [fd1, fd2, fd3] = c.fds as [FdNode, FdNode, FdNode];
      expect(keysOwnedBy(fd2, fd2.me.id).size).toBeGreaterThan(8);
      // fd-1 answers acknowledged batches of records with BATON_TABLE_FULL (it
      // applies them: only the answer is under test here, and the traffic must
      // keep its owners).
      const mesh = fd1.mesh as unknown as { answer: (b: OwnershipBatch) => Body };
      const answer = mesh.answer.bind(fd1.mesh);
      mesh.answer = (b) => {
        const r = answer(b);
        return r.case === 'pong' && b.count > 0 ? body('errorReply', { code: OwnershipNack.TABLE_FULL, message: `test: applied 0 of ${b.count}` }) : r;
      };
      // Spread: fd-1 and fd-3 inherit, and the broadcast is records (not a remap).
      const r = await disengage(c, { policy: 'spread' });
      mesh.answer = answer;
      expect(r.ok).toBe(true);
      const mig = fd2.migration.counters;
      expect(mig.get(MIG.broadcast_peers_refused)).toBe(1); // fd-1: BATON_TABLE_FULL
      expect(mig.get(MIG.broadcast_peer_failures)).toBe(1);
      expect(mig.get(MIG.broadcast_peers_acked)).toBe(1); // fd-3
      expect(mig.get(MIG.broadcast_peers_deferred)).toBe(0);
      expect(fd2.handler.counters.get(FD.ownership_batches_refused)).toBeGreaterThan(0);
      expect(doubleOwned([fd1, fd2, fd3])).toEqual([]);
    });
  });

  it('a chunk acknowledged with fewer entries stored than sent is a refusal: the copy aborts, fd-2 keeps its flows', async () => {
    await run({}, async (c) => {
      const [fd1, fd2, fd3] = c.fds as [FdNode, FdNode, FdNode];
      const mine = keysOwnedBy(fd2, fd2.me.id);
      expect(mine.size).toBeGreaterThan(8);
      ackShort(fd3);
      const r = await disengage(c, { policy: 'named', inheritor: 'fd-3' });
      expect(r.ok).toBe(false);
      expect(r.errorMessage).toMatch(/refused: it stored \d+ of \d+ entries/);
      const mig = fd2.migration.counters;
      expect(mig.get(MIG.chunks_short)).toBeGreaterThan(0);
      expect(mig.get(MIG.chunks_refused)).toBe(mig.get(MIG.chunks_short));
      expect(mig.get(MIG.handovers)).toBe(0);
      expect(doubleOwned([fd1, fd2, fd3])).toEqual([]);
      for (const k of mine) expect(keysOwnedBy(fd3, fd3.me.id).has(k) || keysOwnedBy(fd1, fd1.me.id).has(k)).toBe(false);
    });
  });

  it('with a backup, a short acknowledgement falls back to it', async () => {
    await run({}, async (c) => {
      const [fd1, fd2, fd3] = c.fds as [FdNode, FdNode, FdNode];
      expect(keysOwnedBy(fd2, fd2.me.id).size).toBeGreaterThan(8);
      ackShort(fd3);
      const r = await disengage(c, { policy: 'named', inheritor: 'fd-3', backup: 'fd-1' });
      expect(r.ok).toBe(true);
      expect(r.fellBackToBackup).toBe(true);
      expect(fd2.migration.counters.get(MIG.fallbacks_to_backup)).toBe(1);
      expect(fd2.migration.counters.get(MIG.chunks_short)).toBeGreaterThan(0);
      expect(keysOwnedBy(fd2, fd2.me.id).size).toBe(0);
      expect(doubleOwned([fd1, fd2, fd3])).toEqual([]);
    });
  });
});
