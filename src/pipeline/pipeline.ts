/**
 * A text-to-image (or label-to-image) latent diffusion pipeline: VAE + U-Net + a condition
 * encoder + a noise schedule, saved as a folder in diffusers' layout:
 *
 *   model_index.json            which components, how conditioning works, training facts
 *   vae/                        config.json + diffusion_pytorch_model.safetensors
 *   unet/                       config.json + diffusion_pytorch_model.safetensors
 *   text_encoder/ | label_encoder/   config.json (+ weights for labels)
 *   scheduler/scheduler_config.json
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { loadComponentWeights, readComponentConfig, type SaveComponentOptions, saveComponent } from '../checkpoint/io.js';
import { crashPoint, readJson, recoverDir, replaceDirAtomic, tempDirFor, writeJsonAtomic } from '../checkpoint/files.js';
import { Generator } from '../random/generator.js';
import { PerImageNoise } from '../random/per-image.js';
import {
  type A1111Sampler,
  type NoiseSource,
  type Scheduler,
  type SchedulerConfig,
  createScheduler,
  parseSamplerName,
  parseSchedulerConfig,
  schedulerConfigToJSON,
  withA1111Sampler,
} from '../schedulers/index.js';
import { type ClipLoadOptions, type ClipTextEncoder, loadClipTextEncoder, validateClipTextEncoderConfig } from '../text/clip.js';
import { LabelEncoder, validateLabelEncoderConfig } from '../text/label.js';
import { type ConditionEncoder, type Conditioning, disposeConditioning } from '../text/types.js';
import { UNet2DCondition } from '../unet/unet2d-condition.js';
import { AutoencoderKL } from '../vae/autoencoder-kl.js';
import { RUNTIMES, type Runtime, parseRuntimeName } from '../onnx/runtime.js';
import type { OnnxUNet } from '../onnx/unet.js';
import { type SampleLatentsOptions, sampleLatents, validateGuidanceScale } from './sample.js';
import { VOCABULARY_FILE, readVocabulary, unknownWords, writeVocabulary } from './vocabulary.js';

export const PIPELINE_CLASS_NAME = 'Txt2ImgPipeline';
export const PIPELINE_VERSION = 1;

export interface PipelineInfo {
  conditioning: 'clip' | 'label';
  /** Probability the condition was replaced by the unconditional one in training (0 = never). */
  conditioningDropout: number;
  /** Image size the model was trained at. */
  imageSize: number;
  /** Optimizer steps of the U-Net stage, for the record. */
  trainedSteps?: number;
  /** Free text shown by `txt2img --info` (e.g. "not pretrained text encoder"). */
  notes?: string[];
}

