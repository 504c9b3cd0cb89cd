/**
 * "An aborted copy leaves one owner per flow" (issue 11, item 6), with the
 * real node code on virtual time: a disengage whose copy fails after some
 * chunks were imported — at the only inheritor, or at one of two — aborts,
 * and afterwards no FD but the disengaging one names itself the owner of
 * its flows; traffic through it loses nothing. A disengage that goes through
 * hands every flow to exactly one inheritor.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { InMemoryCluster } from '../simulations/in-memory-cluster.js';
import { TrafficGenerator } from '../traffic/generator.js';
import type { FdNode } from '../nodes/fd-node.js';
import type { TrafficOptions } from '../traffic/options.js';
import { body, type EnvelopeObject } from '../shared/control/messages.js';
import { FD } from '../distributor/fd-counters.js';

/** Keys (as strings) of the entries `fd` owns. */
function ownedKeys(fd: FdNode): Set<string> {
  const t = fd.table;
  const out = new Set<string>();
  for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) {
    if (t.owner(s) === fd.me.id) out.add(`${t.srcIp(s)}:${t.srcPort(s)}>${t.dstIp(s)}:${t.dstPort(s)}/${t.proto(s)}`);
  }
  return out;
}

/** Every key owned by more than one FD. */
function doubleOwned(fds: FdNode[]): string[] {
  const seen = new Map<string, number>();
  for (const f of fds) for (const k of ownedKeys(f)) seen.set(k, (seen.get(k) ?? 0) + 1);
  return [...seen].filter(([, n]) => n > 1).map(([k]) => k);
}

/** Inheritor `fd` refuses every chunk after its first `accept` (after importing those). */
function refuseAfter(fd: FdNode, accept: number): void {
  const inner = fd.mesh.peerRequestHandler!;
  let seen = 0;
  fd.mesh.peerRequestHandler = (env: EnvelopeObject, ch) => {
    if (env.body.case === 'migrationChunk' && (env.body.value.op ?? 0) === 0 && ++seen > accept) {
      const c = env.body.value;
      return body('migrationAck', { migrationId: c.migrationId, seq: c.seq, imported: 0, errorCode: 'BATON_TABLE_FULL', errorMessage: 'test: refused' });
    }
    return inner(env, ch);
  };
}

describe('staged copy (in memory, virtual time)', () => {
  let c: InMemoryCluster | null = null;
  afterEach(async () => {
    await c?.stop();
    c = null;
  });

  async function run(during: (c: InMemoryCluster) => Promise<void>) {
    c = new InMemoryCluster();
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

  async function disengage(c: InMemoryCluster, o: { policy: string; inheritor?: string }) {
    return c.drive(c.hashTier.manager.ops.disengage({ target: 'fd-2', chunkRecords: 4, ...o }), 30_000).then(
      (r) => r,
      (e: Error) => ({ ok: false, errorMessage: e.message }),
    );
  }

  it('a copy refused midway at the only inheritor aborts: fd-2 stays the only owner of its flows', async () => {
    await run(async (c) => {
      const [fd1, fd2, fd3] = c.fds as [FdNode, FdNode, FdNode];
      const mine = ownedKeys(fd2);
      expect(mine.size).toBeGreaterThan(8);
      refuseAfter(fd3, 2);
      const r = await disengage(c, { policy: 'named', inheritor: 'fd-3' });
      expect(r.ok).toBe(false);
      expect(fd3.handler.counters.get(FD.migration_entries_staged)).toBeGreaterThan(0); // chunks did arrive
      expect(doubleOwned(c.fds)).toEqual([]);
      for (const k of mine) expect(ownedKeys(fd3).has(k) || ownedKeys(fd1).has(k)).toBe(false);
      await c.runFor(200);
      expect(doubleOwned(c.fds)).toEqual([]);
    });
  });

  it('spread over two inheritors, one refuses after the other committed: both hand back, one owner per flow', async () => {
    await run(async (c) => {
      const [fd1, fd2, fd3] = c.fds as [FdNode, FdNode, FdNode];
      expect(ownedKeys(fd2).size).toBeGreaterThan(8);
      // fd-3 takes its chunks but refuses the commit: fd-1 may have committed first.
      const inner = fd3.mesh.peerRequestHandler!;
      fd3.mesh.peerRequestHandler = (env, ch) =>
        env.body.case === 'migrationChunk' && env.body.value.op === 1
          ? body('migrationAck', { migrationId: env.body.value.migrationId, seq: env.body.value.seq, imported: 0, errorCode: 'BATON_PEER_MIGRATING', errorMessage: 'test' })
          : inner(env, ch);
      const r = await disengage(c, { policy: 'spread' });
      expect(r.ok).toBe(false);
      expect(fd1.handler.counters.get(FD.migration_entries_committed)).toBeGreaterThan(0);
      expect(fd1.handler.counters.get(FD.migration_entries_rolled_back)).toBe(fd1.handler.counters.get(FD.migration_entries_committed));
      expect(doubleOwned(c.fds)).toEqual([]);
      expect(ownedKeys(fd2).size).toBeGreaterThan(8);
    });
  });

  it('a disengage that goes through: every flow of fd-2 has exactly one new owner', async () => {
    await run(async (c) => {
      const [fd1, fd2, fd3] = c.fds as [FdNode, FdNode, FdNode];
      const mine = ownedKeys(fd2);
      const r = await disengage(c, { policy: 'spread' });
      expect(r.ok).toBe(true);
      const o1 = ownedKeys(fd1);
      const o3 = ownedKeys(fd3);
      let moved = 0;
      for (const k of mine) {
        expect(o1.has(k) && o3.has(k)).toBe(false);
        if (o1.has(k) || o3.has(k)) moved++;
      }
      expect(moved).toBeGreaterThan(mine.size / 2); // the rest ended meanwhile
      expect(ownedKeys(fd2).size).toBe(0);
      expect(doubleOwned(c.fds)).toEqual([]);
    });
  });
});
