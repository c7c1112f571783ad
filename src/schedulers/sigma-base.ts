/**
 * What the sigma-based samplers share: a schedule of noise levels sigma_i (one per model
 * evaluation, plus a final 0), the step counter that ties each call to its place in that schedule,
 * the conversions from a model output to the x0 estimate, and noise drawing.
 *
 * Two families, as in diffusers:
 *   KDiffusionSchedulerBase (Euler, Euler ancestral, Heun): the sample is the variance-exploding
 *     x~ = x_t / sqrt(alphaBar_t) = x0 + sigma eps, the network sees x~ / sqrt(sigma^2 + 1) = x_t
 *     (Karras et al. 2022, Table 1, VP preconditioning c_in), and x_T has std ~ sigma_max.
 *   MultistepSchedulerBase (DPM-Solver++, UniPC): the sample is the VP x_t itself, so the network
 *     input is unscaled and x_T ~ N(0, I); sigma only parametrises alpha_t, sigma_t and lambda.
 *
 * addNoise keeps the VP meaning of SchedulerBase (training and integer timesteps); it is not the
 * sigma-space noising these samplers integrate: noiseToStep is (img2img, inpainting).
 */
import * as tf from '@tensorflow/tfjs';
import { SchedulerBase, sameShape } from './base.js';
import type { SchedulerConfig } from './config.js';
import {
  alphaSigmaFromSigma,
  interpOnGrid,
  karrasSigmas,
  kdiffusionTimesteps,
  multistepTimesteps,
  sigmaToTimestep,
  sigmasFromAlphasCumprod,
} from './sigmas.js';
import { roundHalfEven } from './timesteps.js';
import type { NoiseSource } from './types.js';

/** A sampler's schedule: `timesteps[i]` is evaluated at noise level `sigmas[i]`; sigmas has one more entry (the final level, 0). */
export interface SigmaSchedule {
  timesteps: number[];
  sigmas: Float64Array;
}

export abstract class SigmaSchedulerBase extends SchedulerBase {
  /** sigma_t of every training timestep, t = 0 .. T-1 (increasing). */
  readonly trainSigmas: Float64Array;
  /** log sigma_t, for turning a sigma back into a (fractional) timestep. */
  readonly logTrainSigmas: Float64Array;
  private schedule: SigmaSchedule = { timesteps: [], sigmas: new Float64Array(0) };
  private nSteps = 0;
  private index: number | null = null;

  constructor(config: Partial<SchedulerConfig>, type: SchedulerConfig['type']) {
    super(config, type);
    this.trainSigmas = sigmasFromAlphasCumprod(this.alphasCumprod);
    this.logTrainSigmas = this.trainSigmas.map(Math.log);
  }

  override get timesteps(): readonly number[] {
    return this.schedule.timesteps;
  }

  /** sigma_i for each entry of `timesteps`, then the final 0 (diffusers' `scheduler.sigmas`). */
  get sigmas(): Float64Array {
    return this.schedule.sigmas;
  }

  override get numInferenceSteps(): number {
    return this.nSteps;
  }

  /** Index into `timesteps` of the next call, or null before the first (diffusers' step_index). */
  get stepIndex(): number | null {
    return this.index;
  }

  override setTimesteps(numInferenceSteps: number): void {
    this.schedule = this.buildSchedule(numInferenceSteps);
    this.nSteps = numInferenceSteps;
    this.reset();
  }

  override reset(): void {
    this.index = null;
    this.releaseState();
  }

