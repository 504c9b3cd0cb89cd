/**
 * The FD's per-frame path, row by row (test/fixtures/flow-handler-cases.ts,
 * Katran-style fixtures): for each row the handler's verdicts, exactly the
 * counters that move, ownership announcements, the flow-table entries, and
 * every frame sent, field by field, with valid checksums. Then the table's
 * coverage: every Verdict, every frame-drop counter the FD exports and every
 * counter the per-packet code increments must be exercised by some row.
 */
import { readFileSync } from 'node:fs';
import { describe, it, expect } from 'vitest';
import { Verdict } from '../distributor/flow-handler.js';
import { FD } from '../distributor/fd-counters.js';
import { FDP } from '../distributor/fd-dataplane.js';
import { NetAction } from '../distributor/flow-table.js';
import { isFrameDrop } from '../shared/counters.js';
import { Tier } from '../shared/encap/geneve.js';
import {
  BOOKKEEPING,
  FLOW_CASES,
  Flows,
  LANES,
  LOCATOR,
  SCOPE_VERSION,
  SELF,
  VNI,
  checksumErrors,
  inputFrames,
  prepare,
  runCase,
  type FlowCase,
  type InPlace,
  type Observed,
  type OutFrame,
} from './fixtures/flow-handler-cases.js';

/** The inner packet `src` with new addresses and ports, checksum fields zeroed (compared apart). */
function expectedInner(src: Uint8Array, want: InPlace): Uint8Array {
  const b = Uint8Array.from(src);
  const put32 = (o: number, v: number) => {
    b[o] = v >>> 24;
    b[o + 1] = (v >>> 16) & 255;
    b[o + 2] = (v >>> 8) & 255;
    b[o + 3] = v & 255;
  };
  const ihl = (b[0]! & 15) * 4;
  put32(12, want.src[0]);
  put32(16, want.dst[0]);
  b[ihl] = want.src[1] >>> 8;
  b[ihl + 1] = want.src[1] & 255;
  b[ihl + 2] = want.dst[1] >>> 8;
  b[ihl + 3] = want.dst[1] & 255;
  return zeroChecksums(b);
}

