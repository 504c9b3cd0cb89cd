/**
 * Dead backends (docs/disengage.md, "Dead backends"): an FD's established
 * flow whose backend died — a service node FAILED or DISENGAGED, a real
 * server its health check says is down — is rehomed (the backend a new flow
 * would get now; forward and reverse entries updated, the reverse key
 * replaced and its ownership withdrawn and announced) or ended (TCP: an RST
 * toward the client with correct checksums), per service
 * (cluster.services[].onBackendDeath); new flows avoid it.
 *
 * The FD here is the real FlowHandler inside the real FdDataplane on an
 * in-memory network: frames are built and read byte by byte with the fixture
 * table's independent helpers (test/fixtures/flow-handler-cases.ts). Then the
 * whole cluster in memory (the real FdNode wiring): a service node that dies
 * under UDP and TCP traffic.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { FlowHandler, BackendDeath, type OwnershipSink } from '../distributor/flow-handler.js';
import { FlowTable, FlowFlag, NetAction } from '../distributor/flow-table.js';
import { HashRewritePolicy, FlowAction, type Backend } from '../distributor/service-policy.js';
import { FdDataplane } from '../distributor/fd-dataplane.js';
import { FD } from '../distributor/fd-counters.js';
import { DP } from '../shared/dataplane/counters.js';
import { EdgePort } from '../shared/dataplane/edge-port.js';
import { EdgeEncap, EDGE_HEADER_LEN } from '../shared/encap/edge.js';
import { MemoryNetwork, type MemorySocket } from '../shared/io/datagram.js';
import { VirtualScheduler } from '../shared/runtime/scheduler.js';
import { PacketMeta, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, ipv4ToInt, intToIpv4 } from '../shared/packet/meta.js';
import { parseIPv4 } from '../shared/packet/parse.js';
import { Reject } from '../shared/packet/reject.js';
import { buildPacket } from '../shared/packet/build.js';
import { writeTcpReset, TCP_RESET_LENGTH } from '../shared/packet/reset.js';
import { Tier } from '../shared/encap/geneve.js';
import { parseConfig } from '../shared/config/config.js';
import { isBatonError, ErrorCode } from '../shared/errors.js';
import { InMemoryCluster } from '../simulations/in-memory-cluster.js';
import { TrafficGenerator } from '../traffic/generator.js';
import { statusName } from '../shared/membership/status.js';
import type { FdNode } from '../nodes/fd-node.js';
import { ControlChannel } from '../shared/control/channel.js';
import { disengageRequest } from '../cli/operations-cmd.js';
import type { TrafficOptions } from '../traffic/options.js';
import { checksumErrors, datagram, frame, readFrames, type SentFrame } from './fixtures/flow-handler-cases.js';
import { measureAllocation } from './helpers/alloc.js';

const SELF = 1;
const VNI = 0x000ba7;
const VIP = ipv4ToInt('198.51.100.1');
const CLIENT = ipv4ToInt('192.0.2.10');
const LOCATOR = { ip: ipv4ToInt('203.0.113.5'), port: 5555 };
const SVC = [ipv4ToInt('10.1.0.1'), ipv4ToInt('10.1.0.2'), ipv4ToInt('10.1.0.3')] as const;
const SVC_PORT = 8080;
const RS = [ipv4ToInt('10.2.0.1'), ipv4ToInt('10.2.0.2')] as const;
const POLICY_SEED = 0x42a70;
const PAYLOAD = new TextEncoder().encode('dead backend 016'); // 16 bytes

type Rec = { kind: 'created' | 'removed'; key: string };
const keyOf = (s: number, d: number, sp: number, dp: number, p: number) => `${intToIpv4(s)}:${sp}>${intToIpv4(d)}:${dp}/${p}`;

class Sink implements OwnershipSink {
  readonly recs: Rec[] = [];
  flowCreated(s: number, d: number, sp: number, dp: number, p: number): void {
    this.recs.push({ kind: 'created', key: keyOf(s, d, sp, dp, p) });
  }
  flowRemoved(s: number, d: number, sp: number, dp: number, p: number): void {
    this.recs.push({ kind: 'removed', key: keyOf(s, d, sp, dp, p) });
  }
}

/**
 * One FD (fd-1) on an in-memory network: the hash tier agg-a, service nodes
 * svc-1..3 (10.1.0.1-3:8080) and, with `realServers`, two real servers
 * reached through an edge port (VXLAN-GPE to 10.2.0.1-2:4790). Services:
 * VIP:80/TCP, VIP:53/UDP.
 */
