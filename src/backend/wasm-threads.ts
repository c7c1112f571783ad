/**
 * Multi-threaded XNNPACK for @tensorflow/tfjs-backend-wasm under Node.
 *
 * Why a shim is needed (tfjs 4.22.0):
 *  - The flag WASM_HAS_MULTITHREAD_SUPPORT is hard-wired to false when IS_NODE, so the
 *    single-threaded binary is loaded.
 *  - Even with the flag forced on, the threaded build cannot start its pthreads in Node:
 *    emscripten creates each pthread worker from `locateFile('...worker.js')`, which tfjs
 *    answers with a `blob:` URL, and the worker then `importScripts` the main script, which
 *    tfjs hands over as a Blob. Node's worker_threads can load neither.
 *  - The glue caps the pool at (logical cores / 2), read from `os.cpus()` while the module
 *    initialises; on a 2-core machine that is 1 whatever `setThreadsCount` asks.
 *  - Running pthreads are `ref()`ed, so a process that used threads would never exit.
 *
 * What this module does, all before the backend is initialised:
 *  1. writes a pthread worker script to a private temp directory: a prelude that defines the
 *     globals the bundle's factory code expects to find (its rollup helpers `require$$0..4`,
 *     `commonjsGlobal`, the tslib helpers `__values/__read/__spreadArray`), followed by
 *     tfjs' own worker script, read at run time from the installed bundle (not copied here);
 *  2. installs `globalThis.Worker` as an accessor whose value is `ShimWorker`: a
 *     worker_threads Worker that, for tfjs' `blob:` URLs, starts that temp script instead,
 *     turns the Blob in the 'load' message into a temp file path (Blob#text is async, so
 *     messages posted meanwhile are queued, and flushed synchronously as soon as it is
 *     written), never `ref()`s itself (so the process exits normally), and reports a worker
 *     that fails before it has loaded instead of letting tfjs throw from an event handler;
 *  3. wraps the registered 'wasm' backend factory: while it runs, `os.cpus()` reports
 *     2 * threads cores (the only input of the cap above); if the threaded start fails
 *     (a worker error, or no worker loaded within LOAD_TIMEOUT_MS) it falls back to the
 *     single-threaded SIMD binary, with a warning, so asking for threads never breaks wasm;
 *  4. sets WASM_HAS_MULTITHREAD_SUPPORT and `setThreadsCount(threads)`.
 *
 * Threads are only for XNNPACK's pthreadpool: the main thread blocks (Atomics.wait) while
 * the pool computes, so JavaScript semantics are unchanged. The emscripten build
 * pre-creates 8 workers (about 10 MB each) whatever the count; at most 8 threads.
 */
import * as tf from '@tensorflow/tfjs';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { Worker as NodeWorker, type WorkerOptions } from 'node:worker_threads';

/** The tfjs build's PTHREAD_POOL_SIZE: more threads would need workers started while the main thread blocks. */
export const MAX_WASM_THREADS = 8;
/** How long the pthread workers may take to load before we give up on threads. */
const LOAD_TIMEOUT_MS = 60_000;

type BackendFactory = () => tf.KernelBackend | Promise<tf.KernelBackend>;

interface ShimState {
  /** The pthread worker script (prelude + tfjs' worker), written to a temp dir per start. */
  workerScript: string;
  /** The temp dir of the current start ('' between starts). */
  dir: string;
  workerFile: string;
  mainScriptFile: string | null;
  /** Threads asked for by the last enableWasmThreads call (>= 2 while active). */
  threads: number;
  /** True between the start and end of the wrapped factory's threaded attempt. */
  starting: boolean;
  /** Workers of the current attempt. */
  workers: Set<ShimWorker>;
  /** Rejects the current attempt (set by the wrapped factory). */
  fail: ((e: Error) => void) | null;
  factoryWrapped: boolean;
}

let state: ShimState | null = null;
let lastReason = '';

/** Why threads were not enabled by the last call (empty when they were, or not asked for). */
export function wasmThreadsUnavailableReason(): string {
  return lastReason;
}

// --- the pthread worker --------------------------------------------------------------------

