/**
 * Our side of the SD-1.5-size benchmark (scripts/bench-sd15.ts; the diffusers peer is
 * scripts/bench/sd15_peer.py): the parts of a 512x512 text-to-image run at Stable Diffusion 1.5's
 * shapes with seeded RANDOM weights (speed does not depend on the values), each timed alone:
 *   unet  one guided denoising step: the U-Net at batch 2, latents [2, 64, 64, 4], the
 *         cross-attention K/V of a [2, 77, 768] context precomputed once (as sampling does), on
 *         the sampling runtime (onnxruntime-node, traced from the tfjs U-Net; or tfjs).
 *   vae   one decode of [1, 64, 64, 4] latents to a 512x512 image (tfjs, as the pipeline decodes).
 *   text  one encode of [2, 77] token ids by a CLIP ViT-L/14-size text model (transformers.js on
 *         onnxruntime, as the pipeline encodes), written as ONNX with random weights first.
 * `scale: 'tiny'` runs the same code at toy sizes (tests, a quick check of the plumbing).
 */
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OnnxUNet } from '../onnx/unet.js';
import type { Runtime } from '../onnx/runtime-choice.js';
import { Generator } from '../random/generator.js';
import { writeTinyClipModel } from '../text/tiny-clip.js';
import type { UNetConfigInput } from '../unet/config.js';
import { UNet2DCondition } from '../unet/unet2d-condition.js';
import { AutoencoderKL } from '../vae/autoencoder-kl.js';
import type { VaeConfigInput } from '../vae/config.js';

export const SD15_PARTS = ['unet', 'vae', 'text'] as const;
export type Sd15Part = (typeof SD15_PARTS)[number];
export const SD15_SCALES = ['sd15', 'tiny'] as const;
export type Sd15Scale = (typeof SD15_SCALES)[number];

/** SD-1.5's UNet2DConditionModel (runwayml/stable-diffusion-v1-5 unet/config.json) in our keys. */
export const SD15_UNET: UNetConfigInput = {
  inChannels: 4,
  sampleSize: 64,
  channels: [320, 640, 1280, 1280],
  resBlocksPerLevel: 2,
  attentionLevels: [true, true, true, false],
  attentionHeads: 8,
  contextDim: 768,
  contextLength: 77,
  timeEmbedDim: 1280,
  groupNormGroups: 32,
};

/**
 * SD-1.5's AutoencoderKL decoder. diffusers' decoder runs layers_per_block + 1 = 3 ResBlocks per
 * level; ours runs resBlocksPerLevel, so 3 here (our encoder, not timed, then has one more than SD's).
 */
export const SD15_VAE: VaeConfigInput = {
  imageChannels: 3,
  channels: [128, 256, 512, 512],
  resBlocksPerLevel: 3,
  latentChannels: 4,
  downsampleFactor: 8,
  groupNormGroups: 32,
  midAttention: true,
  scalingFactor: 0.18215,
};

/** CLIP ViT-L/14's text tower (SD-1.5's text encoder). */
export const SD15_TEXT = { hidden: 768, layers: 12, heads: 12, intermediate: 3072, projectionDim: 768 };

const TINY_UNET: UNetConfigInput = {
  ...SD15_UNET,
  sampleSize: 8,
  channels: [32, 64],
  resBlocksPerLevel: 1,
  attentionLevels: [true, false],
  attentionHeads: 2,
  contextDim: 32,
  contextLength: 8,
  timeEmbedDim: 64,
  groupNormGroups: 8,
};
const TINY_VAE: VaeConfigInput = { ...SD15_VAE, channels: [16, 32, 32], resBlocksPerLevel: 1, downsampleFactor: 4, groupNormGroups: 8 };
const TINY_TEXT = { hidden: 32, layers: 1, heads: 2, intermediate: 64, projectionDim: 32 };

/**
 * A Generator for building benchmark-only weights quickly: a block of 2^20 seeded uniform draws
 * (the project's Generator) reused cyclically from a moving offset, scaled per request. Drawing
 * 860M values one by one takes minutes on a loaded 2-core host, and the speed of a forward pass
 * does not depend on the values (none are zero or subnormal here). Not for anything but speed.
 */
