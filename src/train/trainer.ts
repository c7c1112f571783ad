/**
 * The training loop shared by every stage (VAE, U-Net, the attribute classifier; the toy 2-D
 * model keeps its own in-memory loop, src/toy/train.ts):
 * gradient accumulation, clipping, AdamW with a learning-rate schedule, EMA, a JSONL loss log,
 * NaN/Inf detection, and checkpoints that resume exactly.
 *
 * A checkpoint is a folder `<runDir>/checkpoints/step-000100/` holding the weights, the EMA
 * shadow and the optimizer state (safetensors) and `state.json` (step, RNG state, data position).
 * It is written under a temporary name and renamed into place, then `<runDir>/checkpoints/latest`
 * is rewritten atomically: an interrupted save never replaces a good checkpoint. Resuming
 * restores everything, so an interrupted run ends where an uninterrupted one would.
 *
 * `parallel: { workers: N, replica }` with N > 1 computes every micro-batch data-parallel
 * (data-parallel.ts): N shards, shard 0 here and the others in worker threads, the gradient
 * averaged by shard size; clipping, AdamW, EMA and checkpoints stay here. Each shard's noise
 * comes from a Generator spawned from the trainer's, so such a run, and its resume, is exact too.
 * `onnx: { loss }` computes every micro-batch's gradients with onnxruntime instead
 * (src/onnx/gradients.ts), from the staged form of the same loss: same noise, same data; with
 * both, every shard runs onnxruntime on 1 thread.
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { readSafetensors, writeSafetensors } from '../checkpoint/io.js';
import { crashPoint, readJson, replaceDirAtomic, writeFileAtomic, writeJsonAtomic } from '../checkpoint/files.js';
import { type ParamStore, type StagedLoss, disposeGrads } from '../nn/params.js';
import { AdamW, type AdamWConfig, accumulateGrads, clipGradNormAsync } from '../optim/adamw.js';
import { EMA } from '../optim/ema.js';
import { type LrSchedule, learningRateAt, validateLrSchedule } from '../optim/lr.js';
import { Generator, type GeneratorState } from '../random/generator.js';
import { OnnxGradients, fallbackLine } from '../onnx/gradients.js';
import { DataParallel, type GradientSource, type ReplicaSpec, batchGradients, checkWorkers, defaultWorkers } from './data-parallel.js';
import { currentBackend } from '../backend/index.js';
import { yieldToEventLoop } from '../backend/event-loop.js';
import { type RuntimeChoice, defaultOnnxThreads, resolveRuntime } from '../onnx/runtime.js';

/** A source of batches whose position can be saved and restored (for exact resume). */
export interface BatchSource<B> {
  next(): B | Promise<B>;
  position(): unknown;
  restore(position: unknown): void;
  /** Frees a batch's tensors once the step is done. */
  release?(batch: B): void;
}

export interface TrainerOptions<B> {
  /** Folder for checkpoints and logs. */
  runDir: string;
  /** Every trainable parameter (a ParamStore.union view when several components train together). */
  store: ParamStore;
  data: BatchSource<B>;
  /** Scalar loss of one micro-batch; called inside the gradient tape. Draw all noise from rng. */
  loss: (batch: B, rng: Generator) => tf.Scalar;
  totalSteps: number;
  seed: number;
  lr: LrSchedule;
  adamw?: Omit<AdamWConfig, 'lr'>;
  /** Micro-batches per optimizer step. */
  accumulate?: number;
  /** Max global gradient norm; 0 or undefined disables clipping. */
  clipGradNorm?: number;
  /** EMA decay; undefined or 0 disables EMA. */
  emaDecay?: number;
  checkpointEvery?: number;
  keepCheckpoints?: number;
  /** Continue from `<runDir>/checkpoints/latest` when it exists. */
  resume?: boolean;
  /** Called after each checkpoint is in place (e.g. to export a pipeline folder). */
  onCheckpoint?: (info: CheckpointInfo) => Promise<void> | void;
  /** Called every `sampleEvery` steps (e.g. to render a validation grid). */
  onSample?: (step: number, ema: EMA | undefined) => Promise<void> | void;
  sampleEvery?: number;
  /** Called after every optimizer step (progress display). */
  onStep?: (s: StepLog) => void;
  /** Stop after this many optimizer steps in this call (tests simulate an interruption). */
  stopAfter?: number;
  /**
   * Data parallelism: `workers` shards per micro-batch (1 = off), the workers' replicas built
   * as `replica` says, whose loss must be `loss`. Batches must then be objects of per-sample arrays.
   */
  parallel?: { workers: number; replica: ReplicaSpec };
  /**
   * Gradients by onnxruntime (src/onnx/gradients.ts) from this staged form of `loss` (the same
   * loss: same inputs, same noise). With `parallel.workers` > 1 every shard runs onnxruntime
   * with 1 thread (`threads` then does not apply).
   */
  onnx?: {
    loss: StagedLoss<B>;
    threads?: number;
    /** A loss that cannot be exported trains on tfjs instead (with a log line) rather than stopping the run. */
    fallback?: boolean;
  };
  /** Start-up lines (default console.error). */
  log?: (line: string) => void;
  /**
   * What the non-finite-loss message advises, in the caller's terms (its flags or config keys);
   * default: lower the learning rate or clip the gradient norm.
   */
  nonFiniteAdvice?: string;
}

