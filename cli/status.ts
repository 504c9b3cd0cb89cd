/** `baton status`: asks the manager for its view and prints a table (or JSON). */
import { TcpNet } from '../shared/io/stream.js';
import { RealScheduler } from '../shared/runtime/scheduler.js';
import { ControlChannel } from '../shared/control/channel.js';
import { body, Role, type StatusResponse } from '../shared/control/messages.js';
import type { Address } from '../shared/io/address.js';
import { statusName } from '../shared/membership/status.js';
import { BatonError, ErrorCode } from '../shared/errors.js';

export async function fetchStatus(manager: Address, timeoutMs = 3000): Promise<StatusResponse> {
  let conn;
  try {
    conn = await new TcpNet().connect(manager);
  } catch (e) {
    throw new BatonError(ErrorCode.CONNECTION_CLOSED, `cannot reach the manager at ${manager.host}:${manager.port} (${(e as Error).message}); is the cluster up? (baton up)`, undefined, { cause: e });
  }
  const ch = new ControlChannel(conn, new RealScheduler());
  try {
    const r = await ch.request(body('statusRequest', {}), timeoutMs);
    if (r.body.case !== 'statusResponse') throw new BatonError(ErrorCode.REMOTE_ERROR, `manager answered ${r.body.case}`);
    return r.body.value;
  } finally {
    ch.close();
  }
}

const ROLE_NAMES: Record<number, string> = { [Role.HASH_TIER]: 'hash-tier', [Role.FD]: 'fd', [Role.SERVICE]: 'service', [Role.CLIENT]: 'client' };

export interface StatusRow {
  node: string;
  id: number;
  role: string;
  status: string;
  inScope: boolean;
  flowsOwned: number;
  flowsTotal: number;
  rxDepth: number;
  txDepth: number;
  pps: number;
  drops: number;
  data: string;
  /** Build id the node's process reported (NodeInfo.version); "" if unknown. */
  version: string;
  lastHeartbeatMsAgo: number;
  /** FDs with realServers: "2 up", "1 up, down: s2"; "" otherwise. */
  realServers: string;
}

export function statusRows(s: StatusResponse): StatusRow[] {
  return s.nodes.map((n) => ({
    node: n.node.name,
    id: n.node.id,
    role: ROLE_NAMES[n.node.role] ?? String(n.node.role),
    status: statusName(n.status),
    inScope: n.inScope,
    flowsOwned: n.stats.flowsOwned,
    flowsTotal: n.stats.flowsTotal,
    rxDepth: n.stats.rxDepth,
    txDepth: n.stats.txDepth,
    pps: Math.round(n.stats.pps),
    drops: n.stats.drops,
    data: n.node.dataAddr,
    version: n.node.version,
    lastHeartbeatMsAgo: n.lastHeartbeatMsAgo,
    realServers: n.stats.realServersUp || n.stats.realServersDown ? `${n.stats.realServersUp ?? 0} up${n.stats.realServersDown ? `, down: ${n.stats.realServersDown}` : ''}` : '',
  }));
}

export function formatStatus(s: StatusResponse): string {
  const rows = statusRows(s);
  const servers = rows.some((r) => r.realServers !== '');
  const head = ['NODE', 'ROLE', 'STATUS', 'SCOPE', 'FLOWS OWNED', 'FLOWS', 'RX', 'TX', 'PPS', 'DROPS', 'DATA', 'VERSION', 'HEARTBEAT', ...(servers ? ['REAL SERVERS'] : [])];
  const body = rows.map((r) => [
    `${r.node}(${r.id})`,
    r.role,
    r.status,
    r.role === 'fd' ? (r.inScope ? 'in' : 'out') : '',
    r.role === 'fd' ? String(r.flowsOwned) : '',
    r.role === 'fd' ? String(r.flowsTotal) : '',
    String(r.rxDepth),
    String(r.txDepth),
    String(r.pps),
    String(r.drops),
    r.data,
    r.version || '-',
    r.lastHeartbeatMsAgo < 0 ? 'never' : `${r.lastHeartbeatMsAgo} ms ago`,
    ...(servers ? [r.realServers] : []),
  ]);
  const all = [head, ...body];
  const w = head.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  const line = (r: string[]): string => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd();
  return [`scope version ${s.scopeVersion}`, line(head), ...body.map(line)].join('\n');
}