export class BlockGenerator extends Generator {
  private readonly block: Float32Array;
  private at = 0;

  constructor(seed: number) {
    super(seed);
    this.block = new Generator(seed).uniformArray(1 << 20);
  }

  private fill(n: number, map: (u: number) => number): Float32Array {
    const out = new Float32Array(n);
    const b = this.block;
    for (let i = 0; i < n; i++) out[i] = map(b[(this.at + i) & (b.length - 1)]);
    this.at = (this.at + n + 7919) & (b.length - 1);
    return out;
  }

  override uniformArray(n: number, lo = 0, hi = 1): Float32Array {
    return this.fill(n, (u) => lo + (hi - lo) * u);
  }

  /** Normal-shaped enough for timing: a sum of uniforms would cost more; the inverse-CDF logit is cheap. */
  override normalArray(n: number): Float32Array {
    return this.fill(n, (u) => 0.5513 * Math.log((u + 1e-7) / (1 - u + 1e-7)));
  }
}

export interface Sd15Options {
  steps: number;
  warmup: number;
  seed: number;
  scale: Sd15Scale;
  /** unet: what computes the steps (the resolved sampling runtime). */
  runtime: Runtime;
  /** text: a folder with CLIP's tokenizer files (copied into the generated model). */
  tokenizerDir: string;
}

/** What one part measured (seconds); `firstS` includes the one-time costs of its first call. */
export interface Sd15PartResult {
  part: Sd15Part;
  params: number;
  /** Building the model: random init by BlockGenerator (unet, vae), writing the ONNX model (text). */
  initS: number;
  /** unet: the first step (trace + ONNX export + session + one step); text: load + first encode. */
  firstS?: number;
  warmupS: number[];
  /** unet: timed steps; vae: the decode; text: timed encodes. */
  timesS: number[];
  runtime?: string;
}

const seconds = (t0: number): number => (performance.now() - t0) / 1000;
/** A progress line on stderr (the result goes to stdout as JSON). */
const progress = (line: string): void => {
  process.stderr.write(`  [${new Date().toISOString().slice(11, 19)}] ${line}\n`);
};

export async function benchSd15Part(part: Sd15Part, o: Sd15Options): Promise<Sd15PartResult> {
  if (part === 'unet') return benchUNet(o);
  if (part === 'vae') return benchVae(o);
  return benchText(o);
}

async function benchUNet(o: Sd15Options): Promise<Sd15PartResult> {
  const cfg = o.scale === 'tiny' ? TINY_UNET : SD15_UNET;
  const rng = new BlockGenerator(o.seed);
  let t0 = performance.now();
  // Built in tfjs' plain-JavaScript 'cpu' backend when onnxruntime computes: the weights then
  // never fill the wasm heap (4 GB at most), and OnnxUNet traces them from there one by one.
  const active = tf.getBackend();
  if (o.runtime === 'onnx') await tf.setBackend('cpu');
  let unet: UNet2DCondition;
  try {
    unet = new UNet2DCondition(cfg, rng);
  } finally {
    await tf.setBackend(active);
  }
  const initS = seconds(t0);
  progress(`unet: built (${unet.store.numParams()} parameters, random init) in ${initS.toFixed(1)} s`);
  const s = cfg.sampleSize;
  const latents = tf.tensor4d(rng.normalArray(2 * s * s * cfg.inChannels), [2, s, s, cfg.inChannels]); // [2, h, w, 4]
  const context = tf.tensor3d(rng.normalArray(2 * cfg.contextLength * cfg.contextDim), [2, cfg.contextLength, cfg.contextDim]); // [2, 77, 768]
  const onnx = o.runtime === 'onnx' ? new OnnxUNet(unet) : undefined;
  const cache = unet.precomputeContext(context);
  const step = async (i: number): Promise<number> => {
    const t = tf.tensor1d([999 - 40 * i, 999 - 40 * i]); // [2]
    const start = performance.now();
    const eps = onnx ? await onnx.apply(latents, t, cache) : unet.apply(latents, t, cache);
    await eps.data(); // the tfjs runtime computes lazily on some backends: wait for the values
    const took = seconds(start);
    eps.dispose();
    t.dispose();
    return took;
  };
  try {
    t0 = performance.now();
    await step(0);
    const firstS = seconds(t0);
    progress(`unet: first step (trace + export + session + step) ${firstS.toFixed(1)} s`);
    const warmupS: number[] = [];
    for (let i = 1; i < o.warmup; i++) warmupS.push(await step(i));
    const timesS: number[] = [];
    for (let i = 0; i < o.steps; i++) {
      timesS.push(await step(o.warmup + i));
      progress(`unet: step ${i + 1}/${o.steps} ${timesS[i].toFixed(1)} s`);
    }
    return { part: 'unet', params: unet.store.numParams(), initS, firstS, warmupS, timesS, runtime: o.runtime };
  } finally {
    onnx?.dispose();
    cache.dispose();
    tf.dispose([latents, context]);
    unet.dispose();
  }
}

