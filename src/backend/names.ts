/**
 * The backend names users choose from (`--backend`, TXT2IMG_BACKEND) and the environment
 * variables of the backend layer, apart from the layer itself (./index.ts), so a command line can
 * list and check them without loading tfjs.
 */

/** In the automatic order: the first that loads is used. */
export const BACKEND_NAMES = ['node-gpu', 'node', 'webgpu', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
export const BACKEND_ENV = 'TXT2IMG_BACKEND';
export const THREADS_ENV = 'TXT2IMG_THREADS';

export function parseBackendName(value: string, source: string): BackendName {
  const v = value.trim().toLowerCase();
  if ((BACKEND_NAMES as readonly string[]).includes(v)) return v as BackendName;
  throw new Error(`${source}: unknown backend '${value}'; allowed: ${BACKEND_NAMES.join(', ')}`);
}
