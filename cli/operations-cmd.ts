/** `baton disengage` / `baton engage`: ask the manager, show progress, print a summary. */
import { TcpNet } from '../shared/io/stream.js';
import { RealScheduler } from '../shared/runtime/scheduler.js';
import { ControlChannel } from '../shared/control/channel.js';
import { body, type Body, type DisengageReply, type EngageReply, type MigrationProgress, type OperationProgress } from '../shared/control/messages.js';
import type { Address } from '../shared/io/address.js';
import { BatonError, ErrorCode, errorFromWire } from '../shared/errors.js';

export async function managerChannel(manager: Address): Promise<ControlChannel> {
  try {
    return new ControlChannel(await new TcpNet().connect(manager), new RealScheduler());
  } catch (e) {
    throw new BatonError(ErrorCode.CONNECTION_CLOSED, `cannot reach the manager at ${manager.host}:${manager.port} (${(e as Error).message}); is the cluster up? (baton up)`, undefined, { cause: e });
  }
}

/** Sends one long request to the manager, passing progress messages to `onProgress`. */
export async function operation(
  manager: Address,
  req: Body,
  timeoutMs: number,
  onProgress: (p: { migration?: MigrationProgress; operation?: OperationProgress }) => void,
): Promise<Body> {
  const ch = await managerChannel(manager);
  ch.onMessage((env) => {
    if (env.body.case === 'migrationProgress') onProgress({ migration: env.body.value });
    else if (env.body.case === 'operationProgress') onProgress({ operation: env.body.value });
  });
  try {
    const reply = (await ch.request(req, timeoutMs)).body;
    if (reply.case === 'errorReply') throw errorFromWire(reply.value.code, reply.value.message);
    return reply;
  } finally {
    ch.close();
  }
}

/** An operator's disengage request (the manager fills in peers, scope and ids). */
export function disengageRequest(target: string, o: { policy?: string; inheritor?: string; backup?: string; timeoutMs?: number; chunkRecords?: number } = {}): Body {
  return body('disengageRequest', {
    target,
    targetId: 0,
    policy: o.policy ?? 'least-flows',
    inheritor: o.inheritor ?? '',
    backup: o.backup ?? '',
    timeoutMs: o.timeoutMs ?? 30_000,
    migrationId: 0,
    peers: [],
    nextScope: { version: 0, members: [], tableSize: 0, hashSeed: 0, anchor: [] },
    chunkRecords: o.chunkRecords ?? 0,
    randomSeed: 0,
  });
}

export function progressBar(p: MigrationProgress, width = 30): string {
  const frac = p.total > 0 ? Math.min(1, p.copied / p.total) : p.phase === 'done' ? 1 : 0;
  const full = Math.round(frac * width);
  return `${p.target} ${p.phase.padEnd(9)} [${'#'.repeat(full)}${'.'.repeat(width - full)}] ${p.copied}/${p.total} entries  rx ${p.rxDepth} tx ${p.txDepth} sendq ${p.sendQueueBytes} B  redirects ${p.redirects}`;
}

/** A list of names for the summary ("none" when empty). */
function names(list: readonly string[]): string {
  return list.length > 0 ? list.join(', ') : 'none';
}

export function formatDisengage(r: DisengageReply): string {
  const scope = `  scope${r.scopeVersion ? ` v${r.scopeVersion}` : ''} acknowledged by ${r.scopeAcked.length}: ${names(r.scopeAcked)}; not waited for: ${names(r.scopeSkipped)}`;
  if (!r.ok) {
    return [
      `disengage of ${r.target} FAILED [${r.errorCode}]: ${r.errorMessage}`,
      `  flows handed over: ${r.handedOver ? 'yes (they belong to the inheritors; it cannot go back to ACTIVE)' : 'no'}`,
      // The scope acknowledgements are known only once the target is out of scope.
      ...(r.scopeAcked.length + r.scopeSkipped.length > 0 ? [scope] : []),
    ].join('\n');
  }
  const lines = [
    `${r.target} DISENGAGED (migration #${r.migrationId}, policy ${r.policy}${r.fellBackToBackup ? ', fell back to the backup inheritor' : ''})`,
    `  entries moved ${r.entriesMoved} in ${r.durationMs.toFixed(1)} ms (copy ${r.copyMs.toFixed(1)} ms, broadcast ${r.broadcastMs.toFixed(1)} ms, drain ${r.drainMs.toFixed(1)} ms, quiet ${r.quietMs.toFixed(1)} ms)`,
    `  flows handed over: ${r.handedOver ? 'yes' : 'no'}; redirects served during the disengage: ${r.redirectsServed}`,
    scope,
    ...r.shares.map((s) => `  → ${s.node.name} (${s.node.id}): ${s.flows} entries${s.backup ? ' (backup)' : ''}`),
    // A service node has no table to move: it is drained (no new flow sent to it) until quiet.
    ...(r.framesDrained || r.drainTimedOut
      ? [`  service drain: ${r.framesDrained ?? 0} frames of its established flows received while draining${r.drainTimedOut ? '; ended AT ITS TIMEOUT (flows still going to it are rehomed or reset at their next packet: docs/disengage.md, "Dead backends")' : ', ended quiet'}`]
      : []),
  ];
  return lines.join('\n');
}

export function formatEngage(target: string, r: EngageReply): string {
  return r.ok ? `${target} ACTIVE (engaged; ${r.recordsSynced} ownership records synced from its peers; scope version ${r.scopeVersion})` : `engage of ${target} FAILED [${r.errorCode}]: ${r.errorMessage}`;
}

export { body };
