/** The loss books of a launched cluster for the system tests: see cli/loss-report.ts. */
export { roleOf, bookClient, settledBooks } from '../../cli/loss-report.js';
export { formatLossBooks } from '../../traffic/loss-books.js';
