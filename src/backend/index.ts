/**
 * The backend layer: picks the tfjs backend once at start-up, and says which it picked.
 *
 * Order when nothing is asked for: node-gpu (@tensorflow/tfjs-node-gpu), node
 * (@tensorflow/tfjs-node), webgpu (Dawn, see ./webgpu.ts; only on an adapter that is not a
 * software rasterizer: llvmpipe is slower than wasm and serves only to test the GPU path, so it
 * runs only when asked for), wasm (XNNPACK plus our kernel pack, see ./wasm-kernels.ts), cpu.
 * `--backend NAME` on every CLI, or TXT2IMG_BACKEND=NAME, asks for one: a backend that was
 * asked for and cannot load is an error, never a silent fallback.
 *
 * Model code never imports a backend: it uses '@tensorflow/tfjs' and runs the same everywhere.
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, readdirSync } from 'node:fs';
import os from 'node:os';
// Loads neither Dawn nor tfjs-backend-webgpu until the webgpu backend is started.
import { describeAdapter, startWebGpu, webgpuStep } from './webgpu.js';

import { BACKEND_ENV, BACKEND_NAMES, type BackendName, THREADS_ENV, parseBackendName } from './names.js';

export { BACKEND_ENV, BACKEND_NAMES, type BackendName, THREADS_ENV, parseBackendName };

export interface BackendInfo {
  /** Our name for it (what --backend takes). */
  name: BackendName;
  /** tfjs' registered backend name ('tensorflow', 'webgpu', 'wasm', 'cpu'). */
  tfName: string;
  /**
   * Threads the backend computes with (wasm: its worker pool; node: TensorFlow's own pool;
   * webgpu: the host's cores, which onnxruntime may use beside it).
   */
  threads: number;
  /**
   * True only when a GPU really computes: node-gpu with a visible NVIDIA device, webgpu on an
   * adapter that is not a software rasterizer.
   */
  gpu: boolean;
  /** The line printed at start-up. */
  description: string;
  /**
   * What every report of this run must say (webgpu on a software adapter: its timings are a
   * correctness run of the GPU code path, not GPU speed).
   */
  warning?: string;
}

export interface InitBackendOptions {
  /** A backend name; undefined means TXT2IMG_BACKEND, else the automatic order. */
  backend?: string;
  /** wasm threads; default TXT2IMG_THREADS, else the number of cores. */
  threads?: number;
  /** Do not print the choice (tests). */
  quiet?: boolean;
  /** Where to print (default console.error, so stdout stays clean for pipes). */
  log?: (line: string) => void;
}

let current: BackendInfo | undefined;

function parseThreads(value: number | string | undefined, source: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 256) {
    throw new Error(`${source}: threads must be an integer from 1 to 256, got '${value}'`);
  }
  return n;
}

/** Whether an NVIDIA GPU is visible to this process (driver loaded and a device node present). */
function nvidiaGpuVisible(): boolean {
  if (process.env.CUDA_VISIBLE_DEVICES === '' || process.env.CUDA_VISIBLE_DEVICES === '-1') return false;
  try {
    return existsSync('/proc/driver/nvidia/version') && readdirSync('/dev').some((d) => /^nvidia\d+$/.test(d));
  } catch {
    return false;
  }
}

async function loadNode(gpu: boolean): Promise<BackendInfo> {
  const pkg = gpu ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node';
  try {
    await import(pkg);
  } catch (e) {
    throw new Error(
      `backend '${gpu ? 'node-gpu' : 'node'}' is not available: ${pkg} did not load ` +
        `(${(e as Error).message.split('\n')[0]}). It needs libtensorflow, which its install script downloads; ` +
        `see README "Backends and GPU paths".`,
    );
  }
  if (tf.findBackend('tensorflow') === null || !(await tf.setBackend('tensorflow'))) {
    throw new Error(`backend '${gpu ? 'node-gpu' : 'node'}': ${pkg} loaded but did not register the 'tensorflow' backend`);
  }
  await tf.ready();
  const threads = os.cpus().length;
  if (!gpu) {
    return { name: 'node', tfName: 'tensorflow', threads, gpu: false, description: `backend: node (libtensorflow on CPU, ${threads} cores)` };
  }
  const seen = nvidiaGpuVisible();
  return {
    name: 'node-gpu',
    tfName: 'tensorflow',
    threads,
    gpu: seen,
    description: seen
      ? 'backend: node-gpu (libtensorflow with CUDA, NVIDIA GPU visible)'
      : 'backend: node-gpu (libtensorflow with CUDA) -- WARNING: no NVIDIA GPU is visible, so TensorFlow computes on the CPU',
  };
}

