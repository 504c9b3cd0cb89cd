/**
 * A SYN flood from spoofed sources (issue 16, "Floods and exhaustion"), in
 * the in-memory cluster (the real node code, virtual time): tens of
 * thousands of SYNs from new 5-tuples that never complete a handshake,
 * against FDs whose tables hold 4,096 flows. Embryonic connections are
 * bounded (flowTable.maxEmbryonic, evicted oldest first, counted): the
 * long connections established before the flood lose nothing, new
 * connections opened during it complete, and no FD's table fills.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { InMemoryCluster } from '../simulations/in-memory-cluster.js';
import { runTraffic } from '../traffic/generator.js';
import { FloodClient } from '../traffic/flood.js';
import { FD } from '../distributor/fd-counters.js';
import { ipv4ToInt } from '../shared/packet/meta.js';

describe('SYN flood', () => {
  let c: InMemoryCluster | null = null;
  afterEach(async () => {
    await c?.stop();
    c = null;
  });

  for (const bounded of [true, false]) {
    it(bounded ? 'embryonic connections bounded: established and new connections all complete; the table never fills' : 'without the bound (maxEmbryonic = maxFlows) the flood fills the tables and new connections fail: what the bound prevents', async () => {
      const maxFlows = 4096;
      c = new InMemoryCluster({ flowTable: { maxFlows, ...(bounded ? {} : { maxEmbryonic: maxFlows }) }, log: { level: 'error' } });
      await c.start();
      const sched = c.scheduler;
      const target = c.hashTierData;
      const longRun = runTraffic({ concurrency: 32, totalFlows: 32, packetsPerFlow: 600, udpRatio: 0, ratePps: 8000, clientPortBase: 10_000 }, { socket: c.net.bindSync({ host: '127.0.0.1', port: 0 }), scheduler: sched, target });
      await c.runFor(300); // established
      const flood = new FloodClient({ kind: 'tcp-syn', ratePps: 40_000, durationMs: 1500, vni: c.cfg.cluster.vni, vipInt: ipv4ToInt(c.cfg.cluster.vip), udpPort: 80, ips: 4096 }, { socket: c.net.bindSync({ host: '127.0.0.1', port: 0 }), scheduler: sched, target });
      const floodDone = flood.run();
      await c.runFor(500);
      const fresh = runTraffic({ concurrency: 32, totalFlows: 128, packetsPerFlow: 20, udpRatio: 0, ratePps: 4000, clientPortBase: 30_000 }, { socket: c.net.bindSync({ host: '127.0.0.1', port: 0 }), scheduler: sched, target });
      const [long, neu, f] = await c.drive(Promise.all([longRun, fresh, floodDone]), 60_000);
      const sum = (k: number) => c!.fds.reduce((n, x) => n + x.handler.counters.get(k), 0);
      const evicted = sum(FD.embryonic_evicted);
      const full = sum(FD.drop_table_full);
      console.log(`SYN flood (${bounded ? 'bounded' : 'unbounded'}): ${f.framesSent} SYNs; established: ${long.flows.completed}/${long.flows.total} completed, lost ${long.lost}; new: ${neu.flows.completed}/${neu.flows.total} completed, handshakes failed ${neu.flows.handshakeFailed}, SYN retries ${neu.synRetries}; embryonic evicted ${evicted}, drop_table_full ${full}; tables ${c.fds.map((x) => x.table.size).join(', ')} of ${maxFlows}`);
      expect(long.lost).toBe(0);
      expect(long.flows.completed).toBe(32);
      if (bounded) {
        expect(neu.flows.completed).toBe(128);
        expect(neu.lost).toBe(0);
        expect(evicted).toBeGreaterThan(0);
        expect(full).toBe(0);
      } else {
        expect(full).toBeGreaterThan(0);
      }
    }, 120_000);
  }
});
