/**
 * The scheduler interface (in the spirit of diffusers' SchedulerMixin): a scheduler owns the noise
 * schedule and the update rule, and knows nothing of the network.
 *
 * Sampling loop, the same for every type (the caller owns and disposes every tensor it receives):
 *   sched.setTimesteps(50);                          // also clears any state of a previous run
 *   let x = tf.mul(rng.randn(shape), sched.initNoiseSigma);   // x_T; [B, H, W, C]
 *   for (const t of sched.timesteps) {
 *     const input = sched.scaleModelInput(x, t);     // what the network sees (new tensor)
 *     const out = model(input, t);                   // t may be fractional (Karras, Euler linspace)
 *     input.dispose();
 *     const { prevSample, predOriginalSample } = sched.step(out, t, x, rng);
 *     out.dispose(); x.dispose(); predOriginalSample.dispose();
 *     x = prevSample;
 *   }
 *
 * Contract details:
 * - `initNoiseSigma`: std of x_T. 1 for DDPM/DDIM/DPM-Solver++/UniPC (they sample the VP x_t);
 *   sigma_max (or sqrt(sigma_max^2 + 1) with leading spacing) for Euler/Euler a/Heun, which sample
 *   the variance-exploding x_t / sqrt(alphaBar_t) (Karras et al. 2022, Table 1).
 * - `scaleModelInput(x, t)`: the network input for the current step; identity (a new handle) for
 *   DDPM/DDIM/DPM-Solver++/UniPC, x / sqrt(sigma^2 + 1) for Euler/Euler a/Heun. Call it before every
 *   model evaluation, with the same t that is then given to `step`.
 * - `timesteps` is the exact list of model evaluations: Heun lists every timestep but the first
 *   twice (two evaluations per step, Karras et al. 2022, Algorithm 1), so a plain loop over it
 *   works. The sigma-based and multistep samplers keep state between calls and must be driven
 *   through `timesteps` in order; they may start mid-schedule (img2img) at any listed timestep.
 * - The multistep samplers hold tensors between steps; they release them after the last step, on
 *   `setTimesteps`, and on `reset()` (call it if a loop is abandoned).
 */
import type * as tf from '@tensorflow/tfjs';
import type { SchedulerConfig } from './config.js';

export interface StepOutput {
  /** x_{t_prev}: the sample for the next (smaller) timestep. New tensor, owned by the caller. */
  prevSample: tf.Tensor;
  /** The model's estimate of x_0 at this step (after clipping, if enabled). New tensor. */
  predOriginalSample: tf.Tensor;
}

/**
 * Where a stochastic step gets its standard normals: the seeded Generator (src/random/generator.ts)
 * in normal use. Any object with the same method works, which lets tests replay the noise that
 * another implementation drew. One call per stochastic step, n = sample.size, in the sample's own
 * (row-major NHWC) element order.
 */
export interface NoiseSource {
  normalArray(n: number): Float32Array;
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
  /** Std of x_T that sampling starts from (see the header). Valid after setTimesteps. */
  readonly initNoiseSigma: number;
  /**
   * The timesteps at which the model is evaluated, in order (descending; Heun repeats them).
   * Integers for DDPM/DDIM/DPM-Solver++/UniPC; may be fractional for Euler/Euler a/Heun.
   * DDPM/DDIM default to all T until setTimesteps; the sigma-based types are empty until then.
   */
  readonly timesteps: readonly number[];
  /** The n given to setTimesteps (Heun makes 2n - 1 model evaluations for it). */
  readonly numInferenceSteps: number;

  /** Builds the schedule for n steps and clears the state of any previous run. */
  setTimesteps(numInferenceSteps: number): void;
  /** The next entry of `timesteps` after t (first occurrence), or -1 after the last one. */
  previousTimestep(t: number): number;
  /** The network input for timestep t (see the header). New tensor; does not dispose `sample`. */
  scaleModelInput(sample: tf.Tensor, t: number): tf.Tensor;
  /**
   * One reverse step from x_t to the next sample. Disposes nothing it was given; returns new
   * tensors. `rng` supplies all noise (required when the step is stochastic).
   */
  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, rng?: NoiseSource): StepOutput;
  /** Forgets the progress of the current run (and frees the tensors a multistep sampler holds). */
  reset(): void;
  /** q(x_t | x_0) sample: sqrt(alphaBar_t) x0 + sqrt(1 - alphaBar_t) noise (DDPM eq. 4). New tensor. */
  addNoise(x0: tf.Tensor, noise: tf.Tensor, t: TimestepsInput): tf.Tensor;
  /**
   * x0 noised to the level at which entry `index` of `timesteps` is evaluated, in the space this
   * sampler integrates (the VP x_t, or the variance-exploding x0 + sigma noise of Euler/Heun);
   * index = timesteps.length is the level after the last step. img2img starts the loop at entry
   * `index` from this sample; inpainting re-noises the known region with it after every step
   * (diffusers' add_noise with set_begin_index / step_index). Valid after setTimesteps. New tensor.
   */
  noiseToStep(x0: tf.Tensor, noise: tf.Tensor, index: number): tf.Tensor;
}
