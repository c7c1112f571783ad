/**
 * Training gradients on onnxruntime (src/onnx/gradients.ts) against tfjs' own gradient tape:
 * the conv gradient translations one by one (strides, 'same' / 'valid' / explicit pads, odd
 * sizes), then the VAE and U-Net stage losses (CLIP context and label table) on a batch other
 * than the traced one, the trainer with the onnx option against the tfjs trainer, and no leaks.
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { ParamStore, type StagedLoss, computeGradients, disposeGrads, stagedLossFn } from '../../src/nn/params.js';
import { traceToOnnx } from '../../src/onnx/export.js';
import { OnnxGradients } from '../../src/onnx/gradients.js';
import { nchwcBlockSize, OnnxSession } from '../../src/onnx/runtime.js';
import { traceKernels } from '../../src/onnx/trace.js';
import { AttributeClassifier, parseClassifierConfig } from '../../src/classifier/classifier.js';
import { type ClassifierShardTask, classifierStagedLoss } from '../../src/classifier/train.js';
import { type UnetShardBatch, type UnetShardTask, type VaeShardTask, unetStagedLoss, vaeStagedLoss } from '../../src/train/stages.js';
import { train } from '../../src/train/trainer.js';
import { Generator } from '../../src/random/generator.js';
import { DEFAULT_SCHEDULER_CONFIG } from '../../src/schedulers/config.js';
import { LabelEncoder } from '../../src/text/label.js';
import { UNet2DCondition } from '../../src/unet/unet2d-condition.js';
import { AutoencoderKL } from '../../src/vae/autoencoder-kl.js';
import { parseVaeConfig } from '../../src/vae/config.js';
import type { IndexBatch } from '../../src/data/in-memory.js';
import { PEER_UNET_CONFIG, perturbParams } from '../unet/peer-fixture.js';
import { float32BoundRatio, maxAbsDiff, runCommand } from '../helpers.js';

beforeAll(async () => {
  await initBackend({ backend: 'wasm', threads: 1, quiet: true });
});

/** max |a - b| / max |a| over every gradient, and the name of the worst. */
function worstRelative(want: Map<string, tf.Tensor>, got: Map<string, tf.Tensor>): { rel: number; name: string } {
  let worst = { rel: 0, name: '' };
  for (const [name, w] of want) {
    const g = got.get(name);
    if (!g) return { rel: Infinity, name: `${name} (missing)` };
    expect(g.shape).toEqual(w.shape);
    const a = w.dataSync();
    const b = g.dataSync();
    let num = 0;
    let den = 0;
    for (let i = 0; i < a.length; i++) {
      num = Math.max(num, Math.abs(a[i] - b[i]));
      den = Math.max(den, Math.abs(a[i]));
    }
    const rel = num / (den || 1);
    if (rel > worst.rel) worst = { rel, name };
  }
  return worst;
}

/** tfjs' gradients and onnxruntime's for one batch (same rng state for both). */
async function bothGradients<B>(store: ParamStore, staged: StagedLoss<B>, source: OnnxGradients<B>, batch: B, seed: number) {
  const want = computeGradients(store, () => stagedLossFn(staged)(batch, new Generator(seed)));
  const got = await source.gradients(batch, new Generator(seed));
  return { want, got };
}

/** onnxruntime's loss and gradients of one batch are tfjs' (loss to 5 digits, gradients to 1e-4 relative). */
async function expectSameGradients<B>(store: ParamStore, staged: StagedLoss<B>, source: OnnxGradients<B>, batch: B, seed: number): Promise<void> {
  const { want, got } = await bothGradients(store, staged, source, batch, seed);
  expect(got.loss).toBeCloseTo(want.loss.dataSync()[0], 5);
  const worst = worstRelative(want.grads, got.grads);
  expect(worst.rel, worst.name).toBeLessThan(1e-4);
  want.loss.dispose();
  disposeGrads(want.grads);
  disposeGrads(got.grads);
}

