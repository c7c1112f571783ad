/**
 * The models on webgpu against the other backends: the VAE and the U-Net (raw and K/V-cached
 * context, masked) forward and every gradient against cpu; sampling the bundled model with the
 * same seed on wasm and on webgpu; both training stages' steps against cpu. Tiny shapes (llvmpipe
 * is slow). Skipped, saying why, where there is no WebGPU adapter.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { startWebGpu } from '../../src/backend/webgpu.js';
import { registerWasmKernels } from '../../src/backend/wasm-kernels.js';
import { readSafetensors } from '../../src/checkpoint/io.js';
import { computeGradients, disposeGrads } from '../../src/nn/params.js';
import { Txt2ImgPipeline } from '../../src/pipeline/pipeline.js';
import { runTraining } from '../../src/train/run-training.js';
import { LabelEncoder } from '../../src/text/label.js';
import { type TrainConfig, validateTrainConfig } from '../../src/train/train-config.js';
import { Generator } from '../../src/random/generator.js';
import { UNet2DCondition } from '../../src/unet/unet2d-condition.js';
import { AutoencoderKL } from '../../src/vae/autoencoder-kl.js';
import { tempDir, writeColorDataset } from '../fixtures/captioned.js';
import { makeTinyModel, sharedModelsDir } from '../text/shared.js';
import { PEER_UNET_CONFIG } from '../unet/peer-fixture.js';
import { noAdapter, webgpuTitle } from './adapter.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * max |got - want| / max(max |want|, floor): relative to the tensor's own scale, or to `floor`
 * where that is smaller (a gradient that is zero in exact arithmetic, such as an attention key
 * bias', is rounding noise on both sides).
 */
function relErr(got: ArrayLike<number>, want: ArrayLike<number>, floor = 1e-30): number {
  expect(got.length).toBe(want.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num = Math.max(num, Math.abs(got[i] - want[i]));
    den = Math.max(den, Math.abs(want[i]));
  }
  return num / Math.max(den, floor);
}

/** 1e-3 of the largest magnitude among `arrays`: the floor for relErr over a set of gradients. */
function floorOf(arrays: Float32Array[]): number {
  let m = 0;
  for (const a of arrays) for (const v of a) m = Math.max(m, Math.abs(v));
  return 1e-3 * m;
}

function maxAbs(got: ArrayLike<number>, want: ArrayLike<number>): number {
  expect(got.length).toBe(want.length);
  let m = 0;
  for (let i = 0; i < want.length; i++) m = Math.max(m, Math.abs(got[i] - want[i]));
  return m;
}

async function read(ts: tf.Tensor[]): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (const t of ts) out.push((await t.data()) as Float32Array);
  return out;
}

/** Runs `f` on each backend (it builds its own models and inputs there); no tensor may be left. */
async function onBackends<T>(names: string[], f: () => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (const name of names) {
    await tf.setBackend(name);
    const before = tf.memory().numTensors;
    out.push(await f());
    expect(tf.memory().numTensors, `tensors left on ${name}`).toBe(before);
  }
  return out;
}

