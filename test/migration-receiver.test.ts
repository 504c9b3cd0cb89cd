/**
 * The inheritor's side of a migration (migration-client/migration-receiver.ts):
 * imported closing entries linger and are removed like local ones; a staged
 * copy is inert until its commit and an abort (before or after the commit)
 * leaves the sender the only owner; acknowledgements say what was stored.
 */
import { describe, it, expect, beforeEach } from 'vitest';
import { FlowHandler, Verdict, type OwnershipSink } from '../distributor/flow-handler.js';
import { FlowTable, FlowFlag } from '../distributor/flow-table.js';
import { HashRewritePolicy } from '../distributor/service-policy.js';
import { FD } from '../distributor/fd-counters.js';
import { exportFlowSlots, exportedSize } from '../distributor/flow-export.js';
import { ManualClock } from '../shared/clock.js';
import { Counters } from '../shared/counters.js';
import { buildPacket, type PacketSpec } from '../shared/packet/build.js';
import { ipv4ToInt, IPPROTO_TCP, TCP_SYN, TCP_ACK, TCP_FIN, TCP_RST } from '../shared/packet/meta.js';
import type { MigrationAck, MigrationChunk } from '../shared/control/messages.js';
import { MIG } from '../migration-client/counters.js';
import { MigrationReceiver, MigrationOp, MigrationRefusal, STAGING_HOLD_MS } from '../migration-client/migration-receiver.js';
import { flipped } from './helpers/bytes.js';

const VIP = ipv4ToInt('198.51.100.1');
const B1 = ipv4ToInt('10.1.0.1');
const SENDER = 1;
const INHERITOR = 2;
const PRIMARY = 3;
const LINGER = 500;

class RecordingSink implements OwnershipSink {
  removed = 0;
  flowCreated(): void {}
  flowRemoved(): void {
    this.removed++;
  }
}

function client(i: number): number {
  return ipv4ToInt(`192.0.2.${1 + (i % 200)}`);
}
function tcp(i: number, flags: number, over: Partial<PacketSpec> = {}): Uint8Array {
  return buildPacket({ srcIp: client(i), dstIp: VIP, srcPort: 40000 + i, dstPort: 80, proto: IPPROTO_TCP, tcpFlags: flags, ...over });
}
function reply(i: number, flags: number): Uint8Array {
  return buildPacket({ srcIp: B1, dstIp: client(i), srcPort: 8080, dstPort: 40000 + i, proto: IPPROTO_TCP, tcpFlags: flags });
}

interface Fd {
  clock: ManualClock;
  table: FlowTable;
  h: FlowHandler;
  sink: RecordingSink;
}
function fd(id: number, maxFlows = 1024): Fd {
  const clock = new ManualClock(10_000);
  const table = new FlowTable(maxFlows, { seed: 7 });
  const sink = new RecordingSink();
  const h = new FlowHandler({ selfId: id, table, policy: new HashRewritePolicy([{ ip: B1, port: 8080 }]), clock, ownership: sink, lingerMs: LINGER, idleMs: 1_000_000 });
  h.tick();
  return { clock, table, h, sink };
}
function send(f: Fd, pkt: Uint8Array): number {
  return f.h.handle(pkt, 0, pkt.length);
}

/** The sender's owned entries as one chunk (both directions of every connection). */
function exportOwned(f: Fd, id: number): { records: Uint8Array; count: number } {
  const slots = new Int32Array(f.table.size);
  const n = f.table.slotsOwnedBy(id, slots);
  const records = new Uint8Array(exportedSize(n));
  const count = exportFlowSlots(f.table, slots.subarray(0, n), records, 0, f.h.nowMs);
  return { records, count };
}

function chunk(c: { records: Uint8Array; count: number }, over: Partial<MigrationChunk> = {}): MigrationChunk {
  return { migrationId: 42, seq: 1, owner: INHERITOR, standby: false, count: c.count, records: c.records, ...over };
}
function op(o: number, over: Partial<MigrationChunk> = {}): MigrationChunk {
  return { migrationId: 42, seq: 9, owner: 0, standby: false, count: 0, records: new Uint8Array(0), staged: true, sender: SENDER, op: o, ...over };
}
function ackOf(b: ReturnType<MigrationReceiver['handle']>): MigrationAck {
  expect(b.case).toBe('migrationAck');
  return b.value as MigrationAck;
}

