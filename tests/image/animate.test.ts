import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { encodeAnimatedGif, encodeAnimatedWebp, encodeAnimation } from '../../src/image/animate.js';
import type { Uint8Image } from '../../src/image/convert.js';

function frame(w: number, h: number, c: 1 | 3 | 4, v: number[]): Uint8Image {
  const data = new Uint8Array(w * h * c);
  for (let i = 0; i < w * h; i++) data.set(v, i * c);
  return { data, width: w, height: h, channels: c };
}

const RGB = [frame(8, 6, 3, [255, 0, 0]), frame(8, 6, 3, [0, 255, 0]), frame(8, 6, 3, [0, 0, 255])];

describe('animated WebP / GIF', () => {
  it('writes an animated WebP that sharp reads back frame by frame', async () => {
    const webp = await encodeAnimatedWebp(RGB, { delay: [100, 200, 300], loop: 0 });
    const md = await sharp(webp, { animated: true }).metadata();
    expect(md.format).toBe('webp');
    expect([md.pages, md.pageHeight, md.width]).toEqual([3, 6, 8]);
    expect(md.delay).toEqual([100, 200, 300]);
    expect(md.loop).toBe(0);
    const { data, info } = await sharp(webp, { animated: true }).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height]).toEqual([8, 18]);
    const n = 8 * 6 * info.channels;
    for (let f = 0; f < 3; f++) {
      expect(Array.from(data.subarray(f * n, f * n + 3))).toEqual(Array.from(RGB[f].data.subarray(0, 3)));
    }
  });

  it('handles grayscale and RGBA frames, one delay for all, finite loops', async () => {
    const gray = [frame(5, 5, 1, [0]), frame(5, 5, 1, [128]), frame(5, 5, 1, [255])];
    const md = await sharp(await encodeAnimatedWebp(gray, { delay: 50, loop: 3 }), { animated: true }).metadata();
    expect([md.pages, md.loop]).toEqual([3, 3]);
    expect(md.delay).toEqual([50, 50, 50]);
    const rgba = [frame(4, 4, 4, [255, 0, 0, 255]), frame(4, 4, 4, [0, 0, 255, 128])];
    const mdA = await sharp(await encodeAnimatedWebp(rgba), { animated: true }).metadata();
    expect([mdA.pages, mdA.hasAlpha]).toEqual([2, true]);
    const lossy = await encodeAnimatedWebp(RGB, { lossless: false, quality: 50 });
    expect((await sharp(lossy, { animated: true }).metadata()).pages).toBe(3);
  });

  it('writes an animated GIF', async () => {
    const gif = await encodeAnimation(RGB, 'gif', { delay: 120 });
    expect(gif.subarray(0, 6).toString('latin1')).toBe('GIF89a');
    const md = await sharp(gif, { animated: true }).metadata();
    expect([md.format, md.pages, md.pageHeight]).toEqual(['gif', 3, 6]);
    expect(md.delay).toEqual([120, 120, 120]);
    const { data } = await sharp(gif, { animated: true }).raw().toBuffer({ resolveWithObject: true });
    expect(Array.from(data.subarray(0, 3))).toEqual([255, 0, 0]);
    await expect(encodeAnimatedGif([])).rejects.toThrow(/no frames/);
  });

  it('rejects mismatched frames and bad delays', async () => {
    await expect(encodeAnimatedWebp([RGB[0], frame(4, 4, 3, [0, 0, 0])])).rejects.toThrow(/frame 1 is 4x4x3, expected 8x6x3/);
    await expect(encodeAnimatedWebp(RGB, { delay: [1, 2] })).rejects.toThrow(/2 delays for 3 frames/);
    await expect(encodeAnimatedWebp(RGB, { delay: -1 })).rejects.toThrow(/delay must be an integer/);
    await expect(encodeAnimation(RGB, 'apng' as 'gif')).rejects.toThrow(/'webp' or 'gif'/);
  });
});