async function loadWasm(threads: number | undefined): Promise<BackendInfo> {
  const { enableWasmThreads, wasmThreadsUnavailableReason } = await import('./wasm-threads.js');
  const { registerWasmKernels } = await import('./wasm-kernels.js');
  const wanted = threads ?? Math.max(1, os.cpus().length);
  await enableWasmThreads(wanted);
  await import('@tensorflow/tfjs-backend-wasm');
  registerWasmKernels();
  if (!(await tf.setBackend('wasm'))) throw new Error("backend 'wasm' failed to initialise");
  await tf.ready();
  const { getThreadsCount } = await import('@tensorflow/tfjs-backend-wasm');
  // What runs, not what was arranged: a threaded start that fails falls back to one thread.
  const n = getThreadsCount();
  const why = wasmThreadsUnavailableReason();
  const note = n < wanted ? `, ${wanted} asked${why ? `: ${why}` : ''}` : '';
  return { name: 'wasm', tfName: 'wasm', threads: n, gpu: false, description: `backend: wasm (${n} thread${n === 1 ? '' : 's'}${note})` };
}

async function loadWebGpu(asked: boolean): Promise<BackendInfo> {
  const { info } = await startWebGpu(asked);
  const threads = os.cpus().length;
  const adapter = describeAdapter(info);
  const warning = info.software
    ? `webgpu on a software rasterizer (${info.description || info.device || 'no description'}): it computes on the CPU, slower than wasm; a correctness run of the GPU code path, not GPU speed`
    : undefined;
  return {
    name: 'webgpu',
    tfName: 'webgpu',
    threads,
    gpu: !info.software,
    description: warning ? `backend: webgpu (adapter: ${adapter}) -- WARNING: ${warning}` : `backend: webgpu (adapter: ${adapter})`,
    ...(warning ? { warning } : {}),
  };
}

async function loadCpu(): Promise<BackendInfo> {
  if (!(await tf.setBackend('cpu'))) throw new Error("backend 'cpu' failed to initialise");
  await tf.ready();
  return { name: 'cpu', tfName: 'cpu', threads: 1, gpu: false, description: 'backend: cpu (pure JavaScript, 1 thread; slow, for tests and debugging)' };
}

async function load(name: BackendName, threads: number | undefined, asked: boolean): Promise<BackendInfo> {
  switch (name) {
    case 'node-gpu':
      return loadNode(true);
    case 'node':
      return loadNode(false);
    case 'webgpu':
      return loadWebGpu(asked);
    case 'wasm':
      return loadWasm(threads);
    case 'cpu':
      return loadCpu();
  }
}

/**
 * Chooses and initialises the backend. Idempotent: a second call returns the first choice,
 * and asking for a different backend after one was chosen is an error (tfjs tensors live in
 * one backend; switching mid-run would silently copy every weight).
 */
export async function initBackend(opts: InitBackendOptions = {}): Promise<BackendInfo> {
  if (opts.backend !== undefined && opts.backend.trim() === '')
    throw new Error(`--backend is empty; allowed: ${BACKEND_NAMES.join(', ')} (or leave it out for the automatic choice)`);
  const fromFlag = opts.backend !== undefined;
  const envValue = process.env[BACKEND_ENV];
  const asked = fromFlag ? parseBackendName(opts.backend!, '--backend') : envValue ? parseBackendName(envValue, BACKEND_ENV) : undefined;
  const threads = parseThreads(opts.threads, '--threads') ?? parseThreads(process.env[THREADS_ENV], THREADS_ENV);

  if (current) {
    if (asked && asked !== current.name) {
      throw new Error(`backend already initialised as '${current.name}'; cannot switch to '${asked}' in the same process`);
    }
    return current;
  }

  // Production mode: no debug checks, and no "install tfjs-node" banner from the cpu backend
  // (the start-up line below already says which backend runs and what it is good for).
  tf.enableProdMode();
  let info: BackendInfo | undefined;
  if (asked) {
    info = await load(asked, threads, true);
  } else {
    const failures: string[] = [];
    for (const name of BACKEND_NAMES) {
      try {
        info = await load(name, threads, false);
        break;
      } catch (e) {
        failures.push(`${name}: ${(e as Error).message}`);
      }
    }
    if (!info) throw new Error(`no tfjs backend could be initialised:\n  ${failures.join('\n  ')}`);
  }
  current = info;
  if (!opts.quiet) (opts.log ?? ((l: string) => console.error(l)))(info.description);
  return info;
}

/** The backend chosen by initBackend, or undefined before it ran. */
export function currentBackend(): BackendInfo | undefined {
  return current;
}

/**
 * Lets the backend catch up once per step of a long loop of GPU work, where it needs that;
 * resolves at once elsewhere. On webgpu, Dawn recycles its objects (tfjs makes a bind group
 * per dispatch) only as the event loop turns and the GPU reports finished work, so a loop
 * that awaits nothing real until its end (the sampler) would hold every bind group it made:
 * the driver's descriptor memory grows until it fails (measured on llvmpipe: a segfault after
 * ~60k dispatches, 42 ldm-small sampling steps). Such loops await this once per step.
 */
export function yieldToBackend(): Promise<void> {
  return tf.getBackend() === 'webgpu' ? webgpuStep() : Promise.resolve();
}
