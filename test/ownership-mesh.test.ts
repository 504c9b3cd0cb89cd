/**
 * The ownership mesh between FDs (distributor/ownership-mesh.ts), on virtual
 * time with in-memory control connections:
 *   - an acknowledgement means applied: a frozen receiver queues (and says
 *     so), a full one refuses (and says so), and the sender counts each;
 *   - records that reach a frozen table are applied when it thaws, in order;
 *   - a peer whose channel dropped is resynced when it is back;
 *   - a staged migration copy over real peer channels: an abort leaves the
 *     sender the only owner, a commit hands the flows over.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { VirtualScheduler } from '../shared/runtime/scheduler.js';
import { MemoryMessageNet } from '../shared/io/stream.js';
import { FlowHandler, Verdict } from '../distributor/flow-handler.js';
import { FlowTable } from '../distributor/flow-table.js';
import { HashRewritePolicy } from '../distributor/service-policy.js';
import { OwnershipMesh, OwnershipNack } from '../distributor/ownership-mesh.js';
import { FD } from '../distributor/fd-counters.js';
import { exportFlowSlots, exportedSize } from '../distributor/flow-export.js';
import { Counters } from '../shared/counters.js';
import { buildPacket } from '../shared/packet/build.js';
import { ipv4ToInt, IPPROTO_TCP, TCP_SYN } from '../shared/packet/meta.js';
import { body } from '../shared/control/messages.js';
import { OWNERSHIP_RECORD_SIZE, OWNERSHIP_RECORD_VERSION, OwnershipFlag, packOwnership } from '../shared/control/ownership.js';
import { formatAddress } from '../shared/io/address.js';
import { isBatonError } from '../shared/errors.js';
import { MIG } from '../migration-client/counters.js';
import { handleMigrationChunk } from '../migration-client/migration-receiver.js';
import { StagedCopies } from '../migration-client/migration-staging.js';
import { syncOwnershipTo } from '../migration-client/ownership-sync.js';

const VIP = ipv4ToInt('198.51.100.1');
const B1 = ipv4ToInt('10.1.0.1');

function settle(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

class Net {
  readonly sched = new VirtualScheduler(1000);
  readonly messages = new MemoryMessageNet(this.sched);
  readonly nodes: Node[] = [];

  async runUntil(cond: () => boolean, limitMs = 10_000): Promise<void> {
    const end = this.sched.clock.now() + limitMs;
    for (;;) {
      await settle();
      for (const n of this.nodes) n.h.tick();
      if (cond()) return;
      if (this.sched.clock.now() >= end) throw new Error(`condition not met within ${limitMs} ms of virtual time`);
      this.sched.runFor(1);
    }
  }
  async drive<T>(p: Promise<T>, limitMs = 10_000): Promise<T> {
    let done = false;
    let out: { v?: T; e?: unknown } = {};
    p.then(
      (v) => ((done = true), (out = { v })),
      (e: unknown) => ((done = true), (out = { e })),
    );
    await this.runUntil(() => done, limitMs);
    if ('e' in out) throw out.e;
    return out.v as T;
  }

  async node(id: number, maxFlows = 4096): Promise<Node> {
    const table = new FlowTable(maxFlows, { seed: 5 });
    const h = new FlowHandler({ selfId: id, table, policy: new HashRewritePolicy([{ ip: B1, port: 8080 }]), clock: this.sched.clock, lingerMs: 500, idleMs: 1e9 });
    const mesh = new OwnershipMesh(id, h, this.messages, this.sched, 1, { requestTimeoutMs: 2000 });
    h.setOwnershipSink(mesh);
    const mig = new Counters(MIG);
    mesh.peerRequestHandler = (env) => (env.body.case === 'migrationChunk' ? handleMigrationChunk(table, h, mig, env.body.value) : undefined);
    const addr = await mesh.start({ host: 'fd', port: 7000 + id });
    const n = { id, table, h, mesh, addr: formatAddress(addr) };
    this.nodes.push(n);
    return n;
  }
  /** Every node peers with every other. */
  mesh(): void {
    for (const n of this.nodes) n.mesh.setPeers(this.nodes.map((m) => ({ id: m.id, controlAddr: m.addr })));
  }
  async stop(): Promise<void> {
    for (const n of this.nodes) await n.mesh.stop();
  }
}
interface Node {
  id: number;
  table: FlowTable;
  h: FlowHandler;
  mesh: OwnershipMesh;
  addr: string;
}

