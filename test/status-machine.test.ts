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
  expect([S.ACTIVE, S.DISENGAGING].every(inScope)).toBe(true);
  expect([S.JOINING, S.DISENGAGED, S.FAILED].some(inScope)).toBe(false);
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
