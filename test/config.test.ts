import { describe, it, expect } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig, loadConfig, withTopology, checkSharedStore } from '../shared/config/config.js';
import { isBatonError, ErrorCode } from '../shared/errors.js';

function message(raw: unknown): string {
  try {
    parseConfig(raw);
  } catch (e) {
    expect(isBatonError(e, ErrorCode.CONFIG_INVALID)).toBe(true);
    return (e as Error).message;
  }
  throw new Error('no error');
}

describe('config', () => {
  it('defaults describe a local cluster: 1 hash tier, 3 FDs, 4 service nodes', () => {
    const c = parseConfig(undefined);
    expect(c.fds.map((f) => f.name)).toEqual(['fd-1', 'fd-2', 'fd-3']);
    expect(c.services.map((s) => s.virtualIp)).toEqual(['10.1.0.1', '10.1.0.2', '10.1.0.3', '10.1.0.4']);
    expect(c.hashTier.controlPort).toBe(7400);
    expect(c.hash.tableSize).toBe(65537);
  });

  it.each([
    [{ fds: [{ id: 11, name: 'a', dataPort: 70000 }] }, /fds\[0\]\.dataPort: .*65535/],
    [{ hash: { tableSize: 100 } }, /hash\.tableSize: must be a prime number/],
    [{ fds: [{ id: 21, name: 'x' }] }, /id 21 is also used by fds\[0\]/],
    [{ cluster: { vip: '1.2.3' } }, /cluster\.vip: must be a dotted IPv4 address/],
    [{ bogus: 1 }, /Unrecognized key: "bogus"/],
    [{ services: [{ id: 21, name: 's', virtualIp: '10.0.0.1' }, { id: 22, name: 't', virtualIp: '10.0.0.1' }] }, /services\[1\]\.virtualIp: 10\.0\.0\.1 is used twice/],
    [{ fds: [] }, /fds: /],
    [{ log: { level: 'loud' } }, /log\.level/],
    [{ fds: [{ id: 11, name: 'fd-1', uplink: 'agg-z' }] }, /fds\[0\]\.uplink: "agg-z" is not a hash tier \(have agg-a\)/],
    [{ store: { url: 'redis://x:1' } }, /store\.url: .*redis/],
    [{ hashTiers: [{ id: 1, name: 'a' }, { id: 2, name: 'b' }] }, /hashTiers\[1\]\.controlPort: 127\.0\.0\.1:7400 is also a's control address/],
    [{ hashTiers: [{ id: 1, name: 'a', controlPort: 1 }, { id: 11, name: 'b', controlPort: 2 }] }, /id 11 is also used by hashTiers\[1\]|fds\[0\]\.id: id 11 is also used/],
  ])('%j is refused with a message naming the field', (raw, re) => {
    expect(message(raw)).toMatch(re);
  });

  it('flowTable.seed: as given, else a random uint32 fixed at parse (one parsed config, one seed for every FD)', () => {
    expect(parseConfig({ flowTable: { seed: 0xdeadbeef } }).flowTable.seed).toBe(0xdeadbeef);
    const seeds = new Set<number>();
    for (let i = 0; i < 8; i++) {
      const seed = parseConfig({}).flowTable.seed;
      expect(Number.isInteger(seed) && seed >= 0 && seed <= 0xffffffff).toBe(true);
      seeds.add(seed);
    }
    expect(seeds.size).toBeGreaterThan(1); // 8 equal draws of 2^32: 2^-224
    const cfg = parseConfig({});
    expect(parseConfig(JSON.parse(JSON.stringify(cfg))).flowTable.seed).toBe(cfg.flowTable.seed); // as the launcher hands it on
    expect(message({ flowTable: { seed: -1 } })).toMatch(/flowTable\.seed/);
    expect(message({ flowTable: { seed: 2 ** 32 } })).toMatch(/flowTable\.seed/);
  });

  it('reads JSON and YAML files and names the file in errors', () => {
    const dir = mkdtempSync(join(tmpdir(), 'baton-cfg-'));
    writeFileSync(join(dir, 'a.yaml'), 'fds:\n  - { id: 11, name: fd-a }\nflowTable: { maxFlows: 1024 }\n');
    expect(loadConfig(join(dir, 'a.yaml')).fds[0]!.name).toBe('fd-a');
    writeFileSync(join(dir, 'b.json'), '{"flowTable": {"maxFlows": 2}}');
    expect(() => loadConfig(join(dir, 'b.json'))).toThrow(/b\.json invalid: flowTable\.maxFlows/);
    writeFileSync(join(dir, 'c.json'), '{not json');
    expect(() => loadConfig(join(dir, 'c.json'))).toThrow(/c\.json is not valid JSON/);
    expect(() => loadConfig(join(dir, 'missing.yaml'))).toThrow(/cannot read config file/);
  });

  it('hashTiers replaces hashTier; withTopology adds tiers; several tiers need a shared store', () => {
    const two = parseConfig({ hashTiers: [{ id: 1, name: 'agg-a', controlPort: 0 }, { id: 2, name: 'agg-b', controlPort: 0 }], fds: [{ id: 11, name: 'fd-1', uplink: 'agg-b' }] });
    expect(two.hashTier.name).toBe('agg-a');
    expect(two.hashTiers.map((t) => t.name)).toEqual(['agg-a', 'agg-b']);
    expect(() => checkSharedStore(two)).toThrow(/store\.url: 2 hash tiers share their cluster state through etcd or Consul/);
    expect(() => withTopology(parseConfig({}), { tiers: 2 })).toThrow(/store\.url/);
    const up = withTopology(parseConfig({}), { tiers: 2, store: 'etcd://127.0.0.1:2379' });
    expect(up.hashTiers.map((t) => [t.id, t.name, t.controlPort])).toEqual([
      [1, 'agg-a', 7400],
      [2, 'agg-b', 7401],
    ]);
    expect(up.store.url).toBe('etcd://127.0.0.1:2379');
    expect(parseConfig({}).store.url).toBe('embedded');
  });
});
