/**
 * One contract for every ClusterStore: the same tests run against
 * - memory: MemoryStore clients sharing one MemoryBackend, on virtual time;
 * - etcd: EtcdStore clients on a private etcd started by test/setup/etcd.ts;
 * - consul: ConsulStore against $CONSUL_HTTP_ADDR (skipped when unset: no
 *   Consul server can be installed here, and none is faked).
 * Each test works in its own cluster namespace, so tests never see each
 * other's keys. Time bounds are derived from the store's TTL granularity.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isBatonError, ErrorCode } from '../shared/errors.js';
import { VirtualScheduler } from '../shared/runtime/scheduler.js';
import { MemoryBackend, MemoryStore } from '../shared/store/memory.js';
import type { ClusterStore, MemberEvent, MemberRecord, ScopeRecord } from '../shared/store/store.js';
import { openStore } from '../shared/store/open.js';
import { ensureEtcd, freePort, type EtcdInstance } from './setup/etcd.js';

interface Harness {
  /** `n` clients of one fresh cluster namespace. */
  clients(n: number): Promise<ClusterStore[]>;
  /** A short TTL the store supports. */
  ttlMs: number;
  /** Resolves once cond() holds; fails the test after limitMs of the store's time. */
  eventually(cond: () => boolean | Promise<boolean>, limitMs: number, what: string): Promise<void>;
  /** A client whose store cannot be reached, and the bound within which calls must reject. */
  unreachable(): Promise<{ store: ClusterStore; boundMs: number }>;
  /** Lets time pass (virtual or real). */
  pass(ms: number): Promise<void>;
}

let clusterSeq = 0;
const nextCluster = () => `t${process.pid}-${Date.now().toString(36)}-${clusterSeq++}`;
const tick = () => new Promise<void>((r) => setImmediate(r));

function memoryHarness(): Harness {
  const sched = new VirtualScheduler();
  const backend = new MemoryBackend(sched);
  return {
    ttlMs: 1000,
    async clients(n) {
      const cluster = nextCluster();
      return Array.from({ length: n }, () => new MemoryStore({ backend, cluster }));
    },
    async eventually(cond, limitMs, what) {
      const end = sched.clock.now() + limitMs;
      for (;;) {
        await tick();
        if (await cond()) return;
        if (sched.clock.now() >= end) throw new Error(`not within ${limitMs} virtual ms: ${what}`);
        sched.runFor(10);
      }
    },
    async unreachable() {
      const s = new MemoryStore({ backend, cluster: nextCluster() });
      await s.close();
      return { store: s, boundMs: 50 };
    },
    async pass(ms) {
      const end = sched.clock.now() + ms;
      while (sched.clock.now() < end) {
        sched.runFor(Math.min(10, end - sched.clock.now()));
        await tick();
      }
    },
  };
}

function realTimeHarness(url: () => string, ttlMs: number): Harness & { opened: ClusterStore[] } {
  const opened: ClusterStore[] = [];
  return {
    opened,
    ttlMs,
    async clients(n) {
      const cluster = nextCluster();
      const out: ClusterStore[] = [];
      for (let i = 0; i < n; i++) out.push(await openStore(url(), { cluster, timeoutMs: 3000 }));
      opened.push(...out);
      return out;
    },
    async eventually(cond, limitMs, what) {
      const end = Date.now() + limitMs;
      for (;;) {
        if (await cond()) return;
        if (Date.now() >= end) throw new Error(`not within ${limitMs} ms: ${what}`);
        await new Promise((r) => setTimeout(r, 20)); // poll interval
      }
    },
    async unreachable() {
      const port = await freePort(); // nothing listens there
      const kind = url().split(':')[0]!;
      const store = await openStore(`${kind}://127.0.0.1:${port}`, { cluster: nextCluster(), timeoutMs: 1000 });
      opened.push(store);
      return { store, boundMs: 3000 };
    },
    async pass(ms) {
      await new Promise((r) => setTimeout(r, ms));
    },
  };
}

