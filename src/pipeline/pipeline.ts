/**
 * A text-to-image (or label-to-image) latent diffusion pipeline: VAE + U-Net + a condition
 * encoder + a noise schedule, saved as a folder in diffusers' format (folder.ts):
 *
 *   model_index.json            StableDiffusionPipeline's, our training facts under `_txt2img`
 *   vae/                        config.json + diffusion_pytorch_model.safetensors
 *   unet/                       config.json + diffusion_pytorch_model.safetensors
 *   text_encoder/ + tokenizer/  transformers' CLIPTextModel + CLIPTokenizer
 *   | label_encoder/            (label-conditioned: config.json + weights, our format)
 *   scheduler/scheduler_config.json
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { loadComponentWeights, readComponentConfig, type SaveComponentOptions, saveComponent } from '../checkpoint/io.js';
import { crashPoint, recoverDir, replaceDirAtomic, tempDirFor, writeJsonAtomic } from '../checkpoint/files.js';
import { Generator } from '../random/generator.js';
import { PerImageNoise } from '../random/per-image.js';
import {
  type A1111Sampler,
  type NoiseSource,
  type Scheduler,
  type SchedulerConfig,
  createScheduler,
  parseSamplerName,
  withA1111Sampler,
} from '../schedulers/index.js';
import type { ClipLoadOptions, ClipTextEncoder } from '../text/clip.js';
import { LabelEncoder, validateLabelEncoderConfig } from '../text/label.js';
import { type ConditionEncoder, type Conditioning, disposeConditioning } from '../text/types.js';
import { UNet2DCondition } from '../unet/unet2d-condition.js';
import { AutoencoderKL } from '../vae/autoencoder-kl.js';
import { RUNTIMES, type Runtime, parseRuntimeName } from '../onnx/runtime.js';
import type { OnnxUNet } from '../onnx/unet.js';
import {
  type PipelineInfo,
  loadTextEncoderFolder,
  modelIndexJson,
  readModelIndex,
  readSchedulerFolder,
  saveTextEncoderFolder,
  schedulerFolderJson,
} from './folder.js';
import { type SampleLatentsOptions, sampleLatents, validateGuidanceScale } from './sample.js';
import { VOCABULARY_FILE, readVocabulary, unknownWords, writeVocabulary } from './vocabulary.js';

export { type PipelineInfo, readModelIndex } from './folder.js';

/** What a step reports: its index of `total`, its timestep, the new latents and the x0 estimate (do not dispose them). */
export interface StepInfo {
  index: number;
  total: number;
  t: number;
  latents: tf.Tensor4D;
  predX0: tf.Tensor4D;
}

/**
 * What img2img and inpainting (img2img.ts) give the sampling loop, built by GenerateOptions.edit
 * once the scheduler is set up (sample.ts' start, imageConditioning and blend).
 */
export interface EditStart {
  /** Latents [B, h, w, c] at the noise level of timesteps[index]. */
  latents: tf.Tensor4D;
  index: number;
  /** An inpainting U-Net's extra input channels [B, h, w, 1 + c]: mask, masked-image latents. */
  imageConditioning?: tf.Tensor4D;
  blend?: (x: tf.Tensor4D, level: number) => tf.Tensor4D;
  /** Frees every tensor above; generate calls it when sampling ends. */
  dispose(): void;
}

export interface GenerateOptions {
  /** Prompts (clip) or class labels / class names (label); one image per entry. */
  inputs: string[] | number[];
  /** Replaces the unconditional context of guidance (clip only). */
  negative?: string;
  guidanceScale: number;
  steps: number;
  /**
   * A scheduler type ('ddim', 'euler-ancestral', 'dpmpp-2m', ...) or an AUTOMATIC1111 sampler
   * name ('Euler a', 'DPM++ 2M Karras'); default 'ddim'. SAMPLER_NAMES lists them.
   */
  sampler?: string;
  /** DDIM eta (0 = deterministic). */
  eta?: number;
  seed: number;
  /**
   * Draw the noise from this generator instead of a new one seeded with `seed` (a request split
   * into several batches continues one stream).
   */
  generator?: Generator;
  /**
   * One seed per input: image i's noise comes from its own Generator(seeds[i]) alone, whatever the
   * batch (AUTOMATIC1111's seeds: seed, seed + 1, ...). Replaces `seed` and `generator`.
   */
  seeds?: number[];
  /** Checked before every step: true stops sampling early with the current x0 estimate (an interrupted job). */
  interrupted?: () => boolean;
  /**
   * img2img and inpainting (img2img.ts): the loop's start, built from the configured scheduler,
   * the noise source (drawn from before any step) and the latent shape [B, h, w, c].
   */
  edit?: (scheduler: Scheduler, rng: NoiseSource, shape: [number, number, number, number]) => EditStart;
  /** Called after each denoising step with the x0 estimate decoded lazily by the callback. */
  onStep?: (info: StepInfo) => void | Promise<void>;
  /** Where warnings go (default console.error). */
  warn?: (msg: string) => void;
  /** What computes the U-Net: 'tfjs' (default) or 'onnx' (onnxruntime-node, CPU; src/onnx). */
  runtime?: Runtime;
  /**
   * Initial latents [B, h, w, c] (one per input), standard normal as diffusers' `latents=` takes
   * them (before init_noise_sigma), instead of drawing them from the seed (latents.ts reads them
   * from a file); not disposed here. Not with `edit`.
   */
  latents?: tf.Tensor4D;
  /**
   * Image size in pixels (default: the model's square size, imageSize). The U-Net is
   * convolutional, so any multiple of `sizeMultiple` works (diffusers' height= / width=); a model
   * draws best near the size it was trained at. Not with `edit` (img2img works at the model's size).
   */
  width?: number;
  height?: number;
}