describe('ONNX export of the conv gradients', () => {
  const cases: { name: string; x: number[]; k: number; cout: number; stride: number; pad: number | 'same' | 'valid' }[] = [
    { name: '3x3 stride 1 pad 1', x: [2, 6, 6, 3], k: 3, cout: 4, stride: 1, pad: 1 },
    { name: '3x3 stride 2 pad 1', x: [2, 8, 8, 3], k: 3, cout: 4, stride: 2, pad: 1 },
    { name: '3x3 stride 2 same, odd size', x: [1, 7, 5, 2], k: 3, cout: 3, stride: 2, pad: 'same' },
    { name: '3x3 stride 2 valid, odd size', x: [1, 7, 7, 2], k: 3, cout: 3, stride: 2, pad: 'valid' },
    { name: '1x1', x: [2, 4, 4, 5], k: 1, cout: 2, stride: 1, pad: 0 },
    { name: '3x3 stride 1 valid', x: [2, 6, 5, 3], k: 3, cout: 2, stride: 1, pad: 'valid' },
    { name: '5x5 stride 1 same', x: [1, 7, 6, 2], k: 5, cout: 3, stride: 1, pad: 'same' },
    // Outputs of at most 16 pixels (forward and input gradient) run as one batched im2col product.
    { name: '3x3 stride 1 pad 1, 4x4', x: [2, 4, 4, 3], k: 3, cout: 4, stride: 1, pad: 1 },
    { name: '3x3 stride 1 valid, 5x4', x: [2, 5, 4, 3], k: 3, cout: 2, stride: 1, pad: 'valid' },
    { name: '5x5 stride 1 same, 3x4', x: [1, 3, 4, 2], k: 5, cout: 3, stride: 1, pad: 'same' },
    // 16x16 and larger outputs take the per-image product on NCHW data.
    { name: '3x3 stride 1 pad 1, 16x16', x: [2, 16, 16, 3], k: 3, cout: 4, stride: 1, pad: 1 },
    { name: '3x3 stride 1 valid, 18x19', x: [1, 18, 19, 2], k: 3, cout: 3, stride: 1, pad: 'valid' },
    { name: '5x5 stride 1 same, 17x16', x: [1, 17, 16, 2], k: 5, cout: 3, stride: 1, pad: 'same' },
    { name: '1x1, 16x16', x: [2, 16, 16, 3], k: 1, cout: 2, stride: 1, pad: 0 },
    { name: '3x3 stride 2 same, 35x33', x: [1, 35, 33, 2], k: 3, cout: 3, stride: 2, pad: 'same' },
    // Channel counts that are multiples of the NCHWc block: also exported with nchwcBlock.
    { name: '3x3 stride 1 pad 1, 16 -> 32 channels', x: [2, 6, 5, 16], k: 3, cout: 32, stride: 1, pad: 1 },
    { name: '3x3 stride 2 same, 32 -> 16 channels, 9x8', x: [2, 9, 8, 32], k: 3, cout: 16, stride: 2, pad: 'same' },
    { name: '1x1, 16 -> 16 channels', x: [1, 5, 5, 16], k: 1, cout: 16, stride: 1, pad: 0 },
    { name: '3x3 stride 1 pad 1, 16 channels, 16x16', x: [1, 16, 16, 16], k: 3, cout: 16, stride: 1, pad: 1 },
  ];
  for (const c of cases) {
    it(`matches tf.grads for a conv ${c.name}`, async () => {
      const rng = new Generator(11);
      const x = rng.randn(c.x);
      const w = rng.randn([c.k, c.k, c.x[3], c.cout]);
      const yShape = tf.tidy(() => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, c.stride, c.pad).shape);
      // A fixed random cotangent: dy is non-constant but exact, so dx and dw are each one sum of
      // products of the inputs, with a rounding bound of their own (see float32BoundRatio).
      const r = rng.randn(yShape);
      const absR = tf.abs(r);
      const lossWith = (cot: tf.Tensor) => (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.stride, c.pad), cot));
      const g = tf.grads(lossWith(r));
      const [wantX, wantW] = g([x, w]);
      // The same gradients on absolute values: the sums of |terms| the rounding bound scales with.
      const [absX, absW] = tf.tidy(() => tf.grads(lossWith(absR))([tf.abs(x), tf.abs(w)]));
      // Terms per element: dx sums k*k*Cout products, dw sums B*Ho*Wo.
      const nX = c.k * c.k * c.cout;
      const nW = yShape[0] * yShape[1] * yShape[2];
      const trace = traceKernels(() => g([x, w]), { x, w });
      const kernels = new Set(trace.nodes.map((n) => n.kernel));
      expect(kernels.has('Conv2DBackpropInput') && kernels.has('Conv2DBackpropFilter')).toBe(true);
      const block = await nchwcBlockSize();
      const blocked = block > 0 && c.x[3] % block === 0 && c.cout % block === 0;
      for (const [propagateLayout, nchwcBlock] of [[true, 0], [false, 0], ...(blocked ? [[true, block]] : [])] as [boolean, number][]) {
        const model = traceToOnnx(trace, { outputNames: ['dx', 'dw'], propagateLayout, nchwcBlock });
        // The forward conv and the input gradient's: NCHWc Convs when the channels allow it.
        expect(Buffer.from(model).includes('com.microsoft.nchwc')).toBe(nchwcBlock > 0);
        const session = await OnnxSession.create(model, { threads: 1 });
        const out = await session.run({ x, w });
        expect(out.dx.shape).toEqual(wantX.shape);
        expect(out.dw.shape).toEqual(wantW.shape);
        expect(float32BoundRatio(wantX.dataSync(), out.dx.dataSync(), absX.dataSync(), nX), 'dx').toBeLessThanOrEqual(1);
        expect(float32BoundRatio(wantW.dataSync(), out.dw.dataSync(), absW.dataSync(), nW), 'dw').toBeLessThanOrEqual(1);
        session.dispose();
        tf.dispose(Object.values(out));
      }
      tf.dispose([x, w, r, absR, wantX, wantW, absX, absW]);
    });
  }
});

