import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { IndexBatcher } from '../../src/data/in-memory.js';
import { AttributeClassifier, parseClassifierConfig } from '../../src/classifier/classifier.js';
import { type ClassifierShardTask, classifierReplicaSpec, classifierShardLoss } from '../../src/classifier/train.js';
import { type ParamStore, computeGradients, disposeGrads, stagedLossFn } from '../../src/nn/params.js';
import { DataParallel, checkWorkers, splitBatch } from '../../src/train/data-parallel.js';
import { type VaeShardTask, vaeReplicaSpec, vaeShardLoss, vaeStagedLoss } from '../../src/train/stages.js';
import { train } from '../../src/train/trainer.js';
import { Generator } from '../../src/random/generator.js';
import { AutoencoderKL } from '../../src/vae/autoencoder-kl.js';
import { parseVaeConfig } from '../../src/vae/config.js';
import { maxAbsDiff } from '../helpers.js';

const diff = (a: tf.Tensor, b: tf.Tensor) => maxAbsDiff(a.dataSync(), b.dataSync());

beforeAll(async () => {
  await initBackend({ backend: 'wasm', threads: 1, quiet: true });
});

/** 12 random 8x8 RGB images with 2-head labels. */
function classifierTask(): ClassifierShardTask {
  const rng = new Generator(5);
  const n = 12;
  const images = Float32Array.from({ length: n * 8 * 8 * 3 }, () => rng.uniform() * 2 - 1);
  const labels = Int32Array.from({ length: n * 2 }, (_, i) => (i * 7) % (i % 2 === 0 ? 3 : 2));
  return {
    config: parseClassifierConfig({
      imageSize: 8,
      imageChannels: 3,
      channels: [4, 4],
      hidden: 8,
      heads: [
        { name: 'shape', classes: ['a', 'b', 'c'] },
        { name: 'colour', classes: ['x', 'y'] },
      ],
    }),
    data: { images, shape: [n, 8, 8, 3] },
    labels,
    maxShift: 0,
  };
}

function vaeTask(): VaeShardTask {
  const rng = new Generator(6);
  const n = 10;
  const vae = parseVaeConfig({ imageChannels: 1, channels: [4, 8, 8], resBlocksPerLevel: 1, latentChannels: 2, downsampleFactor: 4, groupNormGroups: 2 });
  return { vae, data: { images: Float32Array.from({ length: n * 8 * 8 }, () => rng.uniform() * 2 - 1), shape: [n, 8, 8, 1] } };
}

/**
 * What a 2-shard pool must give, computed by hand with tfjs: shard k draws from the k-th generator
 * spawned from Generator(seed); loss and gradients are the shards' mean (equal shard sizes).
 */
function twoShardsByHand<B extends object>(store: ParamStore, loss: (b: B, rng: Generator) => tf.Scalar, batch: B, seed: number) {
  const rng = new Generator(seed);
  const rngs = [rng.spawn(), rng.spawn()];
  const parts = splitBatch(batch, 2).map((s, k) => computeGradients(store, () => loss(s.batch, rngs[k])));
  const value = (parts[0].loss.dataSync()[0] + parts[1].loss.dataSync()[0]) / 2;
  const grads = new Map(
    [...parts[0].grads.keys()].map((name) => [name, tf.tidy(() => tf.mul(tf.add(parts[0].grads.get(name)!, parts[1].grads.get(name)!), 0.5))]),
  );
  for (const p of parts) {
    p.loss.dispose();
    disposeGrads(p.grads);
  }
  return { loss: value, grads };
}

describe('splitBatch', () => {
  it('splits every per-sample field into contiguous, near-equal shards', () => {
    const shards = splitBatch({ indices: [0, 1, 2, 3, 4], flips: [true, false, true, false, true] }, 3);
    expect(shards.map((s) => s.size)).toEqual([2, 2, 1]);
    expect(shards.map((s) => s.batch.indices)).toEqual([[0, 1], [2, 3], [4]]);
    expect(shards[2].batch.flips).toEqual([true]);
    expect(splitBatch({ indices: [7] }, 2).map((s) => s.size)).toEqual([1, 0]);
  });

  it('rejects batches that are not per-sample arrays, naming the field', () => {
    expect(() => splitBatch({ indices: [1, 2], images: 3 } as never, 2)).toThrow(/field 'images' is number/);
    expect(() => splitBatch({ indices: [1, 2], flips: [true] }, 2)).toThrow(/'flips' has 1 entries, 'indices' has 2/);
  });

  it('checks the worker count', () => {
    expect(checkWorkers(2)).toBe(2);
    expect(() => checkWorkers(0)).toThrow(/workers must be an integer from 1 to 64.*got 0/);
    expect(() => checkWorkers(1.5)).toThrow(/got 1.5/);
  });
});

