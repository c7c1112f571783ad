/**
 * What every scheduler shares: the float64 coefficient tables, the inference timesteps, q(x_t | x_0)
 * (addNoise), and per-sample coefficient lookup for training. DDPM and DDIM use it as is; the
 * sigma-based samplers (sigma-base.ts) replace the timestep handling.
 */
import * as tf from '@tensorflow/tfjs';
import type { SchedulerConfig } from './config.js';
import { parseSchedulerConfig } from './config.js';
import { cumprodAlphas, makeBetas, rescaleZeroTerminalSnr } from './schedules.js';
import { makeTimesteps } from './timesteps.js';
import type { NoiseSource, Scheduler, StepOutput, TimestepsInput } from './types.js';

/**
 * With zero terminal SNR alphaBar_{T-1} = 0 exactly, which makes x0 = (x_t - s eps) / a divide by
 * zero; diffusers substitutes 2^-24 for it. We do the same, so v-prediction at t = T-1 stays finite.
 */
const ZERO_SNR_ALPHA_BAR = 2 ** -24;

/** Integer timesteps as a plain array, validated against [0, T). */
export function timestepsToArray(t: TimestepsInput, T: number): number[] {
  let arr: number[];
  if (typeof t === 'number') arr = [t];
  else if (t instanceof tf.Tensor) {
    if (t.rank > 1) throw new Error(`timesteps tensor must be a scalar or 1-D [B], got shape [${t.shape.join(', ')}]`);
    arr = Array.from(t.dataSync());
  } else arr = Array.from(t);
  for (const v of arr) {
    if (!Number.isInteger(v) || v < 0 || v >= T) throw new Error(`timestep ${v} is not an integer in [0, ${T - 1}]`);
  }
  return arr;
}

export abstract class SchedulerBase implements Scheduler {
  readonly config: Readonly<SchedulerConfig>;
  readonly numTrainTimesteps: number;
  readonly betas: Float64Array;
  readonly alphasCumprod: Float64Array;
  /** sqrt(alphaBar_t) and sqrt(1 - alphaBar_t): the coefficients of DDPM eq. 4. */
  readonly sqrtAlphasCumprod: Float64Array;
  readonly sqrtOneMinusAlphasCumprod: Float64Array;
  private _timesteps: number[] = [];
  private _index = new Map<number, number>();

  constructor(config: Partial<SchedulerConfig>, type: SchedulerConfig['type']) {
    const c = parseSchedulerConfig({ ...config, type });
    this.config = Object.freeze(c);
    this.numTrainTimesteps = c.numTrainTimesteps;
    let betas = makeBetas(c.betaSchedule, c.numTrainTimesteps, c.betaStart, c.betaEnd);
    if (c.rescaleBetasZeroSnr) betas = rescaleZeroTerminalSnr(betas);
    this.betas = betas;
    const ab = cumprodAlphas(betas);
    if (c.rescaleBetasZeroSnr) ab[ab.length - 1] = ZERO_SNR_ALPHA_BAR;
    this.alphasCumprod = ab;
    this.sqrtAlphasCumprod = ab.map(Math.sqrt);
    this.sqrtOneMinusAlphasCumprod = ab.map((a) => Math.sqrt(1 - a));
    // Not this.setTimesteps: a subclass override would run before the subclass's fields exist.
    this.useTimesteps(Array.from({ length: c.numTrainTimesteps }, (_, i) => c.numTrainTimesteps - 1 - i));
  }

  /** Std of x_T: DDPM and DDIM start from x_T ~ N(0, I). */
  get initNoiseSigma(): number {
    return 1;
  }

  /** DDPM/DDIM feed x_t to the network unchanged; a new handle, so the caller may dispose it. */
  scaleModelInput(sample: tf.Tensor, _t: number): tf.Tensor {
    return sample.clone();
  }

  /** DDPM and DDIM keep no state between steps. */
  reset(): void {}

  get timesteps(): readonly number[] {
    return this._timesteps;
  }

  get numInferenceSteps(): number {
    return this._timesteps.length;
  }

  setTimesteps(numInferenceSteps: number): void {
    const T = this.numTrainTimesteps;
    // All T steps visit every timestep whatever the spacing (offsets would push past T-1).
    const ts =
      numInferenceSteps === T && Number.isInteger(numInferenceSteps)
        ? Array.from({ length: T }, (_, i) => T - 1 - i)
        : makeTimesteps(T, numInferenceSteps, this.config.timestepSpacing, this.config.stepsOffset);
    this.useTimesteps(ts);
  }

  private useTimesteps(ts: number[]): void {
    this._timesteps = ts;
    this._index = new Map(ts.map((t, i) => [t, i]));
  }

  /**
   * The next timestep of the current schedule (the one the step lands on), or -1 after the last.
   * Looked up in the table, so it is right for every spacing and every n (diffusers computes
   * t - T // n, which differs from the table for `linspace`, or when n does not divide T).
   */
  previousTimestep(t: number): number {
    const i = this._index.get(t);
    if (i === undefined) {
      const ts = this._timesteps;
      const shown = ts.length > 12 ? `${ts.slice(0, 6).join(', ')}, ..., ${ts.slice(-3).join(', ')}` : ts.join(', ');
      throw new Error(`timestep ${t} is not in the current schedule (${ts.length} steps: ${shown}); call setTimesteps first`);
    }
    return i + 1 < this._timesteps.length ? this._timesteps[i + 1] : -1;
  }