/**
 * Globals the threaded factory's source refers to. tfjs posts the factory to its workers as
 * `"var WasmBackendModuleThreadedSimd = " + factory.toString()`, which drops the closure of the
 * node bundle it came from; the worker evaluates it with a global eval, so every free name of
 * that closure must be a global there.
 */
const WORKER_PRELUDE = `"use strict";
globalThis.require$$0 = require("fs");
globalThis.require$$1 = require("path");
globalThis.require$$3 = require("perf_hooks");
globalThis.require$$4 = require("os");
globalThis.commonjsGlobal = globalThis;
globalThis.__values = function (o) {
  var it = o != null && typeof Symbol === "function" && o[Symbol.iterator];
  if (it) return it.call(o);
  var i = 0;
  return { next: function () { var done = o == null || i >= o.length; return { value: done ? undefined : o[i++], done: done }; } };
};
globalThis.__read = function (o, n) {
  var f = typeof Symbol === "function" && o[Symbol.iterator];
  if (!f) return o;
  var out = [], it = f.call(o), r;
  while ((n === undefined || n-- > 0) && !(r = it.next()).done) out.push(r.value);
  return out;
};
globalThis.__spreadArray = function (to, from) { return to.concat(Array.prototype.slice.call(from)); };
`;

/** tfjs' pthread worker script, as the string literal the node bundle embeds it in. */
function readTfjsWorkerScript(bundleFile: string): string {
  const text = fs.readFileSync(bundleFile, 'utf8');
  const marker = 'var wasmWorkerContents = ';
  const start = text.indexOf(marker);
  if (start < 0) throw new Error(`no '${marker.trim()}' in ${bundleFile}`);
  const end = text.indexOf('\n', start);
  const literal = text
    .slice(start + marker.length, end)
    .trim()
    .replace(/;$/, '');
  const script = JSON.parse(literal) as unknown;
  if (typeof script !== 'string' || !script.includes('importScripts') || !script.includes('"load"')) {
    throw new Error(`the worker script in ${bundleFile} does not look like the emscripten pthread worker`);
  }
  // tfjs escapes newlines the same way before making its Blob (they sit inside string literals).
  return script.replace(/\n/g, '\\n');
}

class ShimWorker extends NodeWorker {
  private readonly tfjsThread: boolean;
  private loaded = false;
  get isLoaded(): boolean {
    return this.loaded;
  }
  private queue: Array<[unknown, readonly unknown[] | undefined]> | null = null;

  constructor(url: string | URL, options?: WorkerOptions) {
    const s = state;
    // Only the workers tfjs creates while our wrapped factory starts the threaded module.
    const tfjsThread = s?.starting === true && typeof url === 'string' && url.startsWith('blob:');
    // execArgv: [] keeps loaders such as tsx (inherited by default) out of the pthreads: the
    // script is plain CommonJS, and V8 flags are process-wide anyway.
    super(tfjsThread ? s!.workerFile : url, tfjsThread ? { ...options, name: 'tfjs-wasm-pthread', execArgv: [] } : options);
    this.tfjsThread = tfjsThread;
    if (!tfjsThread) return;
    try {
      URL.revokeObjectURL(url as string);
    } catch {
      // not ours to worry about
    }
    s!.workers.add(this);
    this.on('message', (d: { cmd?: string } | undefined) => {
      if (d && d.cmd === 'loaded') this.loaded = true;
    });
  }

