/**
 * Training the attribute classifier (./classifier.ts) with the project's shared loop (train() of
 * src/train/trainer.ts: checkpoints, exact resume, loss log, onnxruntime gradients and
 * data-parallel shards), with optional translation augmentation.
 */
import * as tf from '@tensorflow/tfjs';
import path from 'node:path';
import { type ImageSet, IndexBatcher } from '../data/in-memory.js';
import { type StagedLoss, stagedLossFn } from '../nn/params.js';
import type { RuntimeChoice } from '../onnx/runtime.js';
import { Generator } from '../random/generator.js';
import type { Replica, ReplicaSpec } from '../train/data-parallel.js';
import { type StepLog, gradientSetup, train } from '../train/trainer.js';
import { AttributeClassifier, type ClassifierConfig, checkLabels, classifierAccuracies, formatHeadAccuracies } from './classifier.js';

/**
 * Images of `indices`, each shifted by a random (dx, dy) in [-maxShift, maxShift] with background
 * (-1) filled in: translation augmentation. Shifts are drawn from `rng` (the trainer's saved
 * generator, so a resumed run draws the same ones).
 */
export function shiftedBatch(set: Pick<ImageSet, 'images' | 'shape'>, indices: number[], maxShift: number, rng: Generator): Float32Array {
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
  /**
   * Max translation in pixels (augmentation); default 0 = off. Only for data whose labels do
   * not depend on where things are (MNIST digits; never scene positions).
   */
  maxShift?: number;
  seed: number;
  resume?: boolean;
  checkpointEvery?: number;
  onStep?: (s: StepLog) => void;
  log?: (line: string) => void;
  /** Tests: stop after this many steps of this call. */
  stopAfter?: number;
  /**
   * What computes the gradients (default 'tfjs'; 'auto': onnxruntime-node where the backend is a
   * CPU and it loads, as scripts/train-classifier.ts asks; src/onnx/gradients.ts).
   */
  runtime?: RuntimeChoice;
  /** Data-parallel shards per step (default: 1 with tfjs, one per core with onnx; see src/train/data-parallel.ts). */
  workers?: number;
}

/** What the classifier's loss needs, serialisable: a data-parallel worker rebuilds it from this. */
export interface ClassifierShardTask {
  config: ClassifierConfig;
  /** Training images [N, H, W, C]. */
  data: Pick<ImageSet, 'images' | 'shape'>;
  /** [N, numHeads] */
  labels: Int32Array;
  maxShift: number;
}

/**
 * Cross-entropy of a batch of training images, randomly shifted by up to maxShift pixels, staged
 * (inputs drawn, then the graph) so onnxruntime can compute its gradients too.
 */
export function classifierStagedLoss(task: ClassifierShardTask, clf: AttributeClassifier): StagedLoss<{ indices: number[] }> {
  const [, h, w, c] = task.data.shape;
  const H = task.config.heads.length;
  return {
    inputs: (b, rng) => ({
      images: tf.tensor4d(shiftedBatch(task.data, b.indices, task.maxShift, rng), [b.indices.length, h, w, c]),
      labels: tf.tensor2d(Int32Array.from(b.indices.flatMap((i) => Array.from(task.labels.subarray(i * H, (i + 1) * H)))), [b.indices.length, H], 'int32'), // [B, numHeads]
    }),
    graph: (i) => clf.lossFn(i.images as tf.Tensor4D, i.labels as tf.Tensor2D),
  };
}

export function classifierShardLoss(task: ClassifierShardTask, clf: AttributeClassifier): (b: { indices: number[] }, rng: Generator) => tf.Scalar {
  return stagedLossFn(classifierStagedLoss(task, clf));
}

export function classifierReplica(task: ClassifierShardTask): Replica<{ indices: number[] }> {
  const clf = new AttributeClassifier(task.config, Generator.forLoadedWeights()); // the weights come from the main thread
  const staged = classifierStagedLoss(task, clf);
  return { store: clf.store, loss: stagedLossFn(staged), staged, dispose: () => clf.dispose() };
}

/** How a data-parallel worker builds the classifier's replica (classifierReplica of this module). */
export function classifierReplicaSpec(task: ClassifierShardTask): ReplicaSpec<ClassifierShardTask> {
  return { module: import.meta.url, exportName: 'classifierReplica', args: task, kind: 'classifier' };
}

