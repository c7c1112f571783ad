/**
 * Measured quality of a label-conditioned MNIST pipeline: for every guidance scale x sampler /
 * step count, N samples per digit are generated (Txt2ImgPipeline.generate) and read by the MNIST
 * classifier of ./classifier.ts:
 *
 *   cond. acc.   fraction of samples the classifier reads as the requested digit
 *   FID          Fréchet distance between Gaussians fitted to the classifier's penultimate
 *                features of the samples and of the MNIST test set: a *classifier-feature FID*,
 *                not Inception-FID, so not comparable to published FIDs (see ./linalg.ts)
 *   diversity    per digit, mean pairwise feature distance of the samples / the same of real
 *                test digits, averaged over digits (1 = as varied as real data, << 1 = collapse)
 *   s/image      generation wall time per image (U-Net steps and VAE decode)
 *
 * Baselines on the same number of images, so the gain of diffusion is visible:
 *   real test subset   N real test digits per class: the small-sample floor of FID, the
 *                      classifier's own accuracy
 *   VAE recon          those real digits through the VAE (encode to the posterior mean, decode):
 *                      reconstruction MSE and FID, what the decoder alone can reach
 *   VAE alone          latents drawn from the prior N(0, I) in the scaled latent space (i.e.
 *                      N(0, I) / scalingFactor in the VAE's own), decoded: what the VAE gives
 *                      without diffusion
 */
import * as tf from '@tensorflow/tfjs';
import type { ImageSet } from '../data/in-memory.js';
import type { Txt2ImgPipeline } from '../pipeline/pipeline.js';
import { parseSamplerName } from '../schedulers/names.js';
import { Generator } from '../random/generator.js';
import { type AttributeClassifier, type Predictions, accuracyFromLogits, predict } from '../classifier/classifier.js';
import { type Gaussian, frechetDistance, meanCov, meanPairwiseDistance } from './linalg.js';

export interface SamplerSpec {
  /** A scheduler type or an A1111 sampler name (Txt2ImgPipeline.generate's `sampler`). */
  sampler: string;
  steps: number;
}

/** "ddpm:1000,DPM++ 2M Karras:20" -> [{ sampler: 'ddpm', steps: 1000 }, { sampler: 'DPM++ 2M Karras', steps: 20 }] */
export function parseSamplers(text: string): SamplerSpec[] {
  const out = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((item) => {
      const m = /^(.+):(\d+)$/.exec(item);
      if (!m || Number(m[2]) < 1)
        throw new Error(`--samplers: '${item}' is not SAMPLER:STEPS with STEPS >= 1 (e.g. ddim:25, euler-ancestral:20, DPM++ 2M Karras:20)`);
      const sampler = m[1].trim();
      parseSamplerName(sampler);
      return { sampler, steps: Number(m[2]) };
    });
  if (out.length === 0) throw new Error(`--samplers: no sampler given in '${text}'`);
  return out;
}

/** "1,2,4,7" -> [1, 2, 4, 7] */
export function parseCfgList(text: string): number[] {
  const out = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const x = Number(s);
      if (!Number.isFinite(x) || x < 0) throw new Error(`--cfg: '${s}' is not a finite number >= 0`);
      return x;
    });
  if (out.length === 0) throw new Error(`--cfg: no guidance scale given in '${text}'`);
  return out;
}

export interface EvaluateOptions {
  pipeline: Txt2ImgPipeline;
  classifier: AttributeClassifier;
  /** Labelled reference images (the MNIST test set). */
  real: ImageSet;
  perClass: number;
  cfgs: number[];
  samplers: SamplerSpec[];
  /** Images per generate() call (default 100). */
  batchSize?: number;
  seed?: number;
  /** Real images per class for the diversity reference (default 200). */
  realPerClass?: number;
  /** VAE baselines (default true). */
  vaeBaselines?: boolean;
  log?: (line: string) => void;
  /** Called with each cell's images [n, H, W, C] (label of image i: labels[i]); must not dispose them. */
  onImages?: (name: string, images: tf.Tensor4D, labels: number[]) => Promise<void>;
}

export interface RowResult {
  /** 'real', 'vae-recon', 'vae-prior' or 'diffusion'. */
  kind: 'real' | 'vae-recon' | 'vae-prior' | 'diffusion';
  name: string;
  sampler?: string;
  steps?: number;
  cfg?: number;
  images: number;
  /** Classifier reads the requested / true digit (undefined for unconditional rows). */
  accuracy?: number;
  accuracyPerClass?: number[];
  fid: number;
  /** Mean over classes of (mean pairwise feature distance of these images / of real ones). */
  diversity: number;
  diversityPerClass?: number[];
  secondsPerImage?: number;
  /** VAE reconstruction mean squared error per pixel, images in [-1, 1]. */
  mse?: number;
}

