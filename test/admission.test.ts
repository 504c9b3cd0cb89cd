/**
 * Overload control: the receive-path probe measures a real queue (a kernel
 * UDP socket held back by a busy event loop), the admission policy moves
 * between its states as documented, and the forwarding engine refuses new
 * work — counted — once the measured delay passes the bounds.
 */
import { describe, expect, it } from 'vitest';
import { QueueProbe, QUEUE_PROBE_LEN, isQueueProbe, reflectQueueProbe } from '../shared/dataplane/queue-probe.js';
import { Datapath } from '../shared/dataplane/datapath.js';
import { Counters } from '../shared/counters.js';
import { DP } from '../shared/dataplane/counters.js';
import { Admission, AdmissionState } from '../hash-tier/admission.js';
import { ForwardingEngine, HT } from '../hash-tier/forwarding-engine.js';
import { RealScheduler, VirtualScheduler } from '../shared/runtime/scheduler.js';
import { MemoryNetwork, UdpNet } from '../shared/io/datagram.js';
import { buildPacket } from '../shared/packet/build.js';
import { EncapFlag, EncapMeta, Tier, encodeEncap, decodeEncap, ENCAP_HEADER_LEN } from '../shared/encap/geneve.js';
import { HashScope } from '../shared/scope/hash-scope.js';
import { IPPROTO_TCP, IPPROTO_UDP, TCP_SYN, TCP_ACK, ipv4ToInt } from '../shared/packet/meta.js';
import { Reject } from '../shared/packet/reject.js';
import { sumDrops } from '../shared/counters.js';

describe('QueueProbe', () => {
  it('measures the time a datagram waits in a real kernel socket queue', async () => {
    const sched = new RealScheduler();
    const net = new UdpNet();
    const sock = await net.bind({ host: '127.0.0.1', port: 0 });
    const probe = new QueueProbe(sock, sched, 1000, 1);
    let arrived = false;
    sock.onMessage((d) => {
      if (isQueueProbe(d)) arrived = probe.onArrival(d) || arrived;
    });
    try {
      // One probe now (the timer would send the first only after 1 s), then hold the event loop.
      (probe as unknown as { send(): void }).send();
      const t0 = performance.now();
      while (performance.now() - t0 < 60) {
        /* the probe waits in the kernel's receive queue meanwhile */
      }
      // While it is out, the delay reported is at least its age.
      expect(probe.delayMs()).toBeGreaterThanOrEqual(60);
      await new Promise<void>((r) => {
        const t = setInterval(() => arrived && (clearInterval(t), r()), 1);
      });
      expect(probe.lastSojournMs).toBeGreaterThanOrEqual(60);
      expect(probe.arrived).toBe(1);
    } finally {
      await sock.close();
    }
  });

  it('refuses datagrams that only look like probes', () => {
    const sched = new VirtualScheduler();
    const net = new MemoryNetwork(sched);
    const sock = net.bindSync({ host: '10.0.0.1', port: 0 });
    const probe = new QueueProbe(sock, sched, 5, 1);
    const fake = new Uint8Array(QUEUE_PROBE_LEN);
    fake[1] = 0x80;
    expect(isQueueProbe(fake)).toBe(true);
    expect(probe.onArrival(fake)).toBe(false); // no magic
    fake.set([0x42, 0x51, 0x50, 0x52, 0, 0, 0, 7], 8);
    expect(probe.onArrival(fake)).toBe(false); // never sent
  });
});

class FakeProbe {
  d = 0;
  delayMs(): number {
    return this.d;
  }
}

