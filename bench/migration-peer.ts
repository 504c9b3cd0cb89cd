/**
 * A peer FD process for the migration bench: the real FdNode (no manager),
 * its table pre-filled with the learned entries of the target's flows, as if
 * it had received their ownership broadcasts. Protocol with the parent:
 * argv[2] = JSON { id, name, flows, seed, targetId, tableSeed } (seed: the
 * fill's; tableSeed: flowTable.seed); prints
 * `READY {"control":"host:port"}`; on stdin line `stats` prints
 * `STATS {"size":n,"owned":n,"byOwner":{id:n}}`; exits when stdin closes.
 */
import { createInterface } from 'node:readline';
import { parseConfig } from '../shared/config/config.js';
import { RealScheduler } from '../shared/runtime/scheduler.js';
import { UdpNet } from '../shared/io/datagram.js';
import { TcpNet } from '../shared/io/stream.js';
import { formatAddress } from '../shared/io/address.js';
import { FdNode } from '../nodes/fd-node.js';
import { configureLogging } from '../shared/observability/logger.js';
import { fillConnections } from './migration-fill.js';

const a = JSON.parse(process.argv[2] ?? '{}') as { id: number; name: string; flows: number; seed: number; targetId: number; tableSeed: number };
configureLogging({ silent: true });

const cfg = parseConfig({ fds: [{ id: a.id, name: a.name }], flowTable: { maxFlows: a.flows + 65_536, seed: a.tableSeed }, log: { level: 'error' } });
const node = new FdNode(cfg, cfg.fds[0]!, { scheduler: new RealScheduler(), datagrams: new UdpNet(), messages: new TcpNet() }, { host: '127.0.0.1', port: 1 });
await node.start({ register: false });
fillConnections(node.table, a.flows / 2, a.seed, a.targetId, true);
process.stdout.write(`READY ${JSON.stringify({ control: formatAddress(node.controlAddress) })}\n`);
createInterface({ input: process.stdin }).on('line', (l) => {
  if (l.trim() !== 'stats') return;
  const t = node.table;
  const byOwner: Record<number, number> = {};
  for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) byOwner[t.owner(s)] = (byOwner[t.owner(s)] ?? 0) + 1;
  process.stdout.write(`STATS ${JSON.stringify({ size: t.size, owned: byOwner[a.id] ?? 0, byOwner })}\n`);
});
process.stdin.on('end', () => void node.stop().then(() => process.exit(0)));
