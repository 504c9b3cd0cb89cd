/**
 * The etcd store across a store outage: etcd SIGKILLed under live clients
 * and started again on its data (what test/store-contract.test.ts cannot
 * do: there the store never goes away). While it is away the clients'
 * leases are lost to them, but etcd keeps them and, on restart, gives every
 * lease a fresh TTL — so the old election and member keys would stay ahead
 * of the clients' new ones (docs/store.md, "After a store outage").
 *
 * Bounds are ratios of the TTL (1 s, etcd's unit), not absolute times.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode, isBatonError } from '../shared/errors.js';
import type { ClusterStore, Leadership, MemberRecord } from '../shared/store/store.js';
import { openStore } from '../shared/store/open.js';
import { ensureEtcd, type EtcdInstance } from './setup/etcd.js';

const TTL_MS = 1000;
let etcd: EtcdInstance;
const opened: ClusterStore[] = [];
let seq = 0;

async function clients(n: number): Promise<ClusterStore[]> {
  const cluster = `outage-${process.pid}-${Date.now().toString(36)}-${seq++}`;
  const out: ClusterStore[] = [];
  for (let i = 0; i < n; i++) out.push(await openStore(etcd.url, { cluster, timeoutMs: 1000, onError: () => undefined }));
  opened.push(...out);
  return out;
}

/** Calls fn until it resolves (what a manager does while the store is away: try again), at most limitMs. */
async function untilOk<T>(what: string, fn: () => Promise<T>, limitMs: number): Promise<T> {
  const end = Date.now() + limitMs;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (!isBatonError(e, ErrorCode.STORE_UNAVAILABLE) || Date.now() > end) throw new Error(`${what}: ${String(e)}`);
    }
    await new Promise((r) => setTimeout(r, 20)); // retry interval
  }
}

const member = (id: number): MemberRecord => ({ id, name: `agg-${id}`, role: 'hash', status: 'ACTIVE', dataAddr: `127.0.0.1:${7000 + id}`, controlAddr: `127.0.0.1:${8000 + id}` });

beforeAll(async () => {
  etcd = await ensureEtcd();
}, 15 * 60_000); // may include apt-get install

afterAll(async () => {
  await Promise.all(opened.map((s) => s.close().catch(() => undefined)));
  await etcd?.stop();
});

describe('etcd store across an outage', () => {
  it('leases lost while etcd was away do not hold the election or member ids: a leader within 2 TTLs of its return', async () => {
    const [a, b, obs] = await clients(3);
    const la = await a!.campaign('mgr-a', TTL_MS);
    const aLost = new Promise<void>((r) => la.onLost(() => r()));
    const mLease = await a!.registerMember(member(1), TTL_MS);
    const mLost = new Promise<void>((r) => mLease.onLost(() => r()));
    // b waits behind a.
    const bWait = b!.campaign('mgr-b', TTL_MS).then(
      () => 'elected',
      (e: unknown) => (isBatonError(e, ErrorCode.STORE_UNAVAILABLE) ? 'unavailable' : String(e)),
    );
    expect(await obs!.leader()).toBe('mgr-a');

    await etcd.kill();
    // Both clients give their leases up (no keep-alive answered for 2 TTLs).
    await Promise.all([aLost, mLost]);
    expect(la.lost).toBe(true);
    expect(mLease.lost).toBe(true);
    expect(await bWait).toBe('unavailable');

    await etcd.restart();
    const back = Date.now();
    // Neither resigns first: each campaigns again, as soon as its store answers.
    let first: { who: string; ms: number } | null = null;
    const again = (s: ClusterStore, who: string): Promise<Leadership> =>
      untilOk(`campaign of ${who}`, () => s.campaign(who, TTL_MS), 10 * TTL_MS).then((l) => {
        first ??= { who, ms: Date.now() - back };
        return l;
      });
    const pa = again(a!, 'mgr-a2');
    const pb = again(b!, 'mgr-b2');
    const winner = await Promise.race([pa, pb]);
    console.log(`etcd outage: ${first!.who} elected ${first!.ms} ms after etcd was back (${(first!.ms / TTL_MS).toFixed(2)} TTL)`);
    expect(first!.ms).toBeLessThanOrEqual(2 * TTL_MS);
    expect(await obs!.leader()).toBe(winner.candidate);
    // The same member id registers again at once (its dead lease was revoked, not left to expire).
    const t0 = Date.now();
    const m2 = await untilOk('register again', () => a!.registerMember(member(1), TTL_MS), 10 * TTL_MS);
    expect(Date.now() - t0).toBeLessThanOrEqual(TTL_MS);
    expect((await obs!.listMembers()).map((m) => m.id)).toEqual([1]);
    // Resigning the lost leadership is harmless (idempotent) and the other candidate takes over on resign.
    await la.resign();
    await winner.resign();
    const next = await (winner.candidate === 'mgr-a2' ? pb : pa);
    expect(await obs!.leader()).toBe(next.candidate);
    await next.resign();
    await m2.revoke();
    expect(await obs!.leader()).toBeNull();
  }, 60_000);

  it('a leader that resigns its lost leadership while etcd is still away is replaced within 2 TTLs of its return', async () => {
    const [a, b, obs] = await clients(3);
    const la = await a!.campaign('mgr-a', TTL_MS);
    const aLost = new Promise<void>((r) => la.onLost(() => r()));
    const pb0 = b!.campaign('mgr-b', TTL_MS).catch((e: unknown) => e);
    await etcd.kill();
    await aLost;
    // The resign cannot reach etcd now: it rejects, and the lease is revoked as soon as it can be.
    await expect(la.resign()).rejects.toSatisfy((e: unknown) => isBatonError(e, ErrorCode.STORE_UNAVAILABLE));
    expect(isBatonError(await pb0, ErrorCode.STORE_UNAVAILABLE)).toBe(true);
    await etcd.restart();
    const back = Date.now();
    // Only b campaigns again: a's old key must not hold it up (a resigned; a's client revokes
    // the lease the next time it reaches etcd — here, its own read).
    const pb = untilOk('campaign of b', () => b!.campaign('mgr-b2', TTL_MS), 10 * TTL_MS);
    await untilOk('a resigns again', () => la.resign(), 10 * TTL_MS);
    const lb = await pb;
    const ms = Date.now() - back;
    console.log(`etcd outage, resigned while away: mgr-b2 elected ${ms} ms after etcd was back (${(ms / TTL_MS).toFixed(2)} TTL)`);
    expect(ms).toBeLessThanOrEqual(2 * TTL_MS);
    expect(await obs!.leader()).toBe('mgr-b2');
    await lb.resign();
  }, 60_000);
});
