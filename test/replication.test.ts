/**
 * Flow-state replication (distributor/replication.ts, replica-store.ts) over
 * real control channels (in memory, virtual time): what a backup holds is
 * what the owner has — created, state changes, removals — through gaps, a
 * full change ring and refused senders; and a promotion makes the backup
 * forward the dead owner's connections with their own rewrite targets.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { VirtualScheduler } from '../shared/runtime/scheduler.js';
import { MemoryMessageNet } from '../shared/io/stream.js';
import { FlowHandler, Verdict } from '../distributor/flow-handler.js';
import { FlowTable, FlowFlag } from '../distributor/flow-table.js';
import { HashRewritePolicy } from '../distributor/service-policy.js';
import { OwnershipMesh } from '../distributor/ownership-mesh.js';
import { ReplicationSender, REPL } from '../distributor/replication.js';
import { ReplicaStore, REPLICA } from '../distributor/replica-store.js';
import { FD } from '../distributor/fd-counters.js';
import { scopeWithIds } from '../shared/scope/hash-scope.js';
import { buildPacket } from '../shared/packet/build.js';
import { ipv4ToInt, IPPROTO_TCP, TCP_SYN, TCP_ACK, TCP_FIN, TCP_RST } from '../shared/packet/meta.js';
import { formatAddress } from '../shared/io/address.js';
import { body } from '../shared/control/messages.js';
import { ErrorCode } from '../shared/errors.js';

const VIP = ipv4ToInt('198.51.100.1');
const BACKENDS = [1, 2, 3].map((i) => ({ ip: ipv4ToInt(`10.1.0.${i}`), port: 8080 }));
const settle = () => new Promise<void>((r) => setImmediate(r));

interface Fd {
  id: number;
  table: FlowTable;
  h: FlowHandler;
  mesh: OwnershipMesh;
  repl: ReplicationSender;
  store: ReplicaStore;
  addr: string;
}

class Net {
  readonly sched = new VirtualScheduler(1000);
  readonly messages = new MemoryMessageNet(this.sched);
  readonly fds: Fd[] = [];
  async runUntil(cond: () => boolean, limitMs = 5000): Promise<void> {
    const end = this.sched.clock.now() + limitMs;
    for (;;) {
      await settle();
      for (const f of this.fds) f.h.tick();
      if (cond()) return;
      if (this.sched.clock.now() >= end) throw new Error(`not within ${limitMs} ms of virtual time`);
      this.sched.runFor(1);
    }
  }
  async fd(id: number, opts: { maxPendingChanges?: number; maxReplicas?: number } = {}): Promise<Fd> {
    const table = new FlowTable(4096, { seed: 7 });
    const h = new FlowHandler({ selfId: id, table, policy: new HashRewritePolicy(BACKENDS), clock: this.sched.clock, lingerMs: 100, idleMs: 1e9 });
    const mesh = new OwnershipMesh(id, h, this.messages, this.sched, 1, { requestTimeoutMs: 2000 });
    h.setOwnershipSink(mesh);
    const store = new ReplicaStore(opts.maxReplicas ?? 4096, 7);
    const repl = new ReplicationSender(id, table, (p) => mesh.peer(p), this.sched, {
      lagMs: 5,
      maxPendingChanges: opts.maxPendingChanges ?? 4096,
      maxInFlight: 64,
      resyncEveryMs: 1e9,
      requestTimeoutMs: 2000,
      clientKeyVip: -1,
      symmetric: false,
    });
    h.setReplicationSink(repl);
    mesh.peerRequestHandler = (env) => (env.body.case === 'replicaBatch' ? store.apply(env.body.value, h.nowMs) : undefined);
    const addr = formatAddress(await mesh.start({ host: 'fd', port: 7100 + id }));
    const f = { id, table, h, mesh, repl, store, addr };
    this.fds.push(f);
    return f;
  }
  /** Every FD peers with every other; each replicates over the scope without itself. */
  connect(): void {
    for (const f of this.fds) {
      f.mesh.setPeers(this.fds.map((g) => ({ id: g.id, controlAddr: g.addr })));
      const others = this.fds.filter((g) => g !== f).map((g) => ({ name: `fd-${g.id}`, id: g.id }));
      const { scope, ids } = scopeWithIds(1, others, 251, 0);
      f.repl.setScope(scope, ids, 0);
      f.repl.start();
    }
  }
  async stop(): Promise<void> {
    for (const f of this.fds) {
      f.repl.stop();
      await f.mesh.stop();
    }
  }
}

