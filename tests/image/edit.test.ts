/**
 * img2img and inpainting pixel work (src/image/edit.ts) against A1111's rules: decoding any image
 * mode, the three resize modes, mask reading, blur, crop region, fill and the final overlay.
 */
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import type { Uint8Image } from '../../src/image/convert.js';
import {
  blurMask,
  cropRegion,
  expandCropRegion,
  fillMasked,
  finishEdit,
  gaussianKernel,
  loadMask,
  loadRgb,
  overlayOriginal,
  parseInpaintingFill,
  parseResizeMode,
  prepareEdit,
  resizeImage,
} from '../../src/image/edit.js';

function rgb(width: number, height: number, at: (x: number, y: number) => [number, number, number]): Uint8Image {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data.set(at(x, y), (y * width + x) * 3);
  return { data, width, height, channels: 3 };
}

function gray(width: number, height: number, at: (x: number, y: number) => number): Uint8Image {
  const data = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data[y * width + x] = at(x, y);
  return { data, width, height, channels: 1 };
}

const px = (im: Uint8Image, x: number, y: number) => Array.from(im.data.subarray((y * im.width + x) * im.channels, (y * im.width + x + 1) * im.channels));

describe('names of the modes', () => {
  it('resize mode: 0-2, A1111 names, flag spellings; anything else names what is allowed', () => {
    expect(parseResizeMode(0)).toBe(0);
    expect(parseResizeMode('Crop and resize')).toBe(1);
    expect(parseResizeMode('resize-and-fill')).toBe(2);
    expect(parseResizeMode('2')).toBe(2);
    expect(() => parseResizeMode(3)).toThrow(/resize mode must be 0, 1 or 2 \(0 = 'Just resize', 1 = 'Crop and resize', 2 = 'Resize and fill'\), got 3/);
  });

  it('inpainting fill: 0-3 or names', () => {
    expect(parseInpaintingFill('latent noise')).toBe(2);
    expect(parseInpaintingFill('latent-nothing')).toBe(3);
    expect(parseInpaintingFill(1)).toBe(1);
    expect(() => parseInpaintingFill('blur')).toThrow(/inpainting fill must be 0, 1, 2 or 3 .*got "blur"/);
  });
});

describe('reading images', () => {
  it('RGBA is flattened onto white; gray and 16-bit become 8-bit RGB', async () => {
    const rgba = await sharp(Buffer.from([255, 0, 0, 255, 0, 0, 255, 0]), { raw: { width: 2, height: 1, channels: 4 } })
      .png()
      .toBuffer();
    const a = await loadRgb(rgba);
    expect([a.width, a.height, a.channels]).toEqual([2, 1, 3]);
    expect(px(a, 0, 0)).toEqual([255, 0, 0]);
    expect(px(a, 1, 0)).toEqual([255, 255, 255]); // transparent -> the white background
    const g16 = await sharp(new Uint16Array([0, 65535, 32896]), { raw: { width: 3, height: 1, channels: 1 } })
      .toColourspace('grey16')
      .png()
      .toBuffer();
    expect((await sharp(g16).metadata()).depth).toBe('ushort');
    const b = await loadRgb(g16);
    expect([px(b, 0, 0), px(b, 1, 0), px(b, 2, 0)]).toEqual([
      [0, 0, 0],
      [255, 255, 255],
      [128, 128, 128],
    ]);
    await expect(loadRgb(Buffer.from('not an image'), 'init image')).rejects.toThrow(/^init image is not an image this program can read/);
  });

  it('a mask: the alpha channel when it is not opaque (thresholded at 128), else the luminance', async () => {
    const painted = await sharp(Buffer.from([9, 9, 9, 200, 9, 9, 9, 100, 9, 9, 9, 0]), { raw: { width: 3, height: 1, channels: 4 } })
      .png()
      .toBuffer();
    expect(Array.from((await loadMask(painted)).data)).toEqual([255, 0, 0]);
    const bw = await sharp(Buffer.from([255, 255, 255, 0, 0, 0, 128, 128, 128]), { raw: { width: 3, height: 1, channels: 3 } })
      .png()
      .toBuffer();
    const m = await loadMask(bw);
    expect(m.channels).toBe(1);
    expect(Array.from(m.data)).toEqual([255, 0, 128]);
  });
});

describe('resize modes (A1111 resize_image)', () => {
  // 8x4: left half red, right half blue, a green top row
  const wide = rgb(8, 4, (x, y) => (y === 0 ? [0, 255, 0] : x < 4 ? [255, 0, 0] : [0, 0, 255]));

  it('0 stretches, 1 crops the centre of a cover, 2 fits and repeats the edge rows', async () => {
    const just = await resizeImage(wide, 4, 4, 0);
    expect([just.width, just.height]).toEqual([4, 4]);
    const crop = await resizeImage(wide, 4, 4, 1); // scaled to 8x4 (cover), centre 4 columns kept
    expect([crop.width, crop.height]).toEqual([4, 4]);
    expect(px(crop, 0, 2)).toEqual([255, 0, 0]);
    expect(px(crop, 3, 2)).toEqual([0, 0, 255]);
    const fill = await resizeImage(wide, 8, 8, 2); // fits as 8x4 at rows 2..5, bands repeat rows 0 and 3
    expect([fill.width, fill.height]).toEqual([8, 8]);
    for (const y of [0, 1, 2]) expect(px(fill, 1, y)).toEqual([0, 255, 0]);
    for (const y of [5, 6, 7]) expect(px(fill, 1, y)).toEqual([255, 0, 0]);
    expect(px(fill, 6, 7)).toEqual([0, 0, 255]);
  });
});

