import { it, expect } from 'vitest';
import { StatusMachine, canTransition, MemberStatus as S, statusName, inScope } from '../shared/membership/status.js';
import { isBatonError, ErrorCode } from '../shared/errors.js';

it('allows exactly the documented transitions', () => {
  const all = [S.JOINING, S.ACTIVE, S.DISENGAGING, S.DISENGAGED, S.FAILED];
  const allowed = new Set([
    'JOINING>ACTIVE', 'JOINING>FAILED',
    'ACTIVE>DISENGAGING', 'ACTIVE>FAILED',
    'DISENGAGING>DISENGAGED', 'DISENGAGING>ACTIVE', 'DISENGAGING>FAILED',
    'DISENGAGED>JOINING', 'DISENGAGED>FAILED',
    'FAILED>JOINING',
  ]);
  for (const a of all) for (const b of all) expect(canTransition(a, b)).toBe(allowed.has(`${statusName(a)}>${statusName(b)}`));
  expect([S.ACTIVE, S.DISENGAGING].every((s) => inScope(s))).toBe(true);
  expect([S.JOINING, S.DISENGAGED, S.FAILED].some((s) => inScope(s))).toBe(false);
  // DISENGAGING has two phases: in scope while handing over, out of scope after.
  expect(inScope(S.DISENGAGING, true)).toBe(false);
  expect(inScope(S.ACTIVE, true)).toBe(true); // the flag only qualifies DISENGAGING
  for (const b of all) expect(canTransition(S.DISENGAGING, b, true)).toBe(allowed.has(`DISENGAGING>${statusName(b)}`) && b !== S.ACTIVE);
});

it('a DISENGAGING FD that handed its flows over leaves the scope and never goes back to ACTIVE', () => {
  const m = new StatusMachine(S.ACTIVE);
  expect(() => m.release('too early', 1)).toThrow(/only a DISENGAGING FD/);
  m.transition(S.DISENGAGING, 'disengage', 2);
  expect(m.outOfScope).toBe(false);
  m.release('handed over', 3);
  expect(m.outOfScope).toBe(true);
  expect(m.status).toBe(S.DISENGAGING);
  expect(() => m.release('twice', 4)).toThrow(/already out of scope/);
  try {
    m.transition(S.ACTIVE, 'timeout', 5);
    expect.unreachable();
  } catch (e) {
    expect(isBatonError(e, ErrorCode.INVALID_TRANSITION)).toBe(true);
    expect((e as Error).message).toBe('cannot go from DISENGAGING (out of scope, flows handed over) to ACTIVE (timeout)');
  }
  m.transition(S.DISENGAGED, 'acked and quiet', 6);
  expect(m.outOfScope).toBe(false); // any transition ends the phase
  expect(m.transitions.map((t) => t.reason)).toEqual(['disengage', 'out of scope: handed over', 'acked and quiet']);
  // Adopted from the cluster record: the phase travels with the status.
  const f = new StatusMachine(S.ACTIVE);
  f.adopt(S.DISENGAGING, 'record v9', 7, true);
  expect(f.outOfScope).toBe(true);
  f.adopt(S.DISENGAGED, 'record v10', 8, true);
  expect(f.outOfScope).toBe(false); // only DISENGAGING has the phase
});

it('refuses an impossible transition with a typed error and records the history', () => {
  const m = new StatusMachine();
  m.transition(S.ACTIVE, 'registered', 1);
  m.transition(S.DISENGAGING, 'disengage', 2);
  try {
    m.transition(S.JOINING, 'oops', 3);
    expect.unreachable();
  } catch (e) {
    expect(isBatonError(e, ErrorCode.INVALID_TRANSITION)).toBe(true);
    expect((e as Error).message).toBe('cannot go from DISENGAGING to JOINING (oops)');
  }
  expect(m.name).toBe('DISENGAGING');
  expect(m.transitions.map((t) => statusName(t.to))).toEqual(['ACTIVE', 'DISENGAGING']);
});
