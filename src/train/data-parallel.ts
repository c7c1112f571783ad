/**
 * Data-parallel training steps: every micro-batch is split into N shards; shard 0 is computed in
 * this thread, shards 1..N-1 in worker_threads that each hold a replica of the model on their own
 * tfjs backend (the main thread's backend, 1 thread). Each shard's loss and gradients come from
 * the current weights; the gradients are averaged weighted by shard size, so for a loss that is a
 * mean over samples the result is the full-batch gradient. The trainer (trainer.ts) then clips,
 * steps AdamW and EMA in this thread as usual and the new weights go back to the workers.
 *
 * Why: on a 2-core machine the wasm backend gains little from a 2nd thread on a whole training
 * step, while two 1-thread backends side by side each run at full speed. It also splits the
 * activation memory over several wasm heaps (each capped at 4 GB).
 *
 * With `onnx` every shard's gradients come from onnxruntime instead (src/onnx/gradients.ts,
 * the replica's staged loss, 1 intra-op thread per shard): onnxruntime parallelises a GEMM over
 * its threads but many of its memory-bound kernels (Slice, Pad, Transpose, ReduceSum) run on
 * one, so independent half batches on the cores beat one session on all threads (docs/measurements.md).
 *
 * A worker rebuilds the model and the loss from a ReplicaSpec: a module URL, the name of the
 * function it exports, and that function's serialisable argument (the model config plus the
 * arrays the loss reads, e.g. the training images). The caller registers its own builder this
 * way, so this layer knows no concrete loss; the main thread builds its loss from the same
 * argument with the same code, so the loss exists once.
 * Randomness: each micro-batch draws one Generator per shard from the trainer's generator
 * (`spawn()`), so a run is deterministic for a given N and a resumed run draws what it would have.
 *
 * Transport: one SharedArrayBuffer holds every parameter end to end (written here after each
 * optimizer step, read by the workers before their next shard), and one per worker holds its
 * gradients. Each carries a stamp written with Atomics after the data, which orders the plain
 * float writes before the reads on the other side and checks that the buffer is the expected one.
 */
import * as tf from '@tensorflow/tfjs';
import { Worker } from 'node:worker_threads';
import { type BackendName, currentBackend } from '../backend/index.js';
import { type ParamStore, type StagedLoss, computeGradients, computeHostGradients } from '../nn/params.js';
import { OnnxGradients, fallbackLine } from '../onnx/gradients.js';
import { type Runtime, defaultOnnxThreads } from '../onnx/runtime.js';
import type { Generator, GeneratorState } from '../random/generator.js';

/**
 * The worker's entry: the compiled worker next to this file, or, when this file runs as
 * TypeScript (tsx, vitest), an .mjs that registers tsx in the worker first (a worker does not
 * inherit the parent's loader).
 */
const WORKER_ENTRY = new URL(import.meta.url.endsWith('.ts') ? './data-parallel-worker.mjs' : './data-parallel-worker.js', import.meta.url);

/** Most data-parallel workers accepted (the main thread counts as one). */
export const MAX_WORKERS = 64;

/**
 * What a worker rebuilds its replica from (see data-parallel-worker.ts): `(await import(module))
 * [exportName](args)` must return a Replica. `module` is a file URL (the builder's
 * `import.meta.url`), so it resolves the same in every thread; `args` must survive
 * structured cloning (its typed arrays are moved to shared memory once for all workers).
 */
export interface ReplicaSpec<A = unknown> {
  module: string;
  exportName: string;
  args: A;
  /** What the replica is, for messages ('vae', 'classifier'). */
  kind: string;
}

/** A model and its loss over serialisable batches: built from a ReplicaSpec in every thread. */
export interface Replica<B> {
  /** Every parameter of the main thread's trained store, under the same names. */
  store: ParamStore;
  /** Mean loss over the batch's samples; draws all noise from rng. */
  loss: (batch: B, rng: Generator) => tf.Scalar;
  /** The same loss staged for onnxruntime (inputs drawn, then the graph); absent: tfjs only. */
  staged?: StagedLoss<B>;
  dispose(): void;
}

