/**
 * What `txt2img` does, as a function: load a pipeline folder, generate, and write PNGs carrying
 * their generation parameters in AUTOMATIC1111's `parameters` text chunk.
 */
import * as tf from '@tensorflow/tfjs';
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../checkpoint/files.js';
import { encodeAnimation } from '../image/animate.js';
import { type ImageBatch, batchImage, tensorToBatch, writePng } from '../image/convert.js';
import { makeGrid, makeStrip } from '../image/grid.js';
import { type InfotextValue, formatInfotext } from '../image/infotext.js';
import { ProgressBar } from '../image/progress.js';
import type { ClipLoadOptions } from '../text/clip.js';
import { LabelEncoder } from '../text/label.js';
import { type Runtime, describeUNetRuntime } from '../onnx/runtime.js';
import { Generator } from '../random/generator.js';
import { type LatentsFile, latentsToNHWC, readLatentsFile } from './latents.js';
import { type GenerateOptions, MAX_IMAGE_SIDE, type StepInfo, Txt2ImgPipeline, validateGenerateOptions } from './pipeline.js';

export interface Txt2ImgOptions {
  /** Prompts (text models); each gives `n` images. */
  prompts: string[];
  /** Class labels or class names (label models). */
  labels?: (number | string)[];
  model: string;
  negative?: string;
  cfg: number;
  steps: number;
  /** A scheduler type or an A1111 sampler name (GenerateOptions.sampler). */
  sampler: string;
  eta: number;
  seed: number;
  n: number;
  out: string;
  /** Also write every image as its own file next to the grid. */
  separate?: boolean;
  /** Write the decoded x0 estimate of every step as a strip PNG and an animated WebP. */
  saveSteps?: boolean;
  clip?: ClipLoadOptions;
  /** What computes the U-Net (default 'tfjs'); recorded in the PNG when not tfjs. */
  runtime?: Runtime;
  /** Why that runtime (shown on the start-up line; e.g. how `auto` chose). */
  runtimeWhy?: string;
  /** Initial latents file (.npy or .safetensors, NCHW as diffusers' `latents=`; latents.ts). */
  latents?: string;
  /**
   * Image size in pixels (GenerateOptions.width/height): default the model's square size, or
   * the latents file's size times the VAE's downsampling when `latents` is given.
   */
  width?: number;
  height?: number;
  quiet?: boolean;
  log?: (line: string) => void;
}

export interface Txt2ImgResult {
  files: string[];
  /** The infotext written into the PNG(s). */
  parameters: string[];
}

/** Fails before any work when the output cannot be written. */
export function checkOutputPath(out: string): void {
  if (!/\.png$/i.test(out)) throw new Error(`--out must name a .png file, got '${out}'`);
  const dir = path.dirname(path.resolve(out));
  if (!existsSync(dir)) throw new Error(`cannot write '${out}': folder ${dir} does not exist`);
  if (!statSync(dir).isDirectory()) throw new Error(`cannot write '${out}': ${dir} is not a folder`);
  try {
    accessSync(dir, constants.W_OK);
  } catch {
    throw new Error(`cannot write '${out}': folder ${dir} is not writable`);
  }
  if (existsSync(out) && statSync(out).isDirectory()) throw new Error(`cannot write '${out}': it is a folder`);
}

/** Images one command or call may ask for (prompts x n). */
export const MAX_IMAGES = 1024;
/**
 * Images per U-Net batch: a larger request runs in batches of this many, one noise stream
 * through them all, so peak memory stays that of one batch. (Deterministic samplers give the
 * same images either way; a stochastic one draws its step noise batch by batch.)
 */
export const BATCH_IMAGES = 32;

/** What one generation asks for, as users state it: prompts (or class labels) and the settings. */
export type ImageRequest = Pick<Txt2ImgOptions, 'prompts' | 'labels' | 'negative' | 'cfg' | 'steps' | 'sampler' | 'eta' | 'seed' | 'n' | 'width' | 'height'>;

/** The request's settings as GenerateOptions (without the inputs), and its resolved sampler. */
export function requestSettings(r: ImageRequest, runtime?: Runtime) {
  const settings: Omit<GenerateOptions, 'inputs'> = {
    negative: r.negative,
    guidanceScale: r.cfg,
    steps: r.steps,
    sampler: r.sampler,
    eta: r.eta,
    seed: r.seed,
    runtime,
    width: r.width,
    height: r.height,
  };
  for (const [name, v] of [
    ['width', r.width],
    ['height', r.height],
  ] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v < 1 || v > MAX_IMAGE_SIDE))
      throw new Error(`--${name} must be an integer from 1 to ${MAX_IMAGE_SIDE} pixels, got ${v}`);
  }
  if (!Number.isInteger(r.n) || r.n < 1 || r.n > 256) throw new Error(`--n must be an integer from 1 to 256, got ${r.n}`);
  const asked = r.labels?.length || r.prompts.length;
  if (asked * r.n > MAX_IMAGES) {
    throw new Error(
      `${asked} ${r.labels?.length ? 'label' : 'prompt'}(s) x --n ${r.n} = ${asked * r.n} images; at most ${MAX_IMAGES} per command (split the request)`,
    );
  }
  // No model needed for these checks, so callers run this before loading one.
  const { sampler } = validateGenerateOptions({ ...settings, inputs: r.labels?.length ? r.labels.map((_, i) => i) : r.prompts });
  return { settings, sampler };
}

