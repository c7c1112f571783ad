/**
 * The speed benchmark of ../shared/bench/ldm-small.json: builds exactly the shapes that file
 * describes (VAE, U-Net, noise schedule) and times the figures its `measure.figures` names, each
 * the median of `repeat` timed runs after warm-up, through the same code paths training and
 * sampling use:
 *
 *   vae_train_step_ms    the VAE stage's loss (src/train/stages.ts) + AdamW.step at trainBatch
 *   unet_train_step_ms   the U-Net stage's epsilon loss (trainingTargets, unet.apply, weightedMse)
 *                        + AdamW.step at trainBatch, random context [B, 77, 512]
 *                        (both on random data; with `workers` > 1 data-parallel, data-parallel.ts;
 *                        with runtime 'onnx' the gradients by onnxruntime, src/onnx/gradients.ts)
 *   unet_forward_ms      one unet.apply at 2 x sampleBatch with a raw context (as guidance runs;
 *                        with runtime 'onnx', the traced graph in onnxruntime)
 *   sample_images_per_s  sampleLatents (50 guided DDIM steps) + vae.decodeLatents for sampleBatch
 *                        images; the conditioning is given, text encoding is excluded
 *
 * plus, for information, the U-Net forward with the context K/V precomputed (what sampleLatents
 * actually runs per step), peak RSS, and on wasm the heap high-water mark against the 4 GiB cap
 * of 32-bit WebAssembly memory.
 *
 * tfjs-wasm does not throw when its heap cannot grow: `_malloc` returns 0 and the tensor is
 * written over address 0. On wasm the benchmark therefore wraps `_malloc` so that a failed
 * allocation stops the figure with a clear "wasm heap exhausted" message instead of reporting the
 * speed of corrupted memory.
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, readFileSync } from 'node:fs';
import type { BackendInfo } from '../backend/index.js';
import { type ParamStore, type StagedLoss, disposeGrads, stagedLossFn } from '../nn/params.js';
import { OnnxGradients } from '../onnx/gradients.js';
import { AdamW } from '../optim/adamw.js';
import { OnnxUNet } from '../onnx/unet.js';
import { type Runtime, describeUNetRuntime } from '../onnx/runtime.js';
import type { IndexBatch } from '../data/in-memory.js';
import { DataParallel, type GradientSource, type ReplicaSpec, batchGradients, checkWorkers } from '../train/data-parallel.js';
import { sampleLatents } from '../pipeline/sample.js';
import { type UnetShardTask, type VaeShardTask, unetReplicaSpec, unetStagedLoss, vaeReplicaSpec, vaeStagedLoss } from '../train/stages.js';
import { Generator } from '../random/generator.js';
import { type SchedulerConfig, createScheduler, parseSchedulerConfig, sampleTimesteps } from '../schedulers/index.js';
import { UNet2DCondition } from '../unet/unet2d-condition.js';
import { type UNetConfig, unetConfigFromLdmSmall } from '../unet/config.js';
import { AutoencoderKL } from '../vae/autoencoder-kl.js';
import { type VaeConfig, vaeConfigFromLdmSmall } from '../vae/config.js';
import { ConfigChecker } from '../checkpoint/config.js';
import { yieldToEventLoop } from '../backend/event-loop.js';

export const FIGURE_NAMES = ['vae_train_step_ms', 'unet_train_step_ms', 'unet_forward_ms', 'sample_images_per_s'] as const;
export type FigureName = (typeof FIGURE_NAMES)[number];

/** 32-bit WebAssembly memory: tfjs-wasm's threaded build declares maximum 4294967296 bytes. */
export const WASM_HEAP_CAP = 4 * 1024 ** 3;

export interface BenchMeasure {
  trainBatch: number;
  optimizer: string;
  learningRate: number;
  sampleBatch: number;
  sampleSteps: number;
  sampler: string;
  guidanceScale: number;
  figures: string[];
}

export interface BenchSpec {
  name: string;
  file: string;
  vae: VaeConfig;
  unet: UNetConfig;
  scheduler: SchedulerConfig;
  image: { height: number; width: number; channels: number };
  measure: BenchMeasure;
  /** Figure names, in the file's order (the part of each `figures` entry before ':'). */
  figures: FigureName[];
}

