/**
 * The lab (docs/lab.md): network namespaces on one machine that stand for a
 * real deployment — a bridge for the underlay, a namespace for Baton's nodes
 * (or one per node), client namespaces whose kernel sends its traffic for the
 * VIPs through a VXLAN-GPE device, and server namespaces with a real HTTP
 * server, `iperf3 -s` and a UDP request/response service behind their own
 * VXLAN-GPE device. Nothing of Baton runs here: this module builds the hosts;
 * the cluster is started into them by whoever uses the lab.
 *
 * Process tooling (cli/): it may import shared/, no library imports it.
 *
 *   labPreflight()   null, or a message naming what this machine lacks
 *   labUp(opts)      tears down leftovers, builds the lab, starts the servers,
 *                    writes LAB_STATE_FILE, returns the description (Lab)
 *   labDown()        idempotent: kills every process in every `btn-*`
 *                    namespace, deletes the namespaces (their veths go with
 *                    them), removes the state file — also after a crashed up
 *   labStatus()      what is there now (state file, namespaces, processes)
 *   inNs / runInNs   spawn / run a command inside a namespace (ip netns exec)
 *
 * Every name the lab makes starts with LAB_PREFIX, inside namespaces it
 * made: nothing is created in the caller's namespace except LAB_RUN_DIR.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdirSync, openSync, closeSync, readFileSync, rmSync, writeFileSync, renameSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { loadConfig } from '../shared/config/config.js';
import { BatonError, ErrorCode } from '../shared/errors.js';

// ---------------------------------------------------------------- topology

/** Every namespace the lab makes starts with this; `labDown` removes all of them. */
export const LAB_PREFIX = 'btn-';
/** The namespace holding the underlay bridge. */
export const LAB_NS = 'btn-lab';
export const LAB_BRIDGE = 'br0';
/** Baton's nodes (all of them unless they get namespaces of their own). */
export const BATON_NS = 'btn-baton';
/** With batonInRoot: the veth end in this machine's own namespace that holds BATON_ADDRESS. */
export const ROOT_LINK = 'btn-host';
export const UNDERLAY_SUBNET = '10.99.0.0/24';
export const UNDERLAY_PREFIX_LEN = 24;
/** eth0 of BATON_NS; the default edge address clients and servers tunnel to. */
export const BATON_ADDRESS = '10.99.0.1';
/** The clients' inner (virtual) addresses, 172.16.0.i/32 on their lo; the servers route it through the tunnel. */
export const CLIENT_INNER_SUBNET = '172.16.0.0/16';
/** The kernel tunnel device in every client and server namespace. */
export const TUNNEL_DEVICE = 'vx0';
/** VXLAN-GPE's IANA port: the kernel devices listen on it and send to it. */
export const TUNNEL_PORT = 4790;
/** Outer IPv4 (20) + UDP (8) + VXLAN-GPE (8) bytes a tunnelled packet grows by. */
export const TUNNEL_OVERHEAD = 36;
export const DEFAULT_UNDERLAY_MTU = 1500;
/** The servers' ports. */
export const HTTP_PORT = 80;
export const IPERF_PORT = 5201;
export const UDP_PORT = 53;
/** Where the state file and the servers' logs go (tmpfs: a reboot leaves no lab and no stale state). */
export const LAB_RUN_DIR = '/run/baton-lab';
export const LAB_STATE_FILE = join(LAB_RUN_DIR, 'state.json');
export const LAB_LOG_DIR = join(LAB_RUN_DIR, 'logs');
/** Address plan limits: clients .101-.199, servers .201-.254, node namespaces .11-.99. */
export const MAX_CLIENTS = 99;
export const MAX_SERVERS = 54;
export const MAX_NODE_NAMESPACES = 89;

export const clientNs = (i: number): string => `btn-c${i}`;
export const clientAddress = (i: number): string => `10.99.0.${100 + i}`;
export const clientInnerAddress = (i: number): string => `172.16.0.${i}`;
export const serverNs = (j: number): string => `btn-s${j}`;
export const serverAddress = (j: number): string => `10.99.0.${200 + j}`;
export const nodeNs = (k: number): string => `btn-node-${k}`;
export const nodeAddress = (k: number): string => `10.99.0.${10 + k}`;

// ---------------------------------------------------------------- per-host commands

/**
 * The commands that set up one host's kernel tunnel: what labUp runs in each
 * client and server namespace, and what docs/lab.md ("On your own hosts")
 * tells a user to run on real machines (test/lab.test.ts runs them both ways).
 */
export interface TunnelSpec {
  /**
   * Source address of the host's tunnelled packets: for a client, its address
   * as the servers will see it; for a server, its own address (the one the
   * FDs rewrite the VIP to).
   */
  source: string;
  /** Baton's edge: the underlay address the tunnel sends to. */
  edge: string;
  vni: number;
  /** The underlay's MTU (default DEFAULT_UNDERLAY_MTU); vx0 gets TUNNEL_OVERHEAD less. */
  underlayMtu?: number;
}

