/**
 * Prometheus export (prom-client). The data plane keeps its counts in
 * Float64Array-backed Counters (no allocation per packet); this module
 * exposes them at scrape time through collect() callbacks, one metric family
 * per counter set with the counter name as a label value:
 *
 *   baton_fd_total{node="fd-1",counter="redirected"} 42
 *
 * plus gauges for ring depths and flow counts.
 */
import http from 'node:http';
import client from 'prom-client';
import type { Counters } from '../counters.js';
import type { Address } from '../io/address.js';

export class MetricsRegistry {
  readonly registry = new client.Registry();
  constructor(readonly node: string) {
    this.registry.setDefaultLabels({ node });
  }

  /** Exports every counter of `counters` as baton_<family>_total{counter="<name>"}. */
  addCounters(family: string, help: string, counters: () => Counters | null): void {
    const reg = this.registry;
    new client.Counter({
      name: `baton_${family}_total`,
      help,
      labelNames: ['counter'],
      registers: [reg],
      collect() {
        const c = counters();
        if (!c) return;
        this.reset();
        const v = c.values;
        for (let i = 0; i < c.names.length; i++) this.inc({ counter: c.names[i]! }, v[i]!);
      },
    });
  }

  /** A gauge sampled at scrape time. */
  addGauge(name: string, help: string, read: () => number): void {
    new client.Gauge({
      name: `baton_${name}`,
      help,
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }

  /** A gauge with one labelled series per item, sampled at scrape time. */
  addLabelledGauge(name: string, help: string, label: string, read: () => Iterable<[string, number]>): void {
    new client.Gauge({
      name: `baton_${name}`,
      help,
      labelNames: [label],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [k, v] of read()) this.set({ [label]: k }, v);
      },
    });
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Serves GET /metrics; resolves with the bound address. */
  serve(host: string, port: number): Promise<{ address: Address; close: () => Promise<void> }> {
    const server = http.createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.statusCode = 404;
        res.end('not found: try /metrics\n');
        return;
      }
      this.text().then(
        (body) => {
          res.setHeader('content-type', this.registry.contentType);
          res.end(body);
        },
        (e: Error) => {
          res.statusCode = 500;
          res.end(String(e.message));
        },
      );
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        const a = server.address() as { address: string; port: number };
        resolve({
          address: { host: a.address, port: a.port },
          close: () => new Promise<void>((r) => server.close(() => r())),
        });
      });
    });
  }
}
