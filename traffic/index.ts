/** Public surface of the traffic generator + verifier (see docs/traffic.md). */
export { runTraffic, TrafficGenerator, type Progress, type TrafficIo } from './generator.js';
export { formatReport, type TrafficReport, type TrafficIoStats } from './report.js';
export { resolveTrafficOptions, type TrafficOptions, type ResolvedTrafficOptions } from './options.js';
export {
  Verifier,
  Echo,
  FlowKind,
  FlowStatus,
  Malformed,
  type VerifierOptions,
  type VerifierReport,
  type FlowReport,
  type LatencySummary,
  type MalformedReport,
} from './verifier.js';
export { PAYLOAD_MAGIC, PAYLOAD_HEADER_LEN } from './wire.js';
