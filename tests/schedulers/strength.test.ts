/**
 * img2img's start (strengthStart, diffusers' get_timesteps) and noiseToStep, the noise level of
 * every schedule entry: an exact denoiser's trajectory passes through noiseToStep(x0, noise, i)
 * after every step, for every deterministic sampler, so a run started mid-schedule from it lands
 * on x0; the formulas match diffusers' add_noise of each family.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { Generator } from '../../src/random/generator.js';
import {
  type AnyScheduler,
  type SchedulerConfig,
  SigmaSchedulerBase,
  alphaSigmaFromSigma,
  createScheduler,
  strengthStart,
  withA1111Sampler,
} from '../../src/schedulers/index.js';

beforeAll(async () => {
  await initBackend({ backend: 'cpu', quiet: true });
});

const SD: Partial<SchedulerConfig> = { betaSchedule: 'scaled-linear', betaStart: 0.00085, betaEnd: 0.012, timestepSpacing: 'leading', stepsOffset: 1 };

function maxDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

/** VP alpha and sigma of the model evaluation the scheduler is about to make at t. */
function level(s: AnyScheduler, t: number): { a: number; s: number } {
  if (s instanceof SigmaSchedulerBase) {
    const { alpha, sigma } = alphaSigmaFromSigma(s.sigmas[s.stepIndex!]);
    return { a: alpha, s: sigma };
  }
  const ab = s.alphasCumprod[t];
  return { a: Math.sqrt(ab), s: Math.sqrt(1 - ab) };
}

/**
 * Runs entries start.. of the schedule from x with the exact epsilon of a point mass at x0 (the
 * network sees the VP x_t = a x0 + s eps); returns the latents after every step.
 */
function run(s: AnyScheduler, x0: tf.Tensor, x: tf.Tensor, start: number): tf.Tensor[] {
  const out: tf.Tensor[] = [];
  let cur = x.clone();
  for (let i = start; i < s.timesteps.length; i++) {
    const t = s.timesteps[i];
    const input = s.scaleModelInput(cur, t);
    const { a, s: sd } = level(s, t);
    const eps = tf.tidy(() => tf.div(tf.sub(input, tf.mul(x0, a)), sd));
    const { prevSample, predOriginalSample } = s.step(eps, t, cur, new Generator(9));
    tf.dispose([input, eps, predOriginalSample, cur]);
    cur = prevSample;
    out.push(cur.clone());
  }
  cur.dispose();
  return out;
}

const DETERMINISTIC = ['DDIM', 'Euler', 'Heun', 'DPM++ 2M', 'DPM++ 2M Karras', 'UniPC'];

describe('strengthStart (diffusers get_timesteps)', () => {
  it('runs int(n * strength) steps from entry (n - that) x order', () => {
    const d = createScheduler(withA1111Sampler(SD, 'DDIM'));
    d.setTimesteps(10);
    expect(strengthStart(d, 0.6)).toEqual({ startIndex: 4, steps: 6 });
    expect(strengthStart(d, 1)).toEqual({ startIndex: 0, steps: 10 });
    expect(strengthStart(d, 0)).toEqual({ startIndex: 10, steps: 0 });
    expect(strengthStart(d, 0.05)).toEqual({ startIndex: 10, steps: 0 }); // int(0.5) = 0
    // 10 * 0.7 = 7.000000000000001 in floating point: still 7 steps, as Python's int()
    expect(strengthStart(d, 0.7)).toEqual({ startIndex: 3, steps: 7 });
    const h = createScheduler(withA1111Sampler(SD, 'Heun'));
    h.setTimesteps(5); // [801, 601, 601, 401, 401, 201, 201, 1, 1]
    const { startIndex, steps } = strengthStart(h, 0.6);
    expect({ startIndex, steps }).toEqual({ startIndex: 4, steps: 3 });
    expect(h.timesteps[startIndex]).toBe(401); // the second 401, which begins a step
  });

  it('rejects a strength outside [0, 1] and an unconfigured sampler', () => {
    const d = createScheduler({ ...SD, type: 'ddim' });
    d.setTimesteps(10);
    for (const bad of [-0.1, 1.5, Number.NaN]) expect(() => strengthStart(d, bad)).toThrow(/strength \(denoising strength\) must be a number from 0 to 1, got/);
    expect(() => strengthStart(createScheduler({ ...SD, type: 'euler' }), 0.5)).toThrow(/call setTimesteps\(n\) before strengthStart/);
  });
});

