/**
 * Pixel work of img2img and inpainting, as AUTOMATIC1111 does it (modules/images.py resize_image,
 * modules/masking.py, modules/processing.py StableDiffusionProcessingImg2Img.init and
 * apply_overlay): input images of any format, size and mode made 8-bit RGB, the three resize
 * modes, the repaint mask (alpha or luminance, invert, Gaussian blur), "inpaint only masked"
 * (crop region around the mask, expanded to the processing aspect ratio), the "fill" of the
 * masked area, and the final composite that keeps the unmasked pixels of the original.
 *
 * Masks are 1-channel Uint8Images, 255 = repaint.
 */
import sharp from 'sharp';
import { checkUint8Image, type Uint8Image } from './convert.js';

export { INPAINTING_FILLS, type InpaintingFill, RESIZE_MODES, type ResizeMode, parseInpaintingFill, parseResizeMode } from './edit-names.js';
import type { InpaintingFill, ResizeMode } from './edit-names.js';

/** A rectangle [x1, y1, x2, y2) in pixels. */
export type Region = [number, number, number, number];

function raw(image: Uint8Image) {
  checkUint8Image(image);
  return sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength), {
    raw: { width: image.width, height: image.height, channels: image.channels },
  });
}

async function toImage(s: sharp.Sharp, channels: 1 | 3): Promise<Uint8Image> {
  const { data, info } = await s.raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== channels) throw new Error(`expected ${channels} channels, got ${info.channels}`);
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels };
}

function describeInput(e: unknown, what: string): Error {
  return new Error(`${what} is not an image this program can read (PNG, JPEG, WebP, GIF, TIFF, AVIF): ${(e as Error).message}`);
}

/**
 * Any image sharp decodes (gray, palette, RGBA, 16-bit...) as 8-bit RGB, transparency flattened
 * onto white (A1111's img2img_background_color default).
 */
export async function loadRgb(input: Buffer | string, what = 'image'): Promise<Uint8Image> {
  try {
    return await toImage(sharp(input).flatten({ background: '#ffffff' }).toColourspace('srgb'), 3);
  } catch (e) {
    throw describeInput(e, what);
  }
}

/**
 * A mask image as 8-bit gray, 255 = repaint (A1111's create_binary_mask): where it has an alpha
 * channel that is not fully opaque, the alpha thresholded at 128 (a mask painted on a transparent
 * layer); otherwise its luminance, as it is (gray levels are kept; the blur makes them anyway).
 */
export async function loadMask(input: Buffer | string, what = 'mask'): Promise<Uint8Image> {
  try {
    const meta = await sharp(input).metadata();
    if (meta.hasAlpha) {
      const alpha = await toImage(sharp(input).ensureAlpha().extractChannel('alpha').toColourspace('b-w'), 1);
      if (alpha.data.some((v) => v !== 255)) {
        for (let i = 0; i < alpha.data.length; i++) alpha.data[i] = alpha.data[i] > 128 ? 255 : 0;
        return alpha;
      }
    }
    return await toImage(sharp(input).flatten({ background: '#000000' }).toColourspace('b-w'), 1);
  } catch (e) {
    throw describeInput(e, what);
  }
}

/** A new image of width x height resized with Lanczos (A1111's default upscaler for img2img, "None" = LANCZOS). */
async function lanczos(image: Uint8Image, width: number, height: number): Promise<Uint8Image> {
  if (image.width === width && image.height === height) return { ...image, data: image.data.slice() };
  let s = raw(image).resize(width, height, { fit: 'fill', kernel: 'lanczos3' });
  if (image.channels === 1) s = s.toColourspace('b-w');
  return toImage(s, image.channels as 1 | 3);
}

/**
 * A1111's resize_image: 0 "Just resize" stretches to width x height; 1 "Crop and resize" scales to
 * cover it keeping the aspect ratio and crops the centre; 2 "Resize and fill" scales to fit inside
 * it and fills the two bands left over by stretching the resized image's edge rows (or columns).
 */
