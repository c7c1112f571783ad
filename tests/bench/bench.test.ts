import * as tf from '@tensorflow/tfjs';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { type BackendInfo, initBackend } from '../../src/backend/index.js';
import { FIGURE_NAMES, formatBench, guardWasmMalloc, loadBenchSpec, median, runBench, wasmAllocStats, wasmHeapBytes } from '../../src/bench/bench.js';
import { type PeerResult, compareRows, formatComparison, medianOfPeerRounds, medianOfRounds, mergeBenchResults } from '../../src/bench/compare.js';
import { tempDir } from '../fixtures/captioned.js';
import { LDM_SMALL, SHARED_LDM_SMALL } from '../helpers.js';

let backend: BackendInfo;

beforeAll(async () => {
  backend = await initBackend({ backend: process.env.TXT2IMG_BACKEND ?? 'wasm', quiet: true });
});

/** ldm-small.json with tiny widths, so every figure runs in a moment. */
function tinySpecFile(): string {
  const j = JSON.parse(readFileSync(LDM_SMALL, 'utf8'));
  j.vae.channels = [8, 8, 8];
  j.vae.groupNormGroups = 4;
  Object.assign(j.unet, { channels: [8, 16], attentionHeads: 2, contextDim: 16, contextLength: 3, timeEmbedDim: 16, groupNormGroups: 4, resBlocksPerLevel: 1 });
  Object.assign(j.measure, { trainBatch: 2, sampleBatch: 2, sampleSteps: 3 });
  const file = path.join(tempDir('bench'), 'tiny.json');
  writeFileSync(file, JSON.stringify(j));
  return file;
}

describe('bench spec', () => {
  const shared = existsSync(SHARED_LDM_SMALL);
  it.skipIf(!shared)(`the fixture copy equals the shared ldm-small.json${shared ? '' : ' (skipped: no ../shared/bench beside the repository)'}`, () => {
    expect(JSON.parse(readFileSync(path.join(import.meta.dirname, '../fixtures/ldm-small.json'), 'utf8'))).toEqual(
      JSON.parse(readFileSync(SHARED_LDM_SMALL, 'utf8')),
    );
  });

  it('reads ldm-small.json: the four figures, the model shapes and a DDIM schedule', () => {
    const spec = loadBenchSpec(LDM_SMALL);
    expect(spec.figures).toEqual([...FIGURE_NAMES]);
    expect(spec.unet).toMatchObject({ contextDim: 512, contextLength: 77, channels: [64, 128] });
    expect(spec.vae).toMatchObject({ channels: [32, 64, 64], imageChannels: 1, downsampleFactor: 4 });
    expect(spec.scheduler).toMatchObject({
      type: 'ddim',
      numTrainTimesteps: 1000,
      betaSchedule: 'scaled-linear',
      betaStart: 0.00085,
      betaEnd: 0.012,
      predictionType: 'epsilon',
      eta: 0,
    });
    expect(spec.measure).toMatchObject({ trainBatch: 64, sampleBatch: 64, sampleSteps: 50, guidanceScale: 7, learningRate: 1e-4 });
  });

  it('names what is wrong with a bad file', () => {
    const j = JSON.parse(readFileSync(LDM_SMALL, 'utf8'));
    j.measure.figures = ['fid_score: not a speed'];
    const file = path.join(tempDir('bench'), 'bad.json');
    writeFileSync(file, JSON.stringify(j));
    expect(() => loadBenchSpec(file)).toThrow(/measure.figures\[\d+\] 'fid_score' is unknown; allowed: vae_train_step_ms, /);
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
  });
});

