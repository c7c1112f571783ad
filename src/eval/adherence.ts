/**
 * Measured prompt adherence of a text-conditioned scene pipeline: for every guidance scale x
 * sampler / steps, one image per prompt of two prompt sets, read back by the scene attribute
 * classifier (src/classifier/classifier.ts with SCENE_HEADS) and scored against what the prompt asks for.
 *
 * Prompt sets (deterministic from a seed; captions in the dataset's own phrasings, captions.ts):
 *   seen      scenes drawn like the train split (no held-out combination), each in a phrasing that
 *             names the object and its colour and/or position
 *   held-out  HELD_OUT_COMBINATIONS in turn (equally often), each completed with other attributes
 *             and phrased so that the prompt names the held-out pair (object + colour or position)
 *
 * Scoring: an image is scored only on what its prompt mentions, as parsePrompt reads it:
 * expression (face prompts: the object head reads the right `${expression} face`), shape (shape
 * prompts), colour, position, size, background; "held-out pair" (both attributes of every
 * held-out pair the prompt names); "all" (every mentioned attribute, and the kind, right).
 *
 * Ceiling rows: the classifier on real images of the dataset (the held-out split, and a slice of
 * the train split for "seen"), each scored against one of its own captions chosen the same way:
 * what a perfect generator would score with this classifier.
 */
import * as tf from '@tensorflow/tfjs';
import { type CaptionKey, type PromptAttributes, captionFor, parsePrompt, phrasingKeys, PHRASING_COUNT } from '../data/scenes/captions.js';
import { sampleSceneAttributes, sampleWithCombination } from '../data/scenes/generate.js';
import { type SceneAttributeSet, type SceneLabels, SCENE_HEADS, checkSceneHeads, decodeSceneLabels } from '../data/scenes/attribute-set.js';
import { HELD_OUT_COMBINATIONS, heldOutMatches, type HeldOutCombination, type SceneAttributes } from '../data/scenes/vocab.js';
import type { Txt2ImgPipeline } from '../pipeline/pipeline.js';
import { Generator } from '../random/generator.js';
import { type AttributeClassifier, predict } from '../classifier/classifier.js';
import { type SamplerSpec, generateInBatches, keepFirstWarning } from './evaluate.js';

export const PROMPT_SETS = ['seen', 'held-out'] as const;
export type PromptSetName = (typeof PROMPT_SETS)[number];

export const SCORE_KEYS = ['expression', 'shape', 'color', 'position', 'size', 'background', 'pair', 'all'] as const;
export type ScoreKey = (typeof SCORE_KEYS)[number];

/** Images per generate() call at most (and by default). */
export const MAX_ADHERENCE_BATCH = 64;

export interface ScenePrompt {
  prompt: string;
  /** The full scene the prompt was written from (the prompt mentions part of it). */
  scene: SceneAttributes;
}

/**
 * One of `attrs`' captions that names its object and: the attribute of held-out combination
 * `combo` (default: the scene's first, if any), else its colour and/or position. The phrasing is
 * drawn from `gen`.
 */
export function promptFor(attrs: SceneAttributes, gen: Generator, combo: HeldOutCombination | undefined = heldOutMatches(attrs)[0]): string {
  const wanted: CaptionKey[] = combo ? [combo.color !== undefined ? 'color' : 'position'] : ['color', 'position'];
  const options = Array.from({ length: PHRASING_COUNT }, (_, i) => i).filter((i) => phrasingKeys(attrs.kind, i).some((k) => wanted.includes(k)));
  return captionFor(attrs, options[gen.randint(0, options.length)]);
}

/** Independent generators for the seen prompts, the held-out prompts and the real captions. */
function generators(seed: number): Record<PromptSetName | 'real', Generator> {
  const root = new Generator(seed);
  return { seen: root.spawn(), 'held-out': root.spawn(), real: root.spawn() };
}

/** `n` prompts of a set, deterministic from `seed` (prompt i does not depend on n). */
export function scenePrompts(set: PromptSetName, n: number, seed: number): ScenePrompt[] {
  if (!(PROMPT_SETS as readonly string[]).includes(set)) throw new Error(`prompt set must be one of ${PROMPT_SETS.join(', ')}, got ${JSON.stringify(set)}`);
  if (!Number.isInteger(n) || n < 0) throw new Error(`prompt count must be an integer >= 0, got ${n}`);
  const gen = generators(seed)[set];
  return Array.from({ length: n }, (_, i) => {
    if (set === 'seen') {
      const scene = sampleSceneAttributes(gen, 'train');
      return { prompt: promptFor(scene, gen), scene };
    }
    // A completed scene may hold a second combination (a red star at the bottom); name this one.
    const combo = HELD_OUT_COMBINATIONS[i % HELD_OUT_COMBINATIONS.length];
    const scene = sampleWithCombination(gen, combo);
    return { prompt: promptFor(scene, gen, combo), scene };
  });
}

