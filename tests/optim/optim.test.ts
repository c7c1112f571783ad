import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { Generator } from '../../src/random/generator.js';
import { ParamStore } from '../../src/nn/params.js';
import { AdamW, accumulateGrads, clipGradNorm } from '../../src/optim/adamw.js';
import { EMA } from '../../src/optim/ema.js';
import { learningRateAt, validateLrSchedule } from '../../src/optim/lr.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

function storeWith(values: number[]): ParamStore {
  const s = new ParamStore();
  const v = s.add('p', [values.length], { kind: 'zeros' }, new Generator(0));
  tf.tidy(() => v.assign(tf.tensor1d(values)));
  return s;
}

describe('AdamW', () => {
  it('matches a float64 reference of Loshchilov & Hutter Algorithm 2 over three steps', () => {
    const p0 = [0.5, -1.0, 2.0];
    const gradsSeq = [
      [0.1, -0.2, 0.3],
      [0.05, 0.4, -0.1],
      [-0.3, 0.1, 0.2],
    ];
    const cfg = { lr: 0.01, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1 };
    // Reference, written from the paper independently of src/optim.
    const p = [...p0],
      m = [0, 0, 0],
      v = [0, 0, 0];
    gradsSeq.forEach((g, k) => {
      const t = k + 1;
      for (let i = 0; i < 3; i++) {
        m[i] = cfg.beta1 * m[i] + (1 - cfg.beta1) * g[i];
        v[i] = cfg.beta2 * v[i] + (1 - cfg.beta2) * g[i] ** 2;
        const mh = m[i] / (1 - cfg.beta1 ** t),
          vh = v[i] / (1 - cfg.beta2 ** t);
        p[i] = p[i] - cfg.lr * (mh / (Math.sqrt(vh) + cfg.eps) + cfg.weightDecay * p[i]);
      }
    });
    const store = storeWith(p0);
    const opt = new AdamW(store, cfg);
    for (const g of gradsSeq) {
      const grads = new Map([['p', tf.tensor1d(g)]]);
      opt.step(grads);
      grads.get('p')!.dispose();
    }
    const got = store.get('p').dataSync();
    p.forEach((x, i) => {
      expect(got[i]).toBeCloseTo(x, 6);
    });
    opt.dispose();
    store.dispose();
  });

  it('resumes from saved state exactly as an uninterrupted run', async () => {
    const g = new Generator(3);
    const seq = Array.from({ length: 6 }, () => Array.from(g.normalArray(4)));
    const run = async (splitAt: number | null) => {
      let store = storeWith([1, 2, 3, 4]);
      let opt = new AdamW(store, { lr: 0.05 });
      for (let i = 0; i < seq.length; i++) {
        if (i === splitAt) {
          const { step, arrays } = await opt.stateArrays();
          const weights = await store.toArrays();
          opt.dispose();
          store.dispose();
          store = storeWith([0, 0, 0, 0]);
          store.loadArrays(weights);
          opt = new AdamW(store, { lr: 0.05 });
          opt.loadState(step, arrays);
        }
        const grads = new Map([['p', tf.tensor1d(seq[i])]]);
        opt.step(grads);
        grads.get('p')!.dispose();
      }
      const out = Array.from(store.get('p').dataSync());
      opt.dispose();
      store.dispose();
      return out;
    };
    expect(await run(3)).toEqual(await run(null));
  });

  it('validates its config', () => {
    const store = storeWith([1]);
    expect(() => new AdamW(store, { lr: -1 })).toThrow(/lr must be a finite number >= 0, got -1/);
    expect(() => new AdamW(store, { lr: 1, beta1: 1 })).toThrow(/beta1 must be in \[0, 1\)/);
    store.dispose();
  });
});

describe('gradient utilities', () => {
  it('clipGradNorm scales to the max norm and returns the original norm', () => {
    const grads = new Map([
      ['a', tf.tensor1d([3, 0])],
      ['b', tf.tensor1d([0, 4])],
    ]);
    const norm = clipGradNorm(grads, 1);
    expect(norm).toBeCloseTo(5, 5);
    expect(grads.get('a')!.dataSync()[0]).toBeCloseTo(0.6, 5);
    expect(grads.get('b')!.dataSync()[1]).toBeCloseTo(0.8, 5);
    const small = new Map([['a', tf.tensor1d([0.1])]]);
    expect(clipGradNorm(small, 1)).toBeCloseTo(0.1, 6);
    expect(small.get('a')!.dataSync()[0]).toBeCloseTo(0.1, 6);
    expect(() => clipGradNorm(small, 0)).toThrow(/must be > 0/);
  });

  it('accumulateGrads sums by name', () => {
    const acc = new Map<string, tf.Tensor>();
    accumulateGrads(acc, new Map([['a', tf.tensor1d([1, 2])]]));
    accumulateGrads(acc, new Map([['a', tf.tensor1d([3, 4])]]));
    expect(Array.from(acc.get('a')!.dataSync())).toEqual([4, 6]);
  });
});

describe('EMA', () => {
  it('follows shadow = d * shadow + (1 - d) * param with the (1+t)/(10+t) warm-up', () => {
    const store = storeWith([1]);
    const ema = new EMA(store, 0.9);
    let ref = 1;
    const targets = [2, 3, 5, 8];
    targets.forEach((val, t) => {
      tf.tidy(() => store.get('p').assign(tf.tensor1d([val])));
      const d = Math.min(0.9, (1 + t) / (10 + t));
      ref = d * ref + (1 - d) * val;
      ema.update();
    });
    expect(ema.shadow.get('p').dataSync()[0]).toBeCloseTo(ref, 5);
    const target = storeWith([0]);
    ema.copyTo(target);
    expect(target.get('p').dataSync()[0]).toBeCloseTo(ref, 5);
    expect(() => new EMA(store, 1)).toThrow(/decay must be in \[0, 1\)/);
    ema.dispose();
    store.dispose();
    target.dispose();
  });
});

describe('learning-rate schedules', () => {
  it('warms up linearly, then holds or follows a half cosine', () => {
    const c = { kind: 'cosine' as const, base: 1, warmupSteps: 10, totalSteps: 110, min: 0 };
    expect(learningRateAt(0, c)).toBeCloseTo(0.1);
    expect(learningRateAt(9, c)).toBeCloseTo(1);
    expect(learningRateAt(10, c)).toBeCloseTo(1);
    expect(learningRateAt(60, c)).toBeCloseTo(0.5);
    expect(learningRateAt(110, c)).toBeCloseTo(0);
    expect(learningRateAt(50, { ...c, kind: 'constant' })).toBe(1);
    expect(() => validateLrSchedule({ ...c, kind: 'step' as never })).toThrow(/'step' is unknown; allowed: constant, cosine/);
  });
});