/** Something other than this thread's tfjs tape that computes a batch's gradients. */
export interface GradientSource<B> {
  /** Takes the store's current weights; called after every optimizer update. */
  syncWeights(): void;
  gradients(batch: B, rng: Generator): Promise<{ loss: number; grads: Map<string, tf.Tensor> }>;
  close(): Promise<void>;
}

/**
 * Loss and gradients of one batch: through `source` when there is one (data-parallel workers,
 * onnxruntime), else by tfjs in this thread. The caller owns the gradients (and, with a source,
 * has synced the weights).
 */
export async function batchGradients<B>(
  store: ParamStore,
  loss: (batch: B, rng: Generator) => tf.Scalar,
  batch: B,
  rng: Generator,
  source?: GradientSource<B>,
): Promise<{ loss: number; grads: Map<string, tf.Tensor> }> {
  if (source) return source.gradients(batch, rng);
  const r = computeGradients(store, () => loss(batch, rng));
  const value = (await r.loss.data())[0];
  r.loss.dispose();
  return { loss: value, grads: r.grads };
}

/**
 * Shards when none are asked for: one per core with the onnx runtime (each a 1-thread session:
 * independent half batches beat one session on both cores, see above), else 1.
 */
export function defaultWorkers(runtime: Runtime): number {
  return runtime === 'onnx' ? defaultOnnxThreads() : 1;
}

export function checkWorkers(workers: unknown, what = 'workers'): number {
  if (!(typeof workers === 'number' && Number.isInteger(workers) && workers >= 1 && workers <= MAX_WORKERS)) {
    throw new Error(`${what} must be an integer from 1 to ${MAX_WORKERS} (1 = no data parallelism), got ${JSON.stringify(workers)}`);
  }
  return workers;
}

/**
 * Splits a batch of per-sample arrays (`{ indices: [...], flips: [...] }`) into n contiguous
 * shards, as equal as possible (the first ones one sample larger); a shard may be empty.
 */
export function splitBatch<B extends object>(batch: B, n: number): { batch: B; size: number }[] {
  const fields = Object.entries(batch).filter(([, v]) => v !== undefined);
  for (const [k, v] of fields) {
    if (!Array.isArray(v)) throw new Error(`data-parallel training needs batches of per-sample arrays; field '${k}' is ${typeof v}`);
  }
  const arrays = fields as [string, unknown[]][];
  const size = arrays.length > 0 ? arrays[0][1].length : 0;
  const uneven = arrays.find(([, v]) => v.length !== size);
  if (uneven) throw new Error(`data-parallel training: batch field '${uneven[0]}' has ${uneven[1].length} entries, '${arrays[0][0]}' has ${size}`);
  const shards: { batch: B; size: number }[] = [];
  let start = 0;
  for (let i = 0; i < n; i++) {
    const len = Math.floor(size / n) + (i < size % n ? 1 : 0);
    shards.push({ batch: Object.fromEntries(arrays.map(([k, v]) => [k, v.slice(start, start + len)])) as B, size: len });
    start += len;
  }
  return shards;
}

/** Every parameter of a store laid end to end in one float32 buffer (store order). */
export interface ParamLayout {
  names: string[];
  shapes: number[][];
  offsets: number[];
  total: number;
}

export function paramLayout(store: ParamStore): ParamLayout {
  const names: string[] = [];
  const shapes: number[][] = [];
  const offsets: number[] = [];
  let total = 0;
  for (const [name, v] of store.entries()) {
    names.push(name);
    shapes.push([...v.shape]);
    offsets.push(total);
    total += v.size;
  }
  return { names, shapes, offsets, total };
}

