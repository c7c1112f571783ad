/**
 * img2img and inpainting on a loaded pipeline, and `txt2img img2img` as a function.
 *
 * img2img (diffusers' StableDiffusionImg2ImgPipeline): the init image's latents (the VAE
 * posterior mean) are noised to the level of the schedule entry the strength picks
 * (strengthStart, Scheduler.noiseToStep) and the rest of the schedule is run. Strength 1 starts
 * from pure noise, as diffusers' inpainting pipeline does, so it ignores the image; strength 0
 * returns the input without sampling.
 *
 * Inpainting with any text-conditioned model (diffusers' legacy StableDiffusionInpaintPipeline,
 * A1111's inpainting with a normal model): after every step the known region is put back,
 * re-noised with the start noise to the level the latents are at, through a binary latent mask;
 * after the last step it is the input's own latents. An inpainting U-Net (9 input channels)
 * instead sees the mask and the masked image's latents at every step (diffusers'
 * StableDiffusionInpaintPipeline). In both, the original's pixels are laid back over the
 * unmasked area at the end (A1111's overlay); the pixel work is src/image/edit.ts.
 */
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { type Uint8Image, batchImage, fromUint8, tensorToBatch, writePng } from '../image/convert.js';
import {
  type EditPixels,
  INPAINTING_FILLS,
  type InpaintingFill,
  RESIZE_MODES,
  type ResizeMode,
  finishEdit,
  loadMask,
  loadRgb,
  prepareEdit,
  resizeImage,
} from '../image/edit.js';
import { makeGrid } from '../image/grid.js';
import type { InfotextValue } from '../image/infotext.js';
import { ProgressBar } from '../image/progress.js';
import { describeUNetRuntime } from '../onnx/runtime.js';
import { strengthStart } from '../schedulers/index.js';
import { type EditStart, type GenerateOptions, Txt2ImgPipeline, readModelIndex } from './pipeline.js';
import { BATCH_IMAGES, type Txt2ImgOptions, type Txt2ImgResult, checkOutputPath, generateImages, requestInfotexts, requestSettings } from './txt2img.js';

/** What the latents of an edit start from, besides the pixels (EditPixels, from prepareEdit). */
export interface EditSettings {
  /** 0: the input unchanged; 1: the input ignored (pure noise). */
  strength: number;
  /** A1111's inpainting_fill: 2 starts the masked latents from noise, 3 from zeros (0 and 1 are pixel-side). */
  fill: InpaintingFill;
}

/** An edit ready to run: per batch the loop's start, per image the finishing pixel work. */
export interface EditPlan {
  /** Strength 0: nothing to sample; `input(i)` is the result. */
  readonly identity: boolean;
  /** The model is an inpainting U-Net, fed the mask and masked image (A1111's is_using_inpainting_conditioning). */
  readonly inpaintingConditioning: boolean;
  /** GenerateOptions.edit for images [offset, offset + count) of the request. */
  hook(offset: number, count: number): NonNullable<GenerateOptions['edit']>;
  /** Image i as returned: `generated` (model size) resized to the processing size and laid under the original. */
  finish(generated: Uint8Image, i: number): Promise<Uint8Image>;
  /** Image i's input as returned at strength 0 (the original at the output size). */
  input(i: number): Uint8Image;
  /** Frees the input's latents and conditioning. */
  dispose(): void;
}

function checkStrength(strength: unknown): number {
  if (typeof strength !== 'number' || !Number.isFinite(strength) || strength < 0 || strength > 1) {
    throw new Error(`strength (denoising strength) must be a number from 0 to 1, got ${JSON.stringify(strength)}`);
  }
  return strength;
}

/** [n, H, W, 3] in [-1, 1] from same-sized RGB images. */
function toTensor(images: Uint8Image[]): tf.Tensor4D {
  const { width: w, height: h } = images[0];
  const data = new Float32Array(images.length * w * h * 3);
  images.forEach((im, i) => {
    data.set(fromUint8(im.data), i * w * h * 3);
  });
  return tf.tensor4d(data, [images.length, h, w, 3]);
}

/** Rows [offset, offset + count) of a tensor of n rows, cycling through them (one init image for all, or one per image). */
function rowsFor(t: tf.Tensor4D, offset: number, count: number): tf.Tensor4D {
  return tf.tidy(
    () =>
      tf.gather(
        t,
        Array.from({ length: count }, (_, j) => (offset + j) % t.shape[0]),
      ) as tf.Tensor4D,
  );
}

/**
 * Prepares an edit for a loaded pipeline from prepareEdit's pixels (at any processing size; the
 * model works at its own size): the input and mask tensors, the latent mask, and the hooks.
 */
