/**
 * The loss books: does every frame the clients sent come back, or is it
 * counted somewhere? (docs/loss-accounting.md)
 *
 * Inputs, all in frames, read once traffic has stopped and the nodes are
 * quiet: each node process's Prometheus text (running nodes scraped, stopped
 * ones' FINAL counters), and each traffic generator's own link counts.
 *
 *   per link (sender id → receiving address):
 *       lost = frames the sender's kernel accepted − frames the receiver decoded
 *   per node:
 *       leak = frames in − frames out − counted drops − frames absorbed
 *       (absorbed: what a service node deliberately does not answer, a pure ACK)
 *   overall:
 *       unanswered = frames the clients sent − frames they got back − absorbed
 *       counted    = Σ node drops + Σ link losses
 *
 * The books close when unanswered = counted, no node leaks and no link shows
 * more frames received than sent. Anything else is a frame lost without a
 * counter, and `explain()` says where the counts disagree.
 */
import { isFrameDrop } from '../shared/counters.js';
import { EDGE_SENDER_ID } from '../shared/dataplane/edge-port.js';

export type BookRole = 'hash' | 'fd' | 'service';

export interface BookNode {
  name: string;
  role: BookRole;
  id: number;
  pid?: number;
  /** Data address "host:port" of this process. */
  data: string;
  /** Prometheus text exposition of the process. */
  metrics: string;
  /** A stopped process whose counters are its last (FINAL) ones. */
  stopped?: boolean;
}

export interface BookClient {
  name: string;
  /** Sender id in the client's frames (the generator writes 0). */
  id: number;
  /** The generator's socket address "host:port". */
  address: string;
  /** Destination of its frames (the hash tier's data address). */
  target: string;
  /** Frames the generator built and handed to the socket. */
  framesSent: number;
  /** Of those, the frames the kernel accepted, and the frames whose send failed. */
  accepted: number;
  sendErrorFrames: number;
  /** Frames received, by sender id (also after the run: late echoes). */
  rx: [number, number][];
}

export interface LinkLine {
  fromId: number;
  from: string;
  to: string;
  toName: string;
  sent: number;
  received: number;
  lost: number;
}

export interface DropLine {
  node: string;
  counter: string;
  frames: number;
}

export interface NodeLine {
  node: string;
  pid?: number;
  in: number;
  out: number;
  drops: number;
  absorbed: number;
  leak: number;
}

export interface LossBooks {
  framesSent: number;
  framesReturned: number;
  absorbed: number;
  unanswered: number;
  counted: number;
  dropsTotal: number;
  linkLossTotal: number;
  /** Datagrams that were not Baton frames at all (drop_bad_encap & co.): garbage, not part of the books. */
  undecodable: number;
  drops: DropLine[];
  links: LinkLine[];
  nodes: NodeLine[];
  closes: boolean;
}

