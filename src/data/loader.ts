/**
 * Batches of (image, caption) from a scanned captioned folder, in a seeded shuffled order with a
 * serialisable position (see sampler.ts).
 *
 * Per item, in batch order, the augmentation Generator draws: the caption (only when the image
 * has several), the crop offsets (random crop only) and the flip (flip only). All draws happen
 * before any image is read, so the batches depend on the seed and position only.
 *
 * Resized images (shorter side = size) are kept in memory up to `cacheBytes`, so later epochs
 * redo only crop/flip. An image that fails to load now (changed or removed since the scan) is
 * reported once, dropped from the stream and replaced by the next one: the run goes on.
 */
import { readFile } from 'node:fs/promises';
import { Generator } from '../random/generator.js';
import type { ImageBatch, Uint8Image } from '../image/convert.js';
import type { CaptionedDataset, DatasetItem, SkippedFile } from './captioned.js';
import { checkPosition, EpochSampler, initialRngState, type LoaderPosition } from './sampler.js';
import { checkTransform, cropFlipNormalize, drawAugment, loadResized, resizedDims, type CropMode, type Augment } from './transform.js';

export interface CaptionedLoaderOptions {
  batchSize: number;
  seed: number;
  /** Square training size. */
  size: number;
  /** 3 = RGB (default), 1 = grayscale. */
  channels?: 1 | 3;
  /** Default 'center'. */
  crop?: CropMode;
  /** Random horizontal flips; default false. */
  flip?: boolean;
  /** Shuffle each epoch (default true); false visits items in path order. */
  shuffle?: boolean;
  /** Memory for resized images kept between epochs; default 256 MiB (0 disables). */
  cacheBytes?: number;
  /** Resume here (from `loader.position` saved earlier). */
  position?: LoaderPosition;
  /** Called when an image fails to load during training (it is then skipped). */
  onSkip?: (skipped: SkippedFile) => void;
}

export interface CaptionedBatch {
  images: ImageBatch; // [B, size, size, C] in [-1, 1]
  captions: string[];
  /** Dataset-relative paths of the images. */
  files: string[];
  /** Epoch of each item. */
  epochs: number[];
}

export class CaptionedLoader {
  readonly items: DatasetItem[];
  readonly batchSize: number;
  readonly size: number;
  readonly channels: 1 | 3;
  readonly crop: CropMode;
  readonly flip: boolean;
  /** Images that failed to load during training. */
  readonly skipped: SkippedFile[] = [];
  private readonly sampler: EpochSampler;
  private rng: Generator;
  private readonly cache = new Map<number, Uint8Image>();
  private cacheUsed = 0;
  private readonly cacheLimit: number;
  private readonly bad = new Set<number>();
  private readonly onSkip?: (s: SkippedFile) => void;
  private busy = false;

  constructor(dataset: CaptionedDataset | DatasetItem[], options: CaptionedLoaderOptions) {
    this.items = Array.isArray(dataset) ? dataset : dataset.items;
    if (this.items.length === 0) throw new Error('CaptionedLoader: the dataset has no items');
    const { batchSize } = options;
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`CaptionedLoader: batchSize must be a positive integer, got ${batchSize}`);
    const t = checkTransform(options);
    this.batchSize = batchSize;
    this.size = t.size;
    this.channels = t.channels as 1 | 3;
    this.crop = t.crop;
    this.flip = t.flip;
    this.cacheLimit = options.cacheBytes ?? 256 * 1024 * 1024;
    this.onSkip = options.onSkip;
    this.sampler = new EpochSampler(this.items.length, options.seed, options.shuffle ?? true);
    this.rng = Generator.fromState(initialRngState(options.seed));
    if (options.position) this.position = options.position;
  }

  /** Batches per epoch (rounded up). */
  get batchesPerEpoch(): number {
    return Math.ceil(this.items.length / this.batchSize);
  }

  /** Where the next batch starts: JSON-serialisable, for checkpoints. */
  get position(): LoaderPosition {
    const { epoch, index } = this.sampler.position;
    return { epoch, index, rngState: this.rng.getState() };
  }

  set position(p: LoaderPosition) {
    checkPosition(p, this.items.length);
    this.sampler.seek(p.epoch, p.index);
    this.rng = Generator.fromState(p.rngState);
  }

  /** The next batch. Calls must not overlap (await each one). */
  async next(): Promise<CaptionedBatch> {
    if (this.busy) throw new Error('CaptionedLoader.next() called again before the previous call finished');
    this.busy = true;
    try {
      return await this.nextInner();
    } finally {
      this.busy = false;
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<CaptionedBatch> {
    for (;;) yield await this.next();
  }

  /**
   * Draws the next item and its random choices. Items known to be bad still consume their
   * draws (and are dropped afterwards), so a resumed run that has to rediscover a bad file
   * draws exactly what the original run drew.
   */
  private drawItem(): { item: number; epoch: number; caption: string; aug: Augment } {
    const { item, epoch } = this.sampler.next();
    const it = this.items[item];
    const caption = it.captions.length > 1 ? it.captions[this.rng.randint(0, it.captions.length)] : (it.captions[0] ?? '');
    const dims = resizedDims(it.width, it.height, this.size);
    const aug = drawAugment(dims.width, dims.height, { size: this.size, crop: this.crop, flip: this.flip }, this.rng);
    return { item, epoch, caption, aug };
  }

  private async resized(i: number): Promise<Uint8Image> {
    const hit = this.cache.get(i);
    if (hit) return hit;
    const it = this.items[i];
    const img = await loadResized(await readFile(it.file), this.size, this.channels);
    const dims = resizedDims(it.width, it.height, this.size);
    if (img.width !== dims.width || img.height !== dims.height) {
      throw new Error(`size changed since the scan (now resizes to ${img.width}x${img.height}, expected ${dims.width}x${dims.height})`);
    }
    if (!this.cache.has(i) && this.cacheUsed + img.data.length <= this.cacheLimit) {
      this.cache.set(i, img);
      this.cacheUsed += img.data.length;
    }
    return img;
  }

  private async nextInner(): Promise<CaptionedBatch> {
    const B = this.batchSize;
    const n = this.size * this.size * this.channels;
    const data = new Float32Array(B * n);
    const captions: string[] = [];
    const files: string[] = [];
    const epochs: number[] = [];
    let filled = 0;
    while (filled < B) {
      if (this.bad.size === this.items.length) {
        throw new Error(`CaptionedLoader: every image failed to load:\n${this.skipped.map((s) => `  ${s.file}: ${s.reason}`).join('\n')}`);
      }
      const draws = Array.from({ length: B - filled }, () => this.drawItem());
      const loaded = await Promise.all(
        draws.map(async (d) => {
          if (this.bad.has(d.item)) return null;
          try {
            return await this.resized(d.item);
          } catch (e) {
            return e as Error;
          }
        }),
      );
      for (let k = 0; k < draws.length; k++) {
        const d = draws[k];
        const img = loaded[k];
        if (img === null) continue;
        if (img instanceof Error) {
          if (!this.bad.has(d.item)) {
            this.bad.add(d.item);
            const s = { file: this.items[d.item].relPath, reason: `failed to load during training (${img.message})` };
            this.skipped.push(s);
            this.onSkip?.(s);
          }
          continue;
        }
        cropFlipNormalize(img, this.size, d.aug, data.subarray(filled * n, (filled + 1) * n));
        captions.push(d.caption);
        files.push(this.items[d.item].relPath);
        epochs.push(d.epoch);
        filled++;
      }
    }
    return { images: { data, shape: [B, this.size, this.size, this.channels] }, captions, files, epochs };
  }
}
