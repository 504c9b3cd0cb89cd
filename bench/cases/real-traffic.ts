/**
 * Real kernel traffic through Baton against kernel and user-space balancers,
 * in the same lab namespaces (cli/lab.ts, cli/lab-baselines.ts; issue 13,
 * "Benchmark"). Root only: skipped, with the reason printed, where the lab
 * cannot be built or a tool is missing.
 *
 * Targets, all reached from client namespace btn-c1, all in front of the
 * same two lab servers (Node HTTP on :80, iperf3 -s on :5201):
 *   baton     the cluster of `npm start` (cli/demo.ts realTrafficConfig: one
 *             hash tier and the config's 3 FDs on this host, edge
 *             10.99.0.1): VIP 198.51.100.1 through the clients' and servers'
 *             kernel VXLAN-GPE tunnels (vx0, offloads off, MTU 1464).
 *   plain     no balancer: the servers' own addresses over the bridge (each
 *             of wrk's two threads on one server; iperf3 and the latency
 *             probe to s1).
 *   nftables  a one-armed nftables DNAT router (jhash map per connection,
 *             source affinity for iperf3) in btn-nat.
 *   haproxy   HAProxy 2.6 in TCP mode in btn-haproxy (roundrobin; source
 *             for iperf3).
 * The baselines' paths are ordinary veths with the kernel's default
 * offloads (TSO/GSO, MTU 1500); Baton's path is what a deployment gets:
 * every packet a datagram through user-space nodes.
 *
 * Each round measures every target in turn (so a change of load on the
 * machine falls on all of them), ROUNDS rounds after an untimed warm-up:
 *   iperf3   `iperf3 -c T -P 4 -t 2 -J` (no -b cap): receiver goodput.
 *   keep-alive HTTP  `wrk -t 2 -c 32 -d 2s http://T/bytes/100`: requests/s.
 *   new connection per request  the same with `-c 16 -H 'Connection: close'`.
 *   connection set-up latency  cli/lab/probe.ts http-short, 200 new
 *            connections one after another, alone on the path: connect()
 *            to the socket's connect event (SYN → SYN-ACK, plus the probe's
 *            own event loop), p50 and p99 of each round.
 * wrk (Debian package wrk) is a C load generator built for exactly this, so
 * the client is not the bottleneck a Node client would be; iperf3 is what
 * issue 13 asks for. Value = median over the rounds, min – max beside it;
 * ratios compare medians (> 1 = Baton better, as everywhere in the bench).
 * Notes carry what would make a figure suspect: wrk socket errors and
 * non-2xx answers, the servers' share of connections, iperf3
 * retransmissions (and, for Baton, the edge packets/s its hash tier took
 * during them), SYN retransmissions during the new-connection runs, and
 * Baton's non-zero drop counters.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Launcher } from '../../cli/launcher.js';
import { realTrafficConfig } from '../../cli/demo.js';
import { labPreflight, labUp, labDown, runInNs, runProbe, run, clientNs, serverAddress, HTTP_PORT, type Lab } from '../../cli/lab.js';
import { baselinePreflight, baselineUp } from '../../cli/lab-baselines.js';
import { fetchStatus, statusRows } from '../../cli/status.js';
import { parseConfig } from '../../shared/config/config.js';
import { parseAddress } from '../../shared/io/address.js';
import { parseMetrics } from '../../traffic/loss-books.js';
import { rateResult, spreadOf, timeResult, type BenchCase, type BenchResult, type Spread } from '../lib.js';

const ROUNDS = 3;
const IPERF_SECONDS = 2;
const IPERF_STREAMS = 4;
const WRK_SECONDS = 2;
const WRK_THREADS = 2;
const KEEPALIVE_CONNECTIONS = 32;
const SHORT_CONNECTIONS = 16;
const CONNECT_COUNT = 200;
const CONNECT_CONCURRENCY = 1;
const PATH = '/bytes/100';
const CLIENT = 1;

type TargetId = 'baton' | 'plain' | 'nftables' | 'haproxy';
interface Target {
  id: TargetId;
  label: string;
  /** Where iperf3, wrk and the latency probe connect. */
  host: string;
  /** wrk Lua script (plain: one thread per server). */
  wrkScript?: string;
  /** Baton: the hash tier's edge packet counters (client → VIP, server replies). */
  edgeFrames?: () => Promise<{ client: number; server: number }>;
}

