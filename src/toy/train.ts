/**
 * Training and sampling of the toy 2-D diffusion model (DDPM Algorithms 1 and 2 on point clouds).
 *
 * trainToy does not use the shared loop src/train/trainer.ts `train()`, although its step is
 * built from the same pieces (computeGradients, clipGradNorm, AdamW with an LrSchedule, EMA):
 * `train()` is made for long resumable runs and always writes to disk (a loss.jsonl line per step
 * and a checkpoint folder at least at the end; there is no way to turn either off), it seeds its
 * own Generator from a number, and it is async. The toy is an in-memory demo that trains in
 * seconds: it writes only its pictures and report, draws from a Generator its caller splits off
 * (so a test or run controls every stream), and trainToy stays synchronous. Those differences are
 * the design, not duplication; the per-step arithmetic is the shared modules'.
 */
import * as tf from '@tensorflow/tfjs';
import { computeGradients, disposeGrads } from '../nn/params.js';
import { AdamW, clipGradNorm } from '../optim/adamw.js';
import { EMA } from '../optim/ema.js';
import { type LrSchedule, learningRateAt, validateLrSchedule } from '../optim/lr.js';
import type { Generator } from '../random/generator.js';
import type { AnyScheduler } from '../schedulers/index.js';
import { type LossWeighting, sampleTimesteps, trainingTargets, weightedMse } from '../schedulers/training.js';
import type { Points, ToyDataset } from './datasets.js';
import { DEFAULT_TOY_MLP, ToyMLP } from './model.js';

export interface ToyTrainOptions {
  steps: number;
  batch: number;
  lr: number;
  /** Linear warm-up steps, then cosine decay to lr * minLrFactor. */
  warmupSteps?: number;
  minLrFactor?: number;
  weightDecay?: number;
  emaDecay?: number;
  gradClip?: number;
  /** Size of the fixed training set drawn from the dataset (like a real data set). */
  trainPoints?: number;
  hidden?: number;
  blocks?: number;
  timeEmbedDim?: number;
  inputEmbedDim?: number;
  inputScale?: number;
  weighting?: LossWeighting;
  /** Called after every step (progress bars). */
  onStep?: (step: number, loss: number) => void;
}

export interface ToyTrainResult {
  model: ToyMLP;
  ema: EMA;
  losses: Float32Array;
  seconds: number;
}

export function validateTrainOptions(o: ToyTrainOptions): void {
  const int = (name: string, v: number, min: number) => {
    if (!Number.isInteger(v) || v < min) throw new Error(`--${name} must be an integer >= ${min}, got ${v}`);
  };
  int('steps', o.steps, 1);
  int('batch', o.batch, 1);
  if (!(Number.isFinite(o.lr) && o.lr > 0 && o.lr < 1)) throw new Error(`--lr must be a number in (0, 1), got ${o.lr}`);
}

/**
 * Trains a ToyMLP to predict the scheduler's target (eps / v / x0) on x_t = addNoise(x0, eps, t).
 * The caller owns (and disposes) the returned model and EMA.
 */
export function trainToy(data: ToyDataset, scheduler: AnyScheduler, rng: Generator, o: ToyTrainOptions): ToyTrainResult {
  validateTrainOptions(o);
  const lrSchedule: LrSchedule = validateLrSchedule({
    kind: 'cosine',
    base: o.lr,
    warmupSteps: o.warmupSteps ?? Math.min(100, Math.floor(o.steps / 10)),
    totalSteps: o.steps,
    min: o.lr * (o.minLrFactor ?? 0.1),
  });
  const T = scheduler.numTrainTimesteps;
  const d = DEFAULT_TOY_MLP;
  const model = new ToyMLP(
    {
      hidden: o.hidden ?? d.hidden,
      blocks: o.blocks ?? d.blocks,
      timeEmbedDim: o.timeEmbedDim ?? d.timeEmbedDim,
      inputEmbedDim: o.inputEmbedDim ?? d.inputEmbedDim,
      inputScale: o.inputScale ?? d.inputScale,
      numTrainTimesteps: T,
    },
    rng.spawn(),
  );
  const opt = new AdamW(model.store, { lr: o.lr, weightDecay: o.weightDecay ?? 0 });
  const ema = new EMA(model.store, o.emaDecay ?? 0.995);
  const pool = data.sample(o.trainPoints ?? 10000, rng.spawn());
  const nPool = pool.length / 2;
  const losses = new Float32Array(o.steps);
  const start = performance.now();
  const x0Buf = new Float32Array(2 * o.batch);
  for (let step = 0; step < o.steps; step++) {
    for (let i = 0; i < o.batch; i++) {
      const j = rng.randint(0, nPool);
      x0Buf[2 * i] = pool[2 * j];
      x0Buf[2 * i + 1] = pool[2 * j + 1];
    }
    const ts = sampleTimesteps(rng, o.batch, T);
    const x0 = tf.tensor2d(x0Buf, [o.batch, 2]);
    const noise = rng.randn([o.batch, 2]);
    const tTensor = tf.tensor1d(ts, 'int32');
    const { noisy, target, weights } = trainingTargets(scheduler, x0, noise, ts, o.weighting);
    const { loss, grads } = computeGradients(model.store, () => weightedMse(model.apply(noisy, tTensor), target, weights));
    if (o.gradClip !== 0) clipGradNorm(grads, o.gradClip ?? 1);
    opt.step(grads, learningRateAt(step, lrSchedule));
    ema.update();
    losses[step] = loss.dataSync()[0];
    disposeGrads(grads);
    tf.dispose([x0, noise, tTensor, noisy, target, weights, loss]);
    if (!Number.isFinite(losses[step])) {
      model.dispose();
      ema.dispose();
      opt.dispose();
      throw new Error(`toy training diverged at step ${step + 1}: loss ${losses[step]}; try a smaller --lr (got ${o.lr})`);
    }
    o.onStep?.(step + 1, losses[step]);
  }
  opt.dispose();
  return { model, ema, losses, seconds: (performance.now() - start) / 1000 };
}

