/**
 * The loss books of a real-process cluster (traffic/loss-books.ts): every
 * running node's /metrics, every stopped node's final counters
 * (launcher.retired) and the traffic generators' own link counts, read once
 * the counts stop moving (a condition, not a sleep).
 */
import type { Launcher } from '../../cli/launcher.js';
import type { BatonConfig } from '../../shared/config/config.js';
import { formatAddress, type Address } from '../../shared/io/address.js';
import type { TrafficGenerator } from '../../traffic/generator.js';
import { closeLossBooks, formatLossBooks, type BookClient, type BookNode, type BookRole, type LossBooks } from '../../traffic/loss-books.js';

export function roleOf(cfg: BatonConfig, name: string): BookRole {
  if (cfg.hashTiers.some((t) => t.name === name)) return 'hash';
  if (cfg.fds.some((f) => f.name === name)) return 'fd';
  return 'service';
}

/** The generator's side of the books (its counts are live: late echoes keep counting until its socket closes). */
export function bookClient(name: string, gen: TrafficGenerator, socket: Address, target: Address): BookClient {
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

export { formatLossBooks };
