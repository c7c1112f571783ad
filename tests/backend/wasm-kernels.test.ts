// The wasm kernel pack against tfjs' cpu backend, kernel by kernel and through a small network.
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { registerWasmKernels, WASM_KERNEL_NAMES } from '../../src/backend/wasm-kernels.js';
import { Generator } from '../../src/random/generator.js';
import { AttributeClassifier, parseClassifierConfig } from '../../src/classifier/classifier.js';
import { computeGradients, disposeGrads } from '../../src/nn/params.js';

type Arrays = Float32Array[];

/** max |got - want| / max |want|: a relative error that tolerates entries near zero. */
function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  expect(got.length).toBe(want.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num = Math.max(num, Math.abs(got[i] - want[i]));
    den = Math.max(den, Math.abs(want[i]));
  }
  return num / Math.max(den, 1e-30);
}

/** Runs `f` on cpu then on wasm (fresh tensors each time); returns each output's values. */
async function onBoth(f: () => tf.Tensor | tf.Tensor[]): Promise<{ cpu: Arrays; wasm: Arrays }> {
  const run = async (name: string): Promise<Arrays> => {
    await tf.setBackend(name);
    return tf.tidy(() => {
      const r = f();
      return (Array.isArray(r) ? r : [r]).map((t) => t.dataSync() as Float32Array);
    });
  };
  const cpu = await run('cpu');
  const wasm = await run('wasm');
  return { cpu, wasm };
}

async function expectMatch(f: () => tf.Tensor | tf.Tensor[], tol = 1e-4, label = ''): Promise<void> {
  const { cpu, wasm } = await onBoth(f);
  expect(wasm.length).toBe(cpu.length);
  cpu.forEach((c, i) => {
    const e = relErr(wasm[i], c);
    if (!(e <= tol)) throw new Error(`${label} output ${i}: relative error ${e} > ${tol}`);
  });
}

const gen = new Generator(20240607);
const normal = (shape: number[]) => ({ shape, values: gen.normalArray(shape.reduce((a, b) => a * b, 1)) });
type Data = ReturnType<typeof normal>;
const T = (d: Data) => tf.tensor(d.values, d.shape);

beforeAll(async () => {
  // Also makes the engine check every kernel for leaked data ids.
  tf.env().set('IS_TEST', true);
  registerWasmKernels();
  expect(await tf.setBackend('wasm')).toBe(true);
});

describe('registration', () => {
  it('is idempotent and only touches the wasm backend', () => {
    const before = WASM_KERNEL_NAMES.map((n) => tf.getKernel(n, 'wasm'));
    registerWasmKernels();
    registerWasmKernels();
    expect(WASM_KERNEL_NAMES.map((n) => tf.getKernel(n, 'wasm'))).toEqual(before);
    expect(WASM_KERNEL_NAMES).toEqual(expect.arrayContaining(['Conv2DBackpropFilter', 'Conv2DBackpropInput', 'BatchMatMul', '_FusedMatMul', 'Sum', 'Mean']));
    const marker = Symbol.for('txt2img.wasmKernels.replaced');
    for (const n of WASM_KERNEL_NAMES) {
      expect(marker in (tf.getKernel(n, 'wasm') as object)).toBe(true);
      const cpu = tf.getKernel(n, 'cpu');
      if (cpu) expect(marker in (cpu as object)).toBe(false);
    }
  });
});

