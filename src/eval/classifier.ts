/**
 * A LeNet-style MNIST classifier (LeCun et al. 1998): conv-pool-conv-pool-dense-dense on
 * 32x32x1 images in [-1, 1] (MNIST padded to 32x32, as src/data/mnist.ts gives it):
 *
 *   conv3x3 1 -> c0, ReLU, avg-pool 2   [B, 16, 16, c0]
 *   conv3x3 c0 -> c1, ReLU, avg-pool 2  [B, 8, 8, c1]
 *   dense 64 c1 -> hidden, ReLU         [B, hidden]   the "penultimate features" of evaluation
 *   dense hidden -> 10                  [B, 10]       logits
 *
 * It measures generated digits (src/eval/evaluate.ts): the digit it reads, and its penultimate
 * features for a classifier-feature FID. Trained with the project's shared loop (train() of
 * src/pipeline/trainer.ts: checkpoints, exact resume, loss log) and saved as a component folder:
 * config.json + model.safetensors (+ metrics.json).
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { loadComponent, saveComponent, writeJsonAtomic } from '../checkpoint/io.js';
import { type ImageSet, IndexBatcher } from '../data/in-memory.js';
import { Conv2d, Linear } from '../nn/layers.js';
import { ParamStore } from '../nn/params.js';
import { Generator } from '../random/generator.js';
import { type StepLog, train } from '../pipeline/trainer.js';

export const CLASSIFIER_CLASS_NAME = 'MnistClassifier';
export const CLASSIFIER_VERSION = 1;
export const CLASSIFIER_WEIGHTS = 'model.safetensors';

export interface ClassifierConfig {
  _class_name: typeof CLASSIFIER_CLASS_NAME;
  _version: number;
  imageSize: number;
  imageChannels: number;
  /** Widths of the two conv layers. */
  channels: [number, number];
  /** Width of the penultimate (feature) layer. */
  hidden: number;
  numClasses: number;
}

export const DEFAULT_CLASSIFIER_CONFIG: ClassifierConfig = {
  _class_name: CLASSIFIER_CLASS_NAME,
  _version: CLASSIFIER_VERSION,
  imageSize: 32,
  imageChannels: 1,
  channels: [32, 64],
  hidden: 128,
  numClasses: 10,
};

