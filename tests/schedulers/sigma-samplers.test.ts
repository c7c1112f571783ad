/**
 * Euler, Euler a, Heun, DPM++ 2M (SDE), UniPC: the sampling-loop contract (scaleModelInput,
 * initNoiseSigma, Heun's repeated timesteps, state and its release), Karras sigmas, errors,
 * determinism, tensor leaks, and sampling Gaussian data with its exact denoiser. Equality with
 * diffusers is in diffusers-fixtures.test.ts.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { Generator } from '../../src/random/generator.js';
import {
  DPMSolverMultistepScheduler,
  EulerAncestralScheduler,
  EulerScheduler,
  HeunScheduler,
  type NoiseSource,
  SIGMA_SCHEDULER_TYPES,
  type SchedulerConfig,
  type SchedulerType,
  SigmaSchedulerBase,
  UniPCMultistepScheduler,
  createScheduler,
  karrasSigmas,
  kdiffusionTimesteps,
  multistepTimesteps,
  sigmaToTimestep,
  solveSmall,
} from '../../src/schedulers/index.js';

beforeAll(async () => {
  await initBackend({ backend: 'cpu', quiet: true });
});

/** SD 1.5's training schedule with SD's leading spacing and offset. */
const SD: Partial<SchedulerConfig> = { betaSchedule: 'scaled-linear', betaStart: 0.00085, betaEnd: 0.012, timestepSpacing: 'leading', stepsOffset: 1 };

type Model = (input: tf.Tensor, t: number, sigma: number) => tf.Tensor;

/** The loop of types.ts; the model also gets the sigma of the call (for exact oracles). */
function sample(s: SigmaSchedulerBase, model: Model, x0: tf.Tensor, rng: NoiseSource | undefined): tf.Tensor {
  let x = tf.tidy(() => tf.mul(x0, s.initNoiseSigma));
  for (const t of s.timesteps) {
    const input = s.scaleModelInput(x, t);
    const out = model(input, t, s.sigmas[s.stepIndex!]);
    const { prevSample, predOriginalSample } = s.step(out, t, x, rng);
    tf.dispose([input, out, x, predOriginalSample]);
    x = prevSample;
  }
  return x;
}

function build(type: SchedulerType, extra: Partial<SchedulerConfig> = {}): SigmaSchedulerBase {
  return createScheduler({ ...SD, ...extra, type }) as SigmaSchedulerBase;
}

