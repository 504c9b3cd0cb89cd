/**
 * This process's build id: what `baton version` prints, what a node puts in
 * its READY line and in NodeInfo.version (so the manager and `baton status`
 * know which build every node runs), and the label of the metric
 * `baton_build_info{version="..."} 1`.
 *
 *   bundled (cli/node-bundle.ts):  <package version>[-<tag>]+<first 12 hex digits of the bundle file's sha256>
 *   from the sources (tsx):        <package version>+src[.<git describe --always --dirty>]
 *
 * A bundle is named by the same sha256 (`baton-<first 16 hex>.mjs`), so the
 * version says which file a node was started from. Two bundles that differ in
 * one byte (a source change, another `--tag`) report different versions.
 * Computed once per process (one read and hash of the bundle, a few ms).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// Set by the bundler (cli/node-bundle.ts, esbuild `define`); undeclared when running from the sources.
declare const __BATON_PACKAGE_VERSION__: string | undefined;
declare const __BATON_BUILD_TAG__: string | undefined;

/** What the build id is made of. */
export interface BuildInfo {
  /** The build id, e.g. `0.1.0+3fa9c1d2e4b5` or `0.1.0-hotfix+…`. */
  version: string;
  packageVersion: string;
  /** The `--tag` the bundle was built with ("" if none). */
  tag: string;
  bundled: boolean;
  /** The file this process runs (the bundle, or this module's source). */
  file: string;
}

let cached: BuildInfo | null = null;

export function buildInfo(): BuildInfo {
  if (cached) return cached;
  const file = fileURLToPath(import.meta.url);
  const bundled = !file.endsWith('.ts');
  const tag = typeof __BATON_BUILD_TAG__ === 'string' ? __BATON_BUILD_TAG__ : '';
  const packageVersion = typeof __BATON_PACKAGE_VERSION__ === 'string' ? __BATON_PACKAGE_VERSION__ : sourcePackageVersion(file);
  const pre = tag ? `${packageVersion}-${tag}` : packageVersion;
  let version: string;
  if (bundled) {
    let hash = 'unknown';
    try {
      hash = createHash('sha256').update(readFileSync(file)).digest('hex').slice(0, 12);
    } catch {
      // unreadable (deleted under us): the version still names the package
    }
    version = `${pre}+${hash}`;
  } else {
    const git = gitDescribe(dirname(file));
    version = `${pre}+src${git ? `.${git}` : ''}`;
  }
  cached = { version, packageVersion, tag, bundled, file };
  return cached;
}

export function buildVersion(): string {
  return buildInfo().version;
}

/** package.json next to the sources (this module is shared/build-info.ts). */
function sourcePackageVersion(file: string): string {
  try {
    const pkg = JSON.parse(readFileSync(join(dirname(file), '..', 'package.json'), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
  } catch {
    return '0.0.0';
  }
}

function gitDescribe(cwd: string): string {
  try {
    const r = spawnSync('git', ['describe', '--always', '--dirty', '--tags'], { cwd, encoding: 'utf8', timeout: 2000, stdio: ['ignore', 'pipe', 'ignore'] });
    return r.status === 0 ? r.stdout.trim().replace(/[^0-9A-Za-z.-]/g, '-') : '';
  } catch {
    return '';
  }
}
