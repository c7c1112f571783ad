/**
 * DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
 * Diffusion Probabilistic Models"), ODE (`dpmpp-2m`) and SDE (`dpmpp-2m-sde`) variants; diffusers'
 * DPMSolverMultistepScheduler with algorithm_type dpmsolver++ / sde-dpmsolver++, solver_type
 * midpoint, lower_order_final, final sigma 0.
 *
 * On the VP sample x_t with alpha_t, sigma_t (a^2 + s^2 = 1), lambda_t = log(alpha_t / sigma_t) and
 * the data prediction x_theta (the x0 estimate; DPM-Solver++ integrates the ODE in x_theta rather
 * than eps because its exponential-integrator form stays stable under large guidance),
 * stepping from s = t_{i-1} to t = t_i with h = lambda_t - lambda_s:
 *
 *   1st order (DPM-Solver++1, = DDIM):
 *     x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) x_theta(x_s, s)
 *   2M (Algorithm 2, DPM-Solver++(2M)), with the previous output m1 at s1 = t_{i-2},
 *     r = h_{i-1} / h_i,  D0 = m0,  D1 = (m0 - m1) / r:
 *     x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) (D0 + D1 / 2)
 *   3M (solverOrder 3, the third-order multistep form of the same expansion):
 *     D1_0 = (m0 - m1) / r0, D1_1 = (m1 - m2) / r1, D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1),
 *     D2 = (D1_0 - D1_1) / (r0 + r1),
 *     x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) D0 + alpha_t ((e^{-h} - 1) / h + 1) D1
 *           - alpha_t ((e^{-h} - 1 + h) / h^2 - 1/2) D2
 *
 * SDE-DPM-Solver++ (the same exponential integrator applied to the reverse SDE in data-prediction
 * form; exact for the linear part, fresh noise z ~ N(0, I) each step):
 *   1st order: x_t = (sigma_t / sigma_s) e^{-h} x_s + alpha_t (1 - e^{-2h}) x_theta + sigma_t sqrt(1 - e^{-2h}) z
 *   2M:        x_t = (sigma_t / sigma_s) e^{-h} x_s + alpha_t (1 - e^{-2h}) (D0 + D1 / 2) + sigma_t sqrt(1 - e^{-2h}) z
 *   3M:        ... + alpha_t ((1 - e^{-2h}) / (-2h) + 1) D1 + alpha_t ((1 - e^{-2h} - 2h) / (2h)^2 - 1/2) D2 + noise
 * With the 1st-order SDE step and an exact x_theta this is DDPM's ancestral posterior (Ho et al. 2020, eq. 7).
 *
 * The multistep warm-up uses lower orders for the first steps (not enough history); the last
 * step is first order (it lands on sigma = 0, where h is infinite and the update is x_0 = x_theta),
 * and with fewer than 15 steps 3M also drops to 2M on the step before (diffusers' lower_order_final).
 */
import * as tf from '@tensorflow/tfjs';
import type { SchedulerConfig } from './config.js';
import { MultistepSchedulerBase } from './sigma-base.js';
import { alphaSigmaFromSigma, lambdaFromSigma } from './sigmas.js';
import type { NoiseSource, StepOutput } from './types.js';

export class DPMSolverMultistepScheduler extends MultistepSchedulerBase {
  /** x_theta of the previous steps, oldest first (at most solverOrder). */
  private history: tf.Tensor[] = [];
  /** How many steps have run in this schedule, capped at solverOrder (diffusers' lower_order_nums). */
  private lowerOrderNums = 0;

  /** config.type picks the variant: 'dpmpp-2m' (the default) or 'dpmpp-2m-sde'. */
  constructor(config: Partial<SchedulerConfig> = {}) {
    super(config, config.type === 'dpmpp-2m-sde' ? 'dpmpp-2m-sde' : 'dpmpp-2m');
  }

  get sde(): boolean {
    return this.config.type === 'dpmpp-2m-sde';
  }

  /** diffusers truncates Karras timesteps for squaredcos_cap_v2 (no rounding, then an int64 cast). */
  protected override karrasTimestep(t: number): number {
    return this.config.betaSchedule === 'cosine' ? Math.trunc(t) : super.karrasTimestep(t);
  }