/** Owner of the forward and reverse entries of connection i in `t` (-1: absent). */
function owners(t: FlowTable, i: number): [number, number] {
  const f = t.find(client(i), VIP, 40000 + i, 80, IPPROTO_TCP);
  const r = t.find(B1, client(i), 8080, 40000 + i, IPPROTO_TCP);
  return [f < 0 ? -1 : t.owner(f), r < 0 ? -1 : t.owner(r)];
}

/** Entries of `t` still flagged STAGED. */
function stagedFlags(t: FlowTable): number {
  let n = 0;
  for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) if (t.flags(s) & FlowFlag.STAGED) n++;
  return n;
}

describe('migration receiver', () => {
  let a: Fd;
  let b: Fd;
  let rx: MigrationReceiver;
  let mig: Counters;
  beforeEach(() => {
    a = fd(SENDER);
    b = fd(INHERITOR);
    mig = new Counters(MIG);
    rx = new MigrationReceiver(b.table, b.h, mig);
    // Connections 0..3 at the sender; 0 and 1 closing, lingering there (0: a FIN each way; 1: a RST from the server).
    for (let i = 0; i < 4; i++) expect(send(a, tcp(i, TCP_SYN))).toBe(Verdict.FORWARD);
    expect(send(a, tcp(0, TCP_FIN | TCP_ACK))).toBe(Verdict.FORWARD);
    expect(a.h.lingering).toBe(0); // half-closed: the server may still send
    expect(send(a, reply(0, TCP_FIN | TCP_ACK))).toBe(Verdict.FORWARD);
    expect(send(a, reply(1, TCP_RST | TCP_ACK))).toBe(Verdict.FORWARD);
    expect(a.h.lingering).toBe(2);
  });

  describe('imported closing entries (issue 11, item 8)', () => {
    it('linger at the inheritor and are removed with both directions, like local ones', () => {
      const ack = ackOf(rx.handle(chunk(exportOwned(a, SENDER))));
      expect(ack).toMatchObject({ imported: 8, errorCode: '' });
      expect(b.table.size).toBe(8);
      // One linger entry per closing connection (forward or reverse FIN alike).
      expect(b.h.lingering).toBe(2);
      expect(b.h.counters.get(FD.flows_closing_imported)).toBe(2);
      // A late FIN does not queue it again; closing packets still pass.
      expect(send(b, reply(0, TCP_FIN | TCP_ACK))).toBe(Verdict.FORWARD);
      expect(b.h.lingering).toBe(2);
      b.clock.advance(LINGER - 1);
      b.h.tick();
      expect(b.table.size).toBe(8);
      b.clock.advance(1);
      b.h.tick();
      expect(owners(b.table, 0)).toEqual([-1, -1]);
      expect(owners(b.table, 1)).toEqual([-1, -1]);
      expect(owners(b.table, 2)).toEqual([INHERITOR, INHERITOR]);
      expect(b.table.size).toBe(4);
      expect(b.h.counters.get(FD.flows_closed)).toBe(2);
      expect(b.sink.removed).toBe(4); // both directions of both, announced like local removals
      expect(b.table.checkInvariants()).toBeNull();
    });

    it('a new SYN on an imported lingering 5-tuple starts a fresh flow the old linger leaves alone', () => {
      rx.handle(chunk(exportOwned(a, SENDER)));
      expect(send(b, tcp(0, TCP_SYN))).toBe(Verdict.FORWARD);
      const f = b.table.find(client(0), VIP, 40000, 80, IPPROTO_TCP);
      expect(b.table.flags(f) & FlowFlag.CLOSING).toBe(0);
      b.clock.advance(LINGER);
      b.h.tick();
      expect(owners(b.table, 0)).toEqual([INHERITOR, INHERITOR]);
    });

    it('a standby copy (owned by the primary) does not linger at the backup', () => {
      rx.handle(chunk(exportOwned(a, SENDER), { owner: PRIMARY, standby: true }));
      expect(b.h.lingering).toBe(0);
      expect(owners(b.table, 0)).toEqual([PRIMARY, PRIMARY]);
    });
  });

  describe('staged copy', () => {
    const staged = { staged: true, sender: SENDER } as const;

    it('is inert until the commit: the entries redirect to the sender, which still owns them', () => {
      const ack = ackOf(rx.handle(chunk(exportOwned(a, SENDER), staged)));
      expect(ack).toMatchObject({ imported: 8, errorCode: '' });
      for (let i = 0; i < 4; i++) expect(owners(b.table, i)).toEqual([SENDER, SENDER]);
      expect(b.h.lingering).toBe(0);
      expect(send(b, tcp(2, TCP_ACK))).toBe(Verdict.REDIRECT);
      expect(b.h.redirectOwner).toBe(SENDER);
      expect(rx.stagedMigrations).toBe(1);
      expect(b.h.counters.get(FD.migration_entries_staged)).toBe(8);

      expect(ackOf(rx.handle(op(MigrationOp.COMMIT)))).toMatchObject({ imported: 8, errorCode: '' });
      for (let i = 0; i < 4; i++) expect(owners(b.table, i)).toEqual([INHERITOR, INHERITOR]);
      expect(stagedFlags(b.table)).toBe(0);
      expect(b.h.lingering).toBe(2); // closing entries linger once they are ours
      expect(send(b, tcp(2, TCP_ACK))).toBe(Verdict.FORWARD);
      // A repeated commit changes nothing and says the same.
      expect(ackOf(rx.handle(op(MigrationOp.COMMIT)))).toMatchObject({ imported: 8, errorCode: '' });
      expect(b.h.lingering).toBe(2);
      b.clock.advance(LINGER);
      b.h.tick();
      expect(b.table.size).toBe(4);
      // DONE forgets the log.
      expect(ackOf(rx.handle(op(MigrationOp.DONE))).errorCode).toBe('');
      expect(rx.stagedMigrations).toBe(0);
    });

    it('an abort before the commit leaves one owner per flow: the sender', () => {
      rx.handle(chunk(exportOwned(a, SENDER), staged));
      expect(ackOf(rx.handle(op(MigrationOp.ABORT)))).toMatchObject({ imported: 0, errorCode: '' });
      for (let i = 0; i < 4; i++) {
        expect(owners(a.table, i)).toEqual([SENDER, SENDER]);
        expect(owners(b.table, i)).toEqual([SENDER, SENDER]);
      }
      expect(stagedFlags(b.table)).toBe(0);
      // A commit after the abort is refused: the sender keeps its flows.
      expect(ackOf(rx.handle(op(MigrationOp.COMMIT))).errorCode).toBe(MigrationRefusal.UNKNOWN_MIGRATION);
      expect(owners(b.table, 2)).toEqual([SENDER, SENDER]);
    });

    it('an abort after the commit hands the entries back; their lingers then remove nothing here', () => {
      rx.handle(chunk(exportOwned(a, SENDER), staged));
      rx.handle(op(MigrationOp.COMMIT));
      expect(b.h.lingering).toBe(2);
      expect(ackOf(rx.handle(op(MigrationOp.ABORT)))).toMatchObject({ imported: 8, errorCode: '' });
      for (let i = 0; i < 4; i++) expect(owners(b.table, i)).toEqual([SENDER, SENDER]);
      expect(b.h.counters.get(FD.migration_entries_rolled_back)).toBe(8);
      b.clock.advance(LINGER);
      b.h.tick();
      // Not ours: the sender's own linger (and its removal broadcast) ends them.
      expect(b.table.size).toBe(8);
      expect(b.sink.removed).toBe(0);
      expect(send(b, tcp(0, TCP_ACK))).toBe(Verdict.REDIRECT);
      expect(b.h.redirectOwner).toBe(SENDER);
    });

    it('a copy never committed stays inert, and its log is dropped after STAGING_HOLD_MS', () => {
      rx.handle(chunk(exportOwned(a, SENDER), staged));
      b.clock.advance(STAGING_HOLD_MS + 1);
      b.h.tick();
      expect(ackOf(rx.handle(op(MigrationOp.COMMIT, { migrationId: 43 }))).errorCode).toBe(MigrationRefusal.UNKNOWN_MIGRATION);
      expect(rx.stagedMigrations).toBe(0);
      expect(owners(b.table, 3)).toEqual([SENDER, SENDER]);
      expect(stagedFlags(b.table)).toBe(0); // released: a later commit of the sender cannot pick them up
    });

    it('standby copies become redirects to their primary; a later fallback copy to the backup wins', () => {
      const c = exportOwned(a, SENDER);
      rx.handle(chunk(c, { ...staged, owner: PRIMARY, standby: true }));
      rx.handle(chunk(c, { ...staged, owner: INHERITOR, seq: 2 })); // the primary failed: the backup inherits
      expect(owners(b.table, 0)).toEqual([SENDER, SENDER]);
      expect(ackOf(rx.handle(op(MigrationOp.COMMIT))).imported).toBe(8); // the last copy of each entry counts
      for (let i = 0; i < 4; i++) expect(owners(b.table, i)).toEqual([INHERITOR, INHERITOR]);
      expect(b.h.lingering).toBe(2);

      const rx2 = new MigrationReceiver((b = fd(INHERITOR)).table, b.h, mig);
      rx2.handle(chunk(c, { ...staged, owner: PRIMARY, standby: true }));
      rx2.handle(op(MigrationOp.COMMIT));
      for (let i = 0; i < 4; i++) expect(owners(b.table, i)).toEqual([PRIMARY, PRIMARY]);
      expect(b.h.lingering).toBe(0);
    });

    it('an FD that is migrating or leaving takes no copy and no commit', () => {
      const c = exportOwned(a, SENDER);
      rx.handle(chunk(c, staged));
      b.h.frozen = true;
      expect(ackOf(rx.handle(op(MigrationOp.COMMIT))).errorCode).toBe(MigrationRefusal.MIGRATING);
      expect(ackOf(rx.handle(chunk(c, { ...staged, migrationId: 50 }))).errorCode).toBe(MigrationRefusal.MIGRATING);
      expect(owners(b.table, 0)).toEqual([SENDER, SENDER]);
      // An abort is still taken (it only hands entries back).
      expect(ackOf(rx.handle(op(MigrationOp.ABORT))).errorCode).toBe('');
      b.h.frozen = false;
      expect(b.h.counters.get(FD.migration_chunks_refused)).toBe(2);
    });

    it('a staged chunk must name its sender; an unknown op is refused', () => {
      expect(ackOf(rx.handle(chunk(exportOwned(a, SENDER), { staged: true }))).errorCode).toBe('BATON_BAD_ARGUMENT');
      expect(ackOf(rx.handle(op(7))).errorCode).toBe('BATON_BAD_ARGUMENT');
      expect(b.table.size).toBe(0);
    });
  });

  describe('acknowledgements say what was stored', () => {
    it('a chunk that fills the table: BATON_TABLE_FULL with the number stored; staged, they stay inert', () => {
      b = fd(INHERITOR, 5);
      rx = new MigrationReceiver(b.table, b.h, mig);
      const ack = ackOf(rx.handle(chunk(exportOwned(a, SENDER), { staged: true, sender: SENDER })));
      expect(ack.errorCode).toBe('BATON_TABLE_FULL');
      expect(ack.imported).toBe(5);
      expect(b.table.size).toBe(5);
      for (let s = b.table.nextOccupied(0); s >= 0; s = b.table.nextOccupied(s + 1)) expect(b.table.owner(s)).toBe(SENDER);
      expect(mig.get(MIG.chunks_rejected)).toBe(1);
      expect(mig.get(MIG.entries_imported)).toBe(5);
    });

    it('a malformed chunk changes nothing and says so', () => {
      const c = exportOwned(a, SENDER);
      const bad = flipped(c.records, -1, 0xff);
      const ack = ackOf(rx.handle(chunk({ records: bad, count: c.count })));
      expect(ack).toMatchObject({ imported: 0, errorCode: 'BATON_BAD_EXPORT_FORMAT' });
      expect(b.table.size).toBe(0);
    });
  });
});