describe('masks', () => {
  it("blur: OpenCV's kernel size 2 int(2.5 s + 0.5) + 1 and reflect-101 border", () => {
    const k = gaussianKernel(5, 1);
    expect(k.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    const m = gray(7, 1, (x) => (x === 0 ? 255 : 0));
    const b = blurMask(m, 1, 0); // s = 1: kernel 2 * 3 + 1 = 7, sigma 1
    const k7 = gaussianKernel(7, 1);
    // reflect-101 at x = 0: the taps at -1, -2, -3 read x = 1, 2, 3 (zero), so pixel 0 keeps k[3] of 255
    expect(b.data[0]).toBe(Math.round(255 * k7[3]));
    expect(b.data[1]).toBe(Math.round(255 * k7[2]));
    // 255 at x = 1: pixel 0 reads it at offset +1 and, reflected (-1 -> 1), at offset -1
    const b1 = blurMask(
      gray(7, 1, (x) => (x === 1 ? 255 : 0)),
      1,
      0,
    );
    expect(b1.data[0]).toBe(Math.round(255 * (k7[2] + k7[4])));
    expect(blurMask(m, 0, 0).data).toEqual(m.data);
    expect(() => blurMask(m, -1)).toThrow(/mask blur x must be an integer >= 0, got -1/);
  });

  it("crop region: the mask's box grown by the padding, then to the processing aspect (A1111's 128x32 -> 128x128)", () => {
    const m = gray(512, 512, (x, y) => (x >= 100 && x < 228 && y >= 200 && y < 232 ? 255 : 0));
    expect(cropRegion(m, 0)).toEqual([100, 200, 228, 232]);
    expect(cropRegion(m, 8)).toEqual([92, 192, 236, 240]);
    expect(expandCropRegion([100, 200, 228, 232], 512, 512, 512, 512)).toEqual([100, 152, 228, 280]);
    // pushed back inside at the bottom edge
    expect(expandCropRegion([0, 500, 128, 512], 512, 512, 512, 512)).toEqual([0, 384, 128, 512]);
    expect(
      cropRegion(
        gray(4, 4, () => 0),
        0,
      ),
    ).toBeUndefined();
  });

  it('fill: the masked hole takes the colour around it; known pixels stay', () => {
    const im = rgb(16, 16, (x, y) => (x >= 6 && x < 10 && y >= 6 && y < 10 ? [0, 0, 0] : [200, 40, 90]));
    const hole = gray(16, 16, (x, y) => (x >= 6 && x < 10 && y >= 6 && y < 10 ? 255 : 0));
    const f = fillMasked(im, hole);
    for (const [x, y] of [
      [7, 7],
      [0, 0],
      [15, 3],
    ])
      expect(px(f, x, y)).toEqual([200, 40, 90]);
  });

  it('overlay: unmasked pixels are the original, masked ones the result, in place for a region', async () => {
    const original = rgb(8, 8, () => [10, 20, 30]);
    const generated = rgb(4, 4, () => [250, 250, 250]);
    const mask = gray(8, 8, (x, y) => (x >= 4 && y >= 4 ? 255 : 0));
    const out = await overlayOriginal(original, generated, mask, [4, 4, 8, 8]);
    expect(px(out, 0, 0)).toEqual([10, 20, 30]);
    expect(px(out, 5, 6)).toEqual([250, 250, 250]);
    const half = await overlayOriginal(
      original,
      generated,
      gray(8, 8, () => 128),
    );
    expect(px(half, 2, 2)).toEqual([Math.round(250 * (128 / 255) + 10 * (127 / 255)), 135, 140]);
  });
});

describe('prepareEdit and finishEdit', () => {
  const base = {
    width: 8,
    height: 8,
    resizeMode: 0 as const,
    maskBlurX: 0,
    maskBlurY: 0,
    maskInvert: false,
    inpaintFullRes: false,
    inpaintFullResPadding: 0,
    fill: 1 as const,
  };

  it('a mask of another size than the image is an error naming both', async () => {
    await expect(prepareEdit({ ...base, images: [rgb(16, 12, () => [0, 0, 0])], mask: gray(16, 16, () => 255) })).rejects.toThrow(
      /the mask is 16x16 but the init image is 16x12; they must be the same size/,
    );
    await expect(prepareEdit({ ...base, images: [rgb(8, 8, () => [0, 0, 0])], mask: gray(8, 8, () => 0) })).rejects.toThrow(/the mask has no white pixel/);
  });

  it('without a mask: the images resized to the processing size', async () => {
    const p = await prepareEdit({ ...base, images: [rgb(40, 20, () => [1, 2, 3])] });
    expect([p.images[0].width, p.images[0].height, p.mask, p.overlay]).toEqual([8, 8, undefined, undefined]);
  });

  it('inpaint only masked: the grown region at processing size, pasted back into the full-size original', async () => {
    const im = rgb(32, 32, (x) => [x * 8, 0, 0]);
    const mask = gray(32, 32, (x, y) => (x >= 20 && x < 24 && y >= 4 && y < 8 ? 255 : 0));
    const p = await prepareEdit({ ...base, images: [im], mask, inpaintFullRes: true, inpaintFullResPadding: 2 });
    expect(p.overlay!.region).toEqual([18, 2, 26, 10]);
    expect([p.images[0].width, p.mask!.width]).toEqual([8, 8]);
    expect(px(p.images[0], 0, 0)).toEqual(px(im, 18, 2)); // the crop, 1:1 here
    const out = await finishEdit(
      p,
      rgb(8, 8, () => [0, 255, 0]),
      0,
    );
    expect([out.width, out.height]).toEqual([32, 32]);
    expect(px(out, 21, 5)).toEqual([0, 255, 0]);
    expect(px(out, 19, 3)).toEqual(px(im, 19, 3)); // inside the region, outside the mask
    expect(px(out, 2, 30)).toEqual(px(im, 2, 30));
  });
});
