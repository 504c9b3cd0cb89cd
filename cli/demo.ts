/**
 * `npm start` (`baton up --demo <s>`): the main job, shown.
 *
 * As root, where the lab can be built (cli/lab.ts: network namespaces,
 * VXLAN-GPE, iperf3): the lab and a cluster in front of its real servers;
 * real keep-alive HTTP clients and an iperf3 stream run through Baton while
 * an FD is disengaged live and engaged again; what the clients saw
 * (connections, requests, bytes, resets, retransmissions) is printed next
 * to Baton's own status and drop counters. Elsewhere: Baton's own verified
 * synthetic traffic with the same live disengage and engage, and the loss
 * books; the reason real traffic was not used is printed first.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Launcher } from './launcher.js';
import { attachOrchestrator } from './orchestrator.js';
import { operation, body, disengageRequest, formatDisengage, formatEngage } from './operations-cmd.js';
import { fetchStatus, formatStatus, statusRows } from './status.js';
import { bookedTraffic, settledBooks } from './loss-report.js';
import { installLabTools, labPreflight, labUp, labDown, clientNs, serverAddress, spawnProbe, probeResult, readyLine, inNs, runInNs, BATON_ADDRESS } from './lab.js';
import { parseConfig, type BatonConfig } from '../shared/config/config.js';
import { parseAddress, type Address } from '../shared/io/address.js';
import { formatReport } from '../traffic/report.js';
import { formatLossBooks, parseMetrics } from '../traffic/loss-books.js';
import type { TrafficOptions } from '../traffic/options.js';
import type { Progress } from '../traffic/generator.js';
import type { DisengageReply, EngageReply } from '../shared/control/messages.js';

type Log = (line: string) => void;

/** The cluster of `cfg` put in front of the lab's real servers (edge on the lab bridge, no service nodes). */
export function realTrafficConfig(cfg: BatonConfig, servers = 2): BatonConfig {
  const eph = { dataPort: 0, controlPort: 0, metricsPort: 0 };
  return parseConfig({
    cluster: {
      vni: cfg.cluster.vni,
      vip: cfg.cluster.vip,
      services: [
        { port: 80, proto: 'tcp' },
        { port: 53, proto: 'udp' },
        // iperf3's control and data connections must reach one server: by the client's address.
        { port: 5201, proto: 'tcp', affinity: 'source' },
      ],
    },
    hashTier: { id: cfg.hashTier.id, name: cfg.hashTier.name, edgeHost: BATON_ADDRESS, ...eph },
    fds: cfg.fds.map((f) => ({ id: f.id, name: f.name, edgeHost: BATON_ADDRESS, ...eph })),
    services: [],
    realServers: { endpoints: Array.from({ length: servers }, (_, i) => ({ host: serverAddress(i + 1), name: `s${i + 1}` })), health: { port: 80, intervalMs: 200, timeoutMs: 500 } },
    log: { level: 'warn' },
  });
}

async function ask(manager: Address, req: ReturnType<typeof body>): Promise<ReturnType<typeof body>> {
  return operation(manager, req, 120_000, () => {});
}

/** Disengages `fd` after `atMs`, engages it again after `againMs` more; prints both. */
async function disengageAndEngage(manager: Address, fd: string, atMs: number, againMs: number, log: Log): Promise<boolean> {
  await new Promise((r) => setTimeout(r, atMs));
  log(`\nlive: disengaging ${fd} under traffic…`);
  const d = await ask(manager, disengageRequest(fd, { policy: 'least-flows', timeoutMs: 60_000 }));
  const dOk = d.case === 'disengageReply' && (d.value as DisengageReply).ok;
  if (d.case === 'disengageReply') log(formatDisengage(d.value as DisengageReply));
  await new Promise((r) => setTimeout(r, againMs));
  log(`live: engaging ${fd} again…`);
  const e = await ask(manager, body('engageRequest', { target: fd, timeoutMs: 30_000 }));
  const eOk = e.case === 'engageReply' && (e.value as EngageReply).ok;
  if (e.case === 'engageReply') log(formatEngage(fd, e.value as EngageReply));
  return dOk && eOk;
}

/** Every non-zero drop counter of every running node. */
async function nodeDrops(launcher: Launcher): Promise<string> {
  const out: string[] = [];
  for (const n of launcher.nodes.values()) {
    for (const m of parseMetrics(await (await fetch(n.metrics)).text())) {
      const c = m.labels.counter;
      if (c && c.startsWith('drop_') && m.value > 0) out.push(`${n.name} ${c} ${m.value}`);
    }
  }
  return out.length ? out.join(', ') : 'none';
}

