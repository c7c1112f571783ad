/**
 * U-Net forward time, tfjs (the current backend) vs onnxruntime, on the same weights and inputs:
 * one forward at a fixed batch with the context's cross-attention K/V precomputed (as sampling
 * runs it; context [B, T, contextDim] random).
 */
import * as tf from '@tensorflow/tfjs';
import { timed } from './bench.js';
import { Generator } from '../random/generator.js';
import type { UNetConfigInput } from '../unet/config.js';
import { UNet2DCondition } from '../unet/unet2d-condition.js';
import { OnnxUNet } from '../onnx/unet.js';

export interface UNetRuntimeBenchOptions {
  config: UNetConfigInput;
  batch: number;
  /** Context tokens (default the config's contextLength). */
  contextLength?: number;
  /** onnxruntime intra-op threads. */
  threads: number;
  repeat: number;
  warmup: number;
}

export interface UNetRuntimeBench {
  /** Median ms per forward. */
  tfjsMs: number;
  onnxMs: number;
  /** Trace + ONNX serialisation + session creation, once per shape. */
  onnxExportMs: number;
  /** Largest |tfjs - onnx| over the output. */
  maxAbsDiff: number;
}

export async function benchUNetRuntimes(o: UNetRuntimeBenchOptions): Promise<UNetRuntimeBench> {
  const rng = new Generator(0);
  const unet = new UNet2DCondition(o.config, rng);
  // Small noise on every weight: the zero-initialised output conv would make the diff vacuous.
  for (const [, v] of unet.store.entries()) v.assign(tf.tidy(() => tf.add(v, tf.mul(rng.randn(v.shape), 0.02))));
  const onnx = new OnnxUNet(unet, { threads: o.threads });
  const cfg = unet.config;
  const s = cfg.sampleSize;
  const sample = rng.randn([o.batch, s, s, cfg.inChannels]) as tf.Tensor4D; // [B, h, w, C]
  const context = rng.randn([o.batch, o.contextLength ?? cfg.contextLength, cfg.contextDim]) as tf.Tensor3D; // [B, T, D]
  const timesteps = tf.fill([o.batch], 500, 'float32') as tf.Tensor1D;
  const cache = onnx.precomputeContext(context);
  try {
    const t0 = performance.now();
    (await onnx.apply(sample, timesteps, cache)).dispose();
    const onnxExportMs = performance.now() - t0;
    // Both with the context K/V precomputed, as the sampling loop runs them.
    const tfjs = await timed(async () => void tf.tidy(() => unet.apply(sample, timesteps, cache).dataSync()), o.repeat, o.warmup);
    const ort = await timed(async () => (await onnx.apply(sample, timesteps, cache)).dispose(), o.repeat, o.warmup);
    const a = unet.apply(sample, timesteps, cache);
    const b = await onnx.apply(sample, timesteps, cache);
    const maxAbsDiff = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
    tf.dispose([a, b]);
    return { tfjsMs: 1000 * tfjs.median, onnxMs: 1000 * ort.median, onnxExportMs, maxAbsDiff };
  } finally {
    cache.dispose();
    onnx.dispose();
    tf.dispose([sample, context, timesteps]);
    unet.dispose();
  }
}
