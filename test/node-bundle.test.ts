/**
 * The builds a rolling upgrade starts (cli/node-bundle.ts) and the build id
 * every node reports (shared/build-info.ts): a different build reports a
 * different id, the previous bundle stays, and a bad --bundle / --command /
 * --tag is refused once with BATON_BAD_ARGUMENT naming the option.
 */
import { describe, it, expect } from 'vitest';
import { existsSync, mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { buildNodeBundle, bundleEntry, commandEntry, upgradeEntry } from '../cli/node-bundle.js';
import { buildInfo } from '../shared/build-info.js';
import { ErrorCode, isBatonError } from '../shared/errors.js';

function refusal(f: () => unknown): { code: string; option: unknown } {
  try {
    f();
  } catch (e) {
    if (isBatonError(e)) return { code: e.code, option: e.details?.option };
    throw e;
  }
  throw new Error('accepted');
}

async function refusalOf(p: Promise<unknown>): Promise<{ code: string; option: unknown }> {
  try {
    await p;
  } catch (e) {
    if (isBatonError(e)) return { code: e.code, option: e.details?.option };
    throw e;
  }
  throw new Error('accepted');
}

describe('node bundles and build ids', () => {
  it('from the sources (tsx), the build id is the package version + src', () => {
    const b = buildInfo();
    expect(b.bundled).toBe(false);
    expect(b.version).toMatch(/^\d+\.\d+\.\d+\+src/);
    expect(b.version.startsWith(b.packageVersion)).toBe(true);
  });

  it('two builds that differ (another tag) are two files with two build ids; the first stays', async () => {
    const a = await upgradeEntry({ bundle: (await buildNodeBundle({ tag: 'unit-a' })).bundle! });
    const b = await upgradeEntry({ bundle: (await buildNodeBundle({ tag: 'unit-b' })).bundle! });
    expect(a.bundle).not.toBe(b.bundle);
    expect(a.version).toMatch(/^\d+\.\d+\.\d+-unit-a\+[0-9a-f]{12}$/);
    expect(b.version).toMatch(/^\d+\.\d+\.\d+-unit-b\+[0-9a-f]{12}$/);
    // The id's hash is the bundle's content hash, which also names the file.
    for (const e of [a, b]) {
      const sha = createHash('sha256').update(readFileSync(e.bundle!)).digest('hex');
      expect(e.version!.endsWith(`+${sha.slice(0, 12)}`)).toBe(true);
      expect(basename(e.bundle!)).toBe(`baton-${sha.slice(0, 16)}.mjs`);
    }
    expect(existsSync(a.bundle!)).toBe(true);
    // The same sources and tag again: the same file (content-named, nothing piles up).
    expect((await buildNodeBundle({ tag: 'unit-a' })).bundle).toBe(a.bundle);
  }, 60_000);

  it('bad options are refused with BATON_BAD_ARGUMENT naming the option', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'baton-bundle-'));
    try {
      expect(refusal(() => bundleEntry(join(dir, 'missing.mjs')))).toEqual({ code: ErrorCode.BAD_ARGUMENT, option: '--bundle' });
      expect(refusal(() => bundleEntry(dir))).toEqual({ code: ErrorCode.BAD_ARGUMENT, option: '--bundle' });
      expect(refusal(() => commandEntry(['  ']))).toEqual({ code: ErrorCode.BAD_ARGUMENT, option: '--command' });
      await expect(refusalOf(buildNodeBundle({ tag: 'no spaces' }))).resolves.toEqual({ code: ErrorCode.BAD_ARGUMENT, option: '--tag' });
      await expect(refusalOf(upgradeEntry({ bundle: join(dir, 'x.mjs'), command: ['node'] }))).resolves.toEqual({ code: ErrorCode.BAD_ARGUMENT, option: '--bundle' });
      // Runs, but is not Baton: no build id.
      await expect(refusalOf(upgradeEntry({ command: [`${process.execPath} -e 0`] }))).resolves.toEqual({ code: ErrorCode.BAD_ARGUMENT, option: '--command' });
      // Does not run at all.
      await expect(refusalOf(upgradeEntry({ command: [join(dir, 'no-such-program')] }))).resolves.toEqual({ code: ErrorCode.BAD_ARGUMENT, option: '--command' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
