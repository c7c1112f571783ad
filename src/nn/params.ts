/**
 * Parameters: named tf.Variables owned by a ParamStore.
 *
 * Our dotted names (`down.0.res.1.conv1.weight`) are the keys of the safetensors file, the
 * optimizer state and the EMA shadow. tfjs' own variable names are auto-generated and never
 * shown, so two models (or a model and its EMA copy) can coexist in one process.
 */
import * as tf from '@tensorflow/tfjs';
import type { Generator } from '../random/generator.js';

export type Init = { kind: 'zeros' } | { kind: 'ones' } | { kind: 'normal'; std: number } | { kind: 'uniform'; limit: number };

export const zeros: Init = { kind: 'zeros' };
export const ones: Init = { kind: 'ones' };

/** PyTorch's default for Linear/Conv weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
export function fanInUniform(fanIn: number): Init {
  return { kind: 'uniform', limit: 1 / Math.sqrt(fanIn) };
}

export interface NamedArray {
  shape: number[];
  data: Float32Array;
}

function initData(shape: number[], init: Init, rng: Generator): Float32Array {
  const n = tf.util.sizeFromShape(shape);
  switch (init.kind) {
    case 'zeros':
      return new Float32Array(n);
    case 'ones':
      return new Float32Array(n).fill(1);
    case 'normal': {
      const d = rng.normalArray(n);
      for (let i = 0; i < n; i++) d[i] *= init.std;
      return d;
    }
    case 'uniform':
      return rng.uniformArray(n, -init.limit, init.limit);
  }
}

/**
 * How a file names and shapes a store's parameters (checkpoint/layout.ts's WeightLayout for
 * diffusers' files): our name -> its key and shape, and back from a key (undefined: unknown).
 */
export interface ParamNaming {
  key(name: string): string;
  name(key: string): string | undefined;
  fileShape(name: string, shape: number[]): number[];
}

/** Our own files: names and shapes as they are in the store. */
const AS_STORED: ParamNaming = { key: (name) => name, name: (key) => key, fileShape: (_name, shape) => shape };

export class ParamStore {
  private readonly vars = new Map<string, tf.Variable>();
  /** A view shares another store's variables and must not dispose them. */
  private readonly isView: boolean;

  constructor(isView = false) {
    this.isView = isView;
  }

  /**
   * A view over several stores with prefixed names (`unet.` + name, `label_encoder.` + name),
   * so one optimizer / EMA / gradient call covers components trained together.
   */
  static union(parts: Record<string, ParamStore>): ParamStore {
    const view = new ParamStore(true);
    for (const [prefix, store] of Object.entries(parts)) {
      for (const [name, v] of store.entries()) view.vars.set(`${prefix}.${name}`, v);
    }
    return view;
  }

  /** A new store holding copies of another store's values (EMA shadows, frozen snapshots). */
  static copyOf(other: ParamStore, trainable = false): ParamStore {
    const copy = new ParamStore();
    for (const [name, v] of other.entries())
      copy.vars.set(
        name,
        tf.tidy(() => tf.variable(v.clone(), trainable)),
      );
    return copy;
  }

  add(name: string, shape: number[], init: Init, rng: Generator, trainable = true): tf.Variable {
    if (this.vars.has(name)) throw new Error(`parameter '${name}' is defined twice`);
    if (shape.some((d) => !Number.isInteger(d) || d < 1)) {
      throw new Error(`parameter '${name}': shape must be positive integers, got [${shape.join(', ')}]`);
    }
    const v = tf.tidy(() => tf.variable(tf.tensor(initData(shape, init, rng), shape, 'float32'), trainable));
    this.vars.set(name, v);
    return v;
  }

  get(name: string): tf.Variable {
    const v = this.vars.get(name);
    if (!v) throw new Error(`no parameter named '${name}'`);
    return v;
  }

  has(name: string): boolean {
    return this.vars.has(name);
  }

  names(): string[] {
    return [...this.vars.keys()];
  }

  entries(): [string, tf.Variable][] {
    return [...this.vars.entries()];
  }

  get size(): number {
    return this.vars.size;
  }

  numParams(): number {
    let n = 0;
    for (const v of this.vars.values()) n += v.size;
    return n;
  }

  /** Copies every parameter out of the backend (for saving). */
  async toArrays(): Promise<Map<string, NamedArray>> {
    const out = new Map<string, NamedArray>();
    for (const [name, v] of this.vars) out.set(name, { shape: [...v.shape], data: (await v.data()) as Float32Array });
    return out;
  }

  /**
   * Assigns values from named arrays. Every parameter must be present with its exact shape and
   * no unknown names may remain; otherwise nothing is assigned and the error lists the problems.
   */
  loadArrays(arrays: Map<string, NamedArray>, what = 'checkpoint'): void {
    const problems: string[] = [];
    for (const [name, v] of this.vars) {
      const a = arrays.get(name);
      if (!a) problems.push(`missing '${name}' [${v.shape.join(', ')}]`);
      else if (a.shape.length !== v.shape.length || a.shape.some((d, i) => d !== v.shape[i])) {
        problems.push(`'${name}' has shape [${a.shape.join(', ')}], the model expects [${v.shape.join(', ')}]`);
      } else if (a.data.length !== v.size) problems.push(`'${name}' has ${a.data.length} values, expected ${v.size}`);
      else {
        const bad = nonFinite(name, a.data);
        if (bad) problems.push(bad);
      }
    }
    for (const name of arrays.keys()) if (!this.vars.has(name)) problems.push(`unexpected '${name}'`);
    throwProblems(problems, what);
    for (const [name, v] of this.vars) {
      const a = arrays.get(name)!;
      tf.tidy(() => v.assign(tf.tensor(a.data, a.shape, 'float32')));
    }
  }

