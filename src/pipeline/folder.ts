/**
 * A pipeline folder's own files in diffusers' format, and the earlier txt2img format still read:
 *   model_index.json     as StableDiffusionPipeline.save_pretrained writes it; our facts (conditioning,
 *                        dropout, image size, steps, notes) under `_txt2img`, which diffusers drops
 *                        (extract_init_dict ignores keys starting with '_'). A label-conditioned
 *                        pipeline is `Txt2ImgLabelPipeline` (diffusers has no class for it; its unet/,
 *                        vae/ and scheduler/ load one by one) with label_encoder/ in our format.
 *   scheduler/           scheduler_config.json in diffusers' keys (schedulers/diffusers.ts).
 *   text_encoder/        transformers' CLIPTextModel, tokenizer/ its CLIPTokenizer (text/clip-folder.ts).
 * Earlier format: model_index `Txt2ImgPipeline` version 1 with the facts at the top, camelCase
 * scheduler config, text_encoder/config.json naming an ONNX model folder (`modelId: './clip'`).
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { readJson, writeJsonAtomic } from '../checkpoint/files.js';
import type { SafetensorsWriteDtype } from '../checkpoint/safetensors.js';
import { type SchedulerConfig, parseSchedulerConfig } from '../schedulers/config.js';
import { parseDiffusersJSON, schedulerConfigFromDiffusers, schedulerConfigToDiffusers } from '../schedulers/diffusers.js';
import {
  CLIP_ONNX_FILE,
  CLIP_ONNX_STAMP,
  findClipWeights,
  hasClipTokenizerFiles,
  prepareClipOnnx,
  readClipTokenizerFiles,
  readOurClipOnnx,
  writeClipTextModel,
} from '../text/clip-folder.js';
import { type ClipLoadOptions, type ClipTextEncoder, loadClipTextEncoder, validateClipTextEncoderConfig } from '../text/clip.js';

/** diffusers' version at the reference commit (schedulers/diffusers.ts), written as `_diffusers_version`. */
export const DIFFUSERS_VERSION = '0.40.0.dev0';
export const SD_PIPELINE_CLASS = 'StableDiffusionPipeline';
/** Stable Diffusion pipeline classes whose folders we run (same components; inpainting by its U-Net). */
export const SD_PIPELINE_CLASSES = [SD_PIPELINE_CLASS, 'StableDiffusionImg2ImgPipeline', 'StableDiffusionInpaintPipeline'];
export const LABEL_PIPELINE_CLASS = 'Txt2ImgLabelPipeline';
/** The earlier format's class name and version. */
export const LEGACY_PIPELINE_CLASS = 'Txt2ImgPipeline';
export const LEGACY_PIPELINE_VERSION = 1;
/** The key of our facts in model_index.json, and its format version. */
export const TXT2IMG_KEY = '_txt2img';
export const TXT2IMG_FORMAT = 2;
/** Conditioning dropout assumed for a diffusers folder without `_txt2img` (Stable Diffusion's 10%). */
export const ASSUMED_DROPOUT = 0.1;

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

export interface PipelineIndex extends PipelineInfo {
  /** model_index.json's `_class_name`. */
  className: string;
  /** 'diffusers': this format; 'txt2img-v1': the earlier one (convert with scripts/convert-pipeline.ts). */
  format: 'diffusers' | 'txt2img-v1';
}

function isFile(p: string): boolean {
  return existsSync(p);
}

/** A component config's raw JSON (either format), for facts the index may lack. */
function rawConfig(dir: string, comp: string): Record<string, unknown> {
  const f = path.join(dir, comp, 'config.json');
  if (!isFile(f)) throw new Error(`model folder ${dir} is incomplete: no ${comp}/config.json`);
  return readJson(f, `${comp} config`) as Record<string, unknown>;
}

/**
 * The image size a diffusers folder generates: the U-Net's sample_size times the VAE's
 * downsampling, 2^(levels - 1) (diffusers' vae_scale_factor); our earlier keys are read too.
 */
