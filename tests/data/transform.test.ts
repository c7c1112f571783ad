import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { Generator } from '../../src/random/generator.js';
import { cropFlipNormalize, drawAugment, loadImageArray, loadResized, resizedDims } from '../../src/data/transform.js';

const RED = [1, -1, -1];
const BLUE = [-1, -1, 1];

/** Left half red, right half blue, as PNG. */
async function halves(width: number, height: number): Promise<Buffer> {
  const px = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) px.set(x < width / 2 ? [255, 0, 0] : [0, 0, 255], (y * width + x) * 3);
  }
  return sharp(px, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}

/** Column x has red = 25 * x, green = 10 * y. */
async function ramp(width: number, height: number): Promise<Buffer> {
  const px = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) px.set([25 * x, 10 * y, 0], (y * width + x) * 3);
  return sharp(px, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}

function pixel(data: Float32Array, size: number, c: number, x: number, y: number): number[] {
  const i = (y * size + x) * c;
  return Array.from(data.subarray(i, i + c));
}

describe('image transform', () => {
  it('computes the resized size from the shorter side', () => {
    expect(resizedDims(40, 24, 16)).toEqual({ width: 27, height: 16 });
    expect(resizedDims(24, 36, 16)).toEqual({ width: 16, height: 24 });
    expect(resizedDims(16, 16, 32)).toEqual({ width: 32, height: 32 });
  });

  it('center-crops a left-red right-blue image to red red blue blue, and flips it', async () => {
    const png = await halves(8, 4);
    const out = await loadImageArray(png, { size: 4 });
    expect(out.shape).toEqual([4, 4, 3]);
    for (let y = 0; y < 4; y++) {
      expect([0, 1, 2, 3].map((x) => pixel(out.data, 4, 3, x, y))).toEqual([RED, RED, BLUE, BLUE]);
    }
    const img = await loadResized(png, 4);
    const flipped = cropFlipNormalize(img, 4, { left: 2, top: 0, flip: true });
    expect([0, 1, 2, 3].map((x) => pixel(flipped, 4, 3, x, 0))).toEqual([BLUE, BLUE, RED, RED]);
    // Uncropped flip of the whole 8-wide image: blue on the left.
    const whole = await loadResized(await halves(8, 8), 8);
    const wf = cropFlipNormalize(whole, 8, { left: 0, top: 0, flip: true });
    expect(pixel(wf, 8, 3, 0, 0)).toEqual(BLUE);
    expect(pixel(wf, 8, 3, 7, 7)).toEqual(RED);
  });

  it('draws random crop and flip from the Generator (replayable)', async () => {
    const png = await ramp(10, 4);
    const opts = { size: 4, crop: 'random' as const, flip: true };
    const seen = new Set<string>();
    for (let seed = 0; seed < 12; seed++) {
      const out = await loadImageArray(png, opts, new Generator(seed));
      const replay = new Generator(seed);
      const left = replay.randint(0, 7);
      const top = replay.randint(0, 1);
      const flip = replay.uniform() < 0.5;
      expect(top).toBe(0);
      // Red channel of column x of the output = 25 * source column.
      const cols = [0, 1, 2, 3].map((x) => Math.round(((pixel(out.data, 4, 3, x, 0)[0] + 1) * 255) / 2 / 25));
      const src = [0, 1, 2, 3].map((x) => left + (flip ? 3 - x : x));
      expect(cols).toEqual(src);
      seen.add(`${left}${flip}`);
    }
    expect(seen.size).toBeGreaterThan(3);
    expect(() => drawAugment(10, 4, opts)).toThrow(/needs a Generator/);
    // Center crop without flip draws nothing.
    const g = new Generator(1);
    const before = g.getState();
    expect(drawAugment(10, 4, { size: 4 }, g)).toEqual({ left: 3, top: 0, flip: false });
    expect(g.getState()).toEqual(before);
  });

  it('resizes the shorter side then center-crops (values in [-1, 1])', async () => {
    const out = await loadImageArray(await halves(32, 16), { size: 8 });
    expect(out.shape).toEqual([8, 8, 3]);
    expect(out.data.every((v) => v >= -1 && v <= 1)).toBe(true);
    // Resized to 16x8; crop columns 4..11: left part red, right part blue.
    const left = pixel(out.data, 8, 3, 0, 4);
    const right = pixel(out.data, 8, 3, 7, 4);
    expect(left[0]).toBeGreaterThan(0.95);
    expect(left[2]).toBeLessThan(-0.95);
    expect(right[0]).toBeLessThan(-0.95);
    expect(right[2]).toBeGreaterThan(0.95);
  });

  it('upscales small images and converts to grayscale', async () => {
    const out = await loadImageArray(await ramp(4, 4), { size: 8, channels: 1 });
    expect(out.shape).toEqual([8, 8, 1]);
    expect(out.data.length).toBe(64);
    expect(out.data.every((v) => v >= -1 && v <= 1)).toBe(true);
  });

  it('flattens transparency onto white', async () => {
    const rgba = Buffer.from([255, 0, 0, 255, 0, 0, 0, 0, 255, 0, 0, 255, 0, 0, 0, 0]);
    const png = await sharp(rgba, { raw: { width: 2, height: 2, channels: 4 } })
      .png()
      .toBuffer();
    const out = await loadImageArray(png, { size: 2 });
    expect(pixel(out.data, 2, 3, 0, 0)).toEqual(RED);
    expect(pixel(out.data, 2, 3, 1, 0)).toEqual([1, 1, 1]);
  });

  it('rejects bad options', async () => {
    const png = await halves(8, 4);
    await expect(loadImageArray(png, { size: 0 })).rejects.toThrow(/size must be a positive integer/);
    await expect(loadImageArray(png, { size: 4, channels: 2 as 1 })).rejects.toThrow(/channels must be 1 \(grayscale\) or 3/);
    await expect(loadImageArray(png, { size: 4, crop: 'middle' as 'center' })).rejects.toThrow(/crop must be 'center' or 'random'/);
  });
});
