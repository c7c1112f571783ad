import * as tf from '@tensorflow/tfjs';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMnist, mnistDataDir } from '../../src/data/mnist.js';
import { tempDir } from '../fixtures/captioned.js';

let dir: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
  dir = tempDir('mnist');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A small valid IDX pair (n images) in `d`, named like the test split. */
function writeIdx(d: string, n: number, opts: { magic?: number; rows?: number; labelCount?: number; cut?: number } = {}): void {
  const rows = opts.rows ?? 28;
  const img = Buffer.alloc(16 + n * rows * 28);
  img.writeUInt32BE(opts.magic ?? 2051, 0);
  img.writeUInt32BE(n, 4);
  img.writeUInt32BE(rows, 8);
  img.writeUInt32BE(28, 12);
  for (let i = 16; i < img.length; i++) img[i] = (i * 7) & 0xff;
  writeFileSync(path.join(d, 't10k-images-idx3-ubyte'), opts.cut ? img.subarray(0, img.length - opts.cut) : img);
  const lc = opts.labelCount ?? n;
  const lbl = Buffer.alloc(8 + lc);
  lbl.writeUInt32BE(2049, 0);
  lbl.writeUInt32BE(lc, 4);
  for (let i = 0; i < lc; i++) lbl[8 + i] = i % 10;
  writeFileSync(path.join(d, 't10k-labels-idx1-ubyte'), lbl);
}

describe('MNIST', () => {
  it('loads the training split: first label 5, padded to 32x32, padding is -1', () => {
    const m = loadMnist({ split: 'train', limit: 64 });
    expect(m.total).toBe(60000);
    expect(m.shape).toEqual([64, 32, 32, 1]);
    expect(m.images.length).toBe(64 * 32 * 32);
    expect(m.labels[0]).toBe(5);
    expect(Array.from(m.labels.subarray(0, 5))).toEqual([5, 0, 4, 1, 9]);
    let min = Infinity;
    let max = -Infinity;
    for (const v of m.images) {
      min = Math.min(min, v);
      max = Math.max(max, v);
    }
    expect(min).toBe(-1);
    expect(max).toBe(1);
    // The 2-pixel border of every image is background (-1).
    for (let i = 0; i < 64; i++) {
      for (let y = 0; y < 32; y++) {
        for (let x = 0; x < 32; x++) {
          if (x < 2 || x >= 30 || y < 2 || y >= 30) expect(m.images[i * 1024 + y * 32 + x]).toBe(-1);
        }
      }
    }
    // Pixel (y, x) of the raw 28x28 image lands at (y + 2, x + 2).
    const raw = readFileSync(path.join(mnistDataDir(), 'train-images-idx3-ubyte')).subarray(16, 16 + 784);
    const k = raw.indexOf(255);
    expect(m.images[(Math.floor(k / 28) + 2) * 32 + (k % 28) + 2]).toBe(1);
  });

  it('loads the test split: first label 7, 10000 items', () => {
    const m = loadMnist({ split: 'test', limit: 3 });
    expect(m.total).toBe(10000);
    expect(Array.from(m.labels)).toEqual([7, 2, 1]);
  });

  it('validates IDX headers with clear errors', () => {
    const d = (name: string): string => {
      const p = path.join(dir, name);
      rmSync(p, { recursive: true, force: true });
      mkdirSync(p, { recursive: true });
      return p;
    };
    const ok = d('ok');
    writeIdx(ok, 3);
    expect(loadMnist({ split: 'test', dir: ok }).shape).toEqual([3, 32, 32, 1]);

    const magic = d('magic');
    writeIdx(magic, 3, { magic: 2049 });
    expect(() => loadMnist({ split: 'test', dir: magic })).toThrow(/magic number 2049, expected 2051/);

    const dims = d('dims');
    writeIdx(dims, 3, { rows: 20 });
    expect(() => loadMnist({ split: 'test', dir: dims })).toThrow(/holds 20x28 images, expected 28x28/);

    const cut = d('cut');
    writeIdx(cut, 3, { cut: 100 });
    expect(() => loadMnist({ split: 'test', dir: cut })).toThrow(/header declares 3 images .* truncated or corrupt/);

    const count = d('count');
    writeIdx(count, 3, { labelCount: 4 });
    expect(() => loadMnist({ split: 'test', dir: count })).toThrow(/has 3 images but .* has 4 labels/);

    const swapped = d('swapped');
    writeIdx(swapped, 3);
    copyFileSync(path.join(swapped, 't10k-labels-idx1-ubyte'), path.join(swapped, 't10k-images-idx3-ubyte'));
    expect(() => loadMnist({ split: 'test', dir: swapped })).toThrow(/magic number 2049, expected 2051/);

    const missing = d('missing');
    expect(() => loadMnist({ split: 'test', dir: missing })).toThrow(/t10k-images-idx3-ubyte does not exist/);
    expect(() => loadMnist({ split: 'val' as 'test' })).toThrow(/split must be 'train' or 'test'/);
  });
});
