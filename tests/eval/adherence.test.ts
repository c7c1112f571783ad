/**
 * Prompt adherence: prompt sets, scoring against fixed classifier outputs, and an end-to-end run
 * on a tiny randomly initialised text pipeline (checked for shape, not quality).
 */
import * as tf from '@tensorflow/tfjs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { SCENE_HEADS, decodeSceneLabels, loadSceneAttributeSet, sceneLabels, type SceneAttributeSet } from '../../src/data/scenes/attribute-set.js';
import { mentionedAttributes, parsePrompt, PHRASING_COUNT, captionFor } from '../../src/data/scenes/captions.js';
import { writeSceneDataset } from '../../src/data/scenes/generate.js';
import { HELD_OUT_COMBINATIONS, isHeldOut } from '../../src/data/scenes/vocab.js';
import {
  PROMPT_SETS,
  evaluateAdherence,
  formatAdherence,
  namedCombinations,
  promptFor,
  scenePrompts,
  scoreImage,
  scoreImages,
} from '../../src/eval/adherence.js';
import { AttributeClassifier, argmaxHeads } from '../../src/classifier/classifier.js';
import { Txt2ImgPipeline } from '../../src/pipeline/pipeline.js';
import { Generator } from '../../src/random/generator.js';
import { parseSchedulerConfig } from '../../src/schedulers/config.js';
import { loadClipTextEncoder } from '../../src/text/clip.js';
import { UNet2DCondition } from '../../src/unet/unet2d-condition.js';
import { AutoencoderKL } from '../../src/vae/autoencoder-kl.js';
import { tempDir } from '../fixtures/captioned.js';
import { makeTinyModel } from '../text/shared.js';

describe('prompt sets', () => {
  it('held-out prompts name their held-out pair; seen prompts never name one', () => {
    const held = scenePrompts('held-out', 42, 0);
    held.forEach((p, i) => {
      const combo = HELD_OUT_COMBINATIONS[i % HELD_OUT_COMBINATIONS.length];
      const asked = parsePrompt(p.prompt);
      expect(namedCombinations(asked), p.prompt).toContainEqual(combo);
      expect(isHeldOut(p.scene)).toBe(true);
    });
    const seen = scenePrompts('seen', 200, 0);
    for (const p of seen) {
      const asked = parsePrompt(p.prompt);
      expect(namedCombinations(asked), p.prompt).toEqual([]);
      expect(isHeldOut(p.scene)).toBe(false);
      // The object, and its colour and/or position, always; the values are the scene's.
      expect(asked.kind).toBe(p.scene.kind);
      expect(asked.expression ?? asked.shape).toBe(p.scene.expression ?? p.scene.shape);
      expect(asked.color !== undefined || asked.position !== undefined, p.prompt).toBe(true);
      for (const [k, v] of Object.entries(asked)) expect(p.scene[k as keyof typeof p.scene]).toBe(v);
    }
    // Both kinds and several phrasings occur.
    expect(new Set(seen.map((p) => p.scene.kind))).toEqual(new Set(['face', 'shape']));
    expect(new Set(seen.map((p) => p.prompt.split(' ').length)).size).toBeGreaterThan(3);
  });

  it('are deterministic from the seed, and prompt i does not depend on the count', () => {
    for (const set of PROMPT_SETS) {
      const a = scenePrompts(set, 30, 7);
      expect(scenePrompts(set, 30, 7)).toEqual(a);
      expect(scenePrompts(set, 10, 7)).toEqual(a.slice(0, 10));
      expect(scenePrompts(set, 30, 8).map((p) => p.prompt)).not.toEqual(a.map((p) => p.prompt));
    }
    expect(() => scenePrompts('unseen' as never, 3, 0)).toThrow(/prompt set must be one of seen, held-out/);
  });

  it("promptFor picks one of the scene's own captions", () => {
    const [p] = scenePrompts('held-out', 1, 0);
    const own = Array.from({ length: PHRASING_COUNT }, (_, i) => captionFor(p.scene, i));
    expect(own).toContain(promptFor(p.scene, new Generator(1)));
  });
});