describe('conv2d gradients', () => {
  // [x shape, filter shape, strides, pad]
  type Pad = 'same' | 'valid' | number | [[number, number], [number, number], [number, number], [number, number]];
  const cases: Array<[number[], number[], number | [number, number], Pad]> = [
    // few input channels: im2col + GEMM for the filter gradient
    [[2, 7, 7, 3], [3, 3, 3, 4], 1, 'same'],
    [[2, 7, 7, 3], [3, 3, 3, 4], 2, 'same'],
    [[2, 8, 8, 3], [3, 3, 3, 4], 2, 'same'],
    [[1, 9, 6, 5], [3, 3, 5, 2], 2, 'valid'],
    [[2, 6, 6, 3], [3, 3, 3, 4], 2, 'valid'],
    [[1, 5, 5, 2], [1, 1, 2, 3], 1, 'valid'],
    [[1, 5, 5, 2], [1, 1, 2, 3], 2, 'valid'],
    [[2, 11, 9, 4], [5, 5, 4, 3], 2, 'same'],
    [
      [2, 8, 8, 3],
      [3, 3, 3, 4],
      2,
      [
        [0, 0],
        [1, 1],
        [1, 1],
        [0, 0],
      ],
    ],
    [
      [2, 8, 8, 3],
      [3, 3, 3, 4],
      2,
      [
        [0, 0],
        [0, 1],
        [0, 1],
        [0, 0],
      ],
    ],
    [[1, 9, 9, 3], [4, 4, 3, 2], 2, 'same'],
    [[1, 10, 10, 3], [3, 3, 3, 2], 3, 'same'],
    [[1, 8, 8, 2], [3, 3, 2, 2], 2, 1],
    [[1, 9, 7, 2], [3, 2, 2, 2], [2, 1], 'same'],
    [[1, 7, 9, 2], [2, 3, 2, 2], [1, 3], 'valid'],
    // batch >= 3 and 12-31 input channels: the channels-as-batch convolution for the filter gradient
    [[3, 7, 7, 12], [3, 3, 12, 5], 1, 'same'],
    [[4, 7, 7, 12], [3, 3, 12, 5], 2, 'same'],
    [[3, 8, 8, 12], [3, 3, 12, 5], 2, 'valid'],
    [
      [3, 9, 8, 12],
      [3, 3, 12, 5],
      2,
      [
        [0, 0],
        [1, 1],
        [1, 1],
        [0, 0],
      ],
    ],
    [[3, 9, 9, 12], [5, 5, 12, 3], 2, 'same'],
    [[3, 7, 5, 12], [2, 2, 12, 3], [2, 1], 'valid'],
    [[3, 7, 9, 12], [3, 3, 12, 5], [1, 2], 'same'],
    [
      [3, 6, 6, 12],
      [3, 3, 12, 2],
      1,
      [
        [0, 0],
        [4, 4],
        [1, 0],
        [0, 0],
      ],
    ],
    [[3, 5, 5, 12], [4, 4, 12, 2], 2, 'valid'],
    // batch <= 2 (or >= 32 input channels): im2col and GEMMs for the filter gradient
    [[2, 7, 7, 12], [3, 3, 12, 5], 1, 'same'],
    [[3, 6, 6, 100], [3, 3, 100, 3], 1, 'same'],
    [[1, 128, 128, 64], [3, 3, 64, 2], 1, 'same'], // im2col in two chunks
    [[2, 7, 7, 12], [3, 3, 12, 5], 2, 'same'],
    [[2, 8, 8, 12], [3, 3, 12, 5], 2, 'valid'],
    [
      [2, 9, 8, 12],
      [3, 3, 12, 5],
      2,
      [
        [0, 0],
        [1, 1],
        [1, 1],
        [0, 0],
      ],
    ],
    [[1, 9, 9, 12], [5, 5, 12, 3], 2, 'same'],
    [[2, 9, 9, 12], [5, 5, 12, 3], 1, 'valid'],
    [[1, 8, 8, 16], [3, 3, 16, 4], 1, 2],
    [[2, 7, 5, 12], [2, 2, 12, 3], [2, 1], 'valid'],
    [
      [1, 6, 6, 12],
      [3, 3, 12, 2],
      1,
      [
        [0, 0],
        [4, 4],
        [1, 0],
        [0, 0],
      ],
    ], // padding wider than the filter
    [[1, 5, 5, 12], [4, 4, 12, 2], 2, 'valid'],
    // 1x1: a GEMM at stride 1, the general paths at stride 2
    [[2, 6, 6, 40], [1, 1, 40, 7], 1, 'same'],
    [[2, 7, 7, 40], [1, 1, 40, 7], 2, 'same'],
  ];
  for (const [xs, ws, strides, pad] of cases) {
    it(`x [${xs}] filter [${ws}] strides ${JSON.stringify(strides)} pad ${JSON.stringify(pad)}`, async () => {
      const x = normal(xs);
      const w = normal(ws);
      const yShape = tf.tidy(() => tf.conv2d(T(x) as tf.Tensor4D, T(w) as tf.Tensor4D, strides, pad).shape);
      const r = normal(yShape); // a random upstream gradient
      await expectMatch(() => {
        const f = (a: tf.Tensor, b: tf.Tensor) =>
          tf
            .conv2d(a as tf.Tensor4D, b as tf.Tensor4D, strides, pad)
            .mul(T(r))
            .sum();
        return tf.grads(f)([T(x), T(w)]);
      });
    });
  }

  it('errors clearly for NCHW or dilated filter gradients and falls back for NCHW input gradients', async () => {
    await tf.setBackend('wasm');
    const x = tf.zeros([1, 2, 5, 5]);
    const dy = tf.zeros([1, 3, 5, 5]);
    expect(() => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { strides: 1, pad: 'same', dataFormat: 'NCHW', filterShape: [3, 3, 2, 3] })).toThrow(
      /NHWC/,
    );
    const dx = tf
      .engine()
      .runKernel(
        'Conv2DBackpropInput',
        { dy, filter: tf.zeros([3, 3, 2, 3]) },
        { strides: 1, pad: 'same', dataFormat: 'NCHW', inputShape: [1, 2, 5, 5] },
      ) as tf.Tensor;
    expect(dx.shape).toEqual([1, 2, 5, 5]);
    const xh = tf.zeros([1, 5, 5, 2]);
    const dyh = tf.zeros([1, 5, 5, 3]);
    expect(() =>
      tf.engine().runKernel('Conv2DBackpropFilter', { x: xh, dy: dyh }, { strides: 1, pad: 'same', dilations: [2, 2], filterShape: [3, 3, 2, 3] }),
    ).toThrow(/dilations must be 1/);
    tf.dispose([x, dy, dx, xh, dyh]);
  });
});