export interface StepLog {
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
  seconds: number;
}

export interface CheckpointInfo {
  dir: string;
  step: number;
  store: ParamStore;
  ema?: EMA;
}

export interface TrainResult {
  step: number;
  lastLoss: number;
  stopped: 'done' | 'stopAfter' | 'non-finite';
  message?: string;
  ema?: EMA;
  optimizer: AdamW;
}

interface SavedState {
  version: 1;
  step: number;
  rng: GeneratorState;
  data: unknown;
  optimizerStep: number;
  emaUpdates: number;
  /** Data-parallel shards per micro-batch (absent: 1). */
  workers?: number;
}

export const CHECKPOINTS_DIR = 'checkpoints';
const LOG_NAME = 'loss.jsonl';

function stepDirName(step: number): string {
  return `step-${String(step).padStart(6, '0')}`;
}

/** The latest complete checkpoint folder of a run, or undefined. */
export function latestCheckpoint(runDir: string): string | undefined {
  const root = path.join(runDir, CHECKPOINTS_DIR);
  const pointer = path.join(root, 'latest');
  if (!existsSync(pointer)) return undefined;
  const name = readFileSync(pointer, 'utf8').trim();
  const dir = path.join(root, name);
  if (!existsSync(path.join(dir, 'state.json'))) {
    throw new Error(`checkpoint pointer ${pointer} names '${name}', but ${dir}/state.json is missing`);
  }
  return dir;
}

export function validateTrainerOptions<B>(o: TrainerOptions<B>): void {
  const int = (name: string, v: number | undefined, min: number) => {
    if (v !== undefined && !(Number.isInteger(v) && v >= min)) throw new Error(`${name} must be an integer >= ${min}, got ${v}`);
  };
  int('steps', o.totalSteps, 1);
  int('accumulate', o.accumulate, 1);
  int('checkpoint-every', o.checkpointEvery, 1);
  int('keep-checkpoints', o.keepCheckpoints, 1);
  int('sample-every', o.sampleEvery, 1);
  int('seed', o.seed, 0);
  if (o.parallel) checkWorkers(o.parallel.workers);
  if (o.clipGradNorm !== undefined && !(o.clipGradNorm >= 0)) throw new Error(`clip-grad-norm must be >= 0 (0 = off), got ${o.clipGradNorm}`);
  if (o.emaDecay !== undefined && !(o.emaDecay >= 0 && o.emaDecay < 1)) throw new Error(`ema-decay must be in [0, 1) (0 = off), got ${o.emaDecay}`);
  validateLrSchedule(o.lr);
}

/**
 * What computes a run's gradients (the trainer's `onnx` and `parallel` options) from the user's
 * choice; logs which and why under `stage`. Runtime unset: auto; workers unset: defaultWorkers
 * (one 1-thread onnxruntime shard per core with onnx, else 1).
 */
export async function gradientSetup<B>(
  stage: string,
  t: { runtime?: RuntimeChoice; workers?: number },
  loss: StagedLoss<B>,
  replica: ReplicaSpec,
  log: (line: string) => void,
): Promise<{ onnx?: { loss: StagedLoss<B>; fallback: boolean }; parallel: { workers: number; replica: ReplicaSpec } }> {
  const choice = t.runtime ?? 'auto';
  const { runtime, why } = await resolveRuntime(choice, currentBackend() ?? { gpu: false, name: 'tfjs' });
  const cores = defaultOnnxThreads();
  let workers = t.workers ?? defaultWorkers(runtime);
  if (workers > 1 && currentBackend()?.name === 'webgpu') {
    // Each worker would start its own Dawn device on the same adapter: no gain on a GPU.
    log(`${stage}: ${workers} data-parallel workers asked for, 1 used: the webgpu backend trains in one process, on one GPU device`);
    workers = 1;
  }
  const auto = t.workers === undefined && workers > 1 ? ` (one per core; --workers 1: one session on ${cores} threads)` : '';
  const how =
    runtime === 'onnx'
      ? `onnxruntime-node on the CPU${workers > 1 ? `, data-parallel over ${workers} shards of 1 thread${auto}` : ` (${cores} thread${cores === 1 ? '' : 's'})`}, loss and backward pass traced from tfjs`
      : `tfjs (${workers > 1 ? `data-parallel over ${workers} workers` : 'the backend above'})`;
  log(`${stage} gradients: ${how}${why ? ` (${why})` : ''}`);
  // Asked for by auto only: a loss the exporter cannot translate then trains on tfjs.
  return { onnx: runtime === 'onnx' ? { loss, fallback: choice === 'auto' } : undefined, parallel: { workers, replica } };
}

