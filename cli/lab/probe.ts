/**
 * Small tools the lab's tests (and a curious user) run inside a namespace,
 * where the test process itself cannot go (docs/lab.md, "Probes"):
 *
 *   udp-query --host H --port P [--count K] [--first-id n] [--timeout ms]
 *       sends K requests to the lab's UDP server (id = first-id + i) and prints
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
 */
import { createSocket, type RemoteInfo } from 'node:dgram';
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
  const servers: Record<string, number> = {};
  s.on('message', (m) => {
    if (m.length < 4) return;
    const id = (m[0]! << 8) | m[1]!;
    if (!want.delete(id)) return;
    got.push(id);
    const name = m.subarray(4).toString('ascii');
    servers[name] = (servers[name] ?? 0) + 1;
    if (want.size === 0) done();
  });
  const timer = setTimeout(() => done(), Number(o.timeout));
  const done = (): void => {
    clearTimeout(timer);
    process.stdout.write(JSON.stringify({ sent: count, received: got.length, ids: got, servers, missing: [...want] }) + '\n');
    s.close();
    process.exitCode = want.size === 0 ? 0 : 1;
  };
  s.bind(0, () => {
    for (let i = 0; i < count; i++) {
      const id = (first + i) & 0xffff;
      want.add(id);
      s.send(Buffer.from([id >>> 8, id & 0xff, 0, 0, 0x71]), port, host);
    }
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
  default:
    console.error('usage: probe.ts udp-query|send|listen|relay [options] (see the header of cli/lab/probe.ts)');
    process.exit(2);
}
