/**
 * Weight layouts: how a model's parameters appear in a weights file when the file is not in our
 * own names and element layout (diffusers' `diffusion_pytorch_model.safetensors`). Our tensors
 * are channels-last (conv [kh, kw, in, out], linear [in, out]); PyTorch's are [out, in, kh, kw]
 * and [out, in]. A layout maps one tensor at a time, so a loader can read, convert and assign
 * tensors one by one.
 */
import type { NamedArray } from '../nn/params.js';

/**
 * How one tensor's elements are laid out in the file relative to ours:
 *   copy:           same layout (biases, norms)
 *   linear:         ours [in, out], file [out, in]
 *   conv:           ours [kh, kw, in, out], file [out, in, kh, kw]
 *   conv1x1-linear: ours [1, 1, in, out] (a 1x1 conv), file [out, in] (a Linear)
 */
export type WeightKind = 'copy' | 'linear' | 'conv' | 'conv1x1-linear';

export interface WeightEntry {
  /** Our parameter name (the ParamStore's). */
  name: string;
  /** The file's key. */
  key: string;
  kind: WeightKind;
}

/** Transposes a row-major array of `shape` by `perm` (output axis k is input axis perm[k]). */
function transpose(a: NamedArray, perm: number[]): NamedArray {
  const { shape, data } = a;
  const rank = shape.length;
  const outShape = perm.map((p) => shape[p]);
  const inStrides = new Array<number>(rank);
  let s = 1;
  for (let i = rank - 1; i >= 0; i--) {
    inStrides[i] = s;
    s *= shape[i];
  }
  const strides = perm.map((p) => inStrides[p]); // input stride of each output axis
  const out = new Float32Array(data.length);
  const idx = new Array<number>(rank).fill(0);
  let src = 0;
  for (let o = 0; o < out.length; o++) {
    out[o] = data[src];
    // Odometer over the output index, keeping src in step.
    for (let k = rank - 1; k >= 0; k--) {
      idx[k]++;
      src += strides[k];
      if (idx[k] < outShape[k]) break;
      src -= strides[k] * outShape[k];
      idx[k] = 0;
    }
  }
  return { shape: outShape, data: out };
}

const RANK: Record<WeightKind, [ours: number, file: number] | undefined> = {
  copy: undefined,
  linear: [2, 2],
  conv: [4, 4],
  'conv1x1-linear': [4, 2],
};

/** Our shape -> the file's shape for a kind. */
function fileShapeOf(kind: WeightKind, s: number[]): number[] {
  switch (kind) {
    case 'copy':
      return [...s];
    case 'linear':
      return [s[1], s[0]];
    case 'conv':
      return [s[3], s[2], s[0], s[1]];
    case 'conv1x1-linear':
      return [s[3], s[2]];
  }
}

/** A two-way table between our parameter names and a file's keys, one tensor at a time. */
export class WeightLayout {
  private readonly byName = new Map<string, WeightEntry>();
  private readonly byKey = new Map<string, WeightEntry>();

  constructor(
    /** Names the format in messages ('diffusers'). */
    readonly format: string,
    entries: Iterable<WeightEntry>,
  ) {
    for (const e of entries) {
      if (this.byName.has(e.name) || this.byKey.has(e.key)) throw new Error(`weight layout ${format}: '${e.name}' -> '${e.key}' is mapped twice`);
      this.byName.set(e.name, e);
      this.byKey.set(e.key, e);
    }
  }

  /** The file key of our parameter `name`. */
  key(name: string): string {
    const e = this.byName.get(name);
    if (!e) throw new Error(`weight layout ${this.format}: no file key for parameter '${name}'`);
    return e.key;
  }

  /** Our parameter name of a file key; undefined for a key the layout does not know. */
  name(key: string): string | undefined {
    return this.byKey.get(key)?.name;
  }

  /** The shape the file holds for our parameter `name` of shape `shape`. */
  fileShape(name: string, shape: number[]): number[] {
    const e = this.byName.get(name);
    return e ? fileShapeOf(e.kind, shape) : [...shape];
  }

  /** Our tensor -> the file's key and element layout. */
  toFile(name: string, array: NamedArray): { key: string; array: NamedArray } {
    const e = this.byName.get(name);
    if (!e) throw new Error(`weight layout ${this.format}: no file key for parameter '${name}'`);
    const s = array.shape;
    switch (e.kind) {
      case 'copy':
        return { key: e.key, array };
      case 'linear':
        return { key: e.key, array: transpose(array, [1, 0]) };
      case 'conv':
        return { key: e.key, array: transpose(array, [3, 2, 0, 1]) };
      case 'conv1x1-linear':
        return { key: e.key, array: transpose({ shape: [s[2], s[3]], data: array.data }, [1, 0]) };
    }
  }

  /**
   * A file tensor -> our name and element layout. The caller checks the shape first (a file
   * tensor of the wrong rank cannot be transposed): see `fileShape`.
   */
  fromFile(key: string, array: NamedArray): { name: string; array: NamedArray } {
    const e = this.byKey.get(key);
    if (!e) throw new Error(`weight layout ${this.format}: unknown key '${key}'`);
    const ranks = RANK[e.kind];
    if (ranks && array.shape.length !== ranks[1]) {
      throw new Error(`weight layout ${this.format}: '${key}' has rank ${array.shape.length}, expected ${ranks[1]}`);
    }
    const s = array.shape;
    switch (e.kind) {
      case 'copy':
        return { name: e.name, array };
      case 'linear':
        return { name: e.name, array: transpose(array, [1, 0]) };
      case 'conv':
        return { name: e.name, array: transpose(array, [2, 3, 1, 0]) };
      case 'conv1x1-linear': {
        const t = transpose(array, [1, 0]); // [in, out]
        return { name: e.name, array: { shape: [1, 1, s[1], s[0]], data: t.data } };
      }
    }
  }

  /**
   * Whether a file's keys are in this layout rather than in our own names: more of them are
   * this layout's keys than our names (a few names, such as `conv_in.weight`, are both).
   */
  matches(keys: Iterable<string>): boolean {
    let ours = 0;
    let theirs = 0;
    for (const k of keys) {
      if (this.byKey.has(k)) theirs++;
      if (this.byName.has(k)) ours++;
    }
    return theirs > ours;
  }
}