interface Round {
  iperfMbps: number;
  /** Baton: edge packets/s the hash tier took during the iperf3 run (wall time), client and server side. */
  iperfEdgePps?: { client: number; server: number };
  iperfRetransmits: number;
  keepalive: WrkResult;
  short: WrkResult;
  synRetrans: number;
  connectP50: number;
  connectP99: number;
  connectFailed: number;
  /** Connections each server counted during the keep-alive and the new-connection runs. */
  shares: string;
}

interface WrkResult {
  rps: number;
  requests: number;
  errors: number;
  non2xx: number;
}

const c1 = clientNs(CLIENT);

/** wrk's summary: Requests/sec, total requests, socket errors, non-2xx answers. */
export function parseWrk(out: string): WrkResult {
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = se ? se.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  if (!Number.isFinite(rps)) throw new Error(`wrk printed no rate: ${out.slice(0, 300)}`);
  return { rps, requests, errors, non2xx };
}

async function wrk(t: Target, connections: number, seconds: number, close: boolean): Promise<WrkResult> {
  const args = ['-t', String(WRK_THREADS), '-c', String(connections), '-d', `${seconds}s`];
  if (t.wrkScript) args.push('-s', t.wrkScript);
  if (close) args.push('-H', 'Connection: close');
  const r = await runInNs(c1, 'wrk', [...args, `http://${t.host}${PATH}`], { timeoutMs: (seconds + 15) * 1000 });
  return parseWrk(r.stdout);
}

async function iperf(t: Target): Promise<{ mbps: number; retransmits: number }> {
  let last = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    // The server takes a moment to accept the next test after one ends ("the server is busy").
    if (attempt > 0) await new Promise((r) => setTimeout(r, 500));
    const r = await runInNs(c1, 'iperf3', ['-c', t.host, '-P', String(IPERF_STREAMS), '-t', String(IPERF_SECONDS), '-J'], { allowFail: true, timeoutMs: (IPERF_SECONDS + 20) * 1000 });
    try {
      const j = JSON.parse(r.stdout) as { error?: string; end?: { sum_received?: { bits_per_second: number }; sum_sent?: { retransmits?: number } } };
      if (r.code === 0 && !j.error && j.end?.sum_received) return { mbps: j.end.sum_received.bits_per_second / 1e6, retransmits: j.end.sum_sent?.retransmits ?? 0 };
      last = j.error ?? `exit ${r.code}`;
    } catch {
      last = `exit ${r.code}: ${r.stderr.trim() || r.stdout.slice(0, 200)}`;
    }
  }
  throw new Error(`iperf3 to ${t.label} (${t.host}) failed: ${last}`);
}

async function nstat(ns: string, name: string): Promise<number> {
  const r = await runInNs(ns, 'nstat', ['-az', name], { allowFail: true });
  return Number(new RegExp(`^${name}\\s+(\\d+)`, 'm').exec(r.stdout)?.[1] ?? 0);
}

async function connectLatency(t: Target): Promise<{ p50: number; p99: number; failed: number }> {
  const r = await runProbe(c1, ['http-short', '--url', `http://${t.host}${PATH}`, '--count', String(CONNECT_COUNT), '--concurrency', String(CONNECT_CONCURRENCY)], { allowFail: true, timeoutMs: 120_000 });
  const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  if (!line) throw new Error(`http-short to ${t.label} printed no result: ${r.stderr.slice(0, 300)}`);
  const j = JSON.parse(line) as { requests: number; ok: number; connectMs: { p50: number; p99: number } };
  return { p50: j.connectMs.p50, p99: j.connectMs.p99, failed: j.requests - j.ok };
}

/** Connections each lab server counted since the last call (which resets them), "s1 16 / s2 16". */
async function serverShares(lab: Lab): Promise<string> {
  const out: string[] = [];
  for (const s of lab.servers) {
    const j = (await (await fetch(`http://${s.address}/stats`)).json()) as { name: string; connections: number };
    out.push(`${j.name} ${j.connections}`);
    await fetch(`http://${s.address}/reset`);
  }
  return out.join(' / ');
}

