/**
 * Class-conditional "text" encoder: a learned embedding table [numClasses + 1, D] trained
 * together with the U-Net. Row `numClasses` is the reserved null class, the unconditional
 * input of classifier-free guidance (training replaces labels by it with some probability).
 * Each example's context is one token: [B, 1, D].
 *
 * Parameters live in `encoder.params` (a ParamStore) under the name `embedding.weight`; train
 * them with the U-Net through `ParamStore.union({ unet, label_encoder: encoder.params })`.
 */
import * as tf from '@tensorflow/tfjs';
import { Embedding } from '../nn/layers.js';
import { ParamStore } from '../nn/params.js';
import type { Generator } from '../random/generator.js';
import { checkBatch, type ConditionEncoder, type Conditioning } from './types.js';
import { ConfigChecker } from '../checkpoint/config.js';

/** Serialisable settings (saved as text_encoder/config.json). */
export interface LabelEncoderConfig {
  kind: 'label';
  /** Real classes 0..numClasses-1; index numClasses is the null class. */
  numClasses: number;
  /** D: width of the context token. */
  contextDim: number;
  /** Optional names, so `encode(['cat'])` works as well as `encode([3])`; one per class, unique. */
  classNames?: string[];
}

const LABEL_CONFIG_FIELDS = ['kind', 'numClasses', 'contextDim', 'classNames'];

/**
 * Checks a parsed config.json (or any object): `kind` defaults to 'label'. Throws naming the bad
 * field, its value and what is allowed. Fields starting with '_' are comments and dropped.
 */
export function validateLabelEncoderConfig(obj: unknown): LabelEncoderConfig {
  const check = new ConfigChecker('label encoder config');
  const o = check.object(obj);
  check.known(o, LABEL_CONFIG_FIELDS, undefined, { comments: true });
  check.oneOf(['label'], o.kind ?? 'label', 'kind');
  const n = check.int(o.numClasses, 'numClasses', 1, 1_000_000);
  const cfg: LabelEncoderConfig = { kind: 'label', numClasses: n, contextDim: check.int(o.contextDim, 'contextDim', 1, 65536) };
  if (o.classNames !== undefined) {
    const names = o.classNames as unknown[];
    if (!Array.isArray(names) || names.length !== n || names.some((x) => typeof x !== 'string' || x === '')) {
      check.fail('classNames', names, `an array of ${n} non-empty strings (one per class)`);
    }
    const dup = names.find((x, i) => names.indexOf(x) !== i);
    if (dup !== undefined) check.fail('classNames', names, `unique names ('${dup}' appears twice)`);
    if (names.some((x) => /^\d+$/.test(x as string))) check.fail('classNames', names, 'names that are not plain integers (those mean class indices)');
    cfg.classNames = [...(names as string[])];
  }
  return cfg;
}

export class LabelEncoder implements ConditionEncoder {
  readonly kind = 'label' as const;
  readonly contextLength = 1;
  readonly contextDim: number;
  readonly numClasses: number;
  /** The reserved null-class index (= numClasses). */
  readonly nullClass: number;
  readonly config: LabelEncoderConfig;
  /** Holds `embedding.weight` [numClasses + 1, contextDim]. */
  readonly params: ParamStore;
  private readonly embedding: Embedding;
  private disposed = false;

  /**
   * Initial table N(0, 1) (PyTorch's nn.Embedding default) drawn from `rng`; load trained
   * values with `encoder.params.loadArrays(...)`.
   */
  constructor(config: LabelEncoderConfig, rng: Generator) {
    this.config = validateLabelEncoderConfig(config);
    this.numClasses = this.config.numClasses;
    this.nullClass = this.numClasses;
    this.contextDim = this.config.contextDim;
    this.params = new ParamStore();
    this.embedding = new Embedding(this.params, 'embedding', this.numClasses + 1, this.contextDim, rng, 1);
  }

  /** [numClasses + 1, contextDim] */
  get table(): tf.Variable {
    return this.embedding.table;
  }

  /**
   * Synchronous and differentiable (use inside the training gradient closure):
   * labels [B] int32 in [0, numClasses] (the null class allowed) -> context [B, 1, D].
   */
  embed(labels: tf.Tensor1D): tf.Tensor3D {
    if (this.disposed) throw new Error('label encoder: embed after dispose()');
    if (!(labels instanceof tf.Tensor) || labels.rank !== 1 || labels.dtype !== 'int32') {
      const desc = labels instanceof tf.Tensor ? `${labels.dtype} tensor of shape [${labels.shape.join(', ')}]` : typeof labels;
      throw new Error(`label encoder: embed needs an int32 tensor of shape [B], got ${desc}`);
    }
    const values = labels.dataSync();
    for (let i = 0; i < values.length; i++) {
      if (values[i] < 0 || values[i] > this.nullClass) {
        throw new Error(
          `label encoder: label ${values[i]} at index ${i} is out of range; allowed 0..${this.numClasses - 1}, or ${this.nullClass} (the null class)`,
        );
      }
    }
    return tf.tidy(() => this.embedding.apply(labels).reshape([labels.shape[0], 1, this.contextDim]) as tf.Tensor3D);
  }

  /** Class indices (numbers, numeric strings or class names) -> indices in [0, numClasses). */
  labelsToIndices(inputs: readonly (string | number)[]): number[] {
    if (!Array.isArray(inputs) || inputs.length === 0) {
      throw new Error(`label encoder: needs a non-empty array of class labels, got ${JSON.stringify(inputs)}`);
    }
    const range = `integers from 0 to ${this.numClasses - 1}`;
    return inputs.map((x, i) => {
      let v: number;
      if (typeof x === 'number') v = x;
      else if (typeof x === 'string' && /^\s*\d+\s*$/.test(x)) v = Number(x);
      else if (typeof x === 'string') {
        const k = this.config.classNames?.indexOf(x) ?? -1;
        if (k < 0) {
          const names = this.config.classNames;
          throw new Error(
            `label encoder: label ${i} '${x}' is not a class; allowed: ${range}` +
              (names
                ? ` or one of ${names
                    .slice(0, 20)
                    .map((s) => `'${s}'`)
                    .join(', ')}${names.length > 20 ? ', ...' : ''}`
                : ' (this encoder has no class names)'),
          );
        }
        v = k;
      } else throw new Error(`label encoder: label ${i} is ${typeof x} ${JSON.stringify(x)}; allowed: ${range}`);
      if (!Number.isInteger(v) || v < 0 || v >= this.numClasses) {
        throw new Error(
          `label encoder: label ${i} is ${JSON.stringify(x)}; allowed: ${range} (${this.nullClass} is the reserved null class, use unconditional())`,
        );
      }
      return v;
    });
  }

  async encode(inputs: string[] | number[]): Promise<Conditioning> {
    const idx = this.labelsToIndices(inputs);
    return tf.tidy(() => ({ context: this.embed(tf.tensor1d(idx, 'int32')) }));
  }

  /** The null class repeated: what classifier-free guidance uses. */
  async unconditional(batch: number): Promise<Conditioning> {
    checkBatch(batch, 'label encoder unconditional');
    // Labels made on the host, as encode's are: embed reads them back to check them, which the
    // webgpu backend cannot do synchronously for a tensor computed on the GPU (tf.fill).
    return tf.tidy(() => ({ context: this.embed(tf.tensor1d(new Int32Array(batch).fill(this.nullClass), 'int32')) }));
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.params.dispose();
  }
}
