/**
 * Member status: an explicit state machine, not booleans. Documented in
 * docs/membership.md; the values are the wire enum MemberStatus.
 *
 *   (register) ─▶ JOINING ──synced──▶ ACTIVE ──disengage──▶ DISENGAGING ──confirmed──▶ DISENGAGED
 *                   ▲                  ▲                        │                           │
 *                   │                  └──── abort / timeout ───┘                           │
 *                   ├──────────────────────── engage ◀──────────────────────────────────────┘
 *                   └──── re-register ◀── FAILED ◀── heartbeat lost (from any state) 
 */
import { MemberStatus } from '../control/messages.js';
import { BatonError, ErrorCode } from '../errors.js';

export { MemberStatus };

export const STATUS_NAMES: Readonly<Record<number, string>> = {
  [MemberStatus.STATUS_UNSPECIFIED]: 'UNSPECIFIED',
  [MemberStatus.JOINING]: 'JOINING',
  [MemberStatus.ACTIVE]: 'ACTIVE',
  [MemberStatus.DISENGAGING]: 'DISENGAGING',
  [MemberStatus.DISENGAGED]: 'DISENGAGED',
  [MemberStatus.FAILED]: 'FAILED',
};

const ALLOWED: Readonly<Record<number, readonly number[]>> = {
  [MemberStatus.JOINING]: [MemberStatus.ACTIVE, MemberStatus.FAILED],
  [MemberStatus.ACTIVE]: [MemberStatus.DISENGAGING, MemberStatus.FAILED],
  [MemberStatus.DISENGAGING]: [MemberStatus.DISENGAGED, MemberStatus.ACTIVE, MemberStatus.FAILED],
  [MemberStatus.DISENGAGED]: [MemberStatus.JOINING, MemberStatus.FAILED],
  [MemberStatus.FAILED]: [MemberStatus.JOINING],
};

export function statusName(s: number): string {
  return STATUS_NAMES[s] ?? `UNKNOWN(${s})`;
}

/** The status a name spells (as written by statusName, the store and the CLI); undefined for an unknown name. */
export function statusByName(name: string): number | undefined {
  for (const [k, v] of Object.entries(STATUS_NAMES)) if (v === name) return Number(k);
  return undefined;
}

export function canTransition(from: number, to: number): boolean {
  return (ALLOWED[from] ?? []).includes(to);
}

/** Statuses whose FD is in the hash scope (receives new packets from the hash tier). */
export function inScope(s: number): boolean {
  return s === MemberStatus.ACTIVE || s === MemberStatus.DISENGAGING;
}

export class StatusMachine {
  private s: number;
  private readonly history: { at: number; from: number; to: number; reason: string }[] = [];
  constructor(initial: number = MemberStatus.JOINING) {
    this.s = initial;
  }
  get status(): number {
    return this.s;
  }
  get name(): string {
    return statusName(this.s);
  }
  /** Moves to `to` or throws BatonError(INVALID_TRANSITION) naming both states. */
  transition(to: number, reason: string, at = 0): void {
    if (!canTransition(this.s, to)) {
      throw new BatonError(ErrorCode.INVALID_TRANSITION, `cannot go from ${statusName(this.s)} to ${statusName(to)} (${reason})`, {
        from: statusName(this.s),
        to: statusName(to),
      });
    }
    this.history.push({ at, from: this.s, to, reason });
    this.s = to;
  }
  /**
   * Takes the status another manager committed (the cluster-state record in
   * the store) — not a transition of this machine, so not validated; kept
   * in the history with its reason.
   */
  adopt(to: number, reason: string, at = 0): void {
    if (to === this.s) return;
    this.history.push({ at, from: this.s, to, reason });
    this.s = to;
  }
  get transitions(): readonly { at: number; from: number; to: number; reason: string }[] {
    return this.history;
  }
}