async function measure(t: Target, lab: Lab): Promise<Round> {
  const e0 = await t.edgeFrames?.();
  const ti = performance.now();
  const ip = await iperf(t);
  const seconds = (performance.now() - ti) / 1000;
  const e1 = await t.edgeFrames?.();
  const iperfEdgePps = e0 && e1 ? { client: (e1.client - e0.client) / seconds, server: (e1.server - e0.server) / seconds } : undefined;
  await serverShares(lab);
  const keepalive = await wrk(t, KEEPALIVE_CONNECTIONS, WRK_SECONDS, false);
  const kaShares = await serverShares(lab);
  const syn0 = await nstat(c1, 'TcpExtTCPSynRetrans');
  const short = await wrk(t, SHORT_CONNECTIONS, WRK_SECONDS, true);
  const synRetrans = (await nstat(c1, 'TcpExtTCPSynRetrans')) - syn0;
  const shortShares = await serverShares(lab);
  const lat = await connectLatency(t);
  return {
    iperfMbps: ip.mbps,
    ...(iperfEdgePps ? { iperfEdgePps } : {}),
    iperfRetransmits: ip.retransmits,
    keepalive,
    short,
    synRetrans,
    connectP50: lat.p50,
    connectP99: lat.p99,
    connectFailed: lat.failed,
    shares: `keep-alive ${kaShares}, new-connection ${shortShares}`,
  };
}

const which = async (cmd: string): Promise<boolean> => (await run('sh', ['-c', `command -v ${cmd}`], { allowFail: true })).code === 0;

async function unavailable(): Promise<string | null> {
  if (process.env.BATON_SKIP_LAB) return 'BATON_SKIP_LAB is set';
  const lab = await labPreflight();
  if (lab) return lab;
  const b = await baselinePreflight();
  if (b) return b;
  if (!(await which('wrk'))) return 'wrk is not installed (apt-get install wrk)';
  if (!(await which('nstat'))) return 'nstat is not installed (apt-get install iproute2)';
  return null;
}

/** Every non-zero drop counter of every Baton node ("fd-1 drop_x=3"), or 'none'. */
async function batonDrops(launcher: Launcher): Promise<string> {
  const out: string[] = [];
  for (const n of launcher.nodes.values()) {
    for (const m of parseMetrics(await (await fetch(n.metrics)).text())) {
      const c = m.labels.counter;
      if (c && c.startsWith('drop_') && m.value > 0) out.push(`${n.name} ${c}=${m.value}`);
    }
  }
  return out.join(', ') || 'none';
}

/**
 * Redirect hops per real-server reply (issue 13, "replies without an owner
 * hint"): the FDs' redirects of any kind over the server replies the hash
 * tier took at its edge. 0 means every reply reached its owner directly.
 */
async function redirectHopsPerReply(launcher: Launcher): Promise<{ replies: number; redirects: number; perReply: number }> {
  let replies = 0;
  let redirects = 0;
  for (const n of launcher.nodes.values()) {
    for (const m of parseMetrics(await (await fetch(n.metrics)).text())) {
      const c = m.labels.counter;
      if (m.name === 'baton_hash_tier_total' && c === 'edge_server_frames') replies += m.value;
      if (m.name === 'baton_fd_total' && (c === 'redirected' || c === 'redirected_by_hint' || c === 'redirected_leaving')) redirects += m.value;
    }
  }
  return { replies, redirects, perReply: replies ? redirects / replies : 0 };
}

