/**
 * A training set held in memory: images [N, H, W, C] in [-1, 1] plus their conditioning
 * (captions or class labels). Both training stages draw batches from it through a seeded,
 * resumable sampler. Small-image datasets fit easily (20k RGB 32x32 images: 250 MB).
 */
import * as tf from '@tensorflow/tfjs';
import { type CaptionedDataset, formatReport, scanCaptionedFolder } from './captioned.js';
import { datasetFingerprint, fingerprint } from './cache.js';
import { type MnistData, loadMnist } from './mnist.js';
import { EpochSampler, type LoaderPosition, checkPosition, initialRngState } from './sampler.js';
import { loadImageArray } from './transform.js';
import { Generator } from '../random/generator.js';

/** One named label of a labelled set: its class names, in class-index order (a classifier head). */
export interface LabelHead {
  name: string;
  classes: readonly string[];
}

export interface ImageSet {
  /** [N, H, W, C] in [-1, 1] */
  images: Float32Array;
  shape: [number, number, number, number];
  /** Captions per image (captioned folders). */
  captions?: string[][];
  /** Class label per image (MNIST). */
  labels?: Int32Array;
  /** What the images depend on (for latent caches). */
  fingerprint: string;
  /** Human-readable origin, for logs. */
  source: string;
}

export interface FolderSetOptions {
  size: number;
  channels: 1 | 3;
  /** Smallest accepted side before resizing (default: size). */
  minSize?: number;
  onProgress?: (done: number, total: number) => void;
  /** Where scan reports go (default console.error). */
  log?: (line: string) => void;
}

/** Images [N, size, size, channels] in [-1, 1] of image files, each resized and center-cropped. */
export async function loadImageFiles(files: string[], o: Pick<FolderSetOptions, 'size' | 'channels' | 'onProgress'>): Promise<Float32Array> {
  const n = files.length;
  const per = o.size * o.size * o.channels;
  const images = new Float32Array(n * per);
  for (let i = 0; i < n; i++) {
    const a = await loadImageArray(files[i], { size: o.size, channels: o.channels, crop: 'center', flip: false });
    images.set(a.data, i * per);
    if (o.onProgress && (i % 500 === 0 || i === n - 1)) o.onProgress(i + 1, n);
  }
  return images;
}

/** Scans a captioned folder (reporting and skipping bad files) and loads every good image, center-cropped. */
export async function loadFolderSet(root: string, o: FolderSetOptions): Promise<ImageSet> {
  const log = o.log ?? ((l: string) => console.error(l));
  const ds: CaptionedDataset = await scanCaptionedFolder(root, { size: o.size, minSize: o.minSize });
  if (ds.report.skipped.length > 0) log(formatReport(ds.report));
  const n = ds.items.length;
  const images = await loadImageFiles(
    ds.items.map((it) => it.file),
    o,
  );
  return {
    images,
    shape: [n, o.size, o.size, o.channels],
    captions: ds.items.map((it) => it.captions),
    fingerprint: fingerprint(datasetFingerprint(ds), o.size, o.channels, 'center'),
    source: `${root} (${n} images)`,
  };
}

export function mnistSet(split: 'train' | 'test' = 'train', limit?: number): ImageSet {
  const m: MnistData = loadMnist({ split, limit });
  return {
    images: m.images,
    shape: m.shape,
    labels: m.labels,
    fingerprint: fingerprint('mnist', split, m.shape[0]),
    source: `MNIST ${split} (${m.shape[0]} images)`,
  };
}

export interface IndexBatch {
  indices: number[];
  /** The per-item random choices of this batch: flip and caption index. */
  flips: boolean[];
  captionChoice: number[];
}

/**
 * Seeded epoch-shuffled batches of indices, with per-item augmentation choices drawn from a
 * generator that is part of the saved position (so a resumed run draws the same choices).
 */
export class IndexBatcher {
  private readonly sampler: EpochSampler;
  private rng: Generator;

  constructor(
    readonly set: ImageSet,
    readonly batchSize: number,
    seed: number,
    readonly flip = false,
  ) {
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`batch size must be an integer >= 1, got ${batchSize}`);
    this.sampler = new EpochSampler(set.shape[0], seed);
    this.rng = Generator.fromState(initialRngState(seed));
  }

  next(): IndexBatch {
    const indices: number[] = [];
    const flips: boolean[] = [];
    const captionChoice: number[] = [];
    for (let i = 0; i < this.batchSize; i++) {
      const { item } = this.sampler.next();
      indices.push(item);
      flips.push(this.flip && this.rng.uniform() < 0.5);
      const caps = this.set.captions?.[item];
      captionChoice.push(caps && caps.length > 1 ? this.rng.randint(0, caps.length) : 0);
    }
    return { indices, flips, captionChoice };
  }

  position(): LoaderPosition {
    return { ...this.sampler.position, rngState: this.rng.getState() };
  }

  restore(p: unknown): void {
    const pos = p as LoaderPosition;
    checkPosition(pos, this.set.shape[0]);
    this.sampler.seek(pos.epoch, pos.index);
    this.rng = Generator.fromState(pos.rngState);
  }
}

/** Gathers rows of a [N, ...rest] float array into a tensor [indices.length, ...rest]. */
export function gatherRows(data: Float32Array, shape: number[], indices: number[]): tf.Tensor {
  const per = shape.slice(1).reduce((a, b) => a * b, 1);
  const out = new Float32Array(indices.length * per);
  indices.forEach((idx, i) => {
    out.set(data.subarray(idx * per, (idx + 1) * per), i * per);
  });
  return tf.tensor(out, [indices.length, ...shape.slice(1)], 'float32');
}

/** Images of a batch as [B, H, W, C], horizontally flipped where the batch says so. */
export function imageBatch(set: Pick<ImageSet, 'images' | 'shape'>, b: IndexBatch): tf.Tensor4D {
  return tf.tidy(() => {
    const x = gatherRows(set.images, set.shape, b.indices) as tf.Tensor4D;
    if (!b.flips.some(Boolean)) return x;
    const mask = tf.tensor4d(
      b.flips.map((f) => (f ? 1 : 0)),
      [b.indices.length, 1, 1, 1],
    );
    return tf.add(tf.mul(tf.reverse(x, 2), mask), tf.mul(x, tf.sub(1, mask))) as tf.Tensor4D;
  });
}