/** Names and shapes of the store that differ from the layout (empty when they match). */
export function layoutProblems(store: ParamStore, layout: ParamLayout): string[] {
  const mine = paramLayout(store);
  const problems: string[] = [];
  const shapeOf = new Map(mine.names.map((n, i) => [n, mine.shapes[i]]));
  layout.names.forEach((n, i) => {
    const s = shapeOf.get(n);
    if (!s) problems.push(`missing '${n}'`);
    else if (s.join(',') !== layout.shapes[i].join(',')) problems.push(`'${n}' is [${s.join(', ')}], the main thread's is [${layout.shapes[i].join(', ')}]`);
  });
  for (const n of mine.names) if (!layout.names.includes(n)) problems.push(`unexpected '${n}'`);
  return problems;
}

/** A float32 buffer shared by every thread, with a stamp saying who wrote it last. */
export interface SharedParams {
  stamp: Int32Array;
  data: Float32Array;
}

function sharedParams(total: number): SharedParams {
  return { stamp: new Int32Array(new SharedArrayBuffer(4)), data: new Float32Array(new SharedArrayBuffer(total * 4)) };
}

/** Copies every parameter of the store into the buffer, then stamps it; returns the values read. */
export function writeParams(store: ParamStore, layout: ParamLayout, to: SharedParams, stamp: number): Map<string, Float32Array> {
  const values = new Map<string, Float32Array>();
  layout.names.forEach((n, i) => {
    const v = store.get(n).dataSync() as Float32Array;
    to.data.set(v, layout.offsets[i]);
    values.set(n, v);
  });
  Atomics.store(to.stamp, 0, stamp);
  return values;
}

function checkStamp(from: SharedParams, stamp: number, what: string): void {
  const got = Atomics.load(from.stamp, 0);
  if (got !== stamp) throw new Error(`data-parallel: ${what} buffer has stamp ${got}, expected ${stamp}`);
}

/**
 * Every parameter's values from the buffer (which must carry `stamp`), by name. Copies: no
 * backend or onnxruntime (which refuses shared memory) ever keeps a view of shared memory.
 */
export function readParamArrays(layout: ParamLayout, from: SharedParams, stamp: number): Map<string, Float32Array> {
  checkStamp(from, stamp, 'weights');
  return new Map(layout.names.map((n, i) => [n, from.data.slice(layout.offsets[i], layout.offsets[i] + tf.util.sizeFromShape(layout.shapes[i]))]));
}

/** Assigns every parameter of the store from the buffer (which must carry `stamp`). */
export function readParams(store: ParamStore, layout: ParamLayout, from: SharedParams, stamp: number): void {
  const values = readParamArrays(layout, from, stamp);
  layout.names.forEach((n, i) => {
    tf.tidy(() => store.get(n).assign(tf.tensor(values.get(n)!, layout.shapes[i], 'float32')));
  });
}

/** Writes gradients into the buffer and stamps it; returns the layout indices written. */
export function writeGrads(grads: Map<string, Float32Array>, layout: ParamLayout, to: SharedParams, stamp: number): number[] {
  const index = new Map(layout.names.map((n, i) => [n, i]));
  const written: number[] = [];
  for (const [name, g] of grads) {
    const i = index.get(name);
    if (i === undefined) throw new Error(`data-parallel: gradient of unknown parameter '${name}'`);
    to.data.set(g, layout.offsets[i]);
    written.push(i);
  }
  Atomics.store(to.stamp, 0, stamp);
  return written;
}

/** A copy of a task whose large arrays live in shared memory: one copy for all workers, not one each. */
function shareArrays<T>(value: T): T {
  if (value instanceof Float32Array || value instanceof Int32Array) {
    if (value.buffer instanceof SharedArrayBuffer) return value;
    const shared =
      value instanceof Float32Array ? new Float32Array(new SharedArrayBuffer(value.byteLength)) : new Int32Array(new SharedArrayBuffer(value.byteLength));
    shared.set(value);
    return shared as T;
  }
  if (Array.isArray(value)) return value.map(shareArrays) as T;
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, shareArrays(v)])) as T;
  }
  return value;
}