describe('DataParallel', () => {
  let pool: DataParallel<{ indices: number[] }> | undefined;
  afterAll(async () => {
    await pool?.close();
  });

  it('gives the full-batch gradient of a mean loss, with the shards computed in worker threads', async () => {
    const task = classifierTask();
    const clf = new AttributeClassifier(task.config, new Generator(1));
    const loss = classifierShardLoss(task, clf);
    const logs: string[] = [];
    pool = await DataParallel.start({ workers: 3, replica: classifierReplicaSpec(task), store: clf.store, loss, log: (l) => logs.push(l) });
    expect(logs.join('\n')).toMatch(/data-parallel: 3 workers x 1 wasm thread/);
    const batch = { indices: [0, 3, 4, 7, 8, 9, 11] }; // shards of 3, 2, 2 samples
    const full = computeGradients(clf.store, () => loss(batch, new Generator(0)));

    const before = tf.memory().numTensors;
    pool.syncWeights();
    const par = await pool.gradients(batch, new Generator(0));
    expect(tf.memory().numTensors - before).toBe(par.grads.size);
    expect(par.loss).toBeCloseTo(full.loss.dataSync()[0], 5);
    expect([...par.grads.keys()].sort()).toEqual([...full.grads.keys()].sort());
    for (const [name, g] of full.grads) expect(diff(par.grads.get(name)!, g), name).toBeLessThan(1e-5);

    // New weights reach the workers: after a change, the gradients follow it.
    const w = clf.store.get(clf.store.entries()[0][0]);
    tf.tidy(() => w.assign(tf.mul(w, 1.5)));
    const full2 = computeGradients(clf.store, () => loss(batch, new Generator(0)));
    disposeGrads(par.grads);
    pool.syncWeights();
    const par2 = await pool.gradients(batch, new Generator(0));
    for (const [name, g] of full2.grads) expect(diff(par2.grads.get(name)!, g), name).toBeLessThan(1e-5);
    const first = [...full.grads.keys()][0];
    expect(diff(par2.grads.get(first)!, full.grads.get(first)!)).toBeGreaterThan(0);

    tf.dispose([full.loss, full2.loss]);
    for (const g of [full.grads, full2.grads, par2.grads]) disposeGrads(g);
    await pool.close();
    pool = undefined;
    clf.dispose();
  });

  it('draws each shard noise from a generator spawned from the trainer generator', async () => {
    const task = vaeTask();
    const vae = new AutoencoderKL(task.vae, new Generator(2));
    const loss = vaeShardLoss(task, vae);
    const vpool = await DataParallel.start({ workers: 2, replica: vaeReplicaSpec(task), store: vae.store, loss, log: () => {} });
    try {
      const batcher = new IndexBatcher({ images: task.data.images, shape: task.data.shape } as never, 6, 0, true);
      const batch = batcher.next();
      vpool.syncWeights();
      const par = await vpool.gradients(batch, new Generator(9));
      const want = twoShardsByHand(vae.store, loss, batch, 9);
      expect(par.loss).toBeCloseTo(want.loss, 5);
      for (const [name, g] of par.grads) expect(diff(g, want.grads.get(name)!), name).toBeLessThan(1e-5);
      disposeGrads(want.grads);
      disposeGrads(par.grads);
    } finally {
      await vpool.close();
      vae.dispose();
    }
  });

  it('with onnx, every shard is computed by onnxruntime (same noise as tfjs); new weights reach the workers', async () => {
    const task = vaeTask();
    const vae = new AutoencoderKL(task.vae, new Generator(2));
    const staged = vaeStagedLoss(task, vae);
    const loss = stagedLossFn(staged);
    const logs: string[] = [];
    const opool = await DataParallel.start({
      workers: 2,
      replica: vaeReplicaSpec(task),
      store: vae.store,
      loss,
      onnx: { loss: staged, fallback: false },
      log: (l) => logs.push(l),
    });
    try {
      expect(logs.join('\n')).toMatch(/data-parallel: 2 shards x 1 onnxruntime-node thread/);
      const batcher = new IndexBatcher({ images: task.data.images, shape: task.data.shape } as never, 6, 0, true);
      const batch = batcher.next();
      for (const round of [0, 1]) {
        if (round === 1) tf.tidy(() => vae.store.get('decoder.conv_out.weight').assign(tf.mul(vae.store.get('decoder.conv_out.weight'), 1.7)));
        opool.syncWeights();
        const before = tf.memory().numTensors;
        const par = await opool.gradients(batch, new Generator(9));
        expect(tf.memory().numTensors - before).toBe(par.grads.size);
        const want = twoShardsByHand(vae.store, loss, batch, 9);
        expect(par.loss).toBeCloseTo(want.loss, 5);
        expect([...par.grads.keys()].sort()).toEqual([...want.grads.keys()].sort());
        for (const [name, g] of par.grads) {
          const w = want.grads.get(name)!;
          const scale = Math.max(
            1e-3,
            tf.tidy(() => tf.max(tf.abs(w)).dataSync()[0]),
          );
          expect(diff(g, w) / scale, `round ${round}: ${name}`).toBeLessThan(1e-4);
        }
        disposeGrads(want.grads);
        disposeGrads(par.grads);
      }
    } finally {
      await opool.close();
      vae.dispose();
    }
  });

  it('a worker that fails to start is reported, and the pool stops', async () => {
    const task = { ...classifierTask(), config: { ...classifierTask().config, channels: [4, 4, 4, 4, 4] as unknown as [number, number] } }; // too deep for 8x8 images
    const clf = new AttributeClassifier(classifierTask().config, new Generator(1));
    await expect(
      DataParallel.start({
        workers: 2,
        replica: classifierReplicaSpec(task),
        store: clf.store,
        loss: classifierShardLoss(classifierTask(), clf),
        log: () => {},
      }),
    ).rejects.toThrow(/data-parallel worker 1 of 2 failed to start/);
    clf.dispose();
  });
});