  /**
   * As loadArrays, one tensor at a time: names and shapes are checked first (`shapes`, e.g. a
   * safetensors header, keyed and shaped as `naming` says the file holds them: default as they
   * are), then each parameter's values are fetched with `read(name)` in our layout, checked and
   * assigned before the next is read, so one tensor's values at most are on the host at once.
   * A non-finite value stops the load with an error naming it; the parameters assigned before
   * it keep their new values (loadComponent disposes such a model).
   */
  loadEach(shapes: Map<string, number[]>, read: (name: string) => Float32Array, what = 'checkpoint', naming: ParamNaming = AS_STORED): void {
    throwProblems(this.shapeProblems(shapes, naming), what);
    for (const [name, v] of this.vars) {
      const data = read(name);
      if (data.length !== v.size) throwProblems([`'${name}' has ${data.length} values, expected ${v.size}`], what);
      const bad = nonFinite(name, data);
      if (bad) throwProblems([bad], what);
      tf.tidy(() => v.assign(tf.tensor(data, v.shape, 'float32')));
    }
  }

  /** Missing, unexpected and wrongly shaped keys of a file's `shapes`, in the file's names. */
  private shapeProblems(shapes: Map<string, number[]>, naming: ParamNaming): string[] {
    const problems: string[] = [];
    for (const [name, v] of this.vars) {
      const key = naming.key(name);
      const want = naming.fileShape(name, v.shape);
      const shape = shapes.get(key);
      if (!shape) problems.push(`missing '${key}' [${want.join(', ')}]`);
      else if (shape.length !== want.length || shape.some((d, i) => d !== want[i])) {
        problems.push(`'${key}' has shape [${shape.join(', ')}], the model expects [${want.join(', ')}]`);
      }
    }
    for (const key of shapes.keys()) {
      const name = naming.name(key);
      if (name === undefined || !this.vars.has(name)) problems.push(`unexpected '${key}'`);
    }
    return problems;
  }

  /** Copies values from another store with the same names and shapes (e.g. EMA weights in). */
  copyFrom(other: ParamStore): void {
    for (const [name, v] of this.vars) v.assign(other.get(name));
  }

  dispose(): void {
    if (!this.isView) for (const v of this.vars.values()) v.dispose();
    this.vars.clear();
  }
}

/** The one error for weights that do not fit a model: every problem listed (the first 20). */
export function loadProblems(what: string, problems: string[]): Error {
  const shown = problems.slice(0, 20).join('\n  ');
  const more = problems.length > 20 ? `\n  ... and ${problems.length - 20} more` : '';
  return new Error(`${what} does not match the model (${problems.length} problem(s)):\n  ${shown}${more}`);
}

/**
 * Gradients of a scalar loss with respect to every trainable parameter of the store that the
 * loss depends on. Returns our names as keys; the caller owns (and disposes) loss and grads.
 */
export function computeGradients(store: ParamStore, lossFn: () => tf.Scalar): { loss: tf.Scalar; grads: Map<string, tf.Tensor> } {
  const entries = store.entries().filter(([, v]) => v.trainable);
  const byTfName = new Map(entries.map(([name, v]) => [v.name, name]));
  const { value, grads } = tf.variableGrads(
    lossFn,
    entries.map(([, v]) => v),
  );
  const out = new Map<string, tf.Tensor>();
  for (const [tfName, g] of Object.entries(grads)) {
    const name = byTfName.get(tfName);
    if (name === undefined) g.dispose();
    else out.set(name, g);
  }
  return { loss: value, grads: out };
}

/** computeGradients read to the host: the loss value and every gradient's values (no tensors left). */
export function computeHostGradients(store: ParamStore, lossFn: () => tf.Scalar): { loss: number; grads: Map<string, Float32Array> } {
  const r = computeGradients(store, lossFn);
  const loss = r.loss.dataSync()[0];
  r.loss.dispose();
  const grads = new Map([...r.grads].map(([name, g]) => [name, g.dataSync() as Float32Array]));
  disposeGrads(r.grads);
  return { loss, grads };
}

/**
 * A training loss in two phases, so that a runtime other than tfjs can compute its gradients:
 * `inputs` draws everything random or per-batch (noise, timesteps, gathered data) in a fixed
 * order, `graph` is the loss of those tensors and the store's variables, made of tfjs kernels
 * only (no reads back to JS), so that one trace of it (src/onnx/gradients.ts) holds for every
 * batch of the same shapes.
 */
export interface StagedLoss<B> {
  inputs(batch: B, rng: Generator): Record<string, tf.Tensor>;
  graph(inputs: Record<string, tf.Tensor>): tf.Scalar;
}

/** The staged loss as one function of (batch, rng), for the tfjs gradient tape. */
export function stagedLossFn<B>(s: StagedLoss<B>): (batch: B, rng: Generator) => tf.Scalar {
  return (batch, rng) => tf.tidy(() => s.graph(s.inputs(batch, rng)));
}

export function disposeGrads(grads: Map<string, tf.Tensor>): void {
  for (const g of grads.values()) g.dispose();
  grads.clear();
}

/** A NaN or Inf weight would only show up as a black image or a NaN loss much later. */
function nonFinite(name: string, data: Float32Array): string | undefined {
  const bad = data.findIndex((x) => !Number.isFinite(x));
  return bad >= 0 ? `'${name}' holds ${data[bad]} at index ${bad} (weights must be finite numbers)` : undefined;
}

function throwProblems(problems: string[], what: string): void {
  if (problems.length > 0) throw loadProblems(what, problems);
}