class Fd {
  readonly sched = new VirtualScheduler(0);
  readonly net = new MemoryNetwork(this.sched, 0);
  readonly sock = this.net.bindSync({ host: 'fd-1', port: 6081 });
  readonly agg = this.net.bindSync({ host: 'agg-a', port: 6081 });
  readonly svc = SVC.map((_, i) => this.net.bindSync({ host: `svc-${i + 1}`, port: 6081 }));
  readonly rs = RS.map((ip) => this.net.bindSync({ host: intToIpv4(ip), port: 4790 }));
  readonly table = new FlowTable(4096, { seed: 0x5eed });
  readonly sink = new Sink();
  readonly policy: HashRewritePolicy;
  readonly handler: FlowHandler;
  readonly dp: FdDataplane;
  /** What each node received: frames (Baton's tiers) or edge datagrams' inner packets. */
  readonly got = new Map<string, SentFrame[]>();
  readonly edgeGot = new Map<number, Uint8Array[]>();
  live: number[];

  constructor(readonly o: { realServers?: boolean; modes?: { port: number; proto: number; onBackendDeath: 'reset' | 'rehome' }[] } = {}) {
    this.live = o.realServers ? [0, 1] : [0, 1, 2];
    this.policy = new HashRewritePolicy(this.backends(), 0, POLICY_SEED);
    this.policy.setServices([
      { ip: VIP, port: 80, proto: IPPROTO_TCP },
      { ip: VIP, port: 53, proto: IPPROTO_UDP },
    ]);
    this.handler = new FlowHandler({ selfId: SELF, table: this.table, policy: this.policy, clock: this.sched.clock, ownership: this.sink });
    if (o.modes) this.handler.setBackendDeath(o.modes);
    this.dp = new FdDataplane(this.handler, this.sock, this.sched, { vni: VNI });
    const listen = (s: MemorySocket, name: string) =>
      s.onMessage((d) => {
        const l = this.got.get(name) ?? [];
        l.push(...readFrames(name, d));
        this.got.set(name, l);
      });
    listen(this.agg, 'agg-a');
    this.svc.forEach((s, i) => listen(s, `svc-${i + 1}`));
    this.rs.forEach((s, i) =>
      s.onMessage((d) => {
        const l = this.edgeGot.get(RS[i]!) ?? [];
        l.push(d.slice(EDGE_HEADER_LEN));
        this.edgeGot.set(RS[i]!, l);
      }),
    );
    if (o.realServers) {
      const edge = new EdgePort(this.net.bindSync({ host: 'fd-1-edge', port: 0 }), this.sched, { kind: EdgeEncap.VXLAN_GPE, vni: VNI, peerPort: 4790 });
      edge.start(() => {});
      this.dp.attachEdge(edge);
    }
    this.routes();
  }

  private backends(): Backend[] {
    return this.o.realServers ? this.live.map((i) => ({ ip: RS[i]!, port: 0 })) : this.live.map((i) => ({ ip: SVC[i]!, port: SVC_PORT }));
  }

  /** As FdNode.applyScope / the health callback do: routes and the policy's backends from one view. */
  private routes(): void {
    const gone = [0, 1, 2].filter((i) => !this.live.includes(i));
    this.dp.setRoutes({
      hashTier: this.agg.address,
      peers: [],
      services: this.o.realServers ? [] : this.live.map((i) => ({ virtualIp: SVC[i]!, data: this.svc[i]!.address })),
      goneServices: this.o.realServers ? [] : gone.map((i) => SVC[i]!),
      realServers: this.o.realServers ? [...RS] : undefined,
    });
    this.policy.setBackends(this.backends());
    if (this.o.realServers) this.dp.setDownEndpoints(gone.filter((i) => i < RS.length).map((i) => RS[i]!));
  }

  /** Backend `i` died (a service node FAILED, a real server DOWN). */
  kill(i: number): void {
    this.live = this.live.filter((x) => x !== i);
    this.routes();
  }

  /** An inner packet from the client, as the hash tier forwards it; runs the batch. */
  fromClient(inner: Uint8Array): void {
    this.agg.send(datagram(frame({ inner, locator: LOCATOR })), this.sock.address);
    this.sched.runFor(1);
  }

  /** A reply from a backend (before the reverse rewrite), owner hint this FD. */
  fromBackend(i: number, inner: Uint8Array): void {
    this.svc[i]!.send(datagram(frame({ inner, tier: Tier.SERVICE, sender: 200 + i, ownerHint: SELF, locator: LOCATOR })), this.sock.address);
    this.sched.runFor(1);
  }

  take(name: string): SentFrame[] {
    const l = this.got.get(name) ?? [];
    this.got.delete(name);
    return l;
  }