describe('Admission', () => {
  const opts = { synAboveMs: 10, shedAboveMs: 20, dropAboveMs: 100, holdMs: 50, trendMs: 10 };
  /** Advances 5 ms at a time (one check per "batch") with the delay `d`, `n` times; returns the last state. */
  const run = (sched: VirtualScheduler, a: Admission, p: FakeProbe, d: number | ((i: number) => number), n: number) => {
    let s: AdmissionState = a.state;
    for (let i = 0; i < n; i++) {
      sched.runFor(5);
      p.d = typeof d === 'number' ? d : d(i);
      s = a.update();
    }
    return s;
  };
  const S = AdmissionState;

  it('climbs OPEN → SHED_SYN → SHED_NEW → DROPPING and comes down one level at a time, as documented', () => {
    const sched = new VirtualScheduler();
    const p = new FakeProbe();
    const a = new Admission(p as unknown as QueueProbe, sched.clock, opts);
    expect(run(sched, a, p, 1, 4)).toBe(S.OPEN);
    expect(run(sched, a, p, (i) => 11 + i, 4)).toBe(S.SHED_SYN); // standing or growing queue
    expect(run(sched, a, p, (i) => 21 + i, 4)).toBe(S.SHED_NEW);
    expect(run(sched, a, p, (i) => 101 + i, 4)).toBe(S.DROPPING);
    expect(run(sched, a, p, 60, 4)).toBe(S.DROPPING); // above half the drop bound
    expect(run(sched, a, p, 50, 1)).toBe(S.SHED_NEW);
    expect(run(sched, a, p, 10, 1)).toBe(S.SHED_SYN);
    expect(run(sched, a, p, 4, 9)).toBe(S.SHED_SYN); // low, but not for holdMs yet
    expect(run(sched, a, p, 4, 3)).toBe(S.OPEN);
    expect(Array.from(a.entered)).toEqual([1, 2, 2, 1]);
    expect(a.maxDelayMs).toBe(104);
  });

  it('jumps straight to the level the delay calls for', () => {
    const sched = new VirtualScheduler();
    const p = new FakeProbe();
    const a = new Admission(p as unknown as QueueProbe, sched.clock, opts);
    expect(run(sched, a, p, 150, 4)).toBe(S.DROPPING);
    expect(Array.from(a.entered)).toEqual([0, 0, 0, 1]);
  });

  it('a stall is not overload: a long delay that falls refuses nothing', () => {
    const sched = new VirtualScheduler();
    const p = new FakeProbe();
    const a = new Admission(p as unknown as QueueProbe, sched.clock, opts);
    run(sched, a, p, 1, 4);
    sched.runFor(300); // the node did not run for 300 ms: it comes back to a 300 ms backlog
    p.d = 300;
    expect(a.update()).toBe(S.OPEN);
    expect(run(sched, a, p, (i) => 300 - 10 * (i + 1), 25)).toBe(S.OPEN); // draining
    expect(Array.from(a.entered)).toEqual([0, 0, 0, 0]);
    // The same backlog that does not drain is overload.
    expect(run(sched, a, p, 300, 4)).toBe(S.DROPPING);
  });

  it('a delay that rises again restarts the hold', () => {
    const sched = new VirtualScheduler();
    const p = new FakeProbe();
    const a = new Admission(p as unknown as QueueProbe, sched.clock, opts);
    expect(run(sched, a, p, 15, 4)).toBe(S.SHED_SYN);
    run(sched, a, p, 4, 8); // 40 ms low
    run(sched, a, p, 8, 1); // between half and the bound: the hold starts over
    expect(run(sched, a, p, 4, 10)).toBe(S.SHED_SYN);
    expect(run(sched, a, p, 4, 1)).toBe(S.OPEN);
  });
});