export function parseClassifierConfig(input: unknown): ClassifierConfig {
  const what = 'classifier config';
  if (input === null || typeof input !== 'object' || Array.isArray(input)) throw new Error(`${what}: must be an object, got ${JSON.stringify(input)}`);
  const c = { ...DEFAULT_CLASSIFIER_CONFIG, ...(input as Record<string, unknown>) } as Record<string, unknown>;
  const keys = Object.keys(DEFAULT_CLASSIFIER_CONFIG);
  const unknown = Object.keys(c).filter((k) => !keys.includes(k));
  if (unknown.length) throw new Error(`${what}: unknown key(s) ${unknown.join(', ')}; allowed: ${keys.join(', ')}`);
  if (c._class_name !== CLASSIFIER_CLASS_NAME) throw new Error(`${what}: _class_name must be '${CLASSIFIER_CLASS_NAME}', got ${JSON.stringify(c._class_name)}`);
  if (c._version !== CLASSIFIER_VERSION) throw new Error(`${what}: _version ${JSON.stringify(c._version)} is not supported (this library reads ${CLASSIFIER_VERSION})`);
  const int = (k: string, v: unknown, min: number) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new Error(`${what}: ${k} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return v;
  };
  const size = int('imageSize', c.imageSize, 4);
  if (size % 4 !== 0) throw new Error(`${what}: imageSize must be divisible by 4 (two 2x pools), got ${size}`);
  if (!Array.isArray(c.channels) || c.channels.length !== 2) throw new Error(`${what}: channels must be two integers, got ${JSON.stringify(c.channels)}`);
  return {
    _class_name: CLASSIFIER_CLASS_NAME,
    _version: CLASSIFIER_VERSION,
    imageSize: size,
    imageChannels: int('imageChannels', c.imageChannels, 1),
    channels: [int('channels[0]', c.channels[0], 1), int('channels[1]', c.channels[1], 1)],
    hidden: int('hidden', c.hidden, 1),
    numClasses: int('numClasses', c.numClasses, 2),
  };
}

export class MnistClassifier {
  readonly store = new ParamStore();
  readonly config: ClassifierConfig;
  private readonly conv1: Conv2d;
  private readonly conv2: Conv2d;
  private readonly fc1: Linear;
  private readonly fc2: Linear;

  constructor(config: Partial<ClassifierConfig> = {}, rng = new Generator(0)) {
    this.config = parseClassifierConfig({ ...DEFAULT_CLASSIFIER_CONFIG, ...config });
    const { imageChannels, channels: [c0, c1], hidden, numClasses, imageSize } = this.config;
    this.conv1 = new Conv2d(this.store, 'conv1', imageChannels, c0, 3, rng);
    this.conv2 = new Conv2d(this.store, 'conv2', c0, c1, 3, rng);
    this.fc1 = new Linear(this.store, 'fc1', (imageSize / 4) ** 2 * c1, hidden, rng);
    this.fc2 = new Linear(this.store, 'fc2', hidden, numClasses, rng);
  }

  private checkInput(x: tf.Tensor4D): void {
    const { imageSize: s, imageChannels: c } = this.config;
    if (x.rank !== 4 || x.shape[1] !== s || x.shape[2] !== s || x.shape[3] !== c) {
      throw new Error(`classifier: images must be [B, ${s}, ${s}, ${c}] in [-1, 1], got [${x.shape.join(', ')}]`);
    }
  }

  /** Penultimate features [B, hidden] (after ReLU) of images [B, 32, 32, 1] in [-1, 1]. */
  features(x: tf.Tensor4D): tf.Tensor2D {
    this.checkInput(x);
    return tf.tidy(() => {
      let h = tf.avgPool(tf.relu(this.conv1.apply(x)), 2, 2, 'valid') as tf.Tensor4D; // [B, 16, 16, c0]
      h = tf.avgPool(tf.relu(this.conv2.apply(h)), 2, 2, 'valid') as tf.Tensor4D; // [B, 8, 8, c1]
      return tf.relu(this.fc1.apply(h.reshape([h.shape[0], -1]))) as tf.Tensor2D; // [B, hidden]
    });
  }

  /** Logits [B, numClasses] from penultimate features [B, hidden]. */
  head(features: tf.Tensor2D): tf.Tensor2D {
    return this.fc2.apply(features) as tf.Tensor2D;
  }

  /** Logits [B, numClasses]. */
  apply(x: tf.Tensor4D): tf.Tensor2D {
    return tf.tidy(() => this.head(this.features(x)));
  }

  /** Mean softmax cross-entropy of images [B, ...] against labels [B] (int32). */
  lossFn(x: tf.Tensor4D, labels: tf.Tensor1D): tf.Scalar {
    return tf.tidy(() => tf.losses.softmaxCrossEntropy(tf.oneHot(labels, this.config.numClasses), this.apply(x)) as tf.Scalar);
  }

  async save(dir: string, metrics?: Record<string, unknown>): Promise<void> {
    await saveComponent(dir, this.config, this.store, CLASSIFIER_WEIGHTS);
    if (metrics) writeJsonAtomic(path.join(dir, 'metrics.json'), metrics);
  }

  static load(dir: string): MnistClassifier {
    return loadComponent(dir, 'classifier', parseClassifierConfig, (c) => new MnistClassifier(c), CLASSIFIER_WEIGHTS);
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

/** Index of the largest logit of each row. */
export function argmaxRows(logits: ArrayLike<number>, numClasses: number): Int32Array {
  if (logits.length % numClasses !== 0) throw new Error(`argmaxRows: ${logits.length} values are not rows of ${numClasses}`);
  const n = logits.length / numClasses;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let k = 1; k < numClasses; k++) if (logits[i * numClasses + k] > logits[i * numClasses + best]) best = k;
    out[i] = best;
  }
  return out;
}

/** Fraction of rows whose largest logit is at the label. */
export function accuracyFromLogits(logits: ArrayLike<number>, labels: ArrayLike<number>, numClasses: number): number {
  const pred = argmaxRows(logits, numClasses);
  if (pred.length !== labels.length) throw new Error(`accuracy: ${pred.length} predictions for ${labels.length} labels`);
  if (pred.length === 0) return NaN;
  let right = 0;
  for (let i = 0; i < pred.length; i++) if (pred[i] === labels[i]) right++;
  return right / pred.length;
}

export interface Predictions {
  count: number;
  /** [count, numClasses] */
  logits: Float32Array;
  /** [count, hidden] */
  features: Float32Array;
  predicted: Int32Array;
}

/**
 * Logits and penultimate features of N images, in batches. `images` is a [N, H, W, C] array in
 * [-1, 1] (or a tensor, which is read batch by batch and not disposed).
 */
export async function predict(clf: MnistClassifier, images: Float32Array | tf.Tensor4D, shape?: number[], batchSize = 256): Promise<Predictions> {
  const sh = images instanceof tf.Tensor ? images.shape : shape;
  if (!sh || sh.length !== 4) throw new Error('predict: needs the [N, H, W, C] shape of the images');
  const [n, h, w, c] = sh;
  const per = h * w * c;
  const { numClasses, hidden } = clf.config;
  const logits = new Float32Array(n * numClasses);
  const features = new Float32Array(n * hidden);
  for (let i = 0; i < n; i += batchSize) {
    const b = Math.min(batchSize, n - i);
    const [f, l] = tf.tidy(() => {
      const x = images instanceof tf.Tensor
        ? (tf.slice(images, [i, 0, 0, 0], [b, h, w, c]) as tf.Tensor4D)
        : tf.tensor4d(images.subarray(i * per, (i + b) * per), [b, h, w, c]);
      const feats = clf.features(x);
      return [feats, clf.head(feats)];
    });
    features.set((await f.data()) as Float32Array, i * hidden);
    logits.set((await l.data()) as Float32Array, i * numClasses);
    tf.dispose([f, l]);
  }
  return { count: n, logits, features, predicted: argmaxRows(logits, numClasses) };
}

/** Test accuracy of a classifier on an image set with labels. */
export async function evaluateClassifier(clf: MnistClassifier, set: ImageSet, batchSize = 256): Promise<number> {
  if (!set.labels) throw new Error(`evaluateClassifier: ${set.source} has no labels`);
  const p = await predict(clf, set.images, set.shape, batchSize);
  return accuracyFromLogits(p.logits, set.labels, clf.config.numClasses);
}

// ----------------------------------------------------------------------------- training

/**
 * Images of `indices`, each shifted by a random (dx, dy) in [-maxShift, maxShift] with background
 * (-1) filled in: translation augmentation. Shifts are drawn from `rng` (the trainer's saved
 * generator, so a resumed run draws the same ones).
 */
export function shiftedBatch(set: ImageSet, indices: number[], maxShift: number, rng: Generator): Float32Array {
  const [, h, w, c] = set.shape;
  const per = h * w * c;
  const out = new Float32Array(indices.length * per);
  for (let k = 0; k < indices.length; k++) {
    const src = set.images.subarray(indices[k] * per, (indices[k] + 1) * per);
    const dst = out.subarray(k * per, (k + 1) * per);
    const dx = maxShift > 0 ? rng.randint(-maxShift, maxShift + 1) : 0;
    const dy = maxShift > 0 ? rng.randint(-maxShift, maxShift + 1) : 0;
    if (dx === 0 && dy === 0) {
      dst.set(src);
      continue;
    }
    dst.fill(-1);
    for (let y = Math.max(0, dy); y < Math.min(h, h + dy); y++) {
      const sy = y - dy;
      for (let x = Math.max(0, dx); x < Math.min(w, w + dx); x++) {
        const sx = x - dx;
        for (let ch = 0; ch < c; ch++) dst[(y * w + x) * c + ch] = src[(sy * w + sx) * c + ch];
      }
    }
  }
  return out;
}

export interface TrainClassifierOptions {
  /** Output folder: the classifier (config.json, model.safetensors, metrics.json); `<out>/train` holds checkpoints and loss.jsonl. */
  outDir: string;
  train: ImageSet;
  /** Measured after training and stored in metrics.json. */
  test?: ImageSet;
  config?: Partial<ClassifierConfig>;
  steps: number;
  batchSize: number;
  lr: number;
  warmupSteps?: number;
  weightDecay?: number;
  /** Max translation in pixels (augmentation); 0 = off. */
  maxShift?: number;
  seed: number;
  resume?: boolean;
  checkpointEvery?: number;
  onStep?: (s: StepLog) => void;
  log?: (line: string) => void;
  /** Tests: stop after this many steps of this call. */
  stopAfter?: number;
}

export interface TrainClassifierResult {
  /** Undefined when training stopped early (stopAfter). */
  classifier?: MnistClassifier;
  steps: number;
  lastLoss: number;
  testAccuracy?: number;
  seconds: number;
}

/** Trains with train() (checkpoints, exact resume), then saves the classifier and its test accuracy. */
export async function trainClassifier(o: TrainClassifierOptions): Promise<TrainClassifierResult> {
  const log = o.log ?? ((l: string) => console.error(l));
  if (!o.train.labels) throw new Error(`classifier training needs labels; ${o.train.source} has none`);
  const labels = o.train.labels;
  const t0 = performance.now();
  const clf = new MnistClassifier(o.config, new Generator(o.seed));
  const [, h, w, c] = o.train.shape;
  if (h !== clf.config.imageSize || w !== clf.config.imageSize || c !== clf.config.imageChannels) {
    clf.dispose();
    throw new Error(`classifier: the data is ${h}x${w}x${c}, the classifier takes ${clf.config.imageSize}x${clf.config.imageSize}x${clf.config.imageChannels}`);
  }
  const batcher = new IndexBatcher(o.train, o.batchSize, o.seed + 1);
  const maxShift = o.maxShift ?? 2;
  let result;
  try {
    result = await train<{ indices: number[] }>({
      runDir: path.join(o.outDir, 'train'),
      store: clf.store,
      data: {
        next: () => ({ indices: batcher.next().indices }),
        position: () => batcher.position(),
        restore: (p) => batcher.restore(p),
      },
      loss: (b, rng) => {
        const x = tf.tensor4d(shiftedBatch(o.train, b.indices, maxShift, rng), [b.indices.length, h, w, c]);
        const y = tf.tensor1d(b.indices.map((i) => labels[i]), 'int32');
        return clf.lossFn(x, y);
      },
      totalSteps: o.steps,
      seed: o.seed + 2,
      lr: { kind: 'cosine', base: o.lr, warmupSteps: o.warmupSteps ?? Math.min(100, Math.floor(o.steps / 10)), totalSteps: o.steps },
      adamw: { weightDecay: o.weightDecay ?? 1e-4 },
      checkpointEvery: o.checkpointEvery ?? Math.max(1, Math.min(500, o.steps)),
      resume: o.resume,
      onStep: o.onStep,
      stopAfter: o.stopAfter,
    });
  } catch (e) {
    clf.dispose();
    throw e;
  }
  result.optimizer.dispose();
  result.ema?.dispose();
  if (result.stopped === 'non-finite') {
    clf.dispose();
    throw new Error(result.message);
  }
  if (result.stopped === 'stopAfter') {
    clf.dispose();
    return { steps: result.step, lastLoss: result.lastLoss, seconds: (performance.now() - t0) / 1000 };
  }
  const testAccuracy = o.test ? await evaluateClassifier(clf, o.test) : undefined;
  const seconds = (performance.now() - t0) / 1000;
  await clf.save(o.outDir, {
    trainedSteps: result.step,
    batchSize: o.batchSize,
    trainImages: o.train.shape[0],
    lastLoss: result.lastLoss,
    ...(o.test ? { testAccuracy, testImages: o.test.shape[0], testSet: o.test.source } : {}),
    seconds: Math.round(seconds),
  });
  log(`classifier: saved ${o.outDir}${testAccuracy !== undefined ? ` (test accuracy ${(100 * testAccuracy).toFixed(2)}%)` : ''}`);
  return { classifier: clf, steps: result.step, lastLoss: result.lastLoss, testAccuracy, seconds };
}
