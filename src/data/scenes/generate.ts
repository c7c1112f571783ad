/**
 * Writes the synthetic scene dataset: captioned PNG folders for training and for held-out
 * composition tests, with the true attributes of every image.
 *
 * Layout of `outDir`:
 *   dataset.json              summary: seed, size, counts, held-out combinations, vocabularies
 *   train/00000.png           one scene (RGB, size x size)
 *   train/00000.txt           its captions, one phrasing per line (the training captions)
 *   train/attributes.jsonl    one SceneRecord per image
 *   train/metadata.jsonl      (optional) the same captions, Hugging Face imagefolder style
 *   heldout/...               same layout; every image contains a held-out combination
 * Train and held-out images live in sibling folders so that training on `<out>/train` (the
 * captioned-folder loader searches recursively) can never see a held-out image.
 *
 * Everything is drawn from the project Generator: the same seed gives byte-identical files, and
 * image i of a split does not depend on `count` (each split has its own stream).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Generator } from '../../random/generator.js';
import { PHRASING_COUNT, captionsFor } from './captions.js';
import { encodeRgbPng } from './png.js';
import { renderScene, sampleLayout, type SceneLayout } from './raster.js';
import {
  COLORS,
  EXPRESSIONS,
  HELD_OUT_COMBINATIONS,
  KINDS,
  MIN_COLOR_DISTANCE,
  OBJECT_SIZES,
  PALETTE,
  POSITIONS,
  SCENE_IMAGE_SIZES,
  SCENE_VOCABULARY,
  SHAPES,
  SPLITS,
  TOO_SIMILAR_COLORS,
  backgroundsFor,
  isHeldOut,
  type HeldOutCombination,
  type Kind,
  type SceneAttributes,
  type SceneImageSize,
  type SceneRecord,
  type Split,
} from './vocab.js';

export const TRAIN_DIR = 'train';
export const HELDOUT_DIR = 'heldout';
export const ATTRIBUTES_FILE = 'attributes.jsonl';
export const SCENE_METADATA_FILE = 'metadata.jsonl';
export const DATASET_SUMMARY_FILE = 'dataset.json';
export const MAX_SCENE_COUNT = 1_000_000;

function pick<T>(gen: Generator, items: readonly T[]): T {
  return items[gen.randint(0, items.length)];
}

/** Draws every attribute independently (kind too unless given); background compatible with the colour. */
function sampleAny(gen: Generator, kind: Kind = pick(gen, KINDS)): SceneAttributes {
  const a: SceneAttributes =
    kind === 'face'
      ? { kind, expression: pick(gen, EXPRESSIONS), color: 'red', size: 'small', position: 'center', background: 'white' }
      : { kind, shape: pick(gen, SHAPES), color: 'red', size: 'small', position: 'center', background: 'white' };
  a.color = pick(gen, COLORS);
  a.size = pick(gen, OBJECT_SIZES);
  a.position = pick(gen, POSITIONS);
  a.background = pick(gen, backgroundsFor(a.color));
  return a;
}

/**
 * Attributes of one scene of `split`. Train: faces and shapes equally often; within a kind,
 * uniform over the scenes without a held-out combination (rejection). Held-out: a held-out
 * combination chosen uniformly, the other attributes drawn freely (sampleWithCombination).
 */
export function sampleSceneAttributes(gen: Generator, split: Split): SceneAttributes {
  if (split === 'train') {
    const kind = pick(gen, KINDS);
    for (;;) {
      const a = sampleAny(gen, kind);
      if (!isHeldOut(a)) return a;
    }
  }
  if (split !== 'heldout') throw new Error(`split must be one of ${SPLITS.join(', ')}; got ${JSON.stringify(split)}`);
  return sampleWithCombination(gen, pick(gen, HELD_OUT_COMBINATIONS));
}

/** A scene containing held-out combination `combo`, the other attributes drawn freely. */
export function sampleWithCombination(gen: Generator, combo: HeldOutCombination): SceneAttributes {
  const a = sampleAny(gen);
  if (combo.object.endsWith(' face')) {
    a.kind = 'face';
    a.expression = combo.object.slice(0, -' face'.length) as SceneAttributes['expression'];
    delete a.shape;
  } else {
    a.kind = 'shape';
    a.shape = combo.object as SceneAttributes['shape'];
    delete a.expression;
  }
  if (combo.color !== undefined && combo.color !== a.color) {
    a.color = combo.color;
    a.background = pick(gen, backgroundsFor(a.color));
  }
  if (combo.position !== undefined) a.position = combo.position;
  // Canonical key order (kind, expression | shape, ...), as in attributes.jsonl.
  return {
    kind: a.kind,
    ...(a.kind === 'face' ? { expression: a.expression } : { shape: a.shape }),
    color: a.color,
    size: a.size,
    position: a.position,
    background: a.background,
  };
}

