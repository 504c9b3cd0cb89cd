/** `baton traffic`: verified traffic against a running cluster, over real UDP. */
import { UdpNet } from '../shared/io/datagram.js';
import { RealScheduler } from '../shared/runtime/scheduler.js';
import { parseAddress, type Address } from '../shared/io/address.js';
import { Role } from '../shared/control/messages.js';
import { BatonError, ErrorCode } from '../shared/errors.js';
import { runTraffic, type Progress } from '../traffic/generator.js';
import type { TrafficOptions } from '../traffic/options.js';
import type { TrafficReport } from '../traffic/report.js';
import type { BatonConfig } from '../shared/config/config.js';
import { fetchStatus } from './status.js';

export async function hashTierDataAddress(manager: Address): Promise<Address> {
  return (await hashTierDataAddresses(manager))[0]!;
}

/** Every live hash tier's data address, as the manager reports them (the manager's own first). */
export async function hashTierDataAddresses(manager: Address): Promise<Address[]> {
  const s = await fetchStatus(manager);
  const tiers = s.nodes.filter((n) => n.node.role === Role.HASH_TIER && n.node.dataAddr).map((n) => parseAddress(n.node.dataAddr));
  if (tiers.length === 0) throw new BatonError(ErrorCode.UNKNOWN_NODE, 'the manager did not report a hash tier data address');
  return tiers;
}

export async function trafficAgainst(
  cfg: BatonConfig,
  manager: Address,
  opts: TrafficOptions,
  progress?: (p: Progress) => void,
  /** Spread the clients over every hash tier (client i -> tier i mod n) instead of the manager's own. */
  allTiers = false,
): Promise<TrafficReport> {
  const targets = allTiers ? await hashTierDataAddresses(manager) : [await hashTierDataAddress(manager)];
  const target = targets[0]!;
  const socket = await new UdpNet({ recvBufferSize: cfg.dataplane.socketBufferBytes, sendBufferSize: cfg.dataplane.socketBufferBytes }).bind({ host: '127.0.0.1', port: 0 });
  try {
    const tcp = cfg.cluster.services.find((s) => s.proto === 'tcp');
    const udp = cfg.cluster.services.find((s) => s.proto === 'udp');
    return await runTraffic(
      { vip: cfg.cluster.vip, vni: cfg.cluster.vni, ...(tcp ? { tcpPort: tcp.port } : { udpRatio: 1 }), ...(udp ? { udpPort: udp.port } : { udpRatio: 0 }), ...opts },
      { socket, scheduler: new RealScheduler(), target, targets },
      progress,
    );
  } finally {
    await socket.close();
  }
}

export function progressLine(p: Progress): string {
  return `[${(p.elapsedMs / 1000).toFixed(1)}s] ${p.phase} flows ${p.flowsStarted} (active ${p.activeFlows})  sent ${p.sent}  received ${p.received}  outstanding ${p.outstanding}  ${Math.round(p.sendPps)} pps out / ${Math.round(p.recvPps)} pps in`;
}