describe('runBench', () => {
  it('times every figure with the real code paths, without leaking tensors', async () => {
    const spec = loadBenchSpec(tinySpecFile());
    const before = tf.memory().numTensors;
    const r = await runBench({ spec, backend, repeat: 1, warmup: 1, log: () => {} });
    expect(tf.memory().numTensors).toBe(before);
    expect(Object.keys(r.figures)).toEqual([...FIGURE_NAMES]);
    for (const [name, f] of Object.entries(r.figures)) {
      expect(f!.error, name).toBeUndefined();
      expect(f!.value, name).toBeGreaterThan(0);
    }
    expect(r.figures.sample_images_per_s!.unit).toBe('images/s');
    expect(r.figures.sample_images_per_s!.times).toHaveLength(1);
    expect(r.extra.unet_forward_cached_ms).toBeGreaterThan(0);
    expect(r.notes).toEqual([]);
    expect(r.peakRssBytes).toBeGreaterThan(0);
    if (backend.name === 'wasm') {
      expect(r.wasmHeap!.peakBytes).toBeGreaterThan(0);
      expect(r.wasmHeap!.risk).toMatch(/^low/);
    }
    expect(formatBench(r)).toMatch(/unet_train_step_ms +[\d.]+ ms/);
  });

  it('runs every figure on onnxruntime when asked (training gradients and the sampling U-Net)', async () => {
    const spec = loadBenchSpec(tinySpecFile());
    const before = tf.memory().numTensors;
    const r = await runBench({ spec, backend, repeat: 1, warmup: 1, runtime: 'onnx', log: () => {} });
    expect(tf.memory().numTensors).toBe(before);
    expect(r.unetRuntime).toBe('onnx');
    expect(r.trainRuntime).toBe('onnx');
    for (const f of Object.values(r.figures)) expect(f!.error).toBeUndefined();
    expect(r.figures.unet_train_step_ms!.value).toBeGreaterThan(0);
    expect(r.figures.sample_images_per_s!.value).toBeGreaterThan(0);
    expect(r.extra.unet_forward_cached_ms).toBeGreaterThan(0);
    const text = formatBench(r);
    expect(text).toMatch(/U-Net of unet_forward \(raw and K\/V cached\) and sampling: onnxruntime-node on the CPU/);
    expect(text).toMatch(/training figures: gradients by onnxruntime-node/);
    // Data-parallel: each shard on onnxruntime with 1 thread.
    const dp = await runBench({ spec, backend, repeat: 1, warmup: 1, runtime: 'onnx', workers: 2, only: ['vae_train_step_ms'], log: () => {} });
    expect(dp.figures.vae_train_step_ms!.error).toBeUndefined();
    expect(formatBench(dp)).toMatch(/training figures: data-parallel over 2 workers \(1 onnxruntime thread each\)/);
  });

  it('times the training figures data-parallel over worker threads when asked', async () => {
    const spec = loadBenchSpec(tinySpecFile());
    const before = tf.memory().numTensors;
    const r = await runBench({ spec, backend, repeat: 1, warmup: 1, only: ['vae_train_step_ms', 'unet_train_step_ms'], workers: 2, log: () => {} });
    expect(tf.memory().numTensors).toBe(before);
    expect(r.trainWorkers).toBe(2);
    for (const f of Object.values(r.figures)) expect(f!.error).toBeUndefined();
    expect(formatBench(r)).toMatch(/training figures: data-parallel over 2 workers/);
    await expect(runBench({ spec, backend, workers: 0 })).rejects.toThrow(/workers must be an integer from 1 to 64/);
  });

  it.runIf(process.env.TXT2IMG_BACKEND === undefined || process.env.TXT2IMG_BACKEND === 'wasm')('counts wasm tensor bytes through the malloc guard', () => {
    expect(guardWasmMalloc()).toBe(true);
    const live = wasmAllocStats().liveBytes;
    const t = tf.zeros([1000]);
    expect(wasmAllocStats().liveBytes - live).toBe(4000);
    t.dispose();
    expect(wasmAllocStats().liveBytes).toBe(live);
    expect(wasmHeapBytes()).toBeGreaterThan(0);
  });
});