/** Largest image side generate() accepts, in pixels (A1111's UI goes to 2048). */
export const MAX_IMAGE_SIDE = 8192;

export interface SavePipelineOptions {
  /**
   * Element type of the weights files (VAE, U-Net, label table): 'F32' (default, exact) or 'F16'
   * (half the size; values rounded to the nearest half float, which is what loading gives back).
   */
  dtype?: SaveComponentOptions['dtype'];
}

export interface LoadPipelineOptions {
  /** CLIP loading options (local model folder, remote access). */
  clip?: ClipLoadOptions;
  /** Where a read-only folder's one-time text-encoder conversion goes (default ~/.cache/txt2img or TXT2IMG_CACHE). */
  cacheDir?: string;
  /** Where warnings go (default console.error): e.g. a scheduler class we do not implement. */
  warn?: (msg: string) => void;
  /** Progress lines (e.g. the text encoder's one-time ONNX conversion); default console.error. */
  log?: (line: string) => void;
}

function describeFolderProblem(dir: string): string | undefined {
  if (!existsSync(dir)) return `model folder ${dir} does not exist`;
  if (!statSync(dir).isDirectory()) return `model path ${dir} is not a folder`;
  return undefined;
}

export class Txt2ImgPipeline {
  /** generate({ runtime: 'onnx' })'s U-Net; traced from `unet`'s weights when first used. */
  private onnxUNet?: OnnxUNet;
  /** The words of the training captions (text models trained here), for the unknown-word warning. */
  trainingWords?: ReadonlySet<string>;

  constructor(
    readonly vae: AutoencoderKL,
    readonly unet: UNet2DCondition,
    readonly encoder: ConditionEncoder,
    readonly schedulerConfig: SchedulerConfig,
    readonly info: PipelineInfo,
  ) {
    if (encoder.contextDim !== unet.config.contextDim) {
      throw new Error(`condition encoder width ${encoder.contextDim} does not match the U-Net's contextDim ${unet.config.contextDim}`);
    }
    const size = unet.config.sampleSize * vae.config.downsampleFactor;
    if (info.imageSize !== size) {
      throw new Error(
        `imageSize ${info.imageSize} does not match the U-Net's sampleSize ${unet.config.sampleSize} x the VAE's downsampleFactor ${vae.config.downsampleFactor} = ${size}`,
      );
    }
    const zc = vae.config.latentChannels;
    if (unet.config.outChannels !== zc) throw new Error(`VAE latentChannels ${zc} does not match the U-Net's outChannels ${unet.config.outChannels}`);
    if (unet.config.inChannels !== zc && unet.config.inChannels !== 2 * zc + 1) {
      throw new Error(
        `the U-Net's inChannels ${unet.config.inChannels} must be the VAE's latentChannels ${zc}, or ${2 * zc + 1} for an inpainting U-Net (latents, mask, masked-image latents)`,
      );
    }
  }

  /**
   * True for an inpainting U-Net (diffusers' StableDiffusionInpaintPipeline): its input is the
   * latents, the mask and the masked image's latents, 2 x latentChannels + 1 channels.
   */
  get inpainting(): boolean {
    return this.unet.config.inChannels === 2 * this.vae.config.latentChannels + 1;
  }

