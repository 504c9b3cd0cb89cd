/**
 * The batch walk: a datagram of Geneve frames back to back (and queue
 * probes) through the data plane's receive loop (shared/dataplane/datapath.ts
 * Datapath, on a fake socket and virtual time). Nothing throws out of the
 * loop; every datagram is counted (rx_datagrams); every frame decoded is
 * counted (rx_frames) and either handed to the node or counted
 * drop_wrong_vni; a frame that cannot be decoded ends the datagram with one
 * drop_bad_encap or drop_bad_encap_version; a probe is reflected, late, or
 * a drop_bad_encap. The frames handed over tile the datagram in order, and
 * each decodes alone to the same meta (a frame delimits itself).
 */
import fc from 'fast-check';
import { Datapath } from '../../../shared/dataplane/datapath.js';
import { DP, newDataplaneCounters } from '../../../shared/dataplane/counters.js';
import { isQueueProbe } from '../../../shared/dataplane/queue-probe.js';
import { decodeEncap, EncapMeta } from '../../../shared/encap/geneve.js';
import { Reject } from '../../../shared/packet/reject.js';
import { VirtualScheduler } from '../../../shared/runtime/scheduler.js';
import type { DatagramHandler, DatagramSocket } from '../../../shared/io/datagram.js';
import type { Address } from '../../../shared/io/address.js';
import { ensure, hex, noThrow, Tally, type FuzzTarget } from '../check.js';
import { mutated } from '../mutate.js';
import { arbEncapFrame, encapFields, u32 } from '../frames.js';

const VNI = 0x00b7a0;
const FROM: Address = { host: '192.0.2.7', port: 40000 };

/** A socket that records what is sent and hands in what the test gives it. */
class FakeSocket implements DatagramSocket {
  readonly address: Address = { host: '127.0.0.1', port: 9 };
  handler: DatagramHandler = () => {};
  sent = 0;
  send(_data: Uint8Array, _to: Address, onSent?: (err: Error | null) => void): void {
    this.sent++;
    onSent?.(null);
  }
  onMessage(h: DatagramHandler): void {
    this.handler = h;
  }
  sendQueueBytes(): number {
    return 0;
  }
  sendQueueCount(): number {
    return 0;
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** A queue probe as a node sends it: own ("BQPR", 16 bytes), echo request ("BQPQ") or answer ("BQPA", 20 bytes). */
export const arbProbe: fc.Arbitrary<Uint8Array> = fc.tuple(fc.constantFrom(0x42515052, 0x42515051, 0x42515041), u32, u32).map(([magic, a, b]) => {
  const echo = magic !== 0x42515052;
  const d = new Uint8Array(echo ? 20 : 16);
  const v = new DataView(d.buffer);
  d[1] = 0x80;
  d[2] = 0x08;
  v.setUint32(8, magic);
  v.setUint32(12, a);
  if (echo) v.setUint32(16, b);
  return d;
});

/** Frames for this cluster (VNI rewritten, mostly) back to back. */
const arbDatagram: fc.Arbitrary<Uint8Array> = fc
  .tuple(fc.array(fc.tuple(arbEncapFrame, fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) })), { minLength: 1, maxLength: 5 }))
  .map(([frames]) => {
    const out = new Uint8Array(frames.reduce((n, [f]) => n + f.length, 0));
    let p = 0;
    for (const [f, ours] of frames) {
      out.set(f, p);
      if (ours && f.length >= 8) {
        out[p + 4] = VNI >>> 16;
        out[p + 5] = (VNI >>> 8) & 0xff;
        out[p + 6] = VNI & 0xff;
      }
      p += f.length;
    }
    return out;
  });

const arbInput: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 96 }) },
  { weight: 6, arbitrary: mutated(arbDatagram, { fields: encapFields }) },
  { weight: 1, arbitrary: mutated(arbProbe) },
);

interface Seen {
  innerOffset: number;
  innerLength: number;
  frameLength: number;
}

const tally = new Tally();
let dp: Datapath | null = null;
let sock: FakeSocket;
let sched: VirtualScheduler;
const counters = newDataplaneCounters();
let seen: Seen[] = [];
let seenBuf: Uint8Array | null = null;
const ref = new EncapMeta();
const alone = new EncapMeta();

function datapath(): Datapath {
  if (dp === null) {
    sock = new FakeSocket();
    sched = new VirtualScheduler();
    dp = new Datapath(sock, sched, counters, { vni: VNI, rxCapacity: 16, batchDatagrams: 4, tx: { poolBuffers: 8, maxDatagramBytes: 2048 } });
    dp.start((buf, m) => {
      seenBuf = buf;
      seen.push({ innerOffset: m.innerOffset, innerLength: m.innerLength, frameLength: m.frameLength });
    });
  }
  return dp;
}

