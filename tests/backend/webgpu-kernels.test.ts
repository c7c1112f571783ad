// The webgpu kernel pack against tfjs' cpu backend, kernel by kernel, then a small network with
// max pooling (the classifier). Tiny shapes: llvmpipe is slow. Skipped, saying why, where there
// is no WebGPU adapter (scripts/setup-webgpu-cpu.sh installs Mesa's software one).
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWebGpu } from '../../src/backend/webgpu.js';
import { WEBGPU_KERNEL_NAMES, registerWebGpuKernels } from '../../src/backend/webgpu-kernels.js';
import { AttributeClassifier, parseClassifierConfig } from '../../src/classifier/classifier.js';
import { computeGradients, disposeGrads } from '../../src/nn/params.js';
import { Generator } from '../../src/random/generator.js';
import { noAdapter, webgpuTitle } from '../webgpu/adapter.js';

type Arrays = Float32Array[];

/** max |got - want| / max |want| (a relative error that tolerates entries near zero); NaN where either is NaN and the other not. */
function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  expect(got.length).toBe(want.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    if (Number.isNaN(got[i]) || Number.isNaN(want[i])) {
      if (Number.isNaN(got[i]) !== Number.isNaN(want[i])) return NaN;
      continue;
    }
    num = Math.max(num, Math.abs(got[i] - want[i]));
    den = Math.max(den, Math.abs(want[i]));
  }
  return num / Math.max(den, 1e-30);
}

async function values(f: () => tf.Tensor | tf.Tensor[]): Promise<Arrays> {
  const outs = tf.tidy(() => {
    const r = f();
    return Array.isArray(r) ? r : [r];
  });
  const vals: Arrays = [];
  for (const o of outs) vals.push((await o.data()) as Float32Array);
  tf.dispose(outs);
  return vals;
}

/** Runs `f` on cpu then on webgpu (fresh tensors each time) and compares every output. */
async function expectMatch(f: () => tf.Tensor | tf.Tensor[], tol = 1e-5, label = ''): Promise<void> {
  await tf.setBackend('cpu');
  const cpu = await values(f);
  await tf.setBackend('webgpu');
  const before = tf.memory().numTensors;
  const gpu = await values(f);
  expect(tf.memory().numTensors).toBe(before);
  expect(gpu.length).toBe(cpu.length);
  cpu.forEach((c, i) => {
    const e = relErr(gpu[i], c);
    if (!(e <= tol)) throw new Error(`${label} output ${i}: relative error ${e} > ${tol}`);
  });
}

const gen = new Generator(20250607);
const normal = (shape: number[], scale = 1) => ({ shape, values: gen.normalArray(shape.reduce((a, b) => a * b, 1)).map((v) => v * scale) });
type Data = ReturnType<typeof normal>;
const T = (d: Data) => tf.tensor(d.values, d.shape);