/** A request's inputs to the model (each prompt or label `n` times) and how each is shown in its infotext. */
function requestInputs(pipe: Txt2ImgPipeline, r: ImageRequest, model: string): { inputs: string[] | number[]; shown: string[] } {
  if (pipe.encoder instanceof LabelEncoder) {
    if (!r.labels || r.labels.length === 0) throw new Error(`model ${model} is conditioned on class labels: pass --label (e.g. --label 3)`);
    if (r.prompts.length) throw new Error(`model ${model} is conditioned on class labels, not text: use --label instead of a prompt`);
    const ids = pipe.encoder.labelsToIndices(r.labels);
    return { inputs: ids.flatMap((l) => new Array(r.n).fill(l)), shown: ids.flatMap((l) => new Array(r.n).fill(`label ${l}`)) };
  }
  if (r.labels?.length) throw new Error(`model ${model} is conditioned on text: --label is for class-conditional models`);
  const inputs = r.prompts.flatMap((p) => new Array(r.n).fill(p));
  return { inputs, shown: inputs };
}

/** Options of generateImages besides the request. */
export interface GenerateImagesOptions {
  model: string;
  runtime?: Runtime;
  log: (line: string) => void;
  onStep?: (info: StepInfo & { batch: number; batches: number }) => void | Promise<void>;
  /** img2img / inpainting (img2img.ts): GenerateOptions.edit for images [offset, offset + count). */
  edit?: (offset: number, count: number) => GenerateOptions['edit'];
  /** Further infotext parameters (e.g. img2img's `Denoising strength`). */
  extra?: Record<string, InfotextValue>;
  /** Initial latents for all the request's images (recorded in the infotext). */
  latents?: LatentsFile;
}

/**
 * The size a request asks for: its width/height, else (for each side not given) the latents
 * file's, else the model's (undefined: GenerateOptions' default).
 */
function requestSize(pipe: Txt2ImgPipeline, r: ImageRequest, latents?: LatentsFile): Pick<GenerateOptions, 'width' | 'height'> {
  const f = pipe.vae.config.downsampleFactor;
  const fromLatents = latents?.shape.length === 4;
  return {
    width: r.width ?? (fromLatents ? latents!.shape[3] * f : undefined),
    height: r.height ?? (fromLatents ? latents!.shape[2] * f : undefined),
  };
}

/** Each image's generation parameters in AUTOMATIC1111's infotext format. */
export function requestInfotexts(pipe: Txt2ImgPipeline, r: ImageRequest, o: Pick<GenerateImagesOptions, 'model' | 'runtime' | 'extra' | 'latents'>): string[] {
  const { sampler } = requestSettings(r, o.runtime);
  const { shown } = requestInputs(pipe, r, o.model);
  const { width, height } = pipe.imageShape(requestSize(pipe, r, o.latents));
  return shown.map((prompt, i) =>
    formatInfotext({
      prompt,
      negativePrompt: r.negative,
      steps: r.steps,
      sampler: sampler.name,
      cfgScale: r.cfg,
      seed: r.seed,
      width,
      height,
      model: path.basename(path.resolve(o.model)),
      extra: {
        ...(sampler.type === 'ddim' && r.eta ? { Eta: r.eta } : {}),
        ...o.extra,
        // the seed did not draw the starting noise: say what did
        ...(o.latents ? { 'Initial latents': `${path.basename(o.latents.file)} (sha256 ${o.latents.hash})` } : {}),
        ...(shown.length > 1 ? { 'Batch size': shown.length, 'Batch pos': i } : {}),
        // the runtimes agree to ~2e-6, not bit for bit: say which made these pixels
        ...(o.runtime && o.runtime !== 'tfjs' ? { 'U-Net runtime': o.runtime } : {}),
      },
    }),
  );
}

/**
 * Generates a request's images with a loaded pipeline: each prompt (or label) `n` times, as
 * [B, H, W, C] in [-1, 1] (the caller disposes it), with each image's generation parameters in
 * AUTOMATIC1111's infotext format.
 */
