/**
 * The cluster as real processes on real sockets: `baton up`'s launcher starts
 * 1 hash tier, 3 FDs and 4 service nodes (ephemeral ports), verified traffic
 * goes through them over UDP, and garbage thrown at every data and control
 * port is counted and dropped while the verified traffic stays whole.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import dgram from 'node:dgram';
import net from 'node:net';
import { Launcher } from '../cli/launcher.js';
import { parseConfig } from '../shared/config/config.js';
import { parseAddress, type Address } from '../shared/io/address.js';
import { fetchStatus, statusRows } from '../cli/status.js';
import { hashTierDataAddress } from '../cli/traffic-cmd.js';
import { UdpNet } from '../shared/io/datagram.js';
import { RealScheduler } from '../shared/runtime/scheduler.js';
import { TrafficGenerator } from '../traffic/generator.js';
import type { TrafficOptions } from '../traffic/options.js';
import type { BookClient } from '../traffic/loss-books.js';
import { bookClient, settledBooks, formatLossBooks } from './helpers/loss-books.js';
import { buildPacket } from '../shared/packet/build.js';
import { encodeEncap, EncapMeta, Tier, ENCAP_HEADER_LEN } from '../shared/encap/geneve.js';
import { encodeEnvelope } from '../shared/control/codec.js';
import { body, PROTOCOL_VERSION } from '../shared/control/messages.js';
import { ipv4ToInt, IPPROTO_TCP } from '../shared/packet/meta.js';
import { mulberry32 } from '../shared/random.js';
import { scrape, metricValue } from './helpers/metrics.js';

const ephemeral = { dataPort: 0, controlPort: 0, metricsPort: 0 };
const cfg = parseConfig({
  hashTier: { id: 1, name: 'agg-a', ...ephemeral },
  fds: [1, 2, 3].map((i) => ({ id: 10 + i, name: `fd-${i}`, ...ephemeral })),
  services: [1, 2, 3, 4].map((i) => ({ id: 20 + i, name: `svc-${i}`, virtualIp: `10.1.0.${i}`, ...ephemeral })),
  flowTable: { maxFlows: 65536 },
  log: { level: 'warn' },
});

let launcher: Launcher;
let runDir: string;
let manager: Address;
/** Every generator run so far (the nodes' counters are cumulative), for the loss books. */
const clients: (() => BookClient)[] = [];
const sockets: { close(): Promise<void> }[] = [];

/** Verified traffic whose generator stays open for the loss books. */
async function traffic(opts: TrafficOptions) {
  const target = await hashTierDataAddress(manager);
  const socket = await new UdpNet({ recvBufferSize: cfg.dataplane.socketBufferBytes, sendBufferSize: cfg.dataplane.socketBufferBytes }).bind({ host: '127.0.0.1', port: 0 });
  sockets.push(socket);
  const gen = new TrafficGenerator({ vni: cfg.cluster.vni, vip: cfg.cluster.vip, ...opts }, { socket, scheduler: new RealScheduler(), target });
  const name = `client-${clients.length + 1}`;
  clients.push(() => bookClient(name, gen, socket.address, target));
  return gen.run();
}

/** The loss books over every run so far: they must close (every unanswered frame counted). */
async function booksClose(): Promise<void> {
  const books = await settledBooks(launcher, cfg, () => clients.map((c) => c()));
  console.log(formatLossBooks(books));
  expect(books.closes).toBe(true);
  expect(books.unanswered).toBe(0);
}

beforeAll(async () => {
  runDir = mkdtempSync(join(tmpdir(), 'baton-it-'));
  launcher = new Launcher(cfg, { runDir, readyTimeoutMs: 30_000 });
  await launcher.up();
  manager = parseAddress(launcher.managerAddress);
  // Converged: every FD in scope on the manager.
  for (let i = 0; i < 100; i++) {
    const s = await fetchStatus(manager);
    if (statusRows(s).filter((r) => r.role === 'fd' && r.inScope).length === 3 && s.nodes.length === 8) break;
    await new Promise((r) => setTimeout(r, 50));
  }
}, 90_000);

afterAll(async () => {
  for (const sk of sockets) await sk.close();
  const procs = [...launcher.nodes.values()].map((n) => n.proc);
  await launcher.down();
  for (const p of procs) expect(p.exitCode !== null || p.signalCode !== null).toBe(true); // every child reaped
  rmSync(runDir, { recursive: true, force: true });
}, 30_000);

