/**
 * The disengage's quiet interval and scope-acknowledgement bound are config
 * fields (operations.quietMs, operations.scopeAckTimeoutMs): validated once
 * with a message naming the field, defaulting to the manager's defaults, and
 * wired through the hash tier to the manager that drives disengages.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { parseConfig } from '../shared/config/config.js';
import { isBatonError, ErrorCode } from '../shared/errors.js';
import { DEFAULT_QUIET_MS, DEFAULT_SCOPE_ACK_TIMEOUT_MS } from '../migration-manager/operations.js';
import { InMemoryCluster } from '../simulations/in-memory-cluster.js';

function message(raw: unknown): string {
  try {
    parseConfig(raw);
  } catch (e) {
    expect(isBatonError(e, ErrorCode.CONFIG_INVALID)).toBe(true);
    return (e as Error).message;
  }
  throw new Error('no error');
}

describe('config: operations.quietMs, operations.scopeAckTimeoutMs', () => {
  let c: InMemoryCluster | null = null;
  afterEach(async () => {
    await c?.stop();
    c = null;
  });

  it('default to the manager defaults', () => {
    const cfg = parseConfig({});
    expect(cfg.operations.quietMs).toBe(DEFAULT_QUIET_MS);
    expect(cfg.operations.scopeAckTimeoutMs).toBe(DEFAULT_SCOPE_ACK_TIMEOUT_MS);
    expect(parseConfig({ operations: { quietMs: 250, scopeAckTimeoutMs: 800 } }).operations).toMatchObject({ quietMs: 250, scopeAckTimeoutMs: 800, timeoutMs: 30_000 });
  });

  it.each([
    [{ operations: { quietMs: 0 } }, /operations\.quietMs: .*>=1/],
    [{ operations: { quietMs: 2.5 } }, /operations\.quietMs: .*expected int/],
    [{ operations: { quietMs: 120_000 } }, /operations\.quietMs: .*<=60000/],
    [{ operations: { quietMs: '100' } }, /operations\.quietMs: .*number/],
    [{ operations: { scopeAckTimeoutMs: 10 } }, /operations\.scopeAckTimeoutMs: .*>=100/],
    [{ operations: { scopeAckTimeoutMs: 1e9 } }, /operations\.scopeAckTimeoutMs: .*<=600000/],
  ])('%j is refused naming the field', (raw, re) => {
    expect(message(raw)).toMatch(re);
  });

  it('reach the manager: the FD waits quietMs before DISENGAGED', async () => {
    c = new InMemoryCluster({ operations: { quietMs: 37 } });
    await c.start();
    expect(c.hashTier.manager.ops.quietMs).toBe(37);
    const r = await c.drive(c.hashTier.manager.ops.disengage({ target: 'fd-2' }), 30_000);
    expect(r.ok).toBe(true);
    expect(r.quietMs).toBeGreaterThanOrEqual(37);
    expect(r.quietMs).toBeLessThan(DEFAULT_QUIET_MS);
  });

  it('reach the manager: a member that does not acknowledge fails the disengage after scopeAckTimeoutMs', async () => {
    c = new InMemoryCluster({ operations: { scopeAckTimeoutMs: 300 } });
    await c.start();
    const svc = c.services[0]!;
    const apply = svc.agent.applyScope.bind(svc.agent);
    svc.agent.applyScope = (u) => {
      if (!u.members.find((m) => m.node.name === 'fd-2')!.inScope) throw new Error('svc-1 is wedged');
      apply(u);
    };
    const ops = c.hashTier.manager.ops;
    await expect(c.drive(ops.disengage({ target: 'fd-2' }), 30_000)).rejects.toThrow(/svc-1 .*did not acknowledge it within 300 ms/);
  });
});