export async function resizeImage(image: Uint8Image, width: number, height: number, mode: ResizeMode): Promise<Uint8Image> {
  checkUint8Image(image);
  if (!Number.isInteger(width) || width < 1 || !Number.isInteger(height) || height < 1) {
    throw new Error(`resizeImage: width and height must be positive integers, got ${width}x${height}`);
  }
  if (image.channels !== 1 && image.channels !== 3) throw new Error(`resizeImage: 1 or 3 channels, got ${image.channels}`);
  if (mode === 0) return lanczos(image, width, height);
  const ratio = width / height;
  const srcRatio = image.width / image.height;
  // Integer division as A1111's `//`.
  const cover = mode === 1 ? ratio > srcRatio : ratio < srcRatio;
  const srcW = cover ? width : Math.max(1, Math.floor((image.width * height) / image.height));
  const srcH = cover ? Math.max(1, Math.floor((image.height * width) / image.width)) : height;
  const resized = await lanczos(image, srcW, srcH);
  const x0 = Math.floor(width / 2) - Math.floor(srcW / 2);
  const y0 = Math.floor(height / 2) - Math.floor(srcH / 2);
  const c = image.channels;
  const out: Uint8Image = { data: new Uint8Array(width * height * c), width, height, channels: c };
  for (let y = 0; y < height; y++) {
    // "Resize and fill": rows above and below (or columns beside) repeat the nearest edge of the
    // resized image; "Crop and resize": the resized image covers the frame.
    const sy = Math.min(Math.max(y - y0, 0), srcH - 1);
    for (let x = 0; x < width; x++) {
      const sx = Math.min(Math.max(x - x0, 0), srcW - 1);
      const from = (sy * srcW + sx) * c;
      const to = (y * width + x) * c;
      for (let k = 0; k < c; k++) out.data[to + k] = resized.data[from + k];
    }
  }
  return out;
}

/** 255 - mask (A1111's inpainting_mask_invert). */
export function invertMask(mask: Uint8Image): Uint8Image {
  checkMask(mask);
  return { ...mask, data: mask.data.map((v) => 255 - v) };
}

function checkMask(mask: Uint8Image, what = 'mask'): void {
  checkUint8Image(mask, what);
  if (mask.channels !== 1) throw new Error(`${what}: must have 1 channel, got ${mask.channels}`);
}

/**
 * The normalised 1-D Gaussian of OpenCV's getGaussianKernel for size k and std sigma:
 * exp(-(i - (k - 1) / 2)^2 / (2 sigma^2)).
 */
export function gaussianKernel(k: number, sigma: number): Float64Array {
  const w = new Float64Array(k);
  let sum = 0;
  for (let i = 0; i < k; i++) {
    const d = i - (k - 1) / 2;
    w[i] = Math.exp(-(d * d) / (2 * sigma * sigma));
    sum += w[i];
  }
  for (let i = 0; i < k; i++) w[i] /= sum;
  return w;
}

/** OpenCV's default border, BORDER_REFLECT_101: ... 2 1 | 0 1 2 ... n-1 | n-2 ... */
function reflect101(i: number, n: number): number {
  if (n === 1) return 0;
  const period = 2 * (n - 1);
  let j = ((i % period) + period) % period;
  if (j >= n) j = period - j;
  return j;
}

/** Blurs float planes [h, w, c] along one axis in place with kernel `k`. */
function blurAxis(data: Float32Array, w: number, h: number, c: number, k: Float64Array, axis: 'x' | 'y', border: (i: number, n: number) => number): void {
  const r = (k.length - 1) / 2;
  const n = axis === 'x' ? w : h;
  const line = new Float32Array(n * c);
  const lines = axis === 'x' ? h : w;
  for (let l = 0; l < lines; l++) {
    const at = (i: number) => (axis === 'x' ? (l * w + i) * c : (i * w + l) * c);
    for (let i = 0; i < n; i++) for (let ch = 0; ch < c; ch++) line[i * c + ch] = data[at(i) + ch];
    for (let i = 0; i < n; i++) {
      for (let ch = 0; ch < c; ch++) {
        let s = 0;
        for (let j = -r; j <= r; j++) s += k[j + r] * line[border(i + j, n) * c + ch];
        data[at(i) + ch] = s;
      }
    }
  }
}

/**
 * A1111's mask blur: cv2.GaussianBlur along x with std blurX and kernel 2 int(2.5 blurX + 0.5) + 1,
 * then along y with blurY (0 = no blur on that axis), OpenCV's reflect-101 border, rounded back to bytes.
 */
