/**
 * The baseline for the end-to-end bench: do-nothing UDP relay stages in one
 * process. Each stage is a UDP port that forwards every datagram, unchanged
 * and unparsed, to a fixed next hop (one send per datagram, exactly like a
 * Baton node's batched datagrams). A stage may instead be a ServiceNode (the
 * same echo backend the cluster uses), so both paths do identical service work.
 *
 * Protocol with the parent: argv[2] = JSON { stages: ("relay" | "service")[] };
 * prints `READY {"ports":[...]}`; then reads stdin lines
 * `{"next":[{host,port}|null,...],"vni":n}` (for a service stage, next = where replies go;
 * the first line starts the stages, later lines only change relay routes).
 */
import dgram from 'node:dgram';
import { createInterface } from 'node:readline';
import { UdpNet } from '../shared/io/datagram.js';
import { RealScheduler } from '../shared/runtime/scheduler.js';
import { ServiceNode } from '../service-node/service-node.js';

const spec = JSON.parse(process.argv[2] ?? '{"stages":[]}') as { stages: ('relay' | 'service')[] };
const BUF = 8 * 1024 * 1024;

async function main(): Promise<void> {
  const relays: (dgram.Socket | null)[] = [];
  const services: (Awaited<ReturnType<UdpNet['bind']>> | null)[] = [];
  const ports: number[] = [];
  const net = new UdpNet({ recvBufferSize: BUF, sendBufferSize: BUF });
  for (const s of spec.stages) {
    if (s === 'relay') {
      const sock = dgram.createSocket('udp4');
      await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
      sock.setRecvBufferSize(BUF);
      sock.setSendBufferSize(BUF);
      sock.on('error', () => {});
      relays.push(sock);
      services.push(null);
      ports.push(sock.address().port);
    } else {
      const sock = await net.bind({ host: '127.0.0.1', port: 0 });
      relays.push(null);
      services.push(sock);
      ports.push(sock.address.port);
    }
  }
  process.stdout.write(`READY ${JSON.stringify({ ports })}\n`);
  // Each stdin line (re)sets the routes; a service stage is created on the first one.
  const next: ({ host: string; port: number } | null)[] = spec.stages.map(() => null);
  let started = false;
  createInterface({ input: process.stdin }).on('line', (line) => {
    const cfg = JSON.parse(line) as { next: ({ host: string; port: number } | null)[]; vni: number };
    cfg.next.forEach((n, i) => (next[i] = n));
    if (started) return;
    started = true;
    spec.stages.forEach((s, i) => {
      if (s === 'relay') {
        const sock = relays[i]!;
        sock.on('message', (msg) => {
          const to = next[i];
          if (to) sock.send(msg, to.port, to.host);
        });
      } else {
        new ServiceNode({ id: 100 + i, socket: services[i]!, scheduler: new RealScheduler(), returnTo: next[i]!, vni: cfg.vni });
      }
    });
  });
  process.stdin.on('end', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