describe('ONNX export of the pools and their gradients', () => {
  const cases: { name: string; x: number[]; k: number; stride: number; pad: 'same' | 'valid' | number; ties?: boolean }[] = [
    { name: '2x2 stride 2 valid (LeNet)', x: [2, 8, 8, 3], k: 2, stride: 2, pad: 'valid' },
    { name: '2x2 stride 2 valid, odd size', x: [1, 7, 5, 2], k: 2, stride: 2, pad: 'valid' },
    { name: '3x3 stride 2 same, overlapping', x: [2, 7, 6, 2], k: 3, stride: 2, pad: 'same' },
    { name: '3x3 stride 1 same, every pixel in 9 windows', x: [1, 5, 6, 3], k: 3, stride: 1, pad: 'same' },
    { name: '3x3 stride 2 pad 1', x: [1, 8, 8, 2], k: 3, stride: 2, pad: 1 },
    { name: '2x2 stride 2 valid, tied maxima', x: [2, 6, 6, 2], k: 2, stride: 2, pad: 'valid', ties: true },
    { name: '3x3 stride 2 same, tied maxima', x: [1, 7, 7, 2], k: 3, stride: 2, pad: 'same', ties: true },
  ];
  for (const c of cases) {
    for (const kind of ['avg', 'max'] as const) {
      if (c.ties && kind === 'avg') continue;
      it(`matches tfjs for ${kind} pool ${c.name}`, async () => {
        const rng = new Generator(5);
        // Ties: small integers, so windows hold several equal maxima (tfjs gives dy to the first).
        const x = c.ties ? tf.tidy(() => tf.round(tf.mul(rng.rand(c.x), 2))) : rng.randn(c.x);
        const pool = (a: tf.Tensor) => (kind === 'avg' ? tf.avgPool : tf.maxPool)(a as tf.Tensor4D, c.k, c.stride, c.pad);
        const f = (a: tf.Tensor) => {
          const y = pool(a);
          return tf.sum(tf.mul(y, tf.sin(tf.add(tf.range(0, y.size).reshape(y.shape), y)))); // a dy that differs per window
        };
        const g = tf.grad(f);
        const wantY = pool(x);
        const wantDx = g(x);
        const trace = traceKernels(() => [pool(x), g(x)], { x });
        const kernels = new Set(trace.nodes.map((n) => n.kernel));
        expect(kernels.has(kind === 'avg' ? 'AvgPoolGrad' : 'MaxPoolGrad')).toBe(true);
        for (const propagateLayout of [true, false]) {
          const model = traceToOnnx(trace, { outputNames: ['y', 'dx'], propagateLayout });
          const session = await OnnxSession.create(model, { threads: 1 });
          const out = await session.run({ x });
          expect(out.y.shape).toEqual(wantY.shape);
          expect(maxAbsDiff(out.y.dataSync(), wantY.dataSync())).toBeLessThan(1e-5);
          expect(worstRelative(new Map([['dx', wantDx]]), new Map([['dx', out.dx]])).rel).toBeLessThan(1e-5);
          session.dispose();
          tf.dispose(Object.values(out));
        }
        tf.dispose([x, wantY, wantDx]);
      });
    }
  }

  it('tells a pool with dimRoundingMode apart (not exported)', () => {
    const x = tf.zeros([1, 5, 5, 1]);
    const trace = traceKernels(() => tf.maxPool(x as tf.Tensor4D, 2, 2, 1, 'floor'), { x });
    expect(() => traceToOnnx(trace)).toThrow(/MaxPool dimRoundingMode is not supported/);
    x.dispose();
  });
});

