/**
 * The loss books of a cluster this process launched (traffic/loss-books.ts,
 * docs/loss-accounting.md): every running node's /metrics, every stopped
 * node's final counters (launcher.retired) and the traffic generators' own
 * link counts, read once the counts stop moving (a condition, not a sleep).
 * Used by `baton up --demo` and by the system tests.
 */
import type { Launcher } from './launcher.js';
import type { BatonConfig } from '../shared/config/config.js';
import { formatAddress, type Address } from '../shared/io/address.js';
import { TrafficGenerator, type Progress } from '../traffic/generator.js';
import type { TrafficOptions } from '../traffic/options.js';
import type { FloodClient } from '../traffic/flood.js';
import type { TrafficReport } from '../traffic/report.js';
import { UdpNet } from '../shared/io/datagram.js';
import { RealScheduler } from '../shared/runtime/scheduler.js';
import { hashTierDataAddress } from './traffic-cmd.js';
import { closeLossBooks, type BookClient, type BookNode, type BookRole, type LossBooks } from '../traffic/loss-books.js';

export function roleOf(cfg: BatonConfig, name: string): BookRole {
  if (cfg.hashTiers.some((t) => t.name === name)) return 'hash';
  if (cfg.fds.some((f) => f.name === name)) return 'fd';
  return 'service';
}

/** A generator's (or a flood's) side of the books (its counts are live: late echoes keep counting until its socket closes). */
export function bookClient(name: string, gen: Pick<TrafficGenerator, 'links'> | Pick<FloodClient, 'links'>, socket: Address, target: Address): BookClient {
  const l = gen.links;
  return { name, id: 0, address: formatAddress(socket), target: formatAddress(target), framesSent: l.framesSent, accepted: l.accepted, sendErrorFrames: l.sendErrorFrames, rx: l.rx.entries() };
}

async function nodesOf(launcher: Launcher, cfg: BatonConfig, skip: ReadonlySet<number>): Promise<BookNode[]> {
  const out: BookNode[] = [];
  for (const n of launcher.nodes.values()) {
    if (skip.has(n.pid)) continue;
    const text = await (await fetch(n.metrics, { signal: AbortSignal.timeout(5000) })).text();
    out.push({ name: n.name, role: roleOf(cfg, n.name), id: n.id, pid: n.pid, data: n.data, metrics: text });
  }
  for (const r of launcher.retired) {
    if (skip.has(r.pid)) continue;
    const id = r.id ?? [...cfg.hashTiers, ...cfg.fds, ...cfg.services].find((x) => x.name === r.name)?.id ?? -1;
    out.push({ name: r.name, role: roleOf(cfg, r.name), id, pid: r.pid, data: r.data ?? `unknown:${r.pid}`, metrics: r.metrics, stopped: true });
  }
  return out;
}

/**
 * Reads the books until two readings 100 ms apart agree on every total (the
 * cluster is quiet), at most `timeoutMs`; returns the last reading.
 * `skipPids` leaves out processes whose counters cannot be known (a SIGKILLed one).
 */
export async function settledBooks(launcher: Launcher, cfg: BatonConfig, clients: () => BookClient[], opts: { timeoutMs?: number; skipPids?: number[] } = {}): Promise<LossBooks> {
  const skip = new Set(opts.skipPids ?? []);
  const end = Date.now() + (opts.timeoutMs ?? 10_000);
  let prev = '';
  for (;;) {
    const b = closeLossBooks(await nodesOf(launcher, cfg, skip), clients());
    const key = JSON.stringify([b.framesReturned, b.counted, b.links.map((l) => [l.sent, l.received]), b.nodes.map((n) => [n.in, n.out])]);
    if (key === prev || Date.now() > end) return b;
    prev = key;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Verified traffic as `baton traffic` sends it, with the generator's socket
 * kept open after the run so that late echoes still count, until close():
 * what `baton up --demo` needs to close the books.
 */
export async function bookedTraffic(
  cfg: BatonConfig,
  manager: Address,
  opts: TrafficOptions,
  progress?: (p: Progress) => void,
): Promise<{ report: TrafficReport; client: () => BookClient; close: () => Promise<void> }> {
  const target = await hashTierDataAddress(manager);
  const socket = await new UdpNet({ recvBufferSize: cfg.dataplane.socketBufferBytes, sendBufferSize: cfg.dataplane.socketBufferBytes }).bind({ host: '127.0.0.1', port: 0 });
  try {
    const tcp = cfg.cluster.services.find((s) => s.proto === 'tcp');
    const udp = cfg.cluster.services.find((s) => s.proto === 'udp');
    const gen = new TrafficGenerator(
      { vip: cfg.cluster.vip, vni: cfg.cluster.vni, ...(tcp ? { tcpPort: tcp.port } : { udpRatio: 1 }), ...(udp ? { udpPort: udp.port } : { udpRatio: 0 }), ...opts },
      { socket, scheduler: new RealScheduler(), target },
      progress,
    );
    const report = await gen.run();
    return { report, client: () => bookClient('client', gen, socket.address, target), close: () => socket.close() };
  } catch (e) {
    await socket.close();
    throw e;
  }
}