  /**
   * Uses a given schedule instead of building one (diffusers' `set_timesteps(sigmas=...)`; e.g.
   * hand-tuned step schedules, or another implementation's tables in tests). `timesteps` are what
   * the network is told at each model evaluation, `sigmas` the noise level of each evaluation plus
   * the final one (0 to end on x0): sigmas.length = timesteps.length + 1, finite, >= 0, and
   * non-increasing. Heun's schedule lists each repeated level twice, as buildSchedule makes it.
   */
  setCustomSchedule(timesteps: readonly number[], sigmas: ArrayLike<number>): void {
    const n = timesteps.length;
    if (n < 1 || sigmas.length !== n + 1) {
      throw new Error(`custom schedule needs n >= 1 timesteps and n + 1 sigmas, got ${n} and ${sigmas.length}`);
    }
    const T = this.numTrainTimesteps;
    const badT = timesteps.find((t) => !Number.isFinite(t) || t < 0 || t > T - 1);
    if (badT !== undefined) throw new Error(`custom schedule timestep ${badT} is outside [0, ${T - 1}]`);
    for (let i = 0; i <= n; i++) {
      const v = sigmas[i];
      if (!Number.isFinite(v) || v < 0 || (i < n && v === 0) || (i > 0 && v > sigmas[i - 1])) {
        throw new Error(`custom schedule sigma[${i}] = ${v} must be finite, > 0 (>= 0 for the last) and not above sigma[${i - 1}]`);
      }
    }
    this.schedule = { timesteps: [...timesteps], sigmas: Float64Array.from(sigmas) };
    this.nSteps = this.stepsForCalls(n);
    this.reset();
  }

  /** How many sampler steps n model evaluations make (Heun: (n + 1) / 2). */
  protected stepsForCalls(calls: number): number {
    return calls;
  }

  /** The schedule for n steps. */
  protected abstract buildSchedule(n: number): SigmaSchedule;

  /** Frees the tensors kept between steps (none by default). */
  protected releaseState(): void {}

  override previousTimestep(t: number): number {
    const ts = this.schedule.timesteps;
    const i = ts.indexOf(t);
    if (i < 0) throw this.notInSchedule(t);
    return i + 1 < ts.length ? ts[i + 1] : -1;
  }

  /**
   * The schedule index of the call at timestep t. The first call after setTimesteps/reset may be
   * at any listed timestep (img2img starts mid-schedule; where t is listed twice, as in Heun, the
   * second entry, which begins a step, as diffusers); later calls must follow `timesteps` in order,
   * because the samplers keep state between them.
   */
  protected indexFor(t: number): number {
    const ts = this.schedule.timesteps;
    if (this.index === null) {
      if (ts.length === 0) throw new Error(`${this.config.type}: call setTimesteps(n) before sampling`);
      const first = ts.indexOf(t);
      if (first < 0) throw this.notInSchedule(t);
      const second = ts.indexOf(t, first + 1);
      // A loop from the top always starts at 0. (diffusers takes the second match here too, which
      // skips a step and then overruns the schedule when Karras rounding repeats the first
      // timestep, e.g. DPM-Solver++ with the cosine schedule.)
      this.index = first === 0 || second < 0 ? first : second;
    }
    const i = this.index;
    if (i >= ts.length) {
      throw new Error(`${this.config.type}: all ${ts.length} model evaluations of this schedule are done; call setTimesteps(n) to sample again`);
    }
    if (ts[i] !== t) {
      throw new Error(
        `${this.config.type}: got timestep ${t} but call ${i} of the schedule is at timestep ${ts[i]}; ` +
          'this sampler keeps state between steps, so visit `timesteps` in order (reset() starts over)',
      );
    }
    return i;
  }

  /** Moves to the next call; after the last one the state is released (nothing can follow). */
  protected advance(): void {
    this.index = (this.index ?? 0) + 1;
    if (this.index >= this.schedule.timesteps.length) this.releaseState();
  }

  private notInSchedule(t: number): Error {
    const ts = this.schedule.timesteps;
    const shown = ts.length > 12 ? `${ts.slice(0, 6).join(', ')}, ..., ${ts.slice(-3).join(', ')}` : ts.join(', ');
    return new Error(`timestep ${t} is not in the current schedule (${ts.length} entries: ${shown}); call setTimesteps first`);
  }

  protected checkShapes(modelOutput: tf.Tensor, sample: tf.Tensor): void {
    if (!sameShape(modelOutput.shape, sample.shape)) {
      throw new Error(`step: model output [${modelOutput.shape.join(', ')}] and sample [${sample.shape.join(', ')}] must have the same shape`);
    }
  }