export function folderImageSize(dir: string): number {
  const unet = rawConfig(dir, 'unet');
  const vae = rawConfig(dir, 'vae');
  const sample = unet.sample_size ?? unet.sampleSize;
  const size = Array.isArray(sample) ? sample[0] : sample;
  if (!Number.isInteger(size) || (size as number) < 1)
    throw new Error(`${path.join(dir, 'unet', 'config.json')}: sample_size must be a positive integer, got ${JSON.stringify(sample)}`);
  const blocks = vae.block_out_channels;
  const factor = Array.isArray(blocks) ? 2 ** (blocks.length - 1) : vae.downsampleFactor;
  if (!Number.isInteger(factor) || (factor as number) < 1)
    throw new Error(`${path.join(dir, 'vae', 'config.json')}: needs block_out_channels (a list) to know the VAE's downsampling`);
  return (size as number) * (factor as number);
}

/** Reads model_index.json in either format (see the file comment); checks our facts. */
export function readModelIndex(dir: string): PipelineIndex {
  const file = path.join(dir, 'model_index.json');
  if (!isFile(file)) throw new Error(`model folder ${dir} is incomplete: no model_index.json (is it a pipeline folder?)`);
  const idx = readJson(file, 'model index') as Record<string, unknown>;
  const cls = idx._class_name;
  let facts: Record<string, unknown>;
  let format: PipelineIndex['format'];
  let where: string;
  if (cls === LEGACY_PIPELINE_CLASS) {
    if (idx._version !== LEGACY_PIPELINE_VERSION)
      throw new Error(`${file}: _version ${JSON.stringify(idx._version)} is not supported (this txt2img reads version ${LEGACY_PIPELINE_VERSION})`);
    facts = idx;
    format = 'txt2img-v1';
    where = '';
  } else if (typeof cls === 'string' && (SD_PIPELINE_CLASSES.includes(cls) || cls === LABEL_PIPELINE_CLASS)) {
    format = 'diffusers';
    where = `${TXT2IMG_KEY}.`;
    // The component classes we can run (a text encoder in our earlier layout is ours).
    const allowed: Record<string, string[]> = {
      unet: ['UNet2DConditionModel'],
      vae: ['AutoencoderKL'],
      text_encoder: ['CLIPTextModel', 'CLIPTextModelWithProjection', 'ClipTextEncoder'],
      tokenizer: ['CLIPTokenizer', 'CLIPTokenizerFast'],
    };
    for (const [comp, classes] of Object.entries(allowed)) {
      const v = idx[comp];
      if (v === undefined || (Array.isArray(v) && v[1] === null)) continue;
      if (!Array.isArray(v) || !classes.includes(String(v[1]))) {
        throw new Error(`${file}: ${comp} is ${JSON.stringify(v)}; this txt2img runs ${classes.join(' or ')} there`);
      }
    }
    const ours = idx[TXT2IMG_KEY];
    if (ours !== undefined && (ours === null || typeof ours !== 'object' || Array.isArray(ours))) throw new Error(`${file}: ${TXT2IMG_KEY} must be an object`);
    if (ours === undefined) {
      if (cls === LABEL_PIPELINE_CLASS) throw new Error(`${file}: a ${LABEL_PIPELINE_CLASS} needs its ${TXT2IMG_KEY} facts`);
      // A folder diffusers wrote: Stable Diffusion's own facts.
      return {
        className: cls,
        format,
        conditioning: 'clip',
        conditioningDropout: ASSUMED_DROPOUT,
        imageSize: folderImageSize(dir),
        notes: [`a diffusers ${cls} folder: conditioning dropout not recorded, assumed ${ASSUMED_DROPOUT} (guidance on)`],
      };
    }
    facts = ours as Record<string, unknown>;
    if (facts.version !== TXT2IMG_FORMAT)
      throw new Error(`${file}: ${TXT2IMG_KEY}.version ${JSON.stringify(facts.version)} is not supported (this txt2img reads ${TXT2IMG_FORMAT})`);
  } else {
    throw new Error(
      `${file}: _class_name ${JSON.stringify(cls)} is not a pipeline this txt2img runs; allowed: ${[...SD_PIPELINE_CLASSES, LABEL_PIPELINE_CLASS, LEGACY_PIPELINE_CLASS].join(', ')}`,
    );
  }
  const conditioning = facts.conditioning;
  if (conditioning !== 'clip' && conditioning !== 'label')
    throw new Error(`${file}: ${where}conditioning must be 'clip' or 'label', got ${JSON.stringify(conditioning)}`);
  if (format === 'diffusers' && (conditioning === 'label') !== (cls === LABEL_PIPELINE_CLASS))
    throw new Error(`${file}: ${where}conditioning '${conditioning}' does not match _class_name ${cls}`);
  const d = facts.conditioningDropout;
  if (typeof d !== 'number' || d < 0 || d > 1) throw new Error(`${file}: ${where}conditioningDropout must be a number in [0, 1], got ${JSON.stringify(d)}`);
  const size = facts.imageSize;
  if (!Number.isInteger(size) || (size as number) < 1) throw new Error(`${file}: ${where}imageSize must be a positive integer, got ${JSON.stringify(size)}`);
  const out: PipelineIndex = { className: cls as string, format, conditioning, conditioningDropout: d, imageSize: size as number };
  if (facts.trainedSteps !== undefined) out.trainedSteps = facts.trainedSteps as number;
  if (facts.notes !== undefined) out.notes = facts.notes as string[];
  return out;
}