  c(id: number): number {
    return this.handler.counters.get(id);
  }

  entry(s: number, d: number, sp: number, dp: number, p: number) {
    const t = this.table;
    const slot = t.find(s, d, sp, dp, p);
    return slot < 0 ? null : { owner: t.owner(slot), action: t.netAction(slot), flags: t.flags(slot), rewrite: [t.rewriteIp(slot), t.rewritePort(slot)] };
  }
}

const udp = (cport: number, src = CLIENT, extra = {}) => buildPacket({ srcIp: src, dstIp: VIP, srcPort: cport, dstPort: 53, proto: IPPROTO_UDP, payload: PAYLOAD, ...extra });
const tcp = (cport: number, flags: number, seq = 1000, ack = 2000, payload: Uint8Array | undefined = PAYLOAD) =>
  buildPacket({ srcIp: CLIENT, dstIp: VIP, srcPort: cport, dstPort: 80, proto: IPPROTO_TCP, tcpFlags: flags, seq, ack, payload });
const reply = (backend: number, port: number, cport: number, proto: number, flags = TCP_ACK) =>
  buildPacket({ srcIp: backend, dstIp: CLIENT, srcPort: port, dstPort: cport, proto, tcpFlags: flags, seq: 2000, ack: 1016, payload: PAYLOAD });

const meta = (p: Uint8Array): PacketMeta => {
  const m = new PacketMeta();
  expect(parseIPv4(p, 0, p.length, m, true)).toBe(Reject.OK);
  return m;
};

/** The backend a new flow of this 5-tuple gets over `backends` (a policy of its own: the same hash choice). */
function choice(backends: Backend[], srcIp: number, srcPort: number, dstPort: number, proto: number): number {
  const p = new HashRewritePolicy(backends, 0, POLICY_SEED);
  const m = new PacketMeta();
  Object.assign(m, { srcIp, dstIp: VIP, srcPort, dstPort, proto });
  const a = new FlowAction();
  expect(p.choose(m, a)).toBe(true);
  return a.rewriteIp;
}

/** The first client port from `from` whose flow the live policy sends to backend `ip`. */
function portTo(fd: Fd, ip: number, proto: number, dstPort: number, from = 40000): number {
  const backends = fd.o.realServers ? fd.live.map((i) => ({ ip: RS[i]!, port: 0 })) : fd.live.map((i) => ({ ip: SVC[i]!, port: SVC_PORT }));
  for (let p = from; p < from + 1000; p++) if (choice(backends, CLIENT, p, dstPort, proto) === ip) return p;
  throw new Error('no port maps there');
}