describe('comparison with the PyTorch peer', () => {
  it('prints both figures and the ratios ours / PyTorch', () => {
    const fig = (value: number, unit: 'ms' | 'images/s') => ({ value, unit, times: [] });
    const ours = {
      config: 'x',
      backend: 'wasm',
      threads: 2,
      tfjs: '4.22.0',
      repeat: 5,
      sampleRepeat: 3,
      trainBatch: 64,
      sampleBatch: 64,
      vaeParams: 10,
      unetParams: 20,
      figures: {
        vae_train_step_ms: fig(300, 'ms'),
        unet_train_step_ms: fig(2400, 'ms'),
        unet_forward_ms: fig(500, 'ms'),
        sample_images_per_s: fig(2, 'images/s'),
      },
      extra: {},
      peakRssBytes: 1,
      notes: [],
    };
    const peer = {
      device: 'cpu',
      threads: 2,
      torch: '1.13.1',
      blas: 'openblas-openmp/libblas.so.3',
      repeat: 5,
      vae_params: 10,
      unet_params: 20,
      times_s: {},
      vae_train_step_ms: 100,
      unet_train_step_ms: 1200,
      unet_forward_ms: 1000,
      sample_images_per_s: 8,
    } as PeerResult;
    const rows = compareRows(ours, peer);
    expect(rows.map((r) => [r.figure, r.ratio, r.slowdown])).toEqual([
      ['vae_train_step_ms', 3, 3],
      ['unet_train_step_ms', 2, 2],
      ['unet_forward_ms', 0.5, 0.5],
      ['sample_images_per_s', 0.25, 4],
    ]);
    const table = formatComparison(ours, peer);
    expect(table).toContain('| vae_train_step_ms | ms | 300 | 100 | 3.00 | 3.00x slower |');
    expect(table).toContain('| unet_forward_ms | ms | 500 | 1000 | 0.50 | 2.00x faster |');
    expect(table).toContain('| sample_images_per_s | images/s | 2.0 | 8.0 | 0.25 | 4.00x slower |');
    expect(table).not.toContain('WARNING');
    expect(formatComparison(ours, { ...peer, unet_params: 21 })).toContain('WARNING: parameter counts differ');

    // --runtime tfjs --workers: training figures from a 1-thread data-parallel run, sampling from a 2-thread run.
    const train = {
      ...ours,
      threads: 1,
      trainWorkers: 2,
      figures: { vae_train_step_ms: fig(150, 'ms'), unet_train_step_ms: fig(1100, 'ms') },
      peakRssBytes: 5,
      notes: ['a'],
    };
    const sample = {
      ...ours,
      unetRuntime: 'onnx' as const,
      figures: { unet_forward_ms: fig(400, 'ms'), sample_images_per_s: fig(4, 'images/s') },
      peakRssBytes: 3,
    };
    const merged = mergeBenchResults(train, sample);
    expect(Object.keys(merged.figures)).toEqual([...FIGURE_NAMES]);
    expect(merged.peakRssBytes).toBe(5);
    expect(merged.notes).toEqual(['training run: a']);
    const t2 = formatComparison(merged, peer);
    expect(t2).toContain(
      'backend wasm (2 threads; training figures 1), training figures data-parallel over 2 x 1-thread shards, U-Net forward and sampling on onnxruntime-node',
    );
    expect(t2).toContain('| unet_train_step_ms | ms | 1100 | 1200 | 0.92 | 1.09x faster |');

    // --rounds: ours and PyTorch alternated; the table shows each side's medians and every round's ratios.
    const scaled = (k: number, err = false) => ({
      ...ours,
      figures: { ...ours.figures, vae_train_step_ms: err ? { unit: 'ms' as const, times: [], error: 'boom' } : fig(300 * k, 'ms') },
      extra: { unet_forward_cached_ms: 100 * k },
      peakRssBytes: k,
    });
    const oursRounds = [scaled(1), scaled(3), scaled(2), scaled(9, true)];
    const peerRounds = [1, 2, 3, 4].map((k) => ({ ...peer, vae_train_step_ms: 100 * k, peakRssBytes: 10 * k }));
    const mo = medianOfRounds(oursRounds);
    expect(mo.figures.vae_train_step_ms!.value).toBe(600); // the failed round does not count
    expect(mo.extra.unet_forward_cached_ms).toBe(250);
    expect(mo.peakRssBytes).toBe(9);
    const mp = medianOfPeerRounds(peerRounds);
    expect(mp.vae_train_step_ms).toBe(250);
    expect(mp.unet_train_step_ms).toBe(1200);
    expect(mp.peakRssBytes).toBe(40);
    const t3 = formatComparison(mo, mp, { rounds: { ours: oursRounds, peer: peerRounds } });
    expect(t3).toContain('median of 5 (sampling 3); the median of 4 rounds, ours and PyTorch alternated');
    expect(t3).toContain('| vae_train_step_ms | ms | 600 | 250 | 2.40 | 2.40x slower |');
    expect(t3).toContain('ratio ours / PyTorch in each round: vae_train_step_ms 3.00 4.50 2.00 n/a; unet_train_step_ms 2.00 2.00 2.00 2.00;');
  });
});
