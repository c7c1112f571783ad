/**
 * DDPM and DDIM: step math against closed forms, sampler identities, sampling statistics with the
 * exact denoiser of Gaussian data, pinned sampling loops, and tensor leaks.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { Generator } from '../../src/random/generator.js';
import {
  type AnyScheduler,
  DDIMScheduler,
  DDPMScheduler,
  type PredictionType,
  type SchedulerConfig,
  createScheduler,
  toX0AndEps,
  velocity,
} from '../../src/schedulers/index.js';

beforeAll(async () => {
  await initBackend({ backend: 'cpu', quiet: true });
});

function arr(x: tf.Tensor): Float32Array {
  return x.dataSync() as Float32Array;
}

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

type Model = (x: tf.Tensor, t: number) => tf.Tensor;

/** The standard sampling loop; returns the final sample (caller disposes). */
function sample(sched: AnyScheduler, model: Model, shape: number[], seed: number, steps: number): tf.Tensor {
  const rng = new Generator(seed);
  sched.setTimesteps(steps);
  let x = rng.randn(shape);
  for (const t of sched.timesteps) {
    const out = model(x, t);
    const { prevSample, predOriginalSample } = sched.step(out, t, x, rng);
    out.dispose();
    x.dispose();
    predOriginalSample.dispose();
    x = prevSample;
  }
  return x;
}

/**
 * The exact denoiser for data x0 ~ N(0, sd^2 I): with x_t = a x0 + s eps,
 * E[x0 | x_t] = a sd^2 / (a^2 sd^2 + s^2) x_t and E[eps | x_t] = s / (a^2 sd^2 + s^2) x_t.
 */
function gaussianOracle(sched: AnyScheduler, sd: number, type: PredictionType): Model {
  return (x, t) =>
    tf.tidy(() => {
      const ab = sched.alphasCumprod[t];
      const a = Math.sqrt(ab);
      const s = Math.sqrt(1 - ab);
      const d = a * a * sd * sd + s * s;
      const x0 = tf.mul(x, (a * sd * sd) / d);
      const eps = tf.mul(x, s / d);
      if (type === 'epsilon') return eps;
      if (type === 'x0') return x0;
      return velocity(x0, eps, a, s);
    });
}

function stats(x: tf.Tensor): { mean: number; std: number } {
  const d = arr(x);
  let m = 0;
  for (const v of d) m += v;
  m /= d.length;
  let q = 0;
  for (const v of d) q += (v - m) ** 2;
  return { mean: m, std: Math.sqrt(q / d.length) };
}

