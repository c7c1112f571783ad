/**
 * A LeNet-style image classifier (LeCun et al. 1998) with one or more named softmax heads:
 * conv-pool-conv-pool-dense-dense on imageSize x imageSize x C images in [-1, 1]:
 *
 *   conv3x3 C -> c0, ReLU, pool 2       [B, S/2, S/2, c0]   (average or max pooling)
 *   conv3x3 c0 -> c1, ReLU, pool 2      [B, S/4, S/4, c1]
 *   dense (S/4)^2 c1 -> hidden, ReLU    [B, hidden]   the "penultimate features" of evaluation
 *   dense hidden -> sum_h K_h           [B, K]        logits of every head side by side
 *
 * Head h owns logits [offset_h, offset_h + K_h); the loss is the sum of the heads' softmax
 * cross-entropies. One head 'digit' (10 classes) is the MNIST classifier that src/eval/evaluate.ts
 * measures generated digits with (accuracy and a classifier-feature FID); five heads (object,
 * colour, position, size, background; src/data/scenes/attribute-set.ts) read scene attributes
 * for src/eval/adherence.ts. Labels are an Int32Array [N, numHeads], row-major.
 *
 * Trained by ./train.ts and saved as a component folder: config.json + model.safetensors
 * (+ metrics.json). Version 1 configs (class MnistClassifier, `numClasses`) load as one head
 * 'digit' with the same weights.
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ConfigChecker } from '../checkpoint/config.js';
import { loadComponent, saveComponent } from '../checkpoint/io.js';
import { writeJsonAtomic } from '../checkpoint/files.js';
import type { ImageSet, LabelHead } from '../data/in-memory.js';
import { Conv2d, Linear } from '../nn/layers.js';
import { ParamStore } from '../nn/params.js';
import { Generator } from '../random/generator.js';

export const CLASSIFIER_CLASS_NAME = 'AttributeClassifier';
export const CLASSIFIER_VERSION = 2;
export const CLASSIFIER_WEIGHTS = 'model.safetensors';
/** What version 1 configs (MNIST only: one 'numClasses' head) are called. */
const V1_CLASS_NAME = 'MnistClassifier';

export const POOL_KINDS = ['avg', 'max'] as const;
export type PoolKind = (typeof POOL_KINDS)[number];

export interface ClassifierConfig {
  _class_name: typeof CLASSIFIER_CLASS_NAME;
  _version: number;
  imageSize: number;
  imageChannels: number;
  /** Widths of the two conv layers. */
  channels: [number, number];
  /** Width of the penultimate (feature) layer. */
  hidden: number;
  /** 'avg' (LeNet's, and MNIST's) or 'max' (keeps small details such as a scene face's mouth). */
  pool: PoolKind;
  heads: LabelHead[];
}

/** Class names '0' .. String(n - 1). */
const digitClasses = (n: number) => Array.from({ length: n }, (_, i) => String(i));

/** The MNIST head. */
export const DIGIT_HEAD: LabelHead = { name: 'digit', classes: digitClasses(10) };

export const DEFAULT_CLASSIFIER_CONFIG: ClassifierConfig = {
  _class_name: CLASSIFIER_CLASS_NAME,
  _version: CLASSIFIER_VERSION,
  imageSize: 32,
  imageChannels: 1,
  channels: [32, 64],
  hidden: 128,
  pool: 'avg',
  heads: [DIGIT_HEAD],
};

const check = new ConfigChecker('classifier config');

/** A version 1 config (MnistClassifier, numClasses) as version 2: one head 'digit', same weights. */
function migrateV1(c: Record<string, unknown>): Record<string, unknown> {
  if (c._class_name !== V1_CLASS_NAME) check.fail('_class_name', c._class_name, `'${V1_CLASS_NAME}' in a version 1 config (_version 1)`);
  const { numClasses = 10, ...rest } = c;
  return {
    ...rest,
    _class_name: CLASSIFIER_CLASS_NAME,
    _version: CLASSIFIER_VERSION,
    heads: [{ name: DIGIT_HEAD.name, classes: digitClasses(check.int(numClasses, 'numClasses', 2)) }],
  };
}

