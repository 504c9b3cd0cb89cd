/**
 * Runs one Baton node (hash tier, FD or service node) in this process on
 * real sockets and real time. Started by the launcher (`baton up`) as
 *   baton node --role fd --name fd-1 --config <file> [--manager host:port[,host:port…]]
 * Prints one line `READY {json}` on stdout once serving, then runs until
 * SIGTERM/SIGINT (cli/node-shutdown.ts), when it closes its sockets, prints
 * its FINAL counters and exits 0. An FD disengages itself first on SIGTERM
 * (nodes/fd-stop.ts, bounded by fdStopBoundMs); a second SIGTERM or a SIGINT
 * stops it at once. A service node is drained first on either.
 */
import { RealScheduler } from '../shared/runtime/scheduler.js';
import { UdpNet } from '../shared/io/datagram.js';
import { TcpNet } from '../shared/io/stream.js';
import { parseAddress, formatAddress, type Address } from '../shared/io/address.js';
import { kernelUdpDrops } from '../shared/io/kernel-udp-stats.js';
import type { BatonConfig } from '../shared/config/config.js';
import { BatonError, ErrorCode } from '../shared/errors.js';
import { HashTierNode } from '../nodes/hash-tier-node.js';
import { FdNode } from '../nodes/fd-node.js';
import type { NodeIo } from '../shared/io/node-io.js';
import { ServiceMember, serviceStopBoundMs } from '../nodes/service-member.js';
import { fdStopBoundMs } from '../nodes/fd-stop.js';
import { shutdownHandler } from './node-shutdown.js';
import { fstatSync } from 'node:fs';
import { MetricsRegistry } from '../shared/observability/metrics.js';
import { configureLogging, getLogger } from '../shared/observability/logger.js';
import type { LinkRx, LinkTx } from '../shared/dataplane/link-counters.js';
import { buildVersion } from '../shared/build-info.js';
import type { EdgePort } from '../shared/dataplane/edge-port.js';
import { EDGE_ENCAP_NAMES } from '../shared/encap/edge.js';
import { EndpointState } from '../distributor/endpoint-health.js';

export type Role = 'hash' | 'fd' | 'service';

export interface ReadyLine {
  role: Role;
  name: string;
  id: number;
  pid: number;
  data: string;
  control?: string;
  metrics: string;
  /** Build id of this process (shared/build-info.ts), also in its NodeInfo and baton_build_info. */
  version: string;
}

