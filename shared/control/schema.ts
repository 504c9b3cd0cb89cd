/**
 * Loads proto/baton/control/v1/control.proto once, at import time, with
 * protobufjs reflection (no generated code; the path is resolved relative to
 * this module so it works from any working directory).
 */
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

export const CONTROL_PROTO_PATH = fileURLToPath(new URL('../../proto/baton/control/v1/control.proto', import.meta.url));

export const controlRoot: protobuf.Root = protobuf.loadSync(CONTROL_PROTO_PATH);
controlRoot.resolveAll(); // fail at import, not at first use, if the schema has a dangling type

export const EnvelopeType: protobuf.Type = controlRoot.lookupType('baton.control.v1.Envelope');