/** A server's policy routing for "reply through Baton to any client" (serverHostCommands with clients 'any'). */
export const RETURN_MARK = 0x4790;
export const RETURN_TABLE = 4790;
export const RETURN_NFT_TABLE = 'baton_return';

const hex = (n: number): string => `0x${n.toString(16)}`;

function tunnelDeviceCommands(o: TunnelSpec): string[] {
  const mtu = (o.underlayMtu ?? DEFAULT_UNDERLAY_MTU) - TUNNEL_OVERHEAD;
  return [
    `ip link add ${TUNNEL_DEVICE} mtu ${mtu} type vxlan external gpe dstport ${TUNNEL_PORT}`,
    `ethtool -K ${TUNNEL_DEVICE} tx off tso off gso off`,
    `ip link set ${TUNNEL_DEVICE} up`,
  ];
}

/** A client host: vx0, and a route per VIP through it to the edge. */
export function clientHostCommands(o: TunnelSpec & { vips: string[] }): string[] {
  return [...tunnelDeviceCommands(o), ...o.vips.map((v) => `ip route add ${v}/32 encap ip id ${o.vni} dst ${o.edge} dev ${TUNNEL_DEVICE} src ${o.source}`)];
}

/**
 * A server host: vx0, and replies to clients back through it to the edge.
 * `clients` a list of prefixes: a route each (what the lab does, with
 * CLIENT_INNER_SUBNET). 'any': connections that arrive through vx0 are marked
 * (nftables conntrack mark), and marked packets look up RETURN_TABLE, whose
 * default route is the tunnel — so the replies of every tunnelled connection,
 * whatever the client's address, go back through Baton while the host's own
 * traffic keeps its routes. The mark is also what the reverse-path filter sees
 * (src_valid_mark), so a strict rp_filter passes; the edge is thrown back to
 * the main table so the tunnel's own outer packets do not loop into vx0.
 */
export function serverHostCommands(o: TunnelSpec & { clients: string[] | 'any' }): string[] {
  const dev = TUNNEL_DEVICE;
  if (o.clients !== 'any') return [...tunnelDeviceCommands(o), ...o.clients.map((c) => `ip route add ${c} encap ip id ${o.vni} dst ${o.edge} dev ${dev} src ${o.source}`)];
  const t = RETURN_NFT_TABLE;
  return [
    ...tunnelDeviceCommands(o),
    `sysctl -qw net.ipv4.conf.${dev}.src_valid_mark=1`,
    `nft add table inet ${t}`,
    `nft add chain inet ${t} pre '{ type filter hook prerouting priority mangle; }'`,
    `nft add rule inet ${t} pre iifname ${dev} meta mark set ${hex(RETURN_MARK)} ct mark set meta mark`,
    `nft add chain inet ${t} out '{ type route hook output priority mangle; }'`,
    `nft add rule inet ${t} out ct mark ${hex(RETURN_MARK)} meta mark set ct mark`,
    `ip rule add fwmark ${hex(RETURN_MARK)} lookup ${RETURN_TABLE}`,
    `ip route add throw ${o.edge}/32 table ${RETURN_TABLE}`,
    `ip route add default encap ip id ${o.vni} dst ${o.edge} dev ${dev} src ${o.source} table ${RETURN_TABLE}`,
  ];
}

/** Undoes clientHostCommands / serverHostCommands (the routes through vx0 go with it). */
export function hostTeardownCommands(o: { returnAny?: boolean } = {}): string[] {
  const any = o.returnAny
    ? [`nft delete table inet ${RETURN_NFT_TABLE}`, `ip rule del fwmark ${hex(RETURN_MARK)} lookup ${RETURN_TABLE}`, `ip route flush table ${RETURN_TABLE}`]
    : [];
  return [`ip link del ${TUNNEL_DEVICE}`, ...any];
}

const HERE = dirname(fileURLToPath(import.meta.url));
/** The lab's server (HTTP + UDP) and probe scripts, run with tsx (labNodeArgs). */
export const LAB_SERVER_SCRIPT = join(HERE, 'lab', 'server.ts');
export const LAB_PROBE_SCRIPT = join(HERE, 'lab', 'probe.ts');
let tsxLoader: string | undefined;

/** argv (after the executable, process.execPath) that runs a TypeScript script under tsx (resolved when first asked: a node bundle that never runs the lab needs no tsx). */
export function labNodeArgs(script: string, args: string[] = []): string[] {
  tsxLoader ??= pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
  return ['--import', tsxLoader, script, ...args];
}

// ---------------------------------------------------------------- description