describe('scoring', () => {
  const read = { object: 'sad face', color: 'red', position: 'left', size: 'small', background: 'white' } as const;

  it('scores only what the prompt mentions', () => {
    expect(scoreImage('a red sad face on the left', read)).toEqual({ expression: true, color: true, position: true, all: true });
    expect(scoreImage('a happy red face', read)).toEqual({ expression: false, color: true, all: false });
    expect(scoreImage('a large red circle', read)).toEqual({ shape: false, color: true, size: false, all: false });
    expect(scoreImage('a sad face on a blue background', read)).toEqual({ expression: true, background: false, all: false });
    // Held-out pairs: sad face on the right; star in red.
    expect(scoreImage('a sad face on the right', read)).toEqual({ expression: true, position: false, pair: false, all: false });
    expect(scoreImage('a red star on the left', read)).toEqual({ shape: false, color: true, position: true, pair: false, all: false });
    expect(scoreImage('a red star', { ...read, object: 'star' })).toEqual({ shape: true, color: true, pair: true, all: true });
  });

  it('aggregates per score over the images that mention it, from fixed logits', () => {
    // Logits whose argmax per head is a chosen scene (a fake classifier's output).
    const scenes = [
      { kind: 'face', expression: 'sad', color: 'red', size: 'small', position: 'left', background: 'white' },
      { kind: 'shape', shape: 'star', color: 'red', size: 'large', position: 'top', background: 'blue' },
      { kind: 'shape', shape: 'circle', color: 'green', size: 'large', position: 'center', background: 'black' },
    ] as const;
    const width = SCENE_HEADS.reduce((a, h) => a + h.classes.length, 0);
    const logits = new Float32Array(scenes.length * width);
    scenes.forEach((s, i) => {
      let off = i * width;
      sceneLabels(s).forEach((k, h) => {
        logits[off + k] = 3;
        off += SCENE_HEADS[h].classes.length;
      });
    });
    const pred = argmaxHeads(
      logits,
      SCENE_HEADS.map((h) => h.classes.length),
    );
    const read = scenes.map((_, i) => decodeSceneLabels(pred.subarray(i * 5, (i + 1) * 5)));
    const r = scoreImages(['a red sad face on the left', 'a red star', 'a blue circle at the top'], read);
    // Held-out pairs named: red star (read right), blue circle (read green).
    expect(r.counts).toEqual({ expression: 1, shape: 2, color: 3, position: 2, size: 0, background: 0, pair: 2, all: 3 });
    expect(r.accuracy).toEqual({ expression: 1, shape: 1, color: 2 / 3, position: 1 / 2, pair: 1 / 2, all: 2 / 3 });
    expect(() => scoreImages(['a star'], [])).toThrow(/1 prompts for 0 images/);
  });

  it('a real image scored against its own caption is right when the classifier reads its labels', () => {
    const p = scenePrompts('held-out', 20, 3);
    const read = p.map((x) => decodeSceneLabels(sceneLabels(x.scene)));
    const r = scoreImages(
      p.map((x) => x.prompt),
      read,
    );
    expect(r.accuracy.all).toBe(1);
    expect(r.counts.pair).toBe(20);
    // mentionedAttributes and parsePrompt agree on what a caption asks for.
    expect(parsePrompt(captionFor(p[0].scene, 5))).toEqual(mentionedAttributes(p[0].scene, 5));
  });
});