const client = (i: number) => ipv4ToInt(`192.0.2.${1 + (i % 250)}`);
const pkt = (i: number, flags: number) => buildPacket({ srcIp: client(i), dstIp: VIP, srcPort: 20000 + i, dstPort: 80, proto: IPPROTO_TCP, tcpFlags: flags });
function send(f: Fd, i: number, flags: number): number {
  const p = pkt(i, flags);
  return f.h.handle(p, 0, p.length);
}
/** The replica of connection i's forward entry at `f` (-1: none). */
const replicaSlot = (f: Fd, i: number) => f.store.table.find(client(i), VIP, 20000 + i, 80, IPPROTO_TCP);

describe('flow-state replication', () => {
  let net: Net | null = null;
  afterEach(async () => {
    await net?.stop();
    net = null;
  });

  it('the backup holds both entries of every connection, with rewrite target and state, and forgets removed ones', async () => {
    net = new Net();
    const a = await net.fd(1);
    const b = await net.fd(2);
    net.connect();
    for (let i = 0; i < 50; i++) expect(send(a, i, TCP_SYN)).toBe(Verdict.FORWARD);
    await net.runUntil(() => b.store.size === 100);
    for (let i = 0; i < 50; i++) {
      const s = replicaSlot(b, i);
      const o = a.table.find(client(i), VIP, 20000 + i, 80, IPPROTO_TCP);
      expect(b.store.table.owner(s)).toBe(1);
      expect(b.store.table.rewriteIp(s)).toBe(a.table.rewriteIp(o));
      expect(b.store.table.rewritePort(s)).toBe(a.table.rewritePort(o));
    }
    // A FIN one way: the state travels.
    send(a, 3, TCP_FIN | TCP_ACK);
    await net.runUntil(() => (b.store.table.flags(replicaSlot(b, 3)) & FlowFlag.FIN_SEEN) !== 0);
    // An RST: closing, then removed after the linger, at the owner and the backup.
    send(a, 4, TCP_RST);
    await net.runUntil(() => replicaSlot(b, 4) < 0 && b.store.size === 98);
    expect(a.repl.counters.get(REPL.batches_acked)).toBeGreaterThan(0);
    expect(b.store.counters.get(REPLICA.removals_applied)).toBe(2);
    expect(a.repl.counters.get(REPL.batch_failures) + a.repl.counters.get(REPL.batches_nacked_gap)).toBe(0);
  });

  it('a full change ring falls back to a resync: nothing is missing', async () => {
    net = new Net();
    const a = await net.fd(1, { maxPendingChanges: 64 });
    const b = await net.fd(2);
    net.connect();
    await net.runUntil(() => a.repl.dirtyBackups.length === 0);
    for (let i = 0; i < 200; i++) send(a, i, TCP_SYN);
    expect(a.repl.counters.get(REPL.ring_overflows)).toBe(1);
    await net.runUntil(() => b.store.size === 400);
    expect(a.repl.counters.get(REPL.resyncs)).toBeGreaterThanOrEqual(2);
  });

  it('a gap is refused whole and repaired by a resync; a sender that is not accepted is refused', async () => {
    net = new Net();
    const a = await net.fd(1);
    const b = await net.fd(2);
    net.connect();
    for (let i = 0; i < 10; i++) send(a, i, TCP_SYN);
    await net.runUntil(() => b.store.size === 20);
    const gap = b.store.apply({ owner: 1, seq: 999, reset: false, upserts: new Uint8Array(0), removals: new Uint8Array(0) }, 0);
    expect(gap.case === 'errorReply' && gap.value.code).toBe(ErrorCode.REPLICA_GAP);
    expect(b.store.size).toBe(20); // nothing applied
    b.store.acceptFrom = (id) => id !== 1;
    const refused = b.store.apply({ owner: 1, seq: 1, reset: true, upserts: new Uint8Array(0), removals: new Uint8Array(0) }, 0);
    expect(refused.case === 'errorReply' && refused.value.code).toBe(ErrorCode.REPLICA_REFUSED);
    expect(b.store.size).toBe(20);
    b.store.acceptFrom = () => true;
    // A garbage removal length is refused, not thrown.
    const bad = b.store.apply({ owner: 1, seq: 1, reset: true, upserts: new Uint8Array(0), removals: new Uint8Array(5) }, 0);
    expect(bad.case).toBe('errorReply');
    // A gap seen by the stream's own next batch makes the owner resync.
    // The backup's copy is lost and its stream moved on (as if batches of another stream had arrived).
    b.store.apply({ owner: 1, seq: 1, reset: true, upserts: new Uint8Array(0), removals: new Uint8Array(0) }, 0);
    b.store.apply({ owner: 1, seq: 2, reset: false, upserts: new Uint8Array(0), removals: new Uint8Array(0) }, 0);
    expect(b.store.size).toBe(0);
    send(a, 10, TCP_SYN);
    await net.runUntil(() => b.store.size === 22);
    expect(a.repl.counters.get(REPL.batches_nacked_gap)).toBe(1);
    expect(body('pong', {}).case).toBe('pong');
  });

  it('promotion: the backup forwards the dead owner\'s connections to the same backends and says it owns them', async () => {
    net = new Net();
    const a = await net.fd(1);
    const b = await net.fd(2);
    const c = await net.fd(3);
    net.connect();
    for (let i = 0; i < 60; i++) send(a, i, TCP_SYN);
    await net.runUntil(() => b.store.heldFrom(1) + c.store.heldFrom(1) === 120 && b.table.size === 120 && c.table.size === 120);
    const before = Array.from({ length: 60 }, (_, i) => a.table.rewriteIp(a.table.find(client(i), VIP, 20000 + i, 80, IPPROTO_TCP)));
    // fd-1 dies. Each backup promotes what it holds; the other learns the new owners from the broadcast.
    a.repl.stop();
    await a.mesh.stop();
    for (const f of [b, c]) {
      f.h.setFailed([1]);
      f.mesh.refuseFrom = (id) => id === 1;
    }
    const nb = b.store.promote(1, b.h, b.mesh);
    const nc = c.store.promote(1, c.h, c.mesh);
    expect(nb + nc).toBe(120);
    expect(nb).toBeGreaterThan(0);
    expect(nc).toBeGreaterThan(0);
    b.mesh.flush();
    c.mesh.flush();
    await net.runUntil(() => {
      for (let i = 0; i < 60; i++) {
        const owners = [b, c].map((f) => f.table.owner(f.table.find(client(i), VIP, 20000 + i, 80, IPPROTO_TCP)));
        if (owners[0] !== owners[1] || owners[0] === 1) return false;
      }
      return true;
    });
    for (let i = 0; i < 60; i++) {
      const owner = [b, c].find((f) => f.table.owner(f.table.find(client(i), VIP, 20000 + i, 80, IPPROTO_TCP)) === f.id)!;
      expect(send(owner, i, TCP_ACK)).toBe(Verdict.FORWARD);
      expect(owner.h.meta.dstIp >>> 0).toBe(before[i]); // rewritten to the backend the connection had
    }
    expect(b.h.counters.get(FD.drop_owner_failed) + c.h.counters.get(FD.drop_owner_failed)).toBe(0);
    expect(b.store.heldFrom(1) + c.store.heldFrom(1)).toBe(0);
  });

  it('the second line: a dead owner\'s connection with no replica is re-created by the pure policy, to the same backend', async () => {
    net = new Net();
    const a = await net.fd(1);
    const b = await net.fd(2);
    net.connect();
    b.repl.stop();
    send(a, 7, TCP_SYN);
    await net.runUntil(() => b.table.size === 2);
    const backend = a.table.rewriteIp(a.table.find(client(7), VIP, 20007, 80, IPPROTO_TCP));
    b.store.drop(1); // no replica here
    b.h.setFailed([1]);
    expect(send(b, 7, TCP_ACK)).toBe(Verdict.FORWARD);
    expect(b.h.meta.dstIp >>> 0).toBe(backend);
    expect(b.h.counters.get(FD.flows_recreated_stateless)).toBe(1);
  });
});
