/**
 * A scene split folder (`<dataset>/train` or `<dataset>/heldout`, see generate.ts) as a labelled
 * ImageSet for the attribute classifier (src/classifier/): RGB images in [-1, 1] and
 * labels [N, 5], the class index of each head below, read from attributes.jsonl.
 *
 * SCENE_HEADS is the one definition of the heads (names and class order), derived from vocab.ts:
 * training, loading a saved classifier and scoring prompts all check against it.
 */
import path from 'node:path';
import { existsSync } from 'node:fs';
import { fingerprint } from '../cache.js';
import { type ImageSet, type LabelHead, loadImageFiles } from '../in-memory.js';
import { ATTRIBUTES_FILE, readSceneRecords } from './generate.js';
import {
  COLORS,
  OBJECTS,
  OBJECT_SIZES,
  POSITIONS,
  objectOf,
  validateSceneAttributes,
  type Color,
  type ObjectSize,
  type Position,
  type SceneAttributes,
  type SceneObject,
  type SceneRecord,
} from './vocab.js';

export const SCENE_HEAD_NAMES = ['object', 'color', 'position', 'size', 'background'] as const;
export type SceneHeadName = (typeof SCENE_HEAD_NAMES)[number];

/** What the classifier reads of a scene: one value per head. */
export interface SceneLabels {
  object: SceneObject;
  color: Color;
  position: Position;
  size: ObjectSize;
  background: Color;
}

const CLASSES: Readonly<Record<SceneHeadName, readonly string[]>> = {
  object: OBJECTS,
  color: COLORS,
  position: POSITIONS,
  size: OBJECT_SIZES,
  background: COLORS,
};

/** The heads of the scene attribute classifier, in label-column order. */
export const SCENE_HEADS: readonly LabelHead[] = SCENE_HEAD_NAMES.map((name) => ({ name, classes: CLASSES[name] }));

/** Throws unless `heads` are exactly SCENE_HEADS (names, class names and their order). */
export function checkSceneHeads(heads: readonly LabelHead[], what = 'classifier'): void {
  const same =
    heads.length === SCENE_HEADS.length && heads.every((h, i) => h.name === SCENE_HEADS[i].name && h.classes.join('\n') === SCENE_HEADS[i].classes.join('\n'));
  if (!same) {
    const show = (hs: readonly LabelHead[]) => hs.map((h) => `${h.name} (${h.classes.length})`).join(', ');
    throw new Error(
      `${what}: heads ${show(heads)} are not the scene attribute heads ${show(SCENE_HEADS)}; train one with scripts/train-classifier.ts --data scenes`,
    );
  }
}

/** Class index of every head: [numHeads]. */
export function sceneLabels(attrs: SceneAttributes): number[] {
  const values: Record<SceneHeadName, string> = {
    object: objectOf(attrs),
    color: attrs.color,
    position: attrs.position,
    size: attrs.size,
    background: attrs.background,
  };
  return SCENE_HEADS.map((h) => h.classes.indexOf(values[h.name as SceneHeadName]));
}

/** The inverse of sceneLabels: head values of one row [numHeads] of class indices. */
export function decodeSceneLabels(row: ArrayLike<number>): SceneLabels {
  if (row.length !== SCENE_HEADS.length) throw new Error(`scene labels: a row has ${SCENE_HEADS.length} class indices, got ${row.length}`);
  const v = Object.fromEntries(SCENE_HEADS.map((h, i) => [h.name, h.classes[row[i]]]));
  return v as unknown as SceneLabels;
}

export interface SceneAttributeSet extends ImageSet {
  /** [N, numHeads] class indices, SCENE_HEADS order. */
  labels: Int32Array;
  /** attributes.jsonl, one record per image (same order as the images). */
  records: SceneRecord[];
}

export interface SceneAttributeSetOptions {
  /** Image side the images are resized to (default 32). */
  size?: number;
  /** Only the first N records. */
  limit?: number;
  onProgress?: (done: number, total: number) => void;
}

/**
 * Loads split folders (each: attributes.jsonl + its PNGs), one after the other, as RGB images in
 * [-1, 1] with labels [N, 5].
 */
export async function loadSceneAttributeSet(splitDirs: string | string[], o: SceneAttributeSetOptions = {}): Promise<SceneAttributeSet> {
  const dirs = typeof splitDirs === 'string' ? [splitDirs] : splitDirs;
  const size = o.size ?? 32;
  const records: SceneRecord[] = [];
  const files: string[] = [];
  for (const dir of dirs) {
    const file = path.join(dir, ATTRIBUTES_FILE);
    if (!existsSync(file))
      throw new Error(`${dir} has no ${ATTRIBUTES_FILE}: pass a split folder of a scene dataset written by scripts/make-scenes.ts (e.g. data/scenes/heldout)`);
    const recs = readSceneRecords(file);
    if (recs.length === 0) throw new Error(`${file} lists no images`);
    recs.forEach((r, i) => {
      try {
        validateSceneAttributes(r);
      } catch (e) {
        throw new Error(`${file}: record ${i + 1} (${r.file_name}): ${(e as Error).message}`);
      }
    });
    records.push(...recs);
    files.push(...recs.map((r) => path.join(dir, r.file_name)));
  }
  const n = o.limit === undefined ? records.length : Math.min(o.limit, records.length);
  records.length = n;
  const labels = new Int32Array(n * SCENE_HEADS.length);
  records.forEach((r, i) => {
    labels.set(sceneLabels(r), i * SCENE_HEADS.length);
  });
  const images = await loadImageFiles(files.slice(0, n), { size, channels: 3, onProgress: o.onProgress });
  return {
    images,
    shape: [n, size, size, 3],
    labels,
    records,
    fingerprint: fingerprint(
      'scene-attributes',
      dirs.map((d) => path.resolve(d)),
      records,
      size,
    ),
    source: `${dirs.join(' + ')} (${n} images)`,
  };
}
