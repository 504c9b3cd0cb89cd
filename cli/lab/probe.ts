/**
 * Small tools the lab's tests (and a curious user) run inside a namespace,
 * where the test process itself cannot go (docs/lab.md, "Probes"):
 *
 *   udp-query --host H --port P [--count K] [--first-id n] [--timeout ms] [--rounds R --gap ms]
 *       sends K requests (R rounds of K, gap ms apart, from one socket: one
 *       UDP flow) to the lab's UDP server (id = first-id + i) and prints
 *       one JSON line: { sent, received, ids, servers: {name: count}, missing }.
 *   send --host H --port P [--text s | --hex h] [--bind-port p]
 *       sends one UDP datagram (the kernel picks the source address by route).
 *   listen --host H --port P [--count K] [--timeout ms]
 *       prints `READY {}`, then one JSON line per datagram received
 *       ({ from, port, len, hex }); exits 0 after K, 1 at the timeout.
 *   relay --listen H:P --vip V --server S [--vni n]
 *       the lab's self-test balancer, no Baton: VXLAN-GPE datagrams from
 *       clients to the VIP get the inner destination rewritten VIP → S and go
 *       to S:4790; those from S get the inner source rewritten S → VIP and go
 *       back to the client host they came from. Every inner packet's IPv4 and
 *       TCP/UDP checksums are verified on the way (kernel endpoints with
 *       offloads off send complete ones). SIGTERM prints one JSON line of
 *       counters and exits.
 *   http-keepalive --url U --connections N --rate R [--duration ms]
 *       N keep-alive connections (one socket each, never more), R requests
 *       per second in all, for --duration; prints `READY {}` once every
 *       connection has answered once, then at the end (or on SIGTERM, once
 *       the requests in flight are answered) one JSON line: { connections, sockets (opened, > connections means a
 *       reconnect), requests, ok, statuses, errors, bytes }.
 *   http-short --url U --count N [--concurrency C]
 *       N requests, each on a new connection (Connection: close); prints one
 *       JSON line { requests, ok, statuses, errors, connectMs: {p50, p99, max} }.
 */
