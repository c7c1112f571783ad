/**
 * Image preprocessing for training: decode (EXIF-oriented, alpha flattened onto white),
 * resize so the shorter side equals the training size, crop a size x size square (center, or
 * random with the project Generator), optionally flip horizontally (Generator), and map to
 * float32 HWC in [-1, 1].
 *
 * The resize is split from crop/flip so a loader can keep the resized pixels in memory and only
 * redo the cheap crop/flip each epoch; the resized size is computed here (not by sharp) so crop
 * offsets can be drawn from the generator before the image is even read.
 */
import sharp from 'sharp';
import type { Generator } from '../random/generator.js';
import type { Uint8Image } from '../image/convert.js';

export type CropMode = 'center' | 'random';

export interface TransformOptions {
  /** Square training size. */
  size: number;
  /** 3 = RGB (default), 1 = grayscale. */
  channels?: 1 | 3;
  /** Default 'center'. */
  crop?: CropMode;
  /** Random horizontal flip with probability 0.5; default false. */
  flip?: boolean;
}

/** One image in model space: float32 `[H, W, C]` in [-1, 1]. */
export interface ImageArray {
  data: Float32Array; // [H, W, C]
  shape: [number, number, number];
}

export interface Augment {
  left: number;
  top: number;
  flip: boolean;
}

export function checkTransform(o: TransformOptions): Required<TransformOptions> {
  if (!Number.isInteger(o.size) || o.size < 1) throw new Error(`transform: size must be a positive integer, got ${o.size}`);
  const channels = o.channels ?? 3;
  if (channels !== 1 && channels !== 3) throw new Error(`transform: channels must be 1 (grayscale) or 3 (RGB), got ${channels}`);
  const crop = o.crop ?? 'center';
  if (crop !== 'center' && crop !== 'random') throw new Error(`transform: crop must be 'center' or 'random', got ${JSON.stringify(crop)}`);
  return { size: o.size, channels, crop, flip: o.flip ?? false };
}

/** Size after scaling the shorter side of a width x height image to `size` (aspect kept, rounded). */
export function resizedDims(width: number, height: number, size: number): { width: number; height: number } {
  if (width <= height) return { width: size, height: Math.max(size, Math.round((height * size) / width)) };
  return { width: Math.max(size, Math.round((width * size) / height)), height: size };
}

/**
 * Draws crop offsets and the flip for an image whose resized size is rw x rh. Center crop and
 * no-flip draw nothing, so the generator advances only for the random choices in use.
 */
export function drawAugment(rw: number, rh: number, options: TransformOptions, rng?: Generator): Augment {
  const { size, crop, flip } = checkTransform(options);
  let left = Math.floor((rw - size) / 2);
  let top = Math.floor((rh - size) / 2);
  if (crop === 'random' && (rw > size || rh > size)) {
    if (!rng) throw new Error('transform: random crop needs a Generator');
    left = rng.randint(0, rw - size + 1);
    top = rng.randint(0, rh - size + 1);
  }
  let f = false;
  if (flip) {
    if (!rng) throw new Error('transform: random flip needs a Generator');
    f = rng.uniform() < 0.5;
  }
  return { left, top, flip: f };
}

/** Decodes and resizes (shorter side -> size). Input: a file path or encoded bytes. */
export async function loadResized(input: string | Buffer, size: number, channels: 1 | 3 = 3): Promise<Uint8Image> {
  const md = await sharp(input).metadata();
  let w = md.width ?? 0;
  let h = md.height ?? 0;
  if ((md.orientation ?? 1) >= 5) [w, h] = [h, w];
  if (!w || !h) throw new Error('image has no dimensions');
  const target = resizedDims(w, h, size);
  let s = sharp(input, { failOn: 'truncated' }).rotate().flatten({ background: '#ffffff' });
  if (target.width !== w || target.height !== h) s = s.resize(target.width, target.height, { fit: 'fill', kernel: 'lanczos3' });
  s = channels === 1 ? s.grayscale() : s.toColourspace('srgb');
  const { data, info } = await s.raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== channels || info.width !== target.width || info.height !== target.height) {
    throw new Error(`decoded ${info.width}x${info.height}x${info.channels}, expected ${target.width}x${target.height}x${channels}`);
  }
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels };
}

/** Crops size x size at (left, top), optionally mirrors, and maps bytes to [-1, 1]. */
export function cropFlipNormalize(img: Uint8Image, size: number, aug: Augment, out?: Float32Array): Float32Array {
  const { width: w, height: h, channels: c, data } = img;
  if (aug.left < 0 || aug.top < 0 || aug.left + size > w || aug.top + size > h) {
    throw new Error(`crop ${size}x${size} at (${aug.left}, ${aug.top}) does not fit a ${w}x${h} image`);
  }
  const res = out ?? new Float32Array(size * size * c);
  if (res.length !== size * size * c) throw new Error(`output has ${res.length} values, needs ${size * size * c}`);
  for (let y = 0; y < size; y++) {
    const srcRow = ((aug.top + y) * w + aug.left) * c;
    const dstRow = y * size * c;
    for (let x = 0; x < size; x++) {
      const sx = aug.flip ? size - 1 - x : x;
      for (let k = 0; k < c; k++) res[dstRow + x * c + k] = data[srcRow + sx * c + k] / 127.5 - 1;
    }
  }
  return res;
}

/** Loads one image fully preprocessed: `[size, size, C]` float32 in [-1, 1]. */
export async function loadImageArray(input: string | Buffer, options: TransformOptions, rng?: Generator): Promise<ImageArray> {
  const o = checkTransform(options);
  const img = await loadResized(input, o.size, o.channels);
  const aug = drawAugment(img.width, img.height, o, rng);
  return { data: cropFlipNormalize(img, o.size, aug), shape: [o.size, o.size, o.channels] };
}
