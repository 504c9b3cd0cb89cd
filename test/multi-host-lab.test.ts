/**
 * Baton's nodes as on separate hosts (issue 13, item 5): each node in a lab
 * namespace of its own (btn-node-1 … btn-node-4, own address on the lab's
 * bridge), talking to each other over that bridge — the multi-host layout
 * the README's configuration describes — in front of the lab's real
 * servers, with real keep-alive HTTP clients through a disengage and an
 * engage. The test process reaches the nodes over the lab's btn-host link.
 *
 * Skipped, with the reason printed, where the lab cannot be built.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Launcher } from '../cli/launcher.js';
import { parseConfig } from '../shared/config/config.js';
import { parseAddress, type Address } from '../shared/io/address.js';
import { fetchStatus, statusRows } from '../cli/status.js';
import { operation, body, disengageRequest } from '../cli/operations-cmd.js';
import { parseMetrics } from '../traffic/loss-books.js';
import { labPreflight, labUp, labDown, clientNs, serverAddress, nodeNs, nodeAddress, spawnProbe, probeResult, readyLine, type Lab } from '../cli/lab.js';
import { waitFor } from './helpers/wait.js';

const VIP = '198.51.100.1';
const VNI = 9;
const why = process.env.BATON_SKIP_LAB ? 'BATON_SKIP_LAB is set' : await labPreflight();
if (why) console.log(`multi-host lab: skipped: ${why}`);

// Node k runs in btn-node-k with address 10.99.0.(10+k): the hash tier is node 1 (and the edge clients tunnel to).
const names = ['agg-a', 'fd-1', 'fd-2', 'fd-3'];
const nsOf = new Map(names.map((n, i) => [n, nodeNs(i + 1)]));
// Each node's metrics on its own address: the test scrapes them from the root namespace (the default is loopback).
const at = (i: number) => ({ host: nodeAddress(i + 1), edgeHost: nodeAddress(i + 1), metricsHost: nodeAddress(i + 1), dataPort: 0, controlPort: 0, metricsPort: 0 });
const cfg = parseConfig({
  cluster: { vni: VNI, vip: VIP, services: [{ port: 80, proto: 'tcp' }] },
  hashTier: { id: 1, name: 'agg-a', ...at(0) },
  fds: [1, 2, 3].map((i) => ({ id: 10 + i, name: `fd-${i}`, ...at(i) })),
  services: [],
  realServers: { endpoints: [1, 2].map((j) => ({ host: serverAddress(j), name: `s${j}` })), health: { port: 80, intervalMs: 200, timeoutMs: 500 } },
  control: { heartbeatMs: 100, deadAfterMs: 3000 },
  log: { level: 'warn' },
});

let lab: Lab | undefined;
let launcher: Launcher | undefined;
let manager: Address;
let runDir = '';


describe.skipIf(why !== null)('Baton nodes in namespaces of their own (as on separate hosts), real clients and servers', () => {
  beforeAll(async () => {
    lab = await labUp({ clients: 1, servers: 2, nodeNamespaces: 4, batonInRoot: true, edge: nodeAddress(1), vips: [VIP], vni: VNI });
    runDir = mkdtempSync(join(tmpdir(), 'baton-multihost-'));
    launcher = new Launcher(cfg, { runDir, readyTimeoutMs: 30_000, netnsOf: (n) => nsOf.get(n) });
    const hash = await launcher.startNode('hash', 'agg-a');
    manager = parseAddress(hash.control!);
    await Promise.all(cfg.fds.map((f) => launcher!.startNode('fd', f.name)));
    await waitFor('3 FDs in scope', async () => statusRows(await fetchStatus(manager)).filter((r) => r.role === 'fd' && r.status === 'ACTIVE' && r.inScope).length === 3);
    await waitFor('both real servers healthy at every FD', async () => {
      let up = 0;
      for (const n of launcher!.nodes.values()) if (n.name.startsWith('fd-')) up += parseMetrics(await (await fetch(n.metrics)).text()).filter((m) => m.name === 'baton_real_server_up' && m.value === 1).length;
      return up === 6;
    });
  }, 120_000);

  afterAll(async () => {
    await launcher?.down();
    if (runDir) rmSync(runDir, { recursive: true, force: true });
    if (lab) await labDown();
  }, 60_000);

  it('each node has its own address; 16 keep-alive HTTP connections cross a disengage and an engage with no error and no reconnect', async () => {
    const rows = statusRows(await fetchStatus(manager));
    const hosts = new Set(rows.map((r) => r.data.split(':')[0]));
    expect(hosts).toEqual(new Set(names.map((_, i) => nodeAddress(i + 1))));
    const probe = spawnProbe(clientNs(1), ['http-keepalive', '--url', `http://${VIP}/bytes/1000`, '--connections', '16', '--rate', '100', '--duration', '8000'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const result = probeResult(probe);
    await readyLine(probe, 'http-keepalive', 30_000);
    const d = await operation(manager, disengageRequest('fd-2', { policy: 'least-flows', timeoutMs: 60_000 }), 120_000, () => {});
    expect(d.case === 'disengageReply' && d.value.ok).toBe(true);
    const e = await operation(manager, body('engageRequest', { target: 'fd-2', timeoutMs: 30_000 }), 120_000, () => {});
    expect(e.case === 'engageReply' && e.value.ok).toBe(true);
    const r = (await result) as { sockets: number; requests: number; ok: number; errors: Record<string, number> };
    console.log(`multi-host lab: nodes at ${[...hosts].join(', ')}; keep-alive clients saw ${JSON.stringify(r)}`);
    expect(r.errors).toEqual({});
    expect(r.ok).toBe(r.requests);
    expect(r.sockets).toBe(16);
  }, 90_000);
});