describe('evaluateAdherence', () => {
  let tiny: ReturnType<typeof makeTinyModel>;
  let pipeline: Txt2ImgPipeline;
  let classifier: AttributeClassifier;
  let real: Record<'seen' | 'held-out', SceneAttributeSet>;

  beforeAll(async () => {
    await initBackend({ backend: process.env.TXT2IMG_BACKEND ?? 'wasm', quiet: true });
    tiny = makeTinyModel('tiny-random-clip', { hidden: 32, layers: 1, heads: 2 });
    const rng = new Generator(0);
    const vae = new AutoencoderKL(
      { imageChannels: 3, channels: [4, 8, 8], resBlocksPerLevel: 1, latentChannels: 4, downsampleFactor: 4, groupNormGroups: 4 },
      rng.spawn(),
    );
    const unet = new UNet2DCondition(
      {
        inChannels: 4,
        sampleSize: 4,
        channels: [8, 16],
        resBlocksPerLevel: 1,
        attentionLevels: [false, true],
        attentionHeads: 2,
        contextDim: 32,
        contextLength: 77,
        timeEmbedDim: 16,
        groupNormGroups: 4,
      },
      rng.spawn(),
    );
    const encoder = await loadClipTextEncoder({ modelId: tiny.result.outDir });
    const scheduler = parseSchedulerConfig({ type: 'ddpm', numTrainTimesteps: 100, betaSchedule: 'scaled-linear', betaStart: 0.00085, betaEnd: 0.012 });
    pipeline = new Txt2ImgPipeline(vae, unet, encoder, scheduler, { conditioning: 'clip', conditioningDropout: 0.1, imageSize: 16 });
    classifier = new AttributeClassifier({ imageSize: 16, imageChannels: 3, channels: [4, 4], hidden: 8, heads: [...SCENE_HEADS] }, rng.spawn());
    const root = tempDir('adherence-scenes');
    writeSceneDataset({ outDir: root, count: 6, heldoutCount: 5, size: 32, seed: 2 });
    real = {
      seen: await loadSceneAttributeSet(path.join(root, 'train'), { size: 16 }),
      'held-out': await loadSceneAttributeSet(path.join(root, 'heldout'), { size: 16 }),
    };
  });

  afterAll(() => {
    pipeline?.dispose();
    classifier?.dispose();
    tiny?.cleanup();
  });

  it('runs end to end on a tiny random pipeline: table shape, counts, no leaked tensors', async () => {
    const before = tf.memory().numTensors;
    const seen: string[] = [];
    const report = await evaluateAdherence({
      pipeline,
      classifier,
      perSet: 3,
      cfgs: [1, 2],
      samplers: [{ sampler: 'ddim', steps: 2 }],
      real,
      batchSize: 2, // two generate() calls per row
      seed: 4,
      log: () => {},
      onImages: async ({ set, name }, images, prompts) => {
        expect(images.shape).toEqual([3, 16, 16, 3]);
        expect(prompts).toHaveLength(3);
        seen.push(`${set} ${name}`);
      },
    });
    expect(tf.memory().numTensors).toBe(before);
    expect(seen).toEqual(['seen ddim:2 cfg 1', 'held-out ddim:2 cfg 1', 'seen ddim:2 cfg 2', 'held-out ddim:2 cfg 2']);
    expect(report.prompts.seen).toEqual(scenePrompts('seen', 3, 4).map((p) => p.prompt));
    expect(report.rows.map((r) => [r.set, r.source, r.cfg, r.images])).toEqual([
      ['seen', 'real', undefined, 6],
      ['seen', 'generated', 1, 3],
      ['seen', 'generated', 2, 3],
      ['held-out', 'real', undefined, 5],
      ['held-out', 'generated', 1, 3],
      ['held-out', 'generated', 2, 3],
    ]);
    for (const row of report.rows) {
      expect(row.counts.all, `${row.set} ${row.source}`).toBe(row.images);
      expect(row.counts.color + row.counts.position).toBeGreaterThanOrEqual(row.images);
      expect(row.counts.pair).toBe(row.set === 'held-out' ? row.images : 0);
      for (const v of Object.values(row.accuracy)) expect(v >= 0 && v <= 1).toBe(true);
      if (row.source === 'generated') expect(row.secondsPerImage).toBeGreaterThan(0);
    }
    const md = formatAdherence(report, ['# title', '']);
    const table = md.split('\n').filter((l) => l.startsWith('|'));
    expect(table).toHaveLength(2 + 6);
    expect(table[0]).toBe(
      '| set | source | sampler | steps | cfg | expression | shape | colour | position | size | background | held-out pair | all mentioned | n | s/image |',
    );
    expect(table.every((l) => l.split('|').length === table[0].split('|').length)).toBe(true);
    expect(table[4]).toMatch(/^\| seen \| generated \| ddim \| 2 \| 2 \|/);
  });

  it('refuses a classifier without the scene heads or at another size', async () => {
    const digits = new AttributeClassifier({ imageSize: 16 });
    const big = new AttributeClassifier({ imageSize: 32, imageChannels: 3, channels: [2, 2], hidden: 4, heads: [...SCENE_HEADS] });
    const o = { pipeline, perSet: 1, cfgs: [1], samplers: [{ sampler: 'ddim' as const, steps: 1 }] };
    await expect(evaluateAdherence({ ...o, classifier: digits })).rejects.toThrow(/heads digit \(10\) are not the scene attribute heads/);
    await expect(evaluateAdherence({ ...o, classifier: big })).rejects.toThrow(/pipeline makes 16x16 images, the classifier reads 32x32x3/);
    await expect(evaluateAdherence({ ...o, classifier, batchSize: 65 })).rejects.toThrow(/batch size must be an integer from 1 to 64, got 65/);
    digits.dispose();
    big.dispose();
  });
});
