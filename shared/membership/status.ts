/**
 * Member status: an explicit state machine, not booleans. Documented in
 * docs/disengage.md ("Member status"); the values are the wire enum
 * MemberStatus.
 *
 *   (register) ─▶ JOINING ──synced──▶ ACTIVE ──disengage──▶ DISENGAGING ─────────────────────────────▶ DISENGAGED
 *                   ▲                  ▲                    in scope ──handed over──▶ out of scope ──acked, quiet──┘ │
 *                   │                  └── abort / timeout ──┘ (before the hand-over only)                        │
 *                   ├──────────────────────── engage ◀────────────────────────────────────────────────────────────┘
 *                   └──── re-register ◀── FAILED ◀── heartbeat lost (from any state)
 *
 * DISENGAGING has two phases (`outOfScope`): in scope while the FD hands its
 * flows over (it can still go back to ACTIVE: it owns them all), then out of
 * scope once they are handed over (no way back to ACTIVE: its flows belong to
 * the inheritors) while every hash tier and member acknowledges the scope
 * without it and the FD purges and goes quiet.
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

/** `outOfScope`: a DISENGAGING FD that has handed its flows over (it cannot go back to ACTIVE). */
export function canTransition(from: number, to: number, outOfScope = false): boolean {
  if (outOfScope && from === MemberStatus.DISENGAGING && to === MemberStatus.ACTIVE) return false;
  return (ALLOWED[from] ?? []).includes(to);
}

/**
 * Whether an FD with this status is in the hash scope (receives new packets
 * from the hash tier): ACTIVE, and DISENGAGING until its flows are handed
 * over (`outOfScope`).
 */
export function inScope(s: number, outOfScope = false): boolean {
  return s === MemberStatus.ACTIVE || (s === MemberStatus.DISENGAGING && !outOfScope);
}

export class StatusMachine {
  private s: number;
  private out = false;
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
  /** DISENGAGING only: its flows are handed over and it is out of the hash scope. */
  get outOfScope(): boolean {
    return this.out;
  }
  /** Moves to `to` or throws BatonError(INVALID_TRANSITION) naming both states. */
  transition(to: number, reason: string, at = 0): void {
    if (!canTransition(this.s, to, this.out)) {
      const from = this.out ? `${statusName(this.s)} (out of scope, flows handed over)` : statusName(this.s);
      throw new BatonError(ErrorCode.INVALID_TRANSITION, `cannot go from ${from} to ${statusName(to)} (${reason})`, {
        from: statusName(this.s),
        to: statusName(to),
      });
    }
    this.history.push({ at, from: this.s, to, reason });
    this.s = to;
    this.out = false;
  }
  /**
   * DISENGAGING, in scope → DISENGAGING, out of scope: the FD handed its
   * flows over. Kept in the history as a DISENGAGING → DISENGAGING step.
   * Throws INVALID_TRANSITION in any other status (or if already out).
   */
  release(reason: string, at = 0): void {
    if (this.s !== MemberStatus.DISENGAGING || this.out) {
      throw new BatonError(ErrorCode.INVALID_TRANSITION, `cannot take ${this.out ? 'an FD already out of scope' : statusName(this.s)} out of scope (${reason}): only a DISENGAGING FD that handed its flows over leaves the scope`, {
        from: statusName(this.s),
        to: 'DISENGAGING (out of scope)',
      });
    }
    this.history.push({ at, from: this.s, to: this.s, reason: `out of scope: ${reason}` });
    this.out = true;
  }
  /**
   * Takes the status another manager committed (the cluster-state record in
   * the store) — not a transition of this machine, so not validated; kept
   * in the history with its reason.
   */
  adopt(to: number, reason: string, at = 0, outOfScope = false): void {
    const out = to === MemberStatus.DISENGAGING && outOfScope;
    if (to === this.s && out === this.out) return;
    this.history.push({ at, from: this.s, to, reason });
    this.s = to;
    this.out = out;
  }
  get transitions(): readonly { at: number; from: number; to: number; reason: string }[] {
    return this.history;
  }
}