export interface LabHost {
  ns: string;
  /** eth0's underlay address. */
  address: string;
  /** The veth end on the bridge, inside LAB_NS. */
  bridgePort: string;
}
export interface LabClient extends LabHost {
  index: number;
  /** 172.16.0.i, on lo: the source of the client's tunnelled traffic. */
  innerAddress: string;
  /** `ip route` lines of the tunnel routes, one per VIP. */
  routes: string[];
  /** The shell commands labUp ran in the namespace after plumbing eth0 (clientHostCommands). */
  setup: string[];
}
export interface LabProcess {
  name: 'server' | 'iperf3';
  pid: number;
  log: string;
}
export interface LabServer extends LabHost {
  index: number;
  /** host:port of the HTTP server, the UDP service, iperf3 -s. */
  http: string;
  udp: string;
  iperf3: string;
  routes: string[];
  /** The shell commands labUp ran in the namespace after plumbing eth0 (serverHostCommands). */
  setup: string[];
  processes: LabProcess[];
}
export interface Lab {
  version: 1;
  /** 'building' while labUp runs (a crash leaves it so), 'up' once every server answers. */
  phase: 'building' | 'up';
  createdAt: string;
  vni: number;
  vips: string[];
  /** Underlay address clients and servers tunnel to (Baton's edge). */
  edge: string;
  underlayMtu: number;
  /** vx0's MTU: underlayMtu - TUNNEL_OVERHEAD, so no tunnelled packet fragments. */
  tunnelMtu: number;
  bridge: { ns: string; name: string; subnet: string };
  baton: LabHost;
  nodes: LabHost[];
  clients: LabClient[];
  servers: LabServer[];
  /** Every namespace this lab made. */
  namespaces: string[];
  stateFile: string;
  logDir: string;
}

export interface LabOptions {
  /** Client namespaces btn-c1..N (default 2). */
  clients?: number;
  /** Server namespaces btn-s1..M (default 2). */
  servers?: number;
  /** Also btn-node-1..K, one per Baton node, as on separate hosts (default 0). */
  nodeNamespaces?: number;
  /** VIPs the clients route through the tunnel (default: the config's cluster.vip). */
  vips?: string[];
  /** VXLAN VNI of every tunnel route (default: the config's cluster.vni). */
  vni?: number;
  /** Underlay address the tunnels point at (default BATON_ADDRESS). */
  edge?: string;
  /**
   * Baton's address on this machine's own (root) namespace instead of in
   * btn-baton: a veth `btn-host` (BATON_ADDRESS) on the bridge, so Baton's
   * nodes run as ordinary processes here — their control and metrics on
   * loopback, their edge on BATON_ADDRESS — and tests and `npm start` reach
   * them as they do without the lab. Default false.
   */
  batonInRoot?: boolean;
  underlayMtu?: number;
  /** Start the servers' processes (default true). */
  services?: boolean;
  /** Config file whose cluster.vni / cluster.vip are the defaults. */
  config?: string;
  stateFile?: string;
  logDir?: string;
  /** Aborting stops the build at the next step; labUp then tears down what it made and rejects. */
  signal?: AbortSignal;
  /** Progress lines. */
  log?: (line: string) => void;
}

// ---------------------------------------------------------------- running commands

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}
export interface RunOptions {
  /** Resolve with the result instead of rejecting on a non-zero exit. */
  allowFail?: boolean;
  timeoutMs?: number;
  input?: string;
  signal?: AbortSignal;
  /** Environment of the command (default: this process's). */
  env?: NodeJS.ProcessEnv;
}

/** Runs `cmd args` to completion (no shell); rejects with its stderr unless allowFail. */
export function run(cmd: string, args: string[], o: RunOptions = {}): Promise<RunResult> {
  o.signal?.throwIfAborted();
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], ...(o.env ? { env: o.env } : {}) });
    let stdout = '';
    let stderr = '';
    c.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    c.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    if (o.input !== undefined) c.stdin!.end(o.input);
    const timer = o.timeoutMs === undefined ? undefined : setTimeout(() => c.kill('SIGKILL'), o.timeoutMs);
    c.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${cmd}: ${e.message}`, { cause: e }));
    });
    c.on('close', (code, sig) => {
      clearTimeout(timer);
      const r = { code: code ?? (sig ? 128 : 1), stdout, stderr };
      if (r.code === 0 || o.allowFail) resolve(r);
      else reject(new Error(`${[cmd, ...args].join(' ')}: ${sig ? `killed by ${sig}` : `exit ${r.code}`}${stderr.trim() ? `: ${stderr.trim()}` : ''}`));
    });
  });
}

/** Spawns `cmd args` inside network namespace `ns` (ip netns exec: the process is `cmd` itself, same pid). */
export function inNs(ns: string, cmd: string, args: string[] = [], opts: SpawnOptions = {}): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

/** Runs `cmd args` inside `ns` to completion (see run). */
export function runInNs(ns: string, cmd: string, args: string[] = [], o: RunOptions = {}): Promise<RunResult> {
  return run('ip', ['netns', 'exec', ns, cmd, ...args], o);
}

/** Runs cli/lab/probe.ts (udp-query, send, listen, relay) inside `ns`. */
export function runProbe(ns: string, args: string[], o: RunOptions = {}): Promise<RunResult> {
  return runInNs(ns, process.execPath, labNodeArgs(LAB_PROBE_SCRIPT, args), o);
}

/** Spawns cli/lab/probe.ts inside `ns` (for the long-running listen and relay). */
export function spawnProbe(ns: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
  return inNs(ns, process.execPath, labNodeArgs(LAB_PROBE_SCRIPT, args), opts);
}

/**
 * The last JSON line a probe (cli/lab/probe.ts) printed, once it exits; it
 * rejects when there is none (the probe failed before reporting). Call it
 * before the probe can exit (it listens to stdout from then on).
 */
export function probeResult(child: ChildProcess): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.once('exit', () => {
      const line = out.trim().split('\n').filter((l) => l.startsWith('{')).pop();
      if (!line) return reject(new BatonError(ErrorCode.REMOTE_ERROR, `the probe printed no result: ${out.slice(0, 300)}`));
      try {
        resolve(JSON.parse(line) as Record<string, unknown>);
      } catch (e) {
        reject(new BatonError(ErrorCode.REMOTE_ERROR, `the probe's result is not JSON: ${line.slice(0, 300)}`, undefined, { cause: e }));
      }
    });
  });
}