function client(i: number): number {
  return ipv4ToInt(`192.0.2.${1 + (i % 250)}`);
}
function syn(i: number): Uint8Array {
  return buildPacket({ srcIp: client(i), dstIp: VIP, srcPort: 20000 + i, dstPort: 80, proto: IPPROTO_TCP, tcpFlags: TCP_SYN });
}
/** Opens connections [from, to) at `n` (each: forward + reverse entry owned by n). */
function open(n: Node, from: number, to: number): void {
  for (let i = from; i < to; i++) {
    const p = syn(i);
    expect(n.h.handle(p, 0, p.length)).toBe(Verdict.FORWARD);
  }
}
/** What `at` believes the owner of connection i's forward entry is (-1: no entry). */
function ownerAt(at: Node, i: number): number {
  const s = at.table.find(client(i), VIP, 20000 + i, 80, IPPROTO_TCP);
  return s < 0 ? -1 : at.table.owner(s);
}
function knowsAll(at: Node, owner: number, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (ownerAt(at, i) !== owner) return false;
  return true;
}
function batch(records: [number, number, number][]) {
  const buf = new Uint8Array(records.length * OWNERSHIP_RECORD_SIZE);
  records.forEach(([i, flags, owner], k) => packOwnership(buf, k * OWNERSHIP_RECORD_SIZE, client(i), VIP, 20000 + i, 80, IPPROTO_TCP, flags, owner));
  return { owner: records[0]?.[2] ?? 0, recordVersion: OWNERSHIP_RECORD_VERSION, count: records.length, records: buf, remapFrom: 0, remapTo: 0 };
}

