/**
 * Which hash tier a member sends through (shared/cluster/uplink.ts): its
 * configured tier while that tier's link is up, a live tier when it is down,
 * and back to the configured tier only with a scope update.
 */
import { describe, it, expect } from 'vitest';
import { uplinkOf, uplinkOnLinkChange, type TierLinkState } from '../shared/cluster/uplink.js';
import { parseConfig } from '../shared/config/config.js';
import { Role, MemberStatus, nodeInfo, emptyFlowStats, type ScopeUpdate } from '../shared/control/messages.js';

const cfg = parseConfig({ hashTiers: [{ id: 1, name: 'agg-a' }, { id: 2, name: 'agg-b', dataPort: 6082, controlPort: 7401, metricsPort: 9101 }] });
const tier = (id: number, name: string, data: string, control: string) => ({ node: nodeInfo({ id, name, role: Role.HASH_TIER, dataAddr: data, controlAddr: control }), status: MemberStatus.ACTIVE, inScope: false, stats: emptyFlowStats() });
const update = (b = '127.0.0.1:6082'): ScopeUpdate => ({
  version: 3,
  members: [tier(1, 'agg-a', '127.0.0.1:6081', '127.0.0.1:7400'), tier(2, 'agg-b', b, '127.0.0.1:7401')],
  tableSize: 251,
  hashSeed: 1,
  anchor: [],
});
const links = (a: boolean | undefined, b: boolean | undefined): TierLinkState => (t) => (t.name === 'agg-a' ? a : b);

describe('uplink', () => {
  it('the configured tier while its link is up or unknown (still connecting, or no link kept)', () => {
    expect(uplinkOf(update(), cfg, 'agg-b')!.name).toBe('agg-b');
    expect(uplinkOf(update(), cfg, 'agg-b', links(true, true))!.name).toBe('agg-b');
    expect(uplinkOf(update(), cfg, 'agg-b', links(true, undefined))!.name).toBe('agg-b');
    expect(uplinkOf(update(), cfg, undefined, links(true, true))!.name).toBe('agg-a'); // default: the first configured tier
  });

  it('a live tier when its link is down; the configured one when every link is down', () => {
    expect(uplinkOf(update(), cfg, 'agg-b', links(true, false))!.name).toBe('agg-a');
    expect(uplinkOf(update(), cfg, 'agg-b', links(false, false))!.name).toBe('agg-b');
    const withoutB = { ...update(), members: update().members.slice(0, 1) }; // B's lease ran out
    expect(uplinkOf(withoutB, cfg, 'agg-b', links(true, undefined))!.name).toBe('agg-a');
  });

  it('on a link change: leave the uplink only when its own link went down; no return until a scope update', () => {
    // B (the uplink) went down: move to A.
    expect(uplinkOnLinkChange(update(), cfg, 'agg-b', links(true, false), '127.0.0.1:6082')!.name).toBe('agg-a');
    // A's link went down while the uplink is B: stay.
    expect(uplinkOnLinkChange(update(), cfg, 'agg-b', links(false, true), '127.0.0.1:6082')).toBeNull();
    // On A after a failover, B's link is back: stay on A (B may have restarted on another data address;
    // only the next scope update says where it is).
    expect(uplinkOnLinkChange(update(), cfg, 'agg-b', links(true, true), '127.0.0.1:6081')).toBeNull();
    expect(uplinkOf(update('127.0.0.1:6099'), cfg, 'agg-b', links(true, true))!.dataAddr).toBe('127.0.0.1:6099');
    // No uplink yet: pick one.
    expect(uplinkOnLinkChange(update(), cfg, 'agg-b', links(true, true), null)!.name).toBe('agg-b');
  });
});
