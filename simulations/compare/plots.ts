/**
 * The comparison's plots: vega-lite specs compiled to vega and rendered
 * headless to SVG (vega's View.toSVG needs no browser and no canvas), so
 * the figures are declared data-to-mark mappings, not hand-placed SVG.
 */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { RunResult } from './runner.js';

export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

const ORDER = ['baton', 'baton (hash-aligned)', 'maglev/katran', 'consistent hashing (stateless)', 'glb director', 'beamer', 'modulo'];
const color = (names: string[]) => ({
  field: 'strategy',
  type: 'nominal' as const,
  sort: ORDER,
  scale: { domain: ORDER.filter((n) => names.includes(n)), scheme: 'tableau10' },
  legend: { orient: 'bottom' as const, columns: 4, title: null },
});

/** Broken connections per churn event and strategy (symlog: 0 stays visible next to thousands). */
export function brokenSpec(results: RunResult[], title: string): TopLevelSpec {
  const values = results.flatMap((r) => r.events.map((e, i) => ({ strategy: r.strategy, event: `${i + 1}. ${e.label}`, broken: e.broken })));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 820,
    height: 300,
    data: { values },
    mark: { type: 'bar' },
    encoding: {
      x: { field: 'event', type: 'nominal', sort: null, axis: { labelAngle: -35, labelLimit: 260, title: null } },
      xOffset: { field: 'strategy', sort: ORDER },
      y: { field: 'broken', type: 'quantitative', scale: { type: 'symlog' }, title: 'broken connections (symlog)' },
      color: color(results.map((r) => r.strategy)),
      tooltip: [{ field: 'strategy' }, { field: 'broken' }],
    },
  } as TopLevelSpec;
}

/** Extra hops per packet over time (per bin), events as rules. */
export function hopsSpec(results: RunResult[], title: string): TopLevelSpec {
  const values = results.flatMap((r) =>
    r.series.packets.map((p, i) => ({ strategy: r.strategy, t: i * r.series.binS, hops: p > 0 ? r.series.extraHopPackets[i]! / p : 0 })),
  );
  const first = results[0]!;
  const events = first.events.map((e, i) => ({ t: e.atS, label: String(i + 1) }));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 760,
    height: 260,
    layer: [
      {
        data: { values },
        mark: { type: 'line', strokeWidth: 1.5, interpolate: 'step-after' },
        encoding: {
          x: { field: 't', type: 'quantitative', title: 'virtual time (s)' },
          y: { field: 'hops', type: 'quantitative', title: 'extra hops per packet' },
          color: color(results.map((r) => r.strategy)),
        },
      },
      { data: { values: events }, mark: { type: 'rule', strokeDash: [4, 3], color: '#999' }, encoding: { x: { field: 't', type: 'quantitative' } } },
      { data: { values: events }, mark: { type: 'text', dy: -6, dx: 3, align: 'left', color: '#666', fontSize: 10 }, encoding: { x: { field: 't', type: 'quantitative' }, y: { value: 0 }, text: { field: 'label' } } },
    ],
  } as TopLevelSpec;
}

/** Broken connections over time, cumulative, per strategy. */
export function cumulativeSpec(results: RunResult[], title: string): TopLevelSpec {
  const values = results.flatMap((r) => {
    let acc = 0;
    return r.series.broken.map((b, i) => ({ strategy: r.strategy, t: i * r.series.binS, broken: (acc += b) }));
  });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 560,
    height: 260,
    data: { values },
    mark: { type: 'line', strokeWidth: 2, interpolate: 'step-after' },
    encoding: {
      x: { field: 't', type: 'quantitative', title: 'virtual time (s)' },
      y: { field: 'broken', type: 'quantitative', scale: { type: 'symlog' }, title: 'broken connections so far (symlog)' },
      color: color(results.map((r) => r.strategy)),
    },
  } as TopLevelSpec;
}