describe('data-parallel training', () => {
  async function run(runDir: string, o: { workers: number; stopAfter?: number; resume?: boolean }) {
    const task = classifierTask();
    task.maxShift = 1; // noise in the loss: each shard's shifts come from its spawned generator
    const clf = new AttributeClassifier(task.config, new Generator(1));
    const batcher = new IndexBatcher({ images: task.data.images, shape: task.data.shape } as never, 5, 3, false);
    const r = await train<{ indices: number[] }>({
      runDir,
      store: clf.store,
      data: { next: () => ({ indices: batcher.next().indices }), position: () => batcher.position(), restore: (p) => batcher.restore(p) },
      loss: classifierShardLoss(task, clf),
      parallel: { workers: o.workers, replica: classifierReplicaSpec(task) },
      log: () => {},
      totalSteps: 4,
      seed: 4,
      lr: { kind: 'constant', base: 0.01, warmupSteps: 0, totalSteps: 4 },
      accumulate: 2,
      emaDecay: 0.5,
      checkpointEvery: 2,
      resume: o.resume,
      stopAfter: o.stopAfter,
    });
    const weights = new Map([...(await clf.store.toArrays())].map(([name, { data }]) => [name, Array.from(data)]));
    r.ema?.dispose();
    r.optimizer.dispose();
    clf.dispose();
    return weights;
  }

  it('is deterministic, resumes exactly, and leaks no tensors', async () => {
    const before = tf.memory().numTensors;
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'dp-'));
    const a = await run(path.join(tmp, 'a'), { workers: 2 });
    const b = await run(path.join(tmp, 'b'), { workers: 2, stopAfter: 2 });
    const b2 = await run(path.join(tmp, 'b'), { workers: 2, resume: true });
    const single = await run(path.join(tmp, 'c'), { workers: 1 });
    expect(tf.memory().numTensors).toBe(before);
    for (const [name, w] of a) {
      expect(maxAbsDiff(b2.get(name)!, w), name).toBe(0);
    }
    expect(maxAbsDiff([...b.values()][0], [...a.values()][0])).toBeGreaterThan(0); // b stopped half-way
    // Same data, other noise streams: close to the one-thread run, not equal.
    const name = [...a.keys()][0];
    expect(maxAbsDiff(single.get(name)!, a.get(name)!)).toBeLessThan(0.1);
    const log = readFileSync(path.join(tmp, 'b', 'loss.jsonl'), 'utf8')
      .trim()
      .split('\n');
    expect(log.map((l) => JSON.parse(l).step)).toEqual([1, 2, 3, 4]);
  });
});
