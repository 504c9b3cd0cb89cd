/** Real-server health (distributor/endpoint-health.ts) and the TCP connect probe (shared/io/tcp-probe.ts). */
import { describe, it, expect } from 'vitest';
import { createServer, type AddressInfo } from 'node:net';
import { EndpointHealth, EndpointState, HEALTH, type Prober } from '../distributor/endpoint-health.js';
import { TcpConnectProber } from '../shared/io/tcp-probe.js';
import { VirtualScheduler } from '../shared/runtime/scheduler.js';

class FakeProber implements Prober {
  up = new Set<string>();
  probe(host: string): Promise<boolean> {
    return Promise.resolve(this.up.has(host));
  }
}
const flush = () => new Promise((r) => setImmediate(r));

describe('EndpointHealth', () => {
  it('first result decides; then fall failures take an endpoint down and rise passes bring it back; every transition reported', async () => {
    const sched = new VirtualScheduler();
    const p = new FakeProber();
    p.up.add('10.0.0.1');
    const changes: string[][] = [];
    const h = new EndpointHealth(
      [
        { host: '10.0.0.1', name: 's1' },
        { host: '10.0.0.2', name: 's2' },
      ],
      { port: 80, intervalMs: 100, timeoutMs: 50, rise: 2, fall: 3 },
      p,
      sched,
      (healthy) => changes.push(healthy.map((e) => e.name)),
    );
    const step = async () => {
      sched.runFor(100);
      await flush();
    };
    h.start();
    await flush();
    expect(h.healthy().map((e) => e.name)).toEqual(['s1']);
    expect(h.status().map((s) => s.state)).toEqual([EndpointState.UP, EndpointState.DOWN]);
    p.up.add('10.0.0.2');
    await step();
    expect(h.healthy().map((e) => e.name)).toEqual(['s1']); // one pass: not yet (rise 2)
    await step();
    expect(h.healthy().map((e) => e.name)).toEqual(['s1', 's2']);
    p.up.delete('10.0.0.1');
    await step();
    await step();
    expect(h.healthy().map((e) => e.name)).toEqual(['s1', 's2']); // two failures: not yet (fall 3)
    await step();
    expect(h.healthy().map((e) => e.name)).toEqual(['s2']);
    expect(changes).toEqual([['s1'], ['s1'], ['s1', 's2'], ['s2']]);
    expect(h.counters.get(HEALTH.endpoint_to_down)).toBe(2);
    expect(h.counters.get(HEALTH.endpoint_to_up)).toBe(2);
    expect(h.counters.get(HEALTH.health_checks)).toBe(12);
    h.stop();
  });
});

describe('TcpConnectProber', () => {
  it('passes a listening port and fails a closed one', async () => {
    const srv = createServer((s) => s.destroy());
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as AddressInfo).port;
    const p = new TcpConnectProber();
    expect(await p.probe('127.0.0.1', port, 1000)).toBe(true);
    await new Promise<void>((r) => srv.close(() => r()));
    expect(await p.probe('127.0.0.1', port, 1000)).toBe(false);
  });
});