describe('dead backends: the FD data path', () => {
  it('UDP (rehome by default): the flow moves to the backend a new flow would get; both directions work after, the reverse key replaced and its ownership withdrawn and announced, checksums right', () => {
    const fd = new Fd();
    const cport = portTo(fd, SVC[0], IPPROTO_UDP, 53);
    fd.fromClient(udp(cport));
    expect(fd.take('svc-1').map((f) => meta(f.inner).dstIp)).toEqual([SVC[0]]);
    fd.sink.recs.length = 0;

    fd.kill(0); // svc-1 FAILED
    const want = choice([{ ip: SVC[1], port: SVC_PORT }, { ip: SVC[2], port: SVC_PORT }], CLIENT, cport, 53, IPPROTO_UDP);
    const wantName = `svc-${SVC.indexOf(want as never) + 1}`;
    const sent = udp(cport, CLIENT, { id: 7 });
    fd.fromClient(sent);
    const out = fd.take(wantName);
    expect(out).toHaveLength(1);
    const f = out[0]!;
    expect(checksumErrors(f.inner)).toBe('');
    const m = meta(f.inner);
    expect([m.srcIp, m.srcPort, m.dstIp, m.dstPort]).toEqual([CLIENT, cport, want, SVC_PORT]);
    expect(f.inner.subarray(28)).toEqual(PAYLOAD);
    expect({ ownerHint: f.ownerHint, sender: f.sender, locator: f.locator }).toEqual({ ownerHint: SELF, sender: SELF, locator: LOCATOR });
    expect(fd.c(FD.flows_rehomed)).toBe(1);
    expect(fd.dp.counters.get(DP.drop_no_route)).toBe(0);

    // The entries: forward rewritten to the new backend; the reverse key holds it now.
    expect(fd.entry(CLIENT, VIP, cport, 53, IPPROTO_UDP)).toEqual({ owner: SELF, action: NetAction.REWRITE, flags: 0, rewrite: [want, SVC_PORT] });
    expect(fd.entry(SVC[0], CLIENT, SVC_PORT, cport, IPPROTO_UDP)).toBeNull();
    expect(fd.entry(want, CLIENT, SVC_PORT, cport, IPPROTO_UDP)).toEqual({ owner: SELF, action: NetAction.REWRITE, flags: FlowFlag.REVERSE | FlowFlag.REWRITE_SRC, rewrite: [VIP, 53] });
    expect(fd.table.size).toBe(2);
    expect(fd.sink.recs).toEqual([
      { kind: 'removed', key: keyOf(SVC[0], CLIENT, SVC_PORT, cport, IPPROTO_UDP) },
      { kind: 'created', key: keyOf(want, CLIENT, SVC_PORT, cport, IPPROTO_UDP) },
    ]);

    // The new backend's reply: back to the VIP as its source, out to the hash tier.
    fd.fromBackend(SVC.indexOf(want as never), reply(want, SVC_PORT, cport, IPPROTO_UDP));
    const back = fd.take('agg-a');
    expect(back).toHaveLength(1);
    expect(checksumErrors(back[0]!.inner)).toBe('');
    const r = meta(back[0]!.inner);
    expect([r.srcIp, r.srcPort, r.dstIp, r.dstPort]).toEqual([VIP, 53, CLIENT, cport]);
    // And the flow goes on there without another rehome.
    fd.fromClient(udp(cport));
    expect(fd.take(wantName)).toHaveLength(1);
    expect(fd.c(FD.flows_rehomed)).toBe(1);
  });

  it('TCP (reset by default): the client gets an RST from the VIP with correct checksums, toward the hash tier; the flow is removed and its removal announced; a late segment is drop_no_flow', () => {
    const fd = new Fd();
    const cport = portTo(fd, SVC[0], IPPROTO_TCP, 80);
    fd.fromClient(tcp(cport, TCP_SYN, 999, 0, undefined));
    fd.fromBackend(0, reply(SVC[0], SVC_PORT, cport, IPPROTO_TCP, TCP_SYN | TCP_ACK));
    fd.fromClient(tcp(cport, TCP_ACK | TCP_PSH, 1000, 2001));
    expect(fd.take('svc-1')).toHaveLength(2);
    fd.take('agg-a');
    fd.sink.recs.length = 0;

    fd.kill(0);
    fd.fromClient(tcp(cport, TCP_ACK | TCP_PSH, 1016, 2001));
    for (const s of ['svc-1', 'svc-2', 'svc-3']) expect(fd.take(s), s).toEqual([]);
    const out = fd.take('agg-a');
    expect(out).toHaveLength(1);
    const f = out[0]!;
    expect({ ownerHint: f.ownerHint, sender: f.sender, tier: f.tier, locator: f.locator }).toEqual({ ownerHint: 0xffff, sender: SELF, tier: Tier.FD, locator: LOCATOR });
    expect(checksumErrors(f.inner)).toBe('');
    // RFC 9293 §3.10.7.1: the segment had ACK, so <SEQ=SEG.ACK><CTL=RST>; built independently by the codec's builder.
    const want = buildPacket({ srcIp: VIP, dstIp: CLIENT, srcPort: 80, dstPort: cport, proto: IPPROTO_TCP, tcpFlags: TCP_RST, seq: 2001, ack: 0, window: 0, id: 0, ttl: 64 });
    expect(Buffer.from(f.inner).toString('hex')).toBe(Buffer.from(want).toString('hex'));
    expect(fd.c(FD.flows_reset_dead_backend)).toBe(1);
    expect(fd.c(FD.drop_dead_backend)).toBe(0); // the packet is answered (one frame in, one out), not dropped
    expect(fd.table.size).toBe(0);
    expect(fd.sink.recs).toEqual([
      { kind: 'removed', key: keyOf(CLIENT, VIP, cport, 80, IPPROTO_TCP) },
      { kind: 'removed', key: keyOf(SVC[0], CLIENT, SVC_PORT, cport, IPPROTO_TCP) },
    ]);
    fd.fromClient(tcp(cport, TCP_ACK | TCP_PSH, 1032, 2001));
    expect(fd.c(FD.drop_no_flow)).toBe(1);
    expect(fd.take('agg-a')).toEqual([]);
  });

  it('the RST answers a segment without ACK with <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK> (SYN and FIN count); an RST is never answered', () => {
    const out = new Uint8Array(TCP_RESET_LENGTH);
    const seg = tcp(40000, TCP_SYN | TCP_FIN, 0xfffffff0, 0, PAYLOAD); // seq wraps: 0xfffffff0 + 16 + 2
    expect(writeTcpReset(seg, meta(seg), VIP, 80, out)).toBe(TCP_RESET_LENGTH);
    const want = buildPacket({ srcIp: VIP, dstIp: CLIENT, srcPort: 80, dstPort: 40000, proto: IPPROTO_TCP, tcpFlags: TCP_RST | TCP_ACK, seq: 0, ack: 2, window: 0, id: 0 });
    expect(Buffer.from(out).toString('hex')).toBe(Buffer.from(want).toString('hex'));
    expect(checksumErrors(out)).toBe('');
    const rst = tcp(40000, TCP_RST | TCP_ACK);
    expect(writeTcpReset(rst, meta(rst), VIP, 80, out)).toBe(0);
  });

  it('per service: TCP with onBackendDeath rehome is rehomed; UDP with reset is ended (drop_dead_backend) and its next datagram is a new flow on a live backend', () => {
    const fd = new Fd({ modes: [{ port: 80, proto: IPPROTO_TCP, onBackendDeath: 'rehome' }, { port: 53, proto: IPPROTO_UDP, onBackendDeath: 'reset' }] });
    const tport = portTo(fd, SVC[0], IPPROTO_TCP, 80);
    const uport = portTo(fd, SVC[0], IPPROTO_UDP, 53);
    fd.fromClient(tcp(tport, TCP_SYN, 999, 0, undefined));
    fd.fromClient(udp(uport));
    expect(fd.take('svc-1')).toHaveLength(2);
    fd.kill(0);

    fd.fromClient(tcp(tport, TCP_ACK | TCP_PSH));
    const tWant = choice([{ ip: SVC[1], port: SVC_PORT }, { ip: SVC[2], port: SVC_PORT }], CLIENT, tport, 80, IPPROTO_TCP);
    expect(fd.c(FD.flows_rehomed)).toBe(1);
    expect(fd.entry(CLIENT, VIP, tport, 80, IPPROTO_TCP)?.rewrite).toEqual([tWant, SVC_PORT]);
    expect(fd.entry(tWant, CLIENT, SVC_PORT, tport, IPPROTO_TCP)).not.toBeNull();

    const created = fd.c(FD.flows_created);
    fd.fromClient(udp(uport));
    expect(fd.c(FD.flows_ended_dead_backend)).toBe(1);
    expect(fd.c(FD.drop_dead_backend)).toBe(1);
    expect(fd.entry(CLIENT, VIP, uport, 53, IPPROTO_UDP)).toBeNull();
    expect(fd.entry(SVC[0], CLIENT, SVC_PORT, uport, IPPROTO_UDP)).toBeNull();
    fd.fromClient(udp(uport));
    expect(fd.c(FD.flows_created)).toBe(created + 1);
    const uWant = choice([{ ip: SVC[1], port: SVC_PORT }, { ip: SVC[2], port: SVC_PORT }], CLIENT, uport, 53, IPPROTO_UDP);
    expect(fd.entry(CLIENT, VIP, uport, 53, IPPROTO_UDP)?.rewrite).toEqual([uWant, SVC_PORT]);
    expect(fd.take('svc-1')).toEqual([]);
  });

  it('new flows avoid a dead backend', () => {
    const fd = new Fd();
    fd.kill(1);
    for (let p = 30000; p < 30300; p++) fd.fromClient(udp(p));
    expect(fd.take('svc-2')).toEqual([]);
    expect(fd.take('svc-1').length + fd.take('svc-3').length).toBe(300);
    expect(fd.c(FD.flows_rehomed)).toBe(0);
  });

  it('a service node that DISENGAGED is treated the same (a flow that outlived its drain)', () => {
    // goneServices holds FAILED and DISENGAGED service nodes alike (nodes/fd-node.ts applyScope).
    const fd = new Fd();
    const cport = portTo(fd, SVC[2], IPPROTO_UDP, 53);
    fd.fromClient(udp(cport));
    fd.kill(2);
    fd.fromClient(udp(cport));
    expect(fd.c(FD.flows_rehomed)).toBe(1);
    expect(fd.take('svc-3')).toHaveLength(1); // only the first
  });

  it('rehome with no live backend left: flows_rehome_failed, ended as with reset (UDP dropped, TCP answered with an RST)', () => {
    const fd = new Fd();
    const uport = portTo(fd, SVC[0], IPPROTO_UDP, 53);
    fd.fromClient(udp(uport));
    const tport = portTo(fd, SVC[0], IPPROTO_TCP, 80);
    fd.handler.setBackendDeath([{ port: 80, proto: IPPROTO_TCP, onBackendDeath: 'rehome' }]);
    fd.fromClient(tcp(tport, TCP_SYN, 999, 0, undefined));
    fd.take('svc-1');
    fd.kill(0);
    fd.kill(1);
    fd.kill(2);
    fd.fromClient(udp(uport));
    fd.fromClient(tcp(tport, TCP_ACK));
    expect(fd.c(FD.flows_rehome_failed)).toBe(2);
    expect(fd.c(FD.flows_ended_dead_backend)).toBe(1);
    expect(fd.c(FD.drop_dead_backend)).toBe(1);
    expect(fd.c(FD.flows_reset_dead_backend)).toBe(1);
    expect(fd.take('agg-a').map((f) => meta(f.inner).tcpFlags)).toEqual([TCP_RST]);
    expect(fd.table.size).toBe(0);
  });

  it('while the table is frozen (this FD migrating its own flows) nothing moves: drop_no_route as before', () => {
    const fd = new Fd();
    const cport = portTo(fd, SVC[0], IPPROTO_UDP, 53);
    fd.fromClient(udp(cport));
    fd.kill(0);
    fd.handler.frozen = true;
    fd.fromClient(udp(cport));
    expect(fd.dp.counters.get(DP.drop_no_route)).toBe(1);
    expect(fd.c(FD.flows_rehomed)).toBe(0);
    expect(fd.entry(CLIENT, VIP, cport, 53, IPPROTO_UDP)?.rewrite).toEqual([SVC[0], SVC_PORT]);
    fd.handler.frozen = false;
    fd.fromClient(udp(cport));
    expect(fd.c(FD.flows_rehomed)).toBe(1);
  });

  it('a real-server endpoint the health check says is DOWN: its UDP flow rehomed through the edge port, its TCP flow reset; new flows avoid it', () => {
    const fd = new Fd({ realServers: true });
    const uport = portTo(fd, RS[0], IPPROTO_UDP, 53);
    const tport = portTo(fd, RS[0], IPPROTO_TCP, 80);
    fd.fromClient(udp(uport));
    fd.fromClient(tcp(tport, TCP_SYN, 999, 0, undefined));
    expect(fd.edgeGot.get(RS[0])).toHaveLength(2);
    fd.edgeGot.clear();
    fd.sink.recs.length = 0;

    fd.kill(0); // DOWN: the policy's backends and the data plane's down set, as the health callback sets them
    fd.fromClient(udp(uport));
    const inner = fd.edgeGot.get(RS[1]) ?? [];
    expect(inner).toHaveLength(1);
    expect(checksumErrors(inner[0]!)).toBe('');
    const m = meta(inner[0]!);
    expect([m.dstIp, m.dstPort]).toEqual([RS[1], 53]); // a real server keeps the service's port
    expect(fd.entry(RS[1], CLIENT, 53, uport, IPPROTO_UDP)).toEqual({ owner: SELF, action: NetAction.REWRITE, flags: FlowFlag.REVERSE | FlowFlag.REWRITE_SRC, rewrite: [VIP, 53] });
    expect(fd.entry(RS[0], CLIENT, 53, uport, IPPROTO_UDP)).toBeNull();
    expect(fd.c(FD.flows_rehomed)).toBe(1);

    fd.fromClient(tcp(tport, TCP_ACK, 1000, 2000));
    const rst = fd.take('agg-a');
    expect(rst).toHaveLength(1);
    expect(checksumErrors(rst[0]!.inner)).toBe('');
    const r = meta(rst[0]!.inner);
    expect([r.srcIp, r.srcPort, r.dstIp, r.dstPort, r.tcpFlags]).toEqual([VIP, 80, CLIENT, tport, TCP_RST]);
    expect(fd.c(FD.flows_reset_dead_backend)).toBe(1);
    expect(fd.edgeGot.get(RS[0])).toBeUndefined();

    for (let p = 30000; p < 30100; p++) fd.fromClient(udp(p));
    expect(fd.edgeGot.get(RS[0])).toBeUndefined();
    expect(fd.edgeGot.get(RS[1])).toHaveLength(101);
  });

  it('BackendDeath.NOT_MINE for what is not a rewritten flow owned here (a peer\'s flow is redirected before it gets there)', () => {
    const fd = new Fd();
    fd.handler.forwardedSlot = -1;
    expect(fd.handler.backendDied(new Uint8Array(64))).toBe(BackendDeath.NOT_MINE);
  });

  it('rehoming and resetting allocate nothing per packet', () => {
    // Many flows pinned to svc-1 (created by a policy that has only svc-1); svc-1 dies; each flow's next
    // packet is rehomed (UDP) or answered with an RST (TCP) by a handler whose policy has the live backends.
    const warm = 20_000;
    const rewarm = 10_000;
    const n = 50_000;
    const total = warm + rewarm + n;
    const fd = new Fd();
    const table = new FlowTable(total * 2 + 16, { seed: 1 });
    const only1 = new HashRewritePolicy([{ ip: SVC[0], port: SVC_PORT }], 0, POLICY_SEED);
    only1.setServices([
      { ip: VIP, port: 80, proto: IPPROTO_TCP },
      { ip: VIP, port: 53, proto: IPPROTO_UDP },
    ]);
    const setup = new FlowHandler({ selfId: SELF, table, policy: only1, clock: fd.sched.clock });
    const packets: Uint8Array[] = [];
    for (let i = 0; i < total; i++) {
      const src = ipv4ToInt('100.64.0.0') + i;
      const first = i % 2 === 0 ? udp(7, src) : buildPacket({ srcIp: src, dstIp: VIP, srcPort: 7, dstPort: 80, proto: IPPROTO_TCP, tcpFlags: TCP_SYN, seq: 1 });
      setup.handle(first, 0, first.length);
      packets.push(i % 2 === 0 ? udp(7, src) : buildPacket({ srcIp: src, dstIp: VIP, srcPort: 7, dstPort: 80, proto: IPPROTO_TCP, tcpFlags: TCP_ACK, seq: 2, ack: 9 }));
    }
    fd.kill(0);
    const handler = new FlowHandler({ selfId: SELF, table, policy: fd.policy, clock: fd.sched.clock, ownership: { flowCreated() {}, flowRemoved() {} } });
    let next = 0;
    const r = measureAllocation(
      (k) => {
        let done = 0;
        for (let j = 0; j < k; j++) {
          const b = packets[next++]!;
          if (handler.handle(b, 0, b.length) !== 0) continue;
          const v = handler.backendDied(b);
          if (v === BackendDeath.REHOMED || v === BackendDeath.RESET) done++;
        }
        return done;
      },
      n,
      warm,
      rewarm,
    );
    expect(r.result).toBe(n);
    expect(handler.counters.get(FD.flows_rehomed)).toBe(total / 2);
    expect(handler.counters.get(FD.flows_reset_dead_backend)).toBe(total / 2);
    expect(r.gcs, `GCs during ${n} rehomes and resets (heap grew ${r.growth} B)`).toBe(0);
  });
});

