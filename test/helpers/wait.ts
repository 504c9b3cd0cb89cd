/** Conditions, not sleeps: poll `cond` every 50 ms until it holds, at most `timeoutMs`. */
export async function waitFor(what: string, cond: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** As waitFor, and a `cond` that throws (a node not reachable yet) counts as "not yet". */
export function waitForReachable(what: string, cond: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  return waitFor(what, () => cond().catch(() => false), timeoutMs);
}