describe('ONNX export with NCHWc convs', () => {
  it('matches tf.grads for two convs reading one input (one NCHWc copy of it), then a third conv', async () => {
    const block = await nchwcBlockSize();
    if (block === 0) return; // no NCHWc kernels in this onnxruntime build: plain Convs, tested above
    const rng = new Generator(5);
    const x = rng.randn([2, 6, 7, 16]);
    const shapes = [
      [3, 3, 16, 32],
      [1, 1, 16, 32],
      [3, 3, 32, 16],
    ];
    const [w1, w2, w3] = shapes.map((shape) => rng.randn(shape));
    // A fixed random cotangent on y [2, 3, 4, 16]: the gradients are multilinear in (x, w, r).
    const r = rng.randn([2, 3, 4, 16]);
    const absR = tf.abs(r);
    const lossWith = (cot: tf.Tensor) => (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, d: tf.Tensor) => {
      const h = tf.add(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, 'same'), tf.conv2d(a as tf.Tensor4D, c as tf.Tensor4D, 1, 'same'));
      const y = tf.conv2d(h as tf.Tensor4D, d as tf.Tensor4D, 2, 'same');
      return tf.sum(tf.mul(y, cot));
    };
    const g = tf.grads(lossWith(r));
    const want = g([x, w1, w2, w3]);
    const absRef = tf.tidy(() => tf.grads(lossWith(absR))([x, w1, w2, w3].map((t) => tf.abs(t))));
    // Every accumulation along any path through the chain: each conv's forward (k*k*Cin), input
    // gradient (k*k*Cout) and filter gradient (B*Ho*Wo) sums, and the branch add.
    const n = 2 * 6 * 7 + 16 * 9 + 32 * 9 + (16 + 32 + 2 * 6 * 7) + (32 * 9 + 16 * 9 + 2 * 3 * 4) + 1;
    const trace = traceKernels(() => g([x, w1, w2, w3]), { x, w1, w2, w3 });
    const names = ['dx', 'dw1', 'dw2', 'dw3'];
    const model = traceToOnnx(trace, { outputNames: names, nchwcBlock: block });
    // x once for both forward convs, and each input gradient's dy (tfjs' Add gradient hands each
    // branch its own tensor); the stride-2 conv (12 output pixels) is an im2col product and its
    // input gradient a ConvTranspose. The name appears as op type and as node name.
    const reorders = Buffer.from(model).toString('latin1').split('ReorderInput').length - 1;
    expect(reorders / 2).toBe(3);
    const session = await OnnxSession.create(model, { threads: 1 });
    const out = await session.run({ x, w1, w2, w3 });
    names.forEach((name, i) => {
      expect(out[name].shape).toEqual(want[i].shape);
      expect(float32BoundRatio(want[i].dataSync(), out[name].dataSync(), absRef[i].dataSync(), n), name).toBeLessThanOrEqual(1);
    });
    session.dispose();
    tf.dispose([x, w1, w2, w3, r, absR, ...want, ...absRef, ...Object.values(out)]);
  });
});

describe('nchwcBlockSize', () => {
  it("is onnxruntime's NCHWc channel block on this CPU (x64 builds have the kernels), 0 where it has none", async () => {
    const block = await nchwcBlockSize();
    expect([0, 8, 16]).toContain(block);
    if (process.arch === 'x64') expect(block).toBeGreaterThan(0);
    expect(await nchwcBlockSize()).toBe(block);
  });
});

