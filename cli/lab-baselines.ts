/**
 * Kernel and user-space balancers to compare Baton with, added to a running
 * lab (cli/lab.ts) without touching what labUp built (docs/lab.md,
 * "Baselines"). Used by bench/cases/real-traffic.ts.
 *
 *   plain    no balancer: a client talks to a server's own address
 *            (10.99.0.20j) from its underlay address, straight over the
 *            bridge: plain kernel routing, no tunnel, nothing to set up.
 *   nftables a namespace btn-nat (10.99.0.2 on the bridge) that forwards
 *            (ip_forward 1) and DNATs NFT_VIP with nftables maps:
 *            `dnat to jhash ip saddr . tcp sport mod 2 map { 0 : s1, 1 : s2 }`
 *            for HTTP (per connection, as Baton hashes), `jhash ip saddr`
 *            for iperf3 (its control and data connections must reach one
 *            server: source affinity, as Baton's iperf3 service has). The
 *            servers see the client's address, so the replies must come back
 *            through the box to be un-NATed: clients send from a second
 *            address on lo, 172.17.0.i (routed `NFT_VIP via 10.99.0.2 src
 *            172.17.0.i`), and the servers route 172.17.0.0/16 via 10.99.0.2
 *            — Baton's 172.16.0.0/16 routes through vx0 stay as they are.
 *            One-armed (in and out on the same eth0), redirects off.
 *   haproxy  HAProxy (Debian's haproxy) in TCP mode in a namespace
 *            btn-haproxy (10.99.0.3), listening on HAPROXY_VIP (on its lo;
 *            clients route it via 10.99.0.3): `balance roundrobin` for
 *            HTTP, `balance source` for iperf3. It connects to the servers
 *            from 10.99.0.3, so replies need no routes.
 *
 * Every namespace is `btn-…`, so labDown() removes these too.
 */
import { writeFileSync, mkdirSync, openSync, closeSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  LAB_NS,
  LAB_BRIDGE,
  LAB_LOG_DIR,
  LAB_RUN_DIR,
  UNDERLAY_PREFIX_LEN,
  HTTP_PORT,
  IPERF_PORT,
  run,
  runInNs,
  inNs,
  clientNs,
  serverNs,
  type Lab,
} from './lab.js';

export const NFT_NS = 'btn-nat';
export const NFT_ADDRESS = '10.99.0.2';
export const NFT_VIP = '198.51.100.2';
/** The clients' second source range, whose replies the servers route via the DNAT box. */
export const NFT_CLIENT_SUBNET = '172.17.0.0/16';
export const nftClientAddress = (i: number): string => `172.17.0.${i}`;
export const NFT_TABLE = 'baton_baseline';

export const HAPROXY_NS = 'btn-haproxy';
export const HAPROXY_ADDRESS = '10.99.0.3';
export const HAPROXY_VIP = '198.51.100.3';

export interface Baselines {
  /** Per target: the address a client connects to, and the servers behind it. */
  plain: { servers: string[] };
  nftables: { ns: string; address: string; vip: string; clientSources: string[]; ruleset: string };
  haproxy: { ns: string; address: string; vip: string; config: string; pid: number; log: string };
}

const which = async (cmd: string): Promise<boolean> => (await run('sh', ['-c', `command -v ${cmd}`], { allowFail: true })).code === 0;

/** null when nft and haproxy are installed, else what is missing (with the apt line). */
export async function baselinePreflight(): Promise<string | null> {
  const missing: string[] = [];
  for (const [cmd, pkg] of [
    ['nft', 'nftables'],
    ['haproxy', 'haproxy'],
  ] as const)
    if (!(await which(cmd))) missing.push(`${cmd} (apt-get install ${pkg})`);
  return missing.length ? `the baselines need ${missing.join(', ')}` : null;
}

