/**
 * Heun's second-order sampler (Karras et al. 2022, Algorithm 1, deterministic; diffusers'
 * HeunDiscreteScheduler, k-diffusion's sample_heun) on x~ = x0 + sigma eps:
 *
 *   d_i      = (x~_i - D(x~_i; sigma_i)) / sigma_i                           (line 4)
 *   x~'      = x~_i + (sigma_{i+1} - sigma_i) d_i                            (line 5, an Euler step)
 *   if sigma_{i+1} != 0:
 *     d'_i   = (x~' - D(x~'; sigma_{i+1})) / sigma_{i+1}                      (line 7)
 *     x~_{i+1} = x~_i + (sigma_{i+1} - sigma_i) (d_i + d'_i) / 2             (line 8, trapezoidal rule)
 *
 * Each step needs two model evaluations, at sigma_i and at sigma_{i+1}. As in diffusers, the
 * schedule lists every timestep but the first twice, timesteps = [t0, t1, t1, t2, t2, ...] with
 * sigmas = [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0], and each `step` call is one evaluation: a
 * first-order call (lines 4-5; returns x~', the point at which the model is evaluated next) or a
 * second-order call (lines 7-8; returns x~_{i+1}). The last step, to sigma = 0, is Euler only.
 * So n steps cost 2n - 1 evaluations and a plain loop over `timesteps` runs them.
 */
import * as tf from '@tensorflow/tfjs';
import type { SchedulerConfig } from './config.js';
import { KDiffusionSchedulerBase, type SigmaSchedule } from './sigma-base.js';
import type { NoiseSource, StepOutput } from './types.js';

export class HeunScheduler extends KDiffusionSchedulerBase {
  /** State between a first-order call and its second-order call: x~_i, d_i and sigma_{i+1} - sigma_i. */
  private first: { sample: tf.Tensor; derivative: tf.Tensor; dt: number } | null = null;

  constructor(config: Partial<SchedulerConfig> = {}) {
    super(config, 'heun');
  }

  protected buildSchedule(n: number): SigmaSchedule {
    const { timesteps, sigmas } = this.baseSchedule(n);
    const ts: number[] = [timesteps[0]];
    const sg: number[] = [sigmas[0]];
    for (let i = 1; i < n; i++) {
      ts.push(timesteps[i], timesteps[i]);
      sg.push(sigmas[i], sigmas[i]);
    }
    sg.push(0);
    return { timesteps: ts, sigmas: Float64Array.from(sg) };
  }

  /** A custom Heun schedule must pair its evaluations as buildSchedule does: [t0, t1, t1, t2, t2, ...]. */
  override setCustomSchedule(timesteps: readonly number[], sigmas: ArrayLike<number>): void {
    const n = timesteps.length;
    let paired = n % 2 === 1;
    for (let j = 1; paired && j < n; j += 2) paired = timesteps[j] === timesteps[j + 1] && sigmas[j] === sigmas[j + 1];
    if (!paired) throw new Error(`a heun schedule lists every timestep but the first twice ([t0, t1, t1, t2, t2, ...]); got ${timesteps.join(', ')}`);
    super.setCustomSchedule(timesteps, sigmas);
  }

  protected override stepsForCalls(calls: number): number {
    return (calls + 1) / 2;
  }

  /** True when the next call is the first evaluation of a step (lines 4-5). */
  get stateInFirstOrder(): boolean {
    return this.first === null;
  }

  protected override releaseState(): void {
    if (this.first) tf.dispose([this.first.sample, this.first.derivative]);
    this.first = null;
  }

  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, _rng?: NoiseSource): StepOutput {
    this.checkShapes(modelOutput, sample);
    const i = this.indexFor(t);
    const first = this.first;
    if (first === null) {
      const sigma = this.sigmas[i];
      const dt = this.sigmas[i + 1] - sigma;
      const r = tf.tidy(() => {
        const x0 = this.denoised(modelOutput, sample, sigma);
        const d = tf.div(tf.sub(sample, x0), sigma); // line 4
        const prev = tf.add(sample, tf.mul(d, dt)); // line 5
        return { prev, x0, d: tf.keep(d), x: tf.keep(sample.clone()) };
      });
      this.first = { sample: r.x, derivative: r.d, dt };
      this.advance();
      return { prevSample: r.prev, predOriginalSample: r.x0 };
    }
    // Second evaluation: the model saw x~' at sigma_{i+1} = sigmas[i].
    const sigmaNext = this.sigmas[i];
    const out = tf.tidy(() => {
      const x0 = this.denoised(modelOutput, sample, sigmaNext);
      const d2 = tf.div(tf.sub(sample, x0), sigmaNext); // line 7
      const d = tf.div(tf.add(first.derivative, d2), 2);
      return { prevSample: tf.add(first.sample, tf.mul(d, first.dt)), predOriginalSample: x0 }; // line 8
    });
    this.releaseState();
    this.advance();
    return out;
  }
}
