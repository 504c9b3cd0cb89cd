#!/usr/bin/env node
// Entry point for `npm run baton -- <command>` (and the package's `baton` bin):
// registers tsx so the TypeScript sources run as they are, then starts the CLI.
import { register } from 'tsx/esm/api';

register();
await import('../cli/baton.ts');