/** The nftables ruleset of the DNAT box (nft -f input). */
export function nftRuleset(servers: string[]): string {
  const map = `{ ${servers.map((s, i) => `${i} : ${s}`).join(', ')} }`;
  const n = servers.length;
  return [
    `table ip ${NFT_TABLE} {`,
    `  chain pre {`,
    `    type nat hook prerouting priority dstnat; policy accept;`,
    `    ip daddr ${NFT_VIP} tcp dport ${IPERF_PORT} dnat to jhash ip saddr mod ${n} map ${map}`,
    `    ip daddr ${NFT_VIP} tcp dport ${HTTP_PORT} dnat to jhash ip saddr . tcp sport mod ${n} map ${map}`,
    `  }`,
    `}`,
    '',
  ].join('\n');
}

/** HAProxy's configuration: TCP mode, round robin for HTTP, source affinity for iperf3, no health checks. */
export function haproxyConfig(servers: string[]): string {
  const backend = (port: number) => servers.map((s, i) => `  server s${i + 1} ${s}:${port}`).join('\n');
  return `global
  # Each connection holds two descriptors: stays under a 20,000 open-file limit.
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend http
  bind ${HAPROXY_VIP}:${HTTP_PORT}
  default_backend http
backend http
  balance roundrobin
${backend(HTTP_PORT)}
frontend iperf3
  bind ${HAPROXY_VIP}:${IPERF_PORT}
  default_backend iperf3
backend iperf3
  balance source
${backend(IPERF_PORT)}
`;
}

