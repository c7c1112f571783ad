/**
 * The ONNX Runtime U-Net (src/onnx) against the tfjs U-Net it is traced from: the peer fixture's
 * tiny config with perturbed weights, one forward and whole sampling loops; the clear error for
 * an untranslated kernel; no tfjs tensor leaks.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { traceToOnnx } from '../../src/onnx/export.js';
import { OnnxSession } from '../../src/onnx/runtime.js';
import { traceKernels } from '../../src/onnx/trace.js';
import { OnnxUNet } from '../../src/onnx/unet.js';
import { RUNTIMES, RUNTIME_CHOICES, describeUNetRuntime, parseRuntimeName, resolveRuntime } from '../../src/onnx/runtime.js';
import { Txt2ImgPipeline } from '../../src/pipeline/pipeline.js';
import { sampleLatents } from '../../src/pipeline/sample.js';
import { Generator } from '../../src/random/generator.js';
import { DEFAULT_SCHEDULER_CONFIG } from '../../src/schedulers/config.js';
import { createScheduler, withType } from '../../src/schedulers/index.js';
import { LabelEncoder } from '../../src/text/label.js';
import { UNet2DCondition } from '../../src/unet/unet2d-condition.js';
import { AutoencoderKL } from '../../src/vae/autoencoder-kl.js';
import { maxAbsDiff } from '../helpers.js';
import { PEER_UNET_CONFIG, PEER_VAE_CONFIG, peerUNetInputs, perturbParams } from '../unet/peer-fixture.js';

let unet: UNet2DCondition;
let onnx: OnnxUNet;

beforeAll(async () => {
  await initBackend({ backend: 'wasm', quiet: true });
  unet = new UNet2DCondition(PEER_UNET_CONFIG, new Generator(0));
  perturbParams(unet.store, 3); // zero-initialised output convs would hide every mistake
  onnx = new OnnxUNet(unet, { threads: 1 });
});

afterAll(() => {
  onnx?.dispose();
  unet?.dispose();
});

describe('OnnxUNet', () => {
  it('matches the tfjs U-Net, with and without a context mask, and leaks no tensors', async () => {
    const { sample, timesteps, context } = peerUNetInputs(); // [2, 8, 8, 4], int32 [2], [2, 5, 12]
    const mask = tf.tensor2d([
      [1, 1, 1, 0, 0],
      [1, 1, 1, 1, 1],
    ]);
    const before = tf.memory().numTensors;
    for (const m of [undefined, mask]) {
      const want = unet.apply(sample, timesteps, context, m);
      const cache = onnx.precomputeContext(context, m);
      const got = await onnx.apply(sample, timesteps, cache);
      cache.dispose();
      expect(got.shape).toEqual([2, 8, 8, 4]);
      expect(maxAbsDiff(want.dataSync(), new Float32Array(want.size))).toBeGreaterThan(0.1); // not trivially zero
      expect(maxAbsDiff(got.dataSync(), want.dataSync())).toBeLessThan(1e-4);
      got.dispose();
      want.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([sample, timesteps, context, mask]);
  });

  it('also takes a raw context (the K/V projections then run in the graph)', async () => {
    const { sample, timesteps, context } = peerUNetInputs(); // [2, 8, 8, 4], int32 [2], [2, 5, 12]
    const before = tf.memory().numTensors;
    const want = unet.apply(sample, timesteps, context);
    const got = await onnx.apply(sample, timesteps, context);
    expect(maxAbsDiff(got.dataSync(), want.dataSync())).toBeLessThan(1e-4);
    const again = await onnx.apply(sample, timesteps, context); // the cached session
    expect(maxAbsDiff(again.dataSync(), want.dataSync())).toBeLessThan(1e-4);
    tf.dispose([want, got, again]);
    expect(tf.memory().numTensors).toBe(before);
    const wrong = tf.zeros([2, 5, 3]) as tf.Tensor3D;
    await expect(onnx.apply(sample, timesteps, wrong)).rejects.toThrow(/context must be \[2, T, 12\], got \[2, 5, 3\]/);
    tf.dispose([sample, timesteps, context, wrong]);
  });

  it('keeps the weights in a file beside the model past the size limit, same numbers, folder removed', async () => {
    const { sample, timesteps, context } = peerUNetInputs(); // [2, 8, 8, 4], int32 [2], [2, 5, 12]
    // A private temp folder (os.tmpdir() reads TMPDIR), so other processes' folders cannot interfere.
    const privateTmp = mkdtempSync(path.join(os.tmpdir(), 'onnx-unet-test-'));
    const savedTmp = process.env.TMPDIR;
    process.env.TMPDIR = privateTmp;
    const folders = () =>
      readdirSync(privateTmp)
        .filter((f) => f.startsWith('txt2img-unet-'))
        .sort();
    const foldersBefore = folders();
    const external = new OnnxUNet(unet, { threads: 1 }, 0); // every U-Net is past a limit of 0 bytes
    const before = tf.memory().numTensors;
    const want = unet.apply(sample, timesteps, context);
    const cache = external.precomputeContext(context);
    const got = await external.apply(sample, timesteps, cache);
    expect(maxAbsDiff(got.dataSync(), want.dataSync())).toBeLessThan(1e-4);
    cache.dispose();
    external.dispose();
    tf.dispose([want, got]);
    expect(tf.memory().numTensors).toBe(before);
    if (savedTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = savedTmp;
    expect(folders()).toEqual(foldersBefore);
    rmSync(privateTmp, { recursive: true, force: true });
    tf.dispose([sample, timesteps, context]);
  });

  it("runs diffusers' U-Net variants: exact GELU, per-level heads, linear projections, norm_eps, freq_shift", async () => {
    const cfg = {
      ...PEER_UNET_CONFIG,
      legacy: false,
      attentionLevels: [true, true],
      attentionHeads: [2, 4],
      linearProjection: true,
      normEps: 1e-6,
      flipSinToCos: false,
      freqShift: 1,
    };
    const variant = new UNet2DCondition(cfg, new Generator(4));
    perturbParams(variant.store, 5);
    const runner = new OnnxUNet(variant, { threads: 1 });
    const { sample, timesteps, context } = peerUNetInputs();
    const before = tf.memory().numTensors;
    const want = variant.apply(sample, timesteps, context);
    const cache = runner.precomputeContext(context);
    const got = await runner.apply(sample, timesteps, cache);
    expect(maxAbsDiff(want.dataSync(), new Float32Array(want.size))).toBeGreaterThan(0.1);
    expect(maxAbsDiff(got.dataSync(), want.dataSync())).toBeLessThan(1e-4);
    tf.dispose([want, got]);
    cache.dispose();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([sample, timesteps, context]);
    runner.dispose();
    variant.dispose();
  });

  it('exports another batch and size on demand and broadcasts a [1] timestep', async () => {
    const rng = new Generator(2);
    const sample = rng.randn([3, 4, 4, 4]) as tf.Tensor4D;
    const context = rng.randn([3, 2, PEER_UNET_CONFIG.contextDim]) as tf.Tensor3D;
    const t = tf.tensor1d([250], 'float32');
    const want = unet.apply(sample, t, context);
    const cache = onnx.precomputeContext(context);
    const got = await onnx.apply(sample, t, cache);
    expect(maxAbsDiff(got.dataSync(), want.dataSync())).toBeLessThan(1e-4);
    await expect(onnx.apply(sample, tf.tensor1d([1, 2]), cache)).rejects.toThrow(/timesteps must be \[3\] or \[1\], got \[2\]/);
    cache.dispose();
    await expect(onnx.apply(sample, t, cache)).rejects.toThrow(/ContextCache has been disposed/);
    tf.dispose([sample, context, t, want, got]);
  });

  it('runs the guided sampling loop to the same latents as the tfjs U-Net', async () => {
    const rngC = new Generator(5);
    const cond = { context: rngC.randn([2, 5, PEER_UNET_CONFIG.contextDim]) as tf.Tensor3D };
    const uncond = { context: tf.zeros([2, 5, PEER_UNET_CONFIG.contextDim]) as tf.Tensor3D };
    const before = tf.memory().numTensors;
    const run = async (which: 'tfjs' | 'onnx') => {
      const scheduler = withType(createScheduler(DEFAULT_SCHEDULER_CONFIG), 'ddim', { eta: 0 });
      scheduler.setTimesteps(3);
      const loop = { scheduler, cond, uncond, guidanceScale: 3, shape: [2, 8, 8, 4] as [number, number, number, number], rng: new Generator(9) };
      return which === 'onnx' ? sampleLatents({ ...loop, unet: onnx }) : sampleLatents({ ...loop, unet });
    };
    const a = await run('tfjs');
    const b = await run('onnx');
    expect(maxAbsDiff(a.dataSync(), b.dataSync())).toBeLessThan(1e-3);
    tf.dispose([a, b]);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([cond.context, uncond.context]);
  });

  it("is the pipeline's generate({ runtime: 'onnx' }) U-Net, with the same images as tfjs", async () => {
    const vae = new AutoencoderKL(PEER_VAE_CONFIG, new Generator(1));
    const pipeUNet = new UNet2DCondition(PEER_UNET_CONFIG, new Generator(2));
    perturbParams(pipeUNet.store, 4);
    const encoder = new LabelEncoder({ kind: 'label', numClasses: 3, contextDim: PEER_UNET_CONFIG.contextDim }, new Generator(3));
    const pipe = new Txt2ImgPipeline(vae, pipeUNet, encoder, DEFAULT_SCHEDULER_CONFIG, {
      conditioning: 'label',
      conditioningDropout: 0.1,
      imageSize: PEER_UNET_CONFIG.sampleSize * PEER_VAE_CONFIG.downsampleFactor,
    });
    try {
      const opts = { inputs: [0, 2], guidanceScale: 2, steps: 2, seed: 1 };
      const a = await pipe.generate(opts);
      const b = await pipe.generate({ ...opts, runtime: 'onnx' });
      expect(b.shape).toEqual([2, 32, 32, 3]);
      expect(maxAbsDiff(a.dataSync(), b.dataSync())).toBeLessThan(1e-3);
      tf.dispose([a, b]);
      await expect(pipe.generate({ ...opts, runtime: 'gpu' as never })).rejects.toThrow(/unknown U-Net runtime 'gpu'; allowed: tfjs, onnx/);
    } finally {
      pipe.dispose();
    }
  });

  it('parses and describes the runtime choice without suggesting a GPU', () => {
    expect(parseRuntimeName(RUNTIMES, ' ONNX ', '--runtime', 'U-Net runtime')).toBe('onnx');
    expect(() => parseRuntimeName(RUNTIMES, 'torch', '--runtime', 'U-Net runtime')).toThrow("--runtime: unknown U-Net runtime 'torch'; allowed: tfjs, onnx");
    expect(describeUNetRuntime('onnx', 2)).toBe('U-Net runtime: onnxruntime-node on the CPU (2 threads), traced from the tfjs U-Net');
    expect(describeUNetRuntime('tfjs')).toMatch(/^U-Net runtime: tfjs/);
  });

  it("resolves 'auto': onnx on a CPU backend where onnxruntime-node loads, tfjs on a GPU backend", async () => {
    expect(parseRuntimeName(RUNTIME_CHOICES, 'Auto', '--runtime', 'U-Net runtime')).toBe('auto');
    expect(() => parseRuntimeName(RUNTIME_CHOICES, 'gpu', '--runtime', 'U-Net runtime')).toThrow(
      "--runtime: unknown U-Net runtime 'gpu'; allowed: auto, tfjs, onnx",
    );
    expect(await resolveRuntime('auto', { gpu: false, name: 'wasm' })).toEqual({
      runtime: 'onnx',
      why: expect.stringMatching(/^auto: faster than the wasm backend/),
    });
    expect(await resolveRuntime('auto', { gpu: true, name: 'node-gpu' })).toEqual({ runtime: 'tfjs', why: 'auto: the node-gpu backend computes on the GPU' });
    expect(await resolveRuntime('tfjs', { gpu: false, name: 'wasm' })).toEqual({ runtime: 'tfjs' });
    expect(await resolveRuntime('onnx', { gpu: true, name: 'node-gpu' })).toEqual({ runtime: 'onnx' });
  });
});

describe('traceToOnnx', () => {
  it('names a kernel it cannot translate', () => {
    const x = tf.tensor1d([1, 2, 3]);
    const trace = traceKernels(() => tf.cumsum(tf.mul(x, 2)), { x });
    expect(trace.nodes.map((n) => n.kernel)).toEqual(['Multiply', 'Cumsum']);
    expect(() => traceToOnnx(trace)).toThrow(/no translation for tfjs kernel\(s\) 'Cumsum'; supported: .*Conv2D/);
    x.dispose();
  });

  it('translates the kernels the U-Net does not use alike (conv padding, slicing, padding, reductions)', async () => {
    const rng = new Generator(7);
    const x = rng.randn([2, 7, 8, 3]) as tf.Tensor4D; // [B, H, W, C], odd H for 'same' at stride 2
    const w = rng.randn([3, 3, 3, 4]) as tf.Tensor4D;
    const before = tf.memory().numTensors;
    const f = () => {
      const a = tf.conv2d(x, w, 2, 'same'); // [2, 4, 4, 4]
      const b = tf.conv2d(
        tf.pad(
          x,
          [
            [0, 0],
            [1, 0],
            [0, 1],
            [0, 0],
          ],
          0.5,
        ),
        w,
        1,
        'valid',
      ); // [2, 6, 7, 4]
      const c = tf.slice(b, [0, 1, 2, 0], [2, 4, 4, 4]); // [2, 4, 4, 4]
      const d = tf.div(tf.tanh(a), tf.add(tf.exp(tf.neg(tf.abs(c))), 1));
      const e = tf.concat([d, tf.tile(tf.max(d, 3, true), [1, 1, 1, 2])], -1); // [2, 4, 4, 6]
      const m = e.reshape([2, 16, 6]);
      const s = tf.matMul(m, m, true, false); // [2, 6, 6]
      return tf.add(tf.sum(s, -1), tf.expandDims(tf.sum(m, [1, 2]), 1)); // [2, 6]
    };
    const trace = traceKernels(f, { x });
    const session = await OnnxSession.create(traceToOnnx(trace), { threads: 1 });
    const { output } = await session.run({ x });
    const want = tf.tidy(f);
    expect(output.shape).toEqual([2, 6]);
    expect(maxAbsDiff(output.dataSync(), want.dataSync())).toBeLessThan(1e-4);
    session.dispose();
    tf.dispose([output, want]);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([x, w]);
  });

  it('folds constant-only kernels and runs a small graph exactly', async () => {
    const x = tf.tensor2d([
      [1, -2, 3],
      [0.5, 4, -1],
    ]);
    const w = tf.tensor2d([
      [1, 0],
      [0, 1],
      [1, 1],
    ]);
    const before = tf.memory().numTensors;
    const f = () => tf.softmax(tf.matMul(tf.sigmoid(x), tf.transpose(tf.mul(tf.transpose(w), 2)), false, false), -1);
    const trace = traceKernels(f, { x });
    expect(trace.nodes.map((n) => n.kernel)).toEqual(['Sigmoid', 'BatchMatMul', 'Softmax']); // w's ops folded
    const session = await OnnxSession.create(traceToOnnx(trace), { threads: 1 });
    const { output } = await session.run({ x });
    const want = tf.tidy(f);
    expect(maxAbsDiff(output.dataSync(), want.dataSync())).toBeLessThan(1e-6);
    session.dispose();
    tf.dispose([output, want]);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([x, w]);
  });

  it('offloads the constants a kernel read to another backend (offloadTo), and still writes them', async () => {
    const cpu = tf.engine().findBackend('cpu');
    const held = (t: tf.Tensor) =>
      (tf.engine() as unknown as { state: { tensorInfo: WeakMap<object, { backend: unknown }> } }).state.tensorInfo.get(t.dataId)?.backend;
    const x = tf.tensor2d([[1, -2, 3]]);
    const w = tf.tensor2d([
      [1, 0],
      [0, 1],
      [1, 1],
    ]); // prettier-ignore
    const b = tf.tensor1d([0.5, -0.5]);
    expect(held(w)).toBe(tf.engine().backend);
    const f = () => tf.add(tf.matMul(x, w), b);
    const trace = traceKernels(f, { x }, { offloadTo: cpu, offloadMinBytes: 0 });
    expect(held(w)).toBe(cpu); // moved out once the matMul had read it
    expect(held(b)).toBe(cpu);
    // The backend now holds the trace's own copy (no second copy of every weight).
    expect(cpu.readSync(w.dataId)).toBe(trace.constants.get(w.id)?.values);
    const session = await OnnxSession.create(traceToOnnx(trace), { threads: 1 });
    const { output } = await session.run({ x });
    expect(Array.from(output.dataSync())).toEqual([4.5, 0.5]);
    const again = tf.tidy(f); // fetched back by the active backend on demand
    expect(Array.from(again.dataSync())).toEqual([4.5, 0.5]);
    session.dispose();
    tf.dispose([output, again, x, w, b]);
  });
});
