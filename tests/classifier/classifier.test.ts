import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { type ImageSet, type LabelHead, mnistSet } from '../../src/data/in-memory.js';
import {
  AttributeClassifier,
  accuracyFromLogits,
  argmaxHeads,
  argmaxRows,
  evaluateClassifier,
  headAccuracies,
  parseClassifierConfig,
  predict,
} from '../../src/classifier/classifier.js';
import { shiftedBatch, trainClassifier } from '../../src/classifier/train.js';
import { Generator } from '../../src/random/generator.js';

beforeAll(async () => {
  await initBackend({ backend: process.env.TXT2IMG_BACKEND ?? 'wasm', quiet: true });
});

const tmp = (name: string) => mkdtempSync(path.join(os.tmpdir(), `eval-${name}-`));

describe('accuracy', () => {
  it('is computed correctly on a hand-made case', () => {
    const logits = [
      0.1,
      0.9,
      0, // -> 1
      2,
      1,
      0, // -> 0
      0,
      0,
      5, // -> 2
      1,
      1.5,
      0, // -> 1
      7,
      7,
      7, // tie -> first index, 0
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
    const clf = new AttributeClassifier({}, new Generator(0));
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
    for (const f of ['config.json', 'model.safetensors', 'metrics.json', 'train/loss.jsonl', 'train/checkpoints/latest'])
      expect(existsSync(path.join(out, f)), f).toBe(true);
    expect(AttributeClassifier.metrics(out)!.testAccuracy).toBeCloseTo(r.testAccuracy!, 12);

    const loaded = AttributeClassifier.load(out);
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

describe('training on the onnx runtime', () => {
  it('takes the same steps as tfjs (same shifts and batches; losses to 1e-4), and data-parallel trains too', async () => {
    const slice = mnistSet('train', 48);
    const run = async (runtime: 'tfjs' | 'onnx', workers: number) => {
      const losses: number[] = [];
      const lines: string[] = [];
      const r = await trainClassifier({
        outDir: tmp(`clf-${runtime}`),
        train: slice,
        steps: 4,
        batchSize: 16,
        lr: 3e-3,
        maxShift: 2,
        seed: 3,
        runtime,
        workers,
        log: (l) => lines.push(l),
        onStep: (s) => losses.push(s.loss),
      });
      r.classifier!.dispose();
      return { losses, log: lines.join('\n') };
    };
    const tfjs = await run('tfjs', 1);
    const onnx = await run('onnx', 1);
    expect(onnx.log).toMatch(/classifier gradients: onnxruntime-node on the CPU/);
    expect(tfjs.log).toMatch(/classifier gradients: tfjs/);
    expect(onnx.losses).toHaveLength(4);
    onnx.losses.forEach((l, i) => {
      expect(Math.abs(l - tfjs.losses[i]), `step ${i + 1}`).toBeLessThan(1e-4 * Math.max(1, tfjs.losses[i]));
    });
    const dp = await run('onnx', 2);
    expect(dp.log).toMatch(/data-parallel over 2 shards/);
    expect(dp.losses.every(Number.isFinite)).toBe(true);
  });
});

describe('heads', () => {
  const heads: LabelHead[] = [
    { name: 'a', classes: ['x', 'y'] },
    { name: 'b', classes: ['p', 'q', 'r'] },
  ];

  it('argmax and accuracies per head on a hand-made case', () => {
    const logits = [
      0.1,
      0.9,
      /* | */ 3,
      0,
      1, // a=1, b=0
      2,
      1,
      /*     | */ 0,
      0,
      5, // a=0, b=2
      4,
      4,
      /*     | */ 1,
      2,
      0, // a=0 (tie), b=1
    ];
    const pred = argmaxHeads(logits, [2, 3]);
    expect(Array.from(pred)).toEqual([1, 0, 0, 2, 0, 1]);
    const acc = headAccuracies(pred, [1, 0, 1, 2, 0, 0], heads);
    expect(acc.perHead).toEqual({ a: 2 / 3, b: 2 / 3 });
    expect(acc.all).toBeCloseTo(1 / 3, 12);
    expect(() => argmaxHeads([1, 2, 3, 4], [2, 3])).toThrow(/not rows of 5 logits/);
  });

  it("splits the logits per head and sums the heads' softmax cross-entropies", () => {
    const clf = new AttributeClassifier({ imageSize: 8, imageChannels: 3, channels: [2, 3], hidden: 4, heads }, new Generator(3));
    expect(clf.numLogits).toBe(5);
    expect(clf.store.get('fc2.weight').shape).toEqual([4, 5]);
    const rng = new Generator(1);
    const x = rng.randn([3, 8, 8, 3]) as tf.Tensor4D;
    const labels = [1, 2, 0, 0, 1, 1]; // [3, 2]
    const logits = clf.apply(x);
    const parts = clf.splitHeads(logits);
    expect(parts.map((p) => p.shape)).toEqual([
      [3, 2],
      [3, 3],
    ]);
    const l = logits.arraySync() as number[][];
    expect(parts[1].arraySync()).toEqual(l.map((r) => r.slice(2)));
    // By hand: mean over images of -log softmax(head logits)[label], summed over heads.
    const ce = (row: number[], k: number) => Math.log(row.reduce((a, v) => a + Math.exp(v), 0)) - row[k];
    let expected = 0;
    for (let i = 0; i < 3; i++) expected += (ce(l[i].slice(0, 2), labels[2 * i]) + ce(l[i].slice(2), labels[2 * i + 1])) / 3;
    const y = tf.tensor2d(labels, [3, 2], 'int32');
    const loss = clf.lossFn(x, y);
    expect(loss.dataSync()[0]).toBeCloseTo(expected, 5);
    expect(() => clf.lossFn(x, tf.tensor1d([0, 1, 0], 'int32'))).toThrow(/need \[3, 2\] labels/);
    tf.dispose([x, logits, ...parts, y, loss]);
    clf.dispose();
  });

  it('validates heads, naming the bad value', () => {
    const base = { _class_name: 'AttributeClassifier', _version: 2 };
    expect(() => parseClassifierConfig({ ...base, heads: [] })).toThrow(/heads must be a non-empty array/);
    expect(() => parseClassifierConfig({ ...base, heads: [{ name: 'a', classes: ['x'] }] })).toThrow(
      /heads\[0\]\.classes \(head 'a'\) must be at least 2 distinct/,
    );
    expect(() => parseClassifierConfig({ ...base, heads: [heads[0], { name: 'a', classes: ['u', 'v'] }] })).toThrow(/heads\[1\]\.name .*"a"/);
    expect(() => parseClassifierConfig({ ...base, _version: 3 })).toThrow(/_version must be one of 1, 2, got 3/);
    expect(() => parseClassifierConfig({ ...base, numClasses: 10 })).toThrow(/unknown key\(s\) 'numClasses'/);
  });

  it('reads a version 1 (MnistClassifier) folder as one digit head with the same predictions', async () => {
    const v1 = { _class_name: 'MnistClassifier', _version: 1, imageSize: 32, imageChannels: 1, channels: [4, 8], hidden: 16, numClasses: 10 };
    expect(parseClassifierConfig(v1)).toEqual({
      _class_name: 'AttributeClassifier',
      _version: 2,
      imageSize: 32,
      imageChannels: 1,
      channels: [4, 8],
      hidden: 16,
      pool: 'avg',
      heads: [{ name: 'digit', classes: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'] }],
    });
    expect(() => parseClassifierConfig({ ...v1, _class_name: 'Other' })).toThrow(/_class_name must be 'MnistClassifier' in a version 1 config/);
    // A folder as version 1 wrote it: the same weight names, its own config.json.
    const dir = tmp('v1');
    const clf = new AttributeClassifier({ channels: [4, 8], hidden: 16 }, new Generator(5));
    await clf.save(dir);
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify(v1));
    const loaded = AttributeClassifier.load(dir);
    expect(loaded.config.heads).toEqual([{ name: 'digit', classes: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'] }]);
    const set = mnistSet('test', 16);
    const a = await predict(clf, set.images, set.shape);
    const b = await predict(loaded, set.images, set.shape);
    expect(Array.from(b.logits)).toEqual(Array.from(a.logits));
    expect(Array.from(b.predicted)).toEqual(Array.from(argmaxRows(a.logits, 10)));
    // Saving again writes version 2.
    await loaded.save(dir);
    expect(JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'))).toMatchObject({ _class_name: 'AttributeClassifier', _version: 2 });
    clf.dispose();
    loaded.dispose();
  });
});
