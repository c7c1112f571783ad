/**
 * Sample grids and frame strips: N same-sized 8-bit images laid out in rows x cols with padding.
 */
import { batchToImages, checkUint8Image, type ImageBatch, type Uint8Image } from './convert.js';

export interface GridOptions {
  /** Columns; default ceil(sqrt(N)) (or N / rows when rows is given). */
  cols?: number;
  /** Rows; default ceil(N / cols). */
  rows?: number;
  /** Pixels between cells and around the border; default 2. */
  padding?: number;
  /** Padding / empty-cell value, 0..255 (one value for every channel); default 255 (white). */
  background?: number;
}

/** Arranges images row-major into a grid. Cells past N are filled with the background. */
export function makeGrid(images: Uint8Image[] | ImageBatch, options: GridOptions = {}): Uint8Image {
  const list = Array.isArray(images) ? images : batchToImages(images);
  const n = list.length;
  if (n === 0) throw new Error('makeGrid: no images');
  list.forEach((im, i) => {
    checkUint8Image(im, `makeGrid image ${i}`);
  });
  const { width: w, height: h, channels: c } = list[0];
  list.forEach((im, i) => {
    if (im.width !== w || im.height !== h || im.channels !== c) {
      throw new Error(`makeGrid: image ${i} is ${im.width}x${im.height}x${im.channels}, expected ${w}x${h}x${c} like image 0`);
    }
  });
  const pad = options.padding ?? 2;
  const bg = options.background ?? 255;
  if (!Number.isInteger(pad) || pad < 0) throw new Error(`makeGrid: padding must be an integer >= 0, got ${pad}`);
  if (!Number.isInteger(bg) || bg < 0 || bg > 255) throw new Error(`makeGrid: background must be an integer in [0, 255], got ${bg}`);
  let cols = options.cols;
  let rows = options.rows;
  if (cols === undefined && rows === undefined) cols = Math.ceil(Math.sqrt(n));
  if (cols === undefined) cols = Math.ceil(n / rows!);
  if (rows === undefined) rows = Math.ceil(n / cols);
  if (!Number.isInteger(cols) || cols < 1 || !Number.isInteger(rows) || rows < 1) {
    throw new Error(`makeGrid: rows and cols must be positive integers, got rows=${rows} cols=${cols}`);
  }
  if (rows * cols < n) throw new Error(`makeGrid: ${rows}x${cols} grid has ${rows * cols} cells for ${n} images`);
  const W = cols * w + (cols + 1) * pad;
  const H = rows * h + (rows + 1) * pad;
  const out = new Uint8Array(W * H * c).fill(bg);
  for (let i = 0; i < n; i++) {
    const r = Math.floor(i / cols);
    const k = i % cols;
    const x0 = pad + k * (w + pad);
    const y0 = pad + r * (h + pad);
    const src = list[i].data;
    for (let y = 0; y < h; y++) {
      out.set(src.subarray(y * w * c, (y + 1) * w * c), ((y0 + y) * W + x0) * c);
    }
  }
  return { data: out, width: W, height: H, channels: c };
}

/** Frames side by side in one row. */
export function makeStrip(frames: Uint8Image[] | ImageBatch, options: { padding?: number; background?: number } = {}): Uint8Image {
  const n = Array.isArray(frames) ? frames.length : frames.shape[0];
  return makeGrid(frames, { rows: 1, cols: Math.max(1, n), padding: options.padding ?? 0, background: options.background });
}
