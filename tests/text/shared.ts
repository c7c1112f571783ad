/** Test helpers: where the real CLIP tokenizer lives, and a tiny random (NOT pretrained) model. */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeTinyClipModel, type WriteTinyClipResult } from '../../src/text/tiny-clip.js';
export { maxAbsDiff } from '../helpers.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * The shared transformers.js model folder: TXT2IMG_LOCAL_MODELS if set, else `../shared/models`
 * beside the repository (CI clones the repo with shared/ next to it).
 */
export function sharedModelsDir(): string {
  return path.resolve(process.env.TXT2IMG_LOCAL_MODELS || path.resolve(repoRoot, '../shared/models'));
}

export const CLIP_ID = 'Xenova/clip-vit-base-patch32';

export function clipTokenizerDir(): string {
  const dir = path.join(sharedModelsDir(), CLIP_ID);
  if (!existsSync(path.join(dir, 'tokenizer.json'))) {
    throw new Error(`the real CLIP tokenizer is not at ${dir}/tokenizer.json; set TXT2IMG_LOCAL_MODELS to a folder holding ${CLIP_ID}/`);
  }
  return dir;
}

/** Writes a tiny model into a fresh temp folder `<root>/<name>`; returns the root and a cleanup. */
export function makeTinyModel(
  name = 'tiny-random-clip',
  opts: { seed?: number; hidden?: number; layers?: number; heads?: number; quantizedCopy?: boolean } = {},
): { root: string; result: WriteTinyClipResult; cleanup: () => void } {
  const root = mkdtempSync(path.join(os.tmpdir(), 'txt2img-text-'));
  const result = writeTinyClipModel({ outDir: path.join(root, name), tokenizerDir: clipTokenizerDir(), ...opts });
  return { root, result, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

