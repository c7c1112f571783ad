/**
 * DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), written with the true posterior
 * q(x_{t-1} | x_t, x_0) so that it also works on a subsequence of timesteps:
 *
 *   mu~_t(x_t, x0) = sqrt(alphaBar_prev) beta_t / (1 - alphaBar_t) * x0
 *                  + sqrt(alpha_t) (1 - alphaBar_prev) / (1 - alphaBar_t) * x_t        (DDPM eq. 7)
 *   beta~_t        = (1 - alphaBar_prev) / (1 - alphaBar_t) * beta_t                  (DDPM eq. 7)
 *   x_prev         = mu~_t(x_t, x0_hat) + sigma_t z,   z ~ N(0, I), z = 0 at the last step
 *                                                                                     (DDPM eq. 6)
 * where x0_hat comes from the model output (eps: DDPM eq. 15; v: Salimans & Ho 2022), optionally
 * clipped, and on a subsequence t -> t_prev the one-step quantities are the effective ones:
 *   alpha_t = alphaBar_t / alphaBar_prev,   beta_t = 1 - alpha_t.
 * With x0_hat from eq. 15 this mean equals DDPM eq. 11 exactly.
 *
 * sigma_t^2 (DDPM sec. 3.2): `fixed-small` = beta~_t (the true posterior variance),
 * `fixed-large` = beta_t.
 */
import * as tf from '@tensorflow/tfjs';
import type { Generator } from '../random/generator.js';
import { SchedulerBase } from './base.js';
import type { SchedulerConfig } from './config.js';
import { toX0AndEps } from './prediction.js';
import type { StepOutput } from './types.js';

/** The scalar coefficients of one DDPM step (float64), exposed for tests and inspection. */
export interface DdpmStepCoefficients {
  t: number;
  prevT: number;
  alphaBar: number;
  alphaBarPrev: number;
  /** Effective one-step alpha_t = alphaBar_t / alphaBar_prev and beta_t = 1 - alpha_t. */
  alpha: number;
  beta: number;
  /** Coefficients of x0 and x_t in the posterior mean (DDPM eq. 7). */
  x0Coef: number;
  xtCoef: number;
  /** beta~_t, the posterior variance (DDPM eq. 7). */
  posteriorVariance: number;
  /** sigma_t^2 actually used (0 at the last step). */
  variance: number;
}

export class DDPMScheduler extends SchedulerBase {
  constructor(config: Partial<SchedulerConfig> = {}) {
    super(config, 'ddpm');
  }

  coefficients(t: number): DdpmStepCoefficients {
    const prevT = this.previousTimestep(t);
    const alphaBar = this.alphasCumprod[t];
    const alphaBarPrev = this.alphaBarAt(prevT);
    const alpha = alphaBar / alphaBarPrev;
    const beta = 1 - alpha;
    const x0Coef = (Math.sqrt(alphaBarPrev) * beta) / (1 - alphaBar);
    const xtCoef = (Math.sqrt(alpha) * (1 - alphaBarPrev)) / (1 - alphaBar);
    // Clamped as diffusers does: beta~ at t = 0 is exactly 0 and log/sqrt of it must stay finite.
    const posteriorVariance = Math.max(((1 - alphaBarPrev) / (1 - alphaBar)) * beta, 1e-20);
    let variance = 0;
    if (prevT >= 0) variance = this.config.varianceType === 'fixed-small' ? posteriorVariance : beta;
    return { t, prevT, alphaBar, alphaBarPrev, alpha, beta, x0Coef, xtCoef, posteriorVariance, variance };
  }

  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, rng?: Generator): StepOutput {
    this.checkStep(modelOutput, t, sample);
    const c = this.coefficients(t);
    if (c.variance > 0 && !rng) throw new Error(`DDPM step at t=${t} adds noise and needs a Generator (rng)`);
    // Draw noise before any tensor work so the draw order is the same on every backend.
    const z = c.variance > 0 ? rng!.normalArray(sample.size) : undefined;
    return tf.tidy(() => {
      const a = Math.sqrt(c.alphaBar);
      const s = Math.sqrt(1 - c.alphaBar);
      const { x0 } = toX0AndEps(this.config.predictionType, modelOutput, sample, a, s);
      const x0c = this.maybeClip(x0);
      // DDPM eq. 7: posterior mean.
      let prev = tf.add(tf.mul(x0c, c.x0Coef), tf.mul(sample, c.xtCoef));
      if (z) prev = tf.add(prev, tf.mul(tf.tensor(z, sample.shape, 'float32'), Math.sqrt(c.variance)));
      return { prevSample: prev, predOriginalSample: x0c };
    });
  }
}