/** Resolves once `child` printed a line starting with `READY` (its JSON, {} if none), rejects if it exits first. */
export function readyLine(child: ChildProcess, what: string, timeoutMs = 20_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => finish(new Error(`${what}: no READY line within ${timeoutMs} ms`)), timeoutMs);
    const onData = (d: Buffer): void => {
      buf += d.toString('utf8');
      const m = /^READY ?(.*)$/m.exec(buf);
      if (m) {
        let info: Record<string, unknown> = {};
        try {
          info = m[1] ? (JSON.parse(m[1]) as Record<string, unknown>) : {};
        } catch {
          /* a READY line without JSON is still ready */
        }
        finish(undefined, info);
      }
    };
    const onExit = (code: number | null, sig: string | null): void => finish(new Error(`${what} exited (${sig ?? code}) before it was ready`));
    const finish = (e?: Error, info?: Record<string, unknown>): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.off('exit', onExit);
      if (e) reject(e);
      else resolve(info!);
    };
    child.stdout!.on('data', onData);
    child.on('exit', onExit);
  });
}

const which = async (cmd: string): Promise<boolean> => (await run('sh', ['-c', `command -v ${cmd}`], { allowFail: true })).code === 0;

// ---------------------------------------------------------------- preflight

/**
 * Can this machine build the lab? null if so, else one message naming
 * everything missing (not root; no `ip netns`; no veth, bridge or VXLAN-GPE
 * device — tried in a scratch namespace; ethtool or iperf3 not installed).
 */
/** The Debian packages the lab's tools come from (command -> package). */
export const LAB_PACKAGES: Readonly<Record<string, string>> = { ethtool: 'ethtool', iperf3: 'iperf3', curl: 'curl', nstat: 'iproute2' };

/**
 * Installs the lab's missing tools from Debian (`apt-get install`, package
 * scripts kept from starting services: iperf3's own daemon), when this is
 * root on a machine with apt-get: what `npm start` needs on a fresh machine.
 * Returns what it installed ([] when nothing was missing); a failed install
 * is reported, not thrown: labPreflight() then says what is still missing.
 */