export async function train<B>(o: TrainerOptions<B>): Promise<TrainResult> {
  validateTrainerOptions(o);
  mkdirSync(path.join(o.runDir, CHECKPOINTS_DIR), { recursive: true });
  const workers = o.parallel?.workers ?? 1;
  const source: GradientSource<B> | undefined =
    workers > 1
      ? ((await DataParallel.start({
          workers,
          replica: o.parallel!.replica,
          store: o.store,
          loss: o.loss as (b: object, rng: Generator) => tf.Scalar,
          onnx: o.onnx && { loss: o.onnx.loss as StagedLoss<object>, fallback: o.onnx.fallback ?? false },
          log: o.log,
        })) as unknown as GradientSource<B>)
      : o.onnx
        ? new OnnxGradients(o.store, o.onnx.loss, {
            threads: o.onnx.threads,
            onFallback: o.onnx.fallback ? (why) => (o.log ?? ((l: string) => console.error(l)))(fallbackLine(why)) : undefined,
          })
        : undefined;
  try {
    return await trainLoop(o, source);
  } finally {
    await source?.close();
  }
}

async function trainLoop<B>(o: TrainerOptions<B>, pool: GradientSource<B> | undefined): Promise<TrainResult> {
  const accumulate = o.accumulate ?? 1;
  const checkpointEvery = o.checkpointEvery ?? o.totalSteps;
  const keep = o.keepCheckpoints ?? 2;
  const optimizer = new AdamW(o.store, { lr: o.lr.base, ...o.adamw });
  const ema = o.emaDecay ? new EMA(o.store, o.emaDecay) : undefined;
  let rng = new Generator(o.seed);
  let step = 0;

  const resumeFrom = o.resume ? latestCheckpoint(o.runDir) : undefined;
  if (resumeFrom) {
    const state = readJson(path.join(resumeFrom, 'state.json'), 'training state') as SavedState;
    o.store.loadArrays(readSafetensors(path.join(resumeFrom, 'weights.safetensors')).tensors, `checkpoint ${resumeFrom}`);
    const opt = readSafetensors(path.join(resumeFrom, 'optimizer.safetensors')).tensors;
    optimizer.loadState(state.optimizerStep, opt);
    if (ema) {
      const emaFile = path.join(resumeFrom, 'ema.safetensors');
      if (!existsSync(emaFile)) throw new Error(`checkpoint ${resumeFrom} has no EMA weights, but this run uses EMA (ema-decay ${o.emaDecay})`);
      ema.load(state.emaUpdates, readSafetensors(emaFile).tensors);
    }
    rng = Generator.fromState(state.rng);
    o.data.restore(state.data);
    const was = state.workers ?? 1;
    const now = o.parallel?.workers ?? 1;
    if (was !== now) {
      (o.log ?? ((l: string) => console.error(l)))(
        `resume: this checkpoint was trained with ${was} data-parallel worker(s), this run uses ${now}: the noise streams differ from here on, so the run will not match an uninterrupted one exactly`,
      );
    }
    step = state.step;
    truncateLog(path.join(o.runDir, LOG_NAME), step);
  } else if (existsSync(path.join(o.runDir, LOG_NAME))) {
    rmSync(path.join(o.runDir, LOG_NAME));
  }

  const saveCheckpoint = async () => {
    const root = path.join(o.runDir, CHECKPOINTS_DIR);
    const name = stepDirName(step);
    const final = path.join(root, name);
    const tmp = path.join(root, `.${name}.partial-${process.pid}`);
    try {
      rmSync(tmp, { recursive: true, force: true });
      mkdirSync(tmp, { recursive: true });
      writeSafetensors(path.join(tmp, 'weights.safetensors'), await o.store.toArrays(), { step: String(step) });
      const opt = await optimizer.stateArrays();
      writeSafetensors(path.join(tmp, 'optimizer.safetensors'), opt.arrays, { step: String(opt.step) });
      if (ema) writeSafetensors(path.join(tmp, 'ema.safetensors'), await ema.toArrays(), { updates: String(ema.updates) });
      const state: SavedState = {
        version: 1,
        step,
        rng: rng.getState(),
        data: o.data.position(),
        optimizerStep: optimizer.stepCount,
        emaUpdates: ema?.updates ?? 0,
        workers: o.parallel?.workers ?? 1,
      };
      writeJsonAtomic(path.join(tmp, 'state.json'), state);
      crashPoint('checkpoint-written');
      replaceDirAtomic(tmp, final);
      crashPoint('checkpoint-placed');
      writeFileAtomic(path.join(root, 'latest'), `${name}\n`);
    } catch (e) {
      rmSync(tmp, { recursive: true, force: true });
      const kept = latestCheckpoint(o.runDir);
      throw new Error(
        `writing checkpoint ${final} failed: ${(e as Error).message}; ${kept ? `the last complete checkpoint is ${kept} (--resume continues from it)` : 'no checkpoint was written yet'}`,
      );
    }
    // Keep the newest `keep` checkpoints.
    const all = readdirSync(root)
      .filter((d) => /^step-\d+$/.test(d))
      .sort();
    for (const d of all.slice(0, Math.max(0, all.length - keep))) rmSync(path.join(root, d), { recursive: true, force: true });
    await o.onCheckpoint?.({ dir: final, step, store: o.store, ema });
  };

  let lastLoss = NaN;
  let doneThisCall = 0;
  while (step < o.totalSteps) {
    await yieldToEventLoop();
    const t0 = performance.now();
    const lr = learningRateAt(step, o.lr);
    const acc = new Map<string, tf.Tensor>();
    let lossSum = 0;
    pool?.syncWeights();
    for (let micro = 0; micro < accumulate; micro++) {
      const batch = await o.data.next();
      const { loss, grads } = await batchGradients(o.store, o.loss, batch, rng, pool);
      lossSum += loss;
      if (accumulate === 1) {
        for (const [k, g] of grads) acc.set(k, g);
      } else {
        accumulateGrads(acc, grads);
        disposeGrads(grads);
      }
      o.data.release?.(batch);
    }
    if (accumulate > 1) {
      for (const [k, g] of acc) {
        acc.set(k, tf.div(g, accumulate));
        g.dispose();
      }
    }
    const loss = lossSum / accumulate;
    const gradNorm = o.clipGradNorm ? await clipGradNormAsync(acc, o.clipGradNorm) : NaN;
    if (!Number.isFinite(loss) || (o.clipGradNorm && !Number.isFinite(gradNorm))) {
      disposeGrads(acc);
      const last = latestCheckpoint(o.runDir);
      const message =
        `training stopped at step ${step + 1}: loss is ${loss}${o.clipGradNorm ? `, gradient norm ${gradNorm}` : ''} (not finite). ` +
        (last ? `The last good checkpoint is kept: ${last}. ` : 'No checkpoint was written yet. ') +
        (o.nonFiniteAdvice ?? 'Try a lower learning rate or gradient clipping.');
      return { step, lastLoss: loss, stopped: 'non-finite', message, ema, optimizer };
    }
    optimizer.step(acc, lr);
    disposeGrads(acc);
    ema?.update();
    step++;
    doneThisCall++;
    lastLoss = loss;
    const seconds = (performance.now() - t0) / 1000;
    const log: StepLog = { step, loss, lr, gradNorm, seconds };
    writeFileSync(path.join(o.runDir, LOG_NAME), `${JSON.stringify(log)}\n`, { flag: 'a' });
    o.onStep?.(log);
    if (step % checkpointEvery === 0 || step === o.totalSteps) await saveCheckpoint();
    // Samples every `sampleEvery` steps, and at the end of a run however short.
    if (o.onSample && o.sampleEvery && (step % o.sampleEvery === 0 || step === o.totalSteps)) await o.onSample(step, ema);
    if (o.stopAfter !== undefined && doneThisCall >= o.stopAfter && step < o.totalSteps) {
      return { step, lastLoss, stopped: 'stopAfter', ema, optimizer };
    }
  }
  return { step, lastLoss, stopped: 'done', ema, optimizer };
}

/** Drops log lines past `step`, so a resumed run's log reads as one uninterrupted run. */
function truncateLog(file: string, step: number): void {
  if (!existsSync(file)) return;
  const kept = readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => {
      if (!line.trim()) return false;
      try {
        return (JSON.parse(line) as StepLog).step <= step;
      } catch {
        return false;
      }
    });
  writeFileAtomic(file, kept.length ? `${kept.join('\n')}\n` : '');
}