  /** alphaBar at t; t = -1 means "after the last step" (see finalAlphaCumprod). */
  alphaBarAt(t: number): number {
    return t < 0 ? this.finalAlphaCumprod() : this.alphasCumprod[t];
  }

  /** alphaBar after the last step. DDPM: 1 (the last step returns its x0 estimate). */
  protected finalAlphaCumprod(): number {
    return 1;
  }

  /**
   * x_t = sqrt(alphaBar_t) x0 + sqrt(1 - alphaBar_t) noise (DDPM eq. 4 / the reparametrisation
   * used in Algorithm 1). t: one timestep, or one per batch element (x0.shape[0] of them).
   */
  addNoise(x0: tf.Tensor, noise: tf.Tensor, t: TimestepsInput): tf.Tensor {
    if (!sameShape(x0.shape, noise.shape)) {
      throw new Error(`addNoise: x0 [${x0.shape.join(', ')}] and noise [${noise.shape.join(', ')}] must have the same shape`);
    }
    const ts = timestepsToArray(t, this.numTrainTimesteps);
    if (typeof t === 'number' || (t instanceof tf.Tensor && t.rank === 0)) {
      const i = ts[0];
      return tf.tidy(() => tf.add(tf.mul(x0, this.sqrtAlphasCumprod[i]), tf.mul(noise, this.sqrtOneMinusAlphasCumprod[i])));
    }
    return tf.tidy(() => {
      const a = this.perSample(this.sqrtAlphasCumprod, ts, x0);
      const s = this.perSample(this.sqrtOneMinusAlphasCumprod, ts, x0);
      return tf.add(tf.mul(x0, a), tf.mul(noise, s));
    });
  }

  /**
   * DDPM/DDIM: addNoise at timesteps[index]; after the last step the level is alphaBar_final
   * (1 unless DDIM's setAlphaToOne is off), where x0 comes back (almost) unchanged.
   */
  noiseToStep(x0: tf.Tensor, noise: tf.Tensor, index: number): tf.Tensor {
    const n = this.checkNoiseToStep(x0, noise, index);
    if (index < n) return this.addNoise(x0, noise, this.timesteps[index]);
    const ab = this.finalAlphaCumprod();
    return tf.tidy(() => (ab === 1 ? x0.clone() : tf.add(tf.mul(x0, Math.sqrt(ab)), tf.mul(noise, Math.sqrt(1 - ab)))));
  }

  /** Checks noiseToStep's arguments; returns the schedule length. */
  protected checkNoiseToStep(x0: tf.Tensor, noise: tf.Tensor, index: number): number {
    if (!sameShape(x0.shape, noise.shape)) {
      throw new Error(`noiseToStep: x0 [${x0.shape.join(', ')}] and noise [${noise.shape.join(', ')}] must have the same shape`);
    }
    const n = this.timesteps.length;
    if (!Number.isInteger(index) || index < 0 || index > n)
      throw new Error(`noiseToStep: index ${index} is not an integer from 0 to ${n} (the schedule's length)`);
    return n;
  }

  /**
   * table[t_b] as a tensor of shape [B, 1, ..., 1] with the rank of `like` (broadcasts over the
   * sample). Inside tf.tidy or disposed by the caller.
   */
  perSample(table: Float64Array, ts: readonly number[], like: tf.Tensor): tf.Tensor {
    const B = like.shape[0];
    if (like.rank < 1 || ts.length !== B) {
      throw new Error(`got ${ts.length} timesteps for a batch of ${like.rank < 1 ? 'a scalar' : B}; need one per batch element`);
    }
    const vals = new Float32Array(B);
    for (let i = 0; i < B; i++) vals[i] = table[ts[i]];
    return tf.tensor(vals, [B, ...new Array(like.rank - 1).fill(1)], 'float32');
  }

  protected checkStep(modelOutput: tf.Tensor, t: number, sample: tf.Tensor): void {
    if (!sameShape(modelOutput.shape, sample.shape)) {
      throw new Error(`step: model output [${modelOutput.shape.join(', ')}] and sample [${sample.shape.join(', ')}] must have the same shape`);
    }
    if (!Number.isInteger(t) || t < 0 || t >= this.numTrainTimesteps) {
      throw new Error(`step: timestep ${t} is not an integer in [0, ${this.numTrainTimesteps - 1}]`);
    }
  }

  /** Clip x0 to [-r, r] if the config asks for it. */
  protected maybeClip(x0: tf.Tensor): tf.Tensor {
    if (!this.config.clipSample) return x0;
    const r = this.config.clipSampleRange;
    return tf.clipByValue(x0, -r, r);
  }

  abstract step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, rng?: NoiseSource): StepOutput;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
