/**
 * Converts a pipeline folder to diffusers' format once (scripts/convert-pipeline.ts): loads it
 * through the component classes (which read either format) and saves it (which writes diffusers'),
 * keeping the top-level files that are not components (README.md, training_vocabulary.json, ...).
 */
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { readModelIndex } from './folder.js';
import { type LoadPipelineOptions, Txt2ImgPipeline } from './pipeline.js';

export interface ConvertResult {
  /** The format the folder was in. */
  from: 'diffusers' | 'txt2img-v1';
  out: string;
  /** Top-level files carried over as they were. */
  kept: string[];
}

export async function convertPipelineFolder(inDir: string, outDir = inDir, opts: LoadPipelineOptions = {}): Promise<ConvertResult> {
  const from = readModelIndex(inDir).format;
  // Read before saving: with outDir === inDir, the save replaces the folder.
  const extra = readdirSync(inDir)
    .filter((f) => f !== 'model_index.json' && !f.startsWith('.') && statSync(path.join(inDir, f)).isFile())
    .map((f) => ({ f, data: readFileSync(path.join(inDir, f)) }));
  const pipe = await Txt2ImgPipeline.load(inDir, opts);
  try {
    await pipe.save(outDir);
  } finally {
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
  return { from, out: outDir, kept };
}