export interface TrainClassifierResult {
  /** Undefined when training stopped early (stopAfter). */
  classifier?: AttributeClassifier;
  steps: number;
  lastLoss: number;
  /** Fraction of test images with every head right (for one head: the accuracy). */
  testAccuracy?: number;
  /** Per head: fraction of test images it gets right. */
  testHeadAccuracy?: Record<string, number>;
  seconds: number;
}

/**
 * Trains with train() (checkpoints, exact resume), then saves the classifier and its test
 * accuracies. Labels of both sets: [N, numHeads].
 */
export async function trainClassifier(o: TrainClassifierOptions): Promise<TrainClassifierResult> {
  const log = o.log ?? ((l: string) => console.error(l));
  if (!o.train.labels) throw new Error(`classifier training needs labels; ${o.train.source} has none`);
  const t0 = performance.now();
  const clf = new AttributeClassifier(o.config, new Generator(o.seed));
  const { heads } = clf.config;
  let labels: Int32Array;
  try {
    for (const set of o.test ? [o.train, o.test] : [o.train]) {
      const [, sh, sw, sc] = set.shape;
      if (sh !== clf.config.imageSize || sw !== clf.config.imageSize || sc !== clf.config.imageChannels) {
        throw new Error(
          `classifier: ${set.source} is ${sh}x${sw}x${sc}, the classifier takes ${clf.config.imageSize}x${clf.config.imageSize}x${clf.config.imageChannels}`,
        );
      }
    }
    labels = checkLabels(o.train, heads);
    if (o.test) checkLabels(o.test, heads);
  } catch (e) {
    clf.dispose();
    throw e;
  }
  const batcher = new IndexBatcher(o.train, o.batchSize, o.seed + 1);
  const maxShift = o.maxShift ?? 0;
  const task: ClassifierShardTask = { config: clf.config, data: { images: o.train.images, shape: o.train.shape }, labels, maxShift };
  const staged = classifierStagedLoss(task, clf);
  let result: Awaited<ReturnType<typeof train>>;
  try {
    result = await train<{ indices: number[] }>({
      runDir: path.join(o.outDir, 'train'),
      store: clf.store,
      data: {
        next: () => ({ indices: batcher.next().indices }),
        position: () => batcher.position(),
        restore: (p) => batcher.restore(p),
      },
      loss: stagedLossFn(staged),
      ...(await gradientSetup('classifier', { runtime: o.runtime ?? 'tfjs', workers: o.workers }, staged, classifierReplicaSpec(task), log)),
      log,
      totalSteps: o.steps,
      seed: o.seed + 2,
      lr: { kind: 'cosine', base: o.lr, warmupSteps: o.warmupSteps ?? Math.min(100, Math.floor(o.steps / 10)), totalSteps: o.steps },
      adamw: { weightDecay: o.weightDecay ?? 1e-4 },
      checkpointEvery: o.checkpointEvery ?? Math.max(1, Math.min(500, o.steps)),
      resume: o.resume,
      onStep: o.onStep,
      stopAfter: o.stopAfter,
      nonFiniteAdvice: `Try a lower learning rate (now ${o.lr}: --lr ${o.lr / 4}).`,
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
  const acc = o.test ? await classifierAccuracies(clf, o.test) : undefined;
  const seconds = (performance.now() - t0) / 1000;
  await clf.save(o.outDir, {
    trainedSteps: result.step,
    batchSize: o.batchSize,
    trainImages: o.train.shape[0],
    maxShift,
    lastLoss: result.lastLoss,
    ...(acc ? { testAccuracy: acc.all, testHeadAccuracy: acc.perHead, testImages: o.test!.shape[0], testSet: o.test!.source } : {}),
    seconds: Math.round(seconds),
  });
  log(`classifier: saved ${o.outDir}${acc ? ` (test accuracy ${formatHeadAccuracies(acc)})` : ''}`);
  return { classifier: clf, steps: result.step, lastLoss: result.lastLoss, testAccuracy: acc?.all, testHeadAccuracy: acc?.perHead, seconds };
}