export function blurMask(mask: Uint8Image, blurX: number, blurY: number = blurX): Uint8Image {
  checkMask(mask);
  for (const [v, name] of [
    [blurX, 'mask blur x'],
    [blurY, 'mask blur y'],
  ] as const) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`${name} must be an integer >= 0, got ${v}`);
  }
  if (blurX === 0 && blurY === 0) return { ...mask, data: mask.data.slice() };
  const f = Float32Array.from(mask.data);
  for (const [s, axis] of [
    [blurX, 'x'],
    [blurY, 'y'],
  ] as const) {
    if (s > 0) blurAxis(f, mask.width, mask.height, 1, gaussianKernel(2 * Math.floor(2.5 * s + 0.5) + 1, s), axis, reflect101);
  }
  return { ...mask, data: Uint8Array.from(f, (v) => Math.min(255, Math.max(0, Math.round(v)))) };
}

/**
 * A1111's get_crop_region: the bounding box [x1, y1, x2, y2) of the mask's non-zero pixels, grown
 * by `pad` on every side and clipped to the image. Undefined for an all-zero mask.
 */
export function cropRegion(mask: Uint8Image, pad: number): Region | undefined {
  checkMask(mask);
  if (!Number.isInteger(pad) || pad < 0) throw new Error(`inpaint padding must be an integer >= 0, got ${pad}`);
  const { width: w, height: h, data } = mask;
  let x1 = w;
  let y1 = h;
  let x2 = -1;
  let y2 = -1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (data[y * w + x] !== 0) {
        if (x < x1) x1 = x;
        if (x > x2) x2 = x;
        if (y < y1) y1 = y;
        if (y > y2) y2 = y;
      }
    }
  }
  if (x2 < 0) return undefined;
  return [Math.max(x1 - pad, 0), Math.max(y1 - pad, 0), Math.min(x2 + 1 + pad, w), Math.min(y2 + 1 + pad, h)];
}

/**
 * A1111's expand_crop_region: grows the region (centred, then shifted back inside the image) until
 * its aspect ratio is that of the processing size, along the axis that is too short.
 */
export function expandCropRegion(region: Region, processingWidth: number, processingHeight: number, imageWidth: number, imageHeight: number): Region {
  let [x1, y1, x2, y2] = region;
  const ratioRegion = (x2 - x1) / (y2 - y1);
  const ratioProcessing = processingWidth / processingHeight;
  const grow = (lo: number, hi: number, want: number, size: number): [number, number] => {
    const diff = Math.trunc(want - (hi - lo));
    lo -= Math.floor(diff / 2);
    hi += diff - Math.floor(diff / 2);
    if (hi >= size) {
      lo -= hi - size;
      hi = size;
    }
    if (lo < 0) {
      hi -= lo;
      lo = 0;
    }
    return [lo, Math.min(hi, size)];
  };
  if (ratioRegion > ratioProcessing) [y1, y2] = grow(y1, y2, (x2 - x1) / ratioProcessing, imageHeight);
  else [x1, x2] = grow(x1, x2, (y2 - y1) * ratioProcessing, imageWidth);
  return [x1, y1, x2, y2];
}

/** The pixels of `region` as a new image. */
export function cropImage(image: Uint8Image, region: Region): Uint8Image {
  checkUint8Image(image);
  const [x1, y1, x2, y2] = region;
  if (!(x1 >= 0 && y1 >= 0 && x2 <= image.width && y2 <= image.height && x2 > x1 && y2 > y1)) {
    throw new Error(`cropImage: region [${region.join(', ')}] is not inside the ${image.width}x${image.height} image`);
  }
  const w = x2 - x1;
  const h = y2 - y1;
  const c = image.channels;
  const data = new Uint8Array(w * h * c);
  for (let y = 0; y < h; y++) data.set(image.data.subarray(((y1 + y) * image.width + x1) * c, ((y1 + y) * image.width + x2) * c), y * w * c);
  return { data, width: w, height: h, channels: c };
}

/** Edge-clamped Gaussian blur of float planes [h, w, c] with std sigma (PIL's GaussianBlur radius); 0 = none. */
function gaussianBlurClamp(data: Float32Array, w: number, h: number, c: number, sigma: number): Float32Array {
  const out = data.slice();
  if (sigma <= 0) return out;
  // Beyond 3 sigma the weights are < 1%; a kernel wider than the image only repeats the edges.
  const r = Math.min(Math.ceil(3 * sigma), Math.max(w, h) * 2);
  const k = gaussianKernel(2 * r + 1, sigma);
  const clamp = (i: number, n: number) => Math.min(Math.max(i, 0), n - 1);
  blurAxis(out, w, h, c, k, 'x', clamp);
  blurAxis(out, w, h, c, k, 'y', clamp);
  return out;
}

