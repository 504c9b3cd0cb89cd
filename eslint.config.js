// @ts-check
/**
 * ESLint (flat config) with typescript-eslint: a small rule set, each rule
 * here for a reason this code base has. tsc (strict, noUnusedLocals,
 * noUncheckedIndexedAccess, verbatimModuleSyntax) already checks types,
 * unused names and type-only imports; the import boundaries are
 * dependency-cruiser's (.dependency-cruiser.mjs). `npm run lint` runs both.
 */
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  {
    ignores: ['node_modules/**', 'bench/results/**'],
  },
  {
    files: ['**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      // Type-aware rules (the promise rules need the types).
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // A promise nobody awaits or catches: its rejection is an unhandledRejection,
      // which ends a Node process. Nodes must not crash on a failed send or store
      // call; write `void p` where fire-and-forget is meant (and handled inside).
      '@typescript-eslint/no-floating-promises': 'error',
      // An async function where a void callback is expected (socket/timer/event
      // handlers): whatever it rejects with goes nowhere, as above.
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: true, attributes: false } }],
      // Awaiting a value that is not a promise is a mistake about what a call returns.
      '@typescript-eslint/await-thenable': 'error',
      // Throw Error objects only: callers read .code/.message and stack traces (BatonError).
      '@typescript-eslint/only-throw-error': 'error',
      // == coerces (0 == '', null == undefined): compare exactly (`x == null` is allowed).
      eqeqeq: ['error', 'always', { null: 'ignore' }],
    },
  },
  {
    // Libraries and node assemblies log through winston (JSON on stderr, per
    // module, never per packet), not console: a stray console.log on a data
    // path costs a syscall per packet and bypasses the log level.
    files: ['shared/**', 'distributor/**', 'migration-client/**', 'migration-manager/**', 'hash-tier/**', 'service-node/**', 'traffic/**', 'nodes/**'],
    rules: { 'no-console': 'error' },
  },
);
