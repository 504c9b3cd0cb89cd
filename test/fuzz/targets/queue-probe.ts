/**
 * Queue probes (shared/dataplane/queue-probe.ts): isQueueProbe,
 * reflectQueueProbe, echoAnswerId and QueueProbe.onArrival never throw and
 * recognise exactly the documented layouts (16-byte own probe "BQPR",
 * 20-byte echo request "BQPQ" / answer "BQPA", O bit set). onArrival takes
 * exactly the datagrams a model of the probe says are its own outstanding
 * probes (not overtaken, not given up), measures their sojourn from their
 * send time, and delayMs() stays a finite number >= 0. The datapath's
 * counting of probes is the encap/batch target's.
 */
import fc from 'fast-check';
import { QueueProbe, isQueueProbe, reflectQueueProbe, echoAnswerId, QUEUE_PROBE_LEN, ECHO_PROBE_LEN } from '../../../shared/dataplane/queue-probe.js';
import { VirtualScheduler } from '../../../shared/runtime/scheduler.js';
import type { DatagramHandler, DatagramSocket } from '../../../shared/io/datagram.js';
import type { Address } from '../../../shared/io/address.js';
import { ensure, hex, noThrow, Tally, type FuzzTarget } from '../check.js';
import { applyOps, opArb, type Op } from '../mutate.js';
import { u32 } from '../frames.js';

const OWN = 0x42515052;
const REQ = 0x42515051;
const ANS = 0x42515041;
const SLOTS = 64;

type Step =
  | { k: 'send'; n: number }
  | { k: 'arrive'; pick: number; ops: Op[]; answer: boolean; raw: Uint8Array | null };

export interface ProbeInput {
  echo: boolean;
  id: number;
  vni: number;
  steps: Step[];
}

const arbStep: fc.Arbitrary<Step> = fc.oneof(
  { weight: 1, arbitrary: fc.record({ k: fc.constant('send' as const), n: fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 1, max: 4 }) }, { weight: 1, arbitrary: fc.integer({ min: 60, max: 70 }) }) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant('arrive' as const),
      pick: fc.nat(),
      ops: fc.array(opArb, { maxLength: 2 }),
      answer: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
      raw: fc.oneof({ weight: 6, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.uint8Array({ minLength: 14, maxLength: 22 }) }),
    }),
  },
);

const arbInput: fc.Arbitrary<ProbeInput> = fc.record({
  echo: fc.boolean(),
  id: fc.oneof(fc.integer({ min: 1, max: 10 }), u32),
  vni: fc.integer({ min: 0, max: 0xffffff }),
  steps: fc.array(arbStep, { minLength: 1, maxLength: 8 }),
});

