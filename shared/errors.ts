/**
 * Typed errors with stable codes. The code is part of the public contract:
 * callers and tests match on `err.code`, never on the message text.
 * Per-packet rejections are NOT errors (see shared/packet/reject.ts): they are
 * numeric reason codes that the caller counts.
 *
 * ErrorCode is the one list of codes, local and on the wire (ErrorReply.code,
 * the errorCode of DisengageReply, EngageReply, MigrationAck, ...). A code that
 * comes off the wire is a string from another build: errorCodeFromWire checks
 * it, and maps what this build does not know to REMOTE_ERROR.
 *
 * One class, not one per code (undici's way): the code crosses the wire as a
 * string, so a receiver could only rebuild a subclass from the code anyway,
 * and every caller already matches on `code` (isBatonError(e, code)).
 */
export const ErrorCode = {
  /** A configuration value (file, flag or environment) is invalid; the message names the field. */
  CONFIG_INVALID: 'BATON_CONFIG_INVALID',
  /** The flow table has no room; details may say how many entries were stored (importFlows: details.imported). */
  TABLE_FULL: 'BATON_TABLE_FULL',
  /** A flow export (distributor/flow-export.ts) is malformed or of another version. */
  BAD_EXPORT_FORMAT: 'BATON_BAD_EXPORT_FORMAT',
  /** A caller passed a bad argument (a constructor option, an address, a message that cannot be encoded). */
  BAD_ARGUMENT: 'BATON_BAD_ARGUMENT',
  /** A scope (hash table of members) would have no member. */
  EMPTY_SCOPE: 'BATON_EMPTY_SCOPE',
  /** No member of that id or name is registered. */
  UNKNOWN_NODE: 'BATON_UNKNOWN_NODE',
  /** The member's status machine (or an operation) refuses this step from where it is. */
  INVALID_TRANSITION: 'BATON_INVALID_TRANSITION',
  /** A member of that id or name is registered already. */
  DUPLICATE_NODE: 'BATON_DUPLICATE_NODE',
  /** Control plane: a request got no reply in time. */
  TIMEOUT: 'BATON_TIMEOUT',
  /** Control plane: the request's connection closed, or the peer cannot be reached. */
  CONNECTION_CLOSED: 'BATON_CONNECTION_CLOSED',
  /** Control plane: the peer refused (details.remoteCode holds its code, checked), or answered with a code this build does not know. */
  REMOTE_ERROR: 'BATON_REMOTE_ERROR',
  /** Cluster-state store (shared/store): the store cannot be reached. */
  STORE_UNAVAILABLE: 'BATON_STORE_UNAVAILABLE',
  /** Cluster-state store: a create-only write found the key taken, or a lease/session is gone. */
  STORE_CONFLICT: 'BATON_STORE_CONFLICT',
  /** No manager leads the cluster right now (an election is under way, or the store is away). */
  NO_LEADER: 'BATON_NO_LEADER',
  /** A rolling upgrade's build: the current sources do not bundle, or their bundle does not run (cli/node-bundle.ts). */
  BUILD_FAILED: 'BATON_BUILD_FAILED',
  /** Control channel: the request's protocol_version is not PROTOCOL_VERSION. */
  BAD_VERSION: 'BATON_BAD_VERSION',
  /** Control channel: the request's body is a message this build does not know (newer peer), or the receiver does not serve it. */
  UNKNOWN_MESSAGE: 'BATON_UNKNOWN_MESSAGE',
  /** Control channel: the request arrived with an empty body. */
  EMPTY_BODY: 'BATON_EMPTY_BODY',
  /** Control channel: no request handler is installed on the receiving channel. */
  NO_HANDLER: 'BATON_NO_HANDLER',
  /** The handler failed with something that is not a BatonError. */
  INTERNAL: 'BATON_INTERNAL',
  /** Ownership mesh nack: bad record_version or length; nothing applied. */
  BAD_OWNERSHIP_BATCH: 'BATON_BAD_OWNERSHIP_BATCH',
  /** Ownership mesh nack: the receiver is migrating its own flows; the batch is queued, applied when that ends. */
  OWNERSHIP_DEFERRED: 'BATON_OWNERSHIP_DEFERRED',
  /** Ownership mesh nack: the receiver's queue of deferred records is full; the batch was dropped. */
  OWNERSHIP_QUEUE_FULL: 'BATON_OWNERSHIP_QUEUE_FULL',
  /** Migration refusal: the receiving FD is migrating its own flows or leaving; it takes none. */
  PEER_MIGRATING: 'BATON_PEER_MIGRATING',
  /** Migration refusal: a commit for a migration the FD holds no staged copy of (never copied, expired, or aborted). */
  UNKNOWN_MIGRATION: 'BATON_UNKNOWN_MIGRATION',
  /** Replication nack: the batch's seq is not the next of its stream; the owner resends everything (reset). */
  REPLICA_GAP: 'BATON_REPLICA_GAP',
  /** Replication nack: the sender is not an FD this backup accepts replicas from (unknown or FAILED). */
  REPLICA_REFUSED: 'BATON_REPLICA_REFUSED',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const KNOWN: ReadonlySet<string> = new Set<string>(Object.values(ErrorCode));

/** True when `s` is one of this build's codes. */
export function isErrorCode(s: unknown): s is ErrorCode {
  return typeof s === 'string' && KNOWN.has(s);
}

/**
 * The code a peer sent (ErrorReply.code, a reply's errorCode), checked: a
 * known code as it is, anything else (empty, garbage, a newer build's code)
 * REMOTE_ERROR. The caller keeps the original text when it matters: in its
 * message, or as details.wireCode (errorFromWire).
 */
export function errorCodeFromWire(s: string): ErrorCode {
  return isErrorCode(s) ? s : ErrorCode.REMOTE_ERROR;
}

export class BatonError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>> | undefined;
  /** `options.cause`: the error this one wraps (ES2022 Error.cause), kept for logs and callers. */
  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: ErrorOptions) {
    super(message, options);
    this.name = 'BatonError';
    this.code = code;
    this.details = details;
  }
}

export function isBatonError(e: unknown, code?: ErrorCode): e is BatonError {
  return e instanceof BatonError && (code === undefined || e.code === code);
}

/**
 * The error for a failure a peer reported with `wireCode` (a reply's
 * errorCode): its code checked by errorCodeFromWire; a code this build does
 * not know is kept as details.wireCode.
 */
export function errorFromWire(wireCode: string, message: string, details?: Record<string, unknown>): BatonError {
  return new BatonError(errorCodeFromWire(wireCode), message, isErrorCode(wireCode) || wireCode === '' ? details : { ...details, wireCode });
}

/** The message of anything thrown (an Error's message, else its text). */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * The code a peer refused with, when `e` is the REMOTE_ERROR a control request
 * rejects with (shared/control/channel.ts: details.remoteCode, checked there);
 * undefined for anything else (a timeout, a closed connection).
 */
export function remoteCodeOf(e: unknown): ErrorCode | undefined {
  if (!isBatonError(e, ErrorCode.REMOTE_ERROR)) return undefined;
  const c = e.details?.['remoteCode'];
  return typeof c === 'string' ? errorCodeFromWire(c) : undefined;
}