describe.skipIf(noAdapter)(webgpuTitle('the webgpu kernel pack'), () => {
  beforeAll(async () => {
    await startWebGpu(true);
    // tfjs computes ops of small host-resident inputs on the CPU; here every kernel must run on the GPU.
    tf.env().set('WEBGPU_CPU_FORWARD', false);
  });
  afterAll(() => {
    tf.env().set('WEBGPU_CPU_FORWARD', true);
  });

  it('is registered for webgpu only, once however often it is registered', () => {
    const before = WEBGPU_KERNEL_NAMES.map((n) => tf.getKernel(n, 'webgpu'));
    registerWebGpuKernels();
    registerWebGpuKernels();
    expect(WEBGPU_KERNEL_NAMES.map((n) => tf.getKernel(n, 'webgpu'))).toEqual(before);
    expect([...WEBGPU_KERNEL_NAMES].sort()).toEqual(['AddN', 'BatchMatMul', 'Cos', 'MaxPoolGrad', 'Sin']);
    const marker = Symbol.for('txt2img.webgpuKernels.replaced');
    for (const n of WEBGPU_KERNEL_NAMES) {
      expect(marker in (tf.getKernel(n, 'webgpu') as object)).toBe(true);
      for (const other of ['cpu', 'wasm']) {
        const k = tf.getKernel(n, other);
        if (k) expect(marker in (k as object)).toBe(false);
      }
    }
  });

  it('AddN: more inputs than a shader may bind (chunks, then chunks of chunks) as cpu sums them', async () => {
    const limit = (tf.backend() as unknown as { device: { limits: { maxStorageBuffersPerShaderStage: number } } }).device.limits
      .maxStorageBuffersPerShaderStage;
    const n = (limit - 1) ** 2 + 3; // two levels of partial sums
    const xs = Array.from({ length: n }, () => normal([37]));
    for (const k of [2, limit - 1, limit, n]) await expectMatch(() => tf.addN(xs.slice(0, k).map(T)), 1e-6, `addN of ${k}`);
  });

  it('BatchMatMul with batch dims broadcast on both sides (cpu: tiled by hand, its own kernel gets it wrong)', async () => {
    const cases: Array<[number[], number[], boolean, boolean]> = [
      [[2, 1, 5, 4], [1, 3, 4, 6], false, false],
      [[2, 1, 4, 5], [1, 3, 6, 4], true, true],
      [[3, 1, 5, 4], [2, 4, 6], false, false], // ranks differ: [3,1] vs [2]
      [[1, 5, 4], [3, 4, 6], false, false], // one side broadcasts: tfjs' own path
      [[2, 3, 5, 4], [2, 3, 6, 4], false, true],
    ];
    for (const [sa, sb, ta, tb] of cases) {
      const a = normal(sa);
      const b = normal(sb);
      const batch = tf.broadcast_util.assertAndGetBroadcastShape(sa.slice(0, -2), sb.slice(0, -2));
      const full = (d: Data) => tf.broadcastTo(T(d), [...batch, ...d.shape.slice(-2)]);
      await tf.setBackend('cpu');
      const [want] = await values(() => tf.matMul(full(a), full(b), ta, tb));
      await tf.setBackend('webgpu');
      const before = tf.memory().numTensors;
      const [got] = await values(() => tf.matMul(T(a), T(b), ta, tb));
      expect(tf.memory().numTensors).toBe(before);
      expect(relErr(got, want), `${sa} x ${sb}`).toBeLessThan(1e-5);
    }
  });

  it("MaxPoolGrad: each dy to its window's first maximum, ties and all-negative windows included", async () => {
    // Ties: every value appears three times in a row; a window of all negatives; padding.
    const tied = { shape: [2, 6, 7, 3], values: Float32Array.from({ length: 2 * 6 * 7 * 3 }, (_, i) => -1 - Math.floor(i / 9) * 0.25) };
    const flat = { shape: [1, 5, 5, 2], values: new Float32Array(50).fill(0) };
    const cases: Array<[Data, number | [number, number], number | [number, number], 'valid' | 'same' | number]> = [
      [tied, 2, 2, 'valid'],
      [tied, 3, 2, 'same'],
      [tied, 3, 1, 'same'],
      [tied, [2, 3], [1, 2], 'valid'],
      [flat, 3, 2, 1],
      [normal([2, 9, 8, 4]), 3, 2, 'same'],
      [normal([1, 8, 8, 2]), 2, 2, 'valid'],
    ];
    for (const [x, f, s, p] of cases) {
      const outShape = tf.tidy(() => tf.maxPool(T(x) as tf.Tensor4D, f, s, p).shape);
      const dy = normal(outShape);
      await expectMatch(
        () => {
          const g = tf.grad((xx: tf.Tensor) => tf.mul(tf.maxPool(xx as tf.Tensor4D, f, s, p), T(dy)).sum());
          return [g(T(x)), tf.maxPool(T(x) as tf.Tensor4D, f, s, p)];
        },
        1e-6,
        `maxPool ${x.shape} f${f} s${s} ${p}`,
      );
    }
  });

  it('Sin and Cos of arguments up to 1e4 (reduced to [-pi, pi]) as cpu computes them; NaN and Inf give NaN', async () => {
    const args = Float32Array.from({ length: 3001 }, (_, i) => (i - 1500) * 6.6667);
    args.set([NaN, Infinity, -Infinity, 0, -0, Math.PI, 1000, 999], 0);
    const x = { shape: [args.length], values: args };
    await tf.setBackend('cpu');
    const want = await values(() => [tf.sin(T(x)), tf.cos(T(x))]);
    await tf.setBackend('webgpu');
    const got = await values(() => [tf.sin(T(x)), tf.cos(T(x))]);
    for (let k = 0; k < 2; k++) {
      for (let i = 0; i < 3; i++) expect(got[k][i]).toBeNaN();
      let worst = 0;
      for (let i = 3; i < args.length; i++) worst = Math.max(worst, Math.abs(got[k][i] - want[k][i]));
      // Reduction costs |k| ulp(C2) ~ 1e-6 at 1e4; an unreduced GPU sin may be off by far more.
      expect(worst).toBeLessThan(5e-6);
    }
    // llvmpipe's own sin is accurate at any argument, so there this checks the reduction itself;
    // on a GPU whose sin degrades outside [-pi, pi] it also checks that it is reduced.
    // The timestep embedding's range (t * f <= 999) to float32 rounding.
    await expectMatch(() => [tf.sin(tf.range(0, 1000, 0.37)), tf.cos(tf.range(0, 1000, 0.37))], 1e-6, 'sin/cos 0..1000');
  });

  it('the classifier (max and avg pooling) has the same loss and gradients on webgpu as on cpu', async () => {
    const images = normal([5, 8, 8, 2]);
    for (const pool of ['max', 'avg'] as const) {
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
        const before = tf.memory().numTensors;
        const clf = new AttributeClassifier(config, new Generator(3));
        const [x, y] = [T(images) as tf.Tensor4D, tf.tensor2d([0, 1, 2, 0, 1, 1, 0, 0, 2, 1], [5, 2], 'int32')];
        const r = computeGradients(clf.store, () => clf.lossFn(x, y));
        const out: Arrays = [];
        for (const t of [r.loss, ...r.grads.values()]) out.push((await t.data()) as Float32Array);
        tf.dispose([x, y, r.loss]);
        disposeGrads(r.grads);
        clf.dispose();
        expect(tf.memory().numTensors).toBe(before);
        return out;
      };
      const cpu = await run('cpu');
      const gpu = await run('webgpu');
      cpu.forEach((c, i) => {
        expect(relErr(gpu[i], c), `${pool} pooling, output ${i}`).toBeLessThan(1e-4);
      });
    }
  });
});