/** How the text side of a folder is written: transformers' CLIPTextModel, or our earlier layout. */
export type TextEncoderLayout = 'clip-model' | 'legacy-clip' | 'label';

/** model_index.json for `info`, as save_pretrained writes it (keys sorted, as diffusers sorts them). */
export function modelIndexJson(info: PipelineInfo, schedulerClass: string, text: TextEncoderLayout): Record<string, unknown> {
  const facts: Record<string, unknown> = {
    version: TXT2IMG_FORMAT,
    conditioning: info.conditioning,
    conditioningDropout: info.conditioningDropout,
    imageSize: info.imageSize,
  };
  if (info.trainedSteps !== undefined) facts.trainedSteps = info.trainedSteps;
  if (info.notes?.length) facts.notes = info.notes;
  const idx: Record<string, unknown> = {
    _class_name: info.conditioning === 'label' ? LABEL_PIPELINE_CLASS : SD_PIPELINE_CLASS,
    _diffusers_version: DIFFUSERS_VERSION,
    [TXT2IMG_KEY]: facts,
    scheduler: ['diffusers', schedulerClass],
    unet: ['diffusers', 'UNet2DConditionModel'],
    vae: ['diffusers', 'AutoencoderKL'],
  };
  if (text === 'label') idx.label_encoder = ['txt2img', 'LabelEncoder'];
  else {
    Object.assign(idx, {
      feature_extractor: [null, null],
      image_encoder: [null, null],
      requires_safety_checker: false,
      safety_checker: [null, null],
      text_encoder: text === 'clip-model' ? ['transformers', 'CLIPTextModel'] : ['txt2img', 'ClipTextEncoder'],
      tokenizer: ['transformers', 'CLIPTokenizer'],
    });
  }
  return Object.fromEntries(
    Object.keys(idx)
      .sort()
      .map((k) => [k, idx[k]]),
  );
}

/**
 * scheduler/scheduler_config.json in either format. A diffusers class we do not implement (e.g.
 * SD-1.5's PNDMScheduler) is a warning naming it; its noise schedule is then read as DDIM's, and
 * the sampler is what generation asks for (--sampler, default ddim).
 */