describe('cluster of real processes', () => {
  it('reports every node ACTIVE and the FDs in scope', async () => {
    const rows = statusRows(await fetchStatus(manager));
    expect(rows.map((r) => `${r.node}:${r.role}:${r.status}`)).toEqual([
      'agg-a:hash-tier:ACTIVE',
      'fd-1:fd:ACTIVE',
      'fd-2:fd:ACTIVE',
      'fd-3:fd:ACTIVE',
      'svc-1:service:ACTIVE',
      'svc-2:service:ACTIVE',
      'svc-3:service:ACTIVE',
      'svc-4:service:ACTIVE',
    ]);
    expect(rows.filter((r) => r.role === 'fd').every((r) => r.inScope)).toBe(true);
  });

  it('carries verified TCP-like and UDP traffic over real UDP with 0 lost and 0 duplicated', async () => {
    const r = await traffic({ concurrency: 32, totalFlows: 96, packetsPerFlow: 50, ratePps: 4000, udpRatio: 0.5 });
    expect(r.sent).toBe(96 * 50);
    expect(r.lost).toBe(0);
    expect(r.duplicated).toBe(0);
    expect(r.ok).toBe(true);
    const fd1 = await scrape(launcher.nodes.get('fd-1')!.metrics);
    expect(metricValue(fd1, 'baton_fd_total', 'flows_created')).toBeGreaterThan(0);
    await booksClose();
  }, 60_000);

  it('counts garbage on every data and control port while verified traffic is unaffected', async () => {
    const nodes = [...launcher.nodes.values()];
    const run = traffic({ concurrency: 16, totalFlows: 64, packetsPerFlow: 60, ratePps: 2000, udpRatio: 0.5 });
    const rnd = mulberry32(7);
    const bytes = (n: number) => Uint8Array.from({ length: n }, () => rnd() & 0xff);

    // Data ports (UDP): random bytes, truncated encapsulation, an unknown Baton option version.
    const inner = buildPacket({ srcIp: ipv4ToInt('192.0.2.99'), dstIp: ipv4ToInt('198.51.100.1'), srcPort: 999, dstPort: 80, proto: IPPROTO_TCP, tcpFlags: 0x02 });
    const meta = new EncapMeta();
    meta.tier = Tier.CLIENT;
    meta.vni = cfg.cluster.vni;
    const good = new Uint8Array(ENCAP_HEADER_LEN + inner.length);
    encodeEncap(good, 0, meta, inner, 0, inner.length);
    const truncated = good.subarray(0, ENCAP_HEADER_LEN + 10);
    const wrongVersion = Uint8Array.from(good);
    wrongVersion[12] = (2 << 4) | Tier.CLIENT; // option data version 2
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
    const sendTo = (a: Address, d: Uint8Array) => new Promise<void>((r) => udp.send(d, a.port, a.host, () => r()));
    for (let round = 0; round < 20; round++) {
      for (const n of nodes) {
        const a = parseAddress(n.data);
        await sendTo(a, bytes(1 + (rnd() % 200)));
        await sendTo(a, truncated);
        await sendTo(a, wrongVersion);
      }
    }
    udp.close();

    // Control ports (TCP): raw random bytes, a well-framed garbage protobuf, a wrong protocol version.
    const framed = (payload: Uint8Array) => {
      const b = Buffer.alloc(4 + payload.length);
      b.writeUInt32BE(payload.length, 0);
      b.set(payload, 4);
      return b;
    };
    const wrongProto = encodeEnvelope({ protocolVersion: PROTOCOL_VERSION + 1, seq: 1, replyTo: 0, wantsReply: true, body: body('ping', {}) });
    for (const n of nodes.filter((x) => x.control)) {
      const a = parseAddress(n.control!);
      for (const payload of [framed(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0x0f])), framed(wrongProto), Buffer.from(bytes(64))]) {
        await new Promise<void>((resolve) => {
          const s = net.connect(a.port, a.host, () => s.end(payload));
          s.on('error', () => resolve());
          s.on('close', () => resolve());
          s.resume();
        });
      }
    }

    const r = await run;
    expect(r.lost).toBe(0);
    expect(r.duplicated).toBe(0);
    expect(r.received).toBe(r.sent);
    for (const n of nodes) expect(n.proc.exitCode).toBe(null); // nobody crashed

    const hash = await scrape(launcher.nodes.get('agg-a')!.metrics);
    expect(metricValue(hash, 'baton_hash_tier_total', 'drop_bad_encap')).toBeGreaterThanOrEqual(20);
    expect(metricValue(hash, 'baton_hash_tier_total', 'drop_bad_encap_version')).toBe(20);
    expect(metricValue(hash, 'baton_manager_control_total', 'rx_bad_protobuf')).toBeGreaterThanOrEqual(1);
    expect(metricValue(hash, 'baton_manager_control_total', 'rx_bad_version')).toBeGreaterThanOrEqual(1);
    for (const name of ['fd-1', 'fd-2', 'fd-3']) {
      const m = await scrape(launcher.nodes.get(name)!.metrics);
      expect(metricValue(m, 'baton_fd_dataplane_total', 'drop_bad_encap')).toBeGreaterThanOrEqual(20);
      expect(metricValue(m, 'baton_fd_dataplane_total', 'drop_bad_encap_version')).toBe(20);
      expect(metricValue(m, 'baton_fd_control_total', 'rx_bad_protobuf')).toBeGreaterThanOrEqual(1);
    }
    expect(hash).toMatch(/baton_member_status\{member="fd-1",node="agg-a"\} 2/); // ACTIVE
    const svc = await scrape(launcher.nodes.get('svc-1')!.metrics);
    expect(metricValue(svc, 'baton_service_total', 'rx_bad_encap')).toBeGreaterThanOrEqual(40);
    // Garbage that is not a Baton frame is refused apart from the books; the verified frames still close them.
    await booksClose();
  }, 90_000);
});