export async function installLabTools(log: (line: string) => void = () => {}): Promise<string[]> {
  if (process.getuid?.() !== 0 || !(await which('apt-get'))) return [];
  const need: string[] = [];
  for (const [cmd, pkg] of Object.entries(LAB_PACKAGES)) if (!(await which(cmd)) && !need.includes(pkg)) need.push(pkg);
  if (need.length === 0) return [];
  log(`lab: installing ${need.join(', ')} from Debian (apt-get)…`);
  const policy = '/usr/sbin/policy-rc.d';
  const added = !existsSync(policy);
  if (added) writeFileSync(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    await run('apt-get', ['update', '-qq'], { allowFail: true, timeoutMs: 300_000, env });
    const r = await run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...need], { allowFail: true, timeoutMs: 600_000, env });
    if (r.code !== 0) log(`lab: apt-get install failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    return r.code === 0 ? need : [];
  } finally {
    if (added) rmSync(policy, { force: true });
  }
}

export async function labPreflight(): Promise<string | null> {
  if (process.platform !== 'linux') return `the lab needs Linux network namespaces (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'the lab needs root (network namespaces, veth and tunnel devices need CAP_NET_ADMIN); run it as root';
  const missing: string[] = [];
  if (!(await which('ip'))) return 'the lab needs iproute2 (`ip`): apt-get install iproute2';
  const ethtool = await which('ethtool');
  if (!ethtool) missing.push('ethtool is not installed (apt-get install ethtool): tunnel offloads must be turned off');
  if (!(await which('iperf3'))) missing.push('iperf3 is not installed (apt-get install iperf3)');
  const scratch = `${LAB_PREFIX}preflight-${process.pid}`;
  const added = await run('ip', ['netns', 'add', scratch], { allowFail: true });
  if (added.code !== 0) {
    missing.push(`\`ip netns add\` fails: ${added.stderr.trim()}`);
    return missing.join('; ');
  }
  try {
    const tryLink = async (what: string, args: string[]): Promise<boolean> => {
      const r = await run('ip', ['-n', scratch, 'link', 'add', ...args], { allowFail: true });
      if (r.code !== 0) missing.push(`${what} cannot be created (${r.stderr.trim() || `exit ${r.code}`})`);
      return r.code === 0;
    };
    await tryLink('a veth pair', ['pf0', 'type', 'veth', 'peer', 'name', 'pf1']);
    await tryLink('a bridge', ['pfbr', 'type', 'bridge']);
    const gpe = await tryLink('a VXLAN-GPE device (`ip link add vx0 type vxlan external gpe dstport 4790`; the kernel needs VXLAN with GPE)', [
      TUNNEL_DEVICE,
      'type',
      'vxlan',
      'external',
      'gpe',
      'dstport',
      String(TUNNEL_PORT),
    ]);
    if (gpe && ethtool) {
      const r = await runInNs(scratch, 'ethtool', ['-K', TUNNEL_DEVICE, 'tx', 'off', 'tso', 'off', 'gso', 'off'], { allowFail: true });
      if (r.code !== 0) missing.push(`the tunnel's offloads cannot be turned off (ethtool -K ${TUNNEL_DEVICE} tx off tso off gso off: ${r.stderr.trim()})`);
    }
  } finally {
    await run('ip', ['netns', 'del', scratch], { allowFail: true });
  }
  return missing.length === 0 ? null : `the lab cannot run here: ${missing.join('; ')}`;
}

// ---------------------------------------------------------------- down

/** The lab's namespaces that exist now (every `btn-*`, whoever made them). */
export async function labNamespaces(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list'], { allowFail: true });
  if (r.code !== 0) return [];
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.startsWith(LAB_PREFIX));
}

async function nsPids(ns: string): Promise<number[]> {
  const r = await run('ip', ['netns', 'pids', ns], { allowFail: true });
  return r.stdout
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number);
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

async function waitGone(pids: number[], ms: number): Promise<number[]> {
  const end = Date.now() + ms;
  let left = pids.filter(alive);
  while (left.length > 0 && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 25));
    left = left.filter(alive);
  }
  return left;
}

export interface LabDownResult {
  namespaces: string[];
  /** Processes that were running in them. */
  killed: number;
  /** Of those, how many needed SIGKILL. */
  forced: number;
}

/**
 * Removes every `btn-*` namespace and what runs in it: SIGTERM to every
 * process `ip netns pids` names (SIGKILL after `graceMs`), then
 * `ip netns del` (the veths go with their namespaces), then the state file.
 * Idempotent; needs no state file (a crashed up left none, or a partial one).
 */
export async function labDown(o: { stateFile?: string; graceMs?: number; log?: (line: string) => void } = {}): Promise<LabDownResult> {
  const namespaces = await labNamespaces();
  const pids = [...new Set((await Promise.all(namespaces.map(nsPids))).flat())].filter((p) => p !== process.pid);
  for (const p of pids) {
    try {
      process.kill(p, 'SIGTERM');
    } catch {
      /* gone already */
    }
  }
  let left = await waitGone(pids, o.graceMs ?? 3000);
  const forced = left.length;
  for (const p of left) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone already */
    }
  }
  left = await waitGone(left, 2000);
  if (left.length > 0) o.log?.(`lab down: processes ${left.join(', ')} survived SIGKILL`);
  // The bridge's namespace last: the others' veth ends are on it until their namespace goes.
  const order = [...namespaces.filter((n) => n !== LAB_NS), ...namespaces.filter((n) => n === LAB_NS)];
  for (const ns of order) {
    const r = await run('ip', ['netns', 'del', ns], { allowFail: true });
    if (r.code !== 0 && (await labNamespaces()).includes(ns)) throw new Error(`lab down: ip netns del ${ns}: ${r.stderr.trim()}`);
  }
  await run('ip', ['link', 'del', ROOT_LINK], { allowFail: true }); // gone with btn-lab already, unless that failed
  rmSync(o.stateFile ?? LAB_STATE_FILE, { force: true });
  if (namespaces.length > 0) o.log?.(`lab down: removed ${namespaces.length} namespaces (${namespaces.join(' ')}), stopped ${pids.length} processes${forced ? ` (${forced} with SIGKILL)` : ''}`);
  return { namespaces, killed: pids.length, forced };
}