class FakeSocket implements DatagramSocket {
  readonly address: Address = { host: '127.0.0.1', port: 9 };
  sent: { d: Uint8Array; at: number }[] = [];
  constructor(private readonly sched: VirtualScheduler) {}
  send(data: Uint8Array, _to: Address, onSent?: (err: Error | null) => void): void {
    this.sent.push({ d: Uint8Array.from(data), at: this.sched.clock.now() });
    onSent?.(null);
  }
  onMessage(_h: DatagramHandler): void {}
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

const be32 = (d: Uint8Array, o: number): number => ((d[o]! << 24) | (d[o + 1]! << 16) | (d[o + 2]! << 8) | d[o + 3]!) >>> 0;
const tally = new Tally();

export const queueProbeTarget: FuzzTarget<ProbeInput> = {
  name: 'queue-probe',
  covers: 'shared/dataplane/queue-probe.ts isQueueProbe, reflectQueueProbe, echoAnswerId, QueueProbe.onArrival/delayMs',
  arbitrary: arbInput,
  tally,
  mustReach: ['taken', 'refused', 'reflected', 'answer'],
  check(input) {
    const sched = new VirtualScheduler(1000);
    const sock = new FakeSocket(sched);
    const INTERVAL = 5;
    const probe = new QueueProbe(sock, sched, INTERVAL, input.vni, input.echo ? { to: { host: '192.0.2.9', port: 7 }, id: input.id } : undefined);
    probe.start();
    // The model: probes sent (next), the highest taken back or given up (returned).
    let next = 0;
    let returned = -1;
    /** The model follows every probe the timer sent. */
    const sync = (): void => {
      while (next < sock.sent.length) {
        if (next - returned > SLOTS - 1) returned = next - SLOTS + 1;
        next++;
      }
      ensure(probe.sent === next, `sent ${probe.sent}, the socket saw ${next}`);
    };
    for (const step of input.steps) {
      if (step.k === 'send') {
        sched.runFor(INTERVAL * step.n);
        sync();
        continue;
      }
      sched.runFor(1); // some time in the queue
      sync();
      let d: Uint8Array;
      if (step.raw) d = step.raw;
      else if (sock.sent.length === 0) d = new Uint8Array(input.echo ? ECHO_PROBE_LEN : QUEUE_PROBE_LEN);
      else {
        d = Uint8Array.from(sock.sent[step.pick % sock.sent.length]!.d);
        if (input.echo && step.answer && d.length === ECHO_PROBE_LEN) d[11] = ANS & 0xff; // what the peer's reflect does
        d = applyOps(d, step.ops);
      }
      const what = (): string => `datagram ${hex(d)} (probe ${input.echo ? `echo id ${input.id}` : 'own'}, ${next} sent, ${returned} returned)`;
      // The stateless checks, against the documented layouts.
      const probeLike = noThrow('isQueueProbe', () => isQueueProbe(d));
      ensure(probeLike === ((d.length === 16 || d.length === 20) && (d[1]! & 0x80) !== 0), () => `${what()}: isQueueProbe ${probeLike}`);
      const ansId = noThrow('echoAnswerId', () => echoAnswerId(d));
      ensure(ansId === (d.length === 20 && be32(d, 8) === ANS ? be32(d, 12) : -1), () => `${what()}: echoAnswerId ${ansId}`);
      const r = Uint8Array.from(d);
      const reflected = noThrow('reflectQueueProbe', () => reflectQueueProbe(r));
      ensure(reflected === (d.length === 20 && be32(d, 8) === REQ), () => `${what()}: reflectQueueProbe ${reflected}`);
      for (let i = 0; i < d.length; i++) ensure(r[i] === (reflected && i === 11 ? ANS & 0xff : d[i]), () => `${what()}: reflect changed byte ${i}`);
      if (reflected) {
        ensure(echoAnswerId(r) === be32(d, 12), () => `${what()}: the reflected answer has id ${echoAnswerId(r)}`);
        tally.add('reflected');
      }
      if (ansId >= 0) tally.add('answer');
      // onArrival: exactly the model's outstanding probes.
      const arrivedBefore = probe.arrived;
      const took = noThrow('QueueProbe.onArrival', () => probe.onArrival(d));
      const len = input.echo ? ECHO_PROBE_LEN : QUEUE_PROBE_LEN;
      const seq = d.length === len ? be32(d, input.echo ? 16 : 12) : -1;
      const ours = d.length === len && be32(d, 8) === (input.echo ? ANS : OWN) && (!input.echo || be32(d, 12) === input.id >>> 0);
      const want = ours && seq < next && seq > returned;
      ensure(took === want, () => `${what()}: onArrival ${took}, model says ${want}`);
      ensure(probe.arrived === arrivedBefore + (took ? 1 : 0), () => `${what()}: arrived ${probe.arrived}`);
      if (took) {
        returned = seq;
        const sentAt = sock.sent[seq]!.at;
        ensure(probe.lastSojournMs === sched.clock.now() - sentAt, () => `${what()}: sojourn ${probe.lastSojournMs}, sent at ${sentAt}, now ${sched.clock.now()}`);
      }
      tally.add(took ? 'taken' : 'refused');
      const delay = probe.delayMs();
      ensure(Number.isFinite(delay) && delay >= 0, () => `${what()}: delayMs ${delay}`);
    }
    probe.stop();
  },
};
