/**
 * Churn scripts: what changes, and when (docs/comparison.md, "The churn").
 * An event is one row of the results; it expands into the steps the
 * strategies see (strategy.ts, Step). A backend's removal is not scripted:
 * the runner removes a drained backend once it holds no connection, per
 * strategy (Baton's drain ends on quiet the same way).
 */
import type { Step } from './strategy.js';

export interface ChurnEvent {
  atS: number;
  label: string;
  /** Graceful (planned) events promise 0 broken connections in Baton. */
  graceful: boolean;
  steps: { atS: number; step: Step }[];
}

export interface Scenario {
  name: string;
  fds: string[];
  allFds: string[];
  backends: string[];
  allBackends: string[];
  events: ChurnEvent[];
  /** How long a failed balancer keeps getting packets (control.deadAfterMs for Baton; router/BFD for the others). */
  failureWindowS: number;
}

const names = (prefix: string, from: number, n: number): string[] => Array.from({ length: n }, (_, i) => `${prefix}-${from + i}`);

/**
 * The field scenario: every kind of churn the issue lists, one after
 * another, on `nFds` balancers and `nBackends` backends.
 */
export function fieldScenario(nFds = 64, nBackends = 16, failureWindowS = 3, rollingFds = Infinity): Scenario {
  const fds = names('fd', 1, nFds);
  const joiner = `fd-${nFds + 1}`;
  const backends = names('svc', 1, nBackends);
  const added = names('svc', nBackends + 1, 2);
  const e = (atS: number, label: string, graceful: boolean, ...steps: [number, Step][]): ChurnEvent => ({ atS, label, graceful, steps: steps.map(([dt, step]) => ({ atS: atS + dt, step })) });
  const pick = (k: number): string => fds[Math.floor((k * nFds) / 8) % nFds]!;
  const many = [pick(2), pick(3), pick(5), pick(6)].filter((x, i, a) => a.indexOf(x) === i);
  const events: ChurnEvent[] = [
    e(4, `backend added (${added[0]})`, true, [0, { kind: 'backend-add', backend: added[0]! }]),
    e(8, `FD leaves gracefully (${pick(1)})`, true, [0, { kind: 'fd-leave', fds: [pick(1)] }]),
    e(12, `FD joins (${joiner})`, true, [0, { kind: 'fd-join', fds: [joiner] }]),
    e(16, `backend removed, drained (${backends[2]})`, true, [0, { kind: 'backend-drain', backend: backends[2]! }]),
    e(20, `FD fails (${pick(4)}), detected after ${failureWindowS} s`, false, [0, { kind: 'fd-fail', fds: [pick(4)] }], [failureWindowS, { kind: 'fd-fail-detected', fds: [pick(4)] }]),
    e(26, `${many.length} FDs leave at once`, true, [0, { kind: 'fd-leave', fds: many }]),
    e(30, `backend added (${added[1]})`, true, [0, { kind: 'backend-add', backend: added[1]! }]),
    e(34, `backend removed, drained (${backends[7]})`, true, [0, { kind: 'backend-drain', backend: backends[7]! }]),
  ];
  // Rolling upgrade of every FD in service (or the first `rollingFds`), in 8 batches: each batch leaves, restarts, joins 1 s later.
  const inService = fds.filter((f) => f !== pick(1) && f !== pick(4) && !many.includes(f)).concat(joiner).slice(0, rollingFds);
  const batch = Math.max(1, Math.ceil(inService.length / 8));
  const steps: [number, Step][] = [];
  for (let k = 0, i = 0; i < inService.length; k++, i += batch) {
    const group = inService.slice(i, i + batch);
    steps.push([k * 2, { kind: 'fd-leave', fds: group }], [k * 2 + 1, { kind: 'fd-join', fds: group }]);
  }
  events.push(e(38, `rolling upgrade (${inService.length} FDs, ${batch} at a time)`, true, ...steps));
  return { name: 'field', fds, allFds: [...fds, joiner], backends, allBackends: [...backends, ...added], events, failureWindowS };
}

/**
 * The shape of Cheetah's churn experiment (NSDI 2020): the server pool
 * changes every `everyS` seconds — a server drained and removed, then one
 * added, in turn — while long connections run, through a balancer tier that
 * does not change.
 */
export function cheetahScenario(nFds = 4, nBackends = 16, changes = 12, everyS = 4, firstS = 4): Scenario {
  const fds = names('fd', 1, nFds);
  const backends = names('svc', 1, nBackends);
  const added = names('svc', nBackends + 1, Math.ceil(changes / 2));
  const events: ChurnEvent[] = [];
  for (let k = 0; k < changes; k++) {
    const atS = firstS + k * everyS;
    const step: Step = k % 2 === 0 ? { kind: 'backend-drain', backend: backends[(k * 5) % nBackends]! } : { kind: 'backend-add', backend: added[(k - 1) / 2]! };
    events.push({ atS, label: step.kind === 'backend-drain' ? `backend removed, drained (${step.backend})` : `backend added (${step.backend})`, graceful: true, steps: [{ atS, step }] });
  }
  return { name: 'cheetah', fds, allFds: fds, backends, allBackends: [...backends, ...added], events, failureWindowS: 3 };
}