export async function planEdit(pipe: Txt2ImgPipeline, pixels: EditPixels, settings: EditSettings): Promise<EditPlan> {
  const strength = checkStrength(settings.strength);
  const size = pipe.info.imageSize;
  const f = pipe.vae.config.downsampleFactor;
  const frame = { width: pixels.images[0].width, height: pixels.images[0].height };
  const originals = pixels.overlay?.originals ?? pixels.images;
  const identity = strength === 0;
  const finish = async (generated: Uint8Image, i: number) => finishEdit(pixels, await resizeImage(generated, frame.width, frame.height, 0), i);
  const input = (i: number) => originals[i % originals.length];
  if (identity) return { identity, inpaintingConditioning: pipe.inpainting, hook: () => () => notSampled(), finish, input, dispose: () => {} };

  // The model's size: a processing size other than it is stretched to it and back ("Just resize").
  const images = await Promise.all(pixels.images.map((im) => resizeImage(im, size, size, 0)));
  const mask = pixels.mask && (await resizeImage(pixels.mask, size, size, 0));
  // The latent mask: A1111 resizes the processed mask to the latent size (bicubic) and rounds it.
  const latentMask =
    mask &&
    (await sharp(Buffer.from(mask.data), { raw: { width: size, height: size, channels: 1 } })
      .resize(size / f, size / f, { fit: 'fill', kernel: 'cubic' })
      .toColourspace('b-w')
      .raw()
      .toBuffer());
  const init = toTensor(images); // [n, S, S, 3]
  const maskPixels = mask
    ? tf.tensor4d(
        Float32Array.from(mask.data, (v) => v / 255),
        [1, size, size, 1],
      )
    : undefined;
  // [1, h, w, 1], 1 = repaint
  const m = latentMask
    ? tf.tensor4d(
        Float32Array.from(latentMask, (v) => Math.round(v / 255)),
        [1, size / f, size / f, 1],
      )
    : undefined;
  let initLatents: tf.Tensor4D; // [n, h, w, c]
  let conditioning: tf.Tensor4D | undefined; // [n, h, w, 1 + c]
  try {
    initLatents = pipe.vae.encodeLatents(init);
    if (pipe.inpainting) {
      // no mask: everything is repainted (A1111's conditioning mask of ones)
      const pm = maskPixels ?? tf.ones([1, size, size, 1]);
      conditioning = tf.tidy(() => pipe.inpaintingConditioning(init, tf.tile(pm, [init.shape[0], 1, 1, 1]) as tf.Tensor4D));
      if (!maskPixels) pm.dispose();
    }
  } finally {
    init.dispose();
    maskPixels?.dispose();
  }
  const owned = [initLatents, conditioning, m].filter((t): t is tf.Tensor4D => t !== undefined);
  const plan: EditPlan = {
    identity,
    inpaintingConditioning: pipe.inpainting,
    finish,
    input,
    dispose: () => tf.dispose(owned),
    hook: (offset, count) => (scheduler, rng, shape) => {
      const held: tf.Tensor[] = [];
      const keep = <T extends tf.Tensor>(t: T): T => {
        held.push(t);
        return t;
      };
      try {
        const n = shape.reduce((a, d) => a * d, 1);
        let x0 = keep(rowsFor(initLatents, offset, count)); // [B, h, w, c]
        if (m && settings.fill >= 2) {
          // "latent noise" / "latent nothing": the masked latents start from noise or zeros
          const fillNoise = settings.fill === 2 ? keep(tf.tensor(rng.normalArray(n), shape, 'float32')) : undefined;
          x0 = keep(tf.tidy(() => (fillNoise ? tf.add(tf.mul(x0, tf.sub(1, m)), tf.mul(fillNoise, m)) : tf.mul(x0, tf.sub(1, m))) as tf.Tensor4D));
        }
        const noise = keep(tf.tensor(rng.normalArray(n), shape, 'float32'));
        const { startIndex } = strengthStart(scheduler, strength);
        const latents =
          strength === 1
            ? (tf.tidy(() => tf.mul(noise, scheduler.initNoiseSigma)) as tf.Tensor4D)
            : (scheduler.noiseToStep(x0, noise, startIndex) as tf.Tensor4D);
        const start: EditStart = {
          latents: keep(latents),
          index: startIndex,
          imageConditioning: conditioning && keep(rowsFor(conditioning, offset, count)),
          // A normal model inpaints by keeping the known region on the schedule: x0 re-noised with
          // the start noise to the latents' level (diffusers' legacy inpainting, A1111's blend).
          blend:
            m && !pipe.inpainting
              ? (x, level) =>
                  tf.tidy(() => {
                    const known = scheduler.noiseToStep(x0, noise, level);
                    return tf.add(tf.mul(x, m), tf.mul(known, tf.sub(1, m))) as tf.Tensor4D;
                  })
              : undefined,
          dispose: () => tf.dispose(held),
        };
        return start;
      } catch (e) {
        tf.dispose(held);
        throw e;
      }
    },
  };
  return plan;
}

function notSampled(): never {
  throw new Error('strength 0 returns the input: there is nothing to sample');
}

