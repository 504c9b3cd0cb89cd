/**
 * Named counters backed by one Float64Array: incrementing is an indexed add,
 * no allocation, no string lookups on the hot path. Names are fixed at
 * construction and later exported as Prometheus metrics.
 *
 *   const C = defineCounters(['forwarded', 'dropped_full'] as const);
 *   const c = new Counters(C);
 *   c.inc(C.forwarded);            // hot path
 *   c.snapshot()                   // { forwarded: 1, dropped_full: 0 }
 */
export type CounterIds<N extends readonly string[]> = { readonly [K in N[number]]: number } & {
  readonly names: N;
};

export function defineCounters<const N extends readonly string[]>(names: N): CounterIds<N> {
  const ids: Record<string, unknown> = { names };
  names.forEach((n, i) => {
    if (n === 'names') throw new Error('counter name "names" is reserved');
    ids[n] = i;
  });
  return ids as CounterIds<N>;
}

export class Counters {
  readonly names: readonly string[];
  readonly values: Float64Array;
  constructor(ids: { names: readonly string[] }) {
    this.names = ids.names;
    this.values = new Float64Array(ids.names.length);
  }
  /** `id` is one of this set's ids (defineCounters), so always in range: no check on the hot path. */
  inc(id: number, by = 1): void {
    this.values[id]! += by;
  }
  get(id: number): number {
    return this.values[id]!;
  }
  reset(): void {
    this.values.fill(0);
  }
  snapshot(): Record<string, number> {
    const out: Record<string, number> = {};
    for (let i = 0; i < this.names.length; i++) out[this.names[i]!] = this.values[i]!;
    return out;
  }
}

/** Counters that count dropped frames besides the `drop_*` ones (docs/loss-accounting.md). */
export const FRAME_DROP_COUNTERS: readonly string[] = ['tx_dropped_full', 'tx_too_big', 'tx_send_error_frames'];

/** Whether counter `name` counts dropped frames: `drop_*`, and FRAME_DROP_COUNTERS. */
export function isFrameDrop(name: string): boolean {
  return name.startsWith('drop_') || FRAME_DROP_COUNTERS.includes(name);
}

/** Sum of every frame-drop counter (isFrameDrop). Off the hot path. */
export function sumDrops(c: Counters): number {
  let n = 0;
  for (let i = 0; i < c.names.length; i++) if (isFrameDrop(c.names[i]!)) n += c.values[i]!;
  return n;
}
