/**
 * Conversions between model-space images and pixels.
 *
 * Model space: float32 NHWC `[B, H, W, C]` in [-1, 1] (an `ImageBatch`, or a tf tensor).
 * Pixel space: 8-bit interleaved rows (a `Uint8Image`), C = 1 (grayscale), 3 (RGB) or 4 (RGBA).
 * Encoding to PNG goes through sharp.
 */
import * as tf from '@tensorflow/tfjs';
import path from 'node:path';
import sharp from 'sharp';
import { writeFileAtomic } from '../checkpoint/files.js';
import { insertPngText } from './png-text.js';

/** A batch of images in model space: float32 NHWC in [-1, 1]. */
export interface ImageBatch {
  data: Float32Array; // [B, H, W, C]
  shape: [number, number, number, number];
}

/** One 8-bit image, rows top to bottom, channels interleaved. */
export interface Uint8Image {
  data: Uint8Array; // [H, W, C]
  width: number;
  height: number;
  channels: 1 | 3 | 4;
}

export function checkChannels(c: number, what: string): 1 | 3 | 4 {
  if (c !== 1 && c !== 3 && c !== 4) throw new Error(`${what}: channels must be 1, 3 or 4, got ${c}`);
  return c;
}

export function checkImageBatch(batch: ImageBatch, what = 'image batch'): void {
  const { shape, data } = batch;
  if (!Array.isArray(shape) || shape.length !== 4 || shape.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`${what}: shape must be [B, H, W, C] non-negative integers, got ${JSON.stringify(shape)}`);
  }
  const n = shape[0] * shape[1] * shape[2] * shape[3];
  if (data.length !== n) throw new Error(`${what}: ${data.length} values for shape [${shape.join(', ')}] (needs ${n})`);
}

/** Maps a float in [-1, 1] to a byte (clamped, rounded). NaN maps to 0. */
export function floatToByte(x: number): number {
  const v = Math.round((x + 1) * 127.5);
  return v > 255 ? 255 : Math.max(v, 0); // `v >= 0` is false for NaN
}

/** [-1, 1] floats -> bytes. */
export function toUint8(data: Float32Array): Uint8Array {
  const out = new Uint8Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = floatToByte(data[i]);
  return out;
}

/** Bytes -> [-1, 1] floats (x / 127.5 - 1). */
export function fromUint8(data: Uint8Array): Float32Array {
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = data[i] / 127.5 - 1;
  return out;
}

/** Image `i` of a batch as 8-bit pixels. */
export function batchImage(batch: ImageBatch, i: number): Uint8Image {
  checkImageBatch(batch);
  const [b, h, w, c] = batch.shape;
  if (!Number.isInteger(i) || i < 0 || i >= b) throw new Error(`image index ${i} out of range for a batch of ${b}`);
  const n = h * w * c;
  return { data: toUint8(batch.data.subarray(i * n, (i + 1) * n)), width: w, height: h, channels: checkChannels(c, 'image batch') };
}

/** All images of a batch as 8-bit pixels. */
export function batchToImages(batch: ImageBatch): Uint8Image[] {
  checkImageBatch(batch);
  return Array.from({ length: batch.shape[0] }, (_, i) => batchImage(batch, i));
}

/** Stacks same-sized 8-bit images into a model-space batch. */
export function imagesToBatch(images: Uint8Image[]): ImageBatch {
  if (images.length === 0) throw new Error('imagesToBatch: no images');
  const { width, height, channels } = images[0];
  const n = width * height * channels;
  const data = new Float32Array(images.length * n);
  images.forEach((im, i) => {
    if (im.width !== width || im.height !== height || im.channels !== channels) {
      throw new Error(`imagesToBatch: image ${i} is ${im.width}x${im.height}x${im.channels}, expected ${width}x${height}x${channels}`);
    }
    data.set(fromUint8(im.data), i * n);
  });
  return { data, shape: [images.length, height, width, channels] };
}

/** A model-space batch as a tf tensor `[B, H, W, C]`. */
export function batchToTensor(batch: ImageBatch): tf.Tensor4D {
  checkImageBatch(batch);
  return tf.tensor4d(batch.data, batch.shape, 'float32');
}