async function plumb(ns: string, address: string, bridgePort: string, mtu: number): Promise<void> {
  await run('ip', ['netns', 'add', ns]);
  await run('ip', ['link', 'add', 'eth0', 'netns', ns, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', bridgePort, 'netns', LAB_NS, 'mtu', String(mtu)]);
  await run('ip', ['-n', LAB_NS, 'link', 'set', bridgePort, 'master', LAB_BRIDGE, 'up']);
  await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  await run('ip', ['-n', ns, 'addr', 'add', `${address}/${UNDERLAY_PREFIX_LEN}`, 'dev', 'eth0']);
  await run('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const tail = (file: string): string => {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-3).join(' | ');
  } catch {
    return '';
  }
};

const sh = (ns: string, lines: string[]) => runInNs(ns, 'sh', ['-e', '-c', lines.join('\n')]);

/**
 * Adds the nftables DNAT box and HAProxy to `lab` (its clients and servers),
 * with the client and server routes they need. Rejects (after baselineDown)
 * if any step fails.
 */
export async function baselineUp(lab: Lab, o: { log?: (line: string) => void } = {}): Promise<Baselines> {
  const servers = lab.servers.map((s) => s.address);
  const log = o.log ?? (() => {});
  await baselineDown(lab);
  try {
    log(`baselines: nftables DNAT in ${NFT_NS} (${NFT_ADDRESS}, VIP ${NFT_VIP}), HAProxy in ${HAPROXY_NS} (${HAPROXY_ADDRESS}, VIP ${HAPROXY_VIP})`);
    await plumb(NFT_NS, NFT_ADDRESS, 'v-nat', lab.underlayMtu);
    await plumb(HAPROXY_NS, HAPROXY_ADDRESS, 'v-hap', lab.underlayMtu);
    const ruleset = nftRuleset(servers);
    await sh(NFT_NS, [
      'sysctl -qw net.ipv4.ip_forward=1',
      // One-armed: replies from a server leave by the interface they came in on; no ICMP redirects to it.
      'sysctl -qw net.ipv4.conf.all.send_redirects=0',
      'sysctl -qw net.ipv4.conf.eth0.send_redirects=0',
      ...lab.clients.map((c) => `ip route add ${nftClientAddress(c.index)}/32 via ${c.address}`),
    ]);
    await runInNs(NFT_NS, 'nft', ['-f', '-'], { input: ruleset });
    for (const c of lab.clients)
      await sh(c.ns, [
        `ip addr add ${nftClientAddress(c.index)}/32 dev lo`,
        `ip route add ${NFT_VIP}/32 via ${NFT_ADDRESS} src ${nftClientAddress(c.index)}`,
        `ip route add ${HAPROXY_VIP}/32 via ${HAPROXY_ADDRESS}`,
      ]);
    for (const s of lab.servers) await sh(s.ns, [`ip route add ${NFT_CLIENT_SUBNET} via ${NFT_ADDRESS}`]);

    await run('ip', ['-n', HAPROXY_NS, 'addr', 'add', `${HAPROXY_VIP}/32`, 'dev', 'lo']);
    const config = haproxyConfig(servers);
    mkdirSync(LAB_LOG_DIR, { recursive: true });
    const cfgFile = join(LAB_RUN_DIR, 'haproxy.cfg');
    writeFileSync(cfgFile, config);
    const logFile = join(LAB_LOG_DIR, 'haproxy.log');
    const fd = openSync(logFile, 'a');
    // -db: foreground, no daemon; labDown (or baselineDown) stops it with the namespace's other processes.
    const proc = inNs(HAPROXY_NS, 'haproxy', ['-db', '-f', cfgFile], { detached: true, stdio: ['ignore', fd, fd] });
    closeSync(fd);
    let exited: string | undefined;
    proc.once('exit', (code, sig) => (exited = String(sig ?? code)));
    proc.unref();
    const end = Date.now() + 10_000;
    for (;;) {
      if (exited !== undefined) throw new Error(`haproxy in ${HAPROXY_NS} exited (${exited}): ${tail(logFile)}`);
      const r = await runInNs(HAPROXY_NS, 'ss', ['-Hltn'], { allowFail: true });
      if (r.stdout.includes(`${HAPROXY_VIP}:${HTTP_PORT}`) && r.stdout.includes(`${HAPROXY_VIP}:${IPERF_PORT}`)) break;
      if (Date.now() > end) throw new Error(`haproxy in ${HAPROXY_NS} does not listen after 10 s; log ${logFile}`);
      await new Promise((r) => setTimeout(r, 25));
    }
    return {
      plain: { servers },
      nftables: { ns: NFT_NS, address: NFT_ADDRESS, vip: NFT_VIP, clientSources: lab.clients.map((c) => nftClientAddress(c.index)), ruleset },
      haproxy: { ns: HAPROXY_NS, address: HAPROXY_ADDRESS, vip: HAPROXY_VIP, config, pid: proc.pid ?? -1, log: logFile },
    };
  } catch (e) {
    log(`baselines: failed: ${(e as Error).message}; removing them`);
    await baselineDown(lab);
    throw e;
  }
}

/**
 * Removes what baselineUp added (idempotent): stops the processes in
 * btn-nat and btn-haproxy, deletes both namespaces, and takes the routes and
 * addresses out of the lab's clients and servers. labDown() does all of it
 * too (every `btn-*` namespace goes).
 */
export async function baselineDown(lab?: Lab): Promise<void> {
  for (const ns of [HAPROXY_NS, NFT_NS]) {
    const r = await run('ip', ['netns', 'pids', ns], { allowFail: true });
    const pids = r.stdout.split(/\s+/).filter((s) => /^\d+$/.test(s)).map(Number);
    for (const p of pids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    const end = Date.now() + 3000;
    while (Date.now() < end && pids.some(alive)) await new Promise((r) => setTimeout(r, 20));
    await run('ip', ['netns', 'del', ns], { allowFail: true });
  }
  if (!lab) return;
  for (const c of lab.clients) {
    await runInNs(clientNs(c.index), 'ip', ['route', 'del', `${NFT_VIP}/32`], { allowFail: true });
    await runInNs(clientNs(c.index), 'ip', ['route', 'del', `${HAPROXY_VIP}/32`], { allowFail: true });
    await runInNs(clientNs(c.index), 'ip', ['addr', 'del', `${nftClientAddress(c.index)}/32`, 'dev', 'lo'], { allowFail: true });
  }
  for (const s of lab.servers) await runInNs(serverNs(s.index), 'ip', ['route', 'del', NFT_CLIENT_SUBNET], { allowFail: true });
}