function parseHeads(v: unknown): LabelHead[] {
  if (!Array.isArray(v) || v.length === 0) check.fail('heads', v, 'a non-empty array of { name, classes }');
  const names = new Set<string>();
  return (v as unknown[]).map((h, i) => {
    const head = check.object(h, `heads[${i}]`);
    check.known(head, ['name', 'classes'], `heads[${i}]`);
    const name = check.str(head.name, `heads[${i}].name`);
    if (names.has(name)) check.fail(`heads[${i}].name`, name, 'a name no other head uses');
    names.add(name);
    const { classes } = head;
    const good =
      Array.isArray(classes) && classes.length >= 2 && classes.every((k) => typeof k === 'string' && k !== '') && new Set(classes).size === classes.length;
    if (!good) check.fail(`heads[${i}].classes (head '${name}')`, classes, 'at least 2 distinct non-empty strings');
    return { name, classes: [...(classes as string[])] };
  });
}

export function parseClassifierConfig(input: unknown): ClassifierConfig {
  const raw = check.object(input);
  if (raw._version !== undefined) check.oneOf([1, CLASSIFIER_VERSION], raw._version, '_version');
  const c = { ...DEFAULT_CLASSIFIER_CONFIG, ...(raw._version === 1 ? migrateV1(raw) : raw) } as Record<string, unknown>;
  check.known(c, Object.keys(DEFAULT_CLASSIFIER_CONFIG));
  if (c._class_name !== CLASSIFIER_CLASS_NAME) check.fail('_class_name', c._class_name, `'${CLASSIFIER_CLASS_NAME}' (or '${V1_CLASS_NAME}' with _version 1)`);
  const size = check.int(c.imageSize, 'imageSize', 4);
  if (size % 4 !== 0) check.fail('imageSize', size, 'divisible by 4 (two 2x pools)');
  const channels = c.channels as unknown[];
  if (!Array.isArray(channels) || channels.length !== 2) check.fail('channels', channels, 'two integers');
  return {
    _class_name: CLASSIFIER_CLASS_NAME,
    _version: CLASSIFIER_VERSION,
    imageSize: size,
    imageChannels: check.int(c.imageChannels, 'imageChannels', 1),
    channels: [check.int(channels[0], 'channels[0]', 1), check.int(channels[1], 'channels[1]', 1)],
    hidden: check.int(c.hidden, 'hidden', 1),
    pool: check.oneOf(POOL_KINDS, c.pool, 'pool'),
    heads: parseHeads(c.heads),
  };
}

export class AttributeClassifier {
  readonly store = new ParamStore();
  readonly config: ClassifierConfig;
  /** Classes per head. */
  readonly headSizes: number[];
  /** Logits per image: the sum of headSizes. */
  readonly numLogits: number;
  private readonly conv1: Conv2d;
  private readonly conv2: Conv2d;
  private readonly fc1: Linear;
  private readonly fc2: Linear;

  constructor(config: Partial<ClassifierConfig> = {}, rng = new Generator(0)) {
    this.config = parseClassifierConfig({ ...DEFAULT_CLASSIFIER_CONFIG, ...config });
    const {
      imageChannels,
      channels: [c0, c1],
      hidden,
      imageSize,
    } = this.config;
    this.headSizes = this.config.heads.map((h) => h.classes.length);
    this.numLogits = this.headSizes.reduce((a, b) => a + b, 0);
    this.conv1 = new Conv2d(this.store, 'conv1', imageChannels, c0, 3, rng);
    this.conv2 = new Conv2d(this.store, 'conv2', c0, c1, 3, rng);
    this.fc1 = new Linear(this.store, 'fc1', (imageSize / 4) ** 2 * c1, hidden, rng);
    // One layer for every head (named fc2, as the single-head version 1 wrote it).
    this.fc2 = new Linear(this.store, 'fc2', hidden, this.numLogits, rng);
  }

  private checkInput(x: tf.Tensor4D): void {
    const { imageSize: s, imageChannels: c } = this.config;
    if (x.rank !== 4 || x.shape[1] !== s || x.shape[2] !== s || x.shape[3] !== c) {
      throw new Error(`classifier: images must be [B, ${s}, ${s}, ${c}] in [-1, 1], got [${x.shape.join(', ')}]`);
    }
  }

  /** Penultimate features [B, hidden] (after ReLU) of images [B, S, S, C] in [-1, 1]. */
  features(x: tf.Tensor4D): tf.Tensor2D {
    this.checkInput(x);
    const pool = this.config.pool === 'max' ? tf.maxPool : tf.avgPool;
    return tf.tidy(() => {
      let h = pool(tf.relu(this.conv1.apply(x)) as tf.Tensor4D, 2, 2, 'valid'); // [B, S/2, S/2, c0]
      h = pool(tf.relu(this.conv2.apply(h)) as tf.Tensor4D, 2, 2, 'valid'); // [B, S/4, S/4, c1]
      return tf.relu(this.fc1.apply(h.reshape([h.shape[0], -1]))) as tf.Tensor2D; // [B, hidden]
    });
  }