describe('matMul', () => {
  const cases: Array<[number[], number[], boolean, boolean]> = [
    [[64, 96], [96, 80], false, false],
    [[64, 96], [80, 96], false, true],
    [[96, 64], [96, 80], true, false],
    [[96, 64], [80, 96], true, true],
    [[30, 200], [30, 300], true, false], // wide output: computed transposed
    [[3, 40, 50], [3, 50, 30], false, false],
    [[3, 50, 40], [3, 30, 50], true, true],
    [[3, 50, 40], [3, 50, 30], true, false],
    [[3, 40, 50], [50, 30], false, false],
    [[3, 40, 50], [30, 50], false, true],
    [[2, 3, 40, 50], [3, 50, 30], false, false],
    [[40, 50], [4, 50, 30], false, false],
    [[50, 40], [4, 30, 50], true, true],
    [[2, 5, 3], [2, 3, 4], false, false], // tiny: tfjs' own loop
    [[7, 16, 8], [7, 16, 8], false, true], // attention-like
  ];
  for (const [as, bs, ta, tb] of cases) {
    it(`[${as}]${ta ? 'T' : ''} x [${bs}]${tb ? 'T' : ''}`, async () => {
      const a = normal(as);
      const b = normal(bs);
      await expectMatch(() => tf.matMul(T(a), T(b), ta, tb));
    });
  }

  it('broadcasts batch dims on both sides (which tfjs itself gets wrong)', async () => {
    await tf.setBackend('wasm');
    const a = normal([2, 1, 20, 30]);
    const b = normal([1, 3, 30, 10]);
    const y = tf.tidy(() => tf.matMul(T(a), T(b)).arraySync() as number[][][][]);
    for (let i = 0; i < 2; i++) {
      for (let j = 0; j < 3; j++) {
        for (let m = 0; m < 20; m += 7) {
          for (let n = 0; n < 10; n += 3) {
            let want = 0;
            for (let k = 0; k < 30; k++) want += a.values[(i * 20 + m) * 30 + k] * b.values[(j * 30 + k) * 10 + n];
            expect(y[i][j][m][n]).toBeCloseTo(want, 4);
          }
        }
      }
    }
  });

  const fused: Array<[number[], number[], boolean, boolean, number[] | null, tf.fused.Activation]> = [
    [[64, 96], [96, 80], false, false, [80], 'relu'],
    [[64, 96], [96, 80], false, false, [1], 'linear'], // tfjs' own kernel reads 80 bias values here
    [[96, 64], [80, 96], true, true, [80], 'elu'],
    [[3, 40, 50], [50, 30], false, false, [30], 'sigmoid'],
    [[3, 40, 50], [3, 30, 50], false, true, null, 'leakyrelu'],
    [[3, 50, 40], [3, 50, 30], true, false, [30], 'relu6'],
    [[40, 50], [30, 50], false, true, [30], 'prelu'],
  ];
  for (const [as, bs, ta, tb, bias, activation] of fused) {
    it(`fused [${as}]${ta ? 'T' : ''} x [${bs}]${tb ? 'T' : ''} bias ${JSON.stringify(bias)} ${activation}`, async () => {
      const a = normal(as);
      const b = normal(bs);
      const bi = bias ? normal(bias) : null;
      const N = tb ? bs[bs.length - 2] : bs[bs.length - 1];
      const alpha = normal([N]);
      await expectMatch(() =>
        tf.fused.matMul({
          a: T(a),
          b: T(b),
          transposeA: ta,
          transposeB: tb,
          bias: bi ? T(bi) : undefined,
          activation,
          preluActivationWeights: activation === 'prelu' ? T(alpha) : undefined,
          leakyreluAlpha: 0.1,
        }),
      );
    });
  }

  it('gives the gradients of a dense layer and of batched attention', async () => {
    const x = normal([24, 20]);
    const w = normal([20, 12]);
    const q = normal([6, 10, 8]);
    const k = normal([6, 10, 8]);
    await expectMatch(() => {
      const f = (xx: tf.Tensor, ww: tf.Tensor, qq: tf.Tensor, kk: tf.Tensor) =>
        tf.add(
          tf.matMul(xx, ww).square().sum(),
          tf
            .softmax(tf.matMul(qq, kk, false, true))
            .matMul(kk)
            .square()
            .sum(),
        );
      return tf.grads(f as (...args: tf.Tensor[]) => tf.Tensor)([T(x), T(w), T(q), T(k)]);
    });
  });
});

