/**
 * The loss books (traffic/loss-books.ts) on hand-made counter sets: they
 * close when every unanswered frame is counted, and say where they do not —
 * a frame lost with no counter, a link that received more than was sent, a
 * node whose frames in and out do not add up.
 */
import { describe, it, expect } from 'vitest';
import { closeLossBooks, formatLossBooks, type BookClient, type BookNode } from '../traffic/loss-books.js';

const HT = '127.0.0.1:1000';
const FD = '127.0.0.1:2000';
const SVC = '127.0.0.1:3000';
const CLIENT = '127.0.0.1:9000';

function metrics(family: string, counters: Record<string, number>, rx: Record<number, number>, tx: Record<string, number>): string {
  const l: string[] = ['# HELP whatever'];
  for (const [c, v] of Object.entries(counters)) l.push(`${family}{counter="${c}"} ${v}`);
  for (const [id, v] of Object.entries(rx)) l.push(`baton_link_rx_frames{from_id="${id}"} ${v}`);
  for (const [to, v] of Object.entries(tx)) l.push(`baton_link_tx_frames{to="${to}"} ${v}`);
  return l.join('\n');
}

/** client → ht → fd → svc → ht → fd → ht → client, 100 frames, with knobs for loss. */
function cluster(o: { fdDrops?: number; silentFdLoss?: number; linkLoss?: number; noReply?: number; garbage?: number } = {}) {
  const n = 100;
  const fdDrop = o.fdDrops ?? 0;
  const silent = o.silentFdLoss ?? 0;
  const link = o.linkLoss ?? 0; // ht → fd datagram lost in the kernel
  const noReply = o.noReply ?? 0;
  const atFd = n - link;
  const toSvc = atFd - fdDrop - silent;
  const replies = toSvc - noReply;
  const nodes: BookNode[] = [
    {
      name: 'agg-a', role: 'hash', id: 1, data: HT,
      // in: client frames + service replies + FD egress; out: to FD twice, to client once
      metrics: metrics('baton_hash_tier_total', { drop_bad_encap: o.garbage ?? 0 }, { 0: n, 21: replies, 11: replies }, { [FD]: n + replies, [CLIENT]: replies }),
    },
    {
      name: 'fd-1', role: 'fd', id: 11, data: FD,
      metrics: metrics('baton_fd_total', { drop_no_flow: fdDrop, flows_created: 3 }, { 1: atFd + replies }, { [SVC]: toSvc, [HT]: replies }),
    },
    {
      name: 'svc-1', role: 'service', id: 21, data: SVC,
      metrics: metrics('baton_service_total', { rx_no_reply: noReply }, { 11: toSvc }, { [HT]: replies }),
    },
  ];
  const client: BookClient = { name: 'client-1', id: 0, address: CLIENT, target: HT, framesSent: n, accepted: n, sendErrorFrames: 0, rx: [[1, replies]] };
  return closeLossBooks(nodes, [client]);
}

describe('loss books', () => {
  it('close on a lossless run', () => {
    const b = cluster();
    expect(b.closes).toBe(true);
    expect([b.unanswered, b.counted]).toEqual([0, 0]);
  });

  it('close when every lost frame is counted: node drops, link losses, absorbed frames', () => {
    const b = cluster({ fdDrops: 3, linkLoss: 5, noReply: 2 });
    expect(b.closes).toBe(true);
    expect(b.unanswered).toBe(8);
    expect(b.counted).toBe(8);
    expect(b.absorbed).toBe(2);
    expect(b.links.find((l) => l.toName === 'fd-1' && l.from === 'agg-a')?.lost).toBe(5);
    expect(formatLossBooks(b)).toMatch(/drop {3}fd-1: drop_no_flow 3/);
  });

  it('do not close when a node loses frames without a counter, and name the node', () => {
    const b = cluster({ silentFdLoss: 4 });
    expect(b.closes).toBe(false);
    expect(b.unanswered - b.counted).toBe(4);
    expect(b.nodes.find((x) => x.node === 'fd-1')?.leak).toBe(4);
    expect(formatLossBooks(b)).toMatch(/DO NOT CLOSE.*4 frames without a counter[\s\S]*LEAK {3}fd-1/);
  });

  it('report garbage that is not a frame apart, without breaking the books', () => {
    const b = cluster({ garbage: 7 });
    expect(b.closes).toBe(true);
    expect(b.undecodable).toBe(7);
  });

  it('do not close when a link shows more received than sent', () => {
    const b = cluster();
    const c = closeLossBooks(
      [{ name: 'agg-a', role: 'hash', id: 1, data: HT, metrics: metrics('baton_hash_tier_total', {}, { 0: 10 }, { [CLIENT]: 10 }) }],
      [{ name: 'client-1', id: 0, address: CLIENT, target: HT, framesSent: 5, accepted: 5, sendErrorFrames: 0, rx: [[1, 10]] }],
    );
    expect(b.closes).toBe(true);
    expect(c.closes).toBe(false);
    expect(formatLossBooks(c)).toMatch(/MORE RECEIVED THAN SENT/);
  });
});