async function nstat(ns: string, names: string[]): Promise<Record<string, number>> {
  const r = await runInNs(ns, 'nstat', ['-az', ...names], { allowFail: true });
  const out: Record<string, number> = {};
  for (const n of names) out[n] = Number(new RegExp(`^${n}\\s+(\\d+)`, 'm').exec(r.stdout)?.[1] ?? 0);
  return out;
}


const TCP_COUNTERS = ['TcpExtTCPTimeouts', 'TcpExtTCPSynRetrans', 'TcpRetransSegs', 'TcpEstabResets', 'TcpOutRsts'];

/** Real clients through a cluster in front of the lab's real servers, with a live disengage and engage. Returns the exit code. */
export async function realDemo(base: BatonConfig, seconds: number, log: Log): Promise<number> {
  const cfg = realTrafficConfig(base);
  const runDir = mkdtempSync(join(tmpdir(), 'baton-demo-'));
  const launcher = new Launcher(cfg, { runDir });
  let code = 1;
  const cleanup = async () => {
    await launcher.down().catch(() => {});
    await labDown().catch(() => {});
    rmSync(runDir, { recursive: true, force: true });
  };
  const onSignal = () => void cleanup().then(() => process.exit(130));
  process.once('SIGINT', onSignal);
  try {
    log('real traffic: building the lab (2 client and 2 server namespaces, VXLAN-GPE tunnels, a Node HTTP server, a UDP service and iperf3 -s on each server)…');
    await labUp({ clients: 2, servers: 2, batonInRoot: true, vips: [cfg.cluster.vip], vni: cfg.cluster.vni });
    log(`real traffic: starting 1 hash tier (edge ${BATON_ADDRESS}:${cfg.edge.vxlanGpePort}) and ${cfg.fds.length} FDs in front of ${cfg.realServers!.endpoints.map((e) => e.host).join(', ')} (logs: ${runDir})`);
    const hash = await launcher.startNode('hash', cfg.hashTier.name);
    const manager = parseAddress(hash.control!);
    await Promise.all(cfg.fds.map((f) => launcher.startNode('fd', f.name)));
    const orch = await attachOrchestrator(launcher, manager);
    const until = Date.now() + 30_000;
    while (statusRows(await fetchStatus(manager)).filter((r) => r.role === 'fd' && r.status === 'ACTIVE' && r.inScope).length < cfg.fds.length || !(await healthy(launcher))) {
      if (Date.now() > until) throw new Error('the FDs did not come up, or the real servers did not pass their health checks, within 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const j of [1, 2]) await fetch(`http://${serverAddress(j)}/reset`);
    const before = { c1: await nstat(clientNs(1), TCP_COUNTERS), c2: await nstat(clientNs(2), TCP_COUNTERS) };
    log(`real traffic: 32 keep-alive HTTP clients (200 requests/s) from ${clientNs(1)} and iperf3 -P 4 from ${clientNs(2)} to ${cfg.cluster.vip} for ${seconds} s`);
    const http = spawnProbe(clientNs(1), ['http-keepalive', '--url', `http://${cfg.cluster.vip}/bytes/4000`, '--connections', '32', '--rate', '200', '--duration', String(seconds * 1000)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const httpResult = probeResult(http);
    await readyLine(http, 'http-keepalive', 30_000);
    const iperf = inNs(clientNs(2), 'iperf3', ['-c', cfg.cluster.vip, '-P', '4', '-t', String(seconds), '-b', '5M', '-J'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let iperfOut = '';
    iperf.stdout!.on('data', (d: Buffer) => (iperfOut += d.toString('utf8')));
    const iperfExit = new Promise<number>((r) => iperf.once('exit', (c) => r(c ?? -1)));
    const live = await disengageAndEngage(manager, 'fd-1', (seconds * 1000) / 3, (seconds * 1000) / 4, log);
    const h = (await httpResult) as { connections?: number; sockets?: number; requests?: number; ok?: number; bytes?: number; errors?: Record<string, number> };
    const ic = await iperfExit;
    let ij: { end?: { sum_sent?: { bytes: number; retransmits?: number }; sum_received?: { bytes: number } }; error?: string } = {};
    try {
      ij = JSON.parse(iperfOut) as typeof ij;
    } catch {
      ij = { error: 'no JSON from iperf3' };
    }
    const after = { c1: await nstat(clientNs(1), TCP_COUNTERS), c2: await nstat(clientNs(2), TCP_COUNTERS) };
    const delta = (k: 'c1' | 'c2') => Object.fromEntries(TCP_COUNTERS.map((n) => [n, after[k][n]! - before[k][n]!]));
    const servers = await Promise.all([1, 2].map(async (j) => (await (await fetch(`http://${serverAddress(j)}/stats`)).json()) as { connections: number; requests: number }));
    log('\n' + formatStatus(await fetchStatus(manager)));
    log('\nwhat the real clients saw:');
    log(`  HTTP keep-alive (${clientNs(1)}): ${h.connections} connections, ${h.sockets} sockets opened (${(h.sockets ?? 0) - (h.connections ?? 0)} reconnects), ${h.requests} requests, ${h.ok} answered 200, ${h.bytes} bytes, errors ${JSON.stringify(h.errors ?? {})}`);
    log(`  servers counted ${servers.map((s, i) => `s${i + 1}: ${s.connections} connections, ${s.requests} requests`).join('; ')}`);
    log(`  iperf3 -P 4 (${clientNs(2)}): exit ${ic}, sent ${ij.end?.sum_sent?.bytes} bytes, received ${ij.end?.sum_received?.bytes} bytes, ${ij.end?.sum_sent?.retransmits ?? '?'} TCP retransmissions${ij.error ? `, error: ${ij.error}` : ''}`);
    log(`  kernel TCP counters during the run: ${clientNs(1)} ${JSON.stringify(delta('c1'))}; ${clientNs(2)} ${JSON.stringify(delta('c2'))}`);
    log(`\nBaton's drop counters: ${await nodeDrops(launcher)}`);
    const clean = live && ic === 0 && Object.keys(h.errors ?? {}).length === 0 && h.ok === h.requests && h.sockets === h.connections && ij.end?.sum_sent?.bytes === ij.end?.sum_received?.bytes;
    log(clean ? '\nreal traffic crossed a live disengage and engage: 0 failed requests, 0 reconnects, every iperf3 byte delivered.' : '\nSOMETHING BROKE: see above.');
    orch.close();
    code = clean ? 0 : 1;
  } catch (e) {
    log(`real traffic demo failed: ${(e as Error).message}`);
  } finally {
    process.removeListener('SIGINT', onSignal);
    log('stopping the cluster and removing the lab…');
    await cleanup();
  }
  return code;
}

async function healthy(launcher: Launcher): Promise<boolean> {
  for (const n of launcher.nodes.values()) {
    if (!n.name.startsWith('fd')) continue;
    const ups = parseMetrics(await (await fetch(n.metrics)).text()).filter((m) => m.name === 'baton_real_server_up');
    if (ups.length === 0 || ups.some((m) => m.value !== 1)) return false;
  }
  return true;
}

/** Baton's own verified traffic through a running cluster, with a live disengage and engage; the report and the loss books. Returns the exit code. */
export async function syntheticDemo(cfg: BatonConfig, launcher: Launcher, manager: Address, opts: TrafficOptions, seconds: number, json: boolean, log: Log, progress: (p: Progress) => void): Promise<number> {
  const fd = cfg.fds[0]?.name;
  const traffic = bookedTraffic(cfg, manager, opts, progress);
  const live = fd && cfg.fds.length > 1 ? disengageAndEngage(manager, fd, (seconds * 1000) / 3, (seconds * 1000) / 4, log) : Promise.resolve(true);
  const [run, liveOk] = await Promise.all([traffic, live]);
  const books = await settledBooks(launcher, cfg, () => [run.client()]);
  await run.close();
  log('\n' + formatStatus(await fetchStatus(manager)));
  log('\n' + (json ? JSON.stringify({ ...run.report, lossBooks: books }, null, 2) : formatReport(run.report) + '\n' + formatLossBooks(books)));
  return run.report.ok && books.closes && liveOk ? 0 : 1;
}

/** Null when the real-traffic demo can run here, else why not. */
export async function realDemoUnavailable(log: Log = () => {}): Promise<string | null> {
  if (process.env.BATON_DEMO_SYNTHETIC) return 'BATON_DEMO_SYNTHETIC is set';
  await installLabTools(log); // a fresh machine, as root with apt-get: iperf3, ethtool, curl from Debian
  return labPreflight();
}