export function readSchedulerFolder(dir: string, warn: (m: string) => void = (m) => console.error(m)): SchedulerConfig {
  const file = path.join(dir, 'scheduler', 'scheduler_config.json');
  if (!isFile(file)) throw new Error(`model folder ${dir} is incomplete: no scheduler/scheduler_config.json`);
  let raw: Record<string, unknown>;
  try {
    raw = parseDiffusersJSON(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`);
  }
  try {
    if (raw._class_name === undefined) return parseSchedulerConfig(raw);
    try {
      return schedulerConfigFromDiffusers(raw);
    } catch (e) {
      if (!/^diffusers scheduler '.*' is not implemented/.test((e as Error).message)) throw e;
      warn(
        `warning: ${file}: scheduler class ${String(raw._class_name)} is not implemented here; its noise schedule is read as DDIMScheduler's and images are sampled with the sampler asked for (--sampler, default ddim)`,
      );
      return schedulerConfigFromDiffusers(raw, { type: 'ddim' });
    }
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`);
  }
}

/** scheduler_config.json's content for a config (diffusers' keys and version). */
export function schedulerFolderJson(config: SchedulerConfig): Record<string, unknown> {
  const d = schedulerConfigToDiffusers(config);
  return { _class_name: d._class_name, _diffusers_version: DIFFUSERS_VERSION, ...d };
}

/** Whether a text_encoder/config.json is transformers' (CLIPTextConfig / CLIPConfig) rather than our earlier one. */
export function isTransformersConfig(cfg: Record<string, unknown>): boolean {
  return cfg.model_type !== undefined || cfg.architectures !== undefined;
}

export interface TextEncoderLoadOptions {
  clip?: ClipLoadOptions;
  /** Where the one-time ONNX conversion goes when text_encoder/ is read-only (default ~/.cache/txt2img). */
  cacheDir?: string;
  log?: (line: string) => void;
}

/**
 * Loads a folder's CLIP text encoder: transformers' CLIPTextModel in text_encoder/ (converted to
 * ONNX once) with the tokenizer of tokenizer/, or our earlier text_encoder/config.json.
 */
export async function loadTextEncoderFolder(dir: string, opts: TextEncoderLoadOptions = {}): Promise<ClipTextEncoder> {
  // Absolute: transformers.js reads a relative model id as one under its own models folder.
  const encDir = path.resolve(dir, 'text_encoder');
  const raw = rawConfig(dir, 'text_encoder');
  if (!isTransformersConfig(raw)) {
    const cfg = validateClipTextEncoderConfig(raw);
    // A model (or tokenizer) id written as a relative path is relative to the text_encoder
    // folder, so a pipeline folder can carry its own text model (e.g. modelId './clip').
    const relative = (id: string) => id.startsWith('./') || id.startsWith('../');
    if (relative(cfg.modelId)) cfg.modelId = path.resolve(encDir, cfg.modelId);
    if (cfg.tokenizerId !== undefined && relative(cfg.tokenizerId)) cfg.tokenizerId = path.resolve(encDir, cfg.tokenizerId);
    return loadClipTextEncoder(cfg, opts.clip);
  }
  const tokDir = path.resolve(dir, 'tokenizer');
  if (!hasClipTokenizerFiles(tokDir)) throw new Error(`model folder ${dir} is incomplete: ${tokDir} has neither tokenizer.json nor vocab.json + merges.txt`);
  const prepared = prepareClipOnnx(encDir, { cacheDir: opts.cacheDir, log: opts.log });
  const textCfg = (raw.text_config ?? raw) as Record<string, unknown>;
  const maxPos = typeof textCfg.max_position_embeddings === 'number' ? textCfg.max_position_embeddings : 77;
  const tokMax = readClipTokenizerFiles(tokDir).tokenizerConfig.model_max_length;
  // Tokenizers without a limit store a huge model_max_length; the position table bounds it.
  const maxLength = typeof tokMax === 'number' && tokMax >= 2 && tokMax < maxPos ? tokMax : maxPos;
  const enc = await loadClipTextEncoder({ modelId: prepared.modelDir, tokenizerId: tokDir, quantized: prepared.quantized, maxLength }, opts.clip);
  enc.sourceFolder = encDir;
  return enc;
}

const TOKENIZER_COPY = ['tokenizer.json', 'tokenizer_config.json', 'vocab.json', 'merges.txt', 'special_tokens_map.json', 'LICENSE-openai-clip'];

function copyFiles(from: string, to: string, files: string[]): void {
  for (const f of files) {
    if (!isFile(path.join(from, f))) continue;
    mkdirSync(path.dirname(path.join(to, f)), { recursive: true });
    copyFileSync(path.join(from, f), path.join(to, f));
  }
}

/**
 * Writes a CLIP encoder into `<dir>/text_encoder` and `<dir>/tokenizer`: as transformers'
 * CLIPTextModel when its weights are known (loaded from such a folder, or a graph tiny-clip.ts
 * wrote), else in our earlier layout (an exported hub model, whose graph cannot be named back;
 * diffusers cannot load that folder). `dtype` is that of newly written weights (a CLIPTextModel
 * folder loaded from is copied as it is). Returns which.
 */
export function saveTextEncoderFolder(dir: string, enc: ClipTextEncoder, dtype: SafetensorsWriteDtype = 'F32'): TextEncoderLayout {
  const encOut = path.join(dir, 'text_encoder');
  const tokFrom = enc.tokenizerLocation.localDir;
  const tokenizer = hasClipTokenizerFiles(tokFrom);
  if (enc.sourceFolder && tokenizer) {
    const weights = findClipWeights(enc.sourceFolder);
    const files = ['config.json', ...(weights ? [path.basename(weights)] : [])];
    // Its conversion travels along (valid: the stamp names the weights' hash), or a shipped ONNX model.
    if (isFile(path.join(enc.location.localDir, CLIP_ONNX_FILE))) {
      copyFiles(enc.location.localDir, encOut, [CLIP_ONNX_FILE, CLIP_ONNX_STAMP]);
    }
    copyFiles(enc.sourceFolder, encOut, files);
    copyFiles(tokFrom, path.join(dir, 'tokenizer'), TOKENIZER_COPY);
    return 'clip-model';
  }
  const onnx = path.join(enc.location.localDir, enc.quantized ? 'onnx/text_model_quantized.onnx' : CLIP_ONNX_FILE);
  const ours = tokenizer && isFile(onnx) && isFile(path.join(enc.location.localDir, 'config.json')) ? readOurClipOnnx(enc.location.localDir, onnx) : undefined;
  if (ours) {
    const hf = readJson(path.join(enc.location.localDir, 'config.json'), 'text model config') as Record<string, unknown>;
    const notes: Record<string, unknown> = {};
    if (hf._txt2img_note !== undefined) notes._txt2img_note = hf._txt2img_note;
    if (hf._txt2img_generator && typeof hf._txt2img_generator === 'object') {
      // How the weights were drawn; their layout is now transformers' ([out, in]), so that note goes.
      const { weightLayout: _w, ...generator } = hf._txt2img_generator as Record<string, unknown>;
      notes._txt2img_generator = generator;
    }
    writeClipTextModel(encOut, ours.weights, ours.config, notes, dtype);
    copyFiles(tokFrom, path.join(dir, 'tokenizer'), TOKENIZER_COPY);
    return 'clip-model';
  }
  const { config, embedded } = enc.embedFiles(dir);
  const hub = [
    !embedded.model && `the text model '${config.modelId}'`,
    !embedded.tokenizer && `the tokenizer '${config.tokenizerId ?? config.modelId}'`,
  ].filter(Boolean);
  writeJsonAtomic(path.join(encOut, 'config.json'), {
    ...(hub.length ? { _comment: `${hub.join(' and ')} load${hub.length === 1 ? 's' : ''} from the Hugging Face hub (or --local-models)` } : {}),
    ...config,
  });
  return 'legacy-clip';
}