describe('sum and mean', () => {
  const cases: Array<[number[], number[], boolean]> = [
    [[64, 48], [0], false],
    [[4, 16, 16, 32], [0, 1, 2], false],
    [[4, 16, 16, 32], [1, 2], true],
    [[4, 16, 16, 8, 4], [1, 2, 4], true], // GroupNorm's moments
    [[4, 16, 16, 8, 4], [-4, -3, -1], false],
    [[8192, 3], [0], false],
    [[2, 3, 4, 5, 60], [0, 2], false],
    [[5000, 2], [0], true],
    [[2, 8, 1, 8, 1, 40], [2, 4], false], // the upsample's broadcast gradient
    [[96, 64], [0, 1], false], // all axes: tfjs' own
    [[20, 30], [1], false], // innermost: tfjs' own
    [[17000, 3], [0], false], // two-level pooling
  ];
  for (const [xs, axes, keepDims] of cases) {
    it(`[${xs}] over [${axes}]${keepDims ? ' keepDims' : ''}`, async () => {
      const x = normal(xs);
      // Positive values: the relative error of a sum is then meaningful.
      const pos = { shape: xs, values: x.values.map(Math.abs) };
      await expectMatch(() => [tf.sum(T(pos), axes, keepDims), tf.mean(T(pos), axes, keepDims), tf.mean(T(x), axes, keepDims).add(10)]);
    });
  }

  it('keeps tfjs behaviour for int32 and bool', async () => {
    const v = Array.from({ length: 4096 }, (_, i) => (i * 7) % 13);
    await expectMatch(() => [
      tf.sum(tf.tensor(v, [64, 64], 'int32'), 0).cast('float32'),
      tf.mean(tf.tensor(v, [64, 64], 'int32'), 0),
      tf
        .sum(
          tf.tensor(
            v.map((t) => t > 6),
            [64, 64],
            'bool',
          ),
          0,
        )
        .cast('float32'),
    ]);
  });
});

