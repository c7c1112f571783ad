/**
 * Checkpoint I/O. A component folder is `config.json` + weights in safetensors; a pipeline folder
 * is `model_index.json` + one subfolder per component (diffusers' layout). Every write is atomic
 * (./files.ts).
 */
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { NamedArray, ParamStore } from '../nn/params.js';
import type { WeightLayout } from './layout.js';
import { type EncodeSafetensorsOptions, SafetensorsReader, decodeSafetensors, encodeSafetensors } from './safetensors.js';
import { readJson, writeFileAtomic, writeJsonAtomic } from './files.js';

export const CONFIG_NAME = 'config.json';
export const WEIGHTS_NAME = 'diffusion_pytorch_model.safetensors';
export const MODEL_INDEX_NAME = 'model_index.json';

export function writeSafetensors(
  file: string,
  tensors: Map<string, NamedArray>,
  metadata: Record<string, string> = {},
  opts: EncodeSafetensorsOptions = {},
): void {
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
  /** Write the weights under this layout's keys and element layout (diffusers'); default our own. */
  layout?: WeightLayout;
}

/** Saves `config.json` and the store's weights into a component folder. */
export async function saveComponent(
  dir: string,
  config: object,
  store: ParamStore,
  weightsName = WEIGHTS_NAME,
  opts: SaveComponentOptions = {},
): Promise<void> {
  let arrays = await store.toArrays();
  const layout = opts.layout;
  if (layout) {
    arrays = new Map(
      [...arrays].map(([name, a]) => {
        const { key, array } = layout.toFile(name, a);
        return [key, array];
      }),
    );
  }
  mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, weightsName), arrays, { format: 'pt' }, { dtype: opts.dtype });
  writeJsonAtomic(path.join(dir, CONFIG_NAME), config);
}

export function readComponentConfig(dir: string, what = 'component'): unknown {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`${what}: folder ${dir} does not exist`);
  return readJson(path.join(dir, CONFIG_NAME), `${what} config`);
}

/**
 * Loads a component folder's weights into an existing store. Names and shapes are checked first
 * (from the header), then one tensor at a time is read and assigned (SafetensorsReader), so an F16
 * file is never held whole, nor as a float32 copy of the whole file. With a layout, a file in that
 * layout (detected from its keys) is mapped tensor by tensor; a file in our own names loads as it
 * is. This is the one place a layout is applied when reading.
 */
export function loadComponentWeights(dir: string, store: ParamStore, weightsName = WEIGHTS_NAME, what = 'component', layout?: WeightLayout): void {
  const file = path.join(dir, weightsName);
  if (!existsSync(file)) throw new Error(`weights file ${file} does not exist`);
  const label = `${what} weights ${file}`;
  const reader = SafetensorsReader.open(file);
  try {
    const shapes = reader.shapes();
    if (!layout?.matches(shapes.keys())) store.loadEach(shapes, (name) => reader.read(name).data, label);
    else {
      const read = (name: string) => {
        const key = layout.key(name);
        return layout.fromFile(key, reader.read(key)).array.data; // [file layout] -> ours
      };
      store.loadEach(shapes, read, label, layout);
    }
  } finally {
    reader.close();
  }
}

/**
 * Builds a model from a component folder: validates `config.json` with `parse`, constructs the
 * model with `build`, then loads its weights (names and shapes checked; `layout` of the built
 * model maps a file in another format, see loadComponentWeights). A model whose weights do not
 * load is disposed before the error propagates.
 */
export function loadComponent<C, M extends { store: ParamStore; dispose(): void }>(
  dir: string,
  what: string,
  parse: (raw: unknown) => C,
  build: (config: C) => M,
  weightsName = WEIGHTS_NAME,
  layout?: (model: M) => WeightLayout | undefined,
): M {
  const model = build(parse(readComponentConfig(dir, what)));
  try {
    loadComponentWeights(dir, model.store, weightsName, what, layout?.(model));
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}