  /** Pthreads never keep the process alive: they only compute while the main thread waits. */
  override ref(): void {
    if (!this.tfjsThread) super.ref();
  }

  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (this.tfjsThread && !this.loaded && state?.fail && (event === 'error' || (event === 'exit' && args[0] !== 0))) {
      const e = event === 'error' ? (args[0] as Error) : new Error(`pthread worker exited with code ${String(args[0])}`);
      state.fail(e instanceof Error ? e : new Error(String(e)));
      return true;
    }
    return super.emit(event, ...args);
  }

  override postMessage(msg: unknown, transferList?: readonly unknown[]): void {
    if (!this.tfjsThread) {
      super.postMessage(msg, transferList as never);
      return;
    }
    const m = msg as { cmd?: string; urlOrBlob?: unknown } | null;
    if (m && m.cmd === 'load' && m.urlOrBlob !== undefined && typeof m.urlOrBlob !== 'string') {
      // The main script arrives as a Blob; the worker can only importScripts() a file.
      this.queue = [];
      void this.sendLoad(m, transferList);
      return;
    }
    if (this.queue) {
      this.queue.push([msg, transferList]);
      return;
    }
    super.postMessage(msg, transferList as never);
  }

  private async sendLoad(m: { urlOrBlob?: unknown }, transferList?: readonly unknown[]): Promise<void> {
    try {
      const s = state!;
      if (!s.mainScriptFile) {
        const text = await (m.urlOrBlob as Blob).text();
        if (!s.mainScriptFile) {
          const file = path.join(s.dir, 'tfjs-wasm-main.cjs');
          fs.writeFileSync(file, text);
          s.mainScriptFile = file;
        }
      }
      super.postMessage({ ...m, urlOrBlob: s.mainScriptFile }, transferList as never);
      const queued = this.queue ?? [];
      this.queue = null;
      for (const [msg, tl] of queued) super.postMessage(msg, tl as never);
    } catch (e) {
      state?.fail?.(e instanceof Error ? e : new Error(String(e)));
    }
  }
}

// --- install --------------------------------------------------------------------------------

function installWorkerGlobal(): void {
  const g = globalThis as Record<string, unknown>;
  const desc = Object.getOwnPropertyDescriptor(g, 'Worker');
  if (desc?.get && (desc.get as { __txt2imgShim?: boolean }).__txt2imgShim) return;
  // The emscripten glue assigns the plain worker_threads Worker to the global each time a
  // module is created; keep our subclass in place of that one, but honour any other value.
  let other: unknown = desc && !desc.get ? desc.value : undefined;
  if (other === NodeWorker) other = undefined;
  const get = Object.assign(() => other ?? ShimWorker, { __txt2imgShim: true });
  Object.defineProperty(g, 'Worker', {
    configurable: true,
    enumerable: false,
    get,
    set(v: unknown) {
      other = v === NodeWorker || v === ShimWorker ? undefined : v;
    },
  });
}

/** Writes the worker script to a fresh private temp dir (read by each worker as it starts). */
function writeFiles(s: ShimState): void {
  removeFiles(s);
  s.dir = fs.mkdtempSync(path.join(os.tmpdir(), `txt2img-wasm-threads-${process.pid}-`));
  s.workerFile = path.join(s.dir, 'tfjs-wasm-pthread.cjs');
  fs.writeFileSync(s.workerFile, s.workerScript);
  s.mainScriptFile = null;
}

/** The files are only read while the workers load: removed as soon as the backend started. */
function removeFiles(s: ShimState): void {
  if (!s.dir) return;
  try {
    fs.rmSync(s.dir, { recursive: true, force: true });
  } catch {
    // best effort: a temp dir
  }
  s.dir = '';
}

function fakeCpus(n: number): os.CpuInfo[] {
  const real = realCpus();
  const base = real.length > 0 ? real[0] : { model: 'unknown', speed: 0, times: { user: 0, nice: 0, sys: 0, idle: 0, irq: 0 } };
  return Array.from({ length: n }, (_, i) => real[i] ?? { ...base, times: { ...base.times } });
}
const realCpus = os.cpus;

function wrapFactory(s: ShimState): void {
  if (s.factoryWrapped) return;
  const engine = tf.engine();
  const entry = engine.registryFactory.wasm;
  if (!entry) throw new Error("the 'wasm' backend is not registered");
  const original = entry.factory as BackendFactory;
  const wrapped: BackendFactory = async () => {
    const flags = tf.env();
    if (s.threads < 2 || !(await flags.getAsync('WASM_HAS_MULTITHREAD_SUPPORT'))) return original();
    let timer: NodeJS.Timeout | undefined;
    s.workers.clear();
    s.starting = true;
    const cpusBefore = os.cpus;
    try {
      writeFiles(s);
      os.cpus = () => fakeCpus(2 * s.threads);
      const failed = new Promise<never>((_, reject) => {
        s.fail = reject;
        timer = setTimeout(() => {
          const loading = [...s.workers].some((w) => !w.isLoaded);
          if (loading) reject(new Error(`pthread workers did not load within ${LOAD_TIMEOUT_MS / 1000} s`));
        }, LOAD_TIMEOUT_MS);
        timer.unref();
      });
      const attempt = Promise.resolve().then(original);
      attempt.catch(() => undefined); // a late rejection must not become an unhandled one
      return await Promise.race([attempt, failed]);
    } catch (e) {
      for (const w of s.workers) void w.terminate();
      s.workers.clear();
      lastReason = `threaded wasm failed to start (${(e as Error)?.message ?? String(e)})`;
      console.warn(`txt2img: ${lastReason}; using the single-threaded wasm binary`);
      flags.set('WASM_HAS_MULTITHREAD_SUPPORT', false);
      os.cpus = cpusBefore;
      return await original();
    } finally {
      removeFiles(s);
      if (timer) clearTimeout(timer);
      s.fail = null;
      s.starting = false;
      os.cpus = cpusBefore;
    }
  };
  entry.factory = wrapped;
  s.factoryWrapped = true;
}

