/**
 * UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
 * Diffusion Models"): the multistep predictor UniP-p followed, at the next step, by the corrector
 * UniC-p, which reuses the model evaluation the next step makes anyway (no extra evaluations).
 * Data-prediction form (x0 model outputs, their "predict x0" variant) with B(h) = e^h - 1 (their
 * B_2, diffusers' "bh2"); diffusers' UniPCMultistepScheduler defaults, lower_order_final, final sigma 0.
 *
 * In lambda = log(alpha / sigma) on the VP sample, from s0 = t_i to t = t_{i+1}, h = lambda_t - lambda_s0,
 * with hh = -h (data prediction), phi_1 = e^{hh} - 1, B(h) = e^{hh} - 1, and for the previous outputs
 * m_k at s_k: r_k = (lambda_{s_k} - lambda_{s0}) / h, D_k = (m_k - m0) / r_k (divided differences):
 *
 *   UniP-p:  x_t = (sigma_t / sigma_s0) x_s0 - alpha_t phi_1 m0 - alpha_t B(h) sum_k rho^p_k D_k
 *   UniC-p:  x^c_t = (sigma_t / sigma_s0) x_s0 - alpha_t phi_1 m0
 *                    - alpha_t B(h) (sum_k rho^c_k D_k + rho^c_p (m_t - m0))
 * where m_t is the x0 estimate at the predicted x_t. The rho solve the order conditions
 * R rho = b with R_{jk} = r_k^{j-1} (r_p = 1) and b_j = j! h phi_{j+1}(h) / B(h), phi_k the
 * exponential-integrator functions (phi_{k+1}(h) = (phi_k(h) - 1/k!) / h); for order 2 the
 * predictor uses rho = 1/2 and the order-1 corrector rho = 1/2, as the reference implementation.
 * The corrected x^c_t replaces x_t as the start of the next predictor step; the final sample is
 * not corrected. The predictor runs at most min(solverOrder, steps left, steps so far + 1).
 */
import * as tf from '@tensorflow/tfjs';
import type { SchedulerConfig } from './config.js';
import { MultistepSchedulerBase } from './sigma-base.js';
import { alphaSigmaFromSigma, lambdaFromSigma } from './sigmas.js';
import type { NoiseSource, StepOutput } from './types.js';

/** Solves A x = b (n <= 3) by Gaussian elimination with partial pivoting, in float64. */
export function solveSmall(A: number[][], b: number[]): number[] {
  const n = b.length;
  const M = A.map((row, i) => [...row.slice(0, n), b[i]]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(M[r][c]) > Math.abs(M[p][c])) p = r;
    [M[c], M[p]] = [M[p], M[c]];
    if (M[c][c] === 0) throw new Error('UniPC: singular order-condition system (repeated noise levels?)');
    for (let r = c + 1; r < n; r++) {
      const f = M[r][c] / M[c][c];
      for (let k = c; k <= n; k++) M[r][k] -= f * M[c][k];
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let s = M[r][n];
    for (let k = r + 1; k < n; k++) s -= M[r][k] * x[k];
    x[r] = s / M[r][r];
  }
  return x;
}

/** The scalars of one UniP/UniC update of the given order (see the header). */
interface UniCoefficients {
  /** sigma_t / sigma_s0 (VP sigmas). */
  ratio: number;
  alphaT: number;
  hPhi1: number;
  Bh: number;
  /** r_k of the previous outputs, k = 1 .. order-1. */
  rks: number[];
  /** b_j, j = 1 .. order. */
  b: number[];
}

function coefficients(sigmaT: number, sigmaS0: number, prevSigmas: number[], order: number): UniCoefficients {
  const { alpha: alphaT, sigma: sT } = alphaSigmaFromSigma(sigmaT);
  const { sigma: s0 } = alphaSigmaFromSigma(sigmaS0);
  const l0 = lambdaFromSigma(sigmaS0);
  const h = lambdaFromSigma(sigmaT) - l0; // +Infinity when sigma_t = 0 (last step): phi_1 = B = -1
  const rks = prevSigmas.slice(0, order - 1).map((s) => (lambdaFromSigma(s) - l0) / h);
  const hh = -h;
  const hPhi1 = Math.expm1(hh);
  const Bh = Math.expm1(hh);
  let hPhiK = hPhi1 / hh - 1;
  let factorial = 1;
  const b: number[] = [];
  for (let j = 1; j <= order; j++) {
    b.push((hPhiK * factorial) / Bh);
    factorial *= j + 1;
    hPhiK = hPhiK / hh - 1 / factorial;
  }
  return { ratio: sT / s0, alphaT, hPhi1, Bh, rks, b };
}