describe('OnnxSession', () => {
  // onnxruntime-node 1.14 ignored the options of a model given as bytes: every session had one thread per core.
  it.runIf(existsSync('/proc/self/task'))('runs on the intra-op threads asked for', async () => {
    const x = tf.ones([2, 3]);
    const trace = traceKernels(() => [tf.matMul(x, x, false, true)], { x });
    const model = traceToOnnx(trace, { outputNames: ['y'] });
    const threads = () => readdirSync('/proc/self/task').length;
    for (const n of [1, 3]) {
      const before = threads();
      const session = await OnnxSession.create(model, { threads: n });
      expect(threads() - before, `threads: ${n}`).toBe(n - 1); // the caller's thread is the first
      session.dispose();
    }
    x.dispose();
  });

  // Data-parallel shards load onnxruntime-node in worker threads; bindings before 1.22 corrupt the heap then.
  it('survives worker threads that load it, run and exit, round after round', async () => {
    const x = tf.ones([2, 3]);
    const trace = traceKernels(() => [tf.matMul(x, x, false, true)], { x });
    const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'ort-workers-')), 'm.onnx');
    writeFileSync(file, traceToOnnx(trace, { outputNames: ['y'] }));
    x.dispose();
    const script = fileURLToPath(new URL('../fixtures/ort-workers.mjs', import.meta.url));
    const r = await runCommand(process.execPath, [script, file, '20'], { timeout: 300_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('ok');
    expect(r.code).toBe(0);
  });
});

