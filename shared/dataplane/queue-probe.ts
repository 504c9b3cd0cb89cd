/**
 * How long a datagram waits in this node's receive path right now — the
 * kernel socket queue plus the RX ring — measured, not guessed: every
 * `intervalMs` the node sends a 16-byte probe datagram to its own data
 * socket; the probe queues behind whatever is already there (the socket is
 * FIFO), and when the datapath dequeues it the elapsed time is the sojourn
 * time (CoDel's signal). A probe the kernel dropped (buffer full) or that
 * has not come back yet still counts: the delay reported is never less than
 * the age of the oldest probe not yet returned.
 *
 * Probe datagram (local only, never forwarded; docs/wire-encapsulation.md
 * "Queue probe"): a Geneve base header with the O (OAM) bit set and no
 * options, then "BQPR" and a 32-bit sequence number. Every Baton receiver
 * already refuses O=1 frames, so a probe can never be taken for traffic.
 *
 * Echo probes measure another node's receive path the same way: a probe
 * with a `to` address (20 bytes, "BQPQ", the probe's id, the sequence) is
 * sent to that node, whose datapath turns it into an answer ("BQPA") and
 * sends it straight back when it dequeues it (`reflectQueueProbe`); the
 * round trip is the peer's queue plus this node's own. The hash tier probes
 * every FD in scope so that admission control sees an FD that falls behind
 * even when the hash tier itself keeps up (hash-tier/admission.ts).
 *
 * Allocates nothing per probe: the buffers are a preallocated ring.
 */
import type { Scheduler, Timer } from '../runtime/scheduler.js';
import type { DatagramSocket } from '../io/datagram.js';
import type { Address } from '../io/address.js';

export const QUEUE_PROBE_LEN = 16;
export const ECHO_PROBE_LEN = 20;
const OAM_BIT = 0x80;
const MAGIC = 0x42515052; // "BQPR": a node's probe of its own queue
const ECHO_REQUEST = 0x42515051; // "BQPQ": please send this back
const ECHO_ANSWER = 0x42515041; // "BQPA": sent back
const SLOTS = 64; // probes outstanding at most; older ones are given up

/** Whether a datagram is a queue probe, own or echo (O bit and one of the two lengths): three compares. */
export function isQueueProbe(d: Uint8Array): boolean {
  return (d.length === QUEUE_PROBE_LEN || d.length === ECHO_PROBE_LEN) && (d[1]! & OAM_BIT) !== 0;
}

function u32(d: Uint8Array, off: number): number {
  return ((d[off]! << 24) | (d[off + 1]! << 16) | (d[off + 2]! << 8) | d[off + 3]!) >>> 0;
}

/** An echo request from a peer: turned into its answer in place (the caller sends `d` back to where it came from). */
export function reflectQueueProbe(d: Uint8Array): boolean {
  if (d.length !== ECHO_PROBE_LEN || u32(d, 8) !== ECHO_REQUEST) return false;
  d[11] = ECHO_ANSWER & 0xff;
  return true;
}

/** The probe id of an echo answer, or -1 for anything else. */
export function echoAnswerId(d: Uint8Array): number {
  return d.length === ECHO_PROBE_LEN && u32(d, 8) === ECHO_ANSWER ? u32(d, 12) : -1;
}

export class QueueProbe {
  private readonly bufs: Uint8Array[] = [];
  private readonly sentAt = new Float64Array(SLOTS);
  private next = 0; // sequence of the next probe to send
  private returned = -1; // highest sequence that came back
  private timer: Timer | null = null;
  /** Sojourn time of the last probe that came back (ms). */
  lastSojournMs = 0;
  /** Probes sent / returned / lost (sent but overtaken by a later one) — for metrics. */
  sent = 0;
  arrived = 0;

  private readonly to: Address;
  private readonly seqAt: number;