/** What computes a shard's gradients: tfjs (the backend), or onnxruntime with 1 thread. */
export type ShardRuntime = { kind: 'tfjs' } | { kind: 'onnx' /** export failure: tfjs instead (else an error) */; fallback: boolean };

/** What a worker receives at start (workerData). */
export interface WorkerInit {
  index: number;
  replica: ReplicaSpec;
  backend: BackendName;
  threads: number;
  runtime: ShardRuntime;
  layout: ParamLayout;
  weights: SharedParams;
  grads: SharedParams;
}

export interface ShardRequest {
  id: number;
  batch: unknown;
  rng: GeneratorState;
  /** Stamp of the weights buffer to compute with. */
  weights: number;
}

export type WorkerMessage =
  | { type: 'ready'; backend: string; threads: number }
  | { type: 'grads'; id: number; loss: number; written: number[] }
  /** onnxruntime could not take the loss: this worker computes with tfjs from now on. */
  | { type: 'fallback'; why: string };

/** Our backend name for the backend this thread computes on. */
function backendName(): BackendName {
  const cur = currentBackend();
  if (cur?.name === 'webgpu')
    throw new Error('data-parallel training: the webgpu backend is not started in worker threads (one GPU device per process); train with 1 worker');
  if (cur) return cur.name;
  const tfName = tf.getBackend();
  if (tfName === 'wasm' || tfName === 'cpu') return tfName;
  if (tfName === 'tensorflow') return 'node';
  throw new Error(`data-parallel training: backend '${tfName}' cannot be started in a worker; use wasm, cpu or node`);
}

interface WorkerSlot {
  worker: Worker;
  grads: SharedParams;
  /** The request in flight. */
  pending?: { id: number; resolve: (m: Extract<WorkerMessage, { type: 'grads' }>) => void; reject: (e: Error) => void };
  /** Set once the worker failed or exited: every later request fails with it. */
  failed?: Error;
}

export interface DataParallelOptions<B> {
  /** Shards per micro-batch, the main thread included (>= 2). */
  workers: number;
  replica: ReplicaSpec;
  /** The trained store of the main thread (shard 0 and the weights the workers copy). */
  store: ParamStore;
  /** The main thread's loss: the same function the workers build from `replica`. */
  loss: (batch: B, rng: Generator) => tf.Scalar;
  /**
   * Every shard's gradients by onnxruntime (1 thread each) from this staged form of `loss`
   * (the workers use their replica's); `fallback`: a loss the exporter cannot translate is
   * computed by tfjs (with a log line) instead of failing.
   */
  onnx?: { loss: StagedLoss<B>; fallback: boolean };
  log?: (line: string) => void;
}

export class DataParallel<B extends object> implements GradientSource<B> {
  private readonly layout: ParamLayout;
  private readonly weights: SharedParams;
  private weightsStamp = 0;
  private nextId = 0;
  private closed = false;
  private readonly onSignal: (signal: NodeJS.Signals) => void;
  /** Shard 0's gradients when onnxruntime computes them. */
  private readonly onnx: OnnxGradients<B> | undefined;

  private constructor(
    private readonly o: DataParallelOptions<B>,
    private readonly slots: WorkerSlot[],
    layout: ParamLayout,
    weights: SharedParams,
  ) {
    this.layout = layout;
    this.weights = weights;
    this.onnx =
      o.onnx &&
      new OnnxGradients(o.store, o.onnx.loss, {
        threads: 1,
        onFallback: o.onnx.fallback ? (why) => (o.log ?? ((l: string) => console.error(l)))(fallbackLine(why, 'shard 0')) : undefined,
      });
    // Ctrl-C: stop the workers, then let the signal end the process as it would have.
    this.onSignal = (signal) => {
      this.removeSignalHandlers();
      for (const s of this.slots) void s.worker.terminate();
      process.kill(process.pid, signal);
    };
    process.once('SIGINT', this.onSignal);
    process.once('SIGTERM', this.onSignal);
  }

