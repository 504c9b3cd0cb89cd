/** The loss books of a launched cluster for the system tests: see cli/loss-report.ts. */
export { roleOf, bookClient, settledBooks } from '../../cli/loss-report.js';
export { formatLossBooks } from '../../traffic/loss-books.js';

import type { LossBooks } from '../../traffic/loss-books.js';
/**
 * Nothing unanswered except SYNs refused by admission control (SHED_SYN,
 * docs/loss-accounting.md), which the clients' TCP retries: no data lost.
 * A stall on this 2-core machine (a process start) can put the hash tier's
 * queue past `admission.synAboveMs` at planned events.
 */
export function onlyRetriedSyns(b: LossBooks): boolean {
  return b.linkLossTotal === 0 && b.drops.every((d) => d.counter === 'drop_admission_syn');
}