import { createSocket, type RemoteInfo } from 'node:dgram';
import { Agent, request } from 'node:http';
import type { Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { PacketMeta, ipv4ToInt, intToIpv4 } from '../../shared/packet/meta.js';
import { parseIPv4 } from '../../shared/packet/parse.js';
import { rewriteDst, rewriteSrc } from '../../shared/packet/rewrite.js';
import { REJECT_NAMES } from '../../shared/packet/reject.js';

const GPE_PORT = 4790;
const GPE_HEADER = 8;

function opts(argv: string[]) {
  return parseArgs({
    args: argv,
    options: {
      host: { type: 'string' },
      port: { type: 'string' },
      count: { type: 'string', default: '1' },
      'first-id': { type: 'string', default: '1' },
      timeout: { type: 'string', default: '3000' },
      text: { type: 'string' },
      hex: { type: 'string' },
      'bind-port': { type: 'string', default: '0' },
      listen: { type: 'string' },
      vip: { type: 'string' },
      server: { type: 'string' },
      vni: { type: 'string' },
      url: { type: 'string' },
      connections: { type: 'string', default: '1' },
      rate: { type: 'string', default: '10' },
      duration: { type: 'string', default: '10000' },
      concurrency: { type: 'string', default: '16' },
      rounds: { type: 'string', default: '1' },
      gap: { type: 'string', default: '0' },
    },
  }).values;
}

type Opts = ReturnType<typeof opts>;

function need(o: Opts, k: keyof Opts): string {
  const v = o[k];
  if (typeof v !== 'string' || v === '') throw new Error(`--${String(k)} is required`);
  return v;
}

function udpQuery(o: Opts): void {
  const host = need(o, 'host');
  const port = Number(need(o, 'port'));
  const count = Number(o.count);
  const first = Number(o['first-id']);
  const s = createSocket('udp4');
  const want = new Set<number>();
  const got: number[] = [];
  const rounds = Number(o.rounds);
  const gap = Number(o.gap);
  let round = 0;
  const servers: Record<string, number> = {};
  s.on('message', (m) => {
    if (m.length < 4) return;
    const id = (m[0]! << 8) | m[1]!;
    if (!want.delete(id)) return;
    got.push(id);
    const name = m.subarray(4).toString('ascii');
    servers[name] = (servers[name] ?? 0) + 1;
    if (want.size === 0 && round >= rounds) done();
  });
  const timer = setTimeout(() => done(), Number(o.timeout) + Number(o.rounds) * Number(o.gap));
  const done = (): void => {
    clearTimeout(timer);
    process.stdout.write(JSON.stringify({ sent: count * Number(o.rounds), received: got.length, ids: got, servers, missing: [...want] }) + '\n');
    s.close();
    process.exitCode = want.size === 0 ? 0 : 1;
  };
  // --rounds R --gap ms: R rounds of `count` requests, `gap` ms apart, from this one socket (one UDP flow, which a
  // disengage in the meantime moves); the timeout runs from the last round.
  s.bind(0, () => {
    const send = () => {
      for (let i = 0; i < count; i++) {
        const id = (first + round * count + i) & 0xffff;
        want.add(id);
        s.send(Buffer.from([id >>> 8, id & 0xff, 0, 0, 0x71]), port, host);
      }
      if (++round < rounds) setTimeout(send, gap);
      else timer.refresh();
    };
    send();
  });
}

function send(o: Opts): void {
  const host = need(o, 'host');
  const port = Number(need(o, 'port'));
  const data = o.hex !== undefined ? Buffer.from(o.hex, 'hex') : Buffer.from(o.text ?? 'baton lab', 'utf8');
  const s = createSocket('udp4');
  s.bind(Number(o['bind-port']), () =>
    s.send(data, port, host, (err) => {
      if (err) {
        console.error(`send: ${err.message}`);
        process.exitCode = 1;
      }
      s.close();
    }),
  );
}

function listen(o: Opts): void {
  const host = need(o, 'host');
  const port = Number(need(o, 'port'));
  const count = Number(o.count);
  const s = createSocket('udp4');
  let n = 0;
  const timer = setTimeout(() => {
    s.close();
    process.exitCode = 1;
  }, Number(o.timeout));
  s.on('message', (m: Buffer, r: RemoteInfo) => {
    process.stdout.write(JSON.stringify({ from: r.address, port: r.port, len: m.length, hex: m.toString('hex') }) + '\n');
    if (++n >= count) {
      clearTimeout(timer);
      s.close();
    }
  });
  s.bind(port, host, () => process.stdout.write('READY {}\n'));
}

function relay(o: Opts): void {
  const [lh, lp] = need(o, 'listen').split(':');
  const vip = ipv4ToInt(need(o, 'vip'));
  const server = ipv4ToInt(need(o, 'server'));
  const serverStr = intToIpv4(server);
  const vni = o.vni === undefined ? -1 : Number(o.vni);
  const meta = new PacketMeta();
  const clientHost = new Map<number, string>(); // inner client address → its underlay address
  const c = { toServer: 0, toClient: 0, badEncap: 0, wrongVni: 0, unknown: 0, rejects: {} as Record<string, number>, outerSrcPorts: 0 };
  const ports = new Set<number>();
  const s = createSocket({ type: 'udp4', recvBufferSize: 8 * 1024 * 1024, sendBufferSize: 8 * 1024 * 1024 });
  s.on('message', (m: Buffer, r: RemoteInfo) => {
    if (m.length < GPE_HEADER + 20 || m[0] !== 0x0c || m[3] !== 0x01) return void c.badEncap++;
    if (vni >= 0 && ((m[4]! << 16) | (m[5]! << 8) | m[6]!) !== vni) return void c.wrongVni++;
    const why = parseIPv4(m, GPE_HEADER, m.length - GPE_HEADER, meta, true);
    if (why !== 0) {
      const k = REJECT_NAMES[why] ?? String(why);
      c.rejects[k] = (c.rejects[k] ?? 0) + 1;
      return;
    }
    if (meta.dstIp === vip) {
      clientHost.set(meta.srcIp, r.address);
      ports.add(r.port);
      rewriteDst(m, meta, server, meta.dstPort);
      c.toServer++;
      s.send(m, GPE_PORT, serverStr);
    } else if (meta.srcIp === server && clientHost.has(meta.dstIp)) {
      rewriteSrc(m, meta, vip, meta.srcPort);
      c.toClient++;
      s.send(m, GPE_PORT, clientHost.get(meta.dstIp)!);
    } else c.unknown++;
  });
  const [host, port] = [lh!, Number(lp)];
  s.bind(port, host, () => process.stdout.write('READY {}\n'));
  process.on('SIGTERM', () => {
    c.outerSrcPorts = ports.size;
    process.stdout.write(JSON.stringify(c) + '\n', () => process.exit(0));
  });
}

/** One GET on `agent` (or a fresh connection); resolves with the status (0 on error) and the bytes read. */
function get(url: string, agent: Agent | false, onSocket?: (s: Socket) => void, timeoutMs = 10_000): Promise<{ status: number; bytes: number; error?: string }> {
  return new Promise((resolve) => {
    const req = request(url, { agent, headers: agent === false ? { connection: 'close' } : {} }, (res) => {
      let bytes = 0;
      res.on('data', (d: Buffer) => (bytes += d.length));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes }));
      res.on('error', (e) => resolve({ status: 0, bytes, error: e.message }));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, bytes: 0, error: e.message }));
    if (onSocket) req.on('socket', onSocket);
    req.end();
  });
}