/** The infotext parameters A1111 writes for img2img and inpainting. */
export function editInfotext(o: {
  strength: number;
  mask: boolean;
  maskBlur: number;
  fill: InpaintingFill;
  inpaintFullRes: boolean;
  padding: number;
  maskInvert: boolean;
  resizeMode: ResizeMode;
}): Record<string, InfotextValue> {
  const p: Record<string, InfotextValue> = { 'Denoising strength': o.strength };
  if (o.resizeMode !== 0) p['Resize mode'] = RESIZE_MODES[o.resizeMode];
  if (o.mask) {
    p['Mask blur'] = o.maskBlur;
    if (o.maskInvert) p['Mask mode'] = 'Inpaint not masked';
    p['Masked content'] = INPAINTING_FILLS[o.fill];
    p['Inpaint area'] = o.inpaintFullRes ? 'Only masked' : 'Whole picture';
    if (o.inpaintFullRes) p['Masked area padding'] = o.padding;
  }
  return p;
}

/** `txt2img img2img`: Txt2ImgOptions plus the input image and how to use it. */
export interface Img2ImgOptions extends Txt2ImgOptions {
  /** The init image file (any format sharp reads). */
  init: string;
  /** Repaint mask file (white = repaint), the init image's size. */
  mask?: string;
  strength: number;
  resizeMode: ResizeMode;
  maskBlur: number;
  maskInvert: boolean;
  /** Inpaint only the masked area (and `padding` pixels around it) at the model's size. */
  onlyMasked: boolean;
  padding: number;
  fill: InpaintingFill;
}

export async function runImg2Img(o: Img2ImgOptions): Promise<Txt2ImgResult> {
  const log = o.log ?? ((l: string) => console.error(l));
  checkOutputPath(o.out);
  checkStrength(o.strength);
  requestSettings(o, o.runtime); // bad input fails before the model loads
  const init = await loadRgb(o.init, `--init ${o.init}`);
  const mask = o.mask === undefined ? undefined : await loadMask(o.mask, `--mask ${o.mask}`);
  // The pixel work needs only the model's size: bad images fail before the model loads.
  const size = readModelIndex(o.model).imageSize;
  const pixels = await prepareEdit({
    images: [init],
    mask,
    width: size,
    height: size,
    resizeMode: o.resizeMode,
    maskBlurX: o.maskBlur,
    maskBlurY: o.maskBlur,
    maskInvert: o.maskInvert,
    inpaintFullRes: o.onlyMasked,
    inpaintFullResPadding: o.padding,
    fill: o.fill,
  });
  const pipe = await Txt2ImgPipeline.load(o.model, { clip: o.clip });
  let plan: EditPlan | undefined;
  try {
    for (const w of pipe.info.notes ?? []) log(`note: ${w}`);
    log(describeUNetRuntime(o.runtime ?? 'tfjs') + (o.runtimeWhy ? ` (${o.runtimeWhy})` : ''));
    plan = await planEdit(pipe, pixels, { strength: o.strength, fill: o.fill });
    const extra = editInfotext({ ...o, mask: mask !== undefined, inpaintFullRes: o.onlyMasked });
    const count = (o.labels?.length || o.prompts.length) * o.n;
    let results: Uint8Image[];
    let all: string[];
    if (plan.identity) {
      all = requestInfotexts(pipe, o, { model: o.model, runtime: o.runtime, extra });
      results = Array.from({ length: count }, (_, i) => plan!.input(i));
    } else {
      const batches = Math.ceil(count / BATCH_IMAGES);
      // The bar counts schedule entries: img2img starts part way (at 1 - strength).
      const bar = new ProgressBar({ total: o.steps * batches, label: batches > 1 ? `denoising (${batches} batches)` : 'denoising', silent: o.quiet });
      const edit = plan;
      const { images, parameters } = await generateImages(pipe, o, {
        model: o.model,
        runtime: o.runtime,
        log,
        extra,
        edit: (offset, n) => edit.hook(offset, n),
        onStep: (s) => bar.update(s.batch * o.steps + Math.round(((s.index + 1) / s.total) * o.steps), { t: s.t }),
      });
      bar.finish();
      all = parameters;
      const batch = await tensorToBatch(images);
      images.dispose();
      results = await Promise.all(Array.from({ length: count }, (_, i) => edit.finish(batchImage(batch, i), i)));
    }
    const files: string[] = [];
    const parameters: string[] = [all[0]];
    await writePng(o.out, results.length === 1 ? results[0] : makeGrid(results), { text: { parameters: all[0] } });
    files.push(o.out);
    if (o.separate && results.length > 1) {
      const base = o.out.replace(/\.png$/i, '');
      const width = String(results.length - 1).length;
      for (let i = 0; i < results.length; i++) {
        const file = `${base}-${String(i).padStart(width, '0')}.png`;
        await writePng(file, results[i], { text: { parameters: all[i] } });
        files.push(file);
        parameters.push(all[i]);
      }
    }
    return { files, parameters };
  } finally {
    plan?.dispose();
    pipe.dispose();
  }
}