  /** Starts workers 1..N-1 and waits until each has built its replica. */
  static async start<B extends object>(o: DataParallelOptions<B>): Promise<DataParallel<B>> {
    const workers = checkWorkers(o.workers);
    if (workers < 2) throw new Error(`data-parallel training needs at least 2 workers, got ${workers}`);
    const layout = paramLayout(o.store);
    const weights = sharedParams(layout.total);
    const replica: ReplicaSpec = { ...o.replica, args: shareArrays(o.replica.args) };
    const backend = backendName();
    const runtime: ShardRuntime = o.onnx ? { kind: 'onnx', fallback: o.onnx.fallback } : { kind: 'tfjs' };
    const log = o.log ?? ((l: string) => console.error(l));
    const slots: WorkerSlot[] = [];
    const ready: Promise<{ backend: string; threads: number }>[] = [];
    for (let index = 1; index < workers; index++) {
      const grads = sharedParams(layout.total);
      const init: WorkerInit = { index, replica, backend, threads: 1, runtime, layout, weights, grads };
      // execArgv []: the parent's flags (tsx's or vitest's loaders) do not apply to workers.
      const worker = new Worker(WORKER_ENTRY, { workerData: init, execArgv: [] });
      const slot: WorkerSlot = { worker, grads };
      slots.push(slot);
      ready.push(watchWorker(slot, index, workers, (why) => log(fallbackLine(why, `worker ${index}`))));
    }
    const pool = new DataParallel(o, slots, layout, weights);
    try {
      const infos = await Promise.all(ready);
      const { backend: name, threads } = infos[0];
      const main = currentBackend();
      if (o.onnx) {
        log(`data-parallel: ${workers} shards x 1 onnxruntime-node thread (gradients; a ${name} backend in each worker for the first trace)`);
      } else {
        const mainNote = main && main.threads !== threads ? ` (the main thread: ${main.threads} threads)` : '';
        log(`data-parallel: ${workers} workers x ${threads} ${name} thread${threads === 1 ? '' : 's'}${mainNote}`);
      }
    } catch (e) {
      await pool.close();
      throw e;
    }
    return pool;
  }

  /** Publishes the store's current weights: the workers compute their next shards with them. */
  syncWeights(): void {
    this.weightsStamp++;
    const values = writeParams(this.o.store, this.layout, this.weights, this.weightsStamp);
    this.onnx?.setWeights(values);
  }

  /**
   * Loss and gradients of one micro-batch: shards computed in parallel, averaged weighted by
   * shard size. Draws one Generator per shard from `rng` (all N, even for empty shards, so the
   * stream does not depend on the batch size). The caller owns the returned gradients.
   */
  async gradients(batch: B, rng: Generator): Promise<{ loss: number; grads: Map<string, tf.Tensor> }> {
    if (this.weightsStamp === 0) throw new Error('data-parallel: syncWeights() must run before the first gradients()');
    const N = this.o.workers;
    const rngs = Array.from({ length: N }, () => rng.spawn());
    const shards = splitBatch(batch, N);
    const total = shards.reduce((a, s) => a + s.size, 0);
    if (total === 0) throw new Error('data-parallel training: empty batch');
    // Post the workers' shards first, so they compute while this thread does shard 0.
    const replies = Promise.all(shards.slice(1).map((s, k) => (s.size > 0 ? this.request(this.slots[k], s.batch, rngs[k + 1]) : undefined)));
    replies.catch(() => {}); // handled below; a failure while shard 0 runs must not be "unhandled"
    let own: { loss: number; grads: Map<string, Float32Array> } | undefined;
    let workerReplies: Awaited<typeof replies>;
    try {
      if (shards[0].size > 0)
        own = this.onnx
          ? await this.onnx.hostGradients(shards[0].batch, rngs[0])
          : computeHostGradients(this.o.store, () => this.o.loss(shards[0].batch, rngs[0]));
      workerReplies = await replies;
    } catch (e) {
      await replies.catch(() => {}); // no worker may still write its gradients once this throws
      throw e;
    }
    // Weighted by shard size, summed on the host; a parameter a shard's loss does not reach
    // has gradient 0 there: it just has fewer parts.
    const w = shards.map((s) => s.size / total);
    let loss = own ? w[0] * own.loss : 0;
    const written = workerReplies.map((r, k) => {
      if (!r) return new Set<number>();
      checkStamp(this.slots[k].grads, r.id, `worker ${k + 1} gradient`);
      loss += w[k + 1] * r.loss;
      return new Set(r.written);
    });
    const grads = new Map<string, tf.Tensor>();
    this.layout.names.forEach((name, i) => {
      const size = tf.util.sizeFromShape(this.layout.shapes[i]);
      const off = this.layout.offsets[i];
      const parts: [Float32Array, number][] = [];
      const mine = own?.grads.get(name);
      if (mine) parts.push([mine, w[0]]);
      written.forEach((set, k) => {
        set.has(i) && parts.push([this.slots[k].grads.data.subarray(off, off + size), w[k + 1]]);
      });
      if (parts.length === 0) return;
      grads.set(name, tf.tensor(weightedSum(parts, size), this.layout.shapes[i], 'float32'));
    });
    return { loss, grads };
  }

