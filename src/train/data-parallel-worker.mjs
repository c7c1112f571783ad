// Entry of a data-parallel training worker (see data-parallel.ts): registers tsx in this thread,
// as bin/txt2img.mjs does for the CLI (a worker does not inherit the parent's loader), then runs
// the TypeScript worker.
import { register } from 'tsx/esm/api';

register();
await import('./data-parallel-worker.ts');