const member = (id: number, over: Partial<MemberRecord> = {}): MemberRecord => ({
  id,
  name: `fd-${id}`,
  role: 'fd',
  status: 'JOINING',
  dataAddr: `127.0.0.1:${7000 + id}`,
  controlAddr: `127.0.0.1:${8000 + id}`,
  ...over,
});
const scope = (version: number, members: string[] = ['fd-1', 'fd-2']): ScopeRecord => ({ version, members, tableSize: 65537, hashSeed: 42 });

async function expectCode(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(isBatonError(e, code), `expected ${code}, got ${String(e)}`).toBe(true);
}

function contract(name: string, h: () => Harness): void {
  describe(`ClusterStore contract: ${name}`, () => {
    it('registers, lists and watches members (snapshot first, then changes in order); duplicate ids conflict', async () => {
      const [a, b] = await h().clients(2);
      const l1 = await b!.registerMember(member(1), h().ttlMs);
      const seen: MemberEvent[] = [];
      const unwatch = await a!.watchMembers((ev) => seen.push(ev));
      await h().eventually(() => seen.length === 1, 2000, 'snapshot');
      expect(seen[0]).toEqual({ type: 'put', member: member(1) });
      const l2 = await b!.registerMember(member(2, { role: 'hash', status: 'ACTIVE' }), h().ttlMs);
      await expectCode(a!.registerMember(member(2), h().ttlMs), ErrorCode.STORE_CONFLICT);
      expect((await a!.listMembers()).map((m) => m.id)).toEqual([1, 2]);
      expect(await a!.getMember(2)).toEqual(member(2, { role: 'hash', status: 'ACTIVE' }));
      expect(await a!.getMember(3)).toBeNull();
      await l1.revoke();
      expect(l1.lost).toBe(true);
      await h().eventually(() => seen.length === 3, 2000, 'put 2 and delete 1');
      expect(seen.slice(1)).toEqual([
        { type: 'put', member: member(2, { role: 'hash', status: 'ACTIVE' }) },
        { type: 'delete', member: member(1) },
      ]);
      expect((await b!.listMembers()).map((m) => m.id)).toEqual([2]);
      await unwatch();
      await l2.revoke();
      await h().pass(100);
      expect(seen).toHaveLength(3); // nothing after unwatch
      await expectCode(a!.registerMember({ ...member(5), role: 'bogus' as 'fd' }, 1000), ErrorCode.BAD_ARGUMENT);
    });

    it('a member whose holder dies (no keep-alives) disappears after its TTL; a kept-alive one stays', async () => {
      const [a, b] = await h().clients(2);
      const ttl = h().ttlMs;
      const kept = await a!.registerMember(member(10), ttl);
      await b!.registerMember(member(11), ttl);
      const deleted: number[] = [];
      await a!.watchMembers((ev) => ev.type === 'delete' && deleted.push(ev.member.id));
      await b!.close(); // like a crash: keep-alives stop, nothing is revoked
      await h().eventually(() => deleted.includes(11), 3 * ttl + 2000, 'dead member removed');
      await h().pass(ttl); // the survivor has outlived its TTL at least once by now
      expect((await a!.listMembers()).map((m) => m.id)).toEqual([10]);
      expect(kept.lost).toBe(false);
      await kept.keepAlive();
      await kept.revoke();
      await expectCode(kept.keepAlive(), ErrorCode.STORE_CONFLICT);
    });

    it('setMemberStatus is a compare-and-swap: of concurrent writers exactly one wins; the lease is kept', async () => {
      const cs = await h().clients(4);
      const lease = await cs[0]!.registerMember(member(20), h().ttlMs);
      const results = await Promise.all(cs.map((c) => c.setMemberStatus(20, 'JOINING', 'ACTIVE')));
      expect(results.filter((r) => r)).toHaveLength(1);
      expect((await cs[1]!.getMember(20))?.status).toBe('ACTIVE');
      expect(await cs[1]!.setMemberStatus(20, 'JOINING', 'FAILED')).toBe(false);
      expect(await cs[1]!.setMemberStatus(99, 'JOINING', 'ACTIVE')).toBe(false);
      expect(await cs[2]!.setMemberStatus(20, 'ACTIVE', 'DISENGAGING')).toBe(true);
      await expectCode(cs[2]!.setMemberStatus(20, 'ACTIVE', 'NOPE' as 'ACTIVE'), ErrorCode.BAD_ARGUMENT);
      // Still bound to the member's lease: revoking it removes the updated record.
      await lease.revoke();
      expect(await cs[3]!.getMember(20)).toBeNull();
    });

    it('stores per-member stats bound to the member, merged into listMembers', async () => {
      const [a, b] = await h().clients(2);
      const l = await a!.registerMember(member(30), h().ttlMs);
      await b!.putStats(30, { flows: 1234, pps: 5678, at: 1 });
      await a!.putStats(30, { flows: 1500, pps: 6000, at: 2 });
      expect(await b!.getStats()).toEqual(new Map([[30, { flows: 1500, pps: 6000, at: 2 }]]));
      expect((await b!.listMembers())[0]?.stats).toEqual({ flows: 1500, pps: 6000, at: 2 });
      await expectCode(b!.putStats(31, { flows: 1, pps: 1 }), ErrorCode.UNKNOWN_NODE);
      await expectCode(b!.putStats(30, { flows: -1, pps: 1 }), ErrorCode.BAD_ARGUMENT);
      await l.revoke();
      expect((await b!.getStats()).size).toBe(0);
    });

    it('casScope: of N concurrent writers with the same expected version exactly one wins; versions strictly increase', async () => {
      const cs = await h().clients(5);
      expect(await cs[0]!.getScope()).toBeNull();
      let version = 0;
      for (let round = 0; round < 3; round++) {
        const next = version + 1;
        const results = await Promise.all(cs.map((c, i) => c.casScope(version, scope(next, [`fd-${i}`]))));
        const winners = results.flatMap((r, i) => (r ? [i] : []));
        expect(winners).toHaveLength(1);
        const got = await cs[4]!.getScope();
        expect(got).toEqual(scope(next, [`fd-${winners[0]}`]));
        version = next;
      }
      expect(await cs[0]!.casScope(1, scope(9))).toBe(false); // stale expectation
      expect(await cs[0]!.casScope(0, scope(9))).toBe(false); // exists already
      await expectCode(cs[0]!.casScope(3, scope(3)), ErrorCode.BAD_ARGUMENT); // not increasing
      expect(await cs[0]!.casScope(3, scope(7))).toBe(true); // gaps allowed, only increase required
      expect((await cs[1]!.getScope())?.version).toBe(7);
    });

    it('watchScope delivers the current scope, then every version in order, none missed', async () => {
      const [writer, w1, w2] = await h().clients(3);
      const got1: number[] = [];
      const got2: number[] = [];
      await writer!.casScope(0, scope(1));
      await w1!.watchScope((s) => got1.push(s.version));
      for (let v = 2; v <= 10; v++) expect(await writer!.casScope(v - 1, scope(v, [`fd-${v}`]))).toBe(true);
      await w2!.watchScope((s) => got2.push(s.version));
      for (let v = 11; v <= 20; v++) expect(await writer!.casScope(v - 1, scope(v, [`fd-${v}`]))).toBe(true);
      await h().eventually(() => got1.length >= 20 && got2.length >= 11, 5000, 'all versions delivered');
      await h().pass(50);
      expect(got1).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      // w2 started somewhere after version 10 was written: current first, then each later one.
      expect(got2[0]).toBe(10);
      expect(got2).toEqual(Array.from({ length: 11 }, (_, i) => i + 10));
    });

    it('leader election: one leader; the next takes over on resign and when the leader dies', async () => {
      const [a, b, c, d] = await h().clients(4);
      const ttl = h().ttlMs;
      expect(await d!.leader()).toBeNull();
      const la = await a!.campaign('mgr-a', ttl);
      expect(await d!.leader()).toBe('mgr-a');
      // b and c queue up; which of them is next depends on whose key the store created first.
      const elected: string[] = [];
      const pending = [b!.campaign('mgr-b', ttl), c!.campaign('mgr-c', ttl)].map((p) =>
        p.then((l) => {
          elected.push(l.candidate);
          return l;
        }),
      );
      for (const p of pending) p.catch(() => undefined); // rejected by close() at teardown if still waiting
      await h().pass(Math.min(ttl, 300));
      expect(elected).toEqual([]);
      expect(await d!.leader()).toBe('mgr-a');
      await la.resign();
      expect(la.lost).toBe(true);
      await h().eventually(() => elected.length === 1, 3000, 'next candidate elected after a resigned');
      expect(await d!.leader()).toBe(elected[0]);
      const [second, third] = elected[0] === 'mgr-b' ? [b!, c!] : [c!, b!];
      const lSecond = await pending[second === b ? 0 : 1]!;
      expect(lSecond.lost).toBe(false);
      await h().pass(Math.min(ttl, 300));
      expect(elected).toHaveLength(1); // the third still waits
      await second.close(); // the leader dies: its lease expires, the third takes over
      await h().eventually(() => elected.length === 2, 3 * ttl + 2000, 'third elected after the leader died');
      expect(elected[1]).toBe(third === b ? 'mgr-b' : 'mgr-c');
      expect(await d!.leader()).toBe(elected[1]);
      await (await pending[third === b ? 0 : 1]!).resign();
      await h().eventually(async () => (await d!.leader()) === null, 2000, 'no leader left');
    });

    it('an aborted campaign is withdrawn', async () => {
      const [a, b, d] = await h().clients(3);
      const la = await a!.campaign('mgr-a', h().ttlMs);
      const ac = new AbortController();
      const pb = b!.campaign('mgr-b', h().ttlMs, { signal: ac.signal });
      await h().pass(50);
      ac.abort();
      await expectCode(pb, ErrorCode.BAD_ARGUMENT);
      await la.resign();
      await h().eventually(async () => (await d!.leader()) === null, 2000, 'aborted candidate is not elected');
    });

    it('an unreachable store rejects every call with STORE_UNAVAILABLE within a bounded time', async () => {
      const { store, boundMs } = await h().unreachable();
      const calls: [string, () => Promise<unknown>][] = [
        ['listMembers', () => store.listMembers()],
        ['registerMember', () => store.registerMember(member(1), h().ttlMs)],
        ['casScope', () => store.casScope(0, scope(1))],
        ['getScope', () => store.getScope()],
        ['leader', () => store.leader()],
        ['campaign', () => store.campaign('x', h().ttlMs)],
        ['watchScope', () => store.watchScope(() => undefined)],
      ];
      for (const [what, call] of calls) {
        const t0 = Date.now();
        await expectCode(call(), ErrorCode.STORE_UNAVAILABLE);
        expect(Date.now() - t0, what).toBeLessThan(boundMs);
      }
      await store.close();
    });
  });
}

// ---------------------------------------------------------------- memory (always)
{
  let mem: Harness | undefined;
  contract('memory (virtual time)', () => (mem ??= memoryHarness()));
}

// ---------------------------------------------------------------- etcd (a private instance)
{
  let etcd: EtcdInstance | undefined;
  const harness = realTimeHarness(() => etcd!.url, 1000);
  describe('etcd', () => {
    beforeAll(async () => {
      etcd = await ensureEtcd();
    }, 15 * 60_000); // may include apt-get install
    afterAll(async () => {
      await Promise.all(harness.opened.map((s) => s.close().catch(() => undefined)));
      await etcd?.stop();
    });
    contract('etcd', () => harness);
  });
}

// ---------------------------------------------------------------- consul (only with a real agent)
{
  const addr = process.env.CONSUL_HTTP_ADDR;
  const harness = realTimeHarness(() => `consul://${(addr ?? '').replace(/^https?:\/\//, '')}`, 10_000);
  describe.skipIf(!addr)('consul (set CONSUL_HTTP_ADDR=host:port of a Consul agent to run; no Consul server is installable here)', () => {
    afterAll(async () => {
      await Promise.all(harness.opened.map((s) => s.close().catch(() => undefined)));
    });
    contract('consul', () => harness);
  });
}