  private request(slot: WorkerSlot, batch: B, rng: Generator): Promise<Extract<WorkerMessage, { type: 'grads' }>> {
    if (this.closed) return Promise.reject(new Error('data-parallel: the workers were stopped'));
    if (slot.failed) return Promise.reject(slot.failed);
    const id = ++this.nextId;
    const req: ShardRequest = { id, batch, rng: rng.getState(), weights: this.weightsStamp };
    return new Promise((resolve, reject) => {
      slot.pending = { id, resolve, reject };
      slot.worker.postMessage(req);
    });
  }

  private removeSignalHandlers(): void {
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
  }

  /** Stops every worker (idempotent). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.removeSignalHandlers();
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
    await this.onnx?.close();
  }
}

/** Σ weight · values; the first two parts in one pass (the usual 2 shards: ~2x a pass per part). */
function weightedSum(parts: [Float32Array, number][], size: number): Float32Array {
  const sum = new Float32Array(size);
  const [a, wa] = parts[0];
  if (parts.length === 1) {
    for (let j = 0; j < size; j++) sum[j] = wa * a[j];
    return sum;
  }
  const [b, wb] = parts[1];
  for (let j = 0; j < size; j++) sum[j] = wa * a[j] + wb * b[j];
  for (const [g, w] of parts.slice(2)) for (let j = 0; j < size; j++) sum[j] += w * g[j];
  return sum;
}

/** Routes a worker's messages to its slot; resolves once it is ready, rejects if it fails first. */
function watchWorker(slot: WorkerSlot, index: number, workers: number, onFallback: (why: string) => void): Promise<{ backend: string; threads: number }> {
  return new Promise((resolve, reject) => {
    let started = false;
    const fail = (e: Error) => {
      if (slot.failed) return;
      slot.failed = e;
      slot.pending?.reject(e);
      slot.pending = undefined;
      if (!started) reject(e);
    };
    slot.worker.on('message', (m: WorkerMessage) => {
      if (m.type === 'ready') {
        started = true;
        resolve({ backend: m.backend, threads: m.threads });
      } else if (m.type === 'fallback') {
        onFallback(m.why);
      } else if (m.type === 'grads' && slot.pending?.id === m.id) {
        const p = slot.pending;
        slot.pending = undefined;
        p.resolve(m);
      }
    });
    slot.worker.on('error', (e: Error) => fail(new Error(`data-parallel worker ${index} of ${workers} failed${started ? '' : ' to start'}: ${e.message}`)));
    slot.worker.on('exit', (code) => fail(new Error(`data-parallel worker ${index} of ${workers} exited (code ${code})`)));
  });
}