describe('ForwardingEngine admission', () => {
  const VNI = 7;
  const client = ipv4ToInt('192.0.2.10');
  const vip = ipv4ToInt('198.51.100.1');

  /** A hash tier whose receive path takes `latencyMs` (the memory network's delivery delay is the probe's sojourn). */
  async function setup(latencyMs: number) {
    const sched = new VirtualScheduler();
    const net = new MemoryNetwork(sched, latencyMs);
    const htSock = net.bindSync({ host: '10.0.0.1', port: 0 });
    const fdSock = net.bindSync({ host: '10.0.0.2', port: 0 });
    const cSock = net.bindSync({ host: '10.0.0.3', port: 0 });
    const eng = new ForwardingEngine(htSock, sched, { id: 1, vni: VNI, hashSeed: 1, admission: { probeMs: 5, synAboveMs: 10, shedAboveMs: 20, dropAboveMs: 100, holdMs: 50, trendMs: 10 } });
    eng.setScope(HashScope.build(1, ['fd-1'], 251, 1), [{ name: 'fd-1', id: 11, data: fdSock.address }]);
    const atFd: { flags: number; tcpFlags: number }[] = [];
    fdSock.onMessage((d) => {
      const m = new EncapMeta();
      let off = 0;
      while (off < d.length && decodeEncap(d, off, d.length - off, m) === Reject.OK) {
        atFd.push({ flags: m.flags, tcpFlags: d[m.innerOffset + 33]! });
        off += m.frameLength;
      }
    });
    let port = 20000;
    const send = (proto: number, tcpFlags = TCP_ACK) => {
      const inner = buildPacket({ srcIp: client, dstIp: vip, srcPort: port++, dstPort: 80, proto, tcpFlags, payload: new Uint8Array(8) });
      const meta = new EncapMeta();
      meta.vni = VNI;
      meta.tier = Tier.CLIENT;
      meta.senderId = 900;
      const out = new Uint8Array(ENCAP_HEADER_LEN + inner.length);
      encodeEncap(out, 0, meta, inner, 0, inner.length);
      cSock.send(out, htSock.address);
    };
    return { sched, eng, atFd, send, close: () => eng.close() };
  }

  it('admits everything while the queue is short', async () => {
    const s = await setup(1);
    s.sched.runFor(50);
    s.send(IPPROTO_TCP, TCP_SYN);
    s.send(IPPROTO_UDP);
    s.sched.runFor(20);
    expect(s.eng.admission!.state).toBe(AdmissionState.OPEN);
    expect(s.atFd.length).toBe(2);
    expect(s.atFd.every((f) => (f.flags & EncapFlag.SHED) === 0)).toBe(true);
    expect(sumDrops(s.eng.counters)).toBe(0);
    await s.close();
  });

  it('refuses only SYNs between synAboveMs and shedAboveMs: UDP goes on unmarked', async () => {
    const s = await setup(15);
    s.sched.runFor(100);
    s.send(IPPROTO_TCP, TCP_SYN);
    s.send(IPPROTO_UDP);
    s.sched.runFor(100);
    expect(s.eng.admission!.state).toBe(AdmissionState.SHED_SYN);
    expect(s.eng.counters.get(HT.drop_admission_syn)).toBe(1);
    expect(s.atFd.length).toBe(1);
    expect(s.atFd[0]!.flags & EncapFlag.SHED).toBe(0);
    await s.close();
  });

  it('sheds new work when the queue waits longer than shedAboveMs: SYN dropped, UDP marked', async () => {
    const s = await setup(30);
    s.sched.runFor(100);
    s.send(IPPROTO_TCP, TCP_SYN);
    s.send(IPPROTO_TCP, TCP_ACK);
    s.send(IPPROTO_UDP);
    s.sched.runFor(100);
    expect(s.eng.admission!.state).toBe(AdmissionState.SHED_NEW);
    expect(s.eng.counters.get(HT.drop_admission_syn)).toBe(1);
    expect(s.atFd.length).toBe(2);
    expect(s.atFd.every((f) => (f.flags & EncapFlag.SHED) !== 0)).toBe(true);
    expect(s.eng.counters.get(HT.admission_shed_marked)).toBe(2);
    expect(s.eng.counters.get(HT.admission_to_shed_new)).toBe(1);
    await s.close();
  });

  it('drops client frames at the head once the queue passes dropAboveMs, counted', async () => {
    const s = await setup(150);
    s.sched.runFor(400);
    s.send(IPPROTO_TCP, TCP_ACK);
    s.send(IPPROTO_UDP);
    s.sched.runFor(400);
    expect(s.eng.admission!.state).toBe(AdmissionState.DROPPING);
    expect(s.atFd.length).toBe(0);
    expect(s.eng.counters.get(HT.drop_admission_overload)).toBe(2);
    expect(sumDrops(s.eng.counters)).toBe(2);
    await s.close();
  });
});

