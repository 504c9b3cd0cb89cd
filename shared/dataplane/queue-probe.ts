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
 * Allocates nothing per probe: the buffers are a preallocated ring.
 */
import type { Scheduler, Timer } from '../runtime/scheduler.js';
import type { DatagramSocket } from '../io/datagram.js';

export const QUEUE_PROBE_LEN = 16;
const OAM_BIT = 0x80;
const MAGIC = 0x42515052; // "BQPR"
const SLOTS = 64; // probes outstanding at most; older ones are given up

/** Whether a datagram is a queue probe (O bit and the probe's length): two compares. */
export function isQueueProbe(d: Uint8Array): boolean {
  return d.length === QUEUE_PROBE_LEN && (d[1]! & OAM_BIT) !== 0;
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

  constructor(
    private readonly socket: DatagramSocket,
    private readonly scheduler: Scheduler,
    readonly intervalMs: number,
    vni: number,
  ) {
    for (let i = 0; i < SLOTS; i++) {
      const b = new Uint8Array(QUEUE_PROBE_LEN);
      b[1] = OAM_BIT;
      b[2] = 0x08; // protocol type 0x0800 (what would follow is IPv4; nothing does)
      b[4] = (vni >>> 16) & 0xff;
      b[5] = (vni >>> 8) & 0xff;
      b[6] = vni & 0xff;
      const v = new DataView(b.buffer);
      v.setUint32(8, MAGIC);
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
    if (seq - this.returned > SLOTS - 1 && this.returned >= 0) {
      // 64 probes outstanding: the oldest is given up (its slot is reused) — the
      // delay reported stays at least the age of the oldest one still held.
      this.returned = seq - SLOTS + 1;
    }
    const b = this.bufs[slot]!;
    b[12] = (seq >>> 24) & 0xff;
    b[13] = (seq >>> 16) & 0xff;
    b[14] = (seq >>> 8) & 0xff;
    b[15] = seq & 0xff;
    this.sentAt[slot] = this.scheduler.clock.now();
    this.next = seq + 1;
    this.sent++;
    this.socket.send(b, this.socket.address);
  };

  /** A probe came out of the receive path (datapath, at dequeue). Returns false for a datagram that only looks like one. */
  onArrival(d: Uint8Array): boolean {
    if (((d[8]! << 24) | (d[9]! << 16) | (d[10]! << 8) | d[11]!) >>> 0 !== MAGIC) return false;
    const seq = ((d[12]! << 24) | (d[13]! << 16) | (d[14]! << 8) | d[15]!) >>> 0;
    if (seq >= this.next || seq <= this.returned) return false; // not ours, or overtaken
    this.lastSojournMs = this.scheduler.clock.now() - this.sentAt[seq % SLOTS]!;
    this.returned = seq;
    this.arrived++;
    return true;
  }

  /**
   * The receive path's current delay (ms): the last measured sojourn, or the
   * age of the oldest probe still out if that is larger (a queue that is
   * growing, or a probe the kernel dropped). O(1), no allocation.
   */
  delayMs(): number {
    const oldest = this.returned + 1;
    if (oldest >= this.next) return this.lastSojournMs;
    const age = this.scheduler.clock.now() - this.sentAt[oldest % SLOTS]!;
    return age > this.lastSojournMs ? age : this.lastSojournMs;
  }
}
