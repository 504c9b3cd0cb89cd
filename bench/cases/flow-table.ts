/**
 * FD flow table at 1 M flows vs the obvious JS implementation measured in
 * the same run: a Map<string, object> keyed by a string built per operation
 * from the 5-tuple (`${srcIp}:${srcPort}-${dstIp}:${dstPort}/${proto}`).
 *
 * Lookups visit keys in a random order relative to insertion (pre-generated
 * key arrays, read sequentially), so every lookup lands on a random slot.
 * Keys are int32 as flow-table.ts asks of per-packet callers. Each rate is
 * the median of N timed passes (tinybench, bench/lib.ts repeatMs/passRate),
 * with min and max beside it. To keep the case ~15 s the Map is built once
 * (1 M inserts, one round), its lookups are timed over 250 k operations per
 * round and its JSON export/import once; a one-round baseline is one
 * sample (n = 1), which noise can only slow, so ratios against it are
 * slightly optimistic.
 *
 * Bytes per flow: ours = bytesAllocated / flows (exact: all typed arrays);
 * Map = heapUsed delta across building the 1 M-entry Map, each side of it
 * after a forced full GC (gc exposed via v8.setFlagsFromString +
 * vm.runInNewContext). Export/import baseline: JSON.stringify of the Map's
 * entries ([key, object] pairs) and JSON.parse + new Map — what a plain JS
 * FD would ship to an inheritor.
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import { consume, mulberry32, passRate, rateResult, ratesFromMs, repeatMs } from '../lib.js';
import type { BenchCase, BenchResult } from '../lib.js';
import { FlowTable, NetAction } from '../../distributor/flow-table.js';
import { exportFlows, importFlows, exportedSize } from '../../distributor/flow-export.js';

const N = 1_000_000;

interface FlowObj {
  owner: number;
  netAction: number;
  appAction: number;
  rewriteIp: number;
  rewritePort: number;
  flags: number;
  packets: number;
  bytes: number;
  lastSeen: number;
}

const keyOf = (srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number): string =>
  `${srcIp >>> 0}:${srcPort}-${dstIp >>> 0}:${dstPort}/${proto}`;

function getGc(): () => void {
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

const bench: BenchCase = {
  id: 'flow-table',
  title: 'FD flow table at 1 M flows: typed-array table vs Map<string, object>',
  async run(progress) {
    const gc = getGc();
    const out: BenchResult[] = [];
    const rnd = mulberry32(0xf10e);

    progress('generating 1 M keys');
    // Insertion order.
    const S = new Int32Array(N);
    const D = new Int32Array(N);
    const SP = new Int32Array(N);
    const DP = new Int32Array(N);
    const PR = new Int32Array(N);
    for (let i = 0; i < N; i++) {
      S[i] = rnd();
      D[i] = rnd();
      SP[i] = rnd() & 0xffff;
      DP[i] = rnd() & 0xffff;
      PR[i] = rnd() & 1 ? 6 : 17;
    }
    // The same keys in a random order, laid out sequentially for lookups/deletes.
    const order = new Uint32Array(N);
    for (let i = 0; i < N; i++) order[i] = i;
    for (let i = N - 1; i > 0; i--) {
      const j = rnd() % (i + 1);
      const t = order[i]!;
      order[i] = order[j]!;
      order[j] = t;
    }
    const LS = new Int32Array(N);
    const LD = new Int32Array(N);
    const LSP = new Int32Array(N);
    const LDP = new Int32Array(N);
    const LPR = new Int32Array(N);
    for (let k = 0; k < N; k++) {
      const i = order[k]!;
      LS[k] = S[i]!;
      LD[k] = D[i]!;
      LSP[k] = SP[i]!;
      LDP[k] = DP[i]!;
      LPR[k] = PR[i]!;
    }
    // Absent keys (fresh random addresses; a collision with the set is ~2^-64).
    const MS = new Int32Array(N);
    const MD = new Int32Array(N);
    for (let k = 0; k < N; k++) {
      MS[k] = rnd();
      MD[k] = rnd();
    }

    // All flow-table measurements run before the Map exists: building and
    // collecting a 1 M-entry Map keeps GC threads busy on this 2-core box,
    // which would slow whichever side is measured next.
    gc();
    progress('flow table: inserts');
    const t = new FlowTable(N, { seed: 0x5eed });
    const insertAll = (): void => {
      for (let i = 0; i < N; i++) t.insert(S[i]!, D[i]!, SP[i]!, DP[i]!, PR[i]!, 1, NetAction.FORWARD, 0, 0, 0, 0, i);
    };
    const oursIns = ratesFromMs(repeatMs(insertAll, 3, { warmup: 0, beforeEach: () => t.clear() }), N);
    if (t.size !== N) throw new Error(`flow-table bench: table holds ${t.size} flows, expected ${N}`);

    progress('flow table: hit lookups (random order)');
    const oursHit = passRate((iters) => {
      let acc = 0;
      for (let k = 0; k < iters; k++) {
        const s = t.find(LS[k]!, LD[k]!, LSP[k]!, LDP[k]!, LPR[k]!);
        acc = (acc + t.owner(s)) | 0;
      }
      if (acc !== iters) throw new Error(`flow-table bench: ${iters - acc} hit lookups missed`);
      consume(acc);
    }, N, 7);

    progress('flow table: miss lookups');
    const oursMiss = passRate((iters) => {
      let acc = 0;
      for (let k = 0; k < iters; k++) acc = (acc + t.find(MS[k]!, MD[k]!, LSP[k]!, LDP[k]!, LPR[k]!)) | 0;
      if (acc !== -iters) throw new Error('flow-table bench: a miss lookup hit');
      consume(acc);
    }, N, 5);

    progress('flow table: export 1 M flows');
    const buf = new Uint8Array(exportedSize(N));
    let exported = 0;
    const exportMs = repeatMs(() => {
      exported = exportFlows(t, 0, N, buf, 0, N).bytes;
    }, 5);

    progress('flow table: import 1 M flows');
    const t2 = new FlowTable(N, { seed: 0xbeef });
    let imported = 0;
    const importRate = ratesFromMs(
      repeatMs(
        () => {
          imported = importFlows(t2, buf, 0, exported, { nowMs: N });
        },
        3,
        { warmup: 0, beforeEach: () => t2.clear() },
      ),
      N,
    );
    if (imported !== N || t2.size !== N) throw new Error(`flow-table bench: imported ${imported}, table holds ${t2.size}`);

    progress('flow table: deletes (random order)');
    const oursDel = ratesFromMs(
      repeatMs(
        () => {
          for (let k = 0; k < N; k++) t.remove(LS[k]!, LD[k]!, LSP[k]!, LDP[k]!, LPR[k]!);
        },
        3,
        {
          warmup: 0,
          beforeEach: () => {
            if (t.size !== N) {
              t.clear();
              insertAll();
            }
          },
        },
      ),
      N,
    );
    const left: number = t.size;
    if (left !== 0) throw new Error(`flow-table bench: ${left} flows left after deleting all`);
    const oursBytes = t.bytesAllocated / N;

    // ------------------------------------------------------------ baseline
    // One build of the 1 M-entry Map (its rate and heap use); rates on it are
    // then measured over 250 k operations per round to keep the case short.
    const SUB = 250_000;
    progress('Map<string, object>: inserts and heap use');
    gc();
    const heap0 = process.memoryUsage().heapUsed;
    const map = new Map<string, FlowObj>();
    const mapIns = ratesFromMs(
      repeatMs(
        () => {
          for (let i = 0; i < N; i++) {
            map.set(keyOf(S[i]!, D[i]!, SP[i]!, DP[i]!, PR[i]!), {
              owner: 1,
              netAction: NetAction.FORWARD,
              appAction: 0,
              rewriteIp: 0,
              rewritePort: 0,
              flags: 0,
              packets: 0,
              bytes: 0,
              lastSeen: i,
            });
          }
        },
        1,
        { warmup: 0 },
      ),
      N,
    );
    gc();
    const mapBytes = (process.memoryUsage().heapUsed - heap0) / N;

    progress('Map<string, object>: hit lookups');
    const mapHit = passRate((iters) => {
      let acc = 0;
      for (let k = 0; k < iters; k++) {
        const v = map.get(keyOf(LS[k]!, LD[k]!, LSP[k]!, LDP[k]!, LPR[k]!));
        acc = (acc + v!.owner) | 0;
      }
      if (acc !== iters) throw new Error('flow-table bench: Map hit lookups missed');
      consume(acc);
    }, SUB, 3);

    progress('Map<string, object>: miss lookups');
    const mapMiss = passRate((iters) => {
      let acc = 0;
      for (let k = 0; k < iters; k++) if (map.get(keyOf(MS[k]!, MD[k]!, LSP[k]!, LDP[k]!, LPR[k]!)) === undefined) acc++;
      consume(acc);
    }, SUB, 3);

    progress('Map<string, object>: JSON export / import of 1 M entries');
    let json = '';
    const jsonMs = repeatMs(() => {
      json = JSON.stringify(Array.from(map.entries()));
    }, 1, { warmup: 0 });
    let parsedSize = 0;
    const parseMs = repeatMs(() => {
      parsedSize = new Map(JSON.parse(json) as [string, FlowObj][]).size;
    }, 1, { warmup: 0 });
    if (parsedSize !== N) throw new Error('flow-table bench: JSON round trip lost entries');
    const jsonBytes = json.length;
    json = '';

    progress('Map<string, object>: deletes');
    const mapDel = ratesFromMs(
      repeatMs(() => {
        for (let k = 0; k < SUB; k++) map.delete(keyOf(LS[k]!, LD[k]!, LSP[k]!, LDP[k]!, LPR[k]!));
      }, 1, { warmup: 0 }),
      SUB,
    );
    if (map.size !== N - SUB) throw new Error('flow-table bench: Map deletes missed');

    const MAP = 'Map<string, object>';
    out.push(rateResult('hit lookups (find + read owner), random order, 1 M flows', oursHit, 'ops/s', mapHit, MAP, 'target >= 10 M/s and >= 10x Map'));
    out.push(rateResult('miss lookups, 1 M flows', oursMiss, 'ops/s', mapMiss, MAP));
    out.push(rateResult('inserts into an empty table, up to 1 M flows', oursIns, 'ops/s', mapIns, MAP, 'Map: one round'));
    out.push(rateResult('deletes (backward shift), random order, from 1 M flows', oursDel, 'ops/s', mapDel, MAP, 'Map: one round of 250 k'));
    out.push({
      name: 'bytes per flow at 1 M flows',
      value: oursBytes,
      unit: 'B/flow',
      baseline: mapBytes,
      baselineName: `${MAP} (heapUsed delta after full GC)`,
      ratio: mapBytes / oursBytes,
      note: 'ours = bytesAllocated / maxFlows, load factor 0.8; target <= 48; ratio = Map / ours (> 1 = smaller)',
    });
    out.push(
      rateResult('export 1 M flows (one chunk)', ratesFromMs(exportMs, N), 'entries/s', ratesFromMs(jsonMs, N), 'JSON.stringify(Array.from(map.entries()))', `median ${exportMs.median.toFixed(1)} ms, ${(exported / 1e6).toFixed(1)} MB vs ${jsonMs.median.toFixed(0)} ms, ${(jsonBytes / 1e6).toFixed(0)} MB; baseline one round`),
    );
    out.push(rateResult('import 1 M flows into an empty table', importRate, 'entries/s', ratesFromMs(parseMs, N), 'new Map(JSON.parse(json))', 'ours includes validation and checksum; baseline one round'));
    return out;
  },
};

export default bench;