describe('echo probes: an FD that falls behind, seen from the hash tier', () => {
  it("a peer's datapath sends an echo probe straight back; the round trip is the peer's queue", () => {
    const sched = new VirtualScheduler();
    const net = new MemoryNetwork(sched, 0);
    const a = net.bindSync({ host: '10.0.0.1', port: 1 });
    const b = net.bindSync({ host: '10.0.0.2', port: 2 });
    const pa = new Datapath(a, sched, new Counters(DP), { vni: 1 });
    const cb = new Counters(DP);
    const pb = new Datapath(b, sched, cb, { vni: 1 });
    pb.start(() => {});
    pa.start(() => {});
    const [probe] = pa.probeTo([b.address], 5);
    expect(probe!.delayMs()).toBe(0); // never answered: no signal
    sched.runFor(50);
    expect(probe!.arrived).toBeGreaterThan(5);
    expect(probe!.delayMs()).toBe(0); // no queue anywhere
    expect(cb.get(DP.queue_probes_reflected)).toBe(probe!.arrived);
    expect(cb.get(DP.drop_bad_encap)).toBe(0);
    // A stopped probe's late answers are refused, not taken for another's.
    pa.probeTo([], 5);
    expect(pa.probeTo([b.address], 5)[0]).not.toBe(probe);
  });

  it('reflects only echo requests', () => {
    const req = new Uint8Array(20);
    req[1] = 0x80;
    new DataView(req.buffer).setUint32(8, 0x42515051);
    expect(reflectQueueProbe(req)).toBe(true);
    expect(reflectQueueProbe(req)).toBe(false); // now an answer
    expect(reflectQueueProbe(new Uint8Array(16))).toBe(false);
  });

  it('refuses client frames only for the FD whose receive path is at its bound, the other FD takes its flows', async () => {
    const VNI = 7;
    const sched = new VirtualScheduler();
    const net = new MemoryNetwork(sched, 0);
    const htSock = net.bindSync({ host: '10.0.0.1', port: 1 });
    const cSock = net.bindSync({ host: '10.0.0.3', port: 3 });
    const eng = new ForwardingEngine(htSock, sched, { id: 1, vni: VNI, hashSeed: 1, admission: { probeMs: 5, synAboveMs: 10, shedAboveMs: 20, dropAboveMs: 100, holdMs: 50, trendMs: 10 } });
    // fd-1 answers probes at once, fd-2 after 150 ms (its queue, past dropAboveMs): both count the SYNs that reach them.
    const synsAt = [0, 0];
    const fds = [0, 150].map((holdMs, i) => {
      const sock = net.bindSync({ host: `10.0.1.${i + 1}`, port: 10 });
      sock.onMessage((d, from) => {
        if (reflectQueueProbe(d)) {
          const copy = Uint8Array.from(d);
          sched.after(holdMs, () => sock.send(copy, from));
          return;
        }
        const m = new EncapMeta();
        let off = 0;
        while (off < d.length && decodeEncap(d, off, d.length - off, m) === Reject.OK) {
          synsAt[i]!++;
          off += m.frameLength;
        }
      });
      return { name: `fd-${i + 1}`, id: 11 + i, data: sock.address };
    });
    eng.setScope(HashScope.build(1, ['fd-1', 'fd-2'], 251, 1), fds);
    sched.runFor(400);
    expect(eng.admission!.state).toBe(AdmissionState.OPEN); // the hash tier itself keeps up
    const states = Object.fromEntries(eng.fdAdmissionStates().map((f) => [f.fd, f.state]));
    expect(states).toEqual({ 'fd-1': AdmissionState.OPEN, 'fd-2': AdmissionState.DROPPING });
    for (let port = 20000; port < 20200; port++) {
      const inner = buildPacket({ srcIp: ipv4ToInt('192.0.2.10'), dstIp: ipv4ToInt('198.51.100.1'), srcPort: port, dstPort: 80, proto: IPPROTO_TCP, tcpFlags: TCP_SYN, payload: new Uint8Array(0) });
      const meta = new EncapMeta();
      meta.vni = VNI;
      meta.tier = Tier.CLIENT;
      const out = new Uint8Array(ENCAP_HEADER_LEN + inner.length);
      encodeEncap(out, 0, meta, inner, 0, inner.length);
      cSock.send(out, htSock.address);
    }
    sched.runFor(50);
    // fd-2's frames refused at the edge, counted; fd-1's all delivered.
    expect(synsAt[1]).toBe(0);
    expect(synsAt[0]).toBeGreaterThan(50);
    expect(eng.counters.get(HT.drop_admission_overload)).toBe(200 - synsAt[0]!);
    expect(eng.counters.get(HT.admission_fd_to_dropping)).toBe(1);
    await eng.close();
  });
});

describe('FlowHandler under SHED', () => {
  it('creates no new flow for a SHED frame, and forwards established flows as before', async () => {
    const { FlowHandler, Verdict } = await import('../distributor/flow-handler.js');
    const { FlowTable } = await import('../distributor/flow-table.js');
    const { HashRewritePolicy } = await import('../distributor/service-policy.js');
    const { FD } = await import('../distributor/fd-counters.js');
    const { ManualClock } = await import('../shared/clock.js');
    const B1 = ipv4ToInt('10.1.0.1');
    const table = new FlowTable(64);
    const h = new FlowHandler({
      selfId: 1,
      table,
      policy: new HashRewritePolicy([{ ip: B1, port: 8080 }]),
      clock: new ManualClock(1000),
      ownership: { flowCreated() {}, flowRemoved() {} },
      lingerMs: 500,
      idleMs: 10_000,
    });
    const c = ipv4ToInt('192.0.2.10');
    const vip = ipv4ToInt('198.51.100.1');
    const udp = (sport: number) => buildPacket({ srcIp: c, dstIp: vip, srcPort: sport, dstPort: 53, proto: IPPROTO_UDP, payload: new Uint8Array(4) });
    const old = udp(1000);
    expect(h.handle(old, 0, old.length)).toBe(Verdict.FORWARD); // established before shedding
    const fresh = udp(1001);
    expect(h.handle(fresh, 0, fresh.length, undefined, true)).toBe(Verdict.DROP);
    expect(h.counters.get(FD.drop_shed_new_flow)).toBe(1);
    const again = udp(1000);
    expect(h.handle(again, 0, again.length, undefined, true)).toBe(Verdict.FORWARD);
    expect(table.size).toBe(2); // the one flow and its reverse
  });
});
