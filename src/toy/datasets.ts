/**
 * 2-D point-cloud datasets for the toy diffusion, all drawn from an explicit Generator.
 * Points are Float32Array of length 2N, interleaved (x0, y0, x1, y1, ...), i.e. [N, 2] row-major.
 *
 *   s-curve     sklearn's make_s_curve, columns x and z: t = 3 pi (u - 1/2), (sin t, sign(t)(cos t - 1))
 *   moons       sklearn's make_moons: (cos a, sin a) and (1 - cos a, 1/2 - sin a), a ~ U(0, pi)
 *   swiss-roll  sklearn's make_swiss_roll, columns x and z: t = 3/2 pi (1 + 2u), (t cos t, t sin t)
 *   image:PATH  points where a picture is dark (sharp decodes it), so you can diffuse your own drawing
 *
 * Every dataset is normalised (normalizePoints) to zero mean and unit RMS per axis on average, with
 * one scale for both axes so the shape keeps its aspect ratio.
 */
import sharp from 'sharp';
import type { Generator } from '../random/generator.js';

export type Points = Float32Array;

export const BUILTIN_DATASETS = ['s-curve', 'moons', 'swiss-roll'] as const;
export type DatasetSpec = { kind: (typeof BUILTIN_DATASETS)[number] } | { kind: 'image'; path: string };

export function parseDatasetSpec(value: string): DatasetSpec {
  if ((BUILTIN_DATASETS as readonly string[]).includes(value)) return { kind: value as (typeof BUILTIN_DATASETS)[number] };
  if (value.startsWith('image:')) {
    const path = value.slice('image:'.length);
    if (path.length === 0) throw new Error(`--dataset '${value}': image: needs a path, e.g. image:drawing.png`);
    return { kind: 'image', path };
  }
  throw new Error(`--dataset '${value}' is unknown; allowed: ${BUILTIN_DATASETS.join(', ')}, image:<path to a picture>`);
}

export function datasetName(spec: DatasetSpec): string {
  return spec.kind === 'image' ? `image:${spec.path}` : spec.kind;
}

function checkN(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new Error(`number of points must be an integer >= 1, got ${n}`);
}

/** sklearn.datasets.make_s_curve(n, noise), columns [0, 2]. */
export function makeSCurve(n: number, rng: Generator, noise = 0.1): Points {
  checkN(n);
  const out = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    const t = 3 * Math.PI * (rng.uniform() - 0.5);
    out[2 * i] = Math.sin(t) + noise * rng.normal();
    out[2 * i + 1] = Math.sign(t) * (Math.cos(t) - 1) + noise * rng.normal();
  }
  return out;
}

/** sklearn.datasets.make_moons(n, noise), angles drawn uniformly instead of on a grid. */
export function makeMoons(n: number, rng: Generator, noise = 0.05): Points {
  checkN(n);
  const out = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    const a = Math.PI * rng.uniform();
    const outer = i % 2 === 0;
    out[2 * i] = (outer ? Math.cos(a) : 1 - Math.cos(a)) + noise * rng.normal();
    out[2 * i + 1] = (outer ? Math.sin(a) : 0.5 - Math.sin(a)) + noise * rng.normal();
  }
  return out;
}

/** sklearn.datasets.make_swiss_roll(n, noise), columns [0, 2]. */
export function makeSwissRoll(n: number, rng: Generator, noise = 0.3): Points {
  checkN(n);
  const out = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    const t = 1.5 * Math.PI * (1 + 2 * rng.uniform());
    out[2 * i] = t * Math.cos(t) + noise * rng.normal();
    out[2 * i + 1] = t * Math.sin(t) + noise * rng.normal();
  }
  return out;
}

/** A picture's dark pixels: darkness weights (0..1) on a grid, the sampling distribution. */
export interface ImageDensity {
  width: number;
  height: number;
  /** Cumulative darkness over the selected pixels, for inverse-CDF sampling. */
  cdf: Float64Array;
  /** Pixel index (y * width + x) of each selected pixel. */
  pixels: Int32Array;
}

