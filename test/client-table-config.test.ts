/**
 * Config clientTable.*: the hash tier's client tables (hash-tier/client-table.ts)
 * are bounded by config: the defaults are the engine's, and bad values are
 * refused at parse naming the field.
 */
import { describe, it, expect } from 'vitest';
import { parseConfig } from '../shared/config/config.js';
import { CLIENT_TABLE_DEFAULTS } from '../hash-tier/forwarding-engine.js';

describe('config clientTable', () => {
  it('defaults are the forwarding engine\'s', () => {
    expect(parseConfig({}).clientTable).toEqual(CLIENT_TABLE_DEFAULTS);
  });

  it('refuses capacities that are not powers of two in 32..2^24, naming the field', () => {
    for (const [field, v] of [['addrCapacity', 100], ['addrCapacity', 16], ['capacity', 1 << 25], ['capacity', 3.5]] as const) {
      expect(() => parseConfig({ clientTable: { [field]: v } }), `${field} ${v}`).toThrow(`clientTable.${field}`);
    }
    expect(() => parseConfig({ clientTable: { idleMs: 0 } })).toThrow('clientTable.idleMs');
    expect(() => parseConfig({ clientTable: { sweepBudget: 0 } })).toThrow('clientTable.sweepBudget');
    expect(() => parseConfig({ clientTable: { lanes: 5 } })).toThrow(/clientTable/);
    expect(parseConfig({ clientTable: { addrCapacity: 32, capacity: 1 << 24 } }).clientTable).toMatchObject({ addrCapacity: 32, capacity: 1 << 24 });
  });
});