describe('max pool gradient', () => {
  // tfjs-wasm's own kernel fails the negative and tied cases (see the kernel's comment).
  const cases: Array<[number[], number, number, 'valid' | 'same' | number, string]> = [
    [[2, 8, 8, 3], 2, 2, 'valid', 'N(0, 1): windows of negative values'],
    [[1, 7, 5, 2], 2, 2, 'valid', 'odd size'],
    [[2, 7, 6, 4], 3, 2, 'same', 'overlapping, padded'],
    [[1, 6, 6, 2], 3, 1, 'same', 'every pixel in 9 windows'],
    [[2, 9, 9, 3], 3, 2, 1, 'explicit pad'],
  ];
  for (const [xs, k, s, pad, what] of cases) {
    it(`[${xs}] pool ${k} stride ${s} pad ${pad} (${what})`, async () => {
      const x = normal(xs);
      const ties = { shape: xs, values: x.values.map((v) => Math.round(v)) }; // many tied maxima, some all-negative windows
      for (const d of [x, ties]) {
        await expectMatch(() => {
          const f = (a: tf.Tensor) => {
            const y = tf.maxPool(a as tf.Tensor4D, k, s, pad);
            return tf.sum(tf.mul(y, tf.range(1, 1 + y.size).reshape(y.shape))); // a dy that names its window
          };
          return tf.grad(f)(T(d));
        }, 0);
      }
    });
  }
});

describe('the classifier', () => {
  // A model-level check beside the kernel tests: the classifier's kernels (pools, ReLU, one-hot,
  // softmax cross-entropy) on wasm against cpu. (The max pool bug above does not show here: after
  // a ReLU no window is all negative, and a tie at 0 meets a zero ReLU gradient.)
  it('has the same loss and gradients on wasm as on cpu (avg and max pooling, two heads)', async () => {
    const images = normal([5, 8, 8, 2]);
    for (const pool of ['avg', 'max'] as const) {
      const config = parseClassifierConfig({
        imageSize: 8,
        imageChannels: 2,
        channels: [4, 6],
        hidden: 8,
        pool,
        heads: [
          { name: 'a', classes: ['x', 'y', 'z'] },
          { name: 'b', classes: ['p', 'q'] },
        ],
      });
      const run = async (backend: string): Promise<Arrays> => {
        await tf.setBackend(backend);
        const clf = new AttributeClassifier(config, new Generator(3));
        const [x, y] = [T(images) as tf.Tensor4D, tf.tensor2d([0, 1, 2, 0, 1, 1, 0, 0, 2, 1], [5, 2], 'int32')];
        const r = computeGradients(clf.store, () => clf.lossFn(x, y));
        tf.dispose([x, y]);
        const out = [r.loss, ...r.grads.values()].map((t) => t.dataSync() as Float32Array);
        r.loss.dispose();
        disposeGrads(r.grads);
        clf.dispose();
        return out;
      };
      // tfjs' softmaxCrossEntropy (a customGrad op whose saved tensors share buffers) trips
      // IS_TEST's per-op data-id check on every backend; the tensor count is checked instead.
      tf.env().set('IS_TEST', false);
      const before = tf.memory().numTensors;
      let cpu: Arrays;
      let wasm: Arrays;
      try {
        cpu = await run('cpu');
        wasm = await run('wasm');
      } finally {
        tf.env().set('IS_TEST', true);
      }
      expect(tf.memory().numTensors).toBe(before);
      cpu.forEach((c, i) => {
        expect(relErr(wasm[i], c), `${pool} output ${i}`).toBeLessThan(1e-4);
      });
    }
  });
});

