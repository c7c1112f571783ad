import * as tf from '@tensorflow/tfjs';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../../src/backend/index.js';
import { decodeImage } from '../../../src/image/convert.js';
import { SCENE_HEADS, checkSceneHeads, decodeSceneLabels, loadSceneAttributeSet, sceneLabels } from '../../../src/data/scenes/attribute-set.js';
import { writeSceneDataset } from '../../../src/data/scenes/generate.js';
import { COLORS, OBJECTS, objectOf, type SceneRecord } from '../../../src/data/scenes/vocab.js';
import { AttributeClassifier } from '../../../src/classifier/classifier.js';
import { trainClassifier } from '../../../src/classifier/train.js';
import { tempDir } from '../../fixtures/captioned.js';

let root: string;

beforeAll(async () => {
  await initBackend({ backend: process.env.TXT2IMG_BACKEND ?? 'wasm', quiet: true });
  root = tempDir('scene-attrs');
  writeSceneDataset({ outDir: root, count: 24, heldoutCount: 8, size: 32, seed: 3 });
});

const records = (split: string): SceneRecord[] =>
  readFileSync(path.join(root, split, 'attributes.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));

describe('scene heads', () => {
  it('come from the vocabularies', () => {
    expect(SCENE_HEADS.map((h) => h.name)).toEqual(['object', 'color', 'position', 'size', 'background']);
    expect(SCENE_HEADS.map((h) => h.classes.length)).toEqual([8, 10, 5, 2, 10]);
    expect(SCENE_HEADS[0].classes).toEqual(OBJECTS);
    expect(SCENE_HEADS[4].classes).toEqual(COLORS);
    checkSceneHeads(SCENE_HEADS);
    expect(() => checkSceneHeads([{ name: 'digit', classes: ['0', '1'] }])).toThrow(
      /heads digit \(2\) are not the scene attribute heads object \(8\), color \(10\)/,
    );
    const swapped = SCENE_HEADS.map((h) => (h.name === 'size' ? { ...h, classes: ['large', 'small'] } : h));
    expect(() => checkSceneHeads(swapped)).toThrow(/not the scene attribute heads/);
  });
});

describe('loadSceneAttributeSet', () => {
  it('labels [N, 5] match attributes.jsonl; images are the PNGs in [-1, 1]', async () => {
    for (const split of ['train', 'heldout']) {
      const set = await loadSceneAttributeSet(path.join(root, split));
      const recs = records(split);
      expect(set.shape).toEqual([recs.length, 32, 32, 3]);
      expect(set.labels.length).toBe(recs.length * 5);
      expect(set.records).toEqual(recs);
      recs.forEach((r, i) => {
        const row = set.labels.subarray(i * 5, (i + 1) * 5);
        expect(Array.from(row)).toEqual(sceneLabels(r));
        expect(decodeSceneLabels(row)).toEqual({ object: objectOf(r), color: r.color, position: r.position, size: r.size, background: r.background });
      });
      const png = await decodeImage(path.join(root, split, recs[2].file_name), 3);
      const per = 32 * 32 * 3;
      const img = set.images.subarray(2 * per, 3 * per);
      expect(Math.max(...Array.from(img, (v, k) => Math.abs(v - (png.data[k] / 127.5 - 1))))).toBeLessThan(1e-6);
    }
  });

  it('resizes, limits, and names a folder that is not a split', async () => {
    const set = await loadSceneAttributeSet(path.join(root, 'train'), { size: 16, limit: 5 });
    expect(set.shape).toEqual([5, 16, 16, 3]);
    await expect(loadSceneAttributeSet(root)).rejects.toThrow(/has no attributes\.jsonl: pass a split folder/);
    const bad = tempDir('scene-bad');
    writeFileSync(path.join(bad, 'attributes.jsonl'), `${JSON.stringify({ ...records('train')[0], color: 'mauve' })}\n`);
    await expect(loadSceneAttributeSet(bad)).rejects.toThrow(/record 1 \(00000\.png\): object colour must be one of .*"mauve"/);
  });

  it('trains a five-head classifier with the shared loop and reports every head', async () => {
    const train = await loadSceneAttributeSet(path.join(root, 'train'), { size: 16 });
    const test = await loadSceneAttributeSet(path.join(root, 'heldout'), { size: 16 });
    const out = tempDir('scene-clf');
    const before = tf.memory().numTensors;
    const r = await trainClassifier({
      outDir: out,
      train,
      test,
      config: { imageSize: 16, imageChannels: 3, channels: [4, 8], hidden: 16, heads: [...SCENE_HEADS] },
      steps: 3,
      batchSize: 8,
      lr: 1e-3,
      seed: 0,
      log: () => {},
    });
    expect(Object.keys(r.testHeadAccuracy!)).toEqual(['object', 'color', 'position', 'size', 'background']);
    const metrics = AttributeClassifier.metrics(out)!;
    expect(metrics).toMatchObject({ maxShift: 0, testImages: 8, testAccuracy: r.testAccuracy, testHeadAccuracy: r.testHeadAccuracy });
    const loaded = AttributeClassifier.load(out);
    expect(loaded.config.heads).toEqual(SCENE_HEADS);
    loaded.dispose();
    r.classifier!.dispose();
    expect(tf.memory().numTensors).toBe(before);
    // Labels that do not fit the heads are refused before training.
    const wrong = { ...train, labels: train.labels.map((v, i) => (i === 7 ? 12 : v)) };
    await expect(
      trainClassifier({
        outDir: tempDir('scene-clf-bad'),
        train: wrong,
        config: { imageSize: 16, imageChannels: 3, heads: [...SCENE_HEADS] },
        steps: 1,
        batchSize: 4,
        lr: 1e-3,
        seed: 0,
        log: () => {},
      }),
    ).rejects.toThrow(/image 1 has label 12 for head 'position', which has classes 0\.\.4/);
    expect(tf.memory().numTensors).toBe(before);
  });
});
