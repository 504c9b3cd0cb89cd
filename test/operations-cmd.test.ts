/**
 * `baton disengage`'s summary (cli/operations-cmd.ts formatDisengage) shows
 * what the DisengageReply says: the quiet interval, whether the flows were
 * handed over, who acknowledged the scope without the FD and who was not
 * waited for — from a real reply (in-memory cluster, virtual time) and from
 * a failed one.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { InMemoryCluster } from '../simulations/in-memory-cluster.js';
import { formatDisengage } from '../cli/operations-cmd.js';
import { failedReplyOf } from '../migration-client/migration-client.js';
import { BatonError, ErrorCode } from '../shared/errors.js';

describe('baton disengage summary', () => {
  let c: InMemoryCluster | null = null;
  afterEach(async () => {
    await c?.stop();
    c = null;
  });

  it('prints quietMs, handedOver, scopeAcked and scopeSkipped of a real reply', async () => {
    c = new InMemoryCluster();
    await c.start();
    const svc4 = c.services[3]!;
    svc4.agent.stop(); // not connected: not waited for, named in scopeSkipped
    await c.runUntil(() => !c!.hashTier.manager.registry.byName('svc-4')!.connected, 1000);
    const r = await c.drive(c.hashTier.manager.ops.disengage({ target: 'fd-3' }), 30_000);
    expect(r.ok).toBe(true);
    expect(r.scopeAcked.length).toBeGreaterThan(0);
    const text = formatDisengage(r);
    expect(text).toContain(`fd-3 DISENGAGED (migration #${r.migrationId}`);
    expect(text).toContain(`quiet ${r.quietMs.toFixed(1)} ms)`);
    expect(text).toContain('flows handed over: yes');
    expect(text).toContain(`scope v${r.scopeVersion} acknowledged by ${r.scopeAcked.length}: ${r.scopeAcked.join(', ')}; not waited for: svc-4 (not connected)`);
  });

  it('a failed reply says whether the flows were handed over, and the scope acknowledgements when there are any', () => {
    const base = failedReplyOf({ target: 'fd-2', policy: 'spread', migrationId: 7 }, new BatonError(ErrorCode.TIMEOUT, 'fd-2 did not go quiet in time'));
    const before = formatDisengage(base);
    expect(before).toBe('disengage of fd-2 FAILED [BATON_TIMEOUT]: fd-2 did not go quiet in time\n  flows handed over: no');
    const after = formatDisengage({ ...base, handedOver: true, scopeAcked: ['agg-a', 'fd-1'], scopeSkipped: [] });
    expect(after).toContain('flows handed over: yes (they belong to the inheritors; it cannot go back to ACTIVE)');
    expect(after).toContain('scope acknowledged by 2: agg-a, fd-1; not waited for: none');
  });
});