// ---------------------------------------------------------------- up

function count(name: string, v: number | undefined, dflt: number, min: number, max: number): number {
  const n = v ?? dflt;
  if (!Number.isInteger(n) || n < min || n > max) throw new BatonError(ErrorCode.BAD_ARGUMENT, `lab: ${name} must be an integer in ${min}..${max} (got ${String(v)})`);
  return n;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

function writeState(lab: Lab): void {
  mkdirSync(dirname(lab.stateFile), { recursive: true });
  const tmp = `${lab.stateFile}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(lab, null, 2) + '\n');
  renameSync(tmp, lab.stateFile);
}

/**
 * Builds the lab (docs/lab.md) after removing any leftovers, starts the
 * servers' processes and waits until each listens, writes the state file and
 * returns the description. On any failure (or `signal` aborted) it removes
 * everything it made and rejects.
 */
export async function labUp(opts: LabOptions = {}): Promise<Lab> {
  const clients = count('clients', opts.clients, 2, 0, MAX_CLIENTS);
  const servers = count('servers', opts.servers, 2, 0, MAX_SERVERS);
  const nodes = count('nodeNamespaces', opts.nodeNamespaces, 0, 0, MAX_NODE_NAMESPACES);
  const underlayMtu = count('underlayMtu', opts.underlayMtu, DEFAULT_UNDERLAY_MTU, 68 + TUNNEL_OVERHEAD, 65535);
  const needCfg = opts.vni === undefined || opts.vips === undefined;
  const cfg = needCfg ? loadConfig(opts.config) : undefined;
  const vni = count('vni', opts.vni ?? cfg!.cluster.vni, 1, 0, 0xffffff);
  const vips = opts.vips ?? [cfg!.cluster.vip];
  const edge = opts.edge ?? BATON_ADDRESS;
  for (const a of [...vips, edge]) if (!IPV4.test(a)) throw new BatonError(ErrorCode.BAD_ARGUMENT, `lab: not an IPv4 address: ${JSON.stringify(a)}`);
  if (vips.length === 0) throw new BatonError(ErrorCode.BAD_ARGUMENT, 'lab: at least one VIP');
  const log = opts.log ?? (() => {});
  const signal = opts.signal;
  const stateFile = opts.stateFile ?? LAB_STATE_FILE;
  const logDir = opts.logDir ?? LAB_LOG_DIR;
  const tunnelMtu = underlayMtu - TUNNEL_OVERHEAD;

  await labDown({ stateFile, log });
  signal?.throwIfAborted();

  const host = (ns: string, address: string, bridgePort: string): LabHost => ({ ns, address, bridgePort });
  const lab: Lab = {
    version: 1,
    phase: 'building',
    createdAt: new Date().toISOString(),
    vni,
    vips: [...vips],
    edge,
    underlayMtu,
    tunnelMtu,
    bridge: { ns: LAB_NS, name: LAB_BRIDGE, subnet: UNDERLAY_SUBNET },
    baton: opts.batonInRoot ? host('', BATON_ADDRESS, 'v-host') : host(BATON_NS, BATON_ADDRESS, 'v-baton'),
    nodes: Array.from({ length: nodes }, (_, i) => host(nodeNs(i + 1), nodeAddress(i + 1), `v-n${i + 1}`)),
    clients: Array.from({ length: clients }, (_, i) => ({
      ...host(clientNs(i + 1), clientAddress(i + 1), `v-c${i + 1}`),
      index: i + 1,
      innerAddress: clientInnerAddress(i + 1),
      routes: vips.map((v) => `${v} encap ip id ${vni} dst ${edge} dev ${TUNNEL_DEVICE} src ${clientInnerAddress(i + 1)}`),
      setup: [`ip addr add ${clientInnerAddress(i + 1)}/32 dev lo`, ...clientHostCommands({ source: clientInnerAddress(i + 1), edge, vni, underlayMtu, vips })],
    })),
    servers: Array.from({ length: servers }, (_, i) => ({
      ...host(serverNs(i + 1), serverAddress(i + 1), `v-s${i + 1}`),
      index: i + 1,
      http: `${serverAddress(i + 1)}:${HTTP_PORT}`,
      udp: `${serverAddress(i + 1)}:${UDP_PORT}`,
      iperf3: `${serverAddress(i + 1)}:${IPERF_PORT}`,
      routes: [`${CLIENT_INNER_SUBNET} encap ip id ${vni} dst ${edge} dev ${TUNNEL_DEVICE} src ${serverAddress(i + 1)}`],
      setup: serverHostCommands({ source: serverAddress(i + 1), edge, vni, underlayMtu, clients: [CLIENT_INNER_SUBNET] }),
      processes: [],
    })),
    namespaces: [],
    stateFile,
    logDir,
  };
  const hosts: LabHost[] = [...(opts.batonInRoot ? [] : [lab.baton]), ...lab.nodes, ...lab.clients, ...lab.servers];
  lab.namespaces = [LAB_NS, ...hosts.map((h) => h.ns)];
  const ip = (args: string[]): Promise<RunResult> => run('ip', args, { signal });
  const nsx = (ns: string, cmd: string, args: string[]): Promise<RunResult> => runInNs(ns, cmd, args, { signal });

  try {
    writeState(lab);
    mkdirSync(logDir, { recursive: true });
    log(`lab: bridge ${LAB_BRIDGE} in ${LAB_NS} (${UNDERLAY_SUBNET}, MTU ${underlayMtu})`);
    await ip(['netns', 'add', LAB_NS]);
    await ip(['-n', LAB_NS, 'link', 'set', 'lo', 'up']);
    await ip(['-n', LAB_NS, 'link', 'add', LAB_BRIDGE, 'mtu', String(underlayMtu), 'type', 'bridge']);
    await ip(['-n', LAB_NS, 'link', 'set', LAB_BRIDGE, 'up']);

    // One host: its namespace, a veth pair (eth0 inside, bridgePort on br0), its address.
    const plumb = async (h: LabHost): Promise<void> => {
      await ip(['netns', 'add', h.ns]);
      await ip(['link', 'add', 'eth0', 'netns', h.ns, 'mtu', String(underlayMtu), 'type', 'veth', 'peer', 'name', h.bridgePort, 'netns', LAB_NS, 'mtu', String(underlayMtu)]);
      await ip(['-n', LAB_NS, 'link', 'set', h.bridgePort, 'master', LAB_BRIDGE, 'up']);
      await ip(['-n', h.ns, 'link', 'set', 'lo', 'up']);
      await ip(['-n', h.ns, 'addr', 'add', `${h.address}/${UNDERLAY_PREFIX_LEN}`, 'dev', 'eth0']);
      await ip(['-n', h.ns, 'link', 'set', 'eth0', 'up']);
    };
    // The kernel tunnel (clientHostCommands / serverHostCommands): VXLAN-GPE in external (metadata) mode,
    // offloads off so every inner packet leaves whole with its checksums done, MTU leaving room for the
    // 36 bytes of encapsulation, the routes through it. One shell per namespace, stopping at the first error.
    const setup = (ns: string, commands: string[]): Promise<unknown> => nsx(ns, 'sh', ['-e', '-c', commands.join('\n')]);
    const settle = async (work: Promise<void>[]): Promise<void> => {
      const rs = await Promise.allSettled(work);
      const bad = rs.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (bad) throw bad.reason;
    };
    log(`lab: ${hosts.length} hosts (baton${opts.batonInRoot ? ' on this host' : ''}${nodes ? `, ${nodes} node namespaces` : ''}, ${clients} clients, ${servers} servers)`);
    if (opts.batonInRoot) {
      // This namespace's end is named with the prefix; it goes with its peer when btn-lab is deleted.
      await run('ip', ['link', 'del', ROOT_LINK], { allowFail: true });
      await ip(['link', 'add', ROOT_LINK, 'mtu', String(underlayMtu), 'type', 'veth', 'peer', 'name', lab.baton.bridgePort, 'netns', LAB_NS, 'mtu', String(underlayMtu)]);
      await ip(['-n', LAB_NS, 'link', 'set', lab.baton.bridgePort, 'master', LAB_BRIDGE, 'up']);
      await ip(['addr', 'add', `${BATON_ADDRESS}/${UNDERLAY_PREFIX_LEN}`, 'dev', ROOT_LINK]);
      await ip(['link', 'set', ROOT_LINK, 'up']);
    }
    await settle(hosts.map(plumb));
    await settle([...lab.clients, ...lab.servers].map(async (h) => void (await setup(h.ns, h.setup))));
    if (opts.services !== false && servers > 0) {
      log(`lab: starting the HTTP/UDP server and iperf3 -s in ${servers} server namespaces`);
      await settle(lab.servers.map((s) => startServer(s, logDir, signal)));
    }
    signal?.throwIfAborted();
    lab.phase = 'up';
    writeState(lab);
    return lab;
  } catch (e) {
    log(`lab: ${signal?.aborted ? 'interrupted' : `failed: ${(e as Error).message}`}; removing what was made`);
    await labDown({ stateFile, log });
    throw e;
  }
}

/** Spawns a long-lived process inside `ns`, detached from us (own process group, output to `log`). */
function daemon(ns: string, cmd: string, args: string[], log: string, stdout: 'pipe' | 'log'): ChildProcess {
  const fd = openSync(log, 'a');
  try {
    const c = inNs(ns, cmd, args, { detached: true, stdio: ['ignore', stdout === 'pipe' ? 'pipe' : fd, fd] });
    return c;
  } finally {
    closeSync(fd);
  }
}

const tail = (file: string): string => {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-5).join(' | ');
  } catch {
    return '';
  }
};

async function startServer(s: LabServer, logDir: string, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted();
  const name = `s${s.index}`;
  const appLog = join(logDir, `${name}-server.log`);
  const iperfLog = join(logDir, `${name}-iperf3.log`);
  const app = daemon(s.ns, process.execPath, labNodeArgs(LAB_SERVER_SCRIPT, ['--name', name, '--http', String(HTTP_PORT), '--udp', String(UDP_PORT)]), appLog, 'pipe');
  s.processes.push({ name: 'server', pid: app.pid ?? -1, log: appLog });
  const iperf = daemon(s.ns, 'iperf3', ['-s', '-p', String(IPERF_PORT)], iperfLog, 'log');
  s.processes.push({ name: 'iperf3', pid: iperf.pid ?? -1, log: iperfLog });
  let iperfExit: string | undefined;
  iperf.once('exit', (code, sig) => (iperfExit = `${sig ?? code}`));
  try {
    await readyLine(app, `lab server in ${s.ns} (log ${appLog}: ${tail(appLog)})`).catch((e: Error) => {
      throw new Error(`${e.message}; log: ${tail(appLog)}`, { cause: e });
    });
    // iperf3 says nothing when it listens: wait until the kernel shows the socket.
    const end = Date.now() + 10_000;
    for (;;) {
      signal?.throwIfAborted();
      if (iperfExit !== undefined) throw new Error(`iperf3 -s in ${s.ns} exited (${iperfExit}): ${tail(iperfLog)}`);
      const r = await runInNs(s.ns, 'ss', ['-Hltn', `sport = :${IPERF_PORT}`], { allowFail: true });
      if (r.stdout.trim() !== '') break;
      if (Date.now() > end) throw new Error(`iperf3 -s in ${s.ns} does not listen on ${IPERF_PORT} after 10 s: ${tail(iperfLog)}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  } finally {
    // They outlive us (labDown stops them): drop our ends.
    app.stdout?.destroy();
    app.unref();
    iperf.unref();
  }
}