describe('Karras sigmas and timestep tables', () => {
  it('Karras et al. 2022 eq. 5: ends at sigma_max and sigma_min, sigma^(1/7) equally spaced', () => {
    const s = karrasSigmas(0.03, 14.6, 12);
    expect(s[0]).toBeCloseTo(14.6, 12);
    expect(s[11]).toBeCloseTo(0.03, 14);
    const roots = Array.from(s, (v) => v ** (1 / 7));
    const gaps = roots.slice(1).map((r, i) => r - roots[i]);
    for (const g of gaps) expect(g).toBeCloseTo(gaps[0], 12);
    expect(gaps[0]).toBeLessThan(0);
  });

  it('sigmaToTimestep inverts the training table and interpolates in log sigma', () => {
    const e = new EulerScheduler(SD);
    const logs = e.logTrainSigmas;
    for (const t of [0, 1, 250, 998, 999]) expect(sigmaToTimestep(e.trainSigmas[t], logs)).toBeCloseTo(t, 9);
    const mid = Math.sqrt(e.trainSigmas[400] * e.trainSigmas[401]); // halfway in log sigma
    expect(sigmaToTimestep(mid, logs)).toBeCloseTo(400.5, 9);
    expect(sigmaToTimestep(1e-9, logs)).toBe(0);
    expect(sigmaToTimestep(1e9, logs)).toBe(999);
  });

  it("the two families' spacings (diffusers' values for T = 1000)", () => {
    expect(kdiffusionTimesteps(1000, 10, 'leading', 1)).toEqual([901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    expect(multistepTimesteps(1000, 10, 'leading', 1)).toEqual([901, 811, 721, 631, 541, 451, 361, 271, 181, 91]);
    expect(kdiffusionTimesteps(1000, 4, 'linspace')).toEqual([999, 666, 333, 0]);
    expect(kdiffusionTimesteps(1000, 7, 'linspace')[1]).toBe(Math.fround(832.5));
    expect(multistepTimesteps(1000, 10, 'linspace')).toEqual([999, 899, 799, 699, 599, 500, 400, 300, 200, 100]);
    expect(multistepTimesteps(1000, 10, 'trailing')).toEqual(kdiffusionTimesteps(1000, 10, 'trailing'));
    expect(() => kdiffusionTimesteps(1000, 0, 'leading')).toThrow(/integer from 1 to numTrainTimesteps \(1000\), got 0/);
    expect(() => multistepTimesteps(1000, 999, 'leading', 5)).toThrow(/gives timestep 1004, outside \[0, 999\]/);
    expect(() => multistepTimesteps(1000, 1000, 'leading')).toThrow(/^leading spacing with 1000 steps repeats timestep 0; use fewer than 1000 steps$/);
    expect(() => multistepTimesteps(1000, 1000, 'linspace')).toThrow(/^linspace spacing with 1000 steps repeats timestep/);
    expect(multistepTimesteps(1000, 1000, 'trailing').at(-1)).toBe(0);
  });

  it('useKarrasSigmas: Euler spans the spaced range, DPM-Solver++ the whole training range, rounded', () => {
    const e = build('euler', { useKarrasSigmas: true });
    e.setTimesteps(10);
    expect(e.sigmas[0]).toBeCloseTo(e.trainSigmas[901], 12);
    expect(e.sigmas[9]).toBeCloseTo(e.trainSigmas[1], 12);
    expect(e.sigmas[10]).toBe(0);
    expect(Number.isInteger(e.timesteps[3])).toBe(false);
    const d = build('dpmpp-2m', { useKarrasSigmas: true });
    d.setTimesteps(10);
    expect(d.sigmas[0]).toBeCloseTo(d.trainSigmas[999], 12);
    expect(d.sigmas[9]).toBeCloseTo(d.trainSigmas[0], 12);
    expect(d.timesteps.every(Number.isInteger)).toBe(true);
  });
});

describe('the sampling-loop contract', () => {
  it('initNoiseSigma: sigma_max, or sqrt(sigma_max^2 + 1) with leading spacing; 1 for the VP solvers', () => {
    const lead = build('euler');
    lead.setTimesteps(10);
    expect(lead.initNoiseSigma).toBeCloseTo(Math.sqrt(lead.trainSigmas[901] ** 2 + 1), 12);
    const lin = build('heun', { timestepSpacing: 'linspace' });
    lin.setTimesteps(10);
    expect(lin.initNoiseSigma).toBeCloseTo(lin.trainSigmas[999], 12);
    for (const t of ['dpmpp-2m', 'dpmpp-2m-sde', 'unipc', 'ddim', 'ddpm'] as const) expect(createScheduler({ ...SD, type: t }).initNoiseSigma).toBe(1);
  });

  it('scaleModelInput: x / sqrt(sigma^2 + 1) for Euler/Heun, an equal new tensor otherwise', () => {
    const x = new Generator(1).randn([1, 2, 2, 3]);
    for (const type of [...SIGMA_SCHEDULER_TYPES, 'ddpm', 'ddim'] as const) {
      const s = createScheduler({ ...SD, type });
      s.setTimesteps(10);
      const t = s.timesteps[0];
      const y = s.scaleModelInput(x, t);
      expect(y).not.toBe(x);
      const k = s instanceof SigmaSchedulerBase && ['euler', 'euler-ancestral', 'heun'].includes(type) ? 1 / Math.sqrt(s.sigmas[0] ** 2 + 1) : 1;
      const d = tf.tidy(() => tf.max(tf.abs(tf.sub(y, tf.mul(x, k)))).dataSync()[0]);
      expect(d).toBeLessThan(1e-6);
      y.dispose();
      s.reset();
    }
    x.dispose();
  });

  it('Heun lists every timestep but the first twice: n steps, 2n - 1 model evaluations', () => {
    const h = build('heun') as HeunScheduler;
    h.setTimesteps(5);
    expect(h.numInferenceSteps).toBe(5);
    expect(h.timesteps).toEqual([801, 601, 601, 401, 401, 201, 201, 1, 1]);
    expect(Array.from(h.sigmas.slice(1, 3))).toEqual([h.trainSigmas[601], h.trainSigmas[601]]);
    expect(h.sigmas.at(-1)).toBe(0);
    // Counting calls: evaluations alternate first-order / second-order after the first.
    const x = tf.zeros([1, 1, 1, 2]);
    const orders: boolean[] = [];
    let cur = x.clone();
    for (const t of h.timesteps) {
      orders.push(h.stateInFirstOrder);
      const out = tf.onesLike(cur);
      const r = h.step(out, t, cur);
      tf.dispose([out, cur, r.predOriginalSample]);
      cur = r.prevSample;
    }
    expect(orders).toEqual([true, false, true, false, true, false, true, false, true]);
    tf.dispose([x, cur]);
  });

  it('stochastic samplers need a noise source; the deterministic ones draw nothing', () => {
    const x = tf.ones([1, 2, 2, 1]);
    for (const type of SIGMA_SCHEDULER_TYPES) {
      const s = build(type);
      s.setTimesteps(4);
      const rng = new Generator(3);
      const st = rng.getState();
      if (type === 'euler-ancestral' || type === 'dpmpp-2m-sde') {
        expect(() => s.step(x, s.timesteps[0], x)).toThrow(new RegExp(`^${type} step at t=${s.timesteps[0]} adds noise and needs a Generator \\(rng\\)$`));
      } else {
        const r = s.step(x, s.timesteps[0], x, rng);
        expect(rng.getState()).toEqual(st);
        tf.dispose([r.prevSample, r.predOriginalSample]);
      }
      s.reset();
    }
    x.dispose();
  });

  it('same seed, same sample; another seed, another sample (Euler a, DPM++ 2M SDE)', () => {
    const x0 = new Generator(1).randn([1, 4, 4, 2]);
    const model: Model = (input) => tf.mul(input, 0.3);
    for (const type of ['euler-ancestral', 'dpmpp-2m-sde'] as const) {
      const run = (seed: number): Float32Array => {
        const s = build(type);
        s.setTimesteps(8);
        const y = sample(s, model, x0, new Generator(seed));
        const d = y.dataSync() as Float32Array;
        y.dispose();
        return d;
      };
      expect(run(5)).toEqual(run(5));
      expect(Array.from(run(5))).not.toEqual(Array.from(run(6)));
    }
    x0.dispose();
  });

  it('errors: no schedule, a timestep out of order or not in the schedule, a finished schedule, shape mismatch', () => {
    const x = tf.zeros([1, 2, 2, 1]);
    const e = new EulerScheduler(SD);
    expect(() => e.step(x, 901, x)).toThrow(/^euler: call setTimesteps\(n\) before sampling$/);
    e.setTimesteps(3);
    expect(e.timesteps).toEqual([667, 334, 1]);
    expect(() => e.step(x, 500, x)).toThrow(/^timestep 500 is not in the current schedule \(3 entries: 667, 334, 1\); call setTimesteps first$/);
    const r = e.step(x, 667, x);
    expect(() => e.step(x, 1, x)).toThrow(/^euler: got timestep 1 but call 1 of the schedule is at timestep 334; this sampler keeps state/);
    tf.dispose([r.prevSample, r.predOriginalSample]);
    for (const t of [334, 1]) {
      const q = e.step(x, t, x);
      tf.dispose([q.prevSample, q.predOriginalSample]);
    }
    expect(() => e.step(x, 1, x)).toThrow(/^euler: all 3 model evaluations of this schedule are done; call setTimesteps\(n\) to sample again$/);
    e.setTimesteps(3);
    const y = tf.zeros([1, 2, 1, 1]);
    expect(() => e.step(y, 667, x)).toThrow(/^step: model output \[1, 2, 1, 1\] and sample \[1, 2, 2, 1\] must have the same shape$/);
    expect(() => new EulerAncestralScheduler(SD).setCustomSchedule([5, 3], [2, 1])).toThrow(/needs n >= 1 timesteps and n \+ 1 sigmas, got 2 and 2/);
    expect(() => new EulerScheduler(SD).setCustomSchedule([5, 3], [1, 2, 0])).toThrow(/sigma\[1\] = 2 must be finite, > 0/);
    expect(() => new HeunScheduler(SD).setCustomSchedule([5, 3, 2], [3, 2, 1, 0])).toThrow(/a heun schedule lists every timestep but the first twice/);
    const short: NoiseSource = { normalArray: () => new Float32Array(3) };
    const a = new EulerAncestralScheduler(SD);
    a.setTimesteps(2);
    expect(() => a.step(x, a.timesteps[0], x, short)).toThrow(/^noise source gave 3 values for a sample of 4$/);
    tf.dispose([x, y]);
  });

  it('img2img: a loop may start at any listed timestep (Heun: at the step that timestep begins)', () => {
    const model: Model = (input) => tf.mul(input, 0.2);
    const x0 = new Generator(2).randn([1, 2, 2, 1]);
    for (const type of SIGMA_SCHEDULER_TYPES) {
      const s = build(type);
      s.setTimesteps(6);
      const k = type === 'heun' ? 4 : 2; // Heun: entries 3 and 4 are the same timestep
      const t = s.timesteps[k];
      const input = s.scaleModelInput(x0, t);
      expect(s.stepIndex).toBe(k);
      const out = model(input, t, 0);
      const r = s.step(out, t, x0, new Generator(1));
      expect(s.stepIndex).toBe(k + 1);
      tf.dispose([input, out, r.prevSample, r.predOriginalSample]);
      s.reset();
      expect(s.stepIndex).toBe(null);
    }
    x0.dispose();
  });

  it('a schedule that repeats its first timestep still runs all steps (diffusers would skip the first)', () => {
    const d = new DPMSolverMultistepScheduler({ type: 'dpmpp-2m', betaSchedule: 'cosine', useKarrasSigmas: true, predictionType: 'x0' });
    d.setTimesteps(10);
    // Karras levels near sigma_max of the (unclipped) cosine schedule all map to ~998-999,
    // truncated as diffusers does. diffusers' float32 table gives 998.99997 -> 998 for the first one
    // (then 998 four times, and its loop overruns the schedule); ours is 999.
    expect(d.timesteps).toEqual([999, 998, 998, 998, 997, 995, 983, 894, 259, 0]);
    d.setCustomSchedule([998, 998, ...d.timesteps.slice(2)], d.sigmas);
    const x = tf.ones([1, 1, 1, 2]);
    const y = sample(d, (input) => tf.mul(input, 0.5), x, undefined);
    expect(d.stepIndex).toBe(10);
    expect(Number.isFinite(y.dataSync()[0])).toBe(true);
    tf.dispose([x, y]);
  });
});

describe('tensor leaks', () => {
  it('full loops, abandoned loops (reset / setTimesteps) and every type keep no tensors', () => {
    const x0 = new Generator(4).randn([2, 3, 3, 2]);
    const model: Model = (input) => tf.mul(input, 0.5);
    for (const type of SIGMA_SCHEDULER_TYPES) {
      for (const order of [1, 2, 3]) {
        const s = build(type, { solverOrder: order, useKarrasSigmas: order === 3, predictionType: order === 2 ? 'v' : 'epsilon' });
        s.setTimesteps(6);
        const before = tf.memory().numTensors;
        const y = sample(s, model, x0, new Generator(1));
        y.dispose();
        expect(tf.memory().numTensors).toBe(before);
        // Abandon a loop after 3 calls: the state is freed by reset() and by setTimesteps.
        for (const release of ['reset', 'setTimesteps'] as const) {
          s.reset();
          let x = x0.clone();
          for (const t of s.timesteps.slice(0, 3)) {
            const input = s.scaleModelInput(x, t);
            const out = model(input, t, 0);
            const r = s.step(out, t, x, new Generator(2));
            tf.dispose([input, out, x, r.predOriginalSample]);
            x = r.prevSample;
          }
          x.dispose();
          if (release === 'reset') s.reset();
          else s.setTimesteps(6);
          expect(tf.memory().numTensors).toBe(before);
        }
      }
    }
    expect(x0.isDisposed).toBe(false);
    x0.dispose();
  });
});

describe('UniPC order conditions', () => {
  it('solveSmall solves 1x1..3x3 systems (with pivoting) and rejects singular ones', () => {
    expect(solveSmall([[2]], [3])).toEqual([1.5]);
    const x = solveSmall(
      [
        [0, 1, 1],
        [1, 1, 1],
        [4, 2, 1],
      ],
      [2, 3, 7],
    );
    expect(x[0]).toBeCloseTo(1, 12);
    expect(x[1]).toBeCloseTo(1, 12);
    expect(x[2]).toBeCloseTo(1, 12);
    expect(() =>
      solveSmall(
        [
          [1, 1],
          [1, 1],
        ],
        [1, 2],
      ),
    ).toThrow(/singular/);
  });
});

/**
 * Data x0 ~ N(0, sd^2 I). At noise level sigma (x~ = x0 + sigma eps, network input x_t = x~ / sqrt(sigma^2 + 1)):
 *   E[x0 | x~] = sd^2 / (sd^2 + sigma^2) x~,  E[eps | x~] = sigma / (sd^2 + sigma^2) x~,
 * and in the network's parametrisations (a = 1 / sqrt(sigma^2 + 1), s = sigma a, x~ = x_t / a):
 *   eps: sigma / (sd^2 + sigma^2) x_t / a,  v = a eps - s x0: sigma (1 - sd^2) / (sd^2 + sigma^2) x_t,
 *   x0: sd^2 / (sd^2 + sigma^2) x_t / a.
 * The probability-flow ODE then maps N(0, sd^2 + sigma_max^2) at sigma_max to exactly N(0, sd^2).
 */
function gaussianOracle(sd: number, type: SchedulerConfig['predictionType']): Model {
  return (input, _t, sigma) =>
    tf.tidy(() => {
      const a = 1 / Math.sqrt(sigma * sigma + 1);
      const d = sd * sd + sigma * sigma;
      if (type === 'epsilon') return tf.mul(input, sigma / d / a);
      if (type === 'v') return tf.mul(input, (sigma * (1 - sd * sd)) / d);
      return tf.mul(input, (sd * sd) / d / a);
    });
}

function std(x: tf.Tensor): { mean: number; std: number } {
  const d = x.dataSync();
  let m = 0;
  for (const v of d) m += v;
  m /= d.length;
  let q = 0;
  for (const v of d) q += (v - m) ** 2;
  return { mean: m, std: Math.sqrt(q / d.length) };
}

const SD_DATA = 0.5;

/**
 * The std a sampler reaches when it solves the probability-flow ODE exactly down to its last
 * noise level sigma_L and then returns the exact x0 estimate there (what every sampler here does
 * on its last step): sd^2 / sqrt(sd^2 + sigma_L^2) (the std of E[x0 | x~]), scaled by how far
 * x_T's std (initNoiseSigma) is from the true marginal at sigma_0 (the flow is linear).
 */
function exactStd(s: SigmaSchedulerBase): number {
  const sd = SD_DATA;
  const sg = s.sigmas;
  const first = sg[0];
  const last = sg[sg.length - 2];
  const vp = s instanceof DPMSolverMultistepScheduler || s instanceof UniPCMultistepScheduler;
  const trueStart = vp ? Math.sqrt(sd * sd + first * first) / Math.sqrt(first * first + 1) : Math.sqrt(sd * sd + first * first);
  return ((sd * sd) / Math.sqrt(sd * sd + last * last)) * (s.initNoiseSigma / trueStart);
}

/**
 * Final std minus exactStd, for 4000 samples. Deterministic samplers scale every sample by the
 * same factor, so the start's own sampling error (its std vs 1) is divided out; the stochastic
 * ones carry sampling error ~ sd / sqrt(2n) = 0.0056.
 */
function samplingError(type: SchedulerType, extra: Partial<SchedulerConfig>, steps: number): { err: number; mean: number } {
  const s = build(type, extra);
  s.setTimesteps(steps);
  const x0 = new Generator(7).randn([4000]);
  const y = sample(s, gaussianOracle(SD_DATA, s.config.predictionType), x0, new Generator(8));
  const out = std(y);
  const deterministic = type !== 'euler-ancestral' && type !== 'dpmpp-2m-sde';
  const got = deterministic ? out.std / std(x0).std : out.std;
  tf.dispose([x0, y]);
  return { err: got - exactStd(s), mean: out.mean };
}

describe('sampling N(0, 0.5^2) data with its exact denoiser', () => {
  it('Euler converges to the exact result at first order: error(50) / error(200) ~ 4', () => {
    const e50 = samplingError('euler', {}, 50).err;
    const e200 = samplingError('euler', {}, 200).err;
    expect(Math.abs(e200)).toBeLessThan(0.008);
    expect(e50 / e200).toBeGreaterThan(3);
    expect(e50 / e200).toBeLessThan(5);
  });

  it('Heun converges at second order: error(20) / error(50) ~ 2.5^2, and v-prediction agrees', () => {
    const e20 = samplingError('heun', {}, 20).err;
    const e50 = samplingError('heun', {}, 50).err;
    expect(Math.abs(e50)).toBeLessThan(0.002);
    expect(e20 / e50).toBeGreaterThan(4.5);
    expect(e20 / e50).toBeLessThan(8);
    expect(Math.abs(samplingError('heun', { predictionType: 'v' }, 50).err - e50)).toBeLessThan(1e-4);
  });

  // [name, type, options, steps, max |error|]: the multistep solvers at few steps.
  const cases: [string, SchedulerType, Partial<SchedulerConfig>, number, number][] = [
    ['DPM++ 2M, 20 steps', 'dpmpp-2m', {}, 20, 0.003],
    ['DPM++ 2M, 50 steps, Karras, x0-prediction', 'dpmpp-2m', { useKarrasSigmas: true, predictionType: 'x0' }, 50, 0.002],
    ['DPM++ 3M, 10 steps, v-prediction', 'dpmpp-2m', { solverOrder: 3, predictionType: 'v' }, 10, 0.002],
    ['UniPC, 20 steps', 'unipc', {}, 20, 0.003],
    ['UniPC order 3, 10 steps, v-prediction', 'unipc', { solverOrder: 3, predictionType: 'v' }, 10, 0.002],
    ['Euler a, 200 steps', 'euler-ancestral', {}, 200, 0.03],
    ['DPM++ 2M SDE, 50 steps, Karras', 'dpmpp-2m-sde', { useKarrasSigmas: true }, 50, 0.02],
  ];
  for (const [name, type, extra, steps, tol] of cases) {
    it(name, () => {
      const { err, mean } = samplingError(type, extra, steps);
      expect(Math.abs(err)).toBeLessThan(tol);
      expect(Math.abs(mean)).toBeLessThan(0.03);
    });
  }
});
