/**
 * Rasterisation for the toy diffusion, with no plotting library: an RGBA canvas, alpha-blended
 * point splats, lines, a 3x5 bitmap font for labels, frame strips and loss curves.
 *
 * Encoding is the project's: `canvas.toImage()` gives a Uint8Image for src/image's `writePng` and
 * `encodeAnimation` (animated GIF / WebP).
 *
 * `strip` / `stack` are not src/image's makeStrip / makeGrid: those lay out same-sized images in
 * uniform cells with a border; these compose drawable canvases of any size, with gaps only between
 * them and an optional title drawn above.
 */
import type { encodeAnimation } from '../image/animate.js';
import type { Uint8Image } from '../image/convert.js';
import type { Points } from './datasets.js';
import { RunningAverage } from './metrics.js';

export type RGB = [number, number, number];

export class Canvas {
  readonly data: Uint8ClampedArray;

  constructor(
    readonly width: number,
    readonly height: number,
    background: RGB = [255, 255, 255],
  ) {
    if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
      throw new Error(`canvas size must be positive integers, got ${width}x${height}`);
    }
    this.data = new Uint8ClampedArray(width * height * 4);
    this.fill(background);
  }

  fill(c: RGB): void {
    for (let i = 0; i < this.width * this.height; i++) {
      this.data[4 * i] = c[0];
      this.data[4 * i + 1] = c[1];
      this.data[4 * i + 2] = c[2];
      this.data[4 * i + 3] = 255;
    }
  }

  /** Alpha-blends colour c with opacity a (0..1) over pixel (x, y); ignores pixels outside. */
  blend(x: number, y: number, c: RGB, a: number): void {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const i = 4 * (y * this.width + x);
    const d = this.data;
    d[i] = d[i] + (c[0] - d[i]) * a;
    d[i + 1] = d[i + 1] + (c[1] - d[i + 1]) * a;
    d[i + 2] = d[i + 2] + (c[2] - d[i + 2]) * a;
  }

  rect(x0: number, y0: number, w: number, h: number, c: RGB, a = 1): void {
    for (let y = Math.max(0, y0); y < Math.min(this.height, y0 + h); y++) {
      for (let x = Math.max(0, x0); x < Math.min(this.width, x0 + w); x++) this.blend(x, y, c, a);
    }
  }

  /** A 1-pixel line (DDA). */
  line(x0: number, y0: number, x1: number, y1: number, c: RGB, a = 1): void {
    const n = Math.max(1, Math.ceil(Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0))));
    for (let k = 0; k <= n; k++) {
      this.blend(Math.round(x0 + ((x1 - x0) * k) / n), Math.round(y0 + ((y1 - y0) * k) / n), c, a);
    }
  }

  /** A small disc splat of radius r (pixels) with anti-aliased edge. */
  dot(cx: number, cy: number, r: number, c: RGB, a: number): void {
    const R = Math.ceil(r + 1);
    const ix = Math.floor(cx);
    const iy = Math.floor(cy);
    for (let dy = -R; dy <= R; dy++) {
      for (let dx = -R; dx <= R; dx++) {
        const px = ix + dx;
        const py = iy + dy;
        const dist = Math.hypot(px + 0.5 - cx, py + 0.5 - cy);
        const cover = Math.min(1, Math.max(0, r + 0.5 - dist));
        if (cover > 0) this.blend(px, py, c, a * cover);
      }
    }
  }

  /** Text in the 3x5 font, `scale` pixels per font pixel; unknown characters draw as '?'. */
  text(x: number, y: number, s: string, c: RGB, scale = 2): void {
    let cx = x;
    for (const ch of s.toUpperCase()) {
      const g = FONT[ch] ?? FONT['?'];
      for (let row = 0; row < 5; row++) {
        for (let col = 0; col < 3; col++) {
          if (g[row][col] === '1') this.rect(cx + col * scale, y + row * scale, scale, scale, c);
        }
      }
      cx += 4 * scale;
    }
  }

  /** The pixels as an 8-bit RGB image (the canvas is always opaque), for src/image's encoders. */
  toImage(): Uint8Image {
    const n = this.width * this.height;
    const data = new Uint8Array(3 * n);
    for (let i = 0; i < n; i++) {
      data[3 * i] = this.data[4 * i];
      data[3 * i + 1] = this.data[4 * i + 1];
      data[3 * i + 2] = this.data[4 * i + 2];
    }
    return { data, width: this.width, height: this.height, channels: 3 };
  }

  /** Copies another canvas in at (x, y). */
  blit(src: Canvas, x: number, y: number): void {
    for (let row = 0; row < src.height; row++) {
      const ty = y + row;
      if (ty < 0 || ty >= this.height) continue;
      for (let col = 0; col < src.width; col++) {
        const tx = x + col;
        if (tx < 0 || tx >= this.width) continue;
        const si = 4 * (row * src.width + col);
        const ti = 4 * (ty * this.width + tx);
        for (let k = 0; k < 4; k++) this.data[ti + k] = src.data[si + k];
      }
    }
  }
}