/** One drawn scene: attributes and the jittered layout. */
export interface SceneSample {
  attrs: SceneAttributes;
  layout: SceneLayout;
}

export function sampleScene(gen: Generator, split: Split): SceneSample {
  const attrs = sampleSceneAttributes(gen, split);
  return { attrs, layout: sampleLayout(attrs, gen) };
}

export interface SceneDatasetOptions {
  outDir: string;
  /** Train images. */
  count: number;
  /** Held-out images; default ceil(count / 20). */
  heldoutCount?: number;
  /** Image side: 32 or 64; default 32. */
  size?: number;
  /** Default 0. */
  seed?: number;
  /** Also write metadata.jsonl (same captions as the .txt files); default false. */
  metadata?: boolean;
  /** Replace files of an earlier run in the split folders (other files are kept); default false. */
  overwrite?: boolean;
  onProgress?: (split: Split, done: number, total: number) => void;
}

export type AttributeCounts = Record<'kind' | 'expression' | 'shape' | 'color' | 'size' | 'position' | 'background', Record<string, number>>;

export interface SceneDatasetSummary {
  name: 'synthetic-scenes';
  version: 1;
  seed: number;
  size: SceneImageSize;
  counts: Record<Split, number>;
  dirs: Record<Split, string>;
  captions: string;
  phrasingsPerImage: number;
  heldOutCombinations: readonly HeldOutCombination[];
  vocabularies: typeof SCENE_VOCABULARY;
  palette: typeof PALETTE;
  minColorDistance: number;
  tooSimilarColors: typeof TOO_SIMILAR_COLORS;
  attributeCounts: Record<Split, AttributeCounts>;
}

export interface SceneDatasetResult {
  outDir: string;
  dirs: Record<Split, string>;
  summary: SceneDatasetSummary;
  /** Wall time of the whole write, seconds. */
  seconds: number;
}

/** Throws, naming the value and what is allowed, when options are invalid. */
export function validateSceneDatasetOptions(o: SceneDatasetOptions): void {
  if (typeof o.outDir !== 'string' || o.outDir.trim() === '') throw new Error(`outDir must be a non-empty path, got ${JSON.stringify(o.outDir)}`);
  if (!Number.isInteger(o.count) || o.count < 1 || o.count > MAX_SCENE_COUNT) {
    throw new Error(`count must be an integer in [1, ${MAX_SCENE_COUNT}], got ${o.count}`);
  }
  if (o.heldoutCount !== undefined && (!Number.isInteger(o.heldoutCount) || o.heldoutCount < 0 || o.heldoutCount > MAX_SCENE_COUNT)) {
    throw new Error(`heldoutCount must be an integer in [0, ${MAX_SCENE_COUNT}], got ${o.heldoutCount}`);
  }
  if (o.size !== undefined && !(SCENE_IMAGE_SIZES as readonly number[]).includes(o.size)) {
    throw new Error(`size must be one of ${SCENE_IMAGE_SIZES.join(', ')}, got ${o.size}`);
  }
  if (o.seed !== undefined && (!Number.isInteger(o.seed) || o.seed < 0 || o.seed > Number.MAX_SAFE_INTEGER)) {
    throw new Error(`seed must be an integer in [0, ${Number.MAX_SAFE_INTEGER}], got ${o.seed}`);
  }
}

/** Names this generator writes in a split folder. */
function isGeneratedName(name: string): boolean {
  return /^\d+\.(png|txt)$/.test(name) || name === ATTRIBUTES_FILE || name === SCENE_METADATA_FILE;
}

function prepareDir(dir: string, overwrite: boolean): void {
  if (existsSync(dir)) {
    const ours = readdirSync(dir).filter(isGeneratedName);
    if (ours.length > 0) {
      if (!overwrite) {
        throw new Error(
          `${dir} already holds ${ours.length} generated file(s) (e.g. ${ours[0]}); pass overwrite (--overwrite) to replace them or choose another output folder`,
        );
      }
      for (const name of ours) rmSync(path.join(dir, name));
    }
  }
  mkdirSync(dir, { recursive: true });
}

function emptyCounts(): AttributeCounts {
  return { kind: {}, expression: {}, shape: {}, color: {}, size: {}, position: {}, background: {} };
}

