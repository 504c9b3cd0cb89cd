/** The flood client (traffic/flood.ts): rate, distinct tuples, valid packets, the books' counts. */
import { describe, it, expect } from 'vitest';
import { MemoryNetwork } from '../shared/io/datagram.js';
import { VirtualScheduler } from '../shared/runtime/scheduler.js';
import { FloodClient } from '../traffic/flood.js';
import { decodeEncap, EncapMeta, Tier } from '../shared/encap/geneve.js';
import { parseIPv4 } from '../shared/packet/parse.js';
import { PacketMeta, IPPROTO_UDP } from '../shared/packet/meta.js';
import { Reject } from '../shared/packet/reject.js';
import { BatonError } from '../shared/errors.js';

describe('FloodClient', () => {
  it('sends ratePps x duration one-packet UDP flows, each a new 5-tuple with valid checksums, and counts echoes by sender', async () => {
    const sched = new VirtualScheduler();
    const net = new MemoryNetwork(sched, 0);
    const sink = net.bindSync({ host: '10.0.0.1', port: 6081 });
    const socket = net.bindSync({ host: '10.0.0.2', port: 5000 });
    const seen = new Set<string>();
    const m = new EncapMeta();
    const pm = new PacketMeta();
    let frames = 0;
    let bad = 0;
    sink.onMessage((data, from) => {
      let off = 0;
      while (off < data.length) {
        expect(decodeEncap(data, off, data.length - off, m)).toBe(Reject.OK);
        expect(m.tier).toBe(Tier.CLIENT);
        if (parseIPv4(data, m.innerOffset, m.innerLength, pm, true) !== Reject.OK || pm.proto !== IPPROTO_UDP) bad++;
        seen.add(`${pm.srcIp}:${pm.srcPort}`);
        frames++;
        off += m.frameLength;
      }
      // Echo the datagram back as a node with id 7 would (the sender id is what the books key on).
      const echo = Uint8Array.from(data);
      let o = 0;
      while (o < echo.length && decodeEncap(echo, o, echo.length - o, m) === Reject.OK) {
        echo[o + 16] = 0; // sender id (docs/wire-encapsulation.md: frame bytes 16-17)
        echo[o + 17] = 7;
        o += m.frameLength;
      }
      sink.send(echo, from);
    });
    const f = new FloodClient({ ratePps: 50_000, durationMs: 200, vni: 42, vipInt: 0xc6336401, udpPort: 53, ips: 4 }, { socket, scheduler: sched, target: sink.address });
    const done = f.run();
    sched.runUntil(300);
    const r = await done;
    expect(r.framesSent).toBe(10_000);
    expect(frames).toBe(10_000);
    expect(bad).toBe(0);
    expect(seen.size).toBe(10_000); // every frame a flow of its own
    expect(f.links.accepted).toBe(10_000);
    expect(f.links.sendErrorFrames).toBe(0);
    expect(f.framesReceived).toBe(10_000);
    expect(f.links.rx.entries()).toEqual([[7, 10_000]]);
  });

  it('refuses a run that would reuse a tuple, and bad options, naming the option', () => {
    const sched = new VirtualScheduler();
    const net = new MemoryNetwork(sched, 0);
    const socket = net.bindSync({ host: '10.0.0.2', port: 5000 });
    const io = { socket, scheduler: sched, target: { host: '10.0.0.1', port: 6081 } };
    expect(() => new FloodClient({ ratePps: 1_000_000, durationMs: 60_000, vni: 1, vipInt: 1, udpPort: 53, ips: 1 }, io)).toThrow(/flood option ips/);
    expect(() => new FloodClient({ ratePps: -1, durationMs: 1, vni: 1, vipInt: 1, udpPort: 53 }, io)).toThrow(BatonError);
  });
});
