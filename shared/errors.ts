/**
 * Typed errors with stable codes. The code is part of the public contract:
 * callers and tests match on `err.code`, never on the message text.
 * Per-packet rejections are NOT errors (see shared/packet/reject.ts): they are
 * numeric reason codes that the caller counts.
 */
export const ErrorCode = {
  CONFIG_INVALID: 'BATON_CONFIG_INVALID',
  TABLE_FULL: 'BATON_TABLE_FULL',
  BAD_EXPORT_FORMAT: 'BATON_BAD_EXPORT_FORMAT',
  BAD_ARGUMENT: 'BATON_BAD_ARGUMENT',
  EMPTY_SCOPE: 'BATON_EMPTY_SCOPE',
  UNKNOWN_NODE: 'BATON_UNKNOWN_NODE',
  INVALID_TRANSITION: 'BATON_INVALID_TRANSITION',
  DUPLICATE_NODE: 'BATON_DUPLICATE_NODE',
  /** Control plane: a request got no reply in time / its connection closed / the peer answered ErrorReply. */
  TIMEOUT: 'BATON_TIMEOUT',
  CONNECTION_CLOSED: 'BATON_CONNECTION_CLOSED',
  REMOTE_ERROR: 'BATON_REMOTE_ERROR',
  /** Cluster-state store (shared/store): the store cannot be reached / a create-only write found the key taken. */
  STORE_UNAVAILABLE: 'BATON_STORE_UNAVAILABLE',
  STORE_CONFLICT: 'BATON_STORE_CONFLICT',
  /** No manager leads the cluster right now (an election is under way, or the store is away). */
  NO_LEADER: 'BATON_NO_LEADER',
  /** A rolling upgrade's build: the current sources do not bundle, or their bundle does not run (cli/node-bundle.ts). */
  BUILD_FAILED: 'BATON_BUILD_FAILED',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class BatonError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>> | undefined;
  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = 'BatonError';
    this.code = code;
    this.details = details;
  }
}

export function isBatonError(e: unknown, code?: ErrorCode): e is BatonError {
  return e instanceof BatonError && (code === undefined || e.code === code);
}
