/**
 * A disengage survives its manager: the operator's options (policy, named
 * inheritor, backup, timeout) live in the cluster record next to the
 * DISENGAGING FD, and the manager that takes over resumes with them — not
 * with a default policy. The record also says whether the FD already left
 * the scope (handed over), which a follower and a take-over must honour.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { InMemoryCluster } from '../simulations/in-memory-cluster.js';
import { TrafficGenerator } from '../traffic/generator.js';
import { ControlChannel } from '../shared/control/channel.js';
import { DisengageStage, MemberStatus, Role, nodeInfo, type Body, type DisengageRequest } from '../shared/control/messages.js';
import { disengageRequest } from '../cli/operations-cmd.js';
import { MGR } from '../migration-manager/counters.js';
import { MIG } from '../migration-client/counters.js';
import { Registry } from '../migration-manager/registry.js';
import { checkScope, type DisengageRecord } from '../shared/store/store.js';
import type { Address } from '../shared/io/address.js';

const config = {
  hashTiers: [
    { id: 1, name: 'agg-a', controlPort: 0 },
    { id: 2, name: 'agg-b', controlPort: 0 },
  ],
  fds: [1, 2, 3].map((i) => ({ id: 10 + i, name: `fd-${i}`, uplink: 'agg-b' })),
  services: [1, 2].map((i) => ({ id: 20 + i, name: `svc-${i}`, virtualIp: `10.1.0.${i}`, uplink: 'agg-b' })),
  store: { ttlMs: 1000 },
  control: { heartbeatMs: 50, deadAfterMs: 2000 },
  log: { level: 'error' },
};

async function ask(c: InMemoryCluster, manager: Address, req: Body): Promise<Body> {
  const ch = new ControlChannel(await c.drive(c.messages.connect(manager)), c.scheduler);
  try {
    return (await ch.request(req, 60_000)).body;
  } finally {
    ch.close();
  }
}

describe('a resumed disengage keeps what the operator asked', () => {
  let c: InMemoryCluster | null = null;
  afterEach(async () => {
    await c?.stop();
    c = null;
  });

  it('the leader dies right after telling the FD: the new leader re-asks with the recorded policy, named inheritor and backup', async () => {
    c = new InMemoryCluster(config);
    await c.start();
    const [a, b] = c.hashTiers;
    const fd2 = c.fds[1]!;
    const socket = c.net.bindSync({ host: '127.0.0.1', port: 0 });
    const gen = new TrafficGenerator({ concurrency: 32, totalFlows: 160, packetsPerFlow: 200, udpRatio: 0.5, ratePps: 6000 }, { socket, scheduler: c.scheduler, target: b!.engine.dp.socket.address });
    const done = gen.run();
    await c.runFor(300);

    // The first hand-over request never reaches fd-2's migration client: its
    // leader dies at that moment. What fd-2 is asked afterwards is recorded,
    // with what agg-b's registry (adopted from the store) says about the disengage.
    const seen: { stage: number; policy: string; inheritor: string; backup: string; timeoutMs: number; recorded: DisengageRecord | null }[] = [];
    const real = fd2.migration.disengage.bind(fd2.migration);
    let crashed = false;
    fd2.migration.disengage = (req: DisengageRequest, progress) => {
      seen.push({ stage: req.stage ?? 0, policy: req.policy, inheritor: req.inheritor, backup: req.backup, timeoutMs: req.timeoutMs, recorded: b!.manager.registry.byName('fd-2')!.disengage });
      if (!crashed) {
        crashed = true;
        void a!.crash();
        return new Promise(() => {});
      }
      return real(req, progress);
    };
    const r = await c.drive(ask(c, c.managers[1]!, disengageRequest('fd-2', { policy: 'named', inheritor: 'fd-3', backup: 'fd-1', timeoutMs: 20_000 })), 60_000);
    expect(crashed).toBe(true);
    expect(r.case).toBe('disengageReply');
    if (r.case !== 'disengageReply') return;
    expect(r.value.errorMessage).toBe('');
    expect(r.value.ok).toBe(true);
    expect(b!.manager.isLeader).toBe(true);
    expect(b!.manager.counters.get(MGR.disengages_resumed)).toBe(1);
    expect(b!.manager.counters.get(MGR.disengages_resumed_unrecorded)).toBe(0);
    // Every step the new leader asked carried the operator's options, as the record kept them.
    const resumed = seen.slice(1);
    expect(resumed.map((s) => s.stage)).toEqual([DisengageStage.HAND_OVER, DisengageStage.FINISH]);
    for (const s of resumed) expect([s.policy, s.inheritor, s.backup]).toEqual(['named', 'fd-3', 'fd-1']);
    expect(resumed[0]!.timeoutMs).toBe(20_000); // the operator's bound (FINISH carries what is left of it)
    expect(resumed[0]!.recorded).toMatchObject({ policy: 'named', inheritor: 'fd-3', backup: 'fd-1', timeoutMs: 20_000, outOfScope: false });
    // ... and the migration that ran is the one asked for: everything to fd-3, the named inheritor.
    expect(r.value.policy).toBe('named');
    expect(r.value.shares.map((s) => s.node.name)).toEqual(['fd-3']);
    expect(fd2.migration.counters.get(MIG.disengages_started)).toBe(1);
    expect(b!.manager.registry.byName('fd-2')!.machine.status).toBe(MemberStatus.DISENGAGED);
    expect(b!.manager.registry.byName('fd-2')!.disengage).toBeNull(); // the record is dropped with DISENGAGING
    const rec = await c.drive(b!.store.getScope());
    expect(rec!.nodes!.find((n) => n.name === 'fd-2')!.disengage).toBeUndefined();

    const report = await c.drive(done, 120_000);
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
  });
});

describe('the disengage record in the cluster state', () => {
  const SELF = nodeInfo({ id: 100, name: 'agg-a', role: Role.HASH_TIER });
  const intent: DisengageRecord = { migrationId: 7, policy: 'named', inheritor: 'fd-3', backup: 'fd-1', timeoutMs: 9000, chunkRecords: 64, outOfScope: false };

  function registry(): Registry {
    const r = new Registry(SELF, 65537, 7);
    for (let i = 1; i <= 3; i++) {
      r.register(nodeInfo({ id: i, name: `fd-${i}`, role: Role.FD }), 0);
      r.setStatus(i, MemberStatus.ACTIVE, 'synced', 0);
    }
    return r;
  }

  it('travels with DISENGAGING, says when the FD left the scope, and is gone after', () => {
    const leader = registry();
    leader.setStatus(2, MemberStatus.DISENGAGING, 'disengage #7', 1, intent);
    let rec = checkScope(leader.toRecord()); // what the store keeps (validated)
    expect(rec.members).toEqual(['fd-1', 'fd-2', 'fd-3']);
    expect(rec.nodes!.find((n) => n.id === 2)!.disengage).toEqual(intent);

    const follower = new Registry(nodeInfo({ id: 101, name: 'agg-b', role: Role.HASH_TIER }), 65537, 7);
    follower.adopt(rec, 2);
    expect(follower.get(2)!.disengage).toEqual(intent);
    expect(follower.scopeMembers()).toEqual(['fd-1', 'fd-2', 'fd-3']);

    leader.release(2, 'handed over', 3);
    expect(leader.scopeMembers()).toEqual(['fd-1', 'fd-3']);
    rec = checkScope(leader.toRecord());
    expect(rec.members).toEqual(['fd-1', 'fd-3']);
    expect(rec.nodes!.find((n) => n.id === 2)!.disengage).toEqual({ ...intent, outOfScope: true });
    follower.adopt(rec, 4);
    expect(follower.get(2)!.machine.outOfScope).toBe(true);
    expect(follower.scopeMembers()).toEqual(['fd-1', 'fd-3']); // a follower forwards without it too
    expect(follower.currentScope!.members).toEqual(['fd-1', 'fd-3']);
    // Out of scope: no way back to ACTIVE.
    expect(() => leader.setStatus(2, MemberStatus.ACTIVE, 'timeout', 5)).toThrow(/out of scope, flows handed over/);

    leader.setStatus(2, MemberStatus.DISENGAGED, 'quiet', 6);
    rec = checkScope(leader.toRecord());
    expect(rec.nodes!.find((n) => n.id === 2)!.disengage).toBeUndefined();
    follower.adopt(rec, 7);
    expect(follower.get(2)!.disengage).toBeNull();
    expect(follower.get(2)!.machine.outOfScope).toBe(false);
  });

  it('a record is validated like the rest of the cluster state', () => {
    const r = registry();
    r.setStatus(2, MemberStatus.DISENGAGING, 'disengage', 1, intent);
    const rec = r.toRecord();
    const bad = { ...rec, nodes: rec.nodes!.map((n) => (n.id === 2 ? { ...n, disengage: { ...intent, outOfScope: 'yes' as unknown as boolean } } : n)) };
    expect(() => checkScope(bad)).toThrow(/scope.nodes\[1\].disengage.outOfScope/);
    // A record written before disengages were recorded: a DISENGAGING FD is out of scope iff `members` no longer lists it.
    const old = { ...rec, members: ['fd-1', 'fd-3'], nodes: rec.nodes!.map(({ disengage: _d, ...n }) => n) };
    const f = new Registry(nodeInfo({ id: 101, name: 'agg-b', role: Role.HASH_TIER }), 65537, 7);
    f.adopt(checkScope(old), 2);
    expect(f.get(2)!.machine.outOfScope).toBe(true);
    expect(f.get(2)!.disengage).toBeNull();
  });
});