export interface EvaluateReport {
  perClass: number;
  numClasses: number;
  featureDim: number;
  referenceImages: number;
  referenceSource: string;
  rows: RowResult[];
  notes: string[];
}

interface Reference {
  gaussian: Gaussian;
  /** Per class: mean pairwise feature distance of up to realPerClass real images. */
  pairwise: number[];
  /** Mean pairwise distance over all classes pooled (for unconditional rows). */
  pooledPairwise: number;
}

function rowsOf(features: Float32Array, dim: number, indices: number[]): Float32Array {
  const out = new Float32Array(indices.length * dim);
  indices.forEach((i, k) => {
    out.set(features.subarray(i * dim, (i + 1) * dim), k * dim);
  });
  return out;
}

function byClass(labels: ArrayLike<number>, numClasses: number): number[][] {
  const out: number[][] = Array.from({ length: numClasses }, () => []);
  for (let i = 0; i < labels.length; i++) out[labels[i]].push(i);
  return out;
}

function mean(xs: number[]): number {
  const ok = xs.filter((x) => Number.isFinite(x));
  return ok.length ? ok.reduce((a, b) => a + b, 0) / ok.length : NaN;
}

/** FID, accuracy and diversity of a set of images with their (requested or true) labels. */
function measure(p: Predictions, labels: number[] | undefined, ref: Reference, numClasses: number, dim: number) {
  const fid = frechetDistance(meanCov(p.features, p.count, dim), ref.gaussian);
  if (!labels) {
    const all = Array.from({ length: p.count }, (_, i) => i);
    return { fid, diversity: meanPairwiseDistance(rowsOf(p.features, dim, all), p.count, dim) / ref.pooledPairwise };
  }
  const accuracy = accuracyFromLogits(p.logits, labels, numClasses);
  const groups = byClass(labels, numClasses);
  const accuracyPerClass = groups.map((idx) => (idx.length ? idx.filter((i) => p.predicted[i] === labels[i]).length / idx.length : NaN));
  const diversityPerClass = groups.map((idx, c) => meanPairwiseDistance(rowsOf(p.features, dim, idx), idx.length, dim) / ref.pairwise[c]);
  return { fid, accuracy, accuracyPerClass, diversity: mean(diversityPerClass), diversityPerClass };
}

/** Requested labels: image i asks for digit i % numClasses, so every batch holds every digit. */
export function requestedLabels(perClass: number, numClasses: number): number[] {
  return Array.from({ length: perClass * numClasses }, (_, i) => i % numClasses);
}

