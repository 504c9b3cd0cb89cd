/**
 * `npm run simulate` — a disengage, an engage and a failure-free rolling
 * restart on virtual time, with the real node code (in-memory cluster), and a
 * timeline of what the clients saw: echoed packets/s, packets lost, and the
 * redirects the FDs served, every 50 ms of virtual time. Prints a summary and
 * writes an SVG plot (simulations/out/disengage-timeline.svg by default).
 *
 *   npm run simulate [-- --policy hash-aligned] [-- --out file.svg]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InMemoryCluster } from './in-memory-cluster.js';
import { TrafficGenerator } from '../traffic/generator.js';
import { FD } from '../distributor/fd-counters.js';
import { configureLogging } from '../shared/observability/logger.js';

const here = dirname(fileURLToPath(import.meta.url));
const arg = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? dflt) : dflt;
};
const POLICY = arg('policy', 'least-flows');
const OUT = arg('out', join(here, 'out', 'disengage-timeline.svg'));
const STEP = 50; // ms of virtual time per sample

interface Sample {
  t: number;
  echoPps: number;
  redirectPps: number;
}

async function main(): Promise<void> {
  configureLogging({ silent: true });
  const c = new InMemoryCluster();
  await c.start();
  const socket = c.net.bindSync({ host: '127.0.0.1', port: 0 });
  const gen = new TrafficGenerator(
    { concurrency: 120, totalFlows: 100_000, packetsPerFlow: 300, udpRatio: 0.5, ratePps: 20_000, durationMs: 6000, progressIntervalMs: 1_000_000 },
    { socket, scheduler: c.scheduler, target: c.hashTierData },
  );
  const done = gen.run();
  const samples: Sample[] = [];
  const events: { t: number; what: string }[] = [];
  const redirects = () => c.fds.reduce((n, f) => n + f.handler.counters.get(FD.redirected) + f.handler.counters.get(FD.redirected_leaving) + f.handler.counters.get(FD.redirected_by_hint), 0);
  let lastRecv = 0;
  let lastRed = 0;
  const t0 = c.scheduler.clock.now();
  const sample = (): void => {
    const v = gen.verifier;
    samples.push({ t: c.scheduler.clock.now() - t0, echoPps: ((v.received - lastRecv) * 1000) / STEP, redirectPps: ((redirects() - lastRed) * 1000) / STEP });
    lastRecv = v.received;
    lastRed = redirects();
  };
  const timer = c.scheduler.every(STEP, sample);
  const at = async (ms: number, what: string, op: () => Promise<unknown>): Promise<void> => {
    await c.runUntil(() => c.scheduler.clock.now() - t0 >= ms, ms + 1000);
    events.push({ t: c.scheduler.clock.now() - t0, what });
    process.stdout.write(`[${((c.scheduler.clock.now() - t0) / 1000).toFixed(2)}s] ${what}\n`);
    await c.drive(op(), 30_000);
  };
  const ops = c.hashTier.manager.ops;
  await at(1500, `disengage fd-2 (${POLICY})`, () => ops.disengage({ target: 'fd-2', policy: POLICY }));
  await at(3000, 'engage fd-2', () => ops.engage('fd-2'));
  await at(4500, `disengage fd-1 (${POLICY})`, () => ops.disengage({ target: 'fd-1', policy: POLICY }));
  const report = await c.drive(done, 60_000);
  timer.cancel();
  await c.stop();
  console.log(`\n${report.sent} packets sent, ${report.received} echoed, ${report.lost} lost, ${report.duplicated} duplicated, ${report.reordered} reordered`);
  console.log(`latency p50 ${report.latencyMs.p50.toFixed(2)} ms, p99 ${report.latencyMs.p99.toFixed(2)} ms (virtual time)`);
  mkdirSync(dirname(OUT), { recursive: true });
  writeFileSync(OUT, svg(samples, events, report.lost));
  console.log(`plot: ${OUT}`);
  process.exitCode = report.lost === 0 && report.duplicated === 0 ? 0 : 1;
}

/** A small self-contained SVG line chart: echoed pps and redirects/s over time, events marked. */
function svg(s: Sample[], events: { t: number; what: string }[], lost: number): string {
  const W = 900;
  const H = 360;
  const L = 70;
  const R = 20;
  const T = 40;
  const B = 50;
  const tMax = Math.max(...s.map((x) => x.t), 1);
  const yMax = Math.max(...s.map((x) => Math.max(x.echoPps, x.redirectPps)), 1) * 1.1;
  const X = (t: number) => L + ((W - L - R) * t) / tMax;
  const Y = (v: number) => H - B - ((H - T - B) * v) / yMax;
  const line = (f: (x: Sample) => number) => s.map((x, i) => `${i ? 'L' : 'M'}${X(x.t).toFixed(1)},${Y(f(x)).toFixed(1)}`).join(' ');
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((k) => {
    const v = yMax * k;
    return `<line x1="${L}" x2="${W - R}" y1="${Y(v)}" y2="${Y(v)}" stroke="#ddd"/><text x="${L - 6}" y="${Y(v) + 4}" text-anchor="end" font-size="11">${Math.round(v / 1000)}k</text>`;
  });
  const xt = Array.from({ length: Math.floor(tMax / 1000) + 1 }, (_, i) => `<text x="${X(i * 1000)}" y="${H - B + 16}" text-anchor="middle" font-size="11">${i}s</text>`);
  const ev = events.map(
    (e) => `<line x1="${X(e.t)}" x2="${X(e.t)}" y1="${T}" y2="${H - B}" stroke="#c33" stroke-dasharray="4 3"/><text x="${X(e.t) + 4}" y="${T + 12}" font-size="11" fill="#c33">${e.what}</text>`,
  );
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${L}" y="22" font-size="14">Baton on virtual time: echoed packets/s (blue) and FD redirects/s (orange); ${lost} packets lost</text>
${ticks.join('\n')}
${xt.join('\n')}
<path d="${line((x) => x.echoPps)}" fill="none" stroke="#1f6fb2" stroke-width="1.8"/>
<path d="${line((x) => x.redirectPps)}" fill="none" stroke="#e08a1e" stroke-width="1.5"/>
${ev.join('\n')}
<text x="${(W + L) / 2}" y="${H - 12}" text-anchor="middle" font-size="12">virtual time</text>
</svg>
`;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