export function textWidth(s: string, scale = 2): number {
  return s.length * 4 * scale - scale;
}

/** 3x5 glyphs, rows top to bottom. */
const FONT: Record<string, string[]> = {
  A: ['010', '101', '111', '101', '101'],
  B: ['110', '101', '110', '101', '110'],
  C: ['011', '100', '100', '100', '011'],
  D: ['110', '101', '101', '101', '110'],
  E: ['111', '100', '110', '100', '111'],
  F: ['111', '100', '110', '100', '100'],
  G: ['011', '100', '101', '101', '011'],
  H: ['101', '101', '111', '101', '101'],
  I: ['111', '010', '010', '010', '111'],
  J: ['001', '001', '001', '101', '010'],
  K: ['101', '101', '110', '101', '101'],
  L: ['100', '100', '100', '100', '111'],
  M: ['101', '111', '111', '101', '101'],
  N: ['110', '101', '101', '101', '101'],
  O: ['010', '101', '101', '101', '010'],
  P: ['110', '101', '110', '100', '100'],
  Q: ['010', '101', '101', '110', '011'],
  R: ['110', '101', '110', '101', '101'],
  S: ['011', '100', '010', '001', '110'],
  T: ['111', '010', '010', '010', '010'],
  U: ['101', '101', '101', '101', '111'],
  V: ['101', '101', '101', '101', '010'],
  W: ['101', '101', '111', '111', '101'],
  X: ['101', '101', '010', '101', '101'],
  Y: ['101', '101', '010', '010', '010'],
  Z: ['111', '001', '010', '100', '111'],
  '0': ['111', '101', '101', '101', '111'],
  '1': ['010', '110', '010', '010', '111'],
  '2': ['110', '001', '010', '100', '111'],
  '3': ['110', '001', '010', '001', '110'],
  '4': ['101', '101', '111', '001', '001'],
  '5': ['111', '100', '110', '001', '110'],
  '6': ['011', '100', '111', '101', '111'],
  '7': ['111', '001', '010', '010', '010'],
  '8': ['111', '101', '111', '101', '111'],
  '9': ['111', '101', '111', '001', '110'],
  '.': ['000', '000', '000', '000', '010'],
  ',': ['000', '000', '000', '010', '100'],
  '-': ['000', '000', '111', '000', '000'],
  '+': ['000', '010', '111', '010', '000'],
  '=': ['000', '111', '000', '111', '000'],
  ':': ['000', '010', '000', '010', '000'],
  '/': ['001', '001', '010', '100', '100'],
  '(': ['010', '100', '100', '100', '010'],
  ')': ['010', '001', '001', '001', '010'],
  '%': ['101', '001', '010', '100', '101'],
  _: ['000', '000', '000', '000', '111'],
  '?': ['110', '001', '010', '000', '010'],
  '|': ['010', '010', '010', '010', '010'],
  '>': ['100', '010', '001', '010', '100'],
  '<': ['001', '010', '100', '010', '001'],
  ' ': ['000', '000', '000', '000', '000'],
};

/** The square region of the plane a frame shows: [-extent, extent]^2. */
export interface View {
  extent: number;
}

/** A view that holds N(0, I) noise (about +-3.2) and the data with a margin. */
export function viewFor(...sets: Points[]): View {
  let m = 3.2;
  for (const p of sets) {
    const sorted = Float32Array.from(p, Math.abs).sort();
    // the 99.5th percentile, so a few stray samples do not shrink everything
    const q = sorted[Math.floor(0.995 * (sorted.length - 1))] ?? 0;
    m = Math.max(m, q * 1.1);
  }
  return { extent: m };
}

export interface FrameStyle {
  size: number;
  color: RGB;
  radius: number;
  alpha: number;
  /** Faint reference points drawn underneath (e.g. the data behind generated samples). */
  ghost?: Points;
  label?: string;
}

/** One frame: axes cross, optional ghost cloud, the points, a label. */
export function renderFrame(points: Points, view: View, style: FrameStyle): Canvas {
  const { size } = style;
  const c = new Canvas(size, size);
  const toPx = (v: number) => ((v + view.extent) / (2 * view.extent)) * size;
  c.line(0, Math.round(toPx(0)), size - 1, Math.round(toPx(0)), [225, 225, 225]);
  c.line(Math.round(toPx(0)), 0, Math.round(toPx(0)), size - 1, [225, 225, 225]);
  if (style.ghost) {
    for (let i = 0; i < style.ghost.length; i += 2) c.dot(toPx(style.ghost[i]), size - toPx(style.ghost[i + 1]), style.radius, [170, 170, 170], 0.25);
  }
  for (let i = 0; i < points.length; i += 2) c.dot(toPx(points[i]), size - toPx(points[i + 1]), style.radius, style.color, style.alpha);
  c.rect(0, 0, size, 1, [120, 120, 120]);
  c.rect(0, size - 1, size, 1, [120, 120, 120]);
  c.rect(0, 0, 1, size, [120, 120, 120]);
  c.rect(size - 1, 0, 1, size, [120, 120, 120]);
  if (style.label) c.text(6, 6, style.label, [40, 40, 40], 2);
  return c;
}

