import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { Generator } from '../../src/random/generator.js';
import { DDPMScheduler, lossWeights, minSnrWeight, parseLossWeighting, sampleTimesteps, trainingTargets, weightedMse } from '../../src/schedulers/index.js';

beforeAll(async () => {
  await initBackend({ backend: 'cpu', quiet: true });
});

describe('training targets and loss weights', () => {
  it('epsilon / v / x0 targets and x_t (DDPM Algorithm 1; v from Salimans & Ho 2022)', () => {
    const x0 = new Generator(1).randn([3, 2, 2, 1]);
    const eps = new Generator(2).randn([3, 2, 2, 1]);
    const ts = [5, 400, 990];
    const x = x0.dataSync();
    const e = eps.dataSync();
    for (const type of ['epsilon', 'v', 'x0'] as const) {
      const s = new DDPMScheduler({ predictionType: type, betaSchedule: 'cosine' });
      const before = tf.memory().numTensors;
      const { noisy, target, weights } = trainingTargets(s, x0, eps, ts);
      const n = noisy.dataSync();
      const tg = target.dataSync();
      for (let b = 0; b < 3; b++) {
        const a = Math.sqrt(s.alphasCumprod[ts[b]]);
        const sg = Math.sqrt(1 - s.alphasCumprod[ts[b]]);
        for (let i = 0; i < 4; i++) {
          const k = b * 4 + i;
          expect(n[k]).toBeCloseTo(a * x[k] + sg * e[k], 5);
          const want = type === 'epsilon' ? e[k] : type === 'x0' ? x[k] : a * e[k] - sg * x[k];
          expect(tg[k]).toBeCloseTo(want, 5);
        }
      }
      expect(Array.from(weights.dataSync())).toEqual([1, 1, 1]);
      tf.dispose([noisy, target, weights]);
      expect(tf.memory().numTensors).toBe(before);
    }
    tf.dispose([x0, eps]);
  });

  it('min-SNR-gamma weights (Hang et al. 2023) for each parametrisation', () => {
    const s = new DDPMScheduler();
    const ts = [0, 300, 999];
    const g = 5;
    for (const t of ts) {
      const ab = s.alphasCumprod[t];
      const snr = ab / (1 - ab);
      expect(minSnrWeight(ab, g, 'x0')).toBeCloseTo(Math.min(snr, g), 12);
      expect(minSnrWeight(ab, g, 'epsilon')).toBeCloseTo(Math.min(snr, g) / snr, 12);
      expect(minSnrWeight(ab, g, 'v')).toBeCloseTo(Math.min(snr, g) / (snr + 1), 12);
    }
    // t = 0: SNR ~ 1e4 >> 5, so the eps weight is 5 / SNR; at t = 999 SNR < 5 so it is 1.
    const w = lossWeights(s.alphasCumprod, ts, 'epsilon', parseLossWeighting('min-snr', 5));
    expect(w[0]).toBeCloseTo(5 / (0.9999 / 0.0001), 10);
    expect(w[2]).toBe(1);
    expect(minSnrWeight(0, 5, 'epsilon')).toBe(1);
    expect(() => parseLossWeighting('snr')).toThrow(/loss weighting 'snr' is unknown; allowed: mse, min-snr/);
    expect(() => parseLossWeighting('min-snr', 0)).toThrow(/gamma must be a number > 0, got 0/);
  });

  it('weightedMse is the plain MSE with unit weights and weights per sample', () => {
    const p = tf.tensor2d([
      [1, 2],
      [3, 4],
    ]);
    const t = tf.tensor2d([
      [0, 0],
      [0, 0],
    ]);
    const plain = weightedMse(p, t);
    expect(plain.dataSync()[0]).toBeCloseTo((1 + 4 + 9 + 16) / 4, 6);
    const w = tf.tensor1d([1, 0]);
    const weighted = weightedMse(p, t, w);
    expect(weighted.dataSync()[0]).toBeCloseTo(2.5 / 2, 6);
    tf.dispose([p, t, plain, w, weighted]);
  });

  it('sampleTimesteps is uniform on {0..T-1} and seeded', () => {
    const a = sampleTimesteps(new Generator(3), 20000, 10);
    const b = sampleTimesteps(new Generator(3), 20000, 10);
    expect(Array.from(a)).toEqual(Array.from(b));
    const counts = new Array(10).fill(0);
    for (const t of a) counts[t]++;
    for (const c of counts) expect(Math.abs(c - 2000)).toBeLessThan(200);
  });
});