/** Why this process cannot run the threaded binary, or '' when it can. */
async function unsupportedReason(): Promise<string> {
  if (typeof process === 'undefined' || typeof process.versions?.node !== 'string') return 'not running under Node';
  if (typeof SharedArrayBuffer === 'undefined' || typeof Atomics === 'undefined') return 'no SharedArrayBuffer/Atomics';
  if (typeof Blob === 'undefined' || typeof Blob.prototype.text !== 'function') return 'no Blob#text';
  try {
    const mem = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true } as WebAssembly.MemoryDescriptor);
    if (!(mem.buffer instanceof SharedArrayBuffer)) return 'WebAssembly shared memory is not supported';
  } catch {
    return 'WebAssembly shared memory is not supported';
  }
  if (!(await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'))) return 'no WebAssembly SIMD (the threaded tfjs binary needs it)';
  return '';
}

/**
 * Arranges for the wasm backend to compute with `n` threads. Call before the backend is
 * initialised (before `tf.setBackend('wasm')`). Returns the thread count arranged (at most
 * MAX_WASM_THREADS), or 1 where threads cannot be used here; never throws for that. If the
 * threaded start fails later, initialisation falls back to one thread; `getThreadsCount()` from
 * the wasm package gives the count actually running.
 */
export async function enableWasmThreads(n: number): Promise<number> {
  lastReason = '';
  const asked = Number.isFinite(n) ? Math.floor(n) : 1;
  try {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    if (tf.engine().registry.wasm !== undefined) {
      lastReason = 'the wasm backend was already initialised';
      return wasm.getThreadsCount();
    }
    if (asked <= 1) {
      if (state) state.threads = 1;
      tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
      wasm.setThreadsCount(1);
      return 1;
    }
    const why = await unsupportedReason();
    if (why) {
      lastReason = why;
      return 1;
    }
    const threads = Math.min(asked, MAX_WASM_THREADS);
    if (!state) {
      const require = createRequire(import.meta.url);
      const bundle = require.resolve('@tensorflow/tfjs-backend-wasm');
      const binary = path.join(path.dirname(bundle), 'tfjs-backend-wasm-threaded-simd.wasm');
      if (!fs.existsSync(binary)) throw new Error(`missing ${binary}`);
      const script = readTfjsWorkerScript(bundle);
      state = {
        workerScript: WORKER_PRELUDE + script,
        dir: '',
        workerFile: '',
        mainScriptFile: null,
        threads,
        starting: false,
        workers: new Set(),
        fail: null,
        factoryWrapped: false,
      };
      const s = state;
      process.once('exit', () => removeFiles(s));
    }
    state.threads = threads;
    installWorkerGlobal();
    wrapFactory(state);
    wasm.setThreadsCount(threads);
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
    return threads;
  } catch (e) {
    lastReason = `cannot enable wasm threads: ${(e as Error)?.message ?? String(e)}`;
    try {
      tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
    } catch {
      // the flag is not registered: the wasm package did not load, nothing to undo
    }
    return 1;
  }
}

/** For tests only: replaces the pthread worker script (e.g. with one that fails) for later starts. */
export function setWasmThreadsWorkerScriptForTests(script: string): void {
  if (!state) throw new Error('enableWasmThreads has not set up threads');
  state.workerScript = script;
}
