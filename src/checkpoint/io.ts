/**
 * Checkpoint I/O. A component folder is `config.json` + weights in safetensors; a pipeline folder
 * is `model_index.json` + one subfolder per component (diffusers' layout).
 *
 * Every write is atomic: data goes to a temporary name in the same folder, is fsynced, then
 * renamed over the target, so a crash mid-save leaves the previous file intact. Whole folders are
 * written under a temporary name and swapped in (see replaceDirAtomic).
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';
import { type NamedArray, ParamStore } from '../nn/params.js';
import { type EncodeSafetensorsOptions, decodeSafetensors, encodeSafetensors } from './safetensors.js';

export const CONFIG_NAME = 'config.json';
export const WEIGHTS_NAME = 'diffusion_pytorch_model.safetensors';
export const MODEL_INDEX_NAME = 'model_index.json';

function fsyncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic there.
  }
}

/** Writes data to `file` atomically (temp file in the same folder, fsync, rename, fsync folder). */
export function writeFileAtomic(file: string, data: Buffer | string): void {
  const dir = path.dirname(file);
  mkdirSync(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${Date.now().toString(36)}`);
  const fd = openSync(tmp, 'w');
  try {
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, file);
  fsyncDir(dir);
}

export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n');
}

export function readJson(file: string, what: string): unknown {
  if (!existsSync(file)) throw new Error(`${what}: ${file} does not exist`);
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${what}: ${file} is not valid JSON (${(e as Error).message})`);
  }
}

export function writeSafetensors(file: string, tensors: Map<string, NamedArray>, metadata: Record<string, string> = {}, opts: EncodeSafetensorsOptions = {}): void {
  writeFileAtomic(file, encodeSafetensors(tensors, metadata, opts));
}

export function readSafetensors(file: string): { tensors: Map<string, NamedArray>; metadata: Record<string, string> } {
  if (!existsSync(file)) throw new Error(`weights file ${file} does not exist`);
  return decodeSafetensors(readFileSync(file), file);
}

export interface SaveComponentOptions {
  /**
   * Element type of the weights file: 'F32' (default, exact) or 'F16' (half the size; every
   * value rounded to the nearest half float, which is what loading it gives back).
   */
  dtype?: EncodeSafetensorsOptions['dtype'];
}

/** Saves `config.json` and the store's weights into a component folder. */
export async function saveComponent(dir: string, config: object, store: ParamStore, weightsName = WEIGHTS_NAME, opts: SaveComponentOptions = {}): Promise<void> {
  const arrays = await store.toArrays();
  mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, weightsName), arrays, { format: 'pt' }, { dtype: opts.dtype });
  writeJsonAtomic(path.join(dir, CONFIG_NAME), config);
}

export function readComponentConfig(dir: string, what = 'component'): unknown {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`${what}: folder ${dir} does not exist`);
  return readJson(path.join(dir, CONFIG_NAME), `${what} config`);
}

/** Loads a component folder's weights into an existing store, validating names and shapes. */
export function loadComponentWeights(dir: string, store: ParamStore, weightsName = WEIGHTS_NAME, what = 'component'): void {
  const file = path.join(dir, weightsName);
  const { tensors } = readSafetensors(file);
  store.loadArrays(tensors, `${what} weights ${file}`);
}

/**
 * Builds a model from a component folder: validates `config.json` with `parse`, constructs the
 * model with `build`, then loads its weights (names and shapes checked). A model whose weights
 * do not load is disposed before the error propagates.
 */
export function loadComponent<C, M extends { store: ParamStore; dispose(): void }>(
  dir: string,
  what: string,
  parse: (raw: unknown) => C,
  build: (config: C) => M,
  weightsName = WEIGHTS_NAME,
): M {
  const model = build(parse(readComponentConfig(dir, what)));
  try {
    loadComponentWeights(dir, model.store, weightsName, what);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}

/**
 * Makes `tmpDir` (a fully written folder) become `finalDir`. An existing `finalDir` is moved
 * aside first and removed only after the swap; if the process dies between the two renames,
 * `recoverDir` restores the previous folder on the next start.
 */
export function replaceDirAtomic(tmpDir: string, finalDir: string): void {
  const old = `${finalDir}.old`;
  rmSync(old, { recursive: true, force: true });
  if (existsSync(finalDir)) renameSync(finalDir, old);
  renameSync(tmpDir, finalDir);
  fsyncDir(path.dirname(finalDir));
  rmSync(old, { recursive: true, force: true });
}

/** Restores `finalDir` from `finalDir.old` when a previous replaceDirAtomic was interrupted. */
export function recoverDir(finalDir: string): void {
  const old = `${finalDir}.old`;
  if (!existsSync(finalDir) && existsSync(old)) renameSync(old, finalDir);
  else if (existsSync(old)) rmSync(old, { recursive: true, force: true });
}

/** A temporary sibling folder name for writing a folder that replaceDirAtomic will swap in. */
export function tempDirFor(finalDir: string): string {
  return `${finalDir}.partial-${process.pid}-${Date.now().toString(36)}`;
}
