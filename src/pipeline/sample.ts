/**
 * The denoising loop with classifier-free guidance (Ho & Salimans 2022).
 *
 * Guidance runs one batched U-Net call per step over [unconditional; conditional] halves and mixes
 * eps = eps_u + s * (eps_c - eps_u) (their eq. 6 with s = 1 + w). With s = 1 the unconditional
 * half is skipped entirely. Cross-attention K/V of the (fixed) context are computed once and
 * reused by every step.
 */
import * as tf from '@tensorflow/tfjs';
import { yieldToEventLoop } from '../backend/event-loop.js';
import { yieldToBackend } from '../backend/index.js';
import type { Generator } from '../random/generator.js';
import type { Scheduler } from '../schedulers/index.js';
import { type Conditioning, concatConditioning, disposeConditioning } from '../text/types.js';
import type { ContextCache } from '../unet/unet2d-condition.js';

/**
 * What the loop needs of a U-Net: src/unet's UNet2DCondition (cache = its ContextCache), or
 * src/onnx's OnnxUNet, which runs the same forward pass in onnxruntime and answers asynchronously.
 */
export interface SamplingUNet<C extends { dispose(): void }> {
  precomputeContext(context: tf.Tensor3D, mask?: tf.Tensor2D): C;
  /** sample [B, h, w, c], timesteps [B] -> eps [B, h, w, c] */
  apply(sample: tf.Tensor4D, timesteps: tf.Tensor1D, cache: C): tf.Tensor4D | Promise<tf.Tensor4D>;
}

export interface SampleLatentsOptions<C extends { dispose(): void } = ContextCache> {
  unet: SamplingUNet<C>;
  /** Already configured with setTimesteps(). */
  scheduler: Scheduler;
  /** [B, T, D] */
  cond: Conditioning;
  /** [B, T, D]; required when guidanceScale !== 1. */
  uncond?: Conditioning;
  guidanceScale: number;
  /** [B, h, w, c] of the latents. */
  shape: [number, number, number, number];
  rng: Generator;
  /** Called after every step with the new latents and the step's x0 estimate (do not dispose them). */
  onStep?: (info: { index: number; t: number; latents: tf.Tensor4D; predX0: tf.Tensor4D }) => void | Promise<void>;
}

/** Mixes the two halves of a guided U-Net output [2B, ...] -> [B, ...]. */
export function guide(output: tf.Tensor4D, scale: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [uncond, cond] = tf.split(output, 2, 0) as [tf.Tensor4D, tf.Tensor4D];
    return tf.add(uncond, tf.mul(tf.sub(cond, uncond), scale)) as tf.Tensor4D;
  });
}

/** The largest guidance scale accepted: far past any useful one (1-15), short of float overflow. */
export const MAX_GUIDANCE_SCALE = 100;

export function validateGuidanceScale(scale: unknown): number {
  if (typeof scale !== 'number' || !Number.isFinite(scale) || scale < 0 || scale > MAX_GUIDANCE_SCALE) {
    throw new Error(
      `guidance scale (cfg) must be a finite number from 0 to ${MAX_GUIDANCE_SCALE}, got ${typeof scale === 'number' ? scale : JSON.stringify(scale)}`,
    );
  }
  return scale;
}

/** Runs the scheduler's timesteps from pure noise; returns the final latents [B, h, w, c]. */
export async function sampleLatents<C extends { dispose(): void }>(o: SampleLatentsOptions<C>): Promise<tf.Tensor4D> {
  const scale = validateGuidanceScale(o.guidanceScale);
  const guided = scale !== 1;
  const b = o.shape[0];
  if (o.cond.context.shape[0] !== b) throw new Error(`conditioning batch ${o.cond.context.shape[0]} does not match latent batch ${b}`);
  if (guided && !o.uncond) throw new Error(`guidance scale ${scale} needs an unconditional context`);

  // Cross-attention K/V once for the whole loop.
  const both = guided ? concatConditioning([o.uncond!, o.cond]) : undefined;
  const ctx = guided ? both! : o.cond;
  const cache = o.unet.precomputeContext(ctx.context, ctx.mask);
  disposeConditioning(both);

  // x_T ~ N(0, sigma_init^2 I)
  let latents = tf.tidy(() => tf.mul(o.rng.randn(o.shape), o.scheduler.initNoiseSigma)) as tf.Tensor4D;
  try {
    const steps = o.scheduler.timesteps;
    for (let i = 0; i < steps.length; i++) {
      await yieldToEventLoop();
      const t = steps[i];
      const scaled = o.scheduler.scaleModelInput(latents, t) as tf.Tensor4D; // what the network sees at t
      const input = guided ? (tf.concat([scaled, scaled], 0) as tf.Tensor4D) : scaled; // [B or 2B, h, w, c]
      if (guided) scaled.dispose();
      const tvec = tf.fill([input.shape[0]], t, 'float32') as tf.Tensor1D;
      let out: tf.Tensor4D;
      try {
        out = await o.unet.apply(input, tvec, cache);
      } finally {
        input.dispose();
        tvec.dispose();
      }
      const modelOut = guided ? guide(out, scale) : out;
      if (guided) out.dispose();
      const { prevSample, predOriginalSample } = o.scheduler.step(modelOut, t, latents, o.rng);
      modelOut.dispose();
      latents.dispose();
      latents = prevSample as tf.Tensor4D;
      try {
        await o.onStep?.({ index: i, t, latents, predX0: predOriginalSample as tf.Tensor4D });
      } finally {
        predOriginalSample.dispose();
      }
      await yieldToBackend(); // webgpu: lets Dawn free this step's GPU objects
    }
    return latents;
  } catch (e) {
    latents.dispose();
    throw e;
  } finally {
    cache.dispose();
  }
}
