/**
 * Euler and Euler ancestral ("Euler a") samplers on the variance-exploding sample x~ = x0 + sigma eps
 * (diffusers' EulerDiscreteScheduler / EulerAncestralDiscreteScheduler; k-diffusion's sample_euler
 * and sample_euler_ancestral).
 *
 * Euler: one explicit Euler step of the probability-flow ODE dx~/dsigma = (x~ - D(x~; sigma)) / sigma
 * (Karras et al. 2022, eq. 1 with the score of eq. 3 and sigma(t) = t; Algorithm 1 without its
 * second-order correction):
 *   d_i     = (x~_i - D(x~_i; sigma_i)) / sigma_i
 *   x~_{i+1} = x~_i + (sigma_{i+1} - sigma_i) d_i
 * ("churn", Karras' Algorithm 2, is not used: diffusers' default s_churn = 0.)
 *
 * Euler ancestral: step down to sigma_down with the ODE, then add fresh noise of std sigma_up, with
 *   sigma_up^2   = sigma_{i+1}^2 (sigma_i^2 - sigma_{i+1}^2) / sigma_i^2,
 *   sigma_down^2 = sigma_{i+1}^2 - sigma_up^2.
 * sigma_up is DDIM's eta = 1 noise (Song et al. 2021, eq. 16) written in sigma: with
 * sigma^2 = (1 - alphaBar) / alphaBar, DDIM's sigma_t^2 / alphaBar_prev equals the expression
 * above, so each step samples the DDPM posterior (Ho et al. 2020, eq. 7) when D is exact.
 */
import * as tf from '@tensorflow/tfjs';
import type { SchedulerConfig } from './config.js';
import { KDiffusionSchedulerBase, type SigmaSchedule, SigmaSchedulerBase } from './sigma-base.js';
import type { NoiseSource, StepOutput } from './types.js';

export class EulerScheduler extends KDiffusionSchedulerBase {
  constructor(config: Partial<SchedulerConfig> = {}) {
    super(config, 'euler');
  }

  protected buildSchedule(n: number): SigmaSchedule {
    const { timesteps, sigmas } = this.baseSchedule(n);
    return SigmaSchedulerBase.withFinalZero(timesteps, sigmas);
  }

  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, _rng?: NoiseSource): StepOutput {
    this.checkShapes(modelOutput, sample);
    const i = this.indexFor(t);
    const sigma = this.sigmas[i];
    const sigmaNext = this.sigmas[i + 1];
    const out = tf.tidy(() => {
      const x0 = this.denoised(modelOutput, sample, sigma);
      const d = tf.div(tf.sub(sample, x0), sigma); // [B, H, W, C]
      return { prevSample: tf.add(sample, tf.mul(d, sigmaNext - sigma)), predOriginalSample: x0 };
    });
    this.advance();
    return out;
  }
}

export class EulerAncestralScheduler extends KDiffusionSchedulerBase {
  constructor(config: Partial<SchedulerConfig> = {}) {
    super(config, 'euler-ancestral');
  }

  protected buildSchedule(n: number): SigmaSchedule {
    const { timesteps, sigmas } = this.baseSchedule(n);
    return SigmaSchedulerBase.withFinalZero(timesteps, sigmas);
  }

  /** sigma_up and sigma_down of the step from sigma to sigmaNext (see the header). */
  static ancestralSigmas(sigma: number, sigmaNext: number): { up: number; down: number } {
    const up = Math.sqrt((sigmaNext * sigmaNext * (sigma * sigma - sigmaNext * sigmaNext)) / (sigma * sigma));
    const down = Math.sqrt(Math.max(0, sigmaNext * sigmaNext - up * up));
    return { up, down };
  }

  /** Draws noise at every step, the last included (sigma_up = 0 there), so the draws line up with diffusers'. */
  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, rng?: NoiseSource): StepOutput {
    this.checkShapes(modelOutput, sample);
    const i = this.indexFor(t);
    const sigma = this.sigmas[i];
    const { up, down } = EulerAncestralScheduler.ancestralSigmas(sigma, this.sigmas[i + 1]);
    const z = this.drawNoise(rng, sample, t);
    try {
      const out = tf.tidy(() => {
        const x0 = this.denoised(modelOutput, sample, sigma);
        const d = tf.div(tf.sub(sample, x0), sigma);
        const prev = tf.add(tf.add(sample, tf.mul(d, down - sigma)), tf.mul(z, up));
        return { prevSample: prev, predOriginalSample: x0 };
      });
      this.advance();
      return out;
    } finally {
      z.dispose();
    }
  }
}