describe('slice and split', () => {
  it('match tfjs on several layouts and dtypes', async () => {
    const x = normal([4, 6, 5, 7]);
    const ints = Array.from({ length: 4 * 6 * 5 * 7 }, (_, i) => i);
    await expectMatch(() => {
      const t = T(x);
      return [
        tf.slice(t, [1, 0, 0, 0], [2, 6, 5, 7]),
        tf.slice(t, [0, 2, 1, 0], [4, 3, 3, 7]),
        tf.slice(t, [1, 1, 1, 2], [2, 4, 3, 4]),
        tf.slice(t, [3, 5, 4, 6], [1, 1, 1, 1]),
        tf.slice(t, [0, 0, 0, 0], [-1, 2, -1, -1]),
        tf.slice(t.reshape([840]), [100], [300]),
        ...tf.split(t, [2, 5], 3),
        ...tf.split(t, 3, 1),
        tf.slice(tf.tensor(ints, [4, 6, 5, 7], 'int32'), [1, 2, 0, 3], [2, 2, 5, 2]).cast('float32'),
        tf.split(tf.tensor(ints, [4, 6, 5, 7], 'int32'), [3, 4], 3)[1].cast('float32'),
      ];
    }, 0);
  });
});

// --- a small network with every construct the models use -------------------------------------

interface Weights {
  [name: string]: Data;
}

function makeWeights(): Weights {
  const w = (shape: number[], scale: number) => ({ shape, values: gen.normalArray(shape.reduce((a, b) => a * b, 1)).map((v) => v * scale) });
  return {
    conv1: w([3, 3, 3, 8], 0.3),
    conv1b: w([8], 0.1),
    gnGamma: w([8], 0.1),
    gnBeta: w([8], 0.1),
    conv2: w([3, 3, 8, 16], 0.15),
    conv2b: w([16], 0.1),
    lnGamma: w([16], 0.1),
    lnBeta: w([16], 0.1),
    wq: w([16, 16], 0.25),
    wk: w([16, 16], 0.25),
    wv: w([16, 16], 0.25),
    wo: w([16, 16], 0.25),
    wob: w([16], 0.1),
    conv3: w([1, 1, 24, 12], 0.2),
    conv4: w([5, 5, 12, 4], 0.08),
    conv4b: w([4], 0.1),
  };
}

const silu = (x: tf.Tensor) => x.mul(tf.sigmoid(x));
const geluTanh = (x: tf.Tensor) => x.mul(0.5).mul(tf.tanh(x.add(x.pow(3).mul(0.044715)).mul(Math.sqrt(2 / Math.PI))).add(1));

function groupNorm(x: tf.Tensor, groups: number, gamma: tf.Tensor, beta: tf.Tensor): tf.Tensor {
  const [B, H, W, C] = x.shape;
  const g = x.reshape([B, H, W, groups, C / groups]);
  const { mean, variance } = tf.moments(g, [1, 2, 4], true);
  const n = g.sub(mean).div(variance.add(1e-5).sqrt()).reshape([B, H, W, C]);
  return n.mul(gamma.add(1)).add(beta);
}

function layerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor): tf.Tensor {
  const { mean, variance } = tf.moments(x, -1, true);
  return x.sub(mean).div(variance.add(1e-5).sqrt()).mul(gamma.add(1)).add(beta);
}