  /** Standard normals for one stochastic step, drawn before any tensor work (same order on every backend). */
  protected drawNoise(rng: NoiseSource | undefined, sample: tf.Tensor, t: number): tf.Tensor {
    if (!rng) throw new Error(`${this.config.type} step at t=${t} adds noise and needs a Generator (rng)`);
    const z = rng.normalArray(sample.size);
    if (z.length !== sample.size) throw new Error(`noise source gave ${z.length} values for a sample of ${sample.size}`);
    return tf.tensor(z, sample.shape, 'float32');
  }

  /** Training sigmas interpolated at (possibly fractional) timesteps. */
  protected sigmasAt(timesteps: readonly number[]): Float64Array {
    return Float64Array.from(timesteps, (t) => interpOnGrid(t, this.trainSigmas));
  }

  /** The schedule with a final sigma of 0 appended. */
  protected static withFinalZero(timesteps: number[], sigmas: ArrayLike<number>): SigmaSchedule {
    const s = new Float64Array(sigmas.length + 1);
    s.set(sigmas);
    return { timesteps, sigmas: s };
  }
}

/**
 * Euler, Euler ancestral, Heun: ODE/SDE integration in sigma on the variance-exploding sample
 * x~ = x0 + sigma eps, with the denoiser D(x~; sigma) (the x0 estimate) of Karras et al. 2022.
 */
export abstract class KDiffusionSchedulerBase extends SigmaSchedulerBase {
  /**
   * sigma_max for linspace/trailing; sqrt(sigma_max^2 + 1) for leading, whose first timestep is
   * not T-1: Var[x~_T] = Var[x0] + sigma^2, which is ~ 1 + sigma^2 for unit-variance latents (the
   * +1 is negligible next to sigma_max ~ 14.6 of the other spacings). As diffusers.
   */
  override get initNoiseSigma(): number {
    // Before setTimesteps: the whole training range.
    const s = this.sigmas.length > 0 ? this.sigmas : this.trainSigmas;
    let max = 0;
    for (const v of s) max = Math.max(max, v);
    return this.config.timestepSpacing === 'leading' ? Math.sqrt(max * max + 1) : max;
  }

  /**
   * x~ = x0 + sigma_i noise at the level of entry i (diffusers' Euler/Heun add_noise at the
   * begin or current step index); the final sigma is 0, so x0 itself after the last step.
   */
  override noiseToStep(x0: tf.Tensor, noise: tf.Tensor, index: number): tf.Tensor {
    this.checkNoiseToStep(x0, noise, index);
    const sigma = this.sigmas[index];
    return tf.tidy(() => tf.add(x0, tf.mul(noise, sigma)));
  }

  /** The network sees x~ / sqrt(sigma^2 + 1) = x_t (Karras et al. 2022, Table 1: c_in for VP). */
  override scaleModelInput(sample: tf.Tensor, t: number): tf.Tensor {
    const sigma = this.sigmas[this.indexFor(t)];
    return tf.tidy(() => tf.div(sample, Math.sqrt(sigma * sigma + 1)));
  }

  /** The n spaced noise levels (Karras' when useKarrasSigmas) and their timesteps. */
  protected baseSchedule(n: number): { timesteps: number[]; sigmas: Float64Array } {
    const c = this.config;
    let timesteps = kdiffusionTimesteps(c.numTrainTimesteps, n, c.timestepSpacing, c.stepsOffset);
    let sigmas = this.sigmasAt(timesteps);
    if (c.useKarrasSigmas) {
      // eq. 5 between the first and last spaced sigma; the network is told the timestep whose
      // training sigma is each new level (fractional, as float32).
      sigmas = karrasSigmas(sigmas[sigmas.length - 1], sigmas[0], n);
      timesteps = Array.from(sigmas, (s) => Math.fround(sigmaToTimestep(s, this.logTrainSigmas)));
    }
    return { timesteps, sigmas };
  }