export async function generateImages(pipe: Txt2ImgPipeline, r: ImageRequest, o: GenerateImagesOptions): Promise<{ images: tf.Tensor4D; parameters: string[] }> {
  const { settings } = requestSettings(r, o.runtime);
  const { inputs } = requestInputs(pipe, r, o.model);
  const parameters = requestInfotexts(pipe, r, o);
  const rng = new Generator(r.seed);
  const size = requestSize(pipe, r, o.latents);
  const { width, height } = pipe.imageShape(size, o.edit !== undefined);
  const f = pipe.vae.config.downsampleFactor;
  const [h, w] = [height / f, width / f];
  const c = pipe.vae.config.latentChannels;
  const initial = o.latents && latentsToNHWC(o.latents, inputs.length, c, h, w); // [N, h, w, c]
  const batches = Math.ceil(inputs.length / BATCH_IMAGES);
  const parts: tf.Tensor4D[] = [];
  let images: tf.Tensor4D;
  try {
    for (let k = 0; k < batches; k++) {
      const slice = inputs.slice(k * BATCH_IMAGES, (k + 1) * BATCH_IMAGES) as string[] | number[];
      const per = h * w * c;
      const latents = initial && tf.tensor4d(initial.subarray(k * BATCH_IMAGES * per, (k * BATCH_IMAGES + slice.length) * per), [slice.length, h, w, c]);
      try {
        parts.push(
          await pipe.generate({
            ...settings,
            inputs: slice,
            generator: rng,
            warn: k === 0 ? o.log : () => {}, // the same warnings for every batch: once
            onStep: o.onStep && ((s) => o.onStep!({ ...s, batch: k, batches })),
            edit: o.edit?.(k * BATCH_IMAGES, slice.length),
            latents,
            ...size,
          }),
        );
      } finally {
        latents?.dispose();
      }
    }
    images = parts.length === 1 ? parts[0] : (tf.concat(parts) as tf.Tensor4D);
  } finally {
    if (parts.length > 1) tf.dispose(parts);
  }
  return { images, parameters };
}

export async function runTxt2Img(o: Txt2ImgOptions): Promise<Txt2ImgResult> {
  const log = o.log ?? ((l: string) => console.error(l));
  checkOutputPath(o.out);
  requestSettings(o, o.runtime); // bad input fails before the model loads
  const latents = o.latents !== undefined ? readLatentsFile(o.latents) : undefined;
  const pipe = await Txt2ImgPipeline.load(o.model, { clip: o.clip, log });
  try {
    for (const w of pipe.info.notes ?? []) log(`note: ${w}`);
    log(describeUNetRuntime(o.runtime ?? 'tfjs') + (o.runtimeWhy ? ` (${o.runtimeWhy})` : ''));
    const batches = Math.ceil(((o.labels?.length || o.prompts.length) * o.n) / BATCH_IMAGES);
    const bar = new ProgressBar({ total: o.steps * batches, label: batches > 1 ? `denoising (${batches} batches)` : 'denoising', silent: o.quiet });
    /** The x0 estimate of every image at each step: frames[step][batch]. */
    const frames: ImageBatch[][] = [];
    const { images, parameters: all } = await generateImages(pipe, o, {
      model: o.model,
      runtime: o.runtime,
      latents,
      log,
      onStep: async (s) => {
        bar.update(s.batch * s.total + s.index + 1, { t: s.t });
        if (o.saveSteps) {
          const x0 = tf.tidy(() => tf.clipByValue(pipe.vae.decodeLatents(s.predX0), -1, 1));
          frames[s.index] ??= [];
          frames[s.index].push(await tensorToBatch(x0));
          x0.dispose();
        }
      },
    });
    bar.finish();
    const batch = await tensorToBatch(images);
    images.dispose();

    const files: string[] = [];
    const parameters: string[] = [];
    const count = batch.shape[0];
    // A grid carries the first image's parameters (as A1111 does for grids).
    parameters.push(all[0]);
    await writePng(o.out, count === 1 ? batchImage(batch, 0) : makeGrid(batch), { text: { parameters: all[0] } });
    files.push(o.out);
    if (o.separate && count > 1) {
      const base = o.out.replace(/\.png$/i, '');
      const width = String(count - 1).length;
      for (let i = 0; i < count; i++) {
        const file = `${base}-${String(i).padStart(width, '0')}.png`;
        await writePng(file, batchImage(batch, i), { text: { parameters: all[i] } });
        files.push(file);
        parameters.push(all[i]);
      }
    }
    if (o.saveSteps && frames.length) {
      const base = o.out.replace(/\.png$/i, '');
      const perStep = frames.map((f) => makeGrid(concatBatches(f)));
      const strip = makeStrip(perStep.length > 12 ? pickEvenly(perStep, 12) : perStep);
      await writePng(`${base}-steps.png`, strip, { text: { parameters: parameters[0] } });
      writeFileAtomic(`${base}-steps.webp`, await encodeAnimation(perStep, 'webp', { delay: 120 }));
      files.push(`${base}-steps.png`, `${base}-steps.webp`);
    }
    return { files, parameters };
  } finally {
    pipe.dispose();
  }
}

/** Image batches of one size, one after the other. */
function concatBatches(parts: ImageBatch[]): ImageBatch {
  if (parts.length === 1) return parts[0];
  const data = new Float32Array(parts.reduce((a, p) => a + p.data.length, 0));
  let at = 0;
  for (const p of parts) {
    data.set(p.data, at);
    at += p.data.length;
  }
  const [, h, w, c] = parts[0].shape;
  return { data, shape: [parts.reduce((a, p) => a + p.shape[0], 0), h, w, c] };
}

function pickEvenly<T>(items: T[], k: number): T[] {
  const out: T[] = [];
  for (let i = 0; i < k; i++) out.push(items[Math.round((i * (items.length - 1)) / (k - 1))]);
  return out;
}