describe.skipIf(noAdapter)(webgpuTitle('the models on webgpu'), () => {
  beforeAll(async () => {
    registerWasmKernels();
    await startWebGpu(true);
  });

  it('the VAE: loss and every gradient as on cpu', async () => {
    const cfg = {
      imageChannels: 3,
      channels: [8, 8, 16],
      resBlocksPerLevel: 1,
      latentChannels: 4,
      downsampleFactor: 4,
      groupNormGroups: 4,
      midAttention: true,
      klWeight: 1e-3,
    };
    const [cpu, gpu] = await onBackends(['cpu', 'webgpu'], async () => {
      const vae = new AutoencoderKL(cfg, new Generator(11));
      const rng = new Generator(12);
      const images = tf.tidy(() => tf.tanh(rng.randn([2, 16, 16, 3]))) as tf.Tensor4D;
      const r = computeGradients(vae.store, () => vae.lossFn(images, rng).loss);
      const decoded = tf.tidy(() => vae.decodeLatents(vae.encodeLatents(images)));
      const vals = await read([r.loss, decoded, ...r.grads.values()]);
      tf.dispose([images, r.loss, decoded]);
      disposeGrads(r.grads);
      vae.dispose();
      return vals;
    });
    const floor = floorOf(cpu.slice(2));
    cpu.forEach((c, i) => {
      expect(relErr(gpu[i], c, floor), `output ${i}`).toBeLessThan(1e-4);
    });
  });

  it("the U-Net: raw, K/V-cached and masked context give cpu's outputs, and every gradient", async () => {
    const cfg = PEER_UNET_CONFIG;
    const [cpu, gpu] = await onBackends(['cpu', 'webgpu'], async () => {
      const unet = new UNet2DCondition(cfg, new Generator(21));
      const rng = new Generator(22);
      const sample = rng.randn([2, 8, 8, cfg.inChannels]) as tf.Tensor4D;
      const t = tf.tensor1d([999, 17], 'int32');
      const context = rng.randn([2, cfg.contextLength, cfg.contextDim]) as tf.Tensor3D;
      const mask = tf.tensor2d([1, 1, 1, 0, 0, 1, 1, 1, 1, 1], [2, 5]);
      const cache = unet.precomputeContext(context, mask);
      const raw = tf.tidy(() => unet.apply(sample, t, context, mask));
      const cached = tf.tidy(() => unet.apply(sample, t, cache));
      const r = computeGradients(unet.store, () => tf.tidy(() => tf.mean(tf.square(tf.sub(unet.apply(sample, t, context), sample))) as tf.Scalar));
      const vals = await read([raw, cached, r.loss, ...r.grads.values()]);
      cache.dispose();
      tf.dispose([sample, t, context, mask, raw, cached, r.loss]);
      disposeGrads(r.grads);
      unet.dispose();
      return vals;
    });
    expect(maxAbs(gpu[1], gpu[0])).toBeLessThan(1e-5); // the cache is the raw context's K/V
    const floor = floorOf(cpu.slice(3));
    cpu.forEach((c, i) => {
      expect(relErr(gpu[i], c, floor), `output ${i}`).toBeLessThan(1e-4);
    });
  });

  it("a label-conditioned model's encoder: labels and the null class (what guidance uses) as on cpu", async () => {
    const runs = await onBackends(['cpu', 'webgpu'], async () => {
      const enc = new LabelEncoder({ kind: 'label', numClasses: 10, contextDim: 16 }, new Generator(5));
      const cond = await enc.encode([3, 7]);
      const uncond = await enc.unconditional(2);
      const vals = await read([cond.context, uncond.context]);
      tf.dispose([cond.context, uncond.context]);
      enc.dispose();
      return vals;
    });
    runs[0].forEach((c, i) => {
      expect(relErr(runs[1][i], c), `output ${i}`).toBeLessThan(1e-6);
    });
  });

  it('sampling the bundled model: the same seed gives the same images on wasm and on webgpu (DDIM and DDPM)', async () => {
    const clip = { localModelPath: sharedModelsDir() };
    const runs = await onBackends(['wasm', 'webgpu'], async () => {
      const pipe = await Txt2ImgPipeline.load(path.join(repo, 'models', 'default'), { clip });
      const out: Float32Array[] = [];
      for (const [sampler, steps] of [
        ['ddim', 5],
        ['ddpm', 3],
      ] as const) {
        const images = await pipe.generate({
          inputs: ['a smiling face', 'a red square at the top'],
          guidanceScale: 7,
          steps,
          sampler,
          eta: 0,
          seed: 3,
          runtime: 'tfjs',
          warn: () => {},
        });
        out.push(...(await read([images])));
        images.dispose();
      }
      pipe.dispose();
      return out;
    });
    const [wasm, gpu] = runs;
    // Images in [-1, 1]; measured: at most 7.6e-6 apart after 25 DDIM steps at cfg 7 (README).
    for (let i = 0; i < wasm.length; i++) expect(maxAbs(gpu[i], wasm[i]), `run ${i}`).toBeLessThan(1e-4);
  });

  it('training: both stages take the same steps on webgpu as on cpu (losses, gradient norms, weights)', async () => {
    const tiny = makeTinyModel('tiny-random-clip', { hidden: 32, layers: 1, heads: 2 });
    try {
      const data = (await writeColorDataset(tempDir('wg-colors'), { count: 4, size: 16 })).root;
      const stage = {
        batchSize: 2,
        lr: 1e-3,
        lrSchedule: 'constant',
        warmupSteps: 0,
        weightDecay: 0,
        clipGradNorm: 1,
        emaDecay: 0.9,
        accumulate: 1,
        checkpointEvery: 2,
        runtime: 'tfjs',
        workers: 1,
      };
      const config: TrainConfig = validateTrainConfig({
        seed: 1,
        data: { source: 'folder', path: data, imageSize: 16, channels: 3, flip: false },
        conditioning: { kind: 'clip', modelId: tiny.result.outDir, dropout: 0.25 },
        vae: { imageChannels: 3, channels: [8, 8, 16], resBlocksPerLevel: 1, latentChannels: 4, downsampleFactor: 4, groupNormGroups: 4, activation: 'silu' },
        vaeTraining: { ...stage, steps: 2 },
        unet: {
          inChannels: 4,
          sampleSize: 4,
          channels: [16, 32],
          resBlocksPerLevel: 1,
          attentionLevels: [false, true],
          attentionHeads: 2,
          contextDim: 32,
          contextLength: 77,
          timeEmbedDim: 32,
          groupNormGroups: 4,
        },
        unetTraining: { ...stage, steps: 2 },
        scheduler: { type: 'ddpm', numTrainTimesteps: 100, betaSchedule: 'scaled-linear', betaStart: 0.00085, betaEnd: 0.012 },
        lossWeighting: 'mse',
        notes: ['test model: the text encoder is random, not pretrained'],
      });
      const runs = await onBackends(['cpu', 'webgpu'], async () => {
        const dir = tempDir('wg-train');
        const pipeline = (await runTraining({ config, runDir: dir, stage: 'all', resume: false, quiet: true, log: () => {} }))!;
        const log = (s: string) =>
          readFileSync(path.join(dir, s, 'loss.jsonl'), 'utf8')
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l) as { loss: number; gradNorm: number });
        const weights = readSafetensors(path.join(pipeline, 'unet', 'diffusion_pytorch_model.safetensors')).tensors;
        return { steps: [...log('vae-stage'), ...log('unet-stage')], weights };
      });
      const [cpu, gpu] = runs;
      expect(gpu.steps).toHaveLength(4);
      cpu.steps.forEach((s, i) => {
        expect(Math.abs(gpu.steps[i].loss - s.loss) / s.loss, `loss of step ${i}`).toBeLessThan(1e-4);
        expect(Math.abs(gpu.steps[i].gradNorm - s.gradNorm) / s.gradNorm, `gradient norm of step ${i}`).toBeLessThan(1e-4);
      });
      // AdamW divides each gradient by its own RMS, so last-bit differences in near-zero
      // gradients become differences of a fraction of the learning rate in those weights
      // (measured: 2.1e-5 at most, in a zero-initialised conv2): within 5% of lr per step.
      const lr = config.unetTraining.lr;
      for (const [name, w] of cpu.weights) expect(maxAbs(gpu.weights.get(name)!.data, w.data), name).toBeLessThan(0.05 * lr * config.unetTraining.steps);
    } finally {
      tiny.cleanup();
    }
  });
});
