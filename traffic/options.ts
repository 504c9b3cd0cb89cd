/**
 * Traffic generator options: what can be configured, the defaults, and the
 * one-time validation (BatonError BAD_ARGUMENT naming the field) that lets
 * the per-packet code skip all checks.
 */
import { BatonError, ErrorCode } from '../shared/errors.js';
import { ipv4ToInt } from '../shared/packet/meta.js';
import { ENCAP_HEADER_LEN } from '../shared/encap/geneve.js';
import { IPV4_HEADER_LEN, PAYLOAD_HEADER_LEN, TCP_HEADER_LEN } from './wire.js';

export interface TrafficOptions {
  /** K: flows in progress at the same time (default 16). */
  concurrency?: number;
  /** Flows to run in all; a finished flow's slot starts the next one (default = concurrency). */
  totalFlows?: number;
  /** Data packets per flow (default 100). */
  packetsPerFlow?: number;
  /** Fraction of flows that are UDP, 0..1; flows are interleaved exactly, not randomly (default 0.5). */
  udpRatio?: number;
  /** Data payload bytes, including the 20-byte payload header (default 64). */
  payloadSize?: number;
  /** Target frames per second (SYN, data, FIN alike); 0 = as fast as the window allows (default 0). */
  ratePps?: number;
  /** As-fast-as-possible mode: data packets sent and not yet echoed (nor timed out), at most (default 256). */
  window?: number;
  /** Stop starting flows and sending data after this long (flows in progress are closed with FIN). */
  durationMs?: number;
  /** Stop after this many data packets in all. */
  totalPackets?: number;
  /** Virtual IP the clients talk to (default 198.51.100.1). */
  vip?: string;
  /** Service port of TCP flows (default 80) and of UDP flows (default 53). */
  tcpPort?: number;
  udpPort?: number;
  /** Client addresses are clientBase + 1 .. clientBase + clients (default 192.0.2.0, 200 clients). */
  clientBase?: string;
  clients?: number;
  /** Client ports are clientPortBase .. 65535, distinct per flow (default 10000). */
  clientPortBase?: number;
  /** Time to wait for a SYN-ACK / FIN-ACK before retransmitting (default 1000 ms). */
  controlTimeoutMs?: number;
  /** Retransmissions of a SYN or FIN before giving up (default 3). */
  controlRetries?: number;
  /** Window mode: a data packet not echoed after this long stops holding window room (default 1000 ms). */
  echoTimeoutMs?: number;
  /** After sending ends, wait this long at most for the remaining echoes and FIN-ACKs (default 2000 ms). */
  drainMs?: number;
  /** Cluster id written as the frames' VNI; replies with another VNI count as bad encap (default 1). */
  vni?: number;
  /** Scheduler tick: token refill, retransmission and drain checks (default 1 ms). */
  tickMs?: number;
  /**
   * Rate mode: after a stall (the process was not scheduled, the socket was
   * full) the packets not sent are owed and repaid at up to this fraction
   * above the target rate, so the average holds. Debt is capped at 1 s of
   * traffic. 0 = a stall's packets are given up, as a plain token bucket (default).
   */
  catchUp?: number;
  /** Batching: frames per datagram (default 32) and bytes per datagram (default 16384). */
  maxFramesPerDatagram?: number;
  maxDatagramBytes?: number;
  /** Send buffers in the pool (each one datagram in flight in the socket, default 64). */
  sendBuffers?: number;
  /** onProgress period (default 1000 ms). */
  progressIntervalMs?: number;
  /** At most this many per-flow rows in the report (default 10000). */
  maxFlowRows?: number;
}

export interface ResolvedTrafficOptions {
  concurrency: number;
  totalFlows: number;
  packetsPerFlow: number;
  udpRatio: number;
  payloadSize: number;
  ratePps: number;
  window: number;
  durationMs: number; // Infinity = unbounded
  totalPackets: number; // Infinity = unbounded
  vip: string;
  vipInt: number;
  tcpPort: number;
  udpPort: number;
  clientBase: string;
  clientBaseInt: number;
  clients: number;
  clientPortBase: number;
  controlTimeoutMs: number;
  controlRetries: number;
  echoTimeoutMs: number;
  drainMs: number;
  vni: number;
  tickMs: number;
  catchUp: number;
  maxFramesPerDatagram: number;
  maxDatagramBytes: number;
  sendBuffers: number;
  progressIntervalMs: number;
  maxFlowRows: number;
}

function bad(field: string, value: unknown, why: string): never {
  throw new BatonError(ErrorCode.BAD_ARGUMENT, `TrafficOptions.${field}: ${why} (got ${String(value)})`, { field, value });
}

function int(field: string, v: number | undefined, def: number, min: number, max: number): number {
  const x = v ?? def;
  if (!Number.isInteger(x) || x < min || x > max) bad(field, v, `must be an integer in ${min}..${max}`);
  return x;
}

