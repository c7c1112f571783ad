import * as tf from '@tensorflow/tfjs';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scanCaptionedFolder, type CaptionedDataset } from '../../src/data/captioned.js';
import { CaptionedLoader, type CaptionedBatch } from '../../src/data/loader.js';
import { EpochSampler, epochGenerator, type LoaderPosition } from '../../src/data/sampler.js';
import { batchToTensor } from '../../src/image/convert.js';
import sharp from 'sharp';
import { patternPixels, tempDir, writeColorDataset, writeSidecarFixture } from '../fixtures/captioned.js';

let dir: string;
let ds: CaptionedDataset;

beforeAll(async () => {
  await tf.setBackend('cpu');
  dir = tempDir('loader');
  await writeSidecarFixture(dir);
  ds = await scanCaptionedFolder(dir, { size: 16 });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const opts = { batchSize: 3, seed: 7, size: 16, crop: 'random' as const, flip: true };

async function take(loader: CaptionedLoader, n: number): Promise<CaptionedBatch[]> {
  const out: CaptionedBatch[] = [];
  for (let i = 0; i < n; i++) out.push(await loader.next());
  return out;
}

function summary(batches: CaptionedBatch[]): unknown {
  return batches.map((b) => ({ files: b.files, captions: b.captions, epochs: b.epochs, data: Array.from(b.images.data) }));
}

describe('EpochSampler', () => {
  it('visits every index once per epoch, in a different order per epoch', () => {
    const s = new EpochSampler(10, 3);
    const e0 = Array.from({ length: 10 }, () => s.next());
    const e1 = Array.from({ length: 10 }, () => s.next());
    expect(e0.every((x) => x.epoch === 0) && e1.every((x) => x.epoch === 1)).toBe(true);
    expect(e0.map((x) => x.item).sort((a, b) => a - b)).toEqual([...Array(10).keys()]);
    expect(e1.map((x) => x.item)).not.toEqual(e0.map((x) => x.item));
    expect(epochGenerator(3, 1).getState()).toEqual(epochGenerator(3, 1).getState());
    expect(Array.from(new EpochSampler(4, 3, false).epochOrder(5))).toEqual([0, 1, 2, 3]);
  });
});

describe('CaptionedLoader', () => {
  it('gives [B, size, size, C] batches in [-1, 1] with their captions', async () => {
    const loader = new CaptionedLoader(ds, opts);
    const b = await loader.next();
    expect(b.images.shape).toEqual([3, 16, 16, 3]);
    expect(b.images.data.every((v) => v >= -1 && v <= 1)).toBe(true);
    for (let i = 0; i < 3; i++) {
      const item = ds.items.find((it) => it.relPath === b.files[i])!;
      expect(item.captions).toContain(b.captions[i]);
    }
    const before = tf.memory().numTensors;
    const t = batchToTensor(b.images);
    expect(t.shape).toEqual([3, 16, 16, 3]);
    t.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('is deterministic for a seed and differs across seeds', async () => {
    const a = summary(await take(new CaptionedLoader(ds, opts), 4));
    const b = summary(await take(new CaptionedLoader(ds, opts), 4));
    const c = summary(await take(new CaptionedLoader(ds, { ...opts, seed: 8 }), 4));
    expect(b).toEqual(a);
    expect(c).not.toEqual(a);
  });

  it('covers each image once per epoch and crosses epoch boundaries', async () => {
    const loader = new CaptionedLoader(ds, { ...opts, batchSize: 4 });
    const batches = await take(loader, 5); // 20 items = 4 epochs of 5
    const files = batches.flatMap((b) => b.files);
    const epochs = batches.flatMap((b) => b.epochs);
    for (let e = 0; e < 4; e++) {
      const inEpoch = files.filter((_, i) => epochs[i] === e).sort();
      expect(inEpoch).toEqual(ds.items.map((it) => it.relPath).sort());
    }
    expect(loader.position.epoch).toBe(4);
    expect(loader.position.index).toBe(0);
    expect(loader.batchesPerEpoch).toBe(2);
  });

  it('resumes from a saved position with the same next batches', async () => {
    const a = new CaptionedLoader(ds, opts);
    await take(a, 2);
    const saved = JSON.parse(JSON.stringify(a.position)) as LoaderPosition;
    const rest = summary(await take(a, 3));
    const b = new CaptionedLoader(ds, { ...opts, position: saved });
    expect(summary(await take(b, 3))).toEqual(rest);
    // Setting the position on an existing loader works too.
    const c = new CaptionedLoader(ds, { ...opts, cacheBytes: 0 });
    c.position = saved;
    expect(summary(await take(c, 3))).toEqual(rest);
    expect(() => (c.position = { ...saved, index: 99 })).toThrow(/index must be an integer in \[0, 5\)/);
    expect(() => (c.position = { ...saved, rngState: [0, 0, 0, 0] })).toThrow(/all zeros/);
  });

  it('draws among several captions per image', async () => {
    const multi = ds.items.find((it) => it.captions.length > 1)!;
    const loader = new CaptionedLoader(ds, { ...opts, batchSize: 5 });
    const seen = new Set<string>();
    for (const b of await take(loader, 12)) b.files.forEach((f, i) => f === multi.relPath && seen.add(b.captions[i]));
    expect([...seen].sort()).toEqual([...multi.captions].sort());
  });

  it('skips an image that breaks after the scan and keeps the batch full', async () => {
    const d2 = tempDir('loader-bad');
    try {
      await writeColorDataset(d2, { count: 4, size: 16 });
      const scanned = await scanCaptionedFolder(d2, { size: 16 });
      writeFileSync(path.join(d2, scanned.items[1].relPath), Buffer.alloc(0));
      const reported: string[] = [];
      const loader = new CaptionedLoader(scanned, { batchSize: 4, seed: 1, size: 16, onSkip: (s) => reported.push(s.file) });
      const batches = await take(loader, 3);
      for (const b of batches) {
        expect(b.files).toHaveLength(4);
        expect(b.files).not.toContain(scanned.items[1].relPath);
      }
      expect(reported).toEqual([scanned.items[1].relPath]);
      expect(loader.skipped[0].reason).toMatch(/failed to load during training/);
    } finally {
      rmSync(d2, { recursive: true, force: true });
    }
  });

  it('honours EXIF orientation consistently in the scan and the loader', async () => {
    const d3 = tempDir('loader-exif');
    try {
      // Stored 40x24, orientation 6 (rotate 90 degrees): displayed 24x40.
      const jpg = await sharp(patternPixels(40, 24, 1), { raw: { width: 40, height: 24, channels: 3 } })
        .jpeg()
        .withMetadata({ orientation: 6 })
        .toBuffer();
      writeFileSync(path.join(d3, 'rot.jpg'), jpg);
      writeFileSync(path.join(d3, 'rot.txt'), 'rotated');
      const progress: number[] = [];
      const scanned = await scanCaptionedFolder(d3, { size: 16, onProgress: (done, total) => progress.push(done / total) });
      expect(progress).toEqual([1]);
      expect([scanned.items[0].width, scanned.items[0].height]).toEqual([24, 40]);
      const loader = new CaptionedLoader(scanned, { batchSize: 2, seed: 0, size: 16, crop: 'random' });
      const b = await loader.next();
      expect(b.images.shape).toEqual([2, 16, 16, 3]);
      expect(loader.skipped).toEqual([]);
    } finally {
      rmSync(d3, { recursive: true, force: true });
    }
  });
});