// ---------------------------------------------------------------- status

export interface LabStatus {
  /** The state file, if any. */
  lab: Lab | null;
  /** `btn-*` namespaces that exist. */
  namespaces: string[];
  /** The lab's processes and whether each still runs. */
  processes: (LabProcess & { ns: string; alive: boolean })[];
  /** Namespaces expected by the state file that are gone, and `btn-*` ones it does not name. */
  missing: string[];
  unexpected: string[];
}

export function readLabState(stateFile = LAB_STATE_FILE): Lab | null {
  if (!existsSync(stateFile)) return null;
  try {
    return JSON.parse(readFileSync(stateFile, 'utf8')) as Lab;
  } catch {
    return null;
  }
}

export async function labStatus(stateFile = LAB_STATE_FILE): Promise<LabStatus> {
  const lab = readLabState(stateFile);
  const namespaces = await labNamespaces();
  const expected = lab?.namespaces ?? [];
  const processes = (lab?.servers ?? []).flatMap((s) => s.processes.map((p) => ({ ...p, ns: s.ns, alive: p.pid > 0 && alive(p.pid) })));
  return {
    lab,
    namespaces,
    processes,
    missing: expected.filter((n) => !namespaces.includes(n)),
    unexpected: namespaces.filter((n) => !expected.includes(n)),
  };
}