describe('DDPM step (posterior q(x_{t-1} | x_t, x_0), DDPM eq. 6-7)', () => {
  it('posterior variance beta~_t at chosen t matches numpy', () => {
    const s = new DDPMScheduler();
    // numpy: (1 - ab[t-1]) / (1 - ab[t]) * betas[t], linear 1e-4..0.02, T = 1000
    expect(s.coefficients(1).posteriorVariance).toBeCloseTo(5.4531876613021935e-5, 15);
    expect(s.coefficients(500).posteriorVariance).toBeCloseTo(0.010051335778909593, 14);
    expect(s.coefficients(999).posteriorVariance).toBeCloseTo(0.01999998352656061, 14);
    expect(s.coefficients(500).variance).toBe(s.coefficients(500).posteriorVariance);
    expect(s.coefficients(0).variance).toBe(0);
    const large = new DDPMScheduler({ varianceType: 'fixed-large' });
    expect(large.coefficients(500).variance).toBeCloseTo(1e-4 + (0.02 - 1e-4) * (500 / 999), 14);
  });

  it('the mean equals DDPM eq. 11: (x_t - beta_t / sqrt(1 - alphaBar_t) eps) / sqrt(alpha_t)', () => {
    const s = new DDPMScheduler();
    const t = 500;
    const x = new Generator(1).randn([3, 5]);
    const eps = new Generator(2).randn([3, 5]);
    const { prevSample, predOriginalSample } = s.step(eps, t, x, new Generator(7));
    const z = new Generator(7).randn([3, 5]);
    const beta = 1e-4 + (0.02 - 1e-4) * (t / 999);
    const ab = s.alphasCumprod[t];
    const expected = tf.tidy(() =>
      tf.add(tf.div(tf.sub(x, tf.mul(eps, beta / Math.sqrt(1 - ab))), Math.sqrt(1 - beta)), tf.mul(z, Math.sqrt(s.coefficients(t).variance))),
    );
    expect(maxAbsDiff(prevSample, expected)).toBeLessThan(1e-5);
    // x0 estimate: DDPM eq. 15
    const x0 = tf.tidy(() => tf.div(tf.sub(x, tf.mul(eps, Math.sqrt(1 - ab))), Math.sqrt(ab)));
    expect(maxAbsDiff(predOriginalSample, x0)).toBeLessThan(1e-4);
    tf.dispose([x, eps, prevSample, predOriginalSample, z, expected, x0]);
  });

  it('the last step returns the x0 estimate and draws no noise', () => {
    const s = new DDPMScheduler({ numTrainTimesteps: 100, timestepSpacing: 'leading', stepsOffset: 1 });
    s.setTimesteps(10);
    expect(s.timesteps.at(-1)).toBe(1);
    const x = new Generator(1).randn([4]);
    const out = new Generator(2).randn([4]);
    const rng = new Generator(3);
    const before = rng.getState();
    const { prevSample, predOriginalSample } = s.step(out, 1, x, rng);
    expect(rng.getState()).toEqual(before);
    expect(maxAbsDiff(prevSample, predOriginalSample)).toBeLessThan(1e-6);
    tf.dispose([x, out, prevSample, predOriginalSample]);
  });

  it('clipSample clips the x0 estimate to the range', () => {
    const s = new DDPMScheduler({ clipSample: true, clipSampleRange: 0.5 });
    const x = tf.mul(new Generator(1).randn([64]), 5);
    const out = new Generator(2).randn([64]);
    const { prevSample, predOriginalSample } = s.step(out, 10, x, new Generator(3));
    const d = arr(predOriginalSample);
    expect(Math.max(...d)).toBeLessThanOrEqual(0.5);
    expect(Math.min(...d)).toBeGreaterThanOrEqual(-0.5);
    expect(Math.max(...d)).toBe(0.5);
    tf.dispose([x, out, prevSample, predOriginalSample]);
  });

  it('a noisy step without a Generator, or a timestep outside the schedule, is an error', () => {
    const s = new DDPMScheduler();
    s.setTimesteps(10);
    const x = tf.zeros([2]);
    expect(() => s.step(x, 900, x)).toThrow(/needs a Generator/);
    expect(() => s.step(x, 901, x, new Generator(0))).toThrow(/timestep 901 is not in the current schedule \(10 steps: 900, 800/);
    expect(() => s.step(x, 1000, x, new Generator(0))).toThrow(/timestep 1000 is not an integer in \[0, 999\]/);
    x.dispose();
  });
});

describe('DDIM (Song et al. 2021, eq. 12 and 16)', () => {
  it('eta = 0 is deterministic: no noise drawn, same result for any Generator', () => {
    const s = new DDIMScheduler({ eta: 0 });
    s.setTimesteps(20);
    const x = new Generator(1).randn([8]);
    const out = new Generator(2).randn([8]);
    const r1 = new Generator(3);
    const st = r1.getState();
    const a = s.step(out, s.timesteps[3], x, r1);
    expect(r1.getState()).toEqual(st);
    const b = s.step(out, s.timesteps[3], x);
    expect(maxAbsDiff(a.prevSample, b.prevSample)).toBe(0);
    tf.dispose([x, out, a.prevSample, a.predOriginalSample, b.prevSample, b.predOriginalSample]);
  });

  it('eta = 0 with the exact eps keeps x_t on the line sqrt(ab) x0 + sqrt(1 - ab) eps and ends at x0', () => {
    for (const spacing of ['leading', 'trailing', 'linspace'] as const) {
      for (const steps of [7, 10]) {
        const s = new DDIMScheduler({ timestepSpacing: spacing });
        s.setTimesteps(steps);
        const x0 = new Generator(10).randn([2, 3]);
        const eps = new Generator(11).randn([2, 3]);
        const t0 = s.timesteps[0];
        let x = s.addNoise(x0, eps, t0);
        for (const t of s.timesteps) {
          const { prevSample, predOriginalSample } = s.step(eps, t, x);
          expect(maxAbsDiff(predOriginalSample, x0)).toBeLessThan(1e-4);
          const prevT = s.previousTimestep(t);
          const ab = s.alphaBarAt(prevT);
          const onLine = tf.tidy(() => tf.add(tf.mul(x0, Math.sqrt(ab)), tf.mul(eps, Math.sqrt(1 - ab))));
          expect(maxAbsDiff(prevSample, onLine)).toBeLessThan(1e-4);
          tf.dispose([x, predOriginalSample, onLine]);
          x = prevSample;
        }
        expect(maxAbsDiff(x, x0)).toBeLessThan(1e-4);
        tf.dispose([x, x0, eps]);
      }
    }
  });

  it('sigma_t follows eq. 16; eta = 1 gives the DDPM posterior variance', () => {
    const ddim = new DDIMScheduler({ eta: 1 });
    const ddpm = new DDPMScheduler();
    for (const t of [1, 10, 500, 999]) expect(ddim.coefficients(t).variance).toBeCloseTo(ddpm.coefficients(t).posteriorVariance, 14);
    ddim.setTimesteps(10);
    const c = ddim.coefficients(500, 0.5);
    const ab = ddim.alphasCumprod[500];
    const abp = ddim.alphasCumprod[400];
    expect(c.variance).toBeCloseTo(0.25 * ((1 - abp) / (1 - ab)) * (1 - ab / abp), 15);
    expect(c.dirCoef).toBeCloseTo(Math.sqrt(1 - abp - c.variance), 15);
  });

  it('final alpha: setAlphaToOne true -> 1, false -> alphaBar_0 (as diffusers)', () => {
    const one = new DDIMScheduler({ setAlphaToOne: true });
    const ab0 = new DDIMScheduler({ setAlphaToOne: false });
    one.setTimesteps(10);
    ab0.setTimesteps(10);
    expect(one.coefficients(0).alphaBarPrev).toBe(1);
    expect(ab0.coefficients(0).alphaBarPrev).toBe(ab0.alphasCumprod[0]);
  });

  it('DDIM eta = 1 on all 1000 steps is DDPM (fixed small): same seed, same sample', () => {
    const ddpm = createScheduler({ type: 'ddpm' });
    const ddim = createScheduler({ type: 'ddim', eta: 1 });
    const a = sample(ddpm, gaussianOracle(ddpm, 0.5, 'epsilon'), [64], 5, 1000);
    const b = sample(ddim, gaussianOracle(ddim, 0.5, 'epsilon'), [64], 5, 1000);
    expect(maxAbsDiff(a, b)).toBeLessThan(2e-4);
    tf.dispose([a, b]);
  });
});

/**
 * Var(x_0) after sampling N(0, 1) noise with the exact denoiser of N(0, sd^2) data: every step is
 * linear-Gaussian, x_prev = c x_t + sigma z, so Var_prev = c^2 Var + sigma^2, with c written out
 * from DDPM eq. 7 (posterior mean) or DDIM eq. 12/16 in scalar form. Few-step samplers are biased
 * (this is the discretisation error, not a bug), so each sampler is held to its own exact value.
 */
function exactFinalStd(sched: AnyScheduler, sd: number, steps: number): number {
  sched.setTimesteps(steps);
  const ts = sched.timesteps;
  const eta = sched.config.type === 'ddim' ? sched.config.eta : 0;
  let v = 1;
  for (let i = 0; i < ts.length; i++) {
    const ab = sched.alphasCumprod[ts[i]];
    const last = i + 1 === ts.length;
    const abp = last ? (sched.config.type === 'ddim' && !sched.config.setAlphaToOne ? sched.alphasCumprod[0] : 1) : sched.alphasCumprod[ts[i + 1]];
    const a = Math.sqrt(ab);
    const s = Math.sqrt(1 - ab);
    const d = a * a * sd * sd + s * s;
    const k0 = (a * sd * sd) / d; // x0_hat = k0 x_t
    const ke = s / d; // eps_hat = ke x_t
    let c: number;
    let sig2: number;
    if (sched.config.type === 'ddim') {
      sig2 = eta * eta * ((1 - abp) / (1 - ab)) * (1 - ab / abp);
      c = Math.sqrt(abp) * k0 + Math.sqrt(Math.max(0, 1 - abp - sig2)) * ke;
    } else {
      const alpha = ab / abp;
      const beta = 1 - alpha;
      c = (Math.sqrt(abp) * beta * k0) / (1 - ab) + (Math.sqrt(alpha) * (1 - abp)) / (1 - ab);
      sig2 = last ? 0 : sched.config.varianceType === 'fixed-small' ? ((1 - abp) / (1 - ab)) * beta : beta;
    }
    v = c * c * v + sig2;
  }
  return Math.sqrt(v);
}

describe('sampling statistics with the exact denoiser of N(0, 0.5^2) data', () => {
  const sd = 0.5;
  const n = 4000;
  const cases: [string, Partial<SchedulerConfig>, number][] = [
    ['DDPM fixed-small, 1000 steps', { type: 'ddpm' }, 1000],
    ['DDPM fixed-large, 1000 steps', { type: 'ddpm', varianceType: 'fixed-large' }, 1000],
    ['DDIM eta=1, 1000 steps', { type: 'ddim', eta: 1 }, 1000],
    ['DDPM 50 steps, cosine, v-prediction', { type: 'ddpm', betaSchedule: 'cosine', predictionType: 'v' }, 50],
    ['DDIM eta=0, 50 steps, trailing', { type: 'ddim', timestepSpacing: 'trailing' }, 50],
    [
      'DDIM eta=0, 25 steps, scaled-linear, x0-prediction',
      { type: 'ddim', betaSchedule: 'scaled-linear', betaStart: 0.00085, betaEnd: 0.012, predictionType: 'x0' },
      25,
    ],
    [
      'DDIM eta=0.5, 30 steps, v, zero terminal SNR',
      { type: 'ddim', eta: 0.5, predictionType: 'v', rescaleBetasZeroSnr: true, timestepSpacing: 'trailing' },
      30,
    ],
  ];
  for (const [name, config, steps] of cases) {
    it(name, () => {
      const s = createScheduler(config);
      const x = sample(s, gaussianOracle(s, sd, s.config.predictionType), [n], 123, steps);
      const { mean, std } = stats(x);
      const expected = exactFinalStd(s, sd, steps);
      // sampling error of the std of 4000 normals is ~ std / sqrt(2n) = 0.0056 (x 3.5)
      expect(Math.abs(mean)).toBeLessThan(0.03);
      expect(Math.abs(std - expected)).toBeLessThan(0.02);
      // the many-step samplers reproduce the data distribution itself
      if (steps === 1000) expect(Math.abs(expected - sd)).toBeLessThan(0.01);
      x.dispose();
    });
  }
});

describe('pinned sampling loops (dummy model out = x * t / (t + 1))', () => {
  const dummy: Model = (x, t) => tf.mul(x, t / (t + 1));
  const pins: [string, Partial<SchedulerConfig>, number, number][] = [
    ['DDPM, linear, 50 leading steps', { type: 'ddpm' }, 50, -0.48627353],
    [
      'DDPM, cosine, fixed-large, v, 20 linspace steps',
      { type: 'ddpm', betaSchedule: 'cosine', varianceType: 'fixed-large', predictionType: 'v', timestepSpacing: 'linspace' },
      20,
      -2.2596595,
    ],
    [
      'DDIM eta=0, scaled-linear, 20 trailing steps',
      { type: 'ddim', betaSchedule: 'scaled-linear', betaStart: 0.00085, betaEnd: 0.012, timestepSpacing: 'trailing' },
      20,
      -2.3570817,
    ],
    [
      'DDIM eta=0.7, sigmoid, 13 linspace steps, clip',
      { type: 'ddim', eta: 0.7, betaSchedule: 'sigmoid', timestepSpacing: 'linspace', clipSample: true },
      13,
      2.0811336,
    ],
  ];
  for (const [name, config, steps, pinned] of pins) {
    it(name, () => {
      const s = createScheduler(config);
      const x = sample(s, dummy, [2, 4, 4, 3], 42, steps);
      const sum = tf.tidy(() => tf.sum(x).dataSync()[0]);
      x.dispose();
      expect(sum).toBeCloseTo(pinned, 3);
    });
  }
});

describe('addNoise, conversions, leaks', () => {
  it('addNoise with per-sample timesteps, then the exact inverse', () => {
    const s = new DDPMScheduler({ betaSchedule: 'scaled-linear', betaStart: 0.00085, betaEnd: 0.012 });
    const x0 = new Generator(1).randn([4, 3, 3, 2]);
    const eps = new Generator(2).randn([4, 3, 3, 2]);
    const ts = [0, 10, 500, 999];
    for (const t of [ts, Int32Array.from(ts)]) {
      const xt = s.addNoise(x0, eps, t);
      const x = arr(xt);
      const a = arr(x0);
      const e = arr(eps);
      for (let b = 0; b < 4; b++) {
        const ab = s.alphasCumprod[ts[b]];
        for (let i = 0; i < 18; i++) {
          const k = b * 18 + i;
          expect(x[k]).toBeCloseTo(Math.sqrt(ab) * a[k] + Math.sqrt(1 - ab) * e[k], 5);
          // inverse: x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab)
          expect((x[k] - Math.sqrt(1 - ab) * e[k]) / Math.sqrt(ab)).toBeCloseTo(a[k], ts[b] === 999 ? 2 : 4);
        }
      }
      xt.dispose();
    }
    const tt = tf.tensor1d(ts, 'int32');
    const viaTensor = s.addNoise(x0, eps, tt);
    const viaArray = s.addNoise(x0, eps, ts);
    expect(maxAbsDiff(viaTensor, viaArray)).toBe(0);
    const scalar = s.addNoise(x0, eps, 500);
    const perSample = s.addNoise(x0, eps, [500, 500, 500, 500]);
    expect(maxAbsDiff(scalar, perSample)).toBeLessThan(1e-6);
    expect(() => s.addNoise(x0, eps, [1, 2])).toThrow(/got 2 timesteps for a batch of 4/);
    expect(() => s.addNoise(x0, eps, 1000)).toThrow(/timestep 1000 is not an integer in \[0, 999\]/);
    expect(() => s.addNoise(x0, eps, 2.5)).toThrow(/timestep 2.5/);
    tf.dispose([x0, eps, tt, viaTensor, viaArray, scalar, perSample]);
  });

  it('v-prediction round trip: (x0, eps) -> v -> (x0, eps)', () => {
    const x0 = new Generator(1).randn([50]);
    const eps = new Generator(2).randn([50]);
    for (const ab of [0.999, 0.5, 0.01]) {
      const a = Math.sqrt(ab);
      const s = Math.sqrt(1 - ab);
      const xt = tf.add(tf.mul(x0, a), tf.mul(eps, s));
      const v = velocity(x0, eps, a, s);
      // v = a eps - s x0 (Salimans & Ho 2022) checked elementwise
      const vd = arr(v);
      const x0d = arr(x0);
      const ed = arr(eps);
      for (let i = 0; i < 50; i++) expect(vd[i]).toBeCloseTo(a * ed[i] - s * x0d[i], 5);
      const back = toX0AndEps('v', v, xt, a, s);
      expect(maxAbsDiff(back.x0, x0)).toBeLessThan(1e-5);
      expect(maxAbsDiff(back.eps, eps)).toBeLessThan(1e-5);
      const fromEps = toX0AndEps('epsilon', eps, xt, a, s);
      expect(maxAbsDiff(fromEps.x0, x0)).toBeLessThan(ab < 0.05 ? 1e-4 : 1e-5);
      const fromX0 = toX0AndEps('x0', x0, xt, a, s);
      expect(maxAbsDiff(fromX0.eps, eps)).toBeLessThan(ab > 0.99 ? 1e-3 : 1e-5);
      tf.dispose([xt, v, back.x0, back.eps, fromEps.x0, fromEps.eps, fromX0.x0, fromX0.eps]);
    }
    tf.dispose([x0, eps]);
  });

  it('step and addNoise leak no tensors and dispose none of their inputs', () => {
    const configs: Partial<SchedulerConfig>[] = [
      { type: 'ddpm' },
      { type: 'ddpm', predictionType: 'v', clipSample: true },
      { type: 'ddim', eta: 0.5, clipSample: true },
      { type: 'ddim', predictionType: 'x0' },
    ];
    const x = new Generator(1).randn([2, 4, 4, 1]);
    const out = new Generator(2).randn([2, 4, 4, 1]);
    for (const c of configs) {
      const s = createScheduler(c);
      s.setTimesteps(10);
      const before = tf.memory().numTensors;
      const r = s.step(out, s.timesteps[2], x, new Generator(3));
      const n1 = s.addNoise(x, out, 17);
      const n2 = s.addNoise(x, out, [3, 900]);
      expect(tf.memory().numTensors).toBe(before + 4);
      tf.dispose([r.prevSample, r.predOriginalSample, n1, n2]);
      expect(tf.memory().numTensors).toBe(before);
      expect(x.isDisposed || out.isDisposed).toBe(false);
    }
    tf.dispose([x, out]);
  });
});