/** The held-out combinations a prompt names (its object with the named colour or position). */
export function namedCombinations(asked: PromptAttributes): HeldOutCombination[] {
  const object = asked.kind === 'face' ? (asked.expression ? `${asked.expression} face` : undefined) : asked.shape;
  if (object === undefined) return [];
  return HELD_OUT_COMBINATIONS.filter(
    (c) => c.object === object && ((c.color !== undefined && c.color === asked.color) || (c.position !== undefined && c.position === asked.position)),
  );
}

/** Right / wrong per score of one image: only what the prompt mentions is set. */
export function scoreImage(prompt: string, read: SceneLabels): Partial<Record<ScoreKey, boolean>> {
  const asked = parsePrompt(prompt);
  const out: Partial<Record<ScoreKey, boolean>> = {};
  const isFace = read.object.endsWith(' face');
  if (asked.kind === 'face' && asked.expression !== undefined) out.expression = read.object === `${asked.expression} face`;
  if (asked.kind === 'shape' && asked.shape !== undefined) out.shape = read.object === asked.shape;
  for (const k of ['color', 'position', 'size', 'background'] as const) if (asked[k] !== undefined) out[k] = read[k] === asked[k];
  const combos = namedCombinations(asked);
  if (combos.length)
    out.pair = combos.every(
      (c) => read.object === c.object && (c.color === undefined || read.color === c.color) && (c.position === undefined || read.position === c.position),
    );
  const kindRight = asked.kind === undefined || (asked.kind === 'face') === isFace;
  out.all = kindRight && Object.values(out).every(Boolean);
  return out;
}

export interface AdherenceScores {
  /** Fraction right per score, over the images whose prompt mentions it (absent: none does). */
  accuracy: Partial<Record<ScoreKey, number>>;
  /** Images scored per score. */
  counts: Record<ScoreKey, number>;
}

/** Scores images against their prompts; `read[i]` is what the classifier reads of image i. */
export function scoreImages(prompts: readonly string[], read: readonly SceneLabels[]): AdherenceScores {
  if (prompts.length !== read.length) throw new Error(`adherence: ${prompts.length} prompts for ${read.length} images`);
  const counts = Object.fromEntries(SCORE_KEYS.map((k) => [k, 0])) as Record<ScoreKey, number>;
  const right = { ...counts };
  prompts.forEach((p, i) => {
    for (const [k, ok] of Object.entries(scoreImage(p, read[i])) as Array<[ScoreKey, boolean]>) {
      counts[k]++;
      if (ok) right[k]++;
    }
  });
  const accuracy: Partial<Record<ScoreKey, number>> = {};
  for (const k of SCORE_KEYS) if (counts[k] > 0) accuracy[k] = right[k] / counts[k];
  return { accuracy, counts };
}

/** What the classifier reads of images [N, S, S, 3] in [-1, 1]. */
async function readScenes(classifier: AttributeClassifier, images: Float32Array, shape: number[]): Promise<SceneLabels[]> {
  const p = await predict(classifier, images, shape);
  const h = SCENE_HEADS.length;
  return Array.from({ length: p.count }, (_, i) => decodeSceneLabels(p.predicted.subarray(i * h, (i + 1) * h)));
}

export interface AdherenceOptions {
  pipeline: Txt2ImgPipeline;
  /** A classifier with the scene heads (SCENE_HEADS) at the pipeline's image size. */
  classifier: AttributeClassifier;
  /** Prompts (= images per row) of each set. */
  perSet: number;
  cfgs: number[];
  samplers: SamplerSpec[];
  /** Real images for the ceiling rows, per set (e.g. a train slice for seen, the held-out split). */
  real?: Partial<Record<PromptSetName, SceneAttributeSet>>;
  /** Prompts per generate() call (default and at most 64). */
  batchSize?: number;
  /** Seed of the prompts, the real images' captions and the generation noise (default 0). */
  seed?: number;
  log?: (line: string) => void;
  /** Called with each row's images [n, H, W, 3] and prompts; must not dispose them. */
  onImages?: (row: { set: PromptSetName; name: string }, images: tf.Tensor4D, prompts: string[]) => Promise<void>;
}

export interface AdherenceRow extends AdherenceScores {
  set: PromptSetName;
  /** 'real': the classifier on dataset images (the ceiling); 'generated': the pipeline's. */
  source: 'real' | 'generated';
  sampler?: string;
  steps?: number;
  cfg?: number;
  images: number;
  secondsPerImage?: number;
}

export interface AdherenceReport {
  perSet: number;
  seed: number;
  prompts: Record<PromptSetName, string[]>;
  realSources: Partial<Record<PromptSetName, string>>;
  rows: AdherenceRow[];
  notes: string[];
}