/**
 * A1111's masking.fill ("masked content: fill"): the masked area painted with the colours around
 * it, blurred from far to near. The unmasked pixels (weight 1 - mask) are blurred with radii 256,
 * 64, 16, 16, 4 x 4, 2 x 2, 0, each result (colour over blurred weight) composited over the last.
 */
export function fillMasked(image: Uint8Image, mask: Uint8Image): Uint8Image {
  checkUint8Image(image);
  checkMask(mask);
  if (image.channels !== 3) throw new Error(`fillMasked: the image must be RGB, got ${image.channels} channels`);
  if (image.width !== mask.width || image.height !== mask.height) {
    throw new Error(`fillMasked: the image is ${image.width}x${image.height} but the mask ${mask.width}x${mask.height}`);
  }
  const { width: w, height: h } = image;
  const n = w * h;
  // Premultiplied RGBA of the known pixels: alpha = 1 - mask.
  const known = new Float32Array(n * 4);
  for (let i = 0; i < n; i++) {
    const a = 1 - mask.data[i] / 255;
    for (let k = 0; k < 3; k++) known[i * 4 + k] = (image.data[i * 3 + k] / 255) * a;
    known[i * 4 + 3] = a;
  }
  // The result, straight (not premultiplied) RGBA, starts transparent.
  const rgb = new Float32Array(n * 3);
  const alpha = new Float32Array(n);
  for (const [radius, repeats] of [
    [256, 1],
    [64, 1],
    [16, 2],
    [4, 4],
    [2, 2],
    [0, 1],
  ] as const) {
    const b = gaussianBlurClamp(known, w, h, 4, radius);
    for (let rep = 0; rep < repeats; rep++) {
      for (let i = 0; i < n; i++) {
        const sa = b[i * 4 + 3];
        if (sa <= 0) continue;
        // Porter-Duff "over" of the blurred layer (colour b / sa, alpha sa) onto the result.
        const da = alpha[i];
        const oa = sa + da * (1 - sa);
        for (let k = 0; k < 3; k++) rgb[i * 3 + k] = (b[i * 4 + k] + rgb[i * 3 + k] * da * (1 - sa)) / oa;
        alpha[i] = oa;
      }
    }
  }
  return { data: Uint8Array.from(rgb, (v) => Math.min(255, Math.max(0, Math.round(v * 255)))), width: w, height: h, channels: 3 };
}

/**
 * The result of inpainting over the original (A1111's apply_overlay): `generated` is resized to
 * `region`'s size and placed there ("inpaint only masked"; the whole image otherwise), then the
 * original is laid over it with opacity 1 - overlayMask / 255, so unmasked pixels stay the
 * original's and the blurred mask edge blends the two.
 */
export async function overlayOriginal(original: Uint8Image, generated: Uint8Image, overlayMask: Uint8Image, region?: Region): Promise<Uint8Image> {
  checkUint8Image(original);
  checkMask(overlayMask, 'overlay mask');
  if (overlayMask.width !== original.width || overlayMask.height !== original.height) {
    throw new Error(`overlay: the original is ${original.width}x${original.height} but its mask ${overlayMask.width}x${overlayMask.height}`);
  }
  const [x1, y1, x2, y2] = region ?? [0, 0, original.width, original.height];
  const placed = await resizeImage(generated, x2 - x1, y2 - y1, region ? 1 : 0);
  const out = { ...original, data: original.data.slice() };
  const c = original.channels;
  for (let y = y1; y < y2; y++) {
    for (let x = x1; x < x2; x++) {
      const m = overlayMask.data[y * original.width + x] / 255;
      if (m === 0) continue;
      const to = (y * original.width + x) * c;
      const from = ((y - y1) * placed.width + (x - x1)) * c;
      for (let k = 0; k < c; k++) out.data[to + k] = Math.round(placed.data[from + k] * m + original.data[to + k] * (1 - m));
    }
  }
  return out;
}

/** Width x height of an image, for messages. */
export function sizeOf(image: { width: number; height: number }): string {
  return `${image.width}x${image.height}`;
}