export async function evaluatePipeline(o: EvaluateOptions): Promise<EvaluateReport> {
  const log = o.log ?? ((l: string) => console.error(l));
  const { pipeline, classifier } = o;
  if (pipeline.info.conditioning !== 'label')
    throw new Error('evaluate: the pipeline must be label-conditioned (an MNIST pipeline); this one is conditioned on text');
  if (!o.real.labels) throw new Error(`evaluate: the reference set ${o.real.source} has no labels`);
  if (!Number.isInteger(o.perClass) || o.perClass < 1) throw new Error(`evaluate: per-class must be an integer >= 1, got ${o.perClass}`);
  const { heads } = classifier.config;
  if (heads.length !== 1)
    throw new Error(`evaluate: the classifier must have one head (digits); this one has ${heads.length}: ${heads.map((h) => h.name).join(', ')}`);
  const numClasses = heads[0].classes.length;
  const encClasses = (pipeline.encoder as unknown as { numClasses?: number }).numClasses;
  if (encClasses !== undefined && encClasses !== numClasses) throw new Error(`evaluate: the pipeline has ${encClasses} classes, the classifier ${numClasses}`);
  const size = pipeline.info.imageSize;
  if (size !== classifier.config.imageSize)
    throw new Error(`evaluate: the pipeline makes ${size}x${size} images, the classifier reads ${classifier.config.imageSize}x${classifier.config.imageSize}`);
  const dim = classifier.config.hidden;
  const batchSize = o.batchSize ?? 100;
  const seed = o.seed ?? 0;
  const notes: string[] = [];
  const labels = requestedLabels(o.perClass, numClasses);
  const n = labels.length;

  // Reference: features of every real image.
  const tRef = performance.now();
  const realPred = await predict(classifier, o.real.images, o.real.shape);
  const realGroups = byClass(o.real.labels, numClasses);
  const realPerClass = o.realPerClass ?? 200;
  const ref: Reference = {
    gaussian: meanCov(realPred.features, realPred.count, dim),
    pairwise: realGroups.map((idx) => {
      const take = idx.slice(0, realPerClass);
      return meanPairwiseDistance(rowsOf(realPred.features, dim, take), take.length, dim);
    }),
    pooledPairwise: (() => {
      const take = Array.from({ length: Math.min(realPred.count, realPerClass * numClasses) }, (_, i) => i);
      return meanPairwiseDistance(rowsOf(realPred.features, dim, take), take.length, dim);
    })(),
  };
  realGroups.forEach((idx, c) => {
    if (idx.length < 2) throw new Error(`evaluate: the reference set has ${idx.length} image(s) of digit ${c}; needs at least 2`);
  });
  log(
    `reference: ${o.real.source}, ${realPred.count} images, classifier accuracy ${(100 * accuracyFromLogits(realPred.logits, o.real.labels, numClasses)).toFixed(2)}% (${((performance.now() - tRef) / 1000).toFixed(1)} s)`,
  );

  const rows: RowResult[] = [];
  // A real subset with the same per-class count as the generated sets (the small-sample floor).
  const subset: number[] = [];
  for (let k = 0; k < o.perClass; k++) {
    for (let c = 0; c < numClasses; c++) {
      const idx = realGroups[c];
      subset.push(idx[k % idx.length]);
    }
  }
  const subsetLabels = subset.map((i) => o.real.labels![i]);
  {
    const p: Predictions = {
      count: subset.length,
      logits: rowsOf(realPred.logits, numClasses, subset),
      features: rowsOf(realPred.features, dim, subset),
      predicted: Int32Array.from(subset, (i) => realPred.predicted[i]),
    };
    rows.push({ kind: 'real', name: 'real test subset', images: subset.length, ...measure(p, subsetLabels, ref, numClasses, dim) });
  }

  const per = o.real.shape[1] * o.real.shape[2] * o.real.shape[3];
  if (o.vaeBaselines ?? true) {
    const vae = pipeline.vae;
    // Reconstructions of the real subset.
    const recon: Float32Array[] = [];
    let sqErr = 0;
    for (let i = 0; i < subset.length; i += batchSize) {
      const idx = subset.slice(i, i + batchSize);
      const x = tf.tensor4d(rowsOf(o.real.images, per, idx), [idx.length, ...o.real.shape.slice(1)] as [number, number, number, number]);
      const [y, se] = tf.tidy(() => {
        const out = tf.clipByValue(vae.decodeLatents(vae.encodeLatents(x)), -1, 1);
        return [out, tf.sum(tf.squaredDifference(out, x))];
      });
      sqErr += (await se.data())[0];
      recon.push((await y.data()) as Float32Array);
      tf.dispose([x, y, se]);
    }
    const reconImages = concat(recon);
    const pr = await predict(classifier, reconImages, [subset.length, ...o.real.shape.slice(1)]);
    rows.push({
      kind: 'vae-recon',
      name: 'VAE reconstructions',
      images: subset.length,
      mse: sqErr / reconImages.length,
      ...measure(pr, subsetLabels, ref, numClasses, dim),
    });

    // Decoded prior samples.
    const f = vae.config.downsampleFactor;
    const rng = new Generator(seed + 999);
    const t0 = performance.now();
    const parts: Float32Array[] = [];
    for (let i = 0; i < n; i += batchSize) {
      const b = Math.min(batchSize, n - i);
      const y = tf.tidy(() => tf.clipByValue(vae.decodeLatents(rng.randn([b, size / f, size / f, vae.config.latentChannels]) as tf.Tensor4D), -1, 1));
      parts.push((await y.data()) as Float32Array);
      y.dispose();
    }
    const secondsPerImage = (performance.now() - t0) / 1000 / n;
    const priorImages = concat(parts);
    const shape = [n, size, size, o.real.shape[3]];
    if (o.onImages) {
      const t = tf.tensor4d(priorImages, shape as [number, number, number, number]);
      await o.onImages('vae-prior', t, labels);
      t.dispose();
    }
    const pp = await predict(classifier, priorImages, shape);
    rows.push({
      kind: 'vae-prior',
      name: 'VAE alone: prior N(0,I)/scalingFactor, decoded',
      images: n,
      secondsPerImage,
      ...measure(pp, undefined, ref, numClasses, dim),
    });
    log(
      `baselines: real subset FID ${rows[0].fid.toFixed(2)}, VAE recon MSE ${rows[1].mse!.toFixed(4)} FID ${rows[1].fid.toFixed(2)}, VAE prior FID ${rows[2].fid.toFixed(2)}`,
    );
  }

  const warn = keepFirstWarning(notes);
  for (const s of o.samplers) {
    for (const cfg of o.cfgs) {
      const name = `${s.sampler}:${s.steps} cfg ${cfg}`;
      const { data, shape, secondsPerImage } = await generateInBatches(pipeline, labels, { cfg, sampler: s, batchSize, seed, warn });
      if (o.onImages) {
        const t = tf.tensor4d(data, shape);
        await o.onImages(`${s.sampler}-${s.steps}-cfg${cfg}`, t, labels);
        t.dispose();
      }
      const p = await predict(classifier, data, shape);
      const row: RowResult = {
        kind: 'diffusion',
        name,
        sampler: s.sampler,
        steps: s.steps,
        cfg,
        images: n,
        secondsPerImage,
        ...measure(p, labels, ref, numClasses, dim),
      };
      rows.push(row);
      log(
        `${name}: acc ${(100 * row.accuracy!).toFixed(1)}%, FID ${row.fid.toFixed(2)}, diversity ${row.diversity.toFixed(2)}, ${secondsPerImage.toFixed(3)} s/image`,
      );
    }
  }
  if (n < 2 * dim)
    notes.push(
      `${n} images per row for ${dim}-dimensional features: the covariances are rank-deficient and FID is biased upward at this size; compare rows of equal size only (the "real test subset" row is the floor).`,
    );
  return { perClass: o.perClass, numClasses, featureDim: dim, referenceImages: realPred.count, referenceSource: o.real.source, rows, notes };
}