function countAttributes(counts: AttributeCounts, a: SceneAttributes): void {
  for (const k of Object.keys(counts) as Array<keyof AttributeCounts>) {
    const v = a[k];
    if (v !== undefined) counts[k][v] = (counts[k][v] ?? 0) + 1;
  }
}

/** Writes the dataset (synchronously; single-threaded). */
export function writeSceneDataset(options: SceneDatasetOptions): SceneDatasetResult {
  validateSceneDatasetOptions(options);
  const t0 = performance.now();
  const size = (options.size ?? 32) as SceneImageSize;
  const seed = options.seed ?? 0;
  const counts: Record<Split, number> = { train: options.count, heldout: options.heldoutCount ?? Math.ceil(options.count / 20) };
  const outDir = path.resolve(options.outDir);
  const dirs: Record<Split, string> = { train: path.join(outDir, TRAIN_DIR), heldout: path.join(outDir, HELDOUT_DIR) };
  for (const split of SPLITS) prepareDir(dirs[split], options.overwrite ?? false);

  const root = new Generator(seed);
  const gens: Record<Split, Generator> = { train: root.spawn(), heldout: root.spawn() };
  const attributeCounts: Record<Split, AttributeCounts> = { train: emptyCounts(), heldout: emptyCounts() };
  for (const split of SPLITS) {
    const n = counts[split];
    const width = Math.max(5, String(Math.max(0, n - 1)).length);
    const records: string[] = [];
    const metadata: string[] = [];
    for (let i = 0; i < n; i++) {
      const { attrs, layout } = sampleScene(gens[split], split);
      const stem = String(i).padStart(width, '0');
      const fileName = `${stem}.png`;
      const rgb = renderScene(attrs, size, layout);
      writeFileSync(path.join(dirs[split], fileName), encodeRgbPng(rgb, size, size));
      const captions = captionsFor(attrs);
      writeFileSync(path.join(dirs[split], `${stem}.txt`), `${captions.join('\n')}\n`);
      const record: SceneRecord = { file_name: fileName, ...attrs, split };
      records.push(JSON.stringify(record));
      if (options.metadata) metadata.push(JSON.stringify({ file_name: fileName, text: captions }));
      countAttributes(attributeCounts[split], attrs);
      if (options.onProgress && ((i + 1) % 1000 === 0 || i + 1 === n)) options.onProgress(split, i + 1, n);
    }
    writeFileSync(path.join(dirs[split], ATTRIBUTES_FILE), records.length ? `${records.join('\n')}\n` : '');
    if (options.metadata) writeFileSync(path.join(dirs[split], SCENE_METADATA_FILE), metadata.length ? `${metadata.join('\n')}\n` : '');
  }

  const summary: SceneDatasetSummary = {
    name: 'synthetic-scenes',
    version: 1,
    seed,
    size,
    counts,
    dirs: { train: TRAIN_DIR, heldout: HELDOUT_DIR },
    captions: `sidecar .txt next to each image, ${PHRASING_COUNT} phrasings, one per line`,
    phrasingsPerImage: PHRASING_COUNT,
    heldOutCombinations: HELD_OUT_COMBINATIONS,
    vocabularies: SCENE_VOCABULARY,
    palette: PALETTE,
    minColorDistance: MIN_COLOR_DISTANCE,
    tooSimilarColors: TOO_SIMILAR_COLORS,
    attributeCounts,
  };
  writeFileSync(path.join(outDir, DATASET_SUMMARY_FILE), `${JSON.stringify(summary, null, 2)}\n`);
  return { outDir, dirs, summary, seconds: (performance.now() - t0) / 1000 };
}

/** Reads an attributes.jsonl (or a split folder holding one) into records. */
export function readSceneRecords(fileOrDir: string): SceneRecord[] {
  const file = existsSync(fileOrDir) && statSync(fileOrDir).isDirectory() ? path.join(fileOrDir, ATTRIBUTES_FILE) : fileOrDir;
  const text = readFileSync(file, 'utf8');
  return text
    .split('\n')
    .map((l, i) => [l.trim(), i + 1] as const)
    .filter(([l]) => l.length > 0)
    .map(([l, line]) => {
      try {
        return JSON.parse(l) as SceneRecord;
      } catch (e) {
        throw new Error(`${file}:${line}: not JSON (${(e as Error).message})`);
      }
    });
}

/** Reads `<outDir>/dataset.json`. */
export function readSceneDatasetSummary(outDir: string): SceneDatasetSummary {
  return JSON.parse(readFileSync(path.join(outDir, DATASET_SUMMARY_FILE), 'utf8')) as SceneDatasetSummary;
}