function zeroChecksums(p: Uint8Array): Uint8Array {
  const b = Uint8Array.from(p);
  const ihl = (b[0]! & 15) * 4;
  b[10] = 0;
  b[11] = 0;
  const cs = ihl + (b[9] === 6 ? 16 : 6);
  // A UDP checksum of 0 (none) must stay 0: keep it visible to the comparison.
  if (!(b[9] === 17 && p[cs] === 0 && p[cs + 1] === 0)) {
    b[cs] = 0;
    b[cs + 1] = 0;
  }
  return b;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

function checkOut(c: FlowCase, o: Observed): void {
  const want = c.expect.out;
  expect(o.sent.map((s) => s.lane), 'lanes of the frames sent').toEqual(want.map((w) => w.lane));
  const inners = inputFrames(c.input(new Flows(0)));
  want.forEach((w: OutFrame, i) => {
    const s = o.sent[i]!;
    const at = `frame ${i} (to ${w.lane})`;
    expect(Object.keys(LANES), at).toContain(s.lane);
    // Geneve base header and Baton's option header, as an FD writes them.
    expect({ ver: s.geneveVersion, oam: s.oam, critical: s.critical, proto: s.protocol, vni: s.vni }, at).toEqual({
      ver: 0,
      oam: false,
      critical: false,
      proto: 0x0800,
      vni: w.vni ?? VNI,
    });
    expect(s.option, `${at}: Baton option class/type/length`).toEqual([0xfffb, 0x01, 3]);
    // Baton option fields.
    expect(
      { dver: s.dver, tier: s.tier, flags: s.flags, hop: s.hop, reserved: s.reserved, sender: s.sender, ownerHint: s.ownerHint, scope: s.scope },
      `${at}: Baton option`,
    ).toEqual({
      dver: 1,
      tier: w.tier ?? Tier.FD,
      flags: w.flags,
      hop: w.hop,
      reserved: 0,
      sender: w.sender ?? SELF,
      ownerHint: w.ownerHint,
      scope: w.scope ?? SCOPE_VERSION,
    });
    const loc = w.locator === undefined ? LOCATOR : w.locator;
    expect(s.locator, `${at}: client locator`).toEqual(loc === null ? null : { ip: loc.ip, port: loc.port });
    expect(s.optLenWords, `${at}: Opt Len`).toBe(loc === null ? 4 : 7);
    // Inner packet: valid checksums; the rewritten fields as expected and every other byte as it came in.
    expect(checksumErrors(s.inner), `${at}: bad checksums`).toBe('');
    const src = inners[w.of ?? 0]!;
    if (w.inner !== 'same' && 'exact' in w.inner) {
      expect(hex(s.inner), `${at}: inner packet (written by the FD)`).toBe(hex(w.inner.exact));
      return;
    }
    expect(s.inner.length, `${at}: inner length`).toBe(src.length);
    if (w.inner === 'same') expect(hex(s.inner), `${at}: inner packet`).toBe(hex(src));
    else expect(hex(zeroChecksums(s.inner)), `${at}: inner packet (checksums aside)`).toBe(hex(expectedInner(src, w.inner)));
  });
}

function checkRow(c: FlowCase, fx: ReturnType<typeof prepare>, o: Observed): void {
  const e = c.expect;
  expect(o.verdicts, 'handler verdicts').toEqual(e.verdicts);
  // Every counter that moved is the row's, by name and amount; bookkeeping apart.
  const moved = Object.fromEntries(Object.entries(o.moved).filter(([k]) => !BOOKKEEPING.includes(k)));
  expect(moved, 'counters that moved').toEqual(e.counters);
  expect(o.moved.rx_packets ?? 0, 'rx_packets = packets the handler saw').toBe(e.verdicts.length);
  expect(o.moved.tx_frames ?? 0, 'tx_frames = frames handed to the socket').toBe(e.counters.tx_send_error_frames ?? e.out.length);
  expect(o.probes, 'queue probes sent back').toEqual(e.probes ?? []);
  expect({ announced: o.announced, withdrawn: o.withdrawn }, 'ownership records').toEqual({ announced: e.announced ?? 0, withdrawn: e.withdrawn ?? 0 });
  checkOut(c, o);
  if (e.inPlace) {
    const src = (c.input(new Flows(0)) as { packet: Uint8Array }).packet;
    expect(checksumErrors(o.packet!), 'packet after handle(): checksums').toBe('');
    expect(hex(zeroChecksums(o.packet!)), 'packet after handle()').toBe(hex(expectedInner(src, e.inPlace)));
  }
  const t = fx.table;
  if (e.tableSize !== undefined) expect(t.size, 'flow table size').toBe(e.tableSize);
  for (const te of e.table ?? []) {
    const slot = t.find(...te.key);
    const what = `entry ${te.key.join(',')}`;
    if (te.present === false) {
      expect(slot, `${what} must be absent`).toBe(-1);
      continue;
    }
    expect(slot, `${what} present`).toBeGreaterThanOrEqual(0);
    if (te.owner !== undefined) expect(t.owner(slot), `${what} owner`).toBe(te.owner);
    if (te.action !== undefined) expect(t.netAction(slot), `${what} action`).toBe(NetAction[te.action]);
    if (te.flags !== undefined) expect(t.flags(slot), `${what} flags`).toBe(te.flags);
    if (te.rewrite !== undefined) expect([t.rewriteIp(slot), t.rewritePort(slot)], `${what} rewrite target`).toEqual(te.rewrite);
  }
}

describe('FD per-frame path: packet fixtures', () => {
  for (const c of FLOW_CASES) {
    const run = async () => {
      const fx = prepare(c);
      checkRow(c, fx, await runCase(c, fx));
    };
    if (!c.bug) {
      it(c.name, run);
      continue;
    }
    // A known bug: the code does what `bug.now` says, not what `expect` (the documented behaviour) says.
    const bug = c.bug;
    it(`${c.name} [known bug: ${bug.why}]`, async () => {
      const fx = prepare(c);
      const o = await runCase(c, fx);
      const moved = Object.fromEntries(Object.entries(o.moved).filter(([k]) => !BOOKKEEPING.includes(k)));
      expect({ verdicts: o.verdicts, counters: moved }, 'the bug is gone or has changed: check the row and drop `bug` if the expectation now holds').toEqual({
        verdicts: bug.now.verdicts,
        counters: bug.now.counters,
      });
      expect(() => checkRow(c, fx, o), 'the documented behaviour already holds: drop `bug`').toThrow();
    });
  }

  it('names are unique and every named counter exists', () => {
    const names = FLOW_CASES.map((c) => c.name);
    expect(new Set(names).size).toBe(names.length);
    const known = new Set<string>([...FD.names, ...FDP.names]);
    for (const c of FLOW_CASES) for (const k of Object.keys(c.expect.counters)) expect(known, `${c.name}: counter ${k}`).toContain(k);
  });
});

// ---------------------------------------------------------------- coverage

/** Counter names the per-packet code increments, read from its source: `inc(FD.x)`, `drop(FD.x)`, `inc(DP.x)`. */
function countersIncrementedIn(file: string, from: string, to: string): string[] {
  const src = readFileSync(new URL(`../${file}`, import.meta.url), 'utf8');
  const a = src.indexOf(from);
  const b = src.indexOf(to, a + 1);
  if (a < 0 || b < 0) throw new Error(`${file}: markers ${JSON.stringify(from)} .. ${JSON.stringify(to)} not found; update the coverage test`);
  const out = new Set<string>();
  for (const m of src.slice(a, b).matchAll(/\b(?:inc|drop)\(\s*(?:FD|DP|this\.ids)\.([a-z0-9_]+)/g)) out.add(m[1]!);
  return [...out];
}

describe('the fixture table covers the code', () => {
  const covered = new Set<string>();
  for (const c of FLOW_CASES) {
    if (c.bug) continue; // a failing row covers nothing
    for (const v of c.expect.verdicts) covered.add(`verdict ${v}`);
    for (const k of Object.keys(c.expect.counters)) covered.add(k);
  }

  it('every Verdict the flow handler returns', () => {
    const missing = Object.keys(Verdict).filter((v) => !covered.has(`verdict ${v}`));
    expect(missing, 'verdicts no row produces').toEqual([]);
  });

  it('every frame-drop counter of the FD (handler and data plane)', () => {
    const drops = [...new Set([...FD.names, ...FDP.names])].filter(isFrameDrop);
    expect(drops.length).toBeGreaterThan(20);
    expect(
      drops.filter((d) => !covered.has(d)),
      'drop reasons no row produces',
    ).toEqual([]);
  });

  it('every counter the per-packet code increments (read from the source)', () => {
    const found = [
      // FlowHandler.handle() and what it calls (drop, createFlow, startLinger, enqueueLinger, removePair), and tick(),
      // which the datapath runs before every batch; the ownership API (learnOwnership and on) is not per packet.
      ...countersIncrementedIn('distributor/flow-handler.ts', '  handle(buf', '  /** Record that peer'),
      ...countersIncrementedIn('distributor/flow-handler.ts', '  private drop(', 'function positive('),
      // The FD's frame path and the datapath walk.
      ...countersIncrementedIn('distributor/fd-dataplane.ts', '  private frame(', '  close(): Promise'),
      ...countersIncrementedIn('shared/dataplane/datapath.ts', 'socket.onMessage(', '  laneTo(a: Address)'),
      ...countersIncrementedIn('shared/dataplane/datapath.ts', '  private countDropped(', '  async close('),
      ...countersIncrementedIn('shared/dataplane/rx-ring.ts', '  push(d', '  shift()'),
      ...countersIncrementedIn('shared/dataplane/tx-lanes.ts', '  reserve(lane', '  discardQueued()'),
    ];
    // The scan must see the handler's decisions at all (guards a broken pattern).
    for (const n of ['drop_no_flow', 'redirected', 'rewritten', 'flows_expired', 'drop_hop_limit', 'tx_dropped_full']) expect(found).toContain(n);
    const missing = [...new Set(found)].filter((n) => !covered.has(n) && !BOOKKEEPING.includes(n));
    expect(missing, 'counters the per-packet code moves that no row covers').toEqual([]);
  });

  it('every reject reason of the inner-packet parser', () => {
    // rejectCounter() maps codec rejects to drop_<reason>; BAD_ENCAP* come from decodeEncap (data plane counters of the same name).
    const rejects = FD.names.filter((n) => n.startsWith('drop_') && !['drop_no_flow', 'drop_table_full', 'drop_shed_new_flow', 'drop_no_backend'].includes(n));
    expect(rejects.filter((r) => !covered.has(r))).toEqual([]);
  });
});