/** [B, T, D] x [D, E] as a 2-D matMul. */
function dense(x: tf.Tensor, w: tf.Tensor, b?: tf.Tensor): tf.Tensor {
  const [B, Tn, D] = x.shape;
  const y = tf.matMul(x.reshape([B * Tn, D]), w);
  return (b ? y.add(b) : y).reshape([B, Tn, w.shape[1] as number]);
}

function attention(x: tf.Tensor, p: Record<string, tf.Tensor>, heads: number): tf.Tensor {
  const [B, Tn, D] = x.shape;
  const d = D / heads;
  const split = (t: tf.Tensor) =>
    t
      .reshape([B, Tn, heads, d])
      .transpose([0, 2, 1, 3])
      .reshape([B * heads, Tn, d]);
  const h = layerNorm(x, p.lnGamma, p.lnBeta);
  const q = split(dense(h, p.wq));
  const k = split(dense(h, p.wk));
  const v = split(dense(h, p.wv));
  const att = tf.softmax(tf.matMul(q, k, false, true).mul(1 / Math.sqrt(d)));
  const o = tf.matMul(att, v).reshape([B, heads, Tn, d]).transpose([0, 2, 1, 3]).reshape([B, Tn, D]);
  return x.add(dense(o, p.wo, p.wob));
}

function upsample2x(x: tf.Tensor): tf.Tensor {
  const [B, H, W, C] = x.shape;
  return x
    .reshape([B, H, 1, W, 1, C])
    .mul(tf.ones([1, 1, 2, 1, 2, 1]))
    .reshape([B, 2 * H, 2 * W, C]);
}

function net(p: Record<string, tf.Tensor>, x: tf.Tensor): tf.Tensor {
  const h1 = silu(groupNorm(tf.conv2d(x as tf.Tensor4D, p.conv1 as tf.Tensor4D, 1, 'same').add(p.conv1b), 2, p.gnGamma, p.gnBeta)); // [B,8,8,8]
  const h2 = geluTanh(tf.conv2d(h1 as tf.Tensor4D, p.conv2 as tf.Tensor4D, 2, 'same').add(p.conv2b)); // [B,4,4,16]
  const [B, H, W, C] = h2.shape;
  const a = attention(h2.reshape([B, H * W, C]), p, 2).reshape([B, H, W, C]);
  const u = upsample2x(a); // [B,8,8,16]
  const cat = tf.concat([u, h1], 3); // [B,8,8,24]
  const h3 = silu(tf.conv2d(cat as tf.Tensor4D, p.conv3 as tf.Tensor4D, 1, 'valid')); // [B,8,8,12]
  return tf
    .conv2d(
      h3 as tf.Tensor4D,
      p.conv4 as tf.Tensor4D,
      [2, 1],
      [
        [0, 0],
        [2, 1],
        [1, 2],
        [0, 0],
      ],
    )
    .add(p.conv4b);
}

describe('identity', () => {
  it('shares memory (no copy) and stays correct when either side is disposed or reassigned', async () => {
    await tf.setBackend('wasm');
    const buffers = () => tf.memory().numDataBuffers;
    const x = tf.tensor1d([1, 2, 3, 4]);
    const before = buffers();
    const y = tf.clone(x); // the Identity kernel
    expect(buffers()).toBe(before); // shared, not copied
    x.dispose();
    expect(Array.from(await y.data())).toEqual([1, 2, 3, 4]);
    const v = tf.variable(tf.tensor1d([5, 6]));
    const snapshot = tf.clone(v);
    v.assign(tf.tensor1d([7, 8]));
    expect(Array.from(await snapshot.data())).toEqual([5, 6]);
    expect(Array.from(await v.data())).toEqual([7, 8]);
    tf.dispose([y, v, snapshot]);
    const s = tf.clone(tf.tensor1d(['a', 'b'], 'string'));
    expect(await s.data()).toEqual(['a', 'b']);
  });
});

