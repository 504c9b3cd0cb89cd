/**
 * The manager's registry keeps the hash scope's anchor: an FD that leaves
 * moves only its buckets, the plan a disengage announces is the table the
 * registry then publishes, and a manager that takes over from the store
 * record builds the same table.
 */
import { describe, expect, it } from 'vitest';
import { Registry } from '../migration-manager/registry.js';
import { MemberStatus, Role, nodeInfo } from '../shared/control/messages.js';
import type { HashScope } from '../shared/scope/hash-scope.js';

const SELF = nodeInfo({ id: 100, name: 'hash-a', role: Role.HASH_TIER });
const M = 65537;

function cluster(n: number, opts: ConstructorParameters<typeof Registry>[3] = {}): Registry {
  const r = new Registry(SELF, M, 7, opts);
  for (let i = 1; i <= n; i++) {
    r.register(nodeInfo({ id: i, name: `fd-${i}`, role: Role.FD }), 0);
    r.setStatus(i, MemberStatus.ACTIVE, 'synced', 0);
  }
  return r;
}

const owners = (s: HashScope) => Array.from(s.table, (i) => s.members[i]!);

function leave(r: Registry, id: number): void {
  r.setStatus(id, MemberStatus.DISENGAGING, 'disengage', 1);
  r.setStatus(id, MemberStatus.DISENGAGED, 'confirmed', 2);
}

describe('Registry anchor', () => {
  it('a disengaged FD stays in the anchor: only its buckets move, and the plan announced in advance is the published table', () => {
    const r = cluster(12);
    const before = r.currentScope!;
    expect(r.scopeAnchor()).toEqual(before.members);
    const plan = r.planWithout('fd-5')!;
    leave(r, 5);
    const after = r.currentScope!;
    expect(after.members).not.toContain('fd-5');
    expect(r.scopeAnchor()).toContain('fd-5');
    expect(owners(after)).toEqual(owners(plan.scope));
    expect(plan.anchor).toEqual(r.scopeAnchor());
    const a = owners(before);
    const b = owners(after);
    for (let i = 0; i < M; i++) if (a[i] !== b[i]) expect(a[i]).toBe('fd-5');
    // The scope update and the store record carry the anchor.
    expect(r.scopeUpdate().anchor).toEqual(r.scopeAnchor());
    expect(r.toRecord().anchor).toEqual(r.scopeAnchor());
  });

  it('an FD that fails and comes back gets exactly its buckets back', () => {
    const r = cluster(6);
    const before = owners(r.currentScope!);
    r.expire(10_000, 1); // every member silent: FAILED
    for (let i = 1; i <= 6; i++) {
      r.disconnected(i);
      r.register(nodeInfo({ id: i, name: `fd-${i}`, role: Role.FD }), 10_001);
      if (i !== 3) r.setStatus(i, MemberStatus.ACTIVE, 'synced', 10_001);
    }
    const without3 = owners(r.currentScope!);
    for (let i = 0; i < M; i++) if (before[i] !== without3[i]) expect(before[i]).toBe('fd-3');
    r.setStatus(3, MemberStatus.ACTIVE, 'synced', 10_002);
    expect(owners(r.currentScope!)).toEqual(before);
  });

  it('a manager that adopts the record builds the same table', () => {
    const r = cluster(10);
    leave(r, 2);
    leave(r, 7);
    const rec = r.toRecord();
    const follower = new Registry(SELF, M, 7);
    follower.adopt(rec, 0);
    expect(follower.scopeVersion).toBe(r.scopeVersion);
    expect(follower.scopeAnchor()).toEqual(r.scopeAnchor());
    expect(owners(follower.currentScope!)).toEqual(owners(r.currentScope!));
    // A record from before anchors: the anchor is its members.
    const old = { ...rec };
    delete old.anchor;
    const f2 = new Registry(SELF, M, 7);
    f2.adopt(old, 0);
    expect(f2.scopeAnchor()).toEqual(rec.members.slice().sort());
  });

  it('rebalances (and says so) once a share would be further off the mean than the bound', () => {
    const events: number[] = [];
    const r = cluster(64, { rebalanceAbovePct: 0.5, onRebalance: (dev) => events.push(dev) });
    for (let id = 1; id <= 16 && events.length === 0; id++) leave(r, id);
    expect(events.length).toBe(1);
    expect(events[0]!).toBeGreaterThan(0.005);
    expect(r.scopeAnchor()).toEqual(r.scopeMembers().slice().sort());
    expect(r.currentScope!.maxShareDeviation()).toBeLessThanOrEqual(0.005);
  });
});

describe('Registry.adopt', () => {
  it("takes the leader's anchor as recorded, whatever its own rebalance bound", () => {
    const leader = cluster(64, { rebalanceAbovePct: 100 });
    for (let id = 1; id <= 16; id++) leave(leader, id);
    expect(leader.currentScope!.maxShareDeviation()).toBeGreaterThan(0.005);
    const strict = new Registry(SELF, M, 7, { rebalanceAbovePct: 0.5, onRebalance: () => expect.fail('a follower must not rebalance') });
    strict.adopt(leader.toRecord(), 0);
    expect(strict.scopeAnchor()).toEqual(leader.scopeAnchor());
    expect(owners(strict.currentScope!)).toEqual(owners(leader.currentScope!));
  });

  it('two FDs leaving together: each one\'s announced scope leaves the other out too (no redirect loop between leavers)', () => {
    const r = cluster(4);
    r.setStatus(4, MemberStatus.DISENGAGING, 'disengage', 1); // fd-4 is leaving (still in scope while it hands over)
    expect(r.scopeMembers()).toContain('fd-4');
    expect(r.planWithout('fd-1')!.scope.members).toEqual(['fd-2', 'fd-3']);
    // Every other FD leaving: the plan falls back to the scope without the target alone.
    r.setStatus(2, MemberStatus.DISENGAGING, 'disengage', 1);
    r.setStatus(3, MemberStatus.DISENGAGING, 'disengage', 1);
    expect(r.planWithout('fd-1')!.scope.members).toEqual(['fd-2', 'fd-3', 'fd-4']);
  });
});
