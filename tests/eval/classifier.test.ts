import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { type ImageSet, mnistSet } from '../../src/data/in-memory.js';
import { MnistClassifier, accuracyFromLogits, argmaxRows, evaluateClassifier, predict, shiftedBatch, trainClassifier } from '../../src/eval/classifier.js';
import { Generator } from '../../src/random/generator.js';

beforeAll(async () => {
  await initBackend({ backend: process.env.TXT2IMG_BACKEND ?? 'wasm', quiet: true });
});

const tmp = (name: string) => mkdtempSync(path.join(os.tmpdir(), `eval-${name}-`));

describe('accuracy', () => {
  it('is computed correctly on a hand-made case', () => {
    const logits = [
      0.1, 0.9, 0, // -> 1
      2, 1, 0, // -> 0
      0, 0, 5, // -> 2
      1, 1.5, 0, // -> 1
      7, 7, 7, // tie -> first index, 0
    ];
    expect(Array.from(argmaxRows(logits, 3))).toEqual([1, 0, 2, 1, 0]);
    expect(accuracyFromLogits(logits, [1, 0, 1, 1, 2], 3)).toBeCloseTo(3 / 5, 12);
    expect(accuracyFromLogits(logits, [1, 0, 2, 1, 0], 3)).toBe(1);
    expect(() => accuracyFromLogits(logits, [1, 0], 3)).toThrow(/5 predictions for 2 labels/);
  });
});

describe('shift augmentation', () => {
  it('moves the digit and fills the background', () => {
    const set: ImageSet = { images: new Float32Array(16).fill(-1), shape: [1, 4, 4, 1], fingerprint: 'x', source: 'x' };
    set.images[1 * 4 + 1] = 1; // pixel (y=1, x=1)
    const rng = new Generator(0);
    for (let k = 0; k < 20; k++) {
      const state = rng.getState();
      const out = shiftedBatch(set, [0], 1, rng);
      const probe = Generator.fromState(state);
      const dx = probe.randint(-1, 2);
      const dy = probe.randint(-1, 2);
      const expected = new Float32Array(16).fill(-1);
      expected[(1 + dy) * 4 + 1 + dx] = 1;
      expect(Array.from(out)).toEqual(Array.from(expected));
    }
    expect(Array.from(shiftedBatch(set, [0], 0, rng))).toEqual(Array.from(set.images));
  });
});

describe('MNIST classifier', () => {
  it('has the LeNet shape and gives 128-d features and 10 logits', () => {
    const clf = new MnistClassifier({}, new Generator(0));
    const x = tf.zeros([3, 32, 32, 1]) as tf.Tensor4D;
    const f = clf.features(x);
    const l = clf.apply(x);
    expect(f.shape).toEqual([3, 128]);
    expect(l.shape).toEqual([3, 10]);
    expect(clf.store.names().sort()).toEqual(['conv1.bias', 'conv1.weight', 'conv2.bias', 'conv2.weight', 'fc1.bias', 'fc1.weight', 'fc2.bias', 'fc2.weight']);
    expect(() => clf.apply(tf.zeros([1, 28, 28, 1]) as tf.Tensor4D)).toThrow(/\[B, 32, 32, 1\]/);
    tf.dispose([x, f, l]);
    clf.dispose();
  });

  it('trains with the shared loop on a tiny MNIST slice, saves, and loads back', async () => {
    const slice = mnistSet('train', 32);
    const out = tmp('clf');
    const before = tf.memory().numTensors;
    const r = await trainClassifier({ outDir: out, train: slice, test: slice, steps: 30, batchSize: 32, lr: 3e-3, maxShift: 0, seed: 0, log: () => {} });
    expect(r.steps).toBe(30);
    // 32 images seen 30 times: it fits them.
    expect(r.testAccuracy!).toBeGreaterThan(0.85);
    for (const f of ['config.json', 'model.safetensors', 'metrics.json', 'train/loss.jsonl', 'train/checkpoints/latest']) expect(existsSync(path.join(out, f)), f).toBe(true);
    expect(MnistClassifier.metrics(out)!.testAccuracy).toBeCloseTo(r.testAccuracy!, 12);

    const loaded = MnistClassifier.load(out);
    const a = await predict(r.classifier!, slice.images, slice.shape, 10);
    const b = await predict(loaded, slice.images, slice.shape);
    expect(Array.from(b.logits)).toEqual(Array.from(a.logits));
    expect(await evaluateClassifier(loaded, slice)).toBeCloseTo(r.testAccuracy!, 12);
    expect(a.features.length).toBe(32 * 128);
    loaded.dispose();
    r.classifier!.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});