describe('noiseToStep', () => {
  it("is each family's add_noise: VP at t, x0 + sigma noise, or alpha x0 + sigma noise at the Karras level", () => {
    const x0 = new Generator(1).randn([1, 2, 2, 4]);
    const noise = new Generator(2).randn([1, 2, 2, 4]);
    const ddim = createScheduler({ ...SD, type: 'ddim' });
    ddim.setTimesteps(10);
    const a = ddim.noiseToStep(x0, noise, 3);
    const b = ddim.addNoise(x0, noise, ddim.timesteps[3]);
    expect(maxDiff(a, b)).toBe(0);
    const euler = createScheduler(withA1111Sampler(SD, 'Euler')) as SigmaSchedulerBase;
    euler.setTimesteps(10);
    const e = euler.noiseToStep(x0, noise, 3);
    const eRef = tf.tidy(() => tf.add(x0, tf.mul(noise, euler.sigmas[3])));
    expect(maxDiff(e, eRef)).toBeLessThan(1e-6);
    const dpm = createScheduler(withA1111Sampler(SD, 'DPM++ 2M Karras')) as SigmaSchedulerBase;
    dpm.setTimesteps(10);
    const k = dpm.noiseToStep(x0, noise, 3);
    const { alpha, sigma } = alphaSigmaFromSigma(dpm.sigmas[3]);
    const kRef = tf.tidy(() => tf.add(tf.mul(x0, alpha), tf.mul(noise, sigma)));
    expect(maxDiff(k, kRef)).toBeLessThan(1e-6);
    // the Karras level is not that of the rounded integer timestep the network is told
    const atT = dpm.addNoise(x0, noise, dpm.timesteps[3]);
    expect(maxDiff(k, atT)).toBeGreaterThan(1e-4);
    for (const s of [ddim, euler, dpm]) {
      const end = s.noiseToStep(x0, noise, s.timesteps.length);
      expect(maxDiff(end, x0)).toBe(0); // after the last step: x0 itself
      end.dispose();
    }
    expect(() => ddim.noiseToStep(x0, noise, 11)).toThrow(/index 11 is not an integer from 0 to 10/);
    expect(() => ddim.noiseToStep(x0, tf.zeros([1, 2, 2, 3]), 0)).toThrow(/must have the same shape/);
    tf.dispose([x0, noise, a, b, e, eRef, k, kRef, atT]);
  });

  for (const name of DETERMINISTIC) {
    it(`${name}: an exact denoiser's trajectory passes through noiseToStep at every step, from any start`, () => {
      const before = tf.memory().numTensors;
      const x0 = new Generator(3).randn([2, 2, 2, 4]);
      const noise = new Generator(4).randn([2, 2, 2, 4]);
      const s = createScheduler(withA1111Sampler(SD, name));
      s.setTimesteps(8);
      for (const strength of [1, 0.6, 0.25]) {
        const { startIndex } = strengthStart(s, strength);
        const x = s.noiseToStep(x0, noise, startIndex);
        const path = run(s, x0, x, startIndex);
        path.forEach((xi, j) => {
          const want = s.noiseToStep(x0, noise, startIndex + j + 1);
          // The latents are O(sigma_max) ~ 15 for Euler/Heun: float32 steps of that size round to ~1e-5.
          expect(maxDiff(xi, want)).toBeLessThan(5e-5);
          want.dispose();
        });
        expect(maxDiff(path.at(-1)!, x0)).toBeLessThan(5e-5);
        tf.dispose([x, ...path]);
        s.setTimesteps(8);
      }
      tf.dispose([x0, noise]);
      expect(tf.memory().numTensors).toBe(before);
    });
  }
});