/** What img2img or inpainting asks of the pixels (A1111's StableDiffusionProcessingImg2Img fields). */
export interface EditPixelsOptions {
  /** Init images, RGB (loadRgb); with a mask each must have the mask's size. */
  images: Uint8Image[];
  /** Repaint mask (loadMask), 255 = repaint. */
  mask?: Uint8Image;
  /** The processing size (A1111's width x height). */
  width: number;
  height: number;
  resizeMode: ResizeMode;
  /** Mask blur std in pixels along x and y (A1111's mask_blur_x / mask_blur_y; default 4). */
  maskBlurX: number;
  maskBlurY: number;
  /** Repaint the black part instead (inpainting_mask_invert). */
  maskInvert: boolean;
  /** "Inpaint only masked": process the mask's bounding box (grown by the padding) at full size. */
  inpaintFullRes: boolean;
  inpaintFullResPadding: number;
  fill: InpaintingFill;
}

export interface EditPixels {
  /** What the VAE encodes, width x height each. */
  images: Uint8Image[];
  /** The processed mask at width x height (blurred, 255 = repaint): the latent mask and an inpainting U-Net's mask come from it. */
  mask?: Uint8Image;
  /** For finishEdit: the originals at the output size, the overlay mask, and where the result goes. */
  overlay?: { originals: Uint8Image[]; mask: Uint8Image; region?: Region };
}

/**
 * The pixel half of A1111's img2img init: resize the init images (or, inpainting only the masked
 * area, crop the mask's region and resize it), make the mask (invert, blur, resize or crop) and its
 * overlay, and fill the masked area for inpainting_fill 0.
 */
export async function prepareEdit(o: EditPixelsOptions): Promise<EditPixels> {
  if (o.images.length === 0) throw new Error('img2img needs at least one init image');
  o.images.forEach((im, i) => {
    checkUint8Image(im, `init image ${i}`);
  });
  if (!o.mask) {
    return { images: await Promise.all(o.images.map((im) => resizeImage(im, o.width, o.height, o.resizeMode))) };
  }
  checkMask(o.mask);
  const bad = o.images.findIndex((im) => im.width !== o.mask!.width || im.height !== o.mask!.height);
  if (bad >= 0) {
    throw new Error(
      `the mask is ${sizeOf(o.mask)} but ${o.images.length > 1 ? `init image ${bad}` : 'the init image'} is ${sizeOf(o.images[bad])}; they must be the same size`,
    );
  }
  let mask = o.maskInvert ? invertMask(o.mask) : o.mask;
  if (!mask.data.some((v) => v !== 0)) {
    throw new Error(`the mask has no white pixel: nothing to repaint (white = repaint${o.maskInvert ? '; it was inverted as asked' : ''})`);
  }
  mask = blurMask(mask, o.maskBlurX, o.maskBlurY);
  let processed: Uint8Image;
  let overlayMask: Uint8Image;
  let region: Region | undefined;
  let images: Uint8Image[];
  let originals: Uint8Image[];
  if (o.inpaintFullRes) {
    overlayMask = mask;
    region = expandCropRegion(cropRegion(mask, o.inpaintFullResPadding)!, o.width, o.height, mask.width, mask.height);
    processed = await resizeImage(cropImage(mask, region), o.width, o.height, 2);
    originals = o.images;
    images = await Promise.all(o.images.map((im) => resizeImage(cropImage(im, region!), o.width, o.height, 2)));
  } else {
    processed = await resizeImage(mask, o.width, o.height, o.resizeMode);
    // A1111 doubles the overlay mask: half-masked pixels of the blurred edge show the result fully.
    overlayMask = { ...processed, data: processed.data.map((v) => Math.min(255, v * 2)) };
    originals = await Promise.all(o.images.map((im) => resizeImage(im, o.width, o.height, o.resizeMode)));
    images = originals;
  }
  if (o.fill === 0) images = images.map((im) => fillMasked(im, processed));
  return { images, mask: processed, overlay: { originals, mask: overlayMask, region } };
}

/** Image i of a result, at the output size: the original laid over it where it was not repainted. */
export async function finishEdit(pixels: EditPixels, generated: Uint8Image, i: number): Promise<Uint8Image> {
  const ov = pixels.overlay;
  if (!ov) return generated;
  const original = ov.originals[Math.min(i, ov.originals.length - 1)];
  return overlayOriginal(original, generated, ov.mask, ov.region);
}
