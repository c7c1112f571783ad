/**
 * The scheduler interface (in the spirit of diffusers' SchedulerMixin): a scheduler owns the noise
 * schedule and the update rule, and knows nothing of the network.
 *
 * Sampling loop (the caller owns and disposes every tensor it receives):
 *   sched.setTimesteps(50);
 *   let x = rng.randn(shape);                       // x_T ~ N(0, I)
 *   for (const t of sched.timesteps) {
 *     const out = model(x, t);
 *     const { prevSample, predOriginalSample } = sched.step(out, t, x, rng);
 *     out.dispose(); x.dispose(); predOriginalSample.dispose();
 *     x = prevSample;
 *   }
 */
import type * as tf from '@tensorflow/tfjs';
import type { Generator } from '../random/generator.js';
import type { SchedulerConfig } from './config.js';

export interface StepOutput {
  /** x_{t_prev}: the sample for the next (smaller) timestep. New tensor, owned by the caller. */
  prevSample: tf.Tensor;
  /** The model's estimate of x_0 at this step (after clipping, if enabled). New tensor. */
  predOriginalSample: tf.Tensor;
}

/** Timesteps for addNoise: one for all samples, or one per batch element (training). */
export type TimestepsInput = number | readonly number[] | Int32Array | tf.Tensor;

export interface Scheduler {
  /** The validated, resolved, JSON-serialisable configuration this scheduler was built from. */
  readonly config: Readonly<SchedulerConfig>;
  readonly numTrainTimesteps: number;
  /** beta_t, t = 0 .. T-1 (float64). */
  readonly betas: Float64Array;
  /** alphaBar_t = prod_{s<=t} (1 - beta_s), t = 0 .. T-1 (float64). */
  readonly alphasCumprod: Float64Array;
  /** Std of x_T that sampling starts from (1 for DDPM/DDIM: x_T ~ N(0, I)). */
  readonly initNoiseSigma: number;
  /** The timesteps the sampler visits, descending. Defaults to all T until setTimesteps. */
  readonly timesteps: readonly number[];
  readonly numInferenceSteps: number;

  setTimesteps(numInferenceSteps: number): void;
  /** The timestep after t in the current schedule, or -1 after the last one. */
  previousTimestep(t: number): number;
  /**
   * One reverse step from x_t to x_{t_prev}. Disposes nothing it was given; returns new tensors.
   * `rng` supplies all noise (required when the step is stochastic).
   */
  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, rng?: Generator): StepOutput;
  /** q(x_t | x_0) sample: sqrt(alphaBar_t) x0 + sqrt(1 - alphaBar_t) noise (DDPM eq. 4). New tensor. */
  addNoise(x0: tf.Tensor, noise: tf.Tensor, t: TimestepsInput): tf.Tensor;
}