/** A human summary of a lab (what `baton lab up` and `baton lab status` print). */
export function formatLab(lab: Lab): string {
  const rows: string[][] = [['NAMESPACE', 'ROLE', 'ADDRESS', 'INNER / SERVICES', 'TUNNEL ROUTES']];
  rows.push([lab.bridge.ns, 'bridge', `${lab.bridge.name} ${lab.bridge.subnet}`, '', '']);
  rows.push([lab.baton.ns || '(this host)', 'baton', lab.baton.address, '', '']);
  for (const n of lab.nodes) rows.push([n.ns, 'baton node', n.address, '', '']);
  for (const c of lab.clients) rows.push([c.ns, 'client', c.address, c.innerAddress, c.routes.join('; ')]);
  for (const s of lab.servers) {
    const pids = s.processes.map((p) => `${p.name} ${p.pid}`).join(', ');
    rows.push([s.ns, 'server', s.address, `http :${HTTP_PORT}, udp :${UDP_PORT}, iperf3 :${IPERF_PORT}${pids ? ` (${pids})` : ''}`, s.routes.join('; ')]);
  }
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const table = rows.map((r) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()).join('\n');
  return `${table}\nVNI ${lab.vni}, VIPs ${lab.vips.join(', ')}, edge ${lab.edge}:${TUNNEL_PORT}, underlay MTU ${lab.underlayMtu}, ${TUNNEL_DEVICE} MTU ${lab.tunnelMtu}; state ${lab.stateFile}, logs ${lab.logDir}`;
}
