/** Test helpers: where the real CLIP tokenizer lives, and a tiny random (NOT pretrained) model. */
import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeTinyClipModel, type WriteTinyClipResult } from '../../src/text/tiny-clip.js';
export { maxAbsDiff } from '../helpers.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export const CLIP_ID = 'Xenova/clip-vit-base-patch32';

/** The real CLIP tokenizer, as the bundled model carries it (models/default/tokenizer). */
export function clipTokenizerDir(): string {
  return path.join(repoRoot, 'models', 'default', 'tokenizer');
}

let localLayout: string | undefined;

/**
 * A transformers.js local model folder holding `Xenova/clip-vit-base-patch32/` (its tokenizer):
 * TXT2IMG_LOCAL_MODELS if set, else a temp folder made once from the bundled tokenizer, so the
 * tests need nothing outside the repository.
 */
export function sharedModelsDir(): string {
  if (process.env.TXT2IMG_LOCAL_MODELS) return path.resolve(process.env.TXT2IMG_LOCAL_MODELS);
  if (!localLayout || !existsSync(path.join(localLayout, CLIP_ID, 'tokenizer.json'))) {
    localLayout = mkdtempSync(path.join(os.tmpdir(), 'txt2img-models-'));
    cpSync(clipTokenizerDir(), path.join(localLayout, CLIP_ID), { recursive: true });
  }
  return localLayout;
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
