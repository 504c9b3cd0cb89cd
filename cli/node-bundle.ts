/**
 * The entry a launched node runs. Under tsx every node process would spend
 * ~0.6 s of CPU at start-up loading tsx and transforming ~100 modules; on a
 * 2-core machine that is CPU taken from the running cluster each time a
 * rolling upgrade restarts an FD. So the launcher bundles cli/baton.ts once
 * with esbuild (the bundler tsx itself uses; npm packages stay external and
 * resolve from node_modules) into node_modules/.cache/baton/, and nodes start
 * from that plain ESM file in ~0.25 s. The bundle is rebuilt at every launcher
 * start (about 0.3 s), so it never runs stale code. If bundling fails the
 * launcher falls back to tsx, which is slower but equivalent.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const PROJECT_ROOT = resolve(here, '..');
const CLI_SOURCE = join(here, 'baton.ts');

/** Node arguments that run the CLI: [...loader args, script]. */
export interface NodeEntry {
  args: string[];
  bundled: boolean;
  /** Why the bundle was not used (fallback to tsx), if it was not. */
  fallbackReason?: string;
}

export const TSX_ENTRY: NodeEntry = { args: ['--import', 'tsx', CLI_SOURCE], bundled: false };

export async function buildNodeEntry(outDir = join(PROJECT_ROOT, 'node_modules', '.cache', 'baton')): Promise<NodeEntry> {
  if (process.env.BATON_NO_BUNDLE === '1') return { ...TSX_ENTRY, fallbackReason: 'BATON_NO_BUNDLE=1' };
  try {
    const { build } = await import('esbuild');
    const out = await build({
      entryPoints: [CLI_SOURCE],
      write: false,
      outfile: join(outDir, 'baton.mjs'), // names only (write: false); the file is named by content below
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      packages: 'external',
      sourcemap: 'inline',
      logLevel: 'silent',
    });
    const code = out.outputFiles[0]!.contents;
    // Named by content: the same sources give the same file (no pile-up), and a
    // concurrent launcher never reads a half-written one (write, then rename).
    const outfile = join(outDir, `baton-${createHash('sha256').update(code).digest('hex').slice(0, 16)}.mjs`);
    if (!existsSync(outfile)) {
      mkdirSync(outDir, { recursive: true });
      const tmp = `${outfile}.${process.pid}.tmp`;
      writeFileSync(tmp, code);
      renameSync(tmp, outfile);
    }
    return { args: ['--enable-source-maps', outfile], bundled: true };
  } catch (err) {
    return { ...TSX_ENTRY, fallbackReason: (err as Error).message };
  }
}
