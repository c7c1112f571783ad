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
import type { NoiseSource, Scheduler } from '../schedulers/index.js';
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
  /** All noise: the starting latents (unless `start` is given), then the stochastic samplers' steps. */
  rng: NoiseSource;
  /** Called after every step with the new latents and the step's x0 estimate (do not dispose them). */
  onStep?: (info: { index: number; t: number; latents: tf.Tensor4D; predX0: tf.Tensor4D }) => void | Promise<void>;
  /**
   * img2img: start at entry `index` of the scheduler's timesteps from these latents (already at
   * that entry's noise level; not disposed here) instead of pure noise at entry 0.
   */
  start?: { latents: tf.Tensor4D; index: number };
  /**
   * Given initial standard-normal latents [B, h, w, c] to start from instead of drawing them (as
   * diffusers' `latents=`; scaled by the scheduler's init_noise_sigma here, as diffusers does);
   * not disposed here. The stochastic samplers' step noise still comes from `rng`.
   */
  initial?: tf.Tensor4D;
  /**
   * Extra U-Net input channels [B, h, w, k] concatenated after the scaled latents (an inpainting
   * U-Net's mask and masked-image latents, diffusers' StableDiffusionInpaintPipeline); not disposed here.
   */
  imageConditioning?: tf.Tensor4D;
  /**
   * Inpainting with any model: called with the latents after every step and the schedule index
   * whose noise level they are at (timesteps.length after the last step), and with each x0
   * estimate (at that final level); returns what the loop continues with (the known region put
   * back at that level). Must not dispose its argument.
   */
  blend?: (x: tf.Tensor4D, level: number) => tf.Tensor4D;
  /**
   * Checked before every step: when it returns true the loop stops and returns the last x0
   * estimate (what AUTOMATIC1111 returns when interrupted), or the starting latents before any step.
   */
  interrupted?: () => boolean;
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

/**
 * Runs the scheduler's timesteps from pure noise (or from `start`); returns the final latents
 * [B, h, w, c] (or the last x0 estimate when interrupted).
 */
export async function sampleLatents<C extends { dispose(): void }>(o: SampleLatentsOptions<C>): Promise<tf.Tensor4D> {
  const scale = validateGuidanceScale(o.guidanceScale);
  const guided = scale !== 1;
  const b = o.shape[0];
  if (o.cond.context.shape[0] !== b) throw new Error(`conditioning batch ${o.cond.context.shape[0]} does not match latent batch ${b}`);
  if (guided && !o.uncond) throw new Error(`guidance scale ${scale} needs an unconditional context`);
  const steps = o.scheduler.timesteps;
  const first = o.start?.index ?? 0;
  if (o.start) {
    const s = o.start.latents.shape;
    if (s.some((d, i) => d !== o.shape[i])) throw new Error(`start latents [${s.join(', ')}] do not match the latent shape [${o.shape.join(', ')}]`);
    if (!Number.isInteger(first) || first < 0 || first > steps.length) throw new Error(`start index ${first} is not an integer from 0 to ${steps.length}`);
  }
  const extra = o.imageConditioning;
  if (extra && (extra.rank !== 4 || extra.shape[0] !== b || extra.shape[1] !== o.shape[1] || extra.shape[2] !== o.shape[2])) {
    throw new Error(`image conditioning [${extra.shape.join(', ')}] must be [${b}, ${o.shape[1]}, ${o.shape[2]}, k]`);
  }
  // Guided: the same extra channels for the unconditional and the conditional half.
  const extraIn = extra && guided ? (tf.concat([extra, extra], 0) as tf.Tensor4D) : extra;

  // Cross-attention K/V once for the whole loop.
  const both = guided ? concatConditioning([o.uncond!, o.cond]) : undefined;
  const ctx = guided ? both! : o.cond;
  const cache = o.unet.precomputeContext(ctx.context, ctx.mask);
  disposeConditioning(both);

  if (o.initial && (o.start || o.initial.shape.some((d, i) => d !== o.shape[i]))) {
    throw new Error(
      o.start
        ? 'initial latents and an img2img start cannot be combined'
        : `initial latents [${o.initial.shape.join(', ')}] do not match the latent shape [${o.shape.join(', ')}]`,
    );
  }
  // x_T ~ N(0, sigma_init^2 I) (drawn, or given), or img2img's noised input at its start entry
  let latents = o.start
    ? o.start.latents.clone()
    : (tf.tidy(() => tf.mul(o.initial ?? tf.tensor(o.rng.normalArray(sizeOf(o.shape)), o.shape, 'float32'), o.scheduler.initNoiseSigma)) as tf.Tensor4D);
  let lastX0: tf.Tensor4D | undefined;
  try {
    for (let i = first; i < steps.length; i++) {
      await yieldToEventLoop();
      if (o.interrupted?.()) {
        o.scheduler.reset(); // a multistep sampler frees the outputs it keeps between steps
        if (lastX0) {
          latents.dispose();
          latents = lastX0;
          lastX0 = undefined;
        }
        break;
      }
      const t = steps[i];
      const scaled = o.scheduler.scaleModelInput(latents, t) as tf.Tensor4D; // what the network sees at t
      const both = guided ? (tf.concat([scaled, scaled], 0) as tf.Tensor4D) : scaled; // [B or 2B, h, w, c]
      if (guided) scaled.dispose();
      const input = extraIn ? (tf.concat([both, extraIn], 3) as tf.Tensor4D) : both; // [.., c + k]
      if (extraIn) both.dispose();
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
      let predX0 = predOriginalSample as tf.Tensor4D;
      if (o.blend) {
        const blended = o.blend(latents, i + 1);
        latents.dispose();
        latents = blended;
        const x0 = o.blend(predX0, steps.length);
        predX0.dispose();
        predX0 = x0;
      }
      lastX0?.dispose();
      lastX0 = predX0;
      await o.onStep?.({ index: i, t, latents, predX0 });
      await yieldToBackend(); // webgpu: lets Dawn free this step's GPU objects
    }
    return latents;
  } catch (e) {
    latents.dispose();
    o.scheduler.reset();
    throw e;
  } finally {
    lastX0?.dispose();
    if (extraIn !== extra) extraIn?.dispose();
    cache.dispose();
  }
}

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, d) => a * d, 1);
}