async function waitUntil(what: string, cond: () => Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond().catch(() => false))) {
    if (Date.now() > end) throw new Error(`real-traffic: ${what} not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The hash tier's edge packets so far: client frames for the VIP, server replies. */
async function edgeFrames(metricsUrl: string): Promise<{ client: number; server: number }> {
  const ms = parseMetrics(await (await fetch(metricsUrl)).text()).filter((m) => m.name === 'baton_hash_tier_total');
  const v = (c: string) => ms.find((m) => m.labels.counter === c)?.value ?? 0;
  return { client: v('edge_client_frames'), server: v('edge_server_frames') };
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

function results(rounds: Record<TargetId, Round[]>, targets: Target[], batonNote: string): BenchResult[] {
  const label = (id: TargetId) => targets.find((t) => t.id === id)!.label;
  const of = (id: TargetId, f: (r: Round) => number): Spread => spreadOf(rounds[id].map(f));
  const notes: Record<TargetId, Record<string, string>> = {} as never;
  for (const t of targets) {
    const rs = rounds[t.id];
    const wrkBad = (w: (r: Round) => WrkResult) => {
      const e = sum(rs.map((r) => w(r).errors));
      const n = sum(rs.map((r) => w(r).non2xx));
      return e || n ? `; wrk socket errors ${e}, non-2xx ${n}` : '';
    };
    notes[t.id] = {
      iperf: `${t.label}: retransmits ${rs.map((r) => r.iperfRetransmits).join('/')}${
        rs[0]!.iperfEdgePps ? `; hash tier edge packets/s from the client ${rs.map((r) => r.iperfEdgePps!.client.toFixed(0)).join('/')}, from the servers ${rs.map((r) => r.iperfEdgePps!.server.toFixed(0)).join('/')}` : ''
      }`,
      keepalive: `${t.label}: ${rs.map((r) => r.keepalive.requests).join('/')} requests${wrkBad((r) => r.keepalive)}; ${rs[0]!.shares.split(', new')[0]}`,
      short: `${t.label}: SYN retransmissions ${rs.map((r) => r.synRetrans).join('/')}${wrkBad((r) => r.short)}; ${rs[0]!.shares.split(', ')[1]}`,
      connect: `${t.label}: ${sum(rs.map((r) => r.connectFailed))} failed of ${rs.length * CONNECT_COUNT}`,
    };
  }
  const out: BenchResult[] = [];
  const metrics: { name: string; unit: string; f: (r: Round) => number; key: string; time?: boolean }[] = [
    { name: `iperf3 -P ${IPERF_STREAMS} -t ${IPERF_SECONDS} goodput`, unit: 'Mbit/s', f: (r) => r.iperfMbps, key: 'iperf' },
    { name: `HTTP keep-alive (wrk -c ${KEEPALIVE_CONNECTIONS}, GET ${PATH})`, unit: 'req/s', f: (r) => r.keepalive.rps, key: 'keepalive' },
    { name: `HTTP new connection per request (wrk -c ${SHORT_CONNECTIONS}, Connection: close)`, unit: 'req/s', f: (r) => r.short.rps, key: 'short' },
    { name: `connection set-up p50 (${CONNECT_COUNT} connections, one at a time)`, unit: 'ms', f: (r) => r.connectP50, key: 'connect', time: true },
    { name: `connection set-up p99 (${CONNECT_COUNT} connections, one at a time)`, unit: 'ms', f: (r) => r.connectP99, key: 'connect', time: true },
  ];
  for (const m of metrics) {
    for (const b of ['nftables', 'haproxy', 'plain'] as const) {
      const note = `${notes.baton[m.key]}; ${notes[b][m.key]}${m === metrics[0] && b === 'nftables' ? `; Baton drops: ${batonNote}` : ''}`;
      const name = `${m.name}: Baton vs ${label(b)}`;
      out.push(m.time ? timeResult(name, of('baton', m.f), of(b, m.f), label(b), note) : rateResult(name, of('baton', m.f), m.unit, of(b, m.f), label(b), note));
    }
  }
  return out;
}

const realTraffic: BenchCase = {
  id: 'real-traffic',
  title: 'real kernel TCP (iperf3, HTTP keep-alive and new connections, connect latency) through Baton vs plain routing, nftables DNAT and HAProxy, same lab namespaces',
  async run(progress) {
    const why = await unavailable();
    if (why) {
      progress(`skipped: ${why}`);
      console.log(`  real-traffic: skipped: ${why}`);
      return [];
    }
    const t0 = Date.now();
    const cfg = realTrafficConfig(parseConfig({}));
    const runDir = mkdtempSync(join(tmpdir(), 'baton-bench-real-'));
    const launcher = new Launcher(cfg, { runDir, readyTimeoutMs: 30_000 });
    try {
      const lab = await labUp({ clients: 1, servers: 2, batonInRoot: true, vips: [cfg.cluster.vip], vni: cfg.cluster.vni });
      // The baselines' namespaces and Baton's first node come up side by side (nothing they do meets).
      const [b, hash] = await Promise.all([baselineUp(lab), launcher.startNode('hash', cfg.hashTier.name)]);
      const split = join(runDir, 'split.lua');
      writeFileSync(
        split,
        `-- wrk thread i connects to server i (mod ${lab.servers.length}): the load split over the servers with no balancer\nlocal servers = { ${lab.servers.map((s) => `"${s.address}"`).join(', ')} }\nlocal n = 0\nfunction setup(thread)\n  n = n + 1\n  thread.addr = wrk.lookup(servers[(n - 1) % #servers + 1], "${HTTP_PORT}")[1]\nend\n`,
      );
      const targets: Target[] = [
        { id: 'baton', label: 'Baton', host: cfg.cluster.vip, edgeFrames: () => edgeFrames(hash.metrics) },
        { id: 'plain', label: 'plain routing', host: serverAddress(1), wrkScript: split },
        { id: 'nftables', label: 'nftables DNAT', host: b.nftables.vip },
        { id: 'haproxy', label: 'HAProxy (TCP)', host: b.haproxy.vip },
      ];
      const manager = parseAddress(hash.control!);
      await Promise.all(cfg.fds.map((f) => launcher.startNode('fd', f.name)));
      await waitUntil(
        `${cfg.fds.length} FDs active and in scope`,
        async () => statusRows(await fetchStatus(manager)).filter((r) => r.role === 'fd' && r.status === 'ACTIVE' && r.inScope).length === cfg.fds.length,
        30_000,
      );
      await waitUntil(
        'both real servers healthy at every FD',
        async () => {
          for (const n of launcher.nodes.values()) {
            if (!n.name.startsWith('fd')) continue;
            const up = parseMetrics(await (await fetch(n.metrics)).text()).filter((m) => m.name === 'baton_real_server_up');
            if (up.length !== lab.servers.length || up.some((m) => m.value !== 1)) return false;
          }
          return true;
        },
        30_000,
      );
      progress(`lab, baselines and ${1 + cfg.fds.length} Baton nodes up in ${((Date.now() - t0) / 1000).toFixed(1)} s; warm-up (1 s of iperf3 and of keep-alive HTTP through Baton, 1 s of HTTP to the servers)`);
      await runInNs(c1, 'iperf3', ['-c', cfg.cluster.vip, '-P', String(IPERF_STREAMS), '-t', '1'], { allowFail: true, timeoutMs: 20_000 });
      await wrk(targets[0]!, KEEPALIVE_CONNECTIONS, 1, false);
      await wrk(targets[1]!, KEEPALIVE_CONNECTIONS, 1, false);
      const rounds = { baton: [], plain: [], nftables: [], haproxy: [] } as Record<TargetId, Round[]>;
      for (let i = 0; i < ROUNDS; i++) {
        for (const t of targets) {
          const r = await measure(t, lab);
          rounds[t.id].push(r);
          progress(
            `round ${i + 1} ${t.label}: iperf3 ${r.iperfMbps.toFixed(0)} Mbit/s${r.iperfEdgePps ? ` (hash tier: ${r.iperfEdgePps.client.toFixed(0)} + ${r.iperfEdgePps.server.toFixed(0)} edge packets/s)` : ''}, keep-alive ${r.keepalive.rps.toFixed(0)} req/s, new-connection ${r.short.rps.toFixed(0)} req/s (SYN retrans ${r.synRetrans}), connect p50 ${r.connectP50} ms p99 ${r.connectP99} ms`,
          );
        }
      }
      const drops = await batonDrops(launcher);
      progress(`Baton's drop counters: ${drops}`);
      const hops = await redirectHopsPerReply(launcher);
      progress(`redirect hops per real-server reply: ${hops.perReply.toFixed(4)} (${hops.redirects} redirects, of any packet, over ${hops.replies} server replies)`);
      const med = (id: TargetId, f: (r: Round) => number) => spreadOf(rounds[id].map(f)).median;
      for (const [what, f] of [
        ['iperf3', (r: Round) => r.iperfMbps],
        ['keep-alive req/s', (r: Round) => r.keepalive.rps],
        ['new-connection req/s', (r: Round) => r.short.rps],
      ] as const) {
        const v = med('baton', f);
        progress(`${what}: Baton/nftables ${(v / med('nftables', f)).toFixed(3)}, Baton/HAProxy ${(v / med('haproxy', f)).toFixed(3)}, Baton/plain ${(v / med('plain', f)).toFixed(3)}`);
      }
      return results(rounds, targets, drops);
    } finally {
      await launcher.down().catch(() => {});
      await labDown().catch(() => {});
      rmSync(runDir, { recursive: true, force: true });
    }
  },
};

export default realTraffic;
