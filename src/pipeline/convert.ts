/**
 * Converts a pipeline folder to diffusers' format once (scripts/convert-pipeline.ts): loads it
 * through the component classes (which read either format) and saves it (which writes diffusers'),
 * keeping the top-level files that are not components (README.md, training_vocabulary.json, ...).
 */
import { closeSync, existsSync, openSync, readFileSync, readSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { SafetensorsWriteDtype } from '../checkpoint/safetensors.js';
import { unetFromLegacy } from '../unet/legacy.js';
import { vaeFromLegacy } from '../vae/legacy.js';
import { readModelIndex } from './folder.js';
import { type LoadPipelineOptions, Txt2ImgPipeline } from './pipeline.js';

export interface ConvertResult {
  /** The format the folder was in. */
  from: 'diffusers' | 'txt2img-v1';
  out: string;
  /** Top-level files carried over as they were. */
  kept: string[];
}

/** The element type of a safetensors file's first tensor (the header alone is read). */
function firstDtype(file: string): string | undefined {
  if (!existsSync(file)) return undefined;
  const fd = openSync(file, 'r');
  try {
    const len = Buffer.alloc(8);
    readSync(fd, len, 0, 8, 0);
    const json = Buffer.alloc(Number(len.readBigUInt64LE(0)));
    readSync(fd, json, 0, json.length, 8);
    const header = JSON.parse(json.toString('utf8')) as Record<string, { dtype?: string }>;
    return Object.entries(header).find(([k]) => k !== '__metadata__')?.[1].dtype;
  } finally {
    closeSync(fd);
  }
}

/**
 * `dtype` of the written weights: default that of the source U-Net's (a float16 bundle stays
 * float16, its text encoder becoming F16 too).
 */
export async function convertPipelineFolder(
  inDir: string,
  outDir = inDir,
  opts: LoadPipelineOptions & { dtype?: SafetensorsWriteDtype } = {},
): Promise<ConvertResult & { dtype: SafetensorsWriteDtype }> {
  const from = readModelIndex(inDir).format;
  const dtype = opts.dtype ?? (firstDtype(path.join(inDir, 'unet', 'diffusion_pytorch_model.safetensors')) === 'F16' ? 'F16' : 'F32');
  // Read before saving: with outDir === inDir, the save replaces the folder.
  const extra = readdirSync(inDir)
    .filter((f) => f !== 'model_index.json' && !f.startsWith('.') && statSync(path.join(inDir, f)).isFile())
    .map((f) => ({ f, data: readFileSync(path.join(inDir, f)) }));
  const pipe = await Txt2ImgPipeline.load(inDir, opts);
  // A legacy U-Net / VAE (saved before the diffusers format) gets diffusers' numerics here, so the
  // converted folder computes in diffusers what it computes here (unet/legacy.ts, vae/legacy.ts).
  const unet = pipe.unet.config.legacy ? unetFromLegacy(pipe.unet) : pipe.unet;
  const vae = pipe.vae.config.legacy ? vaeFromLegacy(pipe.vae) : pipe.vae;
  const out = unet === pipe.unet && vae === pipe.vae ? pipe : new Txt2ImgPipeline(vae, unet, pipe.encoder, pipe.schedulerConfig, pipe.info);
  if (out !== pipe) out.trainingWords = pipe.trainingWords;
  try {
    await out.save(outDir, { dtype });
  } finally {
    if (unet !== pipe.unet) unet.dispose();
    if (vae !== pipe.vae) vae.dispose();
    pipe.dispose();
  }
  const kept: string[] = [];
  for (const { f, data } of extra) {
    const target = path.join(outDir, f);
    // Files the save wrote itself (training_vocabulary.json) are the new folder's.
    if (!existsSync(target)) {
      writeFileSync(target, data);
      kept.push(f);
    }
  }
  return { from, out: outDir, kept, dtype };
}
