import * as tf from '@tensorflow/tfjs';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  batchImage,
  batchToImages,
  batchToTensor,
  decodeImage,
  encodePng,
  floatToByte,
  fromUint8,
  imagesToBatch,
  tensorToBatch,
  toUint8,
  writeBatchPngs,
  writePng,
  type ImageBatch,
  type Uint8Image,
} from '../../src/image/convert.js';
import { makeGrid, makeStrip } from '../../src/image/grid.js';
import { getPngText } from '../../src/image/png-text.js';
import { tempDir } from '../fixtures/captioned.js';

let dir: string;
beforeAll(async () => {
  await tf.setBackend('cpu');
  dir = tempDir('image');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function solid(w: number, h: number, c: 1 | 3, v: number[]): Uint8Image {
  const data = new Uint8Array(w * h * c);
  for (let i = 0; i < w * h; i++) data.set(v, i * c);
  return { data, width: w, height: h, channels: c };
}

describe('float <-> uint8', () => {
  it('maps [-1, 1] to [0, 255] with clamping and rounding', () => {
    expect(Array.from(toUint8(new Float32Array([-1, 1, 0, -2, 2, NaN, 0.999])))).toEqual([0, 255, 128, 0, 255, 0, 255]);
    expect(floatToByte(-0.0039)).toBe(127);
    const bytes = new Uint8Array([0, 1, 127, 128, 254, 255]);
    expect(Array.from(toUint8(fromUint8(bytes)))).toEqual(Array.from(bytes));
  });

  it('converts batches, tensors and PNGs (RGB and grayscale)', async () => {
    const batch: ImageBatch = { data: new Float32Array(2 * 2 * 3 * 3).map((_, i) => (i % 3 === 0 ? 1 : -1)), shape: [2, 2, 3, 3] };
    const imgs = batchToImages(batch);
    expect(imgs).toHaveLength(2);
    expect(Array.from(imgs[1].data.subarray(0, 3))).toEqual([255, 0, 0]);
    expect(imagesToBatch(imgs).data).toEqual(batch.data);

    const before = tf.memory().numTensors;
    const t = batchToTensor(batch);
    expect(t.shape).toEqual([2, 2, 3, 3]);
    const back = await tensorToBatch(t);
    t.dispose();
    expect(back.shape).toEqual([2, 2, 3, 3]);
    expect(back.data).toEqual(batch.data);
    expect(tf.memory().numTensors).toBe(before);

    const rgbPng = await encodePng(batchImage(batch, 0));
    const mdRgb = await sharp(rgbPng).metadata();
    expect([mdRgb.width, mdRgb.height, mdRgb.channels]).toEqual([3, 2, 3]);
    const dec = await decodeImage(rgbPng, 3);
    expect(Array.from(dec.data)).toEqual(Array.from(imgs[0].data));

    const gray = solid(5, 4, 1, [77]);
    const grayPng = await encodePng(gray);
    expect((await sharp(grayPng).metadata()).channels).toBe(1);
    expect(Array.from((await decodeImage(grayPng, 1)).data)).toEqual(Array.from(gray.data));
    expect(() => batchImage(batch, 2)).toThrow(/out of range/);
    expect(() => batchToImages({ data: new Float32Array(3), shape: [1, 1, 1, 2] })).toThrow(/3 values for shape/);
  });

  it('writes PNG files with text chunks and one file per batch image', async () => {
    const file = path.join(dir, 'out', 'a.png');
    const batch: ImageBatch = { data: new Float32Array(4 * 4).fill(0.5), shape: [1, 4, 4, 1] };
    await writePng(file, batch, { text: { parameters: 'x\nSteps: 1, Sampler: DDIM, Seed: 2' } });
    const buf = readFileSync(file);
    expect(getPngText(buf, 'parameters')).toBe('x\nSteps: 1, Sampler: DDIM, Seed: 2');
    expect((await sharp(buf).metadata()).channels).toBe(1);
    const files = await writeBatchPngs(path.join(dir, 'many'), { data: new Float32Array(12 * 2 * 2 * 3), shape: [12, 2, 2, 3] }, 's');
    expect(files.map((f) => path.basename(f)).slice(0, 2)).toEqual(['s00.png', 's01.png']);
  });
});

describe('grid', () => {
  it('lays out images row-major with padding and background', () => {
    const imgs = [solid(2, 2, 3, [255, 0, 0]), solid(2, 2, 3, [0, 255, 0]), solid(2, 2, 3, [0, 0, 255])];
    const g = makeGrid(imgs, { cols: 2, padding: 1, background: 9 });
    expect([g.width, g.height, g.channels]).toEqual([2 * 2 + 3, 2 * 2 + 3, 3]);
    const at = (x: number, y: number): number[] => Array.from(g.data.subarray((y * g.width + x) * 3, (y * g.width + x) * 3 + 3));
    expect(at(0, 0)).toEqual([9, 9, 9]); // border
    expect(at(1, 1)).toEqual([255, 0, 0]); // image 0
    expect(at(4, 2)).toEqual([0, 255, 0]); // image 1
    expect(at(3, 1)).toEqual([9, 9, 9]); // gap between columns
    expect(at(1, 4)).toEqual([0, 0, 255]); // image 2, second row
    expect(at(4, 4)).toEqual([9, 9, 9]); // empty cell
    // Default: ceil(sqrt(N)) columns.
    const d = makeGrid(Array(5).fill(solid(3, 3, 1, [100])));
    expect([d.width, d.height]).toEqual([3 * 3 + 4 * 2, 2 * 3 + 3 * 2]);
    expect(() => makeGrid([solid(2, 2, 3, [0, 0, 0]), solid(3, 2, 3, [0, 0, 0])])).toThrow(/image 1 is 3x2x3, expected 2x2x3/);
    expect(() => makeGrid(imgs, { rows: 1, cols: 2 })).toThrow(/2 cells for 3 images/);
  });

  it('makes grids from model-space batches and strips', () => {
    const batch: ImageBatch = { data: new Float32Array(4 * 2 * 2 * 1).fill(-1), shape: [4, 2, 2, 1] };
    const g = makeGrid(batch, { padding: 0 });
    expect([g.width, g.height, g.channels]).toEqual([4, 4, 1]);
    expect(g.data.every((v) => v === 0)).toBe(true);
    const s = makeStrip(batch);
    expect([s.width, s.height]).toEqual([8, 2]);
  });
});