/** A warn callback that keeps only the first warning (every generate() call repeats it). */
export function keepFirstWarning(notes: string[]): (message: string) => void {
  let warned = false;
  return (m) => {
    if (!warned) notes.push(m);
    warned = true;
  };
}

export interface GeneratedImages {
  /** [n, H, W, C] in [-1, 1] */
  data: Float32Array;
  shape: [number, number, number, number];
  secondsPerImage: number;
}

export interface GenerateInBatchesOptions {
  cfg: number;
  sampler: SamplerSpec;
  batchSize: number;
  seed: number;
  warn: (message: string) => void;
}

/**
 * One image per input, `batchSize` per generate() call. Call k uses seed + k: every cell of a
 * table gets the same noise, so its differences come from the settings.
 */
export async function generateInBatches(pipeline: Txt2ImgPipeline, inputs: string[] | number[], o: GenerateInBatchesOptions): Promise<GeneratedImages> {
  const t0 = performance.now();
  const parts: Float32Array[] = [];
  let [h, w, c] = [0, 0, 0];
  for (let i = 0, call = 0; i < inputs.length; i += o.batchSize, call++) {
    const images = await pipeline.generate({
      inputs: inputs.slice(i, i + o.batchSize) as string[] | number[],
      guidanceScale: o.cfg,
      steps: o.sampler.steps,
      sampler: o.sampler.sampler,
      seed: o.seed + call,
      warn: o.warn,
    });
    [, h, w, c] = images.shape;
    parts.push((await images.data()) as Float32Array);
    images.dispose();
  }
  return { data: concat(parts), shape: [inputs.length, h, w, c], secondsPerImage: (performance.now() - t0) / 1000 / inputs.length };
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

const pct = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '–' : `${(100 * x).toFixed(1)}%`);
const num = (x: number | undefined, d = 2) => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d));

/** The report as Markdown: a header, one table, notes. */
export function formatEvaluation(r: EvaluateReport, header: string[] = []): string {
  const lines = [...header];
  lines.push(
    `${r.perClass} images per digit (${r.perClass * r.numClasses} per row). FID here is a **classifier-feature FID, not Inception-FID**: ` +
      `the Fréchet distance between Gaussians fitted to the MNIST classifier's ${r.featureDim}-d penultimate features of the images and of ${r.referenceSource}; ` +
      'lower is better, not comparable to published FIDs. Diversity: per digit, mean pairwise feature distance of the images / of real digits (1 = as varied as real).',
  );
  lines.push('');
  lines.push('| images | sampler | steps | cfg | cond. acc. | classifier-feature FID | diversity ratio | s/image | recon MSE |');
  lines.push('|---|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const row of r.rows) {
    const label = row.kind === 'diffusion' ? 'diffusion' : row.name;
    lines.push(
      `| ${label} | ${row.sampler ?? '–'} | ${row.steps ?? '–'} | ${row.cfg ?? '–'} | ${pct(row.accuracy)} | ${num(row.fid)} | ${num(row.diversity)} | ${row.secondsPerImage === undefined ? '–' : row.secondsPerImage.toFixed(3)} | ${row.mse === undefined ? '–' : row.mse.toFixed(4)} |`,
    );
  }
  if (r.notes.length) {
    lines.push('');
    for (const n of r.notes) lines.push(`- ${n}`);
  }
  return lines.join('\n');
}
