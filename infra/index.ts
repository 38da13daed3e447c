// Entry point of the Pulumi program (Pulumi.yaml: main: infra/). The exports
// are the stack outputs; see stack.ts for the wiring and render/ for the files.
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { program } from './stack.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outputs = program({ root });

export const dcrUrl = outputs.dcrUrl;
export const mirUrl = outputs.mirUrl;
export const publicIp = outputs.publicIp;
export const zoneId = outputs.zoneId;
export const serverImage = outputs.serverImage;
export const containers = outputs.containers;
export const dnsRecords = outputs.dnsRecords;
export const clientSnippets = outputs.clientSnippets;
export const r2Bucket = outputs.r2Bucket;
export const r2Endpoint = outputs.r2Endpoint;
export const replicas = outputs.replicas;
export const robotSecrets = outputs.robotSecrets;