/** Prometheus text → samples (name, labels, value). Comments and blank lines skipped. */
export function parseMetrics(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const out: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    if (m[2]) for (const l of m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The counter families that carry a role's data-plane frames. */
const FAMILIES: Record<BookRole, string[]> = {
  hash: ['baton_hash_tier_total'],
  fd: ['baton_fd_total', 'baton_fd_dataplane_total'],
  service: ['baton_service_total'],
};
/** Service-node counters that are frame drops without the drop_ prefix. */
const SERVICE_DROPS = new Set(['rx_wrong_vni', 'rx_bad_packet']);
/** Frames deliberately not answered (valid, not lost). */
const ABSORBED = new Set(['rx_no_reply']);
/**
 * Datagrams (or their tails) that could not be delimited into frames: no
 * sender id, never counted as received on a link, so not frames of the books.
 * A real frame lost this way shows as a link loss; garbage from outside shows
 * here only (reported as `undecodable`).
 */
const UNDECODABLE = new Set(['drop_bad_encap', 'drop_bad_encap_version', 'rx_bad_encap']);

export function closeLossBooks(nodes: readonly BookNode[], clients: readonly BookClient[]): LossBooks {
  const sent = new Map<string, number>(); // `${fromId}>${to}` -> frames
  const received = new Map<string, number>();
  const add = (m: Map<string, number>, k: string, n: number) => m.set(k, (m.get(k) ?? 0) + n);
  const drops: DropLine[] = [];
  const nodeLines: NodeLine[] = [];
  const nameOfAddr = new Map<string, string>();
  const nameOfId = new Map<number, string>();
  let absorbed = 0;
  let undecodable = 0;

  for (const n of nodes) {
    nameOfAddr.set(n.data, n.name);
    nameOfId.set(n.id, n.name);
    const fams = FAMILIES[n.role];
    let inF = 0;
    let outF = 0;
    let dropF = 0;
    let abs = 0;
    const mine = new Map<string, number>();
    for (const s of parseMetrics(n.metrics)) {
      if (s.name === 'baton_link_rx_frames') {
        inF += s.value;
        add(received, `${s.labels.from_id}>${n.data}`, s.value);
      } else if (s.name === 'baton_link_tx_frames') {
        outF += s.value;
        add(sent, `${n.id}>${s.labels.to}`, s.value);
      } else if (fams.includes(s.name) && s.labels.counter !== undefined) {
        const c = s.labels.counter;
        if (ABSORBED.has(c) && n.role === 'service') abs += s.value;
        else if (UNDECODABLE.has(c)) undecodable += s.value;
        else if (isFrameDrop(c) || (n.role === 'service' && SERVICE_DROPS.has(c))) {
          dropF += s.value;
          if (s.value !== 0) mine.set(c, (mine.get(c) ?? 0) + s.value);
        }
      }
    }
    for (const [counter, frames] of mine) drops.push({ node: n.name, counter, frames });
    absorbed += abs;
    nodeLines.push({ node: n.name, pid: n.pid, in: inF, out: outF, drops: dropF, absorbed: abs, leak: inF - outF - dropF - abs });
  }

  let framesSent = 0;
  let framesReturned = 0;
  for (const c of clients) {
    nameOfAddr.set(c.address, c.name);
    if (!nameOfId.has(c.id)) nameOfId.set(c.id, c.name);
    framesSent += c.framesSent;
    add(sent, `${c.id}>${c.target}`, c.accepted);
    if (c.sendErrorFrames > 0) drops.push({ node: c.name, counter: 'send_error_frames', frames: c.sendErrorFrames });
    const unsent = c.framesSent - c.accepted - c.sendErrorFrames;
    if (unsent !== 0) drops.push({ node: c.name, counter: 'unsent_at_close', frames: unsent });
    for (const [id, n] of c.rx) {
      framesReturned += n;
      add(received, `${id}>${c.address}`, n);
    }
  }

  const links: LinkLine[] = [];
  for (const k of new Set([...sent.keys(), ...received.keys()])) {
    const [fromId, to] = k.split('>') as [string, string];
    // Real hosts at the edge (shared/dataplane/edge-port.ts) keep no books of their own: their frames count in
    // the nodes' in and out, and what real clients saw is theirs to report (curl, iperf3), not a link here.
    if (Number(fromId) === EDGE_SENDER_ID || to === 'edge') continue;
    const s = sent.get(k) ?? 0;
    const r = received.get(k) ?? 0;
    links.push({ fromId: Number(fromId), from: nameOfId.get(Number(fromId)) ?? `id ${fromId}`, to, toName: nameOfAddr.get(to) ?? to, sent: s, received: r, lost: s - r });
  }
  links.sort((a, b) => a.from.localeCompare(b.from) || a.toName.localeCompare(b.toName));
  const dropsTotal = drops.reduce((n, d) => n + d.frames, 0);
  const linkLossTotal = links.reduce((n, l) => n + l.lost, 0);
  const unanswered = framesSent - framesReturned - absorbed;
  const counted = dropsTotal + linkLossTotal;
  const closes = unanswered === counted && nodeLines.every((n) => n.leak === 0) && links.every((l) => l.lost >= 0);
  return { framesSent, framesReturned, absorbed, unanswered, counted, dropsTotal, linkLossTotal, undecodable, drops, links, nodes: nodeLines, closes };
}

/** The books for people: the totals, every non-zero drop and link loss, and where counts disagree. */
export function formatLossBooks(b: LossBooks): string {
  const out: string[] = [];
  out.push(
    `loss books ${b.closes ? 'close' : 'DO NOT CLOSE'}: clients sent ${b.framesSent} frames, got ${b.framesReturned} back, ${b.absorbed} absorbed (not answered by design); ` +
      `unanswered ${b.unanswered} = counted ${b.counted} (drops ${b.dropsTotal}, lost on links ${b.linkLossTotal})${b.undecodable ? `; ${b.undecodable} undecodable datagrams (not frames) refused` : ''}${b.closes ? '' : ` — ${b.unanswered - b.counted} frames without a counter`}`,
  );
  for (const d of b.drops) out.push(`  drop   ${d.node}: ${d.counter} ${d.frames}`);
  for (const l of b.links) if (l.lost !== 0) out.push(`  link   ${l.from} -> ${l.toName} (${l.to}): sent ${l.sent}, received ${l.received}, ${l.lost > 0 ? `lost ${l.lost}` : `${-l.lost} MORE RECEIVED THAN SENT`}`);
  for (const n of b.nodes) if (n.leak !== 0) out.push(`  LEAK   ${n.node}${n.pid ? ` (pid ${n.pid})` : ''}: in ${n.in}, out ${n.out}, drops ${n.drops}, absorbed ${n.absorbed}: ${n.leak} frames unaccounted`);
  return out.join('\n');
}