describe('a small network', () => {
  const weights = makeWeights();
  const names = Object.keys(weights);
  const input = normal([2, 8, 8, 3]);
  const target = normal([2, 4, 7, 4]);

  it('has the same gradients for every weight on wasm as on cpu', async () => {
    await expectMatch(() => {
      const f = (...ws: tf.Tensor[]) => {
        const p = Object.fromEntries(names.map((n, i) => [n, ws[i]]));
        const y = net(p, T(input));
        expect(y.shape).toEqual(target.shape);
        return y.sub(T(target)).square().mean();
      };
      const { value, grads } = tf.valueAndGrads(f)(names.map((n) => T(weights[n])));
      return [value, ...grads];
    }, 1e-4);
  });

  it('does not leak tensors across gradient + update steps on wasm', async () => {
    await tf.setBackend('wasm');
    const vars = names.map((n) => tf.variable(T(weights[n]), true, `net.${n}`));
    const x = T(input);
    const tgt = tf.tensor(target.values, target.shape);
    const step = () => {
      const p = Object.fromEntries(names.map((n, i) => [n, vars[i] as tf.Tensor]));
      const { value, grads } = tf.variableGrads(() => net(p, x).sub(tgt).square().mean() as tf.Scalar, vars);
      tf.tidy(() => {
        for (const v of vars) v.assign(v.sub(grads[v.name].mul(0.01)));
      });
      const loss = value.dataSync()[0];
      tf.dispose([value, ...Object.values(grads)]);
      return loss;
    };
    const l0 = step();
    const count = tf.memory().numTensors;
    const bytes = tf.memory().numBytes;
    let l = l0;
    for (let i = 0; i < 3; i++) {
      l = step();
      expect(tf.memory().numTensors).toBe(count);
      expect(tf.memory().numBytes).toBe(bytes);
    }
    expect(l).toBeLessThan(l0);
    tf.dispose([...vars, x, tgt]);
  });
});

describe('fused AdamW', () => {
  it('matches a float64 reference of Loshchilov & Hutter Algorithm 2 and writes new buffers', async () => {
    const { ParamStore } = await import('../../src/nn/params.js');
    const { AdamW } = await import('../../src/optim/adamw.js');
    const n = 1000;
    const p0 = gen.normalArray(n);
    const cfg = { lr: 0.01, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1 };
    const store = new ParamStore();
    const v = store.add('p', [n], { kind: 'zeros' }, new Generator(0));
    tf.tidy(() => v.assign(tf.tensor1d(p0)));
    const opt = new AdamW(store, cfg);
    const p = Float64Array.from(p0);
    const m = new Float64Array(n);
    const s = new Float64Array(n);
    let before = 0;
    for (let t = 1; t <= 3; t++) {
      if (t === 2) before = tf.memory().numTensors; // after the first step made the m and v slots
      const g = gen.normalArray(n);
      for (let i = 0; i < n; i++) {
        m[i] = cfg.beta1 * m[i] + (1 - cfg.beta1) * g[i];
        s[i] = cfg.beta2 * s[i] + (1 - cfg.beta2) * g[i] ** 2;
        const mh = m[i] / (1 - cfg.beta1 ** t);
        const vh = s[i] / (1 - cfg.beta2 ** t);
        p[i] = p[i] - cfg.lr * (mh / (Math.sqrt(vh) + cfg.eps) + cfg.weightDecay * p[i]);
      }
      const held = tf.clone(v); // shares v's buffer (our Identity): the update must not write into it
      const heldValues = held.dataSync().slice();
      const grads = new Map([['p', tf.tensor1d(g)]]);
      opt.step(grads);
      grads.get('p')!.dispose();
      expect(held.dataSync()).toEqual(heldValues);
      held.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
    const got = v.dataSync();
    let worst = 0;
    for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(got[i] - p[i]));
    expect(worst).toBeLessThan(1e-6);
    opt.dispose();
    store.dispose();
  });
});