const C = DP;
const WATCHED = [C.rx_datagrams, C.rx_frames, C.drop_bad_encap, C.drop_bad_encap_version, C.drop_wrong_vni, C.queue_probes_reflected, C.queue_probes_late, C.enqueued, C.dequeued, C.dropped_full] as const;

export const batchTarget: FuzzTarget<Uint8Array> = {
  name: 'encap/batch',
  covers: 'shared/dataplane/datapath.ts Datapath receive loop (frames back to back, queue probes) over decodeEncap',
  arbitrary: arbInput,
  tally,
  mustReach: ['frames', 'frames+bad_encap', 'bad_encap', 'bad_encap_version', 'wrong_vni', 'probe_reflected', 'probe_late', 'probe_bad'],
  check(d) {
    datapath();
    const before = WATCHED.map((id) => counters.get(id));
    seen = [];
    seenBuf = null;
    const sentBefore = sock.sent;
    noThrow('Datapath receive', () => {
      sock.handler(d, FROM);
      sched.runUntilIdle();
    });
    const delta = (id: number): number => counters.get(id) - before[WATCHED.indexOf(id as never)]!;
    const what = (): string => `datagram ${hex(d, 96)}`;
    ensure(delta(C.rx_datagrams) === 1 && delta(C.enqueued) === 1 && delta(C.dequeued) === 1 && delta(C.dropped_full) === 0, () => `${what()}: not counted once in, once out`);
    if (isQueueProbe(d)) {
      const r = delta(C.queue_probes_reflected);
      const l = delta(C.queue_probes_late);
      const b = delta(C.drop_bad_encap);
      ensure(r + l + b === 1 && delta(C.rx_frames) === 0 && seen.length === 0, () => `${what()}: a probe counted reflected ${r}, late ${l}, bad ${b}`);
      ensure(sock.sent - sentBefore === r, () => `${what()}: reflected ${r} but sent ${sock.sent - sentBefore}`);
      tally.add(r ? 'probe_reflected' : l ? 'probe_late' : 'probe_bad');
      return;
    }
    // Reference walk: what the loop must have done with this datagram.
    let off = 0;
    let frames = 0;
    let ours = 0;
    let end: number = Reject.OK;
    const handed: Seen[] = [];
    while (off < d.length) {
      const r = decodeEncap(d, off, d.length - off, ref);
      if (r !== Reject.OK) {
        end = r;
        break;
      }
      ensure(ref.frameLength >= 44 && off + ref.frameLength <= d.length, () => `${what()}: frame at ${off} has length ${ref.frameLength}`);
      ensure(decodeEncap(d.slice(off, off + ref.frameLength), 0, ref.frameLength, alone) === Reject.OK && alone.frameLength === ref.frameLength && alone.innerOffset + off === ref.innerOffset, () => `${what()}: the frame at ${off} does not decode alone`);
      frames++;
      if (ref.vni === VNI) {
        ours++;
        handed.push({ innerOffset: ref.innerOffset, innerLength: ref.innerLength, frameLength: ref.frameLength });
      }
      off += ref.frameLength;
    }
    ensure(delta(C.rx_frames) === frames, () => `${what()}: rx_frames +${delta(C.rx_frames)}, ${frames} frames in it`);
    ensure(delta(C.drop_wrong_vni) === frames - ours, () => `${what()}: drop_wrong_vni +${delta(C.drop_wrong_vni)}, ${frames - ours} frames of another VNI`);
    ensure(delta(C.drop_bad_encap) === (end === Reject.BAD_ENCAP ? 1 : 0) && delta(C.drop_bad_encap_version) === (end === Reject.BAD_ENCAP_VERSION ? 1 : 0), () => `${what()}: bad_encap +${delta(C.drop_bad_encap)}, bad_encap_version +${delta(C.drop_bad_encap_version)}, walk ended with ${end}`);
    ensure(end !== Reject.OK || off === d.length, () => `${what()}: accepted frames cover ${off} of ${d.length} bytes`);
    ensure(seen.length === handed.length, () => `${what()}: ${seen.length} frames handed, ${handed.length} expected`);
    for (let i = 0; i < seen.length; i++) {
      const a = seen[i]!;
      const b = handed[i]!;
      ensure(a.innerOffset === b.innerOffset && a.innerLength === b.innerLength && a.frameLength === b.frameLength, () => `${what()}: frame ${i} handed as ${JSON.stringify(a)}, walk says ${JSON.stringify(b)}`);
    }
    if (seen.length > 0) ensure(seenBuf === d, 'the handler got another buffer');
    tally.add(end === Reject.OK ? (ours < frames ? 'wrong_vni' : 'frames') : frames > 0 ? 'frames+bad_encap' : end === Reject.BAD_ENCAP_VERSION ? 'bad_encap_version' : 'bad_encap');
  },
};