/**
 * The `diffusion` section of ldm-small.json as a SchedulerConfig (DDIM with diffusers' defaults:
 * "leading" spacing, steps offset 0, final alpha 1, eta 0, as peer_torch.py samples).
 */
export function schedulerConfigFromLdmSmall(json: unknown): SchedulerConfig {
  const d = check.object((json as { diffusion?: unknown } | null)?.diffusion, 'diffusion');
  check.known(d, ['trainSteps', 'betaSchedule', 'betaStart', 'betaEnd', 'prediction'], 'diffusion');
  return parseSchedulerConfig({
    type: 'ddim',
    numTrainTimesteps: d.trainSteps,
    betaSchedule: d.betaSchedule,
    betaStart: d.betaStart,
    betaEnd: d.betaEnd,
    predictionType: d.prediction,
    timestepSpacing: 'leading',
    stepsOffset: 0,
    setAlphaToOne: true,
    eta: 0,
  });
}

const check = new ConfigChecker('bench config');

/** Reads and validates an ldm-small.json-style file. */
export function loadBenchSpec(file: string): BenchSpec {
  if (!existsSync(file)) throw new Error(`bench config ${file} does not exist; pass --config PATH (the ldm-small.json of the shared bench folder)`);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`bench config ${file}: ${(e as Error).message}`);
  }
  const vae = vaeConfigFromLdmSmall(json);
  const unet = unetConfigFromLdmSmall(json);
  const scheduler = schedulerConfigFromLdmSmall(json);
  const image = check.object(json.image, 'image') as unknown as BenchSpec['image'];
  const m = check.object(json.measure, 'measure') as unknown as BenchMeasure;
  const BIG = Number.MAX_SAFE_INTEGER;
  check.int(m.trainBatch, 'measure.trainBatch', 1, BIG);
  check.int(m.sampleBatch, 'measure.sampleBatch', 1, BIG);
  check.int(m.sampleSteps, 'measure.sampleSteps', 1, BIG);
  check.oneOf(['adamw'], m.optimizer, 'measure.optimizer');
  check.oneOf(['ddim'], m.sampler, 'measure.sampler');
  check.num(m.learningRate, 'measure.learningRate', (x) => x > 0, 'a number > 0');
  check.num(m.guidanceScale, 'measure.guidanceScale', (x) => x >= 0, 'a number >= 0');
  if (!Array.isArray(m.figures) || m.figures.length === 0) check.fail('measure.figures', m.figures, 'a non-empty list of figures');
  const figures = m.figures.map((s, i) => check.oneOf(FIGURE_NAMES, String(s).split(':')[0].trim(), `measure.figures[${i}]`));
  const f = vae.downsampleFactor;
  if (image.height / f !== unet.sampleSize || image.width / f !== unet.sampleSize) {
    throw new Error(`bench config: image ${image.height}x${image.width} / downsampleFactor ${f} must equal unet.sampleSize ${unet.sampleSize}`);
  }
  if (image.channels !== vae.imageChannels) throw new Error(`bench config: image.channels ${image.channels} != vae imageChannels ${vae.imageChannels}`);
  return { name: String(json.name ?? file), file, vae, unet, scheduler, image, measure: m, figures };
}

// ----------------------------------------------------------------------------- memory

interface WasmModuleLike {
  _malloc: (n: number) => number;
  HEAPU8?: Uint8Array;
  wasmMemory?: WebAssembly.Memory;
}

function wasmModule(): WasmModuleLike | undefined {
  if (tf.getBackend() !== 'wasm') return undefined;
  return (tf.backend() as unknown as { wasm?: WasmModuleLike }).wasm;
}

/** Current size of the wasm heap in bytes (it only grows: the high-water mark), or undefined off wasm. */
export function wasmHeapBytes(): number | undefined {
  const m = wasmModule();
  if (!m) return undefined;
  if (m.wasmMemory) return m.wasmMemory.buffer.byteLength;
  return m.HEAPU8?.buffer.byteLength;
}

