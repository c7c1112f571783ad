/**
 * The toy diffusion learns: a short seeded run on the S-curve, then DDPM and DDIM samples are
 * measurably close to held-out data (and far from noise). Runs on wasm, or cpu where wasm is not
 * available (the same seed gives the same numbers on both, to ~1e-6).
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { Generator } from '../../src/random/generator.js';
import { createScheduler } from '../../src/schedulers/index.js';
import { loadDataset } from '../../src/toy/datasets.js';
import { distances } from '../../src/toy/metrics.js';
import { toySchedulerConfig } from '../../src/toy/run.js';
import { sampleToy, trainToy } from '../../src/toy/train.js';

beforeAll(async () => {
  // TXT2IMG_BACKEND=cpu (etc.) picks one; otherwise wasm, or cpu where wasm cannot load.
  if (process.env.TXT2IMG_BACKEND) await initBackend({ quiet: true });
  else {
    try {
      await initBackend({ backend: 'wasm', quiet: true });
    } catch {
      await initBackend({ backend: 'cpu', quiet: true });
    }
  }
});

describe('toy 2-D diffusion training', () => {
  it('is seeded and leaks no tensors', async () => {
    const sched = createScheduler(toySchedulerConfig({ timesteps: 20, schedule: 'linear', sampler: 'ddpm', prediction: 'epsilon' }));
    const data = await loadDataset({ kind: 'moons' }, new Generator(1));
    const before = tf.memory().numTensors;
    const run = () => {
      const r = trainToy(data, sched, new Generator(2), { steps: 5, batch: 16, lr: 1e-2, hidden: 8, blocks: 1, inputEmbedDim: 4 });
      const s = sampleToy(r.model, sched, 10, new Generator(3), { steps: 20, frames: 3 });
      // fewer sampler steps than frames: snapshots repeat, so there are always `frames` of them
      const few = sampleToy(r.model, sched, 10, new Generator(3), { steps: 2, frames: 5 });
      r.model.dispose();
      r.ema.dispose();
      return {
        losses: Array.from(r.losses),
        points: Array.from(s.points),
        frames: s.frames.map((f) => f.level),
        few: few.frames.map((f) => f.level),
      };
    };
    const a = run();
    const b = run();
    expect(a).toEqual(b);
    expect(a.frames).toEqual([20, 10, 0]);
    expect(a.few).toEqual([20, 1, 1, 0, 0]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('S-curve: DDPM and DDIM samples match held-out data far better than noise', async () => {
    const rng = new Generator(0);
    const config = toySchedulerConfig({ timesteps: 50, schedule: 'linear', sampler: 'ddpm', prediction: 'epsilon' });
    const ddpm = createScheduler(config);
    const ddim = createScheduler({ ...config, type: 'ddim', eta: 0 });
    const data = await loadDataset({ kind: 's-curve' }, rng.spawn());
    const r = trainToy(data, ddpm, rng.spawn(), { steps: 400, batch: 256, lr: 1e-2, hidden: 64, blocks: 3, inputEmbedDim: 16 });
    r.ema.copyTo(r.model.store);
    const n = 1000;
    const real = data.sample(n, new Generator(100));
    const gDdpm = distances(sampleToy(r.model, ddpm, n, new Generator(101), { steps: 50 }).points, real);
    const gDdim = distances(sampleToy(r.model, ddim, n, new Generator(102), { steps: 20 }).points, real);
    const noise = distances(new Generator(103).normalArray(2 * n), real);
    const real2 = distances(data.sample(n, new Generator(104)), real);
    r.model.dispose();
    r.ema.dispose();
    const show = (d: { slicedW2: number; chamfer: number }) => `SW2 ${d.slicedW2.toFixed(4)} chamfer ${d.chamfer.toFixed(4)}`;
    console.log(`toy s-curve: ddpm ${show(gDdpm)} | ddim ${show(gDdim)} | noise ${show(noise)} | real ${show(real2)}`);
    // the scale: noise is ~0.34 / ~0.39, a second real sample ~0.06 / ~0.06
    expect(noise.slicedW2).toBeGreaterThan(0.3);
    expect(real2.chamfer).toBeLessThan(0.08);
    for (const g of [gDdpm, gDdim]) {
      expect(g.slicedW2).toBeLessThan(0.16);
      expect(g.chamfer).toBeLessThan(0.15);
      expect(g.slicedW2).toBeLessThan(noise.slicedW2 / 2);
      expect(g.chamfer).toBeLessThan(noise.chamfer / 2.5);
    }
  });
});