/**
 * Loads a picture with sharp (any format it reads), flattens transparency onto white, converts to
 * grey and resizes to at most `maxSide` pixels; pixels darker than `threshold` (0..1 luminance)
 * carry probability proportional to their darkness.
 * (Not src/image's decodeImage: that drops alpha without flattening, so a drawing on a transparent
 * background would come out black, and it does not resize.)
 */
export async function loadImageDensity(path: string, maxSide = 256, threshold = 0.5): Promise<ImageDensity> {
  let raw: { data: Buffer; info: sharp.OutputInfo };
  try {
    raw = await sharp(path)
      .flatten({ background: '#ffffff' })
      .greyscale()
      .resize(maxSide, maxSide, { fit: 'inside', withoutEnlargement: true })
      .raw()
      .toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw new Error(`--dataset image:${path}: cannot read the picture (${(e as Error).message})`);
  }
  const { width, height, channels } = raw.info;
  const pix: number[] = [];
  const weights: number[] = [];
  for (let i = 0; i < width * height; i++) {
    const dark = 1 - raw.data[i * channels] / 255;
    if (dark > 1 - threshold) {
      pix.push(i);
      weights.push(dark);
    }
  }
  if (pix.length === 0) {
    throw new Error(`--dataset image:${path}: the picture has no dark pixels (luminance below ${threshold * 100}%); draw in dark ink on a light background`);
  }
  const cdf = new Float64Array(weights.length);
  let acc = 0;
  for (let i = 0; i < weights.length; i++) cdf[i] = acc += weights[i];
  return { width, height, cdf, pixels: Int32Array.from(pix) };
}

/** n points from an image density: a pixel by darkness, then uniform within it; y points up. */
export function sampleImageDensity(d: ImageDensity, n: number, rng: Generator): Points {
  checkN(n);
  const out = new Float32Array(2 * n);
  const total = d.cdf[d.cdf.length - 1];
  for (let i = 0; i < n; i++) {
    const u = rng.uniform() * total;
    let lo = 0;
    let hi = d.cdf.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (d.cdf[mid] > u) hi = mid;
      else lo = mid + 1;
    }
    const p = d.pixels[lo];
    out[2 * i] = (p % d.width) + rng.uniform();
    out[2 * i + 1] = -(Math.floor(p / d.width) + rng.uniform());
  }
  return out;
}

export interface Normalization {
  mean: [number, number];
  scale: number;
}

/** Zero mean, and one scale for both axes so that the mean per-axis variance is 1. */
export function fitNormalization(points: Points): Normalization {
  const n = points.length / 2;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += points[2 * i];
    my += points[2 * i + 1];
  }
  mx /= n;
  my /= n;
  let v = 0;
  for (let i = 0; i < n; i++) v += (points[2 * i] - mx) ** 2 + (points[2 * i + 1] - my) ** 2;
  const scale = Math.sqrt(v / (2 * n)) || 1;
  return { mean: [mx, my], scale };
}

export function applyNormalization(points: Points, norm: Normalization): Points {
  const out = new Float32Array(points.length);
  for (let i = 0; i < points.length; i += 2) {
    out[i] = (points[i] - norm.mean[0]) / norm.scale;
    out[i + 1] = (points[i + 1] - norm.mean[1]) / norm.scale;
  }
  return out;
}

/** A dataset that can draw any number of (normalised) points, with its normalisation fixed. */
export interface ToyDataset {
  name: string;
  norm: Normalization;
  sample(n: number, rng: Generator): Points;
}

export async function loadDataset(spec: DatasetSpec, rng: Generator): Promise<ToyDataset> {
  let draw: (n: number, r: Generator) => Points;
  switch (spec.kind) {
    case 's-curve':
      draw = (n, r) => makeSCurve(n, r);
      break;
    case 'moons':
      draw = (n, r) => makeMoons(n, r);
      break;
    case 'swiss-roll':
      draw = (n, r) => makeSwissRoll(n, r);
      break;
    case 'image': {
      const density = await loadImageDensity(spec.path);
      draw = (n, r) => sampleImageDensity(density, n, r);
      break;
    }
  }
  // The normalisation is fitted once on a large draw, so every later draw shares it.
  const norm = fitNormalization(draw(20000, rng));
  return { name: datasetName(spec), norm, sample: (n, r) => applyNormalization(draw(n, r), norm) };
}