/** Reads a `[B, H, W, C]` (or `[H, W, C]`) tensor back into an ImageBatch. Does not dispose it. */
export async function tensorToBatch(t: tf.Tensor): Promise<ImageBatch> {
  if (t.rank !== 3 && t.rank !== 4) throw new Error(`tensorToBatch: expected rank 3 [H, W, C] or 4 [B, H, W, C], got shape [${t.shape.join(', ')}]`);
  const shape = (t.rank === 3 ? [1, ...t.shape] : t.shape) as [number, number, number, number];
  const data = (await t.data()) as Float32Array;
  return { data: data instanceof Float32Array ? data : Float32Array.from(data), shape };
}

/** Encodes 8-bit pixels as PNG. */
export async function encodePng(image: Uint8Image): Promise<Buffer> {
  checkUint8Image(image);
  let s = sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength), {
    raw: { width: image.width, height: image.height, channels: image.channels },
  });
  // Without this sharp widens 1-channel input to an RGB PNG.
  if (image.channels === 1) s = s.toColourspace('b-w');
  return s.png().toBuffer();
}

/** Decodes any image sharp reads into 8-bit pixels with the requested channel count. */
export async function decodeImage(input: Buffer | string, channels: 1 | 3 | 4 = 3): Promise<Uint8Image> {
  let s = sharp(input);
  if (channels === 1) s = s.toColourspace('b-w');
  else s = s.toColourspace('srgb');
  if (channels === 4) s = s.ensureAlpha();
  else s = s.removeAlpha();
  const { data, info } = await s.raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== channels) throw new Error(`decodeImage: got ${info.channels} channels, expected ${channels}`);
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels };
}

export interface WritePngOptions {
  /** Text chunks to embed (e.g. `{ parameters: formatInfotext(...) }`). */
  text?: Record<string, string>;
}

/** Encodes a PNG with text chunks (e.g. `{ parameters: formatInfotext(...) }`). */
export async function encodePngWithText(image: Uint8Image | ImageBatch, options: WritePngOptions = {}): Promise<Buffer> {
  let img: Uint8Image;
  if ('shape' in image) {
    if (image.shape[0] !== 1) throw new Error(`a PNG holds one image; the batch has ${image.shape[0]} (write one at a time or make a grid)`);
    img = batchImage(image, 0);
  } else {
    img = image;
  }
  let png = await encodePng(img);
  for (const [k, v] of Object.entries(options.text ?? {})) png = insertPngText(png, k, v);
  return png;
}

/** Encodes and writes a PNG (creating the folder), optionally with text chunks. Returns the bytes. */
export async function writePng(file: string, image: Uint8Image | ImageBatch, options: WritePngOptions = {}): Promise<Buffer> {
  const png = await encodePngWithText(image, options);
  // Atomic: an interrupted write never leaves a truncated PNG behind.
  writeFileAtomic(file, png);
  return png;
}

/** Writes every image of a batch (or tensor) as `${prefix}${i}.png` in `dir`. Returns the paths. */
export async function writeBatchPngs(dir: string, batch: ImageBatch | tf.Tensor, prefix = ''): Promise<string[]> {
  const b = batch instanceof tf.Tensor ? await tensorToBatch(batch) : batch;
  const files: string[] = [];
  const images = batchToImages(b);
  const width = String(images.length - 1).length;
  for (let i = 0; i < images.length; i++) {
    const file = path.join(dir, `${prefix}${String(i).padStart(width, '0')}.png`);
    await writePng(file, images[i]);
    files.push(file);
  }
  return files;
}

export function checkUint8Image(image: Uint8Image, what = 'image'): void {
  const { width, height, channels, data } = image;
  if (!Number.isInteger(width) || width <= 0 || !Number.isInteger(height) || height <= 0) {
    throw new Error(`${what}: width and height must be positive integers, got ${width}x${height}`);
  }
  checkChannels(channels, what);
  if (data.length !== width * height * channels) {
    throw new Error(`${what}: ${data.length} bytes for ${width}x${height}x${channels} (needs ${width * height * channels})`);
  }
}