export async function runNode(cfg: BatonConfig, role: Role, name: string, managerArg?: string): Promise<void> {
  configureLogging({ level: cfg.log.level, node: name });
  const log = getLogger('node');
  const io: NodeIo = {
    scheduler: new RealScheduler(),
    datagrams: new UdpNet({ recvBufferSize: cfg.dataplane.socketBufferBytes, sendBufferSize: cfg.dataplane.socketBufferBytes }),
    messages: new TcpNet(),
  };
  // Every hash tier's manager (comma-separated --manager, else the config's control addresses).
  const manager: Address[] = managerArg ? managerArg.split(',').map((a) => parseAddress(a.trim())) : cfg.hashTiers.map((t) => ({ host: t.host, port: t.controlPort }));
  const metrics = new MetricsRegistry(name);
  /** `graceful`: an FD disengages itself first; false (FDs only) cuts that short. */
  let stop: (graceful: boolean) => Promise<void>;
  let ready: Omit<ReadyLine, 'metrics' | 'version'>;
  let metricsPort = 0;
  let metricsHost = '127.0.0.1';
  let links: { rx: LinkRx; tx: LinkTx };
  /** Edge ports (real hosts): their frames in and out belong in the books' node lines too. */
  let edges: EdgePort[] = [];

  if (role === 'hash') {
    const n = new HashTierNode(cfg, io, name);
    const { data, control } = await n.start();
    metrics.addCounters('hash_tier', 'Forwarding-engine decisions and drops, by counter', () => n.engine.counters);
    metrics.addCounters('manager', 'Migration-manager events, by counter', () => n.manager.counters);
    metrics.addCounters('store_coordinator', 'Leader election and cluster-state commits, by counter', () => n.manager.coordinator.counters);
    metrics.addGauge('manager_leader', '1 while this tier\'s manager leads the cluster', () => (n.manager.isLeader ? 1 : 0));
    metrics.addCounters('manager_control', 'Control connections accepted by the manager: messages and decode failures', () => n.manager.channelCounters);
    metrics.addGauge('rx_ring_depth', 'Datagrams waiting in the RX ring', () => n.engine.dp.rx.depth);
    metrics.addGauge('tx_ring_depth', 'Frames queued plus datagrams in flight', () => n.engine.dp.tx.depth);
    metrics.addGauge('scope_version', 'Hash-scope version in use', () => n.engine.scope?.version ?? 0);
    metrics.addGauge('client_addrs', 'Client addresses with a TX lane (<= clientTable.addrCapacity)', () => n.engine.clientAddrCount);
    metrics.addGauge('clients_learned', 'Learned client IPs (<= clientTable.capacity)', () => n.engine.clientCount);
    metrics.addGauge('tx_lanes_in_use', 'TX lanes in use (FDs + client addresses)', () => n.engine.lanesInUse);
    metrics.addGauge('queue_delay_ms', 'Receive-path queueing delay measured by the self-probe (admission control)', () => n.engine.dp.probe?.delayMs() ?? 0);
    metrics.addGauge('queue_delay_max_ms', 'Largest receive-path queueing delay seen', () => n.engine.admission?.maxDelayMs ?? 0);
    metrics.addGauge('admission_state', 'Admission control: 0 open, 1 refusing SYNs, 2 refusing new flows, 3 dropping client frames at the head', () => n.engine.admission?.state ?? 0);
    metrics.addLabelledGauge('peer_queue_delay_ms', "Round trip of the echo probe to each FD in scope and each service node: its receive-path delay plus this tier's (admission control)", 'peer', () => n.engine.fdAdmissionStates().map((f) => [f.fd, f.delayMs] as [string, number]));
    metrics.addLabelledGauge('peer_queue_delay_max_ms', 'Largest echo-probe round trip seen to each FD in scope and each service node', 'peer', () => n.engine.fdAdmissionStates().map((f) => [f.fd, f.maxDelayMs] as [string, number]));
    metrics.addLabelledGauge('peer_admission_state', "Admission by each FD's and service node's probe round trip (the same bounds; acts from 2 up): 0 open … 3 dropping", 'peer', () => n.engine.fdAdmissionStates().map((f) => [f.fd, f.state] as [string, number]));
    metrics.addLabelledGauge(
      'member_status',
      'Member status by name: 1 JOINING, 2 ACTIVE, 3 DISENGAGING, 4 DISENGAGED, 5 FAILED',
      'member',
      () => n.manager.registry.all().map((m) => [m.info.name, m.machine.status] as [string, number]),
    );
    metrics.addGauge('frames_per_second', 'Frames received per second', () => n.stats().pps);
    stop = () => n.stop();
    links = { rx: n.engine.dp.links, tx: n.engine.dp.tx.links };
    edges = n.edges;
    for (const e of n.edges) metrics.addCounters(`edge_${EDGE_ENCAP_NAMES[e.kind]!.replace('-', '_')}`, `Edge port (${EDGE_ENCAP_NAMES[e.kind]}, real hosts): datagrams, refusals by reason, packets out`, () => e.counters);
    const tier = cfg.hashTiers.find((t) => t.name === name)!;
    ready = { role, name, id: tier.id, pid: process.pid, data: formatAddress(data), control: formatAddress(control) };
    metricsPort = tier.metricsPort;
    metricsHost = tier.metricsHost;
  } else if (role === 'fd') {
    const me = cfg.fds.find((f) => f.name === name);
    if (!me) throw new BatonError(ErrorCode.UNKNOWN_NODE, `no FD named ${JSON.stringify(name)} in the config (have ${cfg.fds.map((f) => f.name).join(', ')})`);
    const n = new FdNode(cfg, me, io, manager);
    await n.start();
    metrics.addCounters('fd', 'Flow-handler decisions and drops, by counter', () => n.handler.counters);
    metrics.addCounters('fd_dataplane', 'FD ring, socket and routing counters', () => n.dataplane.counters);
    metrics.addCounters('fd_ownership', 'Ownership broadcast counters', () => n.mesh.counters);
    metrics.addCounters('fd_control', 'Peer control connections accepted: messages and decode failures', () => n.mesh.channelCounters);
    metrics.addCounters('fd_migration', 'Migration-client steps (disengages, chunks, entries, broadcasts), by counter', () => n.migration.counters);
    metrics.addCounters('fd_stop', 'Disengages this FD asked for itself when stopping (SIGTERM): asked, confirmed DISENGAGED, unconfirmed, cut short by a second signal', () => n.stopCounters);
    metrics.addGauge('flows', 'Flow-table entries (owned and learned)', () => n.table.size);
    if (n.replication && n.replicas) {
      const r = n.replication;
      const st = n.replicas;
      metrics.addCounters('fd_replication', "Flow-state replication to this FD's backups: changes, batches, acks, resyncs (docs/failure.md)", () => r.counters);
      metrics.addCounters('fd_replicas', 'Replicas this FD holds for its peers: batches applied or refused, promotions of failed owners', () => st.counters);
      metrics.addGauge('replicas_held', "Peers' connection entries held here as replicas (not forwarding until promoted)", () => st.size);
      metrics.addGauge('replication_lag_max_ms', 'Largest replication lag since the last scrape: first change of a flush to its acknowledgement', () => r.takeMaxLagMs());
      metrics.addGauge('replication_in_flight', 'Replica batches sent and not yet acknowledged', () => r.inFlight);
    }
    metrics.addGauge('rx_ring_depth', 'Datagrams waiting in the RX ring', () => n.dataplane.dp.rx.depth);
    metrics.addGauge('tx_ring_depth', 'Frames queued plus datagrams in flight', () => n.dataplane.dp.tx.depth);
    // Read once more for the FINAL line, after the socket closed: a closed dgram socket throws, and the whole FINAL scrape with it.
    let stopped = false;
    metrics.addGauge('socket_send_queue_bytes', 'Bytes in the UDP socket send queue', () => (stopped ? 0 : n.dataplane.dp.socket.sendQueueBytes()));
    stop = (graceful) => n.stop({ disengage: graceful }).finally(() => (stopped = true));
    links = { rx: n.dataplane.dp.links, tx: n.dataplane.dp.tx.links };
    if (n.edge) {
      const e = n.edge;
      edges = [e];
      metrics.addCounters('edge', 'Edge port toward real servers: packets out, drops by reason', () => e.counters);
    }
    if (n.health) {
      const h = n.health;
      metrics.addCounters('real_server_health', 'Real-server health checks: checks, passes, failures, transitions', () => h.counters);
      metrics.addLabelledGauge('real_server_up', 'Real-server endpoint health as this FD sees it: 1 up (gets new flows), 0 down or unknown', 'endpoint', () => h.status().map((e) => [e.name, e.state === EndpointState.UP ? 1 : 0] as [string, number]));
    }
    ready = { role, name, id: me.id, pid: process.pid, data: formatAddress(n.dataAddress), control: formatAddress(n.controlAddress) };
    metricsPort = me.metricsPort;
    metricsHost = me.metricsHost;
  } else {
    const me = cfg.services.find((s) => s.name === name);
    if (!me) throw new BatonError(ErrorCode.UNKNOWN_NODE, `no service node named ${JSON.stringify(name)} in the config (have ${cfg.services.map((s) => s.name).join(', ')})`);
    const n = new ServiceMember(cfg, me, io, manager);
    await n.start();
    metrics.addCounters('service', 'Service-node counters', () => n.counters);
    stop = () => n.stop();
    links = n.links;
    ready = { role, name, id: me.id, pid: process.pid, data: formatAddress(n.socket.address) };
    metricsPort = me.metricsPort;
    metricsHost = me.metricsHost;
  }

  // Drops no node counter can see: the kernel's, when the data socket's receive buffer is full.
  const dataAddress = parseAddress(ready.data);
  if (kernelUdpDrops(dataAddress) !== null) {
    metrics.addGauge('socket_kernel_drops', 'Datagrams the kernel dropped on the data socket (receive buffer full), from /proc/net/udp', () => kernelUdpDrops(dataAddress) ?? 0);
  }

  // The loss books' raw counts (docs/loss-accounting.md): frames per link.
  // Edge frames count under the sender id EDGE_SENDER_ID (in) and the destination "edge" (out).
  metrics.addLabelledGauge('link_rx_frames', 'Frames decoded from each sender node id', 'from_id', () => [...links.rx.entries(), ...edges.flatMap((e) => e.links.entries())].map(([id, n]) => [String(id), n] as [string, number]));
  metrics.addLabelledGauge('link_tx_frames', 'Frames the kernel accepted toward each destination address', 'to', () => [...links.tx.entries(), ...(edges.length ? [['edge', edges.reduce((n, e) => n + e.txAccepted, 0)] as [string, number]] : [])]);

  // Which build this process runs: one series, value 1 (the Prometheus *_info convention).
  const version = buildVersion();
  metrics.addLabelledGauge('build_info', 'Build this process runs (package version, tag, bundle content hash): value 1', 'version', () => [[version, 1]]);

  const m = await metrics.serve(metricsHost, metricsPort);
  const line: ReadyLine = { ...ready, metrics: `http://${formatAddress(m.address)}/metrics`, version };
  process.stdout.write(`READY ${JSON.stringify(line)}\n`);
  log.info('node ready', { role, name, version });

  const shutdown = shutdownHandler({
    // An FD keeps serving /metrics while it disengages itself; the other roles close it at once, as before.
    stop: (graceful) => (role === 'fd' ? stop(graceful) : Promise.allSettled([stop(graceful), m.close()]).then(() => {})),
    // After the node closed (rings counted, sends reported), its final counters go to the
    // launcher as one `FINAL {"metrics": "<text>"}` line: a stopped process's books still close.
    finish: async () => {
      if (role === 'fd') await m.close().catch(() => {});
      const text = await metrics.text();
      await new Promise<void>((r) => process.stdout.write(`FINAL ${JSON.stringify({ metrics: text })}\n`, () => r()));
    },
    exit: (code) => process.exit(code),
    after: (ms, fn) => void setTimeout(fn, ms).unref(),
    // An FD first disengages itself, a service node is drained (both bounded); the process exits 2 s after that bound at the latest.
    graceMs: role === 'fd' ? fdStopBoundMs(cfg) + 2000 : role === 'service' ? serviceStopBoundMs(cfg) + 2000 : 3000,
    nowMs: 3000,
    escalates: role === 'fd',
    log: (msg, fields) => log.info(msg, fields),
  });
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  // The launcher closes our stdin when it goes away: never outlive it. Only a pipe
  // (the launcher's is a socket pair) says so: under systemd or in a container stdin
  // is /dev/null, which ends at once.
  const stdin = ((): ReturnType<typeof fstatSync> | null => {
    try {
      return fstatSync(0);
    } catch {
      return null; // no stdin at all
    }
  })();
  if (stdin && (stdin.isFIFO() || stdin.isSocket())) {
    process.stdin.on('end', () => shutdown('parent-exit'));
    process.stdin.on('error', () => shutdown('parent-exit'));
    process.stdin.resume();
  }
}