  /** A probe of this node's own queue, or with `echo`, of the queue of the node at `echo.to` (answers carry `echo.id`). */
  constructor(
    private readonly socket: DatagramSocket,
    private readonly scheduler: Scheduler,
    readonly intervalMs: number,
    vni: number,
    readonly echo?: { to: Address; id: number },
  ) {
    this.to = echo ? echo.to : socket.address;
    this.seqAt = echo ? 16 : 12;
    for (let i = 0; i < SLOTS; i++) {
      const b = new Uint8Array(echo ? ECHO_PROBE_LEN : QUEUE_PROBE_LEN);
      b[1] = OAM_BIT;
      b[2] = 0x08; // protocol type 0x0800 (what would follow is IPv4; nothing does)
      b[4] = (vni >>> 16) & 0xff;
      b[5] = (vni >>> 8) & 0xff;
      b[6] = vni & 0xff;
      const v = new DataView(b.buffer);
      v.setUint32(8, echo ? ECHO_REQUEST : MAGIC);
      if (echo) v.setUint32(12, echo.id);
      this.bufs.push(b);
    }
  }

  start(): void {
    if (this.timer) return;
    this.timer = this.scheduler.every(this.intervalMs, this.send);
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = null;
  }

  private readonly send = (): void => {
    const seq = this.next;
    const slot = seq % SLOTS;
    if (seq - this.returned > SLOTS - 1) {
      // 64 probes outstanding: the oldest is given up (its slot is reused) — the
      // delay reported stays at least the age of the oldest one still held.
      // Also before any probe came back (returned -1): else the slot of probe 0
      // would be reused under it, and delayMs() would read a newer probe's
      // send time as the oldest's (found by npm run fuzz).
      this.returned = seq - SLOTS + 1;
    }
    const b = this.bufs[slot]!;
    const at = this.seqAt;
    b[at] = (seq >>> 24) & 0xff;
    b[at + 1] = (seq >>> 16) & 0xff;
    b[at + 2] = (seq >>> 8) & 0xff;
    b[at + 3] = seq & 0xff;
    this.sentAt[slot] = this.scheduler.clock.now();
    this.next = seq + 1;
    this.sent++;
    this.socket.send(b, this.to);
  };

  /** A probe (own, or an echo answer with this probe's id) came out of the receive path (datapath, at dequeue). Returns false for a datagram that only looks like one. */
  onArrival(d: Uint8Array): boolean {
    if (d.length !== this.bufs[0]!.length || u32(d, 8) !== (this.echo ? ECHO_ANSWER : MAGIC)) return false;
    if (this.echo && u32(d, 12) !== this.echo.id) return false;
    const seq = u32(d, this.seqAt);
    if (seq >= this.next || seq <= this.returned) return false; // not ours, or overtaken
    this.lastSojournMs = this.scheduler.clock.now() - this.sentAt[seq % SLOTS]!;
    this.returned = seq;
    this.arrived++;
    this.lastArrivalAt = this.scheduler.clock.now();
    return true;
  }

  /** When the last answer arrived (scheduler ms); -1 before the first. */
  lastArrivalAt = -1;

  /**
   * How long the peer has answered no probe (ms): 0 before its first answer
   * (no signal) and while answers keep coming. Failure detection reads it
   * (docs/failure.md); unlike delayMs it is not capped by the probe ring.
   */
  silentMs(): number {
    if (this.lastArrivalAt < 0) return 0;
    return this.scheduler.clock.now() - this.lastArrivalAt;
  }

  /**
   * The receive path's current delay (ms): the last measured sojourn, or the
   * age of the oldest probe still out if that is larger (a queue that is
   * growing, or a probe the kernel dropped). O(1), no allocation. An echo
   * probe whose peer has never answered reports 0: no signal, not a delay.
   */
  delayMs(): number {
    if (this.echo && this.arrived === 0) return 0; // a peer that never answered gives no signal (an older build, or not reading yet)
    const oldest = this.returned + 1;
    if (oldest >= this.next) return this.lastSojournMs;
    const age = this.scheduler.clock.now() - this.sentAt[oldest % SLOTS]!;
    return age > this.lastSojournMs ? age : this.lastSojournMs;
  }
}