describe('OnnxGradients', () => {
  it('gives the VAE stage loss and its gradients, on batches other than the traced one, and leaks nothing', async () => {
    const rng = new Generator(3);
    const n = 6;
    // L1 reconstruction (the default model's): its gradient is tfjs' Step kernel.
    const config = parseVaeConfig({
      imageChannels: 1,
      channels: [4, 8, 8],
      resBlocksPerLevel: 1,
      latentChannels: 2,
      downsampleFactor: 4,
      groupNormGroups: 2,
      reconLoss: 'l1',
    });
    const task: VaeShardTask = { vae: config, data: { images: Float32Array.from({ length: n * 8 * 8 }, () => rng.uniform() * 2 - 1), shape: [n, 8, 8, 1] } };
    const vae = new AutoencoderKL(config, new Generator(1));
    perturbParams(vae.store, 4);
    const staged = vaeStagedLoss(task, vae);
    const source = new OnnxGradients(vae.store, staged, { threads: 1 });
    const batch = (indices: number[]): IndexBatch => ({ indices, flips: indices.map((i) => i % 2 === 0), captionChoice: indices.map(() => 0) });
    await source.gradients(batch([0, 1, 2]), new Generator(9)).then((r) => disposeGrads(r.grads)); // traces
    const before = tf.memory().numTensors;
    for (const [indices, seed] of [
      [[3, 4, 5], 20],
      [[5, 0, 2], 21],
    ] as const) {
      await expectSameGradients(vae.store, staged, source, batch([...indices]), seed);
    }
    expect(tf.memory().numTensors).toBe(before);
    await source.close();
    await expect(source.gradients(batch([0]), new Generator(1))).rejects.toThrow(/closed/);
    vae.dispose();
  });

  for (const pool of ['avg', 'max'] as const) {
    for (const heads of [1, 2]) {
      it(`gives the classifier loss and its gradients (${pool} pooling, ${heads} head${heads > 1 ? 's' : ''}, shifted images)`, async () => {
        const rng = new Generator(8);
        const n = 6;
        const headList = [
          { name: 'a', classes: ['x', 'y', 'z'] },
          { name: 'b', classes: ['p', 'q'] },
        ].slice(0, heads);
        const config = parseClassifierConfig({ imageSize: 8, imageChannels: 2, channels: [4, 6], hidden: 8, pool, heads: headList });
        const task: ClassifierShardTask = {
          config,
          data: { images: Float32Array.from({ length: n * 8 * 8 * 2 }, () => rng.uniform() * 2 - 1), shape: [n, 8, 8, 2] },
          labels: Int32Array.from({ length: n * heads }, (_, i) => (i * 5) % headList[i % heads].classes.length),
          maxShift: 1,
        };
        const clf = new AttributeClassifier(config, new Generator(2));
        const staged = classifierStagedLoss(task, clf);
        const source = new OnnxGradients(clf.store, staged, { threads: 1 });
        const before = tf.memory().numTensors;
        for (const [indices, seed] of [
          [[0, 1, 2], 4],
          [[5, 3, 1], 6],
        ] as const) {
          await expectSameGradients(clf.store, staged, source, { indices: [...indices] }, seed);
        }
        expect(tf.memory().numTensors).toBe(before);
        await source.close();
        clf.dispose();
      });
    }
  }

  const unetTask = (labels: boolean): UnetShardTask => {
    const rng = new Generator(5);
    const n = 5;
    const { contextLength: T, contextDim: D } = { contextLength: 5, contextDim: 12 }; // PEER_UNET_CONFIG's
    return {
      unet: new UNet2DCondition(PEER_UNET_CONFIG, new Generator(0)).config,
      labelEncoder: labels ? { kind: 'label', numClasses: 3, contextDim: D } : undefined,
      scheduler: DEFAULT_SCHEDULER_CONFIG,
      lossWeighting: { kind: 'min-snr', gamma: 5 },
      conditioningDropout: 0.3,
      latents: { shape: [n, 8, 8, 4], data: rng.normalArray(n * 8 * 8 * 4) },
      captions: labels ? undefined : { table: { shape: [n, T, D], data: rng.normalArray(n * T * D) }, uncond: rng.normalArray(T * D) },
    };
  };

  for (const labels of [false, true]) {
    it(`gives the U-Net stage loss and its gradients (${labels ? 'label table trained alongside' : 'CLIP context'}), batch after batch`, async () => {
      const task = unetTask(labels);
      const unet = new UNet2DCondition(task.unet, new Generator(1));
      perturbParams(unet.store, 2); // zero-initialised output convs would hide mistakes
      const labelEncoder = task.labelEncoder ? new LabelEncoder(task.labelEncoder, new Generator(2)) : undefined;
      const store = labelEncoder ? ParamStore.union({ unet: unet.store, label_encoder: labelEncoder.params }) : unet.store;
      const staged = unetStagedLoss(task, unet, labelEncoder);
      const source = new OnnxGradients(store, staged, { threads: 1 });
      const batch = (indices: number[]): UnetShardBatch => (labels ? { indices, labels: indices.map((i) => i % 3) } : { indices, rows: indices });
      for (const [indices, seed] of [
        [[0, 1, 2, 3], 30],
        [[4, 2, 0, 1], 31],
      ] as const) {
        const { want, got } = await bothGradients(store, staged, source, batch([...indices]), seed);
        expect(got.loss).toBeCloseTo(want.loss.dataSync()[0], 5);
        expect([...got.grads.keys()].sort()).toEqual([...want.grads.keys()].sort());
        if (labels) expect(got.grads.has('label_encoder.embedding.weight')).toBe(true);
        const worst = worstRelative(want.grads, got.grads);
        expect(worst.rel, worst.name).toBeLessThan(1e-4);
        want.loss.dispose();
        disposeGrads(want.grads);
        disposeGrads(got.grads);
      }
      // New weights reach the graph only through syncWeights (the trainer calls it every step).
      const first = await source.gradients(batch([0, 1, 2, 3]), new Generator(40));
      perturbParams(unet.store, 3);
      const stale = await source.gradients(batch([0, 1, 2, 3]), new Generator(40));
      source.syncWeights();
      const fresh = await source.gradients(batch([0, 1, 2, 3]), new Generator(40));
      expect(stale.loss).toBe(first.loss);
      expect(fresh.loss).not.toBe(first.loss);
      for (const r of [first, stale, fresh]) disposeGrads(r.grads);
      await source.close();
      if (store !== unet.store) store.dispose();
      unet.dispose();
      labelEncoder?.dispose();
    });
  }

  it('a loss with an untranslated kernel is an error naming it, or computed by tfjs when a fallback is asked for', async () => {
    const store = new ParamStore();
    const w = store.add('w', [3], { kind: 'normal', std: 1 }, new Generator(1));
    const staged: StagedLoss<number> = {
      inputs: (b) => ({ x: tf.fill([3], b) }),
      graph: (i) => tf.sum(tf.atan(tf.mul(w, i.x))) as tf.Scalar,
    };
    const strict = new OnnxGradients(store, staged, { threads: 1 });
    await expect(strict.gradients(2, new Generator(0))).rejects.toThrow(/no translation for tfjs kernel\(s\) 'Atan'/);
    await strict.close();
    const reasons: string[] = [];
    const lenient = new OnnxGradients(store, staged, { threads: 1, onFallback: (why) => reasons.push(why) });
    for (let k = 0; k < 2; k++) {
      const got = await lenient.gradients(2, new Generator(0));
      const want = computeGradients(store, () => stagedLossFn(staged)(2, new Generator(0)));
      expect(got.loss).toBeCloseTo(want.loss.dataSync()[0], 6);
      expect(worstRelative(want.grads, got.grads).rel).toBe(0);
      want.loss.dispose();
      disposeGrads(want.grads);
      disposeGrads(got.grads);
    }
    expect(reasons).toHaveLength(1);
    expect(reasons[0]).toMatch(/'Atan'/);
    await lenient.close();
    store.dispose();
  });

  it('setWeights: host weights reach the graph, and the store only when tfjs has to compute', async () => {
    const store = new ParamStore();
    const w = store.add('w', [3], { kind: 'normal', std: 1 }, new Generator(1));
    const staged = (op: (x: tf.Tensor) => tf.Tensor): StagedLoss<number> => ({
      inputs: (b) => ({ x: tf.fill([3], b) }),
      graph: (i) => tf.sum(op(tf.mul(w, i.x))) as tf.Scalar,
    });
    const values = new Map([['w', Float32Array.from([0.5, -1, 2])]]);
    const expected = (op: (x: tf.Tensor) => tf.Tensor) => {
      const live = w.dataSync().slice();
      w.assign(tf.tensor(values.get('w')!));
      const r = computeGradients(store, () => stagedLossFn(staged(op))(2, new Generator(0)));
      const out = { loss: r.loss.dataSync()[0], grad: r.grads.get('w')!.dataSync().slice() };
      r.loss.dispose();
      disposeGrads(r.grads);
      w.assign(tf.tensor(live));
      return out;
    };
    const live = w.dataSync().slice();
    for (const op of [tf.square, tf.atan]) {
      // square exports (the graph reads the host weights); atan does not (tfjs reads the store, brought up to date)
      const want = expected(op);
      const source = new OnnxGradients(store, staged(op), { threads: 1, onFallback: () => {} });
      source.setWeights(values);
      const got = await source.hostGradients(2, new Generator(0));
      expect(got.loss).toBeCloseTo(want.loss, 5);
      expect(maxAbsDiff(got.grads.get('w')!, want.grad)).toBeLessThan(1e-5);
      expect(maxAbsDiff(w.dataSync(), op === tf.square ? live : values.get('w')!)).toBe(0);
      await source.close();
      w.assign(tf.tensor(live));
    }
    const source = new OnnxGradients(store, staged(tf.square), { threads: 1 });
    expect(() => source.setWeights(new Map())).toThrow("no values for parameter 'w'");
    expect(() => source.setWeights(new Map([['w', new Float32Array(2)]]))).toThrow("'w' has 2 values, its shape [3] needs 3");
    await source.close();
    store.dispose();
  });

  it('trains like the tfjs trainer (same noise, same data; weights agree to rounding)', async () => {
    const task = unetTask(false);
    const runs: Float32Array[] = [];
    for (const onnx of [false, true]) {
      const unet = new UNet2DCondition(task.unet, new Generator(1));
      perturbParams(unet.store, 2);
      const staged = unetStagedLoss(task, unet, undefined);
      let i = 0;
      const r = await train<UnetShardBatch>({
        runDir: mkdtempSync(path.join(os.tmpdir(), 'onnx-train-')),
        store: unet.store,
        data: { next: () => ({ indices: [i % 5, (i + 1) % 5], rows: [i % 5, (i++ + 1) % 5] }), position: () => i, restore: (p) => (i = p as number) },
        loss: stagedLossFn(staged),
        onnx: onnx ? { loss: staged, threads: 1 } : undefined,
        totalSteps: 4,
        seed: 7,
        lr: { kind: 'constant', base: 1e-3, warmupSteps: 0, totalSteps: 4 },
        log: () => {},
      });
      runs.push(Float32Array.from(await unet.store.get('conv_out.weight').data()));
      r.optimizer.dispose();
      unet.dispose();
    }
    let d = 0;
    for (let k = 0; k < runs[0].length; k++) d = Math.max(d, Math.abs(runs[0][k] - runs[1][k]));
    expect(d).toBeGreaterThan(0); // rounding differs (onnxruntime's kernels are not tfjs')
    expect(d).toBeLessThan(1e-4);
  });
});
