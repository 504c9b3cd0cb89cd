/**
 * The set of live hash tiers is part of the scope members receive (they pick
 * their uplink from it), and members apply only a newer version. So a change
 * of that set — a tier that died, or came back on another data address — is
 * a new scope version (the leader's), and a manager that takes over publishes
 * under a new version too.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { Registry } from '../migration-manager/registry.js';
import { MGR } from '../migration-manager/counters.js';
import { MemberStatus, Role, nodeInfo, type ScopeUpdate } from '../shared/control/messages.js';
import { InMemoryCluster } from '../simulations/in-memory-cluster.js';
import { HashTierNode } from '../nodes/hash-tier-node.js';
import { MemoryStore } from '../shared/store/memory.js';
import { FDP } from '../distributor/fd-dataplane.js';
import { formatAddress } from '../shared/io/address.js';

const SELF = nodeInfo({ id: 1, name: 'agg-a', role: Role.HASH_TIER, dataAddr: '127.0.0.1:1000', controlAddr: '127.0.0.1:2000' });
const tierB = (data = '127.0.0.1:1001', control = '127.0.0.1:2001') => nodeInfo({ id: 2, name: 'agg-b', role: Role.HASH_TIER, dataAddr: data, controlAddr: control });
const tiersIn = (u: ScopeUpdate) => u.members.filter((m) => m.node.role === Role.HASH_TIER).map((m) => `${m.node.name}@${m.node.dataAddr}`);

describe('Registry: the hash tiers in the scope', () => {
  it('a changed set of tiers is a new version; the same set again is not; a follower (bump false) keeps the list without a new version', () => {
    const r = new Registry(SELF, 65537, 7);
    r.register(nodeInfo({ id: 11, name: 'fd-1', role: Role.FD }), 0);
    r.setStatus(11, MemberStatus.ACTIVE, 'synced', 0);
    const v0 = r.scopeVersion;

    expect(r.setTiers([SELF, tierB()])).toBe(true); // the tier's own entry is left out
    expect(r.scopeVersion).toBe(v0 + 1);
    expect(tiersIn(r.scopeUpdate())).toEqual(['agg-a@127.0.0.1:1000', 'agg-b@127.0.0.1:1001']);
    expect(r.currentScope!.members).toEqual(['fd-1']); // the hash scope itself is unchanged
    expect(r.currentScope!.version).toBe(v0 + 1);

    expect(r.setTiers([tierB(), SELF])).toBe(false); // same set, another order
    expect(r.scopeVersion).toBe(v0 + 1);

    expect(r.setTiers([tierB('127.0.0.1:1777')])).toBe(true); // came back on another data address
    expect(r.scopeVersion).toBe(v0 + 2);
    expect(tiersIn(r.scopeUpdate())).toContain('agg-b@127.0.0.1:1777');

    expect(r.setTiers([])).toBe(true); // gone
    expect(r.scopeVersion).toBe(v0 + 3);
    expect(tiersIn(r.scopeUpdate())).toEqual(['agg-a@127.0.0.1:1000']);

    expect(r.setTiers([tierB()], false)).toBe(true);
    expect(r.scopeVersion).toBe(v0 + 3);
    expect(tiersIn(r.scopeUpdate())).toContain('agg-b@127.0.0.1:1001');
  });

  it('bump(): a new version of the same view, anchor kept', () => {
    const r = new Registry(SELF, 65537, 7);
    for (const i of [1, 2, 3]) {
      r.register(nodeInfo({ id: 10 + i, name: `fd-${i}`, role: Role.FD }), 0);
      r.setStatus(10 + i, MemberStatus.ACTIVE, 'synced', 0);
    }
    r.setStatus(12, MemberStatus.DISENGAGING, 'disengage', 1);
    r.setStatus(12, MemberStatus.DISENGAGED, 'done', 2);
    const before = r.currentScope!;
    const anchor = [...r.scopeAnchor()];
    r.bump();
    expect(r.scopeVersion).toBe(before.version + 1);
    expect(r.scopeAnchor()).toEqual(anchor);
    expect(Array.from(r.currentScope!.table)).toEqual(Array.from(before.table));
  });
});

const config = {
  hashTiers: [
    { id: 1, name: 'agg-a', controlPort: 0 },
    { id: 2, name: 'agg-b', controlPort: 0 },
  ],
  fds: [1, 2].map((i) => ({ id: 10 + i, name: `fd-${i}`, uplink: i === 2 ? 'agg-b' : 'agg-a' })),
  services: [1].map((i) => ({ id: 20 + i, name: `svc-${i}`, virtualIp: `10.1.0.${i}` })),
  store: { ttlMs: 1000 },
  control: { heartbeatMs: 50, deadAfterMs: 2000 },
  log: { level: 'error' },
};

describe('members learn a change of the hash tiers (in memory, two tiers)', () => {
  let c: InMemoryCluster | null = null;
  let extra: HashTierNode | null = null;
  afterEach(async () => {
    if (extra && c) await c.drive(extra.stop());
    extra = null;
    await c?.stop();
    c = null;
  });

  it('a tier dies: every member gets a newer version without it; it comes back on a new data address: every member gets it, and an FD whose uplink it is goes back to it', async () => {
    c = new InMemoryCluster(config);
    await c.start();
    const [a, b] = c.hashTiers;
    const members = () => [...c!.fds.map((f) => f.agent), ...c!.services.map((s) => s.agent)];
    const fd2 = c.fds[1]!;
    const bData = formatAddress(b!.engine.dp.socket.address);
    expect(fd2.dataplane.uplink && formatAddress(fd2.dataplane.uplink)).toBe(bData);

    await c.drive(b!.crash());
    // fd-2 leaves B as soon as its link to B closes; the store notices B's lease ran out later.
    const v0 = a!.manager.registry.scopeVersion;
    const gone = () => members().every((m) => m.lastScope !== null && !tiersIn(m.lastScope).some((t) => t.startsWith('agg-b@')));
    expect(await c.runUntil(gone, 5000)).toBe(true);
    expect(a!.manager.registry.scopeVersion).toBeGreaterThan(v0);
    for (const m of members()) expect(m.scopeVersion).toBe(a!.manager.registry.scopeVersion);
    expect(a!.manager.counters.get(MGR.tier_changes)).toBeGreaterThanOrEqual(1);
    expect(formatAddress(fd2.dataplane.uplink!)).toBe(formatAddress(a!.engine.dp.socket.address));

    // B restarts: same name and id, a new data address (ephemeral port), on the same store.
    const store = new MemoryStore({ backend: (b!.store as MemoryStore).backend, scheduler: c.scheduler });
    extra = new HashTierNode(c.cfg, c.io, 'agg-b', store);
    await c.drive(extra.start());
    const newData = formatAddress(extra.engine.dp.socket.address);
    expect(newData).not.toBe(bData);
    const back = () => members().every((m) => m.lastScope !== null && tiersIn(m.lastScope).includes(`agg-b@${newData}`));
    expect(await c.runUntil(back, 5000)).toBe(true);
    // fd-2's configured uplink is B: it goes back, to the new address, with that update.
    expect(await c.runUntil(() => formatAddress(fd2.dataplane.uplink!) === newData, 1000)).toBe(true);
    expect(fd2.dataplane.counters.get(FDP.uplink_changes)).toBe(2);
  });

  it('the leader dies: the tier that takes over publishes a newer version, without the old leader', async () => {
    c = new InMemoryCluster(config);
    await c.start();
    const [a, b] = c.hashTiers;
    const before = a!.manager.registry.scopeVersion;
    await c.drive(a!.crash());
    expect(await c.runUntil(() => b!.manager.isLeader, 10_000)).toBe(true);
    const gone = () => c!.fds.every((f) => f.agent.lastScope !== null && f.agent.scopeVersion > before && !tiersIn(f.agent.lastScope).some((t) => t.startsWith('agg-a@')));
    expect(await c.runUntil(gone, 5000)).toBe(true);
    for (const f of c.fds) expect(tiersIn(f.agent.lastScope!)).toEqual([`agg-b@${formatAddress(b!.engine.dp.socket.address)}`]);
  });
});
