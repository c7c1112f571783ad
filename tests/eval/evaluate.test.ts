/**
 * End to end: a tiny label-conditioned MNIST pipeline (2 steps per stage, as
 * tests/pipeline/pipeline.test.ts trains one) and an untrained classifier go through the
 * evaluation; the table is checked for shape, not for quality.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { mnistSet } from '../../src/data/in-memory.js';
import { AttributeClassifier } from '../../src/classifier/classifier.js';
import { evaluatePipeline, formatEvaluation, parseCfgList, parseSamplers, requestedLabels } from '../../src/eval/evaluate.js';
import { Txt2ImgPipeline } from '../../src/pipeline/pipeline.js';
import { runTraining } from '../../src/train/run-training.js';
import { validateTrainConfig } from '../../src/train/train-config.js';
import { Generator } from '../../src/random/generator.js';
import { tempDir } from '../fixtures/captioned.js';

const stage = {
  batchSize: 4,
  lr: 1e-3,
  lrSchedule: 'constant',
  warmupSteps: 0,
  weightDecay: 0,
  clipGradNorm: 1,
  emaDecay: 0,
  accumulate: 1,
  checkpointEvery: 2,
  steps: 2,
};

let pipeDir: string;

beforeAll(async () => {
  await initBackend({ backend: process.env.TXT2IMG_BACKEND ?? 'wasm', quiet: true });
  const config = validateTrainConfig({
    seed: 1,
    data: { source: 'mnist', limit: 32 },
    conditioning: { kind: 'label', numClasses: 10, contextDim: 16, dropout: 0.1 },
    vae: { imageChannels: 1, channels: [8, 8, 16], resBlocksPerLevel: 1, latentChannels: 4, downsampleFactor: 4, groupNormGroups: 4 },
    vaeTraining: stage,
    unet: {
      inChannels: 4,
      sampleSize: 8,
      channels: [16, 32],
      resBlocksPerLevel: 1,
      attentionLevels: [false, true],
      attentionHeads: 2,
      contextDim: 16,
      contextLength: 1,
      timeEmbedDim: 32,
      groupNormGroups: 4,
    },
    unetTraining: stage,
    scheduler: { type: 'ddpm', numTrainTimesteps: 100, betaSchedule: 'scaled-linear', betaStart: 0.00085, betaEnd: 0.012 },
    lossWeighting: 'mse',
  });
  pipeDir = (await runTraining({ config, runDir: tempDir('eval-mnist'), stage: 'all', resume: false, quiet: true, log: () => {} }))!;
});

describe('option parsing', () => {
  it('reads sampler and cfg lists and names bad values', () => {
    expect(parseSamplers('ddpm:1000, ddim:10')).toEqual([
      { sampler: 'ddpm', steps: 1000 },
      { sampler: 'ddim', steps: 10 },
    ]);
    expect(parseSamplers('euler-ancestral:10,DPM++ 2M Karras:20')).toEqual([
      { sampler: 'euler-ancestral', steps: 10 },
      { sampler: 'DPM++ 2M Karras', steps: 20 },
    ]);
    expect(() => parseSamplers('euler')).toThrow(/'euler' is not SAMPLER:STEPS/);
    expect(() => parseSamplers('warp:10')).toThrow(/unknown sampler 'warp'; allowed: ddpm, ddim/);
    expect(() => parseSamplers('ddim:0')).toThrow(/ddim:0/);
    expect(parseCfgList('1,2,4,7')).toEqual([1, 2, 4, 7]);
    expect(() => parseCfgList('1,x')).toThrow(/'x'/);
    expect(requestedLabels(2, 10)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });
});

describe('evaluate', () => {
  it('runs end to end on a tiny label pipeline and returns a well-formed table', async () => {
    const before = tf.memory().numTensors;
    const pipeline = await Txt2ImgPipeline.load(pipeDir);
    const classifier = new AttributeClassifier({}, new Generator(0));
    const real = mnistSet('test', 200);
    const seen: string[] = [];
    try {
      const report = await evaluatePipeline({
        pipeline,
        classifier,
        real,
        perClass: 2,
        cfgs: [2],
        samplers: [{ sampler: 'ddim', steps: 2 }],
        batchSize: 8,
        log: () => {},
        onImages: async (name, images, labels) => {
          expect(images.shape).toEqual([20, 32, 32, 1]);
          expect(labels).toHaveLength(20);
          seen.push(name);
        },
      });
      expect(seen).toEqual(['vae-prior', 'ddim-2-cfg2']);
      expect(report.rows.map((r) => r.kind)).toEqual(['real', 'vae-recon', 'vae-prior', 'diffusion']);
      for (const row of report.rows) {
        expect(row.images, row.name).toBe(20);
        expect(Number.isFinite(row.fid) && row.fid >= 0, `${row.name} fid ${row.fid}`).toBe(true);
        expect(row.diversity, row.name).toBeGreaterThan(0);
      }
      const diff = report.rows[3];
      expect(diff).toMatchObject({ sampler: 'ddim', steps: 2, cfg: 2 });
      expect(diff.accuracy).toBeGreaterThanOrEqual(0);
      expect(diff.accuracy).toBeLessThanOrEqual(1);
      expect(diff.accuracyPerClass).toHaveLength(10);
      expect(diff.diversityPerClass).toHaveLength(10);
      expect(diff.secondsPerImage).toBeGreaterThan(0);
      expect(report.rows[1].mse).toBeGreaterThan(0);
      // The real subset measured against the set it comes from: accuracy of the classifier itself.
      expect(report.rows[0].accuracy).toBeGreaterThanOrEqual(0);

      const md = formatEvaluation(report);
      const table = md.split('\n').filter((l) => l.startsWith('|'));
      expect(table).toHaveLength(2 + 4);
      expect(table[0]).toContain('classifier-feature FID');
      for (const line of table) expect(line.split('|').length).toBe(table[0].split('|').length);
      expect(md).toContain('not Inception-FID');
      expect(table[5]).toMatch(/^\| diffusion \| ddim \| 2 \| 2 \| \d+\.\d% \| \d+\.\d\d \|/);
      expect(JSON.parse(JSON.stringify(report)).rows).toHaveLength(4);
    } finally {
      pipeline.dispose();
      classifier.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
  });

  it('refuses a reference set without labels and a bad per-class count', async () => {
    const pipeline = await Txt2ImgPipeline.load(pipeDir);
    const classifier = new AttributeClassifier({}, new Generator(0));
    const real = mnistSet('test', 50);
    try {
      await expect(
        evaluatePipeline({ pipeline, classifier, real: { ...real, labels: undefined }, perClass: 1, cfgs: [1], samplers: [{ sampler: 'ddim', steps: 1 }] }),
      ).rejects.toThrow(/has no labels/);
      await expect(evaluatePipeline({ pipeline, classifier, real, perClass: 0, cfgs: [1], samplers: [{ sampler: 'ddim', steps: 1 }] })).rejects.toThrow(
        /per-class/,
      );
    } finally {
      pipeline.dispose();
      classifier.dispose();
    }
  });
});
