/**
 * The I/O a node is assembled with (`nodes/`): its clock and timers, its
 * packet sockets and its control connections. A process passes the real
 * ones (`cli/node-main.ts`), the in-memory cluster the virtual ones
 * (`simulations/in-memory-cluster.ts`), so the same node runs in both.
 */
import type { Scheduler } from '../runtime/scheduler.js';
import type { DatagramNet } from './datagram.js';
import type { MessageNet } from './stream.js';

export interface NodeIo {
  scheduler: Scheduler;
  datagrams: DatagramNet;
  messages: MessageNet;
}
