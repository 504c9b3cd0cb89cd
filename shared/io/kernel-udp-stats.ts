/**
 * Datagrams the kernel dropped on a UDP socket (receive buffer full), read
 * from /proc/net/udp{,6} — the "drops" column of the socket's line — and the
 * bytes still waiting in its receive queue (the "rx_queue" column). A node's
 * own counters cannot see these (the packet never reached user space), so
 * each node exports this as a metric and the system tests print it when the
 * verifier reports loss. Linux only; elsewhere, or if the socket is not
 * listed, the answer is null. Read off the hot path (metrics scrape).
 */
import { readFileSync } from 'node:fs';
import type { Address } from './address.js';

/** /proc/net/udp prints the IPv4 address as the u32 in host order: 127.0.0.1 → 0100007F on x86. */
function procIPv4(host: string): string {
  const b = host.split('.').map(Number);
  if (b.length !== 4 || b.some((x) => !(x >= 0 && x <= 255))) return '';
  const le = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
  const order = le ? [3, 2, 1, 0] : [0, 1, 2, 3];
  return order.map((i) => b[i]!.toString(16).padStart(2, '0')).join('').toUpperCase();
}

/** The fields of the socket's line (split on blanks), or null. */
function socketLine(procText: string, addr: Address): string[] | null {
  const port = addr.port.toString(16).toUpperCase().padStart(4, '0');
  const ip = addr.host.includes(':') ? null : procIPv4(addr.host);
  for (const line of procText.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 13 || !f[1]!.includes(':')) continue;
    const [lip, lport] = f[1]!.split(':');
    if (lport !== port) continue;
    if (ip !== null && lip !== ip && lip !== '00000000') continue;
    return f;
  }
  return null;
}

export function parseUdpDrops(procText: string, addr: Address): number | null {
  const f = socketLine(procText, addr);
  if (f === null) return null;
  const drops = Number(f[f.length - 1]);
  return Number.isFinite(drops) ? drops : null;
}

/**
 * Bytes waiting in the socket's kernel receive queue (the rx_queue column:
 * the kernel prints `tx_queue:rx_queue` as one hex field). What a node that
 * is about to stop still has to read: docs/disengage.md, "quiet".
 */
export function parseUdpRxQueue(procText: string, addr: Address): number | null {
  const f = socketLine(procText, addr);
  if (f === null) return null;
  const q = f[4]!.includes(':') ? f[4]!.split(':')[1]! : f[5]!;
  const n = parseInt(q, 16);
  return Number.isFinite(n) ? n : null;
}

export function kernelUdpDrops(addr: Address): number | null {
  try {
    return parseUdpDrops(readFileSync(addr.host.includes(':') ? '/proc/net/udp6' : '/proc/net/udp', 'utf8'), addr);
  } catch {
    return null;
  }
}

/** The socket's kernel receive-queue bytes (Linux); null elsewhere or if the socket is not listed. Off the hot path. */
export function kernelUdpRxQueue(addr: Address): number | null {
  try {
    return parseUdpRxQueue(readFileSync(addr.host.includes(':') ? '/proc/net/udp6' : '/proc/net/udp', 'utf8'), addr);
  } catch {
    return null;
  }
}