/** Frames side by side (one row), separated by `gap` pixels, with an optional title above. */
export function strip(frames: Canvas[], gap = 6, title?: string): Canvas {
  const h = frames[0].height;
  const top = title ? 22 : 0;
  const w = frames.reduce((s, f) => s + f.width, 0) + gap * (frames.length - 1);
  const c = new Canvas(w, h + top);
  if (title) c.text(4, 4, title, [30, 30, 30], 2);
  let x = 0;
  for (const f of frames) {
    c.blit(f, x, top);
    x += f.width + gap;
  }
  return c;
}

/** Stacks canvases vertically (all as wide as the widest). */
export function stack(rows: Canvas[], gap = 8): Canvas {
  const w = Math.max(...rows.map((r) => r.width));
  const h = rows.reduce((s, r) => s + r.height, 0) + gap * (rows.length - 1);
  const c = new Canvas(w, h);
  let y = 0;
  for (const r of rows) {
    c.blit(r, 0, y);
    y += r.height + gap;
  }
  return c;
}

/** Compact number for axis labels: 3 significant digits, exponent form when tiny or huge. */
export function formatNumber(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(1).replace('e+', 'e');
  return Number(v.toPrecision(3)).toString();
}

/**
 * Loss curve: the per-step loss (light) and its exponential moving average (dark), log10 scale on
 * the y axis, with min/max and step labels.
 */
export function renderLossCurve(losses: Float32Array, width = 720, height = 360, smoothing = 0.98): Canvas {
  const c = new Canvas(width, height);
  const left = 64;
  const right = 12;
  const top = 28;
  const bottom = 36;
  const pw = width - left - right;
  const ph = height - top - bottom;
  c.text(left, 8, 'TRAINING LOSS (LOG SCALE)', [30, 30, 30], 2);
  const n = losses.length;
  if (n === 0) return c;
  const pos = Array.from(losses).filter((v) => Number.isFinite(v) && v > 0);
  const lo = Math.log10(Math.min(...pos));
  const hi = Math.log10(Math.max(...pos));
  const span = hi - lo || 1;
  const X = (i: number) => left + (n === 1 ? 0 : (i / (n - 1)) * pw);
  const Y = (v: number) => top + ph - ((Math.log10(Math.max(v, 10 ** lo)) - lo) / span) * ph;
  // grid at each power of ten in range
  for (let e = Math.ceil(lo); e <= Math.floor(hi); e++) c.line(left, Math.round(Y(10 ** e)), left + pw, Math.round(Y(10 ** e)), [230, 230, 230]);
  c.rect(left, top, 1, ph + 1, [90, 90, 90]);
  c.rect(left, top + ph, pw + 1, 1, [90, 90, 90]);
  // raw loss: a polyline, or min-max bars per pixel column when there are more steps than pixels
  const per = Math.max(1, Math.floor(n / pw));
  const light: RGB = [160, 190, 235];
  if (per === 1) {
    for (let i = 1; i < n; i++) c.line(Math.round(X(i - 1)), Math.round(Y(losses[i - 1])), Math.round(X(i)), Math.round(Y(losses[i])), light, 0.8);
  } else {
    for (let i = 0; i < n; i += per) {
      let mn = Infinity;
      let mx = -Infinity;
      for (let j = i; j < Math.min(n, i + per); j++) {
        mn = Math.min(mn, losses[j]);
        mx = Math.max(mx, losses[j]);
      }
      c.line(Math.round(X(i)), Math.round(Y(mx)), Math.round(X(i)), Math.round(Y(mn)), light, 0.8);
    }
  }
  // smoothed (bias-corrected EMA)
  const avg = new RunningAverage(smoothing);
  let px = -1;
  let py = -1;
  for (let i = 0; i < n; i++) {
    const v = avg.add(losses[i]);
    const x = Math.round(X(i));
    const y = Math.round(Y(v));
    if (px >= 0) {
      c.line(px, py, x, y, [20, 60, 160]);
      c.line(px, py + 1, x, y + 1, [20, 60, 160]);
    }
    px = x;
    py = y;
  }
  const maxLabel = formatNumber(10 ** hi);
  const minLabel = formatNumber(10 ** lo);
  c.text(left - 6 - textWidth(maxLabel), top, maxLabel, [60, 60, 60]);
  c.text(left - 6 - textWidth(minLabel), top + ph - 10, minLabel, [60, 60, 60]);
  c.text(left, top + ph + 8, '1', [60, 60, 60]);
  const last = `${n} STEPS`;
  c.text(left + pw - textWidth(last), top + ph + 8, last, [60, 60, 60]);
  return c;
}

/** Animation formats for --anim (src/image's encodeAnimation writes both). */
export const ANIMATION_FORMATS = ['gif', 'webp'] as const satisfies readonly Parameters<typeof encodeAnimation>[1][];
export type AnimationFormat = (typeof ANIMATION_FORMATS)[number];
