import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { Generator } from '../../src/random/generator.js';
import { Downsample } from '../../src/nn/blocks.js';
import { ParamStore, computeGradients, disposeGrads } from '../../src/nn/params.js';
import {
  Conv2d,
  GroupNorm,
  LayerNorm,
  Linear,
  attendHeads,
  attention,
  gelu,
  groupNorm,
  layerNorm,
  silu,
  timestepEmbedding,
  upsampleNearest2x,
} from '../../src/nn/layers.js';
import { maxAbsDiff } from '../helpers.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('layers (reference values computed with plain loops)', () => {
  it('Linear on rank-3 input equals x W + b per row', () => {
    const store = new ParamStore();
    const lin = new Linear(store, 'l', 3, 2, new Generator(0));
    const x = new Generator(1).randn([2, 4, 3]);
    const y = lin.apply(x);
    expect(y.shape).toEqual([2, 4, 2]);
    const xs = x.dataSync(),
      w = lin.weight.dataSync(),
      b = lin.bias!.dataSync(),
      ys = y.dataSync();
    for (let r = 0; r < 8; r++)
      for (let o = 0; o < 2; o++) {
        let s = b[o];
        for (let i = 0; i < 3; i++) s += xs[r * 3 + i] * w[i * 2 + o];
        expect(ys[r * 2 + o]).toBeCloseTo(s, 5);
      }
    tf.dispose([x, y]);
    store.dispose();
  });

  it('GroupNorm normalises each (sample, group) to zero mean and unit variance', () => {
    const store = new ParamStore();
    const gn = new GroupNorm(store, 'gn', 2, 4, new Generator(0));
    const x = tf.add(tf.mul(new Generator(2).randn([2, 3, 3, 4]), 3), 5) as tf.Tensor4D;
    const y = gn.apply(x).arraySync() as number[][][][];
    for (let b = 0; b < 2; b++)
      for (let g = 0; g < 2; g++) {
        const vals: number[] = [];
        for (let h = 0; h < 3; h++) for (let w = 0; w < 3; w++) for (let c = g * 2; c < g * 2 + 2; c++) vals.push(y[b][h][w][c]);
        const mean = vals.reduce((a, v) => a + v, 0) / vals.length;
        const variance = vals.reduce((a, v) => a + (v - mean) ** 2, 0) / vals.length;
        expect(mean).toBeCloseTo(0, 5);
        expect(variance).toBeCloseTo(1, 3);
      }
    expect(() => new GroupNorm(store, 'bad', 3, 4, new Generator(0))).toThrow(/divisible by groups/);
    x.dispose();
    store.dispose();
  });

  it('LayerNorm normalises the last axis', () => {
    const store = new ParamStore();
    const ln = new LayerNorm(store, 'ln', 6, new Generator(0));
    const y = ln.apply(tf.tensor2d([[1, 2, 3, 4, 5, 6]])).dataSync();
    const mean = 3.5,
      std = Math.sqrt(17.5 / 6 + 1e-5);
    expect(
      maxAbsDiff(
        y,
        [1, 2, 3, 4, 5, 6].map((v) => (v - mean) / std),
      ),
    ).toBeLessThan(1e-5);
    store.dispose();
  });

  it('upsampleNearest2x repeats each pixel into a 2x2 block', () => {
    const x = new Generator(3).randn([2, 2, 3, 2]) as tf.Tensor4D;
    const y = upsampleNearest2x(x);
    expect(y.shape).toEqual([2, 4, 6, 2]);
    const xa = x.arraySync() as number[][][][],
      ya = y.arraySync() as number[][][][];
    for (let b = 0; b < 2; b++)
      for (let i = 0; i < 4; i++)
        for (let j = 0; j < 6; j++)
          for (let c = 0; c < 2; c++) {
            expect(ya[b][i][j][c]).toBe(xa[b][i >> 1][j >> 1][c]);
          }
  });

  it("Downsample pads 1 all around (U-Net) or on the bottom and right only (diffusers' VAE encoder)", () => {
    // A kernel that reads only its top-left tap: out[i, j] = x[2i - 1, 2j - 1] (symmetric, 0 outside)
    // or x[2i, 2j] (bottom-right).
    const x = tf.tensor4d(
      Array.from({ length: 16 }, (_, i) => i + 1),
      [1, 4, 4, 1],
    );
    const out = (padding: 'symmetric' | 'bottom-right') => {
      const store = new ParamStore();
      const d = new Downsample(store, 'd', 1, new Generator(0), padding);
      d.conv.weight.assign(tf.tensor4d([1, 0, 0, 0, 0, 0, 0, 0, 0], [3, 3, 1, 1]));
      d.conv.bias!.assign(tf.zeros([1]));
      const y = Array.from(d.apply(x).dataSync());
      store.dispose();
      return y;
    };
    expect(out('symmetric')).toEqual([0, 0, 0, 6]);
    expect(out('bottom-right')).toEqual([1, 3, 9, 11]);
    x.dispose();
  });

  it('attention equals softmax(q k^T / sqrt(d)) v per head, with a key mask', () => {
    const g = new Generator(4);
    const [b, tq, tk, c, heads] = [2, 3, 4, 4, 2];
    const q = g.randn([b, tq, c]) as tf.Tensor3D,
      k = g.randn([b, tk, c]) as tf.Tensor3D,
      v = g.randn([b, tk, c]) as tf.Tensor3D;
    const mask = tf.tensor2d([
      [1, 1, 1, 0],
      [1, 0, 1, 1],
    ]);
    const out = attention(q, k, v, heads, mask).arraySync() as number[][][];
    const qa = q.arraySync() as number[][][],
      ka = k.arraySync() as number[][][],
      va = v.arraySync() as number[][][];
    const ma = mask.arraySync() as number[][];
    const d = c / heads;
    for (let bi = 0; bi < b; bi++)
      for (let h = 0; h < heads; h++)
        for (let i = 0; i < tq; i++) {
          const s = [];
          for (let j = 0; j < tk; j++) {
            let dot = 0;
            for (let e = 0; e < d; e++) dot += qa[bi][i][h * d + e] * ka[bi][j][h * d + e];
            s.push(ma[bi][j] ? dot / Math.sqrt(d) : -Infinity);
          }
          const mx = Math.max(...s);
          const ex = s.map((x) => Math.exp(x - mx));
          const z = ex.reduce((a, x) => a + x, 0);
          for (let e = 0; e < d; e++) {
            let o = 0;
            for (let j = 0; j < tk; j++) o += (ex[j] / z) * va[bi][j][h * d + e];
            expect(out[bi][i][h * d + e]).toBeCloseTo(o, 5);
          }
        }
  });

  it('attendHeads in chunks of (batch, head) rows gives the unchunked result, with and without a mask', () => {
    const g = new Generator(7);
    const [bh, n, tk, d, heads] = [6, 5, 4, 3, 3]; // batch 2 x 3 heads
    const qh = g.randn([bh, n, d]) as tf.Tensor3D,
      kh = g.randn([bh, tk, d]) as tf.Tensor3D,
      vh = g.randn([bh, tk, d]) as tf.Tensor3D;
    const mask = tf.tensor2d([
      [1, 0, 1, 1],
      [1, 1, 0, 0],
    ]);
    const before = tf.memory().numTensors;
    for (const m of [undefined, mask]) {
      const whole = attendHeads(qh, kh, vh, heads, m);
      // 2 rows of n * tk scores per chunk: chunks of 2 rows, or of one batch item (3 heads) with a mask.
      const chunked = attendHeads(qh, kh, vh, heads, m, 2 * n * tk);
      expect(chunked.shape).toEqual([bh, n, d]);
      expect(maxAbsDiff(chunked.dataSync(), whole.dataSync())).toBeLessThan(1e-6);
      const single = attendHeads(qh, kh, vh, heads, m, 1); // one row per chunk (a batch item with a mask)
      expect(maxAbsDiff(single.dataSync(), whole.dataSync())).toBeLessThan(1e-6);
      tf.dispose([whole, chunked, single]);
    }
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([qh, kh, vh, mask]);
  });

  it('timestep embedding is [cos(t f), sin(t f)] with f_i = 10000^(-i/half)', () => {
    const e = timestepEmbedding(tf.tensor1d([0, 10, 999]), 8).arraySync();
    const f = [0, 1, 2, 3].map((i) => Math.exp((-Math.log(10000) * i) / 4));
    [0, 10, 999].forEach((t, r) => {
      const ref = [...f.map((x) => Math.cos(t * x)), ...f.map((x) => Math.sin(t * x))];
      expect(maxAbsDiff(e[r], ref)).toBeLessThan(1e-4);
    });
    expect(() => timestepEmbedding(tf.tensor1d([1]), 7)).toThrow(/even/);
    // diffusers' flip_sin_to_cos=False, freq_shift=1: [sin, cos], f_i = 10000^(-i / (half - 1))
    const g = timestepEmbedding(tf.tensor1d([10]), 8, { flipSinToCos: false, freqShift: 1 }).arraySync()[0];
    const f1 = [0, 1, 2, 3].map((i) => Math.exp((-Math.log(10000) * i) / 3));
    expect(maxAbsDiff(g, [...f1.map((x) => Math.sin(10 * x)), ...f1.map((x) => Math.cos(10 * x))])).toBeLessThan(1e-5);
  });

  it('silu and gelu match their closed forms', () => {
    const xs = [-3, -1, 0, 0.5, 2];
    const s = silu(tf.tensor1d(xs)).dataSync();
    const g = gelu(tf.tensor1d(xs), 'tanh').dataSync();
    const exact = gelu(tf.tensor1d(xs)).dataSync();
    // erf by its Maclaurin series (exact to float precision for |z| <= 3 / sqrt 2 with 60 terms).
    const erf = (z: number) => {
      let term = z;
      let sum = z;
      for (let n = 1; n < 60; n++) {
        term *= (-z * z) / n;
        sum += term / (2 * n + 1);
      }
      return (2 / Math.sqrt(Math.PI)) * sum;
    };
    xs.forEach((x, i) => {
      expect(s[i]).toBeCloseTo(x / (1 + Math.exp(-x)), 5);
      expect(g[i]).toBeCloseTo(0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))), 5);
      expect(exact[i]).toBeCloseTo(0.5 * x * (1 + erf(x / Math.SQRT2)), 6);
    });
  });

  it('GroupNorm, LayerNorm, SiLU and GELU closed-form gradients equal the autodiff of their plain formulas', () => {
    // The forward formulas as written before the custom gradients, differentiated by tfjs.
    const plainNorm = (x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, statsShape: number[], axes: number[]) => {
      const xr = x.reshape(statsShape);
      const d = tf.sub(xr, tf.mean(xr, axes, true));
      const normed = tf.mul(d, tf.rsqrt(tf.add(tf.mean(tf.square(d), axes, true), 1e-5))).reshape(x.shape);
      return tf.add(tf.mul(normed, gamma), beta);
    };
    const plainSilu = (t: tf.Tensor) => tf.mul(t, tf.sigmoid(t));
    const a = 2 * Math.sqrt(2 / Math.PI);
    const plainGelu = (t: tf.Tensor) => tf.mul(t, tf.sigmoid(tf.mul(t, tf.add(a, tf.mul(a * 0.044715, tf.square(t))))));
    const plainGeluErf = (t: tf.Tensor) => tf.mul(tf.mul(t, 0.5), tf.add(tf.erf(tf.mul(t, Math.SQRT1_2)), 1));
    const cases = [
      {
        name: 'GroupNorm + SiLU',
        shape: [2, 3, 5, 6],
        ours: (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => silu(groupNorm(x as tf.Tensor4D, g, b, 3, 1e-5)),
        plain: (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => plainSilu(plainNorm(x, g, b, [2, 15, 3, 2], [1, 3])),
      },
      {
        name: 'LayerNorm + GELU',
        shape: [2, 7, 6],
        ours: (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => gelu(layerNorm(x, g, b, 1e-5), 'tanh'),
        plain: (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => plainGelu(plainNorm(x, g, b, [2, 7, 6], [2])),
      },
      {
        name: 'LayerNorm + exact GELU',
        shape: [2, 7, 6],
        ours: (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => gelu(layerNorm(x, g, b, 1e-5)),
        plain: (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => plainGeluErf(plainNorm(x, g, b, [2, 7, 6], [2])),
      },
    ];
    const rng = new Generator(9);
    for (const c of cases) {
      const x = tf.add(tf.mul(rng.randn(c.shape), 2), 1);
      const gamma = tf.add(rng.randn([6]), 1);
      const beta = rng.randn([6]);
      const target = rng.randn(c.shape);
      // A loss whose upstream gradient is not uniform.
      const lossOf = (f: typeof c.plain) => (xx: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => tf.mean(tf.square(tf.sub(f(xx, gg, bb), target))) as tf.Scalar;
      const before = tf.memory().numTensors;
      const forwardDiff = tf.tidy(() => maxAbsDiff(c.ours(x, gamma, beta).dataSync(), c.plain(x, gamma, beta).dataSync()));
      expect(forwardDiff, `${c.name} forward`).toBeLessThan(1e-5);
      const ours = tf.grads(lossOf(c.ours))([x, gamma, beta]);
      const plain = tf.grads(lossOf(c.plain))([x, gamma, beta]);
      ours.forEach((g, i) => {
        expect(g.shape, c.name).toEqual(plain[i].shape);
        expect(maxAbsDiff(g.dataSync(), plain[i].dataSync()), `${c.name} gradient ${i}`).toBeLessThan(1e-6);
        expect(Math.max(...Array.from(g.dataSync(), Math.abs))).toBeGreaterThan(1e-3);
      });
      tf.dispose([...ours, ...plain]);
      expect(tf.memory().numTensors, c.name).toBe(before);
      tf.dispose([x, gamma, beta, target]);
    }
  });

  it('gradients match finite differences and leak no tensors', () => {
    const rng = new Generator(5);
    const store = new ParamStore();
    const conv = new Conv2d(store, 'conv', 2, 4, 3, rng, { stride: 2 });
    const gn = new GroupNorm(store, 'gn', 2, 4, rng);
    const lin = new Linear(store, 'lin', 4, 3, rng);
    const x = rng.randn([2, 4, 4, 2]) as tf.Tensor4D;
    const lossFn = () =>
      tf.tidy(() => {
        const h = silu(gn.apply(conv.apply(x))) as tf.Tensor4D; // [2, 2, 2, 4]
        const u = upsampleNearest2x(h).reshape([2, 16, 4]);
        return tf.mean(tf.square(lin.apply(u))) as tf.Scalar;
      });
    const before = tf.memory().numTensors;
    const { loss, grads } = computeGradients(store, lossFn);
    expect(grads.size).toBe(store.size);
    // Central differences on a few entries of the conv weight.
    const w = conv.weight;
    const gw = grads.get('conv.weight')!.dataSync();
    const base = w.dataSync().slice();
    for (const idx of [0, 7, 20, 55]) {
      const eps = 1e-2;
      const bump = (delta: number) => {
        const d = base.slice();
        d[idx] += delta;
        tf.tidy(() => w.assign(tf.tensor(d, w.shape)));
        const l = lossFn();
        const v = l.dataSync()[0];
        l.dispose();
        return v;
      };
      const num = (bump(eps) - bump(-eps)) / (2 * eps);
      expect(Math.abs(num - gw[idx])).toBeLessThan(2e-3 + 2e-2 * Math.abs(num));
    }
    tf.tidy(() => w.assign(tf.tensor(base, w.shape)));
    loss.dispose();
    disposeGrads(grads);
    expect(tf.memory().numTensors).toBe(before);
    x.dispose();
    store.dispose();
  });
});

describe('ParamStore', () => {
  it('round-trips arrays and reports every mismatch by name', async () => {
    const a = new ParamStore();
    a.add('x.weight', [2, 3], { kind: 'normal', std: 1 }, new Generator(0));
    a.add('x.bias', [3], { kind: 'zeros' }, new Generator(0));
    const b = new ParamStore();
    b.add('x.weight', [2, 3], { kind: 'zeros' }, new Generator(1));
    b.add('x.bias', [3], { kind: 'ones' }, new Generator(1));
    b.loadArrays(await a.toArrays());
    expect(Array.from(b.get('x.weight').dataSync())).toEqual(Array.from(a.get('x.weight').dataSync()));
    const bad = new Map([
      ['x.weight', { shape: [3, 2], data: new Float32Array(6) }],
      ['y', { shape: [1], data: new Float32Array(1) }],
    ]);
    expect(() => b.loadArrays(bad, 'test ckpt')).toThrow(/test ckpt does not match the model \(3 problem\(s\)\)/);
    try {
      b.loadArrays(bad);
    } catch (e) {
      const msg = (e as Error).message;
      expect(msg).toContain("'x.weight' has shape [3, 2], the model expects [2, 3]");
      expect(msg).toContain("missing 'x.bias'");
      expect(msg).toContain("unexpected 'y'");
    }
    const nan = new Map([
      ['x.weight', { shape: [2, 3], data: Float32Array.from([0, 1, 2, Number.NaN, 4, 5]) }],
      ['x.bias', { shape: [3], data: Float32Array.from([0, Number.POSITIVE_INFINITY, 0]) }],
    ]);
    expect(() => b.loadArrays(nan, 'unet weights')).toThrow(
      "unet weights does not match the model (2 problem(s)):\n  'x.weight' holds NaN at index 3 (weights must be finite numbers)\n  'x.bias' holds Infinity at index 1",
    );
    expect(() => a.add('x.bias', [3], { kind: 'zeros' }, new Generator(0))).toThrow(/defined twice/);
    expect(() => a.get('nope')).toThrow(/no parameter named 'nope'/);
    const view = ParamStore.union({ a, b });
    expect(view.names().sort()).toEqual(['a.x.bias', 'a.x.weight', 'b.x.bias', 'b.x.weight']);
    view.dispose();
    expect(a.get('x.weight').isDisposed).toBe(false);
    a.dispose();
    b.dispose();
  });
});