  /**
   * D(x~; sigma), the x0 estimate, from the model output of the VP network evaluated at
   * x_t = x~ / sqrt(sigma^2 + 1) (Karras et al. 2022, Table 1: c_skip = 1, c_out = -sigma for eps):
   *   epsilon: x0 = x~ - sigma eps
   *   v:       x0 = a x_t - s v = x~ / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) v
   *   x0:      the output itself
   * then clipped if clipSample is on. Inside tf.tidy.
   */
  protected denoised(modelOutput: tf.Tensor, sample: tf.Tensor, sigma: number): tf.Tensor {
    let x0: tf.Tensor;
    switch (this.config.predictionType) {
      case 'epsilon':
        x0 = tf.sub(sample, tf.mul(modelOutput, sigma));
        break;
      case 'v':
        x0 = tf.add(tf.mul(modelOutput, -sigma / Math.sqrt(sigma * sigma + 1)), tf.div(sample, sigma * sigma + 1));
        break;
      case 'x0':
        x0 = modelOutput.clone();
        break;
    }
    return this.maybeClip(x0);
  }
}

/**
 * DPM-Solver++ and UniPC: exponential integrators in lambda = log(alpha_t / sigma_t) on the VP sample,
 * with data-prediction (x0) model outputs.
 */
export abstract class MultistepSchedulerBase extends SigmaSchedulerBase {
  /** The network sees the VP sample itself (a new handle); t is checked against the schedule. */
  override scaleModelInput(sample: tf.Tensor, t: number): tf.Tensor {
    this.indexFor(t);
    return sample.clone();
  }

  /**
   * alpha_i x0 + sigma_i noise, the VP sample at the level of entry i, with alpha and sigma from
   * that entry's sigma (diffusers' DPMSolverMultistep/UniPC add_noise): for Karras sigmas this is
   * not addNoise at the rounded integer timestep the network is told.
   */
  override noiseToStep(x0: tf.Tensor, noise: tf.Tensor, index: number): tf.Tensor {
    this.checkNoiseToStep(x0, noise, index);
    const { alpha, sigma } = alphaSigmaFromSigma(this.sigmas[index]);
    return tf.tidy(() => tf.add(tf.mul(x0, alpha), tf.mul(noise, sigma)));
  }

  protected buildSchedule(n: number): SigmaSchedule {
    const c = this.config;
    let timesteps = multistepTimesteps(c.numTrainTimesteps, n, c.timestepSpacing, c.stepsOffset);
    let sigmas = this.sigmasAt(timesteps);
    if (c.useKarrasSigmas) {
      // eq. 5 over the whole training range (sigma_0 .. sigma_{T-1}), whatever the spacing.
      sigmas = karrasSigmas(this.trainSigmas[0], this.trainSigmas[this.numTrainTimesteps - 1], n);
      timesteps = Array.from(sigmas, (s) => this.karrasTimestep(sigmaToTimestep(s, this.logTrainSigmas)));
    }
    return SigmaSchedulerBase.withFinalZero(timesteps, sigmas);
  }

  /** The integer timestep the network is told for a Karras level: rounded half to even (np.round). */
  protected karrasTimestep(t: number): number {
    return roundHalfEven(t);
  }

  /** x0 estimate from the model output at the VP sample x_t (prediction.ts's conversions), clipped if asked. */
  protected dataPrediction(modelOutput: tf.Tensor, sample: tf.Tensor, sigma: number): tf.Tensor {
    const { alpha: a, sigma: s } = alphaSigmaFromSigma(sigma);
    let x0: tf.Tensor;
    switch (this.config.predictionType) {
      case 'epsilon':
        x0 = tf.div(tf.sub(sample, tf.mul(modelOutput, s)), a);
        break;
      case 'v':
        x0 = tf.sub(tf.mul(sample, a), tf.mul(modelOutput, s));
        break;
      case 'x0':
        x0 = modelOutput.clone();
        break;
    }
    return this.maybeClip(x0);
  }
}
