/**
 * vitest globalSetup: the system tests push 100 k+ packets/s through UDP on
 * loopback while processes restart; the kernel's default socket-buffer cap
 * (net.core.rmem_max) would make the receivers drop bursts. As root, raise
 * the caps (never lower them); otherwise say so and carry on.
 */
import { readFileSync, writeFileSync } from 'node:fs';

const WANT = 32 * 1024 * 1024;

export default function setup(): void {
  for (const name of ['rmem_max', 'wmem_max']) {
    const path = `/proc/sys/net/core/${name}`;
    try {
      const cur = Number(readFileSync(path, 'utf8').trim());
      if (cur < WANT) writeFileSync(path, String(WANT));
    } catch (e) {
      console.warn(`test setup: cannot raise net.core.${name} (${(e as Error).message}); high-rate system tests may see kernel drops`);
    }
  }
}
