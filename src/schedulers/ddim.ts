/**
 * DDIM (Song, Meng & Ermon 2021), the generalised non-Markovian reverse process, eq. 12:
 *
 *   x_prev = sqrt(alphaBar_prev) * x0_hat                                   "predicted x0"
 *          + sqrt(1 - alphaBar_prev - sigma_t^2) * eps_hat                   "direction pointing to x_t"
 *          + sigma_t * z,                       z ~ N(0, I)                  "random noise"
 * with (eq. 16)
 *   sigma_t(eta) = eta * sqrt((1 - alphaBar_prev) / (1 - alphaBar_t)) * sqrt(1 - alphaBar_t / alphaBar_prev).
 *
 * eta = 0 is the deterministic DDIM sampler; eta = 1 on all T steps is DDPM with the fixed-small
 * variance (sigma_t^2 = beta~_t, DDPM eq. 7), which tests/schedulers checks. (The paper's alpha_t
 * is our alphaBar_t.) Works for any number of steps and every timestep spacing: t_prev is the next
 * entry of the timestep table. After the last step alphaBar_prev is 1 (setAlphaToOne) or
 * alphaBar_0, as in diffusers.
 *
 * When clipSample is on, eps_hat is re-derived from the clipped x0_hat so the two terms of eq. 12
 * stay consistent (as GLIDE does; diffusers' `use_clipped_model_output=True`).
 */
import * as tf from '@tensorflow/tfjs';
import type { Generator } from '../random/generator.js';
import { SchedulerBase } from './base.js';
import type { SchedulerConfig } from './config.js';
import { epsFromX0, toX0AndEps } from './prediction.js';
import type { StepOutput } from './types.js';

export interface DdimStepCoefficients {
  t: number;
  prevT: number;
  alphaBar: number;
  alphaBarPrev: number;
  /** sigma_t^2 (eq. 16, times eta^2). */
  variance: number;
  /** sqrt(1 - alphaBar_prev - sigma_t^2), the eps coefficient of eq. 12 (clamped at 0). */
  dirCoef: number;
}

export class DDIMScheduler extends SchedulerBase {
  constructor(config: Partial<SchedulerConfig> = {}) {
    super(config, 'ddim');
  }

  get eta(): number {
    return this.config.eta;
  }

  protected override finalAlphaCumprod(): number {
    return this.config.setAlphaToOne ? 1 : this.alphasCumprod[0];
  }

  coefficients(t: number, eta = this.config.eta): DdimStepCoefficients {
    if (!(Number.isFinite(eta) && eta >= 0)) throw new Error(`DDIM eta must be a number >= 0, got ${eta}`);
    const prevT = this.previousTimestep(t);
    const alphaBar = this.alphasCumprod[t];
    const alphaBarPrev = this.alphaBarAt(prevT);
    // eq. 16
    const variance = eta * eta * ((1 - alphaBarPrev) / (1 - alphaBar)) * (1 - alphaBar / alphaBarPrev);
    const dirCoef = Math.sqrt(Math.max(0, 1 - alphaBarPrev - variance));
    return { t, prevT, alphaBar, alphaBarPrev, variance: Math.max(0, variance), dirCoef };
  }

  /** eta: per-call override of config.eta. */
  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, rng?: Generator, eta?: number): StepOutput {
    this.checkStep(modelOutput, t, sample);
    const c = this.coefficients(t, eta);
    if (c.variance > 0 && !rng) throw new Error(`DDIM step at t=${t} with eta=${eta ?? this.config.eta} adds noise and needs a Generator (rng)`);
    const z = c.variance > 0 ? rng!.normalArray(sample.size) : undefined;
    return tf.tidy(() => {
      const a = Math.sqrt(c.alphaBar);
      const s = Math.sqrt(1 - c.alphaBar);
      const p = toX0AndEps(this.config.predictionType, modelOutput, sample, a, s);
      let x0 = p.x0;
      let eps = p.eps;
      if (this.config.clipSample) {
        x0 = this.maybeClip(x0);
        eps = epsFromX0(x0, sample, a, s);
      }
      // eq. 12
      let prev = tf.add(tf.mul(x0, Math.sqrt(c.alphaBarPrev)), tf.mul(eps, c.dirCoef));
      if (z) prev = tf.add(prev, tf.mul(tf.tensor(z, sample.shape, 'float32'), Math.sqrt(c.variance)));
      return { prevSample: prev, predOriginalSample: x0 };
    });
  }
}
