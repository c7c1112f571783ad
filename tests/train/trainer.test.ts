import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Linear } from '../../src/nn/layers.js';
import { ParamStore } from '../../src/nn/params.js';
import { type BatchSource, latestCheckpoint, train } from '../../src/train/trainer.js';
import { Generator } from '../../src/random/generator.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

/** y = x A + noise; batches drawn from a seeded stream whose position is its generator state. */
class Regression implements BatchSource<{ x: tf.Tensor2D; y: tf.Tensor2D }> {
  private rng = new Generator(99);
  next() {
    const x = this.rng.randn([8, 3]) as tf.Tensor2D;
    const y = tf.tidy(() => tf.matMul(x, tf.tensor2d([[1], [-2], [0.5]]))) as tf.Tensor2D;
    return { x, y };
  }
  position() {
    return this.rng.getState();
  }
  restore(p: unknown) {
    this.rng = Generator.fromState(p as never);
  }
  release(b: { x: tf.Tensor; y: tf.Tensor }) {
    tf.dispose([b.x, b.y]);
  }
}

function setup() {
  const store = new ParamStore();
  const lin = new Linear(store, 'lin', 3, 1, new Generator(0));
  return { store, lin };
}

async function run(runDir: string, opts: { stopAfter?: number; resume?: boolean; lossScale?: () => number } = {}) {
  const { store, lin } = setup();
  const result = await train({
    runDir,
    store,
    data: new Regression(),
    // Noise from the trainer's rng enters the loss, so resuming must restore it too.
    loss: (b, rng) =>
      tf.tidy(() => tf.mul(tf.mean(tf.square(tf.sub(lin.apply(tf.add(b.x, tf.mul(rng.randn([8, 3]), 0.01))), b.y))), opts.lossScale?.() ?? 1) as tf.Scalar),
    totalSteps: 6,
    seed: 3,
    lr: { kind: 'cosine', base: 0.05, warmupSteps: 2, totalSteps: 6 },
    accumulate: 2,
    clipGradNorm: 10,
    emaDecay: 0.9,
    checkpointEvery: 2,
    keepCheckpoints: 2,
    resume: opts.resume,
    stopAfter: opts.stopAfter,
  });
  const w = Array.from(store.get('lin.weight').dataSync());
  const emaW = Array.from(result.ema!.shadow.get('lin.weight').dataSync());
  result.ema?.dispose();
  result.optimizer.dispose();
  store.dispose();
  return { result, w, emaW };
}

const tmp = () => mkdtempSync(path.join(os.tmpdir(), 'txt2img-train-'));

describe('trainer', () => {
  it('an interrupted and resumed run ends exactly where an uninterrupted one does', async () => {
    const full = await run(tmp());
    expect(full.result.stopped).toBe('done');
    const dir = tmp();
    const first = await run(dir, { stopAfter: 3 });
    expect(first.result.stopped).toBe('stopAfter');
    expect(first.result.step).toBe(3);
    // Step 3 is not a checkpoint step: resume goes back to step 2 and replays step 3.
    expect(path.basename(latestCheckpoint(dir)!)).toBe('step-000002');
    const second = await run(dir, { resume: true });
    expect(second.result.step).toBe(6);
    expect(second.w).toEqual(full.w);
    expect(second.emaW).toEqual(full.emaW);
    const log = readFileSync(path.join(dir, 'loss.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).step);
    expect(log).toEqual([1, 2, 3, 4, 5, 6]);
    expect(readdirSync(path.join(dir, 'checkpoints')).sort()).toEqual(['latest', 'step-000004', 'step-000006']);
  });

  it('a non-finite loss stops the run, keeps the last good checkpoint and says so', async () => {
    const dir = tmp();
    let calls = 0;
    const r = await run(dir, { lossScale: () => (++calls > 5 ? NaN : 1) });
    expect(r.result.stopped).toBe('non-finite');
    expect(r.result.message).toMatch(/training stopped at step 3: loss is NaN.*last good checkpoint is kept: .*step-000002/);
    expect(existsSync(path.join(dir, 'checkpoints', 'step-000002', 'weights.safetensors'))).toBe(true);
  });

  it('lets timers and I/O run between steps, and samples at the end of a run', async () => {
    // The cpu backend computes synchronously and resolves data() at once: without a macrotask
    // turn per step, this interval would not fire until the whole run ended.
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    const seen: number[] = [];
    const sampled: number[] = [];
    try {
      const { store, lin } = setup();
      const r = await train({
        runDir: mkdtempSync(path.join(os.tmpdir(), 'trainer-yield-')),
        store,
        data: new Regression(),
        loss: (b) => tf.tidy(() => tf.mean(tf.square(tf.sub(lin.apply(b.x), b.y))) as tf.Scalar),
        totalSteps: 4,
        seed: 0,
        lr: { kind: 'constant', base: 0.01, warmupSteps: 0, totalSteps: 4 },
        onStep: () => seen.push(ticks),
        // Every 3 steps, and at the end of a run however short.
        onSample: (step) => {
          sampled.push(step);
        },
        sampleEvery: 3,
      });
      r.optimizer.dispose();
    } finally {
      clearInterval(timer);
    }
    expect(seen[3]).toBeGreaterThan(seen[0]);
    expect(sampled).toEqual([3, 4]);
  });

  it('leaks no tensors across steps', async () => {
    const before = tf.memory().numTensors;
    await run(tmp());
    expect(tf.memory().numTensors).toBe(before);
  });

  it('rejects bad options with the value named', async () => {
    const { store, lin } = setup();
    const base = {
      runDir: tmp(),
      store,
      data: new Regression(),
      loss: () => tf.scalar(0),
      seed: 0,
      lr: { kind: 'constant' as const, base: 0.1, warmupSteps: 0, totalSteps: 1 },
    };
    await expect(train({ ...base, totalSteps: 0 })).rejects.toThrow(/steps must be an integer >= 1, got 0/);
    await expect(train({ ...base, totalSteps: 1, accumulate: 1.5 })).rejects.toThrow(/accumulate must be an integer >= 1, got 1.5/);
    await expect(train({ ...base, totalSteps: 1, emaDecay: 1 })).rejects.toThrow(/ema-decay must be in \[0, 1\)/);
    void lin;
    store.dispose();
  });
});