export class WasmHeapExhausted extends Error {}

/** JS-side allocations of tfjs-wasm tensors (what `_malloc` / `_free` see), for the heap report. */
export interface WasmAllocStats {
  liveBytes: number;
  peakLiveBytes: number;
  largestBytes: number;
}

const allocStats: WasmAllocStats = { liveBytes: 0, peakLiveBytes: 0, largestBytes: 0 };

/** Live / peak tensor bytes on the wasm heap since the last reset (zeros off wasm or unguarded). */
export function wasmAllocStats(): WasmAllocStats {
  return { ...allocStats };
}

export function resetWasmAllocPeak(): void {
  allocStats.peakLiveBytes = allocStats.liveBytes;
  allocStats.largestBytes = 0;
}

/**
 * Makes a failed tfjs-wasm allocation throw (it would otherwise return offset 0 and the tensor
 * would silently overwrite low memory), and counts live tensor bytes. Idempotent; returns false
 * off wasm. Allocations made inside the C++ kernels (XNNPACK scratch) are not seen.
 */
export function guardWasmMalloc(): boolean {
  const m = wasmModule() as (WasmModuleLike & { _free: (p: number) => void; __benchGuard?: boolean }) | undefined;
  if (!m) return false;
  if (m.__benchGuard) return true;
  // Emscripten's export stubs replace themselves on Module at their first call: make that
  // happen now, so the wrappers below stay in place.
  m._free(m._malloc(16));
  const malloc = m._malloc.bind(m);
  const free = m._free.bind(m);
  const sizes = new Map<number, number>();
  m._malloc = (n: number) => {
    const p = malloc(n);
    if (p === 0 && n > 0) {
      const heap = wasmHeapBytes() ?? 0;
      throw new WasmHeapExhausted(
        `wasm heap exhausted: malloc(${fmtBytes(n)}) failed with the heap at ${fmtBytes(heap)} and ${fmtBytes(allocStats.liveBytes)} of live tensors (cap ${fmtBytes(WASM_HEAP_CAP)}, 32-bit WebAssembly memory)`,
      );
    }
    sizes.set(p >>> 0, n);
    allocStats.liveBytes += n;
    allocStats.peakLiveBytes = Math.max(allocStats.peakLiveBytes, allocStats.liveBytes);
    allocStats.largestBytes = Math.max(allocStats.largestBytes, n);
    return p;
  };
  m._free = (p: number) => {
    const n = sizes.get(p >>> 0);
    if (n !== undefined) {
      allocStats.liveBytes -= n;
      sizes.delete(p >>> 0);
    }
    free(p);
  };
  m.__benchGuard = true;
  return true;
}