describe('ownership mesh', () => {
  let net: Net | null = null;
  afterEach(async () => {
    await net?.stop();
    net = null;
  });

  describe('an acknowledgement means applied', () => {
    it('a frozen receiver queues the batch and says so; the records are applied when it thaws', async () => {
      net = new Net();
      const a = await net.node(1);
      const b = await net.node(2);
      net.mesh();
      const ch = await net.drive(a.mesh.channelTo(2));
      b.h.frozen = true; // b migrates its own flows
      const outcome = await net.drive(a.mesh.requestBatch(2, ch, batch([[1, 0, 1], [2, 0, 1]]), 1000));
      expect(outcome).toBe('deferred');
      expect(ownerAt(b, 1)).toBe(-1); // not applied while frozen
      expect(b.mesh.deferredPending).toBe(2);
      expect(b.h.counters.get(FD.ownership_nacks_sent)).toBe(1);
      expect(a.h.counters.get(FD.ownership_batches_deferred)).toBe(1);
      // Fire-and-forget records queue behind it, in order: learn 3, then forget 1.
      a.mesh.peer(2)!.send(body('ownershipBatch', batch([[3, 0, 1], [1, OwnershipFlag.REMOVED, 1]])));
      await net.runUntil(() => b.mesh.deferredPending === 4);
      b.h.frozen = false; // its migration aborted: it stays a member and needs what it missed
      expect([ownerAt(b, 1), ownerAt(b, 2), ownerAt(b, 3)]).toEqual([-1, 1, 1]);
      expect(b.h.counters.get(FD.ownership_deferred)).toBe(4);
      expect(b.h.counters.get(FD.ownership_deferred_applied)).toBe(4);
      // Frozen again (b keeps its table still for a migration): what moves no
      // entry is applied at once — a new owner of an entry b has, a remap — and
      // no entry is added or removed; the rest waits for the thaw.
      b.h.frozen = true;
      const size = b.table.size;
      const remap = { ...batch([[2, 0, 3], [5, 0, 3]]), remapFrom: 1, remapTo: 4 };
      expect(await net.drive(a.mesh.requestBatch(2, ch, remap, 1000))).toBe('deferred');
      expect([ownerAt(b, 2), ownerAt(b, 3), ownerAt(b, 5)]).toEqual([3, 4, -1]); // the remap, then the records
      expect(b.table.size).toBe(size);
      b.h.frozen = false;
      expect([ownerAt(b, 2), ownerAt(b, 3), ownerAt(b, 5)]).toEqual([3, 4, 3]);
      // Not frozen: applied at once, answered Pong.
      expect(await net.drive(a.mesh.requestBatch(2, ch, batch([[4, 0, 1]]), 1000))).toBe('applied');
      expect(ownerAt(b, 4)).toBe(1);
      expect(a.h.counters.get(FD.ownership_batches_acked)).toBe(1);
    });

    it('records queued at an FD that then leaves are dropped (its table was purged), counted', async () => {
      net = new Net();
      const a = await net.node(1);
      const b = await net.node(2);
      net.mesh();
      const ch = await net.drive(a.mesh.channelTo(2));
      b.h.frozen = true;
      await net.drive(a.mesh.requestBatch(2, ch, batch([[1, 0, 1]]), 1000));
      b.h.setLeaving(null); // (no-op: not leaving) — then leave for real:
      const { scope, ids } = (await import('../shared/scope/hash-scope.js')).scopeWithIds(1, [{ id: 1, name: 'fd-1' }], 13, 0, []);
      b.h.setLeaving(scope, ids, 0);
      b.h.frozen = false;
      expect(ownerAt(b, 1)).toBe(-1);
      expect(b.h.counters.get(FD.ownership_deferred_dropped)).toBe(1);
    });

    it('a full receiver applies what fits and refuses the rest with BATON_TABLE_FULL; the sender counts it', async () => {
      net = new Net();
      const a = await net.node(1);
      const b = await net.node(2, 2);
      net.mesh();
      const ch = await net.drive(a.mesh.channelTo(2));
      const err = await net.drive(a.mesh.requestBatch(2, ch, batch([[1, 0, 1], [2, 0, 1], [3, 0, 1]]), 1000)).catch((e: unknown) => e);
      expect(isBatonError(err)).toBe(true);
      expect((err as { details: Record<string, unknown> }).details['remoteCode']).toBe(OwnershipNack.TABLE_FULL);
      expect((err as Error).message).toContain('applied 2 of 3');
      expect([ownerAt(b, 1), ownerAt(b, 2), ownerAt(b, 3)]).toEqual([1, 1, -1]);
      expect(b.h.counters.get(FD.learn_table_full)).toBe(1);
      expect(a.h.counters.get(FD.ownership_batches_refused)).toBe(1);
      // The joiner sync reports it too, instead of claiming success.
      open(a, 10, 12);
      await expect(net.drive(syncOwnershipTo(1, a.table, a.mesh, 2, b.addr, 1000))).rejects.toThrow(/BATON_TABLE_FULL/);
    });

    it('a malformed acknowledged batch is answered BATON_BAD_OWNERSHIP_BATCH', async () => {
      net = new Net();
      const a = await net.node(1);
      await net.node(2);
      net.mesh();
      const ch = await net.drive(a.mesh.channelTo(2));
      const bad = { ...batch([[1, 0, 1]]), count: 2 };
      const err = await net.drive(a.mesh.requestBatch(2, ch, bad, 1000)).catch((e: unknown) => e);
      expect((err as { details: Record<string, unknown> }).details['remoteCode']).toBe(OwnershipNack.BAD_BATCH);
    });
  });

  describe('a reconnected peer is resynced', () => {
    it('flows created while the channel to a peer was down reach it after the reconnect', async () => {
      net = new Net();
      const a = await net.node(1);
      const b = await net.node(2);
      net.mesh();
      await net.runUntil(() => a.mesh.peer(2) !== null && b.mesh.peer(1) !== null);
      open(a, 0, 10);
      await net.runUntil(() => knowsAll(b, 1, 0, 10));
      expect(a.h.counters.get(FD.ownership_resyncs)).toBe(0);

      // The channel drops; flows are created before it is back.
      a.mesh.peer(2)!.close();
      open(a, 10, 30);
      a.mesh.flush();
      expect(a.h.counters.get(FD.ownership_unsent_records)).toBe(40);
      expect(a.mesh.peersToResync).toEqual([2]);
      await net.runUntil(() => knowsAll(b, 1, 0, 30));
      expect(a.h.counters.get(FD.ownership_resyncs)).toBe(1);
      expect(a.h.counters.get(FD.ownership_resync_records)).toBe(60); // both directions of all 30
      expect(a.mesh.peersToResync).toEqual([]);
    });

    it('a peer that was unreachable for a while is resynced when it comes back, and later broadcasts follow in order', async () => {
      net = new Net();
      const a = await net.node(1);
      let b = await net.node(2);
      net.mesh();
      await net.runUntil(() => a.mesh.peer(2) !== null);
      // b goes away (its listener and connections), a keeps creating flows.
      await b.mesh.stop();
      net.nodes.splice(net.nodes.indexOf(b), 1);
      a.mesh.peer(2)!.close(); // the connection breaks with it (memory connections outlive their listener)
      open(a, 0, 20);
      a.mesh.flush();
      await net.runUntil(() => a.h.counters.get(FD.ownership_unsent_batches) > 0);
      const failures = a.mesh.counters.snapshot()['peer_connect_failures']!;
      await net.runUntil(() => a.mesh.counters.snapshot()['peer_connect_failures']! > failures); // still trying
      // b is back at the same address (a new process: empty table).
      b = await net.node(2);
      await net.runUntil(() => knowsAll(b, 1, 0, 20));
      expect(a.h.counters.get(FD.ownership_resyncs)).toBe(1);
      open(a, 20, 25);
      await net.runUntil(() => knowsAll(b, 1, 0, 25));
    });

    it('a joiner sync shares a resync already running on the same channel', async () => {
      net = new Net();
      const a = await net.node(1);
      const b = await net.node(2);
      open(a, 0, 5);
      net.mesh(); // the broadcast above went nowhere: b is marked
      a.mesh.flush();
      const sent0 = a.h.counters.get(FD.ownership_batches_acked);
      const records = await net.drive(syncOwnershipTo(1, a.table, a.mesh, 2, b.addr, 1000));
      expect(records).toBe(10);
      await net.runUntil(() => knowsAll(b, 1, 0, 5));
      expect(a.h.counters.get(FD.ownership_batches_acked) - sent0).toBe(1); // one batch, not two
    });
  });

  describe('staged migration copy over peer channels', () => {
    async function setup() {
      net = new Net();
      const a = await net.node(1);
      const b = await net.node(2);
      const c = await net.node(3);
      net.mesh();
      open(a, 0, 50);
      await net.runUntil(() => knowsAll(b, 1, 0, 50) && knowsAll(c, 1, 0, 50));
      a.h.frozen = true; // a's migration holds its slots
      const slots = new Int32Array(a.table.size);
      const n = a.table.slotsOwnedBy(1, slots);
      const records = new Uint8Array(exportedSize(n));
      const count = exportFlowSlots(a.table, slots.subarray(0, n), records, 0, a.h.nowMs);
      const staging = new StagedCopies(a.mesh, 77, 1, a.h.counters, new Map([[2, b.addr], [3, c.addr]]), 1000);
      staging.touch(2);
      const ch = await net.drive(a.mesh.channelTo(2));
      const ack = await net.drive(ch.request(body('migrationChunk', { migrationId: 77, seq: 1, owner: 2, standby: false, count, records, ...staging.chunkFields }), 1000));
      expect(ack.body.case === 'migrationAck' && ack.body.value).toMatchObject({ imported: 100, errorCode: '' });
      return { a, b, c, staging };
    }

    it('abort: the copy never became the inheritor\'s — every flow has one owner, the sender', async () => {
      const { a, b, c, staging } = await setup();
      expect(knowsAll(b, 1, 0, 50)).toBe(true); // stored, as redirects to a
      expect(await net!.drive(staging.abort())).toEqual([]);
      a.h.frozen = false;
      for (const n of [a, b, c]) expect(knowsAll(n, 1, 0, 50)).toBe(true);
      expect(a.h.counters.get(FD.migration_aborts)).toBe(1);
    });

    it('commit hands the flows over; an abort after a failed commit elsewhere hands them back', async () => {
      const { a, b, staging } = await setup();
      const activated = await net!.drive(staging.commit([2]));
      expect(activated.get(2)).toBe(100);
      expect(knowsAll(b, 2, 0, 50)).toBe(true);
      // Another primary (3) was sent a chunk that it does not hold (lost, or it
      // restarted): its commit fails, the migration aborts.
      staging.touch(3);
      await expect(net!.drive(staging.commit([3]))).rejects.toThrow(/BATON_UNKNOWN_MIGRATION/);
      expect(a.h.counters.get(FD.migration_commit_failures)).toBe(1);
      await net!.drive(staging.abort());
      expect(knowsAll(b, 1, 0, 50)).toBe(true);
      a.h.frozen = false;
      expect(knowsAll(a, 1, 0, 50)).toBe(true);
    });
  });
});
