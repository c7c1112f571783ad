/**
 * In-memory training sets (src/data/in-memory.ts): a captioned folder loaded whole (EXIF
 * orientation honoured), and IndexBatcher, the seeded resumable batches both training stages draw.
 */
import * as tf from '@tensorflow/tfjs';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ImageSet, IndexBatcher, imageBatch, loadFolderSet } from '../../src/data/in-memory.js';
import { tempDir, writeSidecarFixture } from '../fixtures/captioned.js';

let dir: string;
let set: ImageSet;

beforeAll(async () => {
  await tf.setBackend('cpu');
  dir = tempDir('in-memory');
  await writeSidecarFixture(dir);
  set = await loadFolderSet(dir, { size: 16, channels: 3, log: () => {} });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('loadFolderSet', () => {
  it('loads every good image as [N, 16, 16, 3] in [-1, 1] with its captions', () => {
    const [n, h, w, c] = set.shape;
    expect([h, w, c]).toEqual([16, 16, 3]);
    expect(set.images.length).toBe(n * 16 * 16 * 3);
    expect(set.captions).toHaveLength(n);
    expect(set.images.every((v) => v >= -1 && v <= 1)).toBe(true);
  });

  it('honours EXIF orientation: a stored 40x24 image with orientation 6 loads as the displayed 24x40', async () => {
    const d = tempDir('in-memory-exif');
    try {
      // Left half black, right half white as stored; rotated 90 degrees clockwise for display,
      // so the displayed image is black on top and white at the bottom.
      const px = Buffer.alloc(40 * 24 * 3);
      for (let y = 0; y < 24; y++) for (let x = 20; x < 40; x++) px.fill(255, (y * 40 + x) * 3, (y * 40 + x) * 3 + 3);
      const jpg = await sharp(px, { raw: { width: 40, height: 24, channels: 3 } })
        .jpeg({ quality: 100 })
        .withMetadata({ orientation: 6 })
        .toBuffer();
      writeFileSync(path.join(d, 'rot.jpg'), jpg);
      writeFileSync(path.join(d, 'rot.txt'), 'rotated');
      const s = await loadFolderSet(d, { size: 16, channels: 1, log: () => {} });
      expect(s.shape).toEqual([1, 16, 16, 1]);
      const row = (y: number) => s.images.subarray(y * 16, (y + 1) * 16).reduce((a, b) => a + b, 0) / 16;
      expect(row(1)).toBeLessThan(-0.9); // top: black
      expect(row(14)).toBeGreaterThan(0.9); // bottom: white
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});

describe('IndexBatcher', () => {
  const take = (b: IndexBatcher, n: number) => Array.from({ length: n }, () => b.next());

  it('gives every index once per epoch, the same batches for the same seed, others for another', () => {
    const n = set.shape[0];
    const epoch = take(new IndexBatcher(set, n, 7), 1)[0];
    expect([...epoch.indices].sort((a, b) => a - b)).toEqual([...Array(n).keys()]);
    expect(take(new IndexBatcher(set, 3, 7, true), 5)).toEqual(take(new IndexBatcher(set, 3, 7, true), 5));
    expect(take(new IndexBatcher(set, 3, 8, true), 5)).not.toEqual(take(new IndexBatcher(set, 3, 7, true), 5));
  });

  it('resumes from a saved position (through JSON) exactly where it stopped', () => {
    const a = new IndexBatcher(set, 3, 7, true);
    take(a, 4);
    const saved = JSON.parse(JSON.stringify(a.position()));
    const rest = take(a, 6);
    const b = new IndexBatcher(set, 3, 7, true);
    b.restore(saved);
    expect(take(b, 6)).toEqual(rest);
    expect(() => b.restore({ ...saved, index: set.shape[0] + 1 })).toThrow(/index/);
  });

  it('draws among every caption of an image with several, and flips only when asked', () => {
    const multi = set.captions!.findIndex((c) => c.length > 1);
    expect(multi).toBeGreaterThanOrEqual(0);
    const seen = new Set<number>();
    for (const b of take(new IndexBatcher(set, 5, 1, true), 40))
      b.indices.forEach((i, k) => {
        i === multi && seen.add(b.captionChoice[k]);
      });
    expect([...seen].sort()).toEqual([...set.captions![multi].keys()]);
    const noFlip = take(new IndexBatcher(set, 5, 1, false), 10);
    expect(noFlip.every((b) => b.flips.every((f) => !f))).toBe(true);
  });

  it('imageBatch flips the images a batch says, and leaks no tensors', () => {
    const before = tf.memory().numTensors;
    const x = imageBatch(set, { indices: [0, 0], flips: [false, true], captionChoice: [0, 0] });
    const diff = tf.tidy(() => {
      const [a, b] = tf.split(x, 2);
      return tf.max(tf.abs(tf.sub(tf.reverse(a, 2), b))).dataSync()[0];
    });
    expect(diff).toBe(0);
    x.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});