  /** Logits of every head side by side [B, numLogits] from penultimate features [B, hidden]. */
  logits(features: tf.Tensor2D): tf.Tensor2D {
    return this.fc2.apply(features) as tf.Tensor2D;
  }

  /** Logits [B, numLogits] of images. */
  apply(x: tf.Tensor4D): tf.Tensor2D {
    return tf.tidy(() => this.logits(this.features(x)));
  }

  /** Logits [B, numLogits] split per head: [B, K_h] each (one head: the input itself). */
  splitHeads(logits: tf.Tensor2D): tf.Tensor2D[] {
    // tfjs' SplitV gradient fails for a single part.
    return this.headSizes.length === 1 ? [logits] : (tf.split(logits, this.headSizes, 1) as tf.Tensor2D[]);
  }

  /**
   * Sum over heads of the mean softmax cross-entropy of images [B, ...] against labels
   * [B, numHeads] (int32; [B] for a one-head classifier).
   */
  lossFn(x: tf.Tensor4D, labels: tf.Tensor1D | tf.Tensor2D): tf.Scalar {
    const heads = this.headSizes.length;
    if (labels.size !== x.shape[0] * heads)
      throw new Error(`classifier loss: ${x.shape[0]} images need [${x.shape[0]}, ${heads}] labels, got [${labels.shape.join(', ')}]`);
    return tf.tidy(() => {
      const perHead = tf.unstack(labels.reshape([-1, heads]), 1) as tf.Tensor1D[]; // numHeads x [B]
      const terms = this.splitHeads(this.apply(x)).map((l, h) => tf.losses.softmaxCrossEntropy(tf.oneHot(perHead[h], this.headSizes[h]), l) as tf.Scalar);
      return (terms.length === 1 ? terms[0] : tf.addN(terms)) as tf.Scalar;
    });
  }

  async save(dir: string, metrics?: Record<string, unknown>): Promise<void> {
    await saveComponent(dir, this.config, this.store, CLASSIFIER_WEIGHTS);
    if (metrics) writeJsonAtomic(path.join(dir, 'metrics.json'), metrics);
  }

  static load(dir: string): AttributeClassifier {
    return loadComponent(dir, 'classifier', parseClassifierConfig, (c) => new AttributeClassifier(c), CLASSIFIER_WEIGHTS);
  }

  /** metrics.json of a saved classifier, if any. */
  static metrics(dir: string): Record<string, unknown> | undefined {
    const f = path.join(dir, 'metrics.json');
    return existsSync(f) ? JSON.parse(readFileSync(f, 'utf8')) : undefined;
  }

  dispose(): void {
    this.store.dispose();
  }
}

// ----------------------------------------------------------------------------- inference

/**
 * Predicted class of every head: [N, numHeads] (row-major) from logits [N, sum of headSizes]
 * laid out head after head. Ties go to the first index.
 */
export function argmaxHeads(logits: ArrayLike<number>, headSizes: readonly number[]): Int32Array {
  const width = headSizes.reduce((a, b) => a + b, 0);
  if (width === 0 || logits.length % width !== 0)
    throw new Error(`argmax: ${logits.length} values are not rows of ${width} logits (heads of ${headSizes.join(' + ')})`);
  const n = logits.length / width;
  const out = new Int32Array(n * headSizes.length);
  for (let i = 0; i < n; i++) {
    let off = i * width;
    headSizes.forEach((k, h) => {
      let best = 0;
      for (let j = 1; j < k; j++) if (logits[off + j] > logits[off + best]) best = j;
      out[i * headSizes.length + h] = best;
      off += k;
    });
  }
  return out;
}

/** Index of the largest logit of each row. */
export function argmaxRows(logits: ArrayLike<number>, numClasses: number): Int32Array {
  return argmaxHeads(logits, [numClasses]);
}

/** Fraction of rows whose largest logit is at the label. */
export function accuracyFromLogits(logits: ArrayLike<number>, labels: ArrayLike<number>, numClasses: number): number {
  return headAccuracies(argmaxRows(logits, numClasses), labels, [{ name: 'class', classes: [] }]).all;
}

export interface HeadAccuracies {
  /** Per head name: fraction of rows it gets right. */
  perHead: Record<string, number>;
  /** Fraction of rows every head gets right (for one head: its accuracy). */
  all: number;
}