  /**
   * An inpainting U-Net's extra channels [B, h, w, 1 + c] for a mask and an image [B, H, W, C] in
   * [-1, 1] (mask [B, H, W, 1], 1 = repaint): the mask binarised at 0.5 and resized to the latents
   * (nearest), and the latents (posterior mean) of the image with the repainted pixels set to 0,
   * as diffusers' prepare_mask_latents and masked_image = image * (mask < 0.5).
   */
  inpaintingConditioning(image: tf.Tensor4D, mask: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      const binary = tf.cast(tf.greaterEqual(mask, 0.5), 'float32') as tf.Tensor4D;
      const masked = tf.mul(image, tf.sub(1, binary)) as tf.Tensor4D;
      const latents = this.vae.encodeLatents(masked); // [B, h, w, c]
      const small = tf.image.resizeNearestNeighbor(binary, [latents.shape[1], latents.shape[2]]); // [B, h, w, 1]
      return tf.concat([small, latents], 3) as tf.Tensor4D;
    });
  }

  /**
   * Writes the whole pipeline folder under a temporary name and swaps it in, so an existing
   * pipeline at `dir` stays intact until the new one is complete. A CLIP encoder is written as
   * transformers' CLIPTextModel with its tokenizer (folder.ts' saveTextEncoderFolder), so the
   * folder is self-contained, can be moved, and loads in diffusers.
   */
  async save(dir: string, opts: SavePipelineOptions = {}): Promise<void> {
    const tmp = tempDirFor(dir);
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    const weights = { dtype: opts.dtype };
    try {
      // diffusers' config.json keys, parameter names and element layout (each model's save()).
      await this.vae.save(path.join(tmp, 'vae'), weights);
      await this.unet.save(path.join(tmp, 'unet'), weights);
      let layout: 'clip-model' | 'legacy-clip' | 'label' = 'label';
      if (this.encoder instanceof LabelEncoder) {
        await saveComponent(path.join(tmp, 'label_encoder'), this.encoder.config, this.encoder.params, undefined, weights);
      } else {
        layout = saveTextEncoderFolder(tmp, this.encoder as ClipTextEncoder, opts.dtype);
      }
      const scheduler = schedulerFolderJson(this.schedulerConfig);
      writeJsonAtomic(path.join(tmp, 'scheduler', 'scheduler_config.json'), scheduler);
      writeJsonAtomic(path.join(tmp, 'model_index.json'), modelIndexJson(this.info, String(scheduler._class_name), layout));
      mkdirSync(path.dirname(path.resolve(dir)), { recursive: true });
      if (this.trainingWords) writeVocabulary(tmp, [...this.trainingWords].sort());
      crashPoint('export-written');
      replaceDirAtomic(tmp, dir);
    } catch (e) {
      rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  static async load(dir: string, opts: LoadPipelineOptions = {}): Promise<Txt2ImgPipeline> {
    recoverDir(dir);
    const problem = describeFolderProblem(dir);
    if (problem) throw new Error(problem);
    const index = readModelIndex(dir);
    const missing = ['vae', 'unet', ...(index.conditioning === 'clip' ? ['text_encoder'] : ['label_encoder']), 'scheduler'].filter(
      (c) => !existsSync(path.join(dir, c)),
    );
    if (missing.length) throw new Error(`model folder ${dir} is incomplete: missing ${missing.map((m) => `${m}/`).join(', ')}`);
    const vae = AutoencoderKL.load(path.join(dir, 'vae'));
    const unet = UNet2DCondition.load(path.join(dir, 'unet'));
    let encoder: ConditionEncoder;
    let sched: SchedulerConfig;
    try {
      sched = readSchedulerFolder(dir, opts.warn);
      if (index.conditioning === 'label') {
        const encDir = path.join(dir, 'label_encoder');
        const cfg = validateLabelEncoderConfig(readComponentConfig(encDir, 'label encoder'));
        const enc = new LabelEncoder(cfg, Generator.forLoadedWeights());
        loadComponentWeights(encDir, enc.params, undefined, 'label encoder');
        encoder = enc;
      } else {
        encoder = await loadTextEncoderFolder(dir, { clip: opts.clip, cacheDir: opts.cacheDir, log: opts.log ?? ((l) => console.error(l)) });
      }
    } catch (e) {
      vae.dispose();
      unet.dispose();
      throw e;
    }
    const { className: _c, format: _f, ...info } = index;
    try {
      const pipeline = new Txt2ImgPipeline(vae, unet, encoder, sched, info);
      pipeline.trainingWords = readVocabulary(dir);
      return pipeline;
    } catch (e) {
      vae.dispose();
      unet.dispose();
      encoder.dispose();
      throw new Error(`model folder ${dir}: ${(e as Error).message}`);
    }
  }

  /** Validates generation options against this model; returns the resolved sampler settings. */
  checkOptions(o: GenerateOptions): { sampler: A1111Sampler; eta: number } {
    const resolved = validateGenerateOptions(o);
    const T = this.schedulerConfig.numTrainTimesteps;
    if (o.steps > T) throw new Error(`steps must be an integer from 1 to ${T} (the model's training steps), got ${o.steps}`);
    if (o.negative !== undefined && this.info.conditioning !== 'clip')
      throw new Error('a negative prompt needs a text-conditioned model; this one is conditioned on class labels');
    this.imageShape(o, o.edit !== undefined);
    return resolved;
  }

  /**
   * Sides an image may have: multiples of the VAE's downsampling times the U-Net's (one stride-2
   * downsample between levels), so every U-Net skip connection meets a map of its own size.
   */
  get sizeMultiple(): number {
    return this.vae.config.downsampleFactor * 2 ** (this.unet.config.channels.length - 1);
  }

  /** The image size a call asks for (default the model's), checked: { width, height } in pixels. */
  imageShape(o: Pick<GenerateOptions, 'width' | 'height'>, editing = false): { width: number; height: number } {
    const m = this.sizeMultiple;
    const size = this.info.imageSize;
    const side = (v: number | undefined, name: string) => {
      if (v === undefined) return size;
      if (!Number.isInteger(v) || v < m || v > MAX_IMAGE_SIDE || v % m !== 0)
        throw new Error(
          `${name} must be a multiple of ${m} from ${m} to ${MAX_IMAGE_SIDE} pixels for this model (its VAE and U-Net downsampling), got ${v}; its own size is ${size}`,
        );
      return v;
    };
    const shape = { width: side(o.width, 'width'), height: side(o.height, 'height') };
    if (editing && (shape.width !== size || shape.height !== size))
      throw new Error(`img2img works at the model's size ${size}x${size}; width/height ${shape.width}x${shape.height} are for text to image`);
    return shape;
  }

  /** Generates images [B, H, W, C] in [-1, 1], one per input. */
  async generate(o: GenerateOptions): Promise<tf.Tensor4D> {
    const { sampler, eta } = this.checkOptions(o);
    const warn = o.warn ?? ((m: string) => console.error(m));
    if (o.guidanceScale !== 1 && !(this.info.conditioningDropout > 0)) {
      warn(
        `warning: guidance scale ${o.guidanceScale} requested, but this model was trained without conditioning dropout, so its unconditional prediction is untrained; --cfg 1 is the meaningful setting`,
      );
    }
    if (sampler.type !== 'ddim' && eta > 0) warn(`warning: eta ${eta} is ignored: eta applies to the ddim sampler only, not ${sampler.name}`);
    if (this.trainingWords && this.info.conditioning === 'clip') {
      const unknown = unknownWords([...(o.inputs as string[]), ...(o.negative !== undefined ? [o.negative] : [])], this.trainingWords);
      if (unknown.length) {
        const shown =
          unknown
            .slice(0, 8)
            .map((w) => `'${w}'`)
            .join(', ') + (unknown.length > 8 ? `, ... (${unknown.length} words)` : '');
        warn(
          `warning: the model never saw ${unknown.length === 1 ? 'this word' : 'these words'} in its training captions: ${shown}; it ignores ${unknown.length === 1 ? 'it' : 'them'} or draws something arbitrary (its words: ${VOCABULARY_FILE})`,
        );
      }
    }
    if (o.guidanceScale > 30) warn(`warning: guidance scale ${o.guidanceScale} is unusually high (1-15 is the usual range); expect saturated, broken images`);
    const b = o.inputs.length;
    // The model's noise schedule, sampled as asked (eta is DDIM's alone).
    const scheduler = createScheduler({ ...withA1111Sampler(this.schedulerConfig, sampler.name), eta: sampler.type === 'ddim' ? eta : 0 });
    scheduler.setTimesteps(o.steps);
    const f = this.vae.config.downsampleFactor;
    const { width, height } = this.imageShape(o, o.edit !== undefined);
    const shape: [number, number, number, number] = [b, height / f, width / f, this.vae.config.latentChannels]; // [B, h, w, c]

    let cond: Conditioning | undefined;
    let uncond: Conditioning | undefined;
    let start: EditStart | undefined;
    let blank: tf.Tensor4D | undefined;
    try {
      cond = await this.encoder.encode(o.inputs);
      if (o.guidanceScale !== 1) {
        uncond = o.negative !== undefined ? await this.encoder.encode(new Array(b).fill(o.negative)) : await this.encoder.unconditional(b);
      }
      const rng = o.seeds ? new PerImageNoise(o.seeds) : (o.generator ?? new Generator(o.seed));
      const total = scheduler.timesteps.length;
      start = o.edit?.(scheduler, rng, shape);
      if (this.inpainting && !start?.imageConditioning) {
        // Text to image with an inpainting U-Net: everything is to be painted (A1111's
        // txt2img_image_conditioning), with the masked pixels 0 as in training, not A1111's black.
        blank = tf.tidy(() => this.inpaintingConditioning(tf.zeros([b, height, width, this.vae.config.imageChannels]), tf.ones([b, height, width, 1])));
      }
      const loop: Omit<SampleLatentsOptions, 'unet'> = {
        scheduler,
        cond,
        uncond,
        guidanceScale: o.guidanceScale,
        shape,
        rng,
        onStep: o.onStep ? (s) => o.onStep!({ ...s, total }) : undefined,
        start: start && { latents: start.latents, index: start.index },
        initial: o.latents,
        imageConditioning: start?.imageConditioning ?? blank,
        blend: start?.blend,
        interrupted: o.interrupted,
      };
      // The ONNX U-Net (and its exporter, loaded only here) is kept for later calls: its
      // sessions are exported per input shape.
      if (o.runtime === 'onnx') this.onnxUNet ??= new (await import('../onnx/unet.js')).OnnxUNet(this.unet);
      const latents = await sampleLatents({ ...loop, unet: o.runtime === 'onnx' ? this.onnxUNet! : this.unet });
      // Finite or fail: a NaN (an overflow in the U-Net or the decoder) would clip to a black image.
      const decoded = tf.tidy(() => this.vae.decodeLatents(latents));
      const allFinite = tf.tidy(() => tf.logicalAnd(tf.all(tf.isFinite(latents)), tf.all(tf.isFinite(decoded))));
      const finite = (await allFinite.data())[0] === 1; // read asynchronously: webgpu cannot read synchronously
      allFinite.dispose();
      latents.dispose();
      if (!finite) {
        decoded.dispose();
        throw new Error(
          `sampling gave non-finite values (NaN or Inf) with cfg ${o.guidanceScale}, ${sampler.name}, ${o.steps} steps: the model overflows with these settings; no image was made`,
        );
      }
      const images = tf.tidy(() => tf.clipByValue(decoded, -1, 1) as tf.Tensor4D);
      decoded.dispose();
      return images;
    } finally {
      disposeConditioning(cond);
      disposeConditioning(uncond);
      start?.dispose();
      blank?.dispose();
    }
  }

  dispose(): void {
    this.onnxUNet?.dispose();
    this.vae.dispose();
    this.unet.dispose();
    this.encoder.dispose();
  }
}

/**
 * The checks of generation options that need no model (the one place each is made; a model adds
 * its own in checkOptions): callers run it before loading a model, so bad input fails at once.
 */
export function validateGenerateOptions(o: GenerateOptions): { sampler: A1111Sampler; eta: number } {
  if (!Array.isArray(o.inputs) || o.inputs.length === 0)
    throw new Error('no prompts given: pass at least one prompt, e.g. txt2img "a smiling face" (or --label for class-conditional models)');
  if (o.inputs.some((p) => typeof p === 'string' && p.trim() === '')) throw new Error('a prompt is empty: give text, e.g. txt2img "a smiling face"');
  validateGuidanceScale(o.guidanceScale);
  if (!Number.isInteger(o.steps) || o.steps < 1) throw new Error(`steps must be an integer >= 1, got ${o.steps}`);
  const sampler = parseSamplerName(o.sampler ?? 'ddim');
  const eta = o.eta ?? 0;
  if (!Number.isFinite(eta) || eta < 0 || eta > 1) throw new Error(`eta must be a number from 0 (deterministic DDIM) to 1 (DDPM-like noise), got ${o.eta}`);
  if (!Number.isInteger(o.seed) || o.seed < 0) throw new Error(`seed must be an integer >= 0, got ${o.seed}`);
  if (o.seeds !== undefined) {
    if (!Array.isArray(o.seeds) || o.seeds.length !== o.inputs.length)
      throw new Error(`seeds must list one seed per input (${o.inputs.length}), got ${JSON.stringify(o.seeds)}`);
    const bad = o.seeds.find((s) => !Number.isInteger(s) || s < 0);
    if (bad !== undefined) throw new Error(`seeds must be integers >= 0, got ${bad}`);
  }
  if (o.runtime !== undefined) parseRuntimeName(RUNTIMES, String(o.runtime), 'runtime', 'U-Net runtime');
  return { sampler, eta };
}