function num(field: string, v: number | undefined, def: number, min: number, max: number): number {
  const x = v ?? def;
  if (typeof x !== 'number' || !(x >= min && x <= max)) bad(field, v, `must be a number in ${min}..${max}`);
  return x;
}

function ip(field: string, v: string | undefined, def: string): [string, number] {
  const s = v ?? def;
  try {
    return [s, ipv4ToInt(s)];
  } catch {
    return bad(field, v, 'must be a dotted IPv4 address');
  }
}

/** Fills in defaults and validates every field; throws BatonError(BAD_ARGUMENT) naming the first bad one. */
export function resolveTrafficOptions(o: TrafficOptions = {}): ResolvedTrafficOptions {
  const concurrency = int('concurrency', o.concurrency, 16, 1, 1_000_000);
  const totalFlows = int('totalFlows', o.totalFlows, concurrency, 1, 0xffffffff);
  const packetsPerFlow = int('packetsPerFlow', o.packetsPerFlow, 100, 0, 0x7fffffff);
  const udpRatio = num('udpRatio', o.udpRatio, 0.5, 0, 1);
  const maxFramesPerDatagram = int('maxFramesPerDatagram', o.maxFramesPerDatagram, 32, 1, 4096);
  const maxDatagramBytes = int('maxDatagramBytes', o.maxDatagramBytes, 16384, 256, 65507);
  // The largest frame (TCP data) must fit one datagram.
  const maxPayload = Math.min(maxDatagramBytes, 65535 + ENCAP_HEADER_LEN) - ENCAP_HEADER_LEN - IPV4_HEADER_LEN - TCP_HEADER_LEN;
  const payloadSize = int('payloadSize', o.payloadSize, 64, PAYLOAD_HEADER_LEN, maxPayload);
  const ratePps = num('ratePps', o.ratePps, 0, 0, 1e9);
  const window = int('window', o.window, 256, 1, 1_000_000);
  const durationMs = num('durationMs', o.durationMs, Infinity, 0, Infinity);
  const totalPackets = o.totalPackets === undefined ? Infinity : int('totalPackets', o.totalPackets, 0, 0, Number.MAX_SAFE_INTEGER);
  const [vip, vipInt] = ip('vip', o.vip, '198.51.100.1');
  const tcpPort = int('tcpPort', o.tcpPort, 80, 1, 65535);
  const udpPort = int('udpPort', o.udpPort, 53, 1, 65535);
  const [clientBase, clientBaseInt] = ip('clientBase', o.clientBase, '192.0.2.0');
  const clients = int('clients', o.clients, 200, 1, 65535);
  if (clientBaseInt + clients > 0xffffffff) bad('clients', clients, `too many for clientBase ${clientBase}`);
  const clientPortBase = int('clientPortBase', o.clientPortBase, 10000, 1, 65535);
  const controlTimeoutMs = num('controlTimeoutMs', o.controlTimeoutMs, 1000, 0.001, 3_600_000);
  const controlRetries = int('controlRetries', o.controlRetries, 3, 0, 255);
  const echoTimeoutMs = num('echoTimeoutMs', o.echoTimeoutMs, 1000, 0.001, 3_600_000);
  const drainMs = num('drainMs', o.drainMs, 2000, 0, 3_600_000);
  const vni = int('vni', o.vni, 1, 0, 0xffffff);
  const tickMs = num('tickMs', o.tickMs, 1, 0.001, 60_000);
  const catchUp = num('catchUp', o.catchUp, 0, 0, 10);
  const sendBuffers = int('sendBuffers', o.sendBuffers, 64, 1, 65536);
  const progressIntervalMs = num('progressIntervalMs', o.progressIntervalMs, 1000, 1, 3_600_000);
  const maxFlowRows = int('maxFlowRows', o.maxFlowRows, 10_000, 0, 100_000_000);
  if (totalFlows > clients * (65536 - clientPortBase)) {
    // Every flow needs its own (client ip, client port); more would reuse a live 5-tuple.
    bad('totalFlows', totalFlows, `exceeds clients x client ports (${clients} x ${65536 - clientPortBase})`);
  }
  return {
    concurrency,
    totalFlows,
    packetsPerFlow,
    udpRatio,
    payloadSize,
    ratePps,
    window,
    durationMs,
    totalPackets,
    vip,
    vipInt,
    tcpPort,
    udpPort,
    clientBase,
    clientBaseInt,
    clients,
    clientPortBase,
    controlTimeoutMs,
    controlRetries,
    echoTimeoutMs,
    drainMs,
    vni,
    tickMs,
    catchUp,
    maxFramesPerDatagram,
    maxDatagramBytes,
    sendBuffers,
    progressIntervalMs,
    maxFlowRows,
  };
}