function tally(statuses: Record<string, number>, errors: Record<string, number>, r: { status: number; error?: string }): void {
  statuses[r.status] = (statuses[r.status] ?? 0) + 1;
  if (r.error) errors[r.error] = (errors[r.error] ?? 0) + 1;
}

async function httpKeepalive(o: Opts): Promise<void> {
  const url = need(o, 'url');
  const n = Number(o.connections);
  const rate = Number(o.rate);
  const duration = Number(o.duration);
  const agents = Array.from({ length: n }, () => new Agent({ keepAlive: true, maxSockets: 1, keepAliveMsecs: 1000 }));
  const sockets = new Set<Socket>();
  const out = { connections: n, sockets: 0, requests: 0, ok: 0, statuses: {} as Record<string, number>, errors: {} as Record<string, number>, bytes: 0 };
  const track = (s: Socket) => {
    if (!sockets.has(s)) {
      sockets.add(s);
      out.sockets++;
    }
  };
  const one = async (i: number) => {
    out.requests++;
    const r = await get(url, agents[i]!, track);
    tally(out.statuses, out.errors, r);
    if (r.status === 200) out.ok++;
    out.bytes += r.bytes;
  };
  // SIGTERM: no new request; the ones in flight finish (at most 10 s), then the report.
  let stopped = false;
  let reported = false;
  const finish = () => {
    if (reported) return;
    reported = true;
    for (const a of agents) a.destroy();
    process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
  };
  process.on('SIGTERM', () => {
    stopped = true;
    setTimeout(finish, 10_000).unref();
  });
  await Promise.all(agents.map((_, i) => one(i)));
  process.stdout.write('READY {}\n');
  const end = Date.now() + duration;
  const gap = (1000 * n) / rate; // each connection's period
  await Promise.all(
    agents.map(async (_, i) => {
      await new Promise((r) => setTimeout(r, (gap * i) / n));
      while (!stopped && Date.now() < end) {
        const t = Date.now();
        await one(i);
        const wait = gap - (Date.now() - t);
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
    }),
  );
  finish();
}

async function httpShort(o: Opts): Promise<void> {
  const url = need(o, 'url');
  const count = Number(o.count);
  const conc = Number(o.concurrency);
  const out = { requests: 0, ok: 0, statuses: {} as Record<string, number>, errors: {} as Record<string, number>, connectMs: { p50: 0, p99: 0, max: 0 } };
  const connect: number[] = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      const t0 = performance.now();
      out.requests++;
      const r = await get(url, false, (s) => s.once('connect', () => connect.push(performance.now() - t0)));
      tally(out.statuses, out.errors, r);
      if (r.status === 200) out.ok++;
    }
  };
  await Promise.all(Array.from({ length: conc }, worker));
  connect.sort((a, b) => a - b);
  const q = (p: number) => Math.round((connect[Math.min(connect.length - 1, Math.floor(p * connect.length))] ?? 0) * 100) / 100;
  out.connectMs = { p50: q(0.5), p99: q(0.99), max: q(1) };
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exitCode = out.ok === count ? 0 : 1;
}

const [cmd, ...rest] = process.argv.slice(2);
const o = opts(rest);
process.stdout.on('error', () => {});
switch (cmd) {
  case 'udp-query':
    udpQuery(o);
    break;
  case 'send':
    send(o);
    break;
  case 'listen':
    listen(o);
    break;
  case 'relay':
    relay(o);
    break;
  case 'http-keepalive':
    void httpKeepalive(o);
    break;
  case 'http-short':
    void httpShort(o);
    break;
  default:
    console.error('usage: probe.ts udp-query|send|listen|relay|http-keepalive|http-short [options] (see the header of cli/lab/probe.ts)');
    process.exit(2);
}
