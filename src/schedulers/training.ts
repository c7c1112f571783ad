/**
 * The training side of a scheduler: noisy inputs, regression targets and per-sample loss weights.
 *
 * DDPM Algorithm 1: t ~ U{0..T-1}, eps ~ N(0, I), x_t = sqrt(alphaBar_t) x0 + sqrt(1 - alphaBar_t) eps,
 * minimise || target - net(x_t, t) ||^2 with target eps (DDPM eq. 14, "L_simple"), v (Salimans & Ho
 * 2022, appendix D) or x0.
 *
 * Loss weighting:
 *   mse      every sample weight 1 (L_simple).
 *   min-snr  Min-SNR-gamma (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
 *            Strategy", sec. 3.4): the x0-space weight is min(SNR_t, gamma); expressed for the
 *            network's parametrisation it becomes
 *              x0:       min(SNR, gamma)
 *              epsilon:  min(SNR, gamma) / SNR
 *              v:        min(SNR, gamma) / (SNR + 1)
 *            with SNR_t = alphaBar_t / (1 - alphaBar_t). gamma = 5 in the paper.
 */
import * as tf from '@tensorflow/tfjs';
import type { Generator } from '../random/generator.js';
import type { SchedulerBase } from './base.js';
import { timestepsToArray } from './base.js';
import type { PredictionType } from './config.js';
import { predictionTarget } from './prediction.js';
import { snr } from './schedules.js';
import type { TimestepsInput } from './types.js';

export type LossWeighting = { kind: 'mse' } | { kind: 'min-snr'; gamma: number };
export const LOSS_WEIGHTING_KINDS = ['mse', 'min-snr'] as const;

export function parseLossWeighting(kind: string, gamma = 5): LossWeighting {
  if (kind === 'mse') return { kind: 'mse' };
  if (kind === 'min-snr') {
    if (!(Number.isFinite(gamma) && gamma > 0)) throw new Error(`min-SNR gamma must be a number > 0, got ${gamma}`);
    return { kind: 'min-snr', gamma };
  }
  throw new Error(`loss weighting '${kind}' is unknown; allowed: ${LOSS_WEIGHTING_KINDS.join(', ')}`);
}

/** Min-SNR-gamma weight of one timestep for the given parametrisation (see the header). */
export function minSnrWeight(alphaBar: number, gamma: number, type: PredictionType): number {
  const r = snr(alphaBar);
  const m = Math.min(r, gamma);
  switch (type) {
    case 'x0':
      return m;
    case 'epsilon':
      return r > 0 ? m / r : 1; // limit of min(r, g) / r as r -> 0
    case 'v':
      return m / (r + 1);
  }
}

/** Per-sample loss weights (float64) for integer timesteps. */
export function lossWeights(
  alphasCumprod: Float64Array,
  timesteps: readonly number[],
  type: PredictionType,
  weighting: LossWeighting = { kind: 'mse' },
): Float64Array {
  const out = new Float64Array(timesteps.length);
  for (let i = 0; i < timesteps.length; i++) {
    out[i] = weighting.kind === 'mse' ? 1 : minSnrWeight(alphasCumprod[timesteps[i]], weighting.gamma, type);
  }
  return out;
}

export interface TrainingBatch {
  /** x_t, the network input. */
  noisy: tf.Tensor;
  /** What the network should output (eps, v or x0 per config.predictionType). */
  target: tf.Tensor;
  /** [B] per-sample loss weights. */
  weights: tf.Tensor1D;
}

/**
 * Network input, target and per-sample weights for clean x0 [B, ...], noise (same shape) and
 * timesteps (one per batch element). New tensors; x0 / noise / timesteps are not disposed.
 */
export function trainingTargets(
  scheduler: SchedulerBase,
  x0: tf.Tensor,
  noise: tf.Tensor,
  timesteps: TimestepsInput,
  weighting: LossWeighting = { kind: 'mse' },
): TrainingBatch {
  const ts = timestepsToArray(timesteps, scheduler.numTrainTimesteps);
  const B = x0.shape[0];
  if (ts.length !== B) throw new Error(`trainingTargets: ${ts.length} timesteps for a batch of ${B}; need one per batch element`);
  const w = lossWeights(scheduler.alphasCumprod, ts, scheduler.config.predictionType, weighting);
  return tf.tidy(() => {
    const a = scheduler.perSample(scheduler.sqrtAlphasCumprod, ts, x0);
    const s = scheduler.perSample(scheduler.sqrtOneMinusAlphasCumprod, ts, x0);
    const noisy = tf.add(tf.mul(x0, a), tf.mul(noise, s)); // DDPM eq. 4
    const target = predictionTarget(scheduler.config.predictionType, x0, noise, a, s);
    return { noisy, target, weights: tf.tensor1d(Float32Array.from(w), 'float32') };
  });
}

/**
 * sum_b w_b * mean_{non-batch}((pred - target)^2) / B: plain MSE when every weight is 1.
 * Differentiable in pred; use inside the loss function given to computeGradients.
 */
export function weightedMse(pred: tf.Tensor, target: tf.Tensor, weights?: tf.Tensor1D): tf.Scalar {
  return tf.tidy(() => {
    const B = pred.shape[0];
    const perSample = tf.mean(tf.reshape(tf.squaredDifference(pred, target), [B, -1]), 1); // [B]
    return (weights ? tf.mean(tf.mul(perSample, weights)) : tf.mean(perSample)) as tf.Scalar;
  });
}

/** B timesteps uniform on {0, ..., T-1} (DDPM Algorithm 1, line 3). */
export function sampleTimesteps(rng: Generator, batch: number, T: number): Int32Array {
  const out = new Int32Array(batch);
  for (let i = 0; i < batch; i++) out[i] = rng.randint(0, T);
  return out;
}