describe('dead backends: config', () => {
  const bad = (raw: unknown): string => {
    try {
      parseConfig(raw);
    } catch (e) {
      expect(isBatonError(e, ErrorCode.CONFIG_INVALID)).toBe(true);
      return (e as Error).message;
    }
    return 'accepted';
  };

  it('cluster.services[].onBackendDeath: reset for TCP and rehome for UDP by default, either when given, anything else refused naming the field', () => {
    expect(parseConfig({}).cluster.services.map((s) => [s.proto, s.onBackendDeath])).toEqual([
      ['tcp', 'reset'],
      ['udp', 'rehome'],
    ]);
    const c = parseConfig({ cluster: { services: [{ port: 1, proto: 'tcp', onBackendDeath: 'rehome' }, { port: 2, proto: 'udp', onBackendDeath: 'reset' }, { port: 3, proto: 'udp' }] } });
    expect(c.cluster.services.map((s) => s.onBackendDeath)).toEqual(['rehome', 'reset', 'rehome']);
    // A parsed config handed on (baton up gives every node the same one) parses to itself.
    expect(parseConfig(JSON.parse(JSON.stringify(c))).cluster.services).toEqual(c.cluster.services);
    expect(bad({ cluster: { services: [{ port: 80, proto: 'tcp', onBackendDeath: 'drop' }] } })).toMatch(/cluster\.services\[0\]\.onBackendDeath: Invalid option: expected one of "reset"\|"rehome"/);
  });
});