  protected override releaseState(): void {
    tf.dispose(this.history);
    this.history = [];
    this.lowerOrderNums = 0;
  }

  /** The order of the update at schedule index i (warm-up and lower_order_final, see the header). */
  orderAt(i: number): number {
    const n = this.timesteps.length;
    const order = this.config.solverOrder;
    // Final sigma 0: the last step is always first order.
    if (order === 1 || this.lowerOrderNums < 1 || i === n - 1) return 1;
    if (order === 2 || this.lowerOrderNums < 2 || (i === n - 2 && n < 15)) return 2;
    return 3;
  }

  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, rng?: NoiseSource): StepOutput {
    this.checkShapes(modelOutput, sample);
    const i = this.indexFor(t);
    const order = this.orderAt(i);
    // diffusers draws the SDE noise at every step, the last one (where its weight is 0) included.
    const z = this.sde ? this.drawNoise(rng, sample, t) : null;
    try {
      const sg = this.sigmas;
      const { alpha: aT, sigma: sT } = alphaSigmaFromSigma(sg[i + 1]);
      const { sigma: s0 } = alphaSigmaFromSigma(sg[i]);
      const lT = lambdaFromSigma(sg[i + 1]);
      const l0 = lambdaFromSigma(sg[i]);
      const h = lT - l0; // +Infinity on the last step (sigma = 0): e^{-h} = 0, x_t = x_theta
      const eh = Math.exp(-h);
      const x0 = tf.tidy(() => this.dataPrediction(modelOutput, sample, sg[i]));
      const prev = tf.tidy(() => {
        const m = [...this.history, x0]; // oldest first; m0 = the newest
        const m0 = m[m.length - 1];
        let D1: tf.Tensor | null = null;
        let D2: tf.Tensor | null = null;
        if (order >= 2) {
          const r0 = (l0 - lambdaFromSigma(sg[i - 1])) / h;
          const D1_0 = tf.div(tf.sub(m0, m[m.length - 2]), r0);
          if (order === 2) D1 = D1_0;
          else {
            const l1 = lambdaFromSigma(sg[i - 1]);
            const r1 = (l1 - lambdaFromSigma(sg[i - 2])) / h;
            const D1_1 = tf.div(tf.sub(m[m.length - 2], m[m.length - 3]), r1);
            const diff = tf.sub(D1_0, D1_1);
            D1 = tf.add(D1_0, tf.mul(diff, r0 / (r0 + r1)));
            D2 = tf.div(diff, r0 + r1);
          }
        }
        let x: tf.Tensor;
        if (!this.sde) {
          const c = -aT * (eh - 1); // alpha_t (1 - e^{-h})
          x = tf.add(tf.mul(sample, sT / s0), tf.mul(m0, c));
          if (order === 2) x = tf.add(x, tf.mul(D1!, 0.5 * c));
          if (order === 3) {
            x = tf.add(x, tf.mul(D1!, aT * ((eh - 1) / h + 1)));
            x = tf.sub(x, tf.mul(D2!, aT * ((eh - 1 + h) / (h * h) - 0.5)));
          }
        } else {
          const e2h = Math.exp(-2 * h);
          const c = aT * (1 - e2h);
          x = tf.add(tf.mul(sample, (sT / s0) * eh), tf.mul(m0, c));
          if (order === 2) x = tf.add(x, tf.mul(D1!, 0.5 * c));
          if (order === 3) {
            x = tf.add(x, tf.mul(D1!, aT * ((1 - e2h) / (-2 * h) + 1)));
            x = tf.add(x, tf.mul(D2!, aT * ((1 - e2h - 2 * h) / (2 * h) ** 2 - 0.5)));
          }
          x = tf.add(x, tf.mul(z!, sT * Math.sqrt(1 - e2h)));
        }
        return x;
      });
      this.history.push(x0.clone());
      if (this.history.length > this.config.solverOrder) this.history.shift()!.dispose();
      if (this.lowerOrderNums < this.config.solverOrder) this.lowerOrderNums++;
      this.advance();
      return { prevSample: prev, predOriginalSample: x0 };
    } finally {
      z?.dispose();
    }
  }
}