/** Accuracies of predictions [N, numHeads] against labels [N, numHeads] (both row-major). */
export function headAccuracies(predicted: ArrayLike<number>, labels: ArrayLike<number>, heads: readonly LabelHead[]): HeadAccuracies {
  const h = heads.length;
  if (predicted.length !== labels.length) throw new Error(`accuracy: ${predicted.length / h} predictions for ${labels.length / h} labels`);
  const n = predicted.length / h;
  const right = new Array<number>(h).fill(0);
  let all = 0;
  for (let i = 0; i < n; i++) {
    let ok = true;
    for (let k = 0; k < h; k++) {
      if (predicted[i * h + k] === labels[i * h + k]) right[k]++;
      else ok = false;
    }
    if (ok) all++;
  }
  return { perHead: Object.fromEntries(heads.map((hd, k) => [hd.name, n ? right[k] / n : NaN])), all: n ? all / n : NaN };
}

export interface Predictions {
  count: number;
  /** [count, numLogits]: every head's logits side by side */
  logits: Float32Array;
  /** [count, hidden] */
  features: Float32Array;
  /** [count, numHeads]: the class each head reads */
  predicted: Int32Array;
}

/**
 * Logits and penultimate features of N images, in batches. `images` is a [N, H, W, C] array in
 * [-1, 1] (or a tensor, which is read batch by batch and not disposed).
 */
export async function predict(clf: AttributeClassifier, images: Float32Array | tf.Tensor4D, shape?: number[], batchSize = 256): Promise<Predictions> {
  const sh = images instanceof tf.Tensor ? images.shape : shape;
  if (sh?.length !== 4) throw new Error('predict: needs the [N, H, W, C] shape of the images');
  const [n, h, w, c] = sh;
  const per = h * w * c;
  const { numLogits } = clf;
  const { hidden } = clf.config;
  const logits = new Float32Array(n * numLogits);
  const features = new Float32Array(n * hidden);
  for (let i = 0; i < n; i += batchSize) {
    const b = Math.min(batchSize, n - i);
    const [f, l] = tf.tidy(() => {
      const x =
        images instanceof tf.Tensor
          ? (tf.slice(images, [i, 0, 0, 0], [b, h, w, c]) as tf.Tensor4D)
          : tf.tensor4d(images.subarray(i * per, (i + b) * per), [b, h, w, c]);
      const feats = clf.features(x);
      return [feats, clf.logits(feats)];
    });
    features.set((await f.data()) as Float32Array, i * hidden);
    logits.set((await l.data()) as Float32Array, i * numLogits);
    tf.dispose([f, l]);
  }
  return { count: n, logits, features, predicted: argmaxHeads(logits, clf.headSizes) };
}

/** Throws unless `labels` is [N, numHeads] with every value a class of its head. */
export function checkLabels(set: ImageSet, heads: readonly LabelHead[]): Int32Array {
  const labels = set.labels;
  if (!labels) throw new Error(`${set.source} has no labels`);
  const n = set.shape[0];
  if (labels.length !== n * heads.length)
    throw new Error(
      `${set.source}: ${labels.length} labels for ${n} images and ${heads.length} head(s) (${heads.map((h) => h.name).join(', ')}); need [N, numHeads]`,
    );
  for (let i = 0; i < labels.length; i++) {
    const head = heads[i % heads.length];
    if (!Number.isInteger(labels[i]) || labels[i] < 0 || labels[i] >= head.classes.length) {
      throw new Error(
        `${set.source}: image ${Math.floor(i / heads.length)} has label ${labels[i]} for head '${head.name}', which has classes 0..${head.classes.length - 1}`,
      );
    }
  }
  return labels;
}

/** Accuracies of a classifier on a labelled image set (labels [N, numHeads]). */
export async function classifierAccuracies(clf: AttributeClassifier, set: ImageSet, batchSize = 256): Promise<HeadAccuracies> {
  const labels = checkLabels(set, clf.config.heads);
  const p = await predict(clf, set.images, set.shape, batchSize);
  return headAccuracies(p.predicted, labels, clf.config.heads);
}

/** Test accuracy of a classifier on an image set with labels: the fraction with every head right. */
export async function evaluateClassifier(clf: AttributeClassifier, set: ImageSet, batchSize = 256): Promise<number> {
  return (await classifierAccuracies(clf, set, batchSize)).all;
}

/** "98.50%" for one head; "all 97.10% (object 99.00%, color 98.20%, ...)" for several. */
export function formatHeadAccuracies(a: HeadAccuracies): string {
  const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
  const heads = Object.entries(a.perHead);
  return heads.length === 1 ? pct(a.all) : `all heads ${pct(a.all)} (${heads.map(([k, v]) => `${k} ${pct(v)}`).join(', ')})`;
}
