/**
 * The per-packet path (parse, lookup, action, rewrite) must allocate nothing.
 * Evidence: 1 M packets through FlowHandler.handle() with
 *   - zero garbage collections of any kind observed while they run (any
 *     per-packet allocation of even 16 bytes would fill the young generation
 *     and force scavenges), and
 *   - heap growth over the run under 512 KiB, half a byte per packet: the
 *     smallest allocation (16 bytes) per packet would be 16 MB. (Some growth
 *     is not ours: optimised code that the JIT finishes in the background
 *     lands on the heap during the run, more so when other tests load the CPU.)
 */
import { it, expect } from 'vitest';
import { measureAllocation } from './helpers/alloc.js';
import { FlowHandler, Verdict } from '../distributor/flow-handler.js';
import { FlowTable } from '../distributor/flow-table.js';
import { HashRewritePolicy } from '../distributor/service-policy.js';
import { ManualClock } from '../shared/clock.js';
import { buildPacket } from '../shared/packet/build.js';
import { ipv4ToInt, IPPROTO_TCP, IPPROTO_UDP, TCP_SYN, TCP_ACK, TCP_PSH, TCP_FIN } from '../shared/packet/meta.js';

const CLIENTS = 512;
const PACKETS = 1_000_000;

it('1 M packets through the flow handler allocate nothing', () => {
  const VIP = ipv4ToInt('198.51.100.1');
  const backends = [0, 1, 2, 3].map((i) => ({ ip: ipv4ToInt(`10.1.0.${i + 1}`), port: 8080 }));
  const clock = new ManualClock(0);
  const h = new FlowHandler({ selfId: 1, table: new FlowTable(8192), policy: new HashRewritePolicy(backends), clock, lingerMs: 1e9 });

  // Templates: for each client flow, a data packet to the VIP (gets its
  // destination rewritten) and a UDP datagram; one FIN flow to exercise the
  // closing path. Each is copied into a fixed work buffer before handling, so
  // the same bytes can go through a rewrite again and again.
  const templates: Uint8Array[] = [];
  for (let i = 0; i < CLIENTS; i++) {
    const src = ipv4ToInt(`192.0.2.${1 + (i & 127)}`);
    const sp = 20000 + i;
    const syn = buildPacket({ srcIp: src, dstIp: VIP, srcPort: sp, dstPort: 80, proto: IPPROTO_TCP, tcpFlags: TCP_SYN });
    expect(h.handle(syn, 0, syn.length)).toBe(Verdict.FORWARD);
    templates.push(buildPacket({ srcIp: src, dstIp: VIP, srcPort: sp, dstPort: 80, proto: IPPROTO_TCP, tcpFlags: TCP_ACK | TCP_PSH, payload: new Uint8Array(64) }));
    templates.push(buildPacket({ srcIp: src, dstIp: VIP, srcPort: sp, dstPort: 53, proto: IPPROTO_UDP, payload: new Uint8Array(32) }));
  }
  templates.push(buildPacket({ srcIp: ipv4ToInt('192.0.2.200'), dstIp: VIP, srcPort: 999, dstPort: 80, proto: IPPROTO_TCP, tcpFlags: TCP_ACK })); // no flow: drop path
  templates.push(buildPacket({ srcIp: ipv4ToInt('192.0.2.1'), dstIp: VIP, srcPort: 20000, dstPort: 80, proto: IPPROTO_TCP, tcpFlags: TCP_FIN | TCP_ACK }));
  const work = new Uint8Array(2048);
  const n = templates.length;

  const run = (count: number): number => {
    let forwarded = 0;
    for (let i = 0; i < count; i++) {
      const t = templates[i % n]!;
      work.set(t);
      if (h.handle(work, 0, t.length) === Verdict.FORWARD) forwarded++;
      if ((i & 1023) === 0) h.tick();
    }
    return forwarded;
  };

  // Warm-up 200 k, full GC, re-warm, then the measured run (helpers/alloc.ts).
  const { gcs, growth, result: forwarded } = measureAllocation(run, PACKETS, 200_000);

  console.log(`hot path: ${PACKETS} packets, heap growth ${growth} B, GCs during run ${gcs}`);
  expect(forwarded).toBeGreaterThan(PACKETS * 0.9);
  expect(gcs).toBe(0);
  expect(growth).toBeLessThan(512 * 1024);
});
