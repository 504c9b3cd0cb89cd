/**
 * MemoryStore specifics on virtual time: lost events when keep-alives stop
 * arriving (a partitioned client), exact TTL timing, and re-entrant writes
 * from watch callbacks keeping every watcher's order.
 */
import { describe, expect, it } from 'vitest';
import { ErrorCode, isBatonError, type BatonError } from '../shared/errors.js';
import { VirtualScheduler } from '../shared/runtime/scheduler.js';
import { MemoryBackend, MemoryStore } from '../shared/store/memory.js';
import type { MemberRecord, ScopeRecord } from '../shared/store/store.js';

const member = (id: number): MemberRecord => ({ id, name: `fd-${id}`, role: 'fd', status: 'ACTIVE', dataAddr: 'a', controlAddr: 'c' });
const scope = (version: number): ScopeRecord => ({ version, members: [], tableSize: 7, hashSeed: 1 });
const tick = () => new Promise<void>((r) => setImmediate(r));

function setup() {
  const sched = new VirtualScheduler();
  const backend = new MemoryBackend(sched);
  return { sched, a: new MemoryStore({ backend }), b: new MemoryStore({ backend }) };
}

describe('MemoryStore on virtual time', () => {
  it('a partitioned member lease expires exactly one TTL after its last keep-alive and fires onLost once', async () => {
    const { sched, a, b } = setup();
    const lease = await a.registerMember(member(1), 900);
    const lost: BatonError[] = [];
    lease.onLost((e) => lost.push(e));
    sched.runFor(5000); // keep-alives every 300 ms hold it
    expect(lost).toHaveLength(0);
    expect((await b.listMembers()).length).toBe(1);
    a.setPartitioned(true); // at t=5000; last keep-alive reached the store at t=4800
    await expect(a.listMembers()).rejects.toMatchObject({ code: ErrorCode.STORE_UNAVAILABLE });
    sched.runUntil(5699);
    expect((await b.listMembers()).length).toBe(1);
    sched.runUntil(5700);
    expect((await b.listMembers()).length).toBe(0);
    expect(lost).toHaveLength(1);
    expect(isBatonError(lost[0], ErrorCode.STORE_UNAVAILABLE)).toBe(true);
    expect(lease.lost).toBe(true);
    a.setPartitioned(false);
    await expect(lease.keepAlive()).rejects.toMatchObject({ code: ErrorCode.STORE_CONFLICT });
    const late: BatonError[] = [];
    lease.onLost((e) => late.push(e)); // registered after the fact: told at once
    expect(late).toHaveLength(1);
  });

  it('a partitioned leader loses leadership (onLost) and the next candidate is elected', async () => {
    const { sched, a, b } = setup();
    const la = await a.campaign('a', 1000);
    const lost: BatonError[] = [];
    la.onLost((e) => lost.push(e));
    let bElected = false;
    const pb = b.campaign('b', 1000).then((l) => ((bElected = true), l));
    await tick();
    a.setPartitioned(true);
    sched.runFor(999);
    await tick();
    expect(bElected).toBe(false);
    sched.runFor(1000);
    await tick();
    expect(lost).toHaveLength(1);
    expect(la.lost).toBe(true);
    expect(bElected).toBe(true);
    expect(await b.leader()).toBe('b');
    await (await pb).resign();
  });

  it('a campaign waiting while its lease is lost rejects STORE_UNAVAILABLE', async () => {
    const { sched, a, b } = setup();
    await a.campaign('a', 1000);
    const pb = b.campaign('b', 1000);
    b.setPartitioned(true);
    sched.runFor(2000);
    await expect(pb).rejects.toMatchObject({ code: ErrorCode.STORE_UNAVAILABLE });
    expect(await a.leader()).toBe('a');
  });

  it('a watcher that writes from its callback does not reorder what other watchers see', async () => {
    const { a, b } = setup();
    const first: number[] = [];
    const second: number[] = [];
    await a.watchScope((s) => {
      first.push(s.version);
      if (s.version < 5) void a.casScope(s.version, scope(s.version + 1)); // chain reaction
    });
    await b.watchScope((s) => second.push(s.version));
    expect(await b.casScope(0, scope(1))).toBe(true);
    await tick();
    expect(first).toEqual([1, 2, 3, 4, 5]);
    expect(second).toEqual([1, 2, 3, 4, 5]);
  });

  it('a watch callback that throws is reported and does not stop delivery', async () => {
    const errors: unknown[] = [];
    const store = new MemoryStore({ scheduler: new VirtualScheduler(), onError: (e) => errors.push(e) });
    const got: number[] = [];
    await store.watchScope((s) => {
      got.push(s.version);
      throw new Error('boom');
    });
    await store.casScope(0, scope(1));
    await store.casScope(1, scope(2));
    expect(got).toEqual([1, 2]);
    expect(errors).toHaveLength(2);
  });
});