export interface ToySampleOptions {
  /** Number of sampler steps (setTimesteps). */
  steps: number;
  /** Frames to keep, evenly spaced in sampler steps, from x_T to the result (0: none, else >= 2). */
  frames?: number;
}

/** A snapshot; `level` counts noising steps still in it (T = pure noise, 0 = data). */
export interface ToyFrame {
  level: number;
  points: Points;
}

export interface ToySampleResult {
  points: Points;
  /** Snapshots of the reverse process: x_T first, the final sample last. */
  frames: ToyFrame[];
}

/** Indices 0..total at which to take `frames` evenly spaced snapshots (first 0, last total). */
export function frameSchedule(total: number, frames: number): number[] {
  if (!Number.isInteger(frames) || frames < 2) throw new Error(`number of frames must be an integer >= 2, got ${frames}`);
  const out: number[] = [];
  for (let j = 0; j < frames; j++) out.push(Math.round((j * total) / (frames - 1)));
  return out;
}

/** Reverse process: x_T ~ N(0, I), then scheduler.step with the model down to t = 0. */
export function sampleToy(model: ToyMLP, scheduler: AnyScheduler, n: number, rng: Generator, o: ToySampleOptions): ToySampleResult {
  scheduler.setTimesteps(o.steps);
  const ts = scheduler.timesteps;
  // How many frames to take after each number of steps (a step repeats when steps < frames).
  const keep = new Map<number, number>();
  for (const k of o.frames ? frameSchedule(ts.length, o.frames) : []) keep.set(k, (keep.get(k) ?? 0) + 1);
  const snap = (count: number, level: number, x: tf.Tensor) => {
    if (!count) return;
    const points = Float32Array.from(x.dataSync());
    for (let c = 0; c < count; c++) frames.push({ level, points });
  };
  const frames: ToyFrame[] = [];
  let x = rng.randn([n, 2]);
  snap(keep.get(0) ?? 0, scheduler.numTrainTimesteps, x);
  for (let i = 0; i < ts.length; i++) {
    const t = ts[i];
    const tTensor = tf.fill([n], t, 'int32') as tf.Tensor1D;
    const out = model.apply(x, tTensor);
    const { prevSample, predOriginalSample } = scheduler.step(out, t, x, rng);
    tf.dispose([tTensor, out, x, predOriginalSample]);
    x = prevSample;
    // 0-based timestep p holds p + 1 noising steps; after the last step (p = -1) none.
    snap(keep.get(i + 1) ?? 0, scheduler.previousTimestep(t) + 1, x);
  }
  const points = Float32Array.from(x.dataSync());
  x.dispose();
  return { points, frames };
}

/**
 * Forward process q(x_t | x_0) snapshots at the given noise levels (0 = the data, T = x_T), all
 * with one noise draw so each point can be followed from frame to frame.
 */
export function forwardFrames(scheduler: AnyScheduler, x0: Points, levels: number[], rng: Generator): ToyFrame[] {
  const n = x0.length / 2;
  const noise = rng.randn([n, 2]);
  const x = tf.tensor2d(x0, [n, 2]);
  const out = levels.map((level) => {
    if (level === 0) return { level, points: x0 };
    const xt = scheduler.addNoise(x, noise, level - 1);
    const points = Float32Array.from(xt.dataSync());
    xt.dispose();
    return { level, points };
  });
  tf.dispose([noise, x]);
  return out;
}