async function benchVae(o: Sd15Options): Promise<Sd15PartResult> {
  const cfg = o.scale === 'tiny' ? TINY_VAE : SD15_VAE;
  const rng = new BlockGenerator(o.seed);
  let t0 = performance.now();
  const vae = new AutoencoderKL(cfg, rng);
  const initS = seconds(t0);
  const side = o.scale === 'tiny' ? 8 : 64;
  const z = tf.tensor4d(rng.normalArray(side * side * cfg.latentChannels), [1, side, side, cfg.latentChannels]); // [1, 64, 64, 4]
  try {
    t0 = performance.now();
    const image = vae.decodeLatents(z); // [1, 512, 512, 3]
    await image.data();
    const decodeS = seconds(t0);
    image.dispose();
    return { part: 'vae', params: decoderParams(vae), initS, warmupS: [], timesS: [decodeS] };
  } finally {
    z.dispose();
    vae.dispose();
  }
}

function decoderParams(vae: AutoencoderKL): number {
  let n = 0;
  for (const [name, v] of vae.store.entries()) if (name.startsWith('decoder.')) n += v.size;
  return n;
}

interface TjsModel {
  (inputs: Record<string, unknown>): Promise<Record<string, { dims: number[] }>>;
  dispose(): Promise<unknown>;
}

async function benchText(o: Sd15Options): Promise<Sd15PartResult> {
  const size = o.scale === 'tiny' ? TINY_TEXT : SD15_TEXT;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'txt2img-sd15-clip-'));
  try {
    const modelDir = path.join(dir, 'clip-l-random');
    let t0 = performance.now();
    const written = writeTinyClipModel({ ...size, seed: o.seed, tokenizerDir: o.tokenizerDir, outDir: modelDir, quantizedCopy: false });
    const initS = seconds(t0);
    const tjs = await import('@xenova/transformers');
    Object.assign(tjs.env, { localModelPath: dir, allowRemoteModels: false, allowLocalModels: true, useFSCache: false });
    const rng = new Generator(o.seed);
    const ids = Array.from({ length: 2 * 77 }, (_, i) => (i % 77 === 76 ? 49407 : Math.floor(rng.uniformArray(1, 0, 49406)[0])));
    const input = new tjs.Tensor('int64', BigInt64Array.from(ids.map((v) => BigInt(v))), [2, 77]);
    t0 = performance.now();
    const model = (await tjs.CLIPTextModelWithProjection.from_pretrained('clip-l-random', { quantized: false, local_files_only: true })) as unknown as TjsModel;
    try {
      const encode = async (): Promise<number> => {
        const start = performance.now();
        const out = await model({ input_ids: input });
        if (out.last_hidden_state.dims[2] !== size.hidden) throw new Error(`text model: hidden size ${out.last_hidden_state.dims[2]}, expected ${size.hidden}`);
        return seconds(start);
      };
      await encode();
      const firstS = seconds(t0);
      const warmupS: number[] = [];
      for (let i = 1; i < o.warmup; i++) warmupS.push(await encode());
      const timesS: number[] = [];
      for (let i = 0; i < o.steps; i++) timesS.push(await encode());
      return { part: 'text', params: written.numParams, initS, firstS, warmupS, timesS };
    } finally {
      await model.dispose();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
