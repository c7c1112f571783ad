/**
 * The library's entry point, in the spirit of transformers.js' `pipeline()`: load a pipeline
 * folder once (the bundled model by default), then call the result with prompts to get PNG
 * images that carry their generation parameters, or tensors.
 */
import type * as tf from '@tensorflow/tfjs';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { currentBackend, initBackend } from '../backend/index.js';
import { tensorToBatch, batchImage, encodePngWithText } from '../image/convert.js';
import { type Runtime, type RuntimeChoice, RUNTIME_CHOICES, parseRuntimeName, resolveRuntime } from '../onnx/runtime.js';
import { resolveModel } from './hub.js';
import { Txt2ImgPipeline } from './pipeline.js';
import { type ImageRequest, generateImages } from './txt2img.js';

/** The folder holding this package's package.json, whether it runs from src/ (tsx) or dist/. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const file = path.join(dir, 'package.json');
    if (existsSync(file) && (JSON.parse(readFileSync(file, 'utf8')) as { name?: string }).name === 'txt2img') return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`cannot find the txt2img package folder above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** The bundled default model (`models/default` of the package). */
export function defaultModelDir(): string {
  return path.join(packageRoot(), 'models', 'default');
}

/**
 * A command's `--model` as a folder: absent, the bundled default (which must be there); a hub id
 * (org/name) that is not a local path, downloaded once into the cache; else the path as given.
 */
export async function modelFolder(model: string | undefined): Promise<string> {
  if (model !== undefined) return resolveModel(model);
  const dir = defaultModelDir();
  if (!existsSync(path.join(dir, 'model_index.json')))
    throw new Error(`no bundled default model at ${dir}; pass --model <pipeline folder> (train one with scripts/train.ts)`);
  return dir;
}

export interface TextToImageOptions {
  /** tfjs backend name (see initBackend); ignored when a backend is already running. */
  backend?: string;
  /** What computes the U-Net: 'auto' (default), 'tfjs' or 'onnx'. */
  runtime?: RuntimeChoice;
  /** A folder of local transformers.js models, for a model whose tokenizer is not inside it. */
  localModels?: string;
  /** Where start-up lines and warnings go (default: nowhere). */
  log?: (line: string) => void;
}

/** What a call may set; every field has the CLI's default. */
export type ImageOptions = Partial<Omit<ImageRequest, 'prompts'>>;

export interface GeneratedImage {
  /** The PNG file's bytes, with the `parameters` text chunk A1111 and `png-info` read. */
  png: Buffer;
  /** Its generation parameters (A1111's infotext). */
  parameters: string;
}

export interface TextToImage {
  /** One PNG per prompt (times `n`), in order. */
  (prompts: string | string[], options?: ImageOptions): Promise<GeneratedImage[]>;
  /** The same images as a tensor [B, H, W, C] in [-1, 1] (the caller disposes it). */
  tensors(prompts: string | string[], options?: ImageOptions): Promise<tf.Tensor4D>;
  readonly pipeline: Txt2ImgPipeline;
  readonly runtime: Runtime;
  dispose(): void;
}

const DEFAULTS = { negative: undefined, cfg: 7, steps: 25, sampler: 'ddim', eta: 0, seed: 0, n: 1 } as const;

/**
 * Loads a pipeline folder (default: the bundled model) on the tfjs backend (started here if none
 * runs yet) and returns a function that generates images from prompts:
 *
 *   const generate = await pipeline();
 *   const [image] = await generate('a smiling face', { cfg: 7, seed: 1 });
 *   writeFileSync('face.png', image.png);
 */
export async function pipeline(model: string = defaultModelDir(), options: TextToImageOptions = {}): Promise<TextToImage> {
  const log = options.log ?? (() => {});
  const choice = parseRuntimeName(RUNTIME_CHOICES, options.runtime ?? 'auto', 'runtime', 'U-Net runtime');
  const backend = currentBackend() ?? (await initBackend({ backend: options.backend, log }));
  const { runtime } = await resolveRuntime(choice, backend);
  const loaded = await Txt2ImgPipeline.load(model, { clip: options.localModels ? { localModelPath: options.localModels } : undefined });
  const request = (prompts: string | string[], o: ImageOptions): ImageRequest => {
    return { ...DEFAULTS, ...o, prompts: o.labels?.length ? [] : typeof prompts === 'string' ? [prompts] : prompts };
  };
  const tensors = async (prompts: string | string[], o: ImageOptions = {}) =>
    (await generateImages(loaded, request(prompts, o), { model, runtime, log })).images;
  const generate = async (prompts: string | string[], o: ImageOptions = {}): Promise<GeneratedImage[]> => {
    const { images, parameters } = await generateImages(loaded, request(prompts, o), { model, runtime, log });
    const batch = await tensorToBatch(images);
    images.dispose();
    return Promise.all(parameters.map(async (p, i) => ({ png: await encodePngWithText(batchImage(batch, i), { text: { parameters: p } }), parameters: p })));
  };
  return Object.assign(generate, { tensors, pipeline: loaded, runtime, dispose: () => loaded.dispose() });
}