export interface ModelIndex extends PipelineInfo {
  _class_name: typeof PIPELINE_CLASS_NAME;
  _version: number;
  vae: [string, string];
  unet: [string, string];
  text_encoder?: [string, string];
  label_encoder?: [string, string];
  scheduler: [string, string];
}

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
}

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

  modelIndex(): ModelIndex {
    const enc =
      this.info.conditioning === 'clip'
        ? { text_encoder: ['txt2img', 'ClipTextEncoder'] as [string, string] }
        : { label_encoder: ['txt2img', 'LabelEncoder'] as [string, string] };
    return {
      _class_name: PIPELINE_CLASS_NAME,
      _version: PIPELINE_VERSION,
      ...this.info,
      vae: ['txt2img', 'AutoencoderKL'],
      unet: ['txt2img', 'UNet2DCondition'],
      ...enc,
      scheduler: ['txt2img', this.schedulerConfig.type === 'ddim' ? 'DDIMScheduler' : 'DDPMScheduler'],
    };
  }

  /**
   * Writes the whole pipeline folder under a temporary name and swaps it in, so an existing
   * pipeline at `dir` stays intact until the new one is complete. A CLIP encoder's text model and
   * tokenizer are copied in (text_encoder/clip/, tokenizer/) when it was loaded from local files,
   * so the folder is self-contained and can be moved.
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
      if (this.encoder instanceof LabelEncoder) {
        await saveComponent(path.join(tmp, 'label_encoder'), this.encoder.config, this.encoder.params, undefined, weights);
      } else {
        const { config, embedded } = (this.encoder as ClipTextEncoder).embedFiles(tmp);
        const hub = [
          !embedded.model && `the text model '${config.modelId}'`,
          !embedded.tokenizer && `the tokenizer '${config.tokenizerId ?? config.modelId}'`,
        ].filter(Boolean);
        writeJsonAtomic(path.join(tmp, 'text_encoder', 'config.json'), {
          ...(hub.length ? { _comment: `${hub.join(' and ')} load${hub.length === 1 ? 's' : ''} from the Hugging Face hub (or --local-models)` } : {}),
          ...config,
        });
      }
      writeJsonAtomic(path.join(tmp, 'scheduler', 'scheduler_config.json'), schedulerConfigToJSON(this.schedulerConfig));
      writeJsonAtomic(path.join(tmp, 'model_index.json'), this.modelIndex());
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
    const missing = ['vae', 'unet', index.conditioning === 'clip' ? 'text_encoder' : 'label_encoder', 'scheduler'].filter(
      (c) => !existsSync(path.join(dir, c)),
    );
    if (missing.length) throw new Error(`model folder ${dir} is incomplete: missing ${missing.map((m) => `${m}/`).join(', ')}`);
    const vae = AutoencoderKL.load(path.join(dir, 'vae'));
    const unet = UNet2DCondition.load(path.join(dir, 'unet'));
    let encoder: ConditionEncoder;
    try {
      if (index.conditioning === 'label') {
        const encDir = path.join(dir, 'label_encoder');
        const cfg = validateLabelEncoderConfig(readComponentConfig(encDir, 'label encoder'));
        const enc = new LabelEncoder(cfg, new Generator(0));
        loadComponentWeights(encDir, enc.params, undefined, 'label encoder');
        encoder = enc;
      } else {
        const encDir = path.join(dir, 'text_encoder');
        const cfg = validateClipTextEncoderConfig(readComponentConfig(encDir, 'text encoder'));
        // A model (or tokenizer) id written as a relative path is relative to the text_encoder
        // folder, so a pipeline folder can carry its own text model (e.g. modelId './clip').
        const relative = (id: string) => id.startsWith('./') || id.startsWith('../');
        if (relative(cfg.modelId)) cfg.modelId = path.resolve(encDir, cfg.modelId);
        if (cfg.tokenizerId !== undefined && relative(cfg.tokenizerId)) cfg.tokenizerId = path.resolve(encDir, cfg.tokenizerId);
        encoder = await loadClipTextEncoder(cfg, opts.clip);
      }
    } catch (e) {
      vae.dispose();
      unet.dispose();
      throw e;
    }
    const sched = parseSchedulerConfig(readJson(path.join(dir, 'scheduler', 'scheduler_config.json'), 'scheduler config'));
    const { _class_name, _version, vae: _v, unet: _u, text_encoder: _t, label_encoder: _l, scheduler: _s, ...info } = index;
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
    return resolved;
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
    const size = this.info.imageSize;
    const shape: [number, number, number, number] = [b, size / f, size / f, this.vae.config.latentChannels];

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
        blank = tf.tidy(() => this.inpaintingConditioning(tf.zeros([b, size, size, this.vae.config.imageChannels]), tf.ones([b, size, size, 1])));
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

export function readModelIndex(dir: string): ModelIndex {
  const file = path.join(dir, 'model_index.json');
  if (!existsSync(file)) throw new Error(`model folder ${dir} is incomplete: no model_index.json (is it a txt2img pipeline folder?)`);
  const idx = readJson(file, 'model index') as Partial<ModelIndex>;
  if (idx._class_name !== PIPELINE_CLASS_NAME) throw new Error(`${file}: _class_name must be '${PIPELINE_CLASS_NAME}', got ${JSON.stringify(idx._class_name)}`);
  if (idx._version !== PIPELINE_VERSION) throw new Error(`${file}: _version ${idx._version} is not supported (this txt2img reads version ${PIPELINE_VERSION})`);
  if (idx.conditioning !== 'clip' && idx.conditioning !== 'label')
    throw new Error(`${file}: conditioning must be 'clip' or 'label', got ${JSON.stringify(idx.conditioning)}`);
  if (typeof idx.conditioningDropout !== 'number' || idx.conditioningDropout < 0 || idx.conditioningDropout > 1) {
    throw new Error(`${file}: conditioningDropout must be a number in [0, 1], got ${JSON.stringify(idx.conditioningDropout)}`);
  }
  if (!Number.isInteger(idx.imageSize) || idx.imageSize! < 1)
    throw new Error(`${file}: imageSize must be a positive integer, got ${JSON.stringify(idx.imageSize)}`);
  return idx as ModelIndex;
}