// ------------------------------------------------------------ the whole cluster

function fdsSum(fds: FdNode[], id: number): number {
  return fds.reduce((n, f) => n + f.handler.counters.get(id), 0);
}

/** Keys of every forward entry an FD owns that is rewritten to `ip`. */
function flowsTo(fds: FdNode[], ip: number): number {
  let n = 0;
  for (const fd of fds) {
    const t = fd.table;
    for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) if (t.owner(s) === fd.me.id && t.rewriteIp(s) === ip && (t.flags(s) & FlowFlag.REVERSE) === 0) n++;
  }
  return n;
}

/** Replica entries (held for other FDs: replication, docs/failure.md) whose key or rewrite target is `ip`. */
function replicasNaming(fds: FdNode[], ip: number): number {
  let n = 0;
  for (const fd of fds) {
    const t = fd.replicas?.table;
    if (!t) continue;
    for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) if (t.srcIp(s) === ip || t.rewriteIp(s) === ip) n++;
  }
  return n;
}

describe('dead backends: a service node dies in an in-memory cluster (the real node code, virtual time)', () => {
  let c: InMemoryCluster | null = null;
  afterEach(async () => {
    await c?.stop();
    c = null;
  });

  function traffic(cl: InMemoryCluster, opts: TrafficOptions) {
    const socket = cl.net.bindSync({ host: '127.0.0.1', port: 0 });
    const gen = new TrafficGenerator(opts, { socket, scheduler: cl.scheduler, target: cl.hashTierData });
    return { gen, done: gen.run() };
  }

  it('UDP flows pinned to svc-1 are rehomed once it is FAILED and carry on; only what reached it before lost; TCP flows pinned to it are reset', async () => {
    c = new InMemoryCluster({ control: { heartbeatMs: 50, deadAfterMs: 500 }, log: { level: 'error' } });
    await c.start();
    const svc1 = ipv4ToInt('10.1.0.1');
    const { gen, done } = traffic(c, { concurrency: 64, totalFlows: 64, packetsPerFlow: 1500, udpRatio: 0.5, ratePps: 6400 });
    await c.runFor(300);
    const pinned = flowsTo(c.fds, svc1);
    expect(pinned).toBeGreaterThan(0);
    expect(replicasNaming(c.fds, svc1)).toBeGreaterThan(0); // the connections' entries, at their backups
    await c.drive(c.services[0]!.stop({ drain: false })); // dies: no drain, no answer
    expect(await c.runUntil(() => statusName(c!.hashTier.manager.registry.byName('svc-1')!.machine.status) === 'FAILED', 5000)).toBe(true);
    expect(await c.runUntil(() => flowsTo(c!.fds, svc1) === 0, 2000)).toBe(true);
    // The backups follow: rehomed connections' replicas name the new backend, reset ones are gone.
    expect(await c.runUntil(() => replicasNaming(c!.fds, svc1) === 0, 1000)).toBe(true);
    const report = await c.drive(done, 120_000);
    void gen;
    const rehomed = fdsSum(c.fds, FD.flows_rehomed);
    const reset = fdsSum(c.fds, FD.flows_reset_dead_backend);
    expect(rehomed + reset).toBe(pinned);
    expect(rehomed).toBeGreaterThan(0);
    expect(reset).toBeGreaterThan(0);
    expect(report.flows.reset).toBe(reset); // every TCP flow pinned to it saw the RST
    const udpFlows = report.perFlow.filter((f) => f.kind === 'udp');
    const lossyUdp = udpFlows.filter((f) => f.lost > 0);
    console.log(`in memory: ${pinned} flows pinned to svc-1 when it died: ${rehomed} UDP rehomed, ${reset} TCP reset; UDP lost ${lossyUdp.reduce((n, f) => n + f.lost, 0)} of ${udpFlows.reduce((n, f) => n + f.sent, 0)} (in ${lossyUdp.length} flows); report lost ${report.lost}`);
    expect(lossyUdp.length).toBe(rehomed);
    // They carried on: most of each rehomed flow's packets came back (only those sent in the 500 ms before FAILED were lost).
    for (const f of lossyUdp) expect(f.received).toBeGreaterThan(f.lost);
    expect(report.duplicated).toBe(0);
  });

  it('a drain that times out (svc-1 DISENGAGED, still running): the UDP flows still going to it are rehomed, 0 lost', async () => {
    c = new InMemoryCluster({ operations: { serviceQuietMs: 200, serviceDrainTimeoutMs: 1000 }, log: { level: 'error' } });
    await c.start();
    const svc1 = ipv4ToInt('10.1.0.1');
    const { done } = traffic(c, { concurrency: 32, totalFlows: 32, packetsPerFlow: 2000, udpRatio: 1, ratePps: 3200 });
    await c.runFor(300);
    const pinned = flowsTo(c.fds, svc1);
    expect(pinned).toBeGreaterThan(0);
    const ch = new ControlChannel(await c.drive(c.messages.connect(c.manager)), c.scheduler);
    const r = await c.drive(ch.request(disengageRequest('svc-1'), 120_000), 30_000);
    ch.close();
    expect(r.body.case === 'disengageReply' && r.body.value.drainTimedOut).toBe(true);
    const report = await c.drive(done, 120_000);
    expect(fdsSum(c.fds, FD.flows_rehomed)).toBe(pinned);
    expect(flowsTo(c.fds, svc1)).toBe(0);
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
  });
});