/** R_{jk} = r_k^{j-1} over the given r (with r_p = 1 appended by the caller where it belongs). */
function orderMatrix(rs: number[]): number[][] {
  return rs.map((_, j) => rs.map((r) => r ** j));
}

export class UniPCMultistepScheduler extends MultistepSchedulerBase {
  /** x0 estimates of the previous steps, oldest first (at most solverOrder). */
  private history: tf.Tensor[] = [];
  /** The sample the last predictor started from (UniC corrects from it). */
  private lastSample: tf.Tensor | null = null;
  private lowerOrderNums = 0;
  /** The order of the last predictor step, which the corrector matches. */
  private thisOrder = 0;

  constructor(config: Partial<SchedulerConfig> = {}) {
    super(config, 'unipc');
  }

  protected override releaseState(): void {
    tf.dispose(this.history);
    this.history = [];
    this.lastSample?.dispose();
    this.lastSample = null;
    this.lowerOrderNums = 0;
    this.thisOrder = 0;
  }

  step(modelOutput: tf.Tensor, t: number, sample: tf.Tensor, _rng?: NoiseSource): StepOutput {
    this.checkShapes(modelOutput, sample);
    const i = this.indexFor(t);
    const sg = this.sigmas;
    const n = this.timesteps.length;
    const x0 = tf.tidy(() => this.dataPrediction(modelOutput, sample, sg[i]));

    // UniC-p on the sample the previous predictor produced, with this step's model output.
    let start = sample;
    if (i > 0 && this.lastSample !== null) {
      const last = this.lastSample;
      const pc = this.thisOrder;
      const prevSigmas = Array.from({ length: pc - 1 }, (_, k) => sg[i - (k + 2)]);
      const c = coefficients(sg[i], sg[i - 1], prevSigmas, pc);
      const rhos = pc === 1 ? [0.5] : solveSmall(orderMatrix([...c.rks, 1]), c.b);
      const hist = this.history;
      start = tf.tidy(() => {
        const m0 = hist[hist.length - 1];
        let res = tf.mul(tf.sub(x0, m0), rhos[pc - 1]); // rho^c_p (m_t - m0)
        for (let k = 1; k < pc; k++) res = tf.add(res, tf.mul(tf.div(tf.sub(hist[hist.length - 1 - k], m0), c.rks[k - 1]), rhos[k - 1]));
        const base = tf.sub(tf.mul(last, c.ratio), tf.mul(m0, c.alphaT * c.hPhi1));
        return tf.sub(base, tf.mul(res, c.alphaT * c.Bh));
      });
    }

    this.history.push(x0.clone());
    if (this.history.length > this.config.solverOrder) this.history.shift()!.dispose();
    const order = Math.min(this.config.solverOrder, n - i, this.lowerOrderNums + 1);
    this.thisOrder = order;
    this.lastSample?.dispose();
    this.lastSample = start === sample ? sample.clone() : start;

    // UniP-p from the (corrected) sample to sigma_{i+1}.
    const prevSigmas = Array.from({ length: order - 1 }, (_, k) => sg[i - (k + 1)]);
    const c = coefficients(sg[i + 1], sg[i], prevSigmas, order);
    const rhos = order === 1 ? [] : order === 2 ? [0.5] : solveSmall(orderMatrix(c.rks), c.b.slice(0, order - 1));
    const hist = this.history;
    const from = this.lastSample;
    const prev = tf.tidy(() => {
      const m0 = hist[hist.length - 1];
      let x = tf.sub(tf.mul(from, c.ratio), tf.mul(m0, c.alphaT * c.hPhi1));
      if (rhos.length > 0) {
        let res = tf.zerosLike(m0);
        for (let k = 1; k < order; k++) res = tf.add(res, tf.mul(tf.div(tf.sub(hist[hist.length - 1 - k], m0), c.rks[k - 1]), rhos[k - 1]));
        x = tf.sub(x, tf.mul(res, c.alphaT * c.Bh));
      }
      return x;
    });

    if (this.lowerOrderNums < this.config.solverOrder) this.lowerOrderNums++;
    this.advance();
    return { prevSample: prev, predOriginalSample: x0 };
  }
}
