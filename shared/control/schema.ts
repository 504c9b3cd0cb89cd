/**
 * Loads proto/baton/control/v1/control.proto once, at import time, with
 * protobufjs reflection (no generated code). The file is found by walking up
 * from this module to the project root, so it works from any working
 * directory and from the bundled node entry (cli/node-bundle.ts), which sits
 * elsewhere in the tree.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

const PROTO_REL = join('proto', 'baton', 'control', 'v1', 'control.proto');

function findProto(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const p = join(dir, PROTO_REL);
    if (existsSync(p)) return p;
    dir = dirname(dir);
  }
  throw new Error(`${PROTO_REL} not found above ${fileURLToPath(import.meta.url)}`);
}

export const CONTROL_PROTO_PATH = findProto();

export const controlRoot: protobuf.Root = protobuf.loadSync(CONTROL_PROTO_PATH);
controlRoot.resolveAll(); // fail at import, not at first use, if the schema has a dangling type

export const EnvelopeType: protobuf.Type = controlRoot.lookupType('baton.control.v1.Envelope');