export function fmtBytes(n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(2)} GiB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(0)} MiB`;
  return `${(n / 1024).toFixed(0)} KiB`;
}

/** Peak resident set size of this process in bytes (resourceUsage().maxRSS is in KiB). */
export function peakRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}

// ----------------------------------------------------------------------------- timing

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Seconds per call: median over `repeat` calls after `warmup` untimed ones, plus the raw times. */
export async function timed(fn: () => Promise<void>, repeat: number, warmup: number, warmupFn = fn): Promise<{ median: number; times: number[] }> {
  for (let i = 0; i < warmup; i++) {
    await yieldToEventLoop();
    await warmupFn();
  }
  const times: number[] = [];
  for (let i = 0; i < repeat; i++) {
    await yieldToEventLoop(); // outside the timed span
    const t0 = performance.now();
    await fn();
    times.push((performance.now() - t0) / 1000);
  }
  return { median: median(times), times };
}

// ----------------------------------------------------------------------------- the benchmark

/** n seeded random numbers: uniform in [-1, 1) or standard normal. */
function randomArray(rng: Generator, n: number, kind: 'uniform' | 'normal'): Float32Array {
  const t = kind === 'normal' ? rng.randn([n]) : rng.rand([n], -1, 1);
  const data = Float32Array.from(t.dataSync());
  t.dispose();
  return data;
}

export interface BenchOptions {
  spec: BenchSpec;
  backend: BackendInfo;
  /** Timed runs per figure (median reported). Default 5. */
  repeat?: number;
  /** Timed runs of the (slow) sampling figure. Default min(repeat, 3). */
  sampleRepeat?: number;
  /** Untimed runs before each figure. Default 2 (sampling: one short run of 2 steps at full batch). */
  warmup?: number;
  /** Override measure.trainBatch / measure.sampleBatch (heap probes). */
  trainBatch?: number;
  sampleBatch?: number;
  /** Only these figures. */
  only?: FigureName[];
  /**
   * What computes the gradients of the training figures and the U-Net of unet_forward_ms,
   * unet_forward_cached_ms and sampling (default 'tfjs'; the CLIs resolve 'auto'; src/onnx). With
   * workers > 1 every training shard runs the runtime on 1 thread.
   */
  runtime?: Runtime;
  /** Data-parallel shards of the training figures (default 1; src/train/data-parallel.ts). */
  workers?: number;
  seed?: number;
  log?: (line: string) => void;
}

export interface FigureResult {
  /** The figure (ms or images/s); undefined when it failed. */
  value?: number;
  unit: 'ms' | 'images/s';
  /** Raw seconds of each timed run. */
  times: number[];
  /** wasm heap after the figure (the heap only grows: a high-water mark). */
  heapBytes?: number;
  /** wasm: the most bytes of tensors alive at once during the figure. */
  peakTensorBytes?: number;
  error?: string;
  heapExhausted?: boolean;
}

export interface BenchResult {
  config: string;
  backend: string;
  threads: number;
  tfjs: string;
  /** What computed the U-Net forward and sampling figures (absent in older results: tfjs). */
  unetRuntime?: Runtime;
  /** What computed the training figures' gradients (absent in older results: tfjs). */
  trainRuntime?: Runtime;
  /** Data-parallel shards of the training figures (absent in older results: 1). */
  trainWorkers?: number;
  /** Set when the training figures come from another run with other threads (mergeBenchResults). */
  trainThreads?: number;
  repeat: number;
  sampleRepeat: number;
  trainBatch: number;
  sampleBatch: number;
  vaeParams: number;
  unetParams: number;
  figures: Partial<Record<FigureName, FigureResult>>;
  /** U-Net forward at 2 x sampleBatch with precomputed cross-attention K/V (what sampling runs per step). */
  extra: { unet_forward_cached_ms?: number };
  peakRssBytes: number;
  /** wasm only. */
  wasmHeap?: { peakBytes: number; capBytes: number; fractionOfCap: number; risk: string };
  notes: string[];
}

/** Runs the benchmark. Every figure is tried; one that fails is reported, not thrown. */
export async function runBench(o: BenchOptions): Promise<BenchResult> {
  const log = o.log ?? ((l: string) => console.error(l));
  const { spec } = o;
  const m = spec.measure;
  const repeat = o.repeat ?? 5;
  const sampleRepeat = o.sampleRepeat ?? Math.min(repeat, 3);
  const warmup = o.warmup ?? 2;
  const B = o.trainBatch ?? m.trainBatch;
  const S = o.sampleBatch ?? m.sampleBatch;
  const figures = spec.figures.filter((f) => !o.only || o.only.includes(f));
  const workers = checkWorkers(o.workers ?? 1);
  const runtime = o.runtime ?? 'tfjs';
  const rng = new Generator(o.seed ?? 0);
  const guarded = guardWasmMalloc();
  const notes: string[] = [];

  const vae = new AutoencoderKL(spec.vae, rng.spawn());
  const unet = new UNet2DCondition(spec.unet, rng.spawn());
  const ddpm = createScheduler({ ...spec.scheduler, type: 'ddpm' });
  const { height: H, width: W, channels: C } = spec.image;
  const h = spec.unet.sampleSize;
  const zc = spec.unet.inChannels;
  const T = spec.unet.contextLength;
  const D = spec.unet.contextDim;
  const result: BenchResult = {
    config: spec.file,
    backend: o.backend.name,
    threads: o.backend.threads,
    tfjs: tf.version.tfjs,
    unetRuntime: runtime,
    trainRuntime: runtime,
    trainWorkers: workers,
    repeat,
    sampleRepeat,
    trainBatch: B,
    sampleBatch: S,
    vaeParams: vae.numParams(),
    unetParams: unet.numParams(),
    figures: {},
    extra: {},
    peakRssBytes: 0,
    notes,
  };
  log(`${o.backend.description}; tfjs ${tf.version.tfjs}; config ${spec.file}`);
  if (o.backend.warning) notes.push(o.backend.warning);
  const onnxUNet = runtime === 'onnx' ? new OnnxUNet(unet) : undefined;
  if (onnxUNet) log(`${describeUNetRuntime('onnx')} (unet_forward_ms, unet_forward_cached_ms, sample_images_per_s); training gradients: onnxruntime-node too`);
  if (workers > 1) log(`training figures: data-parallel over ${workers} workers (${describeShards(runtime)})`);
  log(
    `vae params: ${result.vaeParams.toLocaleString('en-US')}   unet params: ${result.unetParams.toLocaleString('en-US')}   trainBatch ${B}, sampleBatch ${S}`,
  );

  const run = async (
    name: FigureName | 'unet_forward_cached_ms',
    unit: FigureResult['unit'],
    body: () => Promise<{ median: number; times: number[] }>,
    toFigure: (s: number) => number,
  ) => {
    resetWasmAllocPeak();
    const r: FigureResult = { unit, times: [] };
    try {
      const t = await body();
      r.value = round3(toFigure(t.median));
      r.times = t.times.map((x) => Math.round(x * 1e4) / 1e4);
    } catch (e) {
      r.error = (e as Error).message.split('\n')[0];
      r.heapExhausted = e instanceof WasmHeapExhausted || /memory|heap|allocat|OOM/i.test(r.error);
      log(`${name}: FAILED: ${r.error}`);
    }
    r.heapBytes = wasmHeapBytes();
    if (r.heapBytes !== undefined && guarded) r.peakTensorBytes = wasmAllocStats().peakLiveBytes;
    if (r.value !== undefined) {
      const mem = r.heapBytes ? `   wasm heap ${fmtBytes(r.heapBytes)}${r.peakTensorBytes ? `, peak live tensors ${fmtBytes(r.peakTensorBytes)}` : ''}` : '';
      log(`${name} = ${r.value}   (times s: [${r.times.join(', ')}])${mem}`);
    }
    return r;
  };

  try {
    for (const name of figures) {
      const startTensors = tf.memory().numTensors;
      await runFigure(name);
      const leaked = tf.memory().numTensors - startTensors;
      if (leaked > 0 && !result.figures[name]?.error) notes.push(`${name}: ${leaked} tensors still allocated after the figure`);
    }
  } finally {
    onnxUNet?.dispose();
    vae.dispose();
    unet.dispose();
  }

  /**
   * One optimizer step per timed run: gradients (onnxruntime with runtime 'onnx', else tfjs;
   * data-parallel over `workers`, 1 thread each) + AdamW. The warm-up runs trace and load the ONNX graph.
   */
  async function trainStepFigure<Bt extends object>(
    name: FigureName,
    store: ParamStore,
    replica: ReplicaSpec,
    staged: StagedLoss<Bt>,
    batch: Bt,
  ): Promise<FigureResult> {
    const opt = new AdamW(store, { lr: m.learningRate });
    const probe = store.entries()[0][1];
    const loss = stagedLossFn(staged);
    let source: GradientSource<Bt> | undefined;
    const step = async () => {
      source?.syncWeights();
      const { grads } = await batchGradients(store, loss, batch, rng, source);
      opt.step(grads);
      disposeGrads(grads);
      await probe.data(); // the update has run (synchronous backends return at once)
    };
    try {
      const body = async () => {
        if (workers > 1)
          source = await DataParallel.start({ workers, replica, store, loss, onnx: runtime === 'onnx' ? { loss: staged, fallback: false } : undefined, log });
        else if (runtime === 'onnx') source = new OnnxGradients(store, staged);
        // onnxruntime's first runs of a new session grow its memory arena (1-2 s each at batch
        // 64, up to four runs after another figure's session): warm up longer.
        return timed(step, repeat, runtime === 'onnx' ? Math.max(warmup, 4) : warmup);
      };
      return await run(name, 'ms', body, (s) => 1000 * s);
    } finally {
      await source?.close();
      opt.dispose();
    }
  }

  async function runFigure(name: FigureName): Promise<void> {
    if (name === 'vae_train_step_ms' || name === 'unet_train_step_ms') {
      // Random data through the stages' own loss code (src/train/stages.ts), one batch of B.
      const indices = Array.from({ length: B }, (_, i) => i);
      if (name === 'vae_train_step_ms') {
        const task: VaeShardTask = { vae: vae.config, data: { images: randomArray(rng, B * H * W * C, 'uniform'), shape: [B, H, W, C] } };
        const batch: IndexBatch = { indices, flips: new Array<boolean>(B).fill(false), captionChoice: new Array<number>(B).fill(0) };
        result.figures[name] = await trainStepFigure(name, vae.store, vaeReplicaSpec(task), vaeStagedLoss(task, vae), batch);
      } else {
        // Context given per sample ([B, 77, 512] random), no conditioning dropout.
        const task: UnetShardTask = {
          unet: unet.config,
          scheduler: spec.scheduler,
          lossWeighting: { kind: 'mse' },
          conditioningDropout: 0,
          latents: { shape: [B, h, h, zc], data: randomArray(rng, B * h * h * zc, 'normal') },
          captions: { table: { shape: [B, T, D], data: randomArray(rng, B * T * D, 'normal') }, uncond: randomArray(rng, T * D, 'normal') },
        };
        result.figures[name] = await trainStepFigure(name, unet.store, unetReplicaSpec(task), unetStagedLoss(task, unet, undefined), {
          indices,
          rows: indices,
        });
      }
    } else if (name === 'unet_forward_ms') {
      const x = tf.tidy(() => rng.randn([2 * S, h, h, zc])) as tf.Tensor4D;
      const t = tf.tensor1d(Array.from(sampleTimesteps(rng, 2 * S, ddpm.numTrainTimesteps)), 'float32');
      const context = tf.tidy(() => rng.randn([2 * S, T, D])) as tf.Tensor3D;
      const forward = async () => {
        const y = onnxUNet ? await onnxUNet.apply(x, t, context) : tf.tidy(() => unet.apply(x, t, context));
        await y.data();
        y.dispose();
      };
      const cache = unet.precomputeContext(context);
      const forwardCached = async () => {
        const y = onnxUNet ? await onnxUNet.apply(x, t, cache) : tf.tidy(() => unet.apply(x, t, cache));
        await y.data();
        y.dispose();
      };
      try {
        result.figures[name] = await run(
          name,
          'ms',
          () => timed(forward, repeat, warmup),
          (s) => 1000 * s,
        );
        const c = await run(
          'unet_forward_cached_ms',
          'ms',
          () => timed(forwardCached, repeat, 1),
          (s) => 1000 * s,
        );
        result.extra.unet_forward_cached_ms = c.value;
      } finally {
        tf.dispose([x, t, context]);
        cache.dispose();
      }
    } else if (name === 'sample_images_per_s') {
      const cond = { context: tf.tidy(() => rng.randn([S, T, D])) as tf.Tensor3D };
      const uncond = { context: tf.tidy(() => rng.randn([S, T, D])) as tf.Tensor3D };
      const sample = (steps: number) => async () => {
        const sched = createScheduler({ ...spec.scheduler, type: 'ddim' });
        sched.setTimesteps(steps);
        const loop = { scheduler: sched, cond, uncond, guidanceScale: m.guidanceScale, shape: [S, h, h, zc] as [number, number, number, number], rng };
        const z = onnxUNet ? await sampleLatents({ ...loop, unet: onnxUNet }) : await sampleLatents({ ...loop, unet });
        const images = vae.decodeLatents(z);
        z.dispose();
        await images.data();
        images.dispose();
      };
      try {
        result.figures[name] = await run(
          name,
          'images/s',
          () => timed(sample(m.sampleSteps), sampleRepeat, warmup > 0 ? 1 : 0, sample(2)),
          (s) => S / s,
        );
      } finally {
        tf.dispose([cond.context, uncond.context]);
      }
    }
  }

  result.peakRssBytes = peakRssBytes();
  if (o.backend.name === 'wasm') {
    const peak = wasmHeapBytes() ?? 0;
    const failed = Object.values(result.figures).some((f) => f?.heapExhausted);
    const frac = peak / WASM_HEAP_CAP;
    const risk = failed
      ? `EXHAUSTED: a figure failed for lack of wasm heap (${fmtBytes(peak)} of the ${fmtBytes(WASM_HEAP_CAP)} cap); training at this batch size cannot run on wasm`
      : frac < 0.25
        ? `low: peak ${fmtBytes(peak)} is ${(100 * frac).toFixed(0)}% of the ${fmtBytes(WASM_HEAP_CAP)} cap at trainBatch ${B} / 2 x sampleBatch ${2 * S}`
        : frac < 0.6
          ? `moderate: peak ${fmtBytes(peak)} is ${(100 * frac).toFixed(0)}% of the ${fmtBytes(WASM_HEAP_CAP)} cap; about ${Math.floor(1 / frac)}x these batches would exhaust it`
          : `HIGH: peak ${fmtBytes(peak)} is ${(100 * frac).toFixed(0)}% of the ${fmtBytes(WASM_HEAP_CAP)} cap; a larger batch or model will not fit`;
    result.wasmHeap = { peakBytes: peak, capBytes: WASM_HEAP_CAP, fractionOfCap: Math.round(frac * 1000) / 1000, risk };
    if (!guarded) notes.push('could not guard wasm _malloc: a heap exhaustion may show up as corrupted results instead of an error');
  }
  return result;
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function describeShards(runtime: Runtime): string {
  return runtime === 'onnx' ? '1 onnxruntime thread each' : '1 wasm thread each';
}

/** Human-readable report (the figures in the file's order, then memory). */
export function formatBench(r: BenchResult): string {
  const lines: string[] = [];
  lines.push(
    `ldm-small benchmark: backend ${r.backend} (${r.threads} thread${r.threads === 1 ? '' : 's'}), tfjs ${r.tfjs}, median of ${r.repeat} (sampling: ${r.sampleRepeat}) after warm-up`,
  );
  if (r.unetRuntime === 'onnx') lines.push('  U-Net of unet_forward (raw and K/V cached) and sampling: onnxruntime-node on the CPU');
  if (r.trainRuntime === 'onnx') lines.push('  training figures: gradients by onnxruntime-node on the CPU (traced from tfjs), AdamW by tfjs');
  if ((r.trainWorkers ?? 1) > 1) lines.push(`  training figures: data-parallel over ${r.trainWorkers} workers (${describeShards(r.trainRuntime ?? 'tfjs')})`);
  lines.push(
    `  vae params ${r.vaeParams.toLocaleString('en-US')}, unet params ${r.unetParams.toLocaleString('en-US')}, trainBatch ${r.trainBatch}, sampleBatch ${r.sampleBatch}`,
  );
  for (const [name, f] of Object.entries(r.figures)) {
    if (!f) continue;
    const mem = f.heapBytes ? `   (wasm heap ${fmtBytes(f.heapBytes)}${f.peakTensorBytes ? `, peak live tensors ${fmtBytes(f.peakTensorBytes)}` : ''})` : '';
    lines.push(f.error ? `  ${name.padEnd(22)} FAILED: ${f.error}` : `  ${name.padEnd(22)} ${String(f.value).padStart(10)} ${f.unit.padEnd(8)}${mem}`);
  }
  if (r.extra.unet_forward_cached_ms !== undefined)
    lines.push(`  ${'(unet_forward, K/V cached'.padEnd(22)} ${String(r.extra.unet_forward_cached_ms).padStart(10)} ms: what each sampling step runs)`);
  lines.push(`  peak RSS ${fmtBytes(r.peakRssBytes)}`);
  if (r.wasmHeap) lines.push(`  wasm heap: ${r.wasmHeap.risk}`);
  for (const n of r.notes) lines.push(`  note: ${n}`);
  return lines.join('\n');
}