export async function evaluateAdherence(o: AdherenceOptions): Promise<AdherenceReport> {
  const log = o.log ?? ((l: string) => console.error(l));
  const { pipeline, classifier } = o;
  if (pipeline.info.conditioning !== 'clip')
    throw new Error('adherence: the pipeline must be text-conditioned (clip); this one is conditioned on class labels');
  checkSceneHeads(classifier.config.heads);
  const size = pipeline.info.imageSize;
  const { imageSize, imageChannels } = classifier.config;
  if (size !== imageSize || imageChannels !== 3)
    throw new Error(`adherence: the pipeline makes ${size}x${size} images, the classifier reads ${imageSize}x${imageSize}x${imageChannels}`);
  if (!Number.isInteger(o.perSet) || o.perSet < 1) throw new Error(`adherence: prompts per set must be an integer >= 1, got ${o.perSet}`);
  const batchSize = o.batchSize ?? MAX_ADHERENCE_BATCH;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > MAX_ADHERENCE_BATCH)
    throw new Error(`adherence: batch size must be an integer from 1 to ${MAX_ADHERENCE_BATCH}, got ${batchSize}`);
  const seed = o.seed ?? 0;
  const notes: string[] = [];
  const prompts = Object.fromEntries(PROMPT_SETS.map((s) => [s, scenePrompts(s, o.perSet, seed).map((p) => p.prompt)])) as Record<PromptSetName, string[]>;
  const rows: AdherenceRow[] = [];

  // Ceiling: real images against one of their own captions.
  const realGen = generators(seed).real;
  const realSources: Partial<Record<PromptSetName, string>> = {};
  for (const set of PROMPT_SETS) {
    const real = o.real?.[set];
    if (!real) continue;
    const [, h, w, c] = real.shape;
    if (h !== imageSize || w !== imageSize || c !== 3)
      throw new Error(`adherence: ${real.source} is ${h}x${w}x${c}, the classifier reads ${imageSize}x${imageSize}x3`);
    const captions = real.records.map((r) => promptFor(r, realGen));
    const scores = scoreImages(captions, await readScenes(classifier, real.images, real.shape));
    rows.push({ set, source: 'real', images: real.shape[0], ...scores });
    realSources[set] = real.source;
    log(`real ${set} (${real.source}): all mentioned right ${pct(scores.accuracy.all)}`);
  }

  const warn = keepFirstWarning(notes);
  for (const s of o.samplers) {
    for (const cfg of o.cfgs) {
      for (const set of PROMPT_SETS) {
        const list = prompts[set];
        const name = `${s.sampler}:${s.steps} cfg ${cfg}`;
        const { data, shape, secondsPerImage } = await generateInBatches(pipeline, list, { cfg, sampler: s, batchSize, seed, warn });
        if (o.onImages) {
          const t = tf.tensor4d(data, shape);
          await o.onImages({ set, name }, t, list);
          t.dispose();
        }
        const scores = scoreImages(list, await readScenes(classifier, data, shape));
        rows.push({ set, source: 'generated', sampler: s.sampler, steps: s.steps, cfg, images: list.length, secondsPerImage, ...scores });
        log(`${set} ${name}: all mentioned right ${pct(scores.accuracy.all)}, ${secondsPerImage.toFixed(3)} s/image`);
      }
    }
  }
  // Group the table by set: ceiling first, then the generated rows in cell order.
  rows.sort((a, b) => PROMPT_SETS.indexOf(a.set) - PROMPT_SETS.indexOf(b.set));
  return { perSet: o.perSet, seed, prompts, realSources, rows, notes };
}

const pct = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '–' : `${(100 * x).toFixed(1)}%`);

const COLUMNS: Array<[ScoreKey, string]> = [
  ['expression', 'expression'],
  ['shape', 'shape'],
  ['color', 'colour'],
  ['position', 'position'],
  ['size', 'size'],
  ['background', 'background'],
  ['pair', 'held-out pair'],
  ['all', 'all mentioned'],
];

/** The report as Markdown: a header, one table, notes. */
export function formatAdherence(r: AdherenceReport, header: string[] = []): string {
  const lines = [...header];
  lines.push(
    `${r.perSet} prompts per set (seed ${r.seed}), one image each per row. Each image is scored only on the attributes its prompt mentions ` +
      '(parsePrompt); "held-out pair": both attributes of the held-out combination the prompt names; "all mentioned": every mentioned attribute right. ' +
      '"real" rows: the classifier on dataset images against one of their own captions (the ceiling of this measurement). ' +
      'Images scored per column are in the --json output.',
  );
  lines.push('');
  lines.push(`| set | source | sampler | steps | cfg | ${COLUMNS.map(([, t]) => t).join(' | ')} | n | s/image |`);
  lines.push(`|---|---|---|---:|---:|${COLUMNS.map(() => '---:|').join('')}---:|---:|`);
  for (const row of r.rows) {
    const cells = COLUMNS.map(([k]) => pct(row.accuracy[k]));
    const sec = row.secondsPerImage === undefined ? '–' : row.secondsPerImage.toFixed(3);
    lines.push(
      `| ${row.set} | ${row.source} | ${row.sampler ?? '–'} | ${row.steps ?? '–'} | ${row.cfg ?? '–'} | ${cells.join(' | ')} | ${row.images} | ${sec} |`,
    );
  }
  if (r.notes.length) {
    lines.push('');
    for (const n of r.notes) lines.push(`- ${n}`);
  }
  return lines.join('\n');
}
