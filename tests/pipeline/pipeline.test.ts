/**
 * End to end: a tiny pipeline (tiny VAE, tiny U-Net, tiny NOT-pretrained CLIP-architecture text
 * model) trains a few steps on generated data, resumes exactly, saves, and samples; guidance is
 * checked against a hand-written reference loop.
 */
import * as tf from '@tensorflow/tfjs';
import { cpSync, existsSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { readSafetensors } from '../../src/checkpoint/io.js';
import { getPngText } from '../../src/image/png-text.js';
import { parseInfotext } from '../../src/image/infotext.js';
import { defaultOnnxThreads } from '../../src/onnx/runtime.js';
import { Txt2ImgPipeline } from '../../src/pipeline/pipeline.js';
import { runTraining } from '../../src/train/run-training.js';
import { type TrainConfig, validateTrainConfig } from '../../src/train/train-config.js';
import { BATCH_IMAGES, MAX_IMAGES, generateImages, requestSettings, runTxt2Img } from '../../src/pipeline/txt2img.js';
import { Generator } from '../../src/random/generator.js';
import { createScheduler, withA1111Sampler } from '../../src/schedulers/index.js';
import { BAD_FIXTURE_SIZE, tempDir, writeBadDataFixture, writeColorDataset } from '../fixtures/captioned.js';
import { makeTinyModel } from '../text/shared.js';
import { maxAbsDiff, runCommand } from '../helpers.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const stage = {
  batchSize: 4,
  lr: 1e-3,
  lrSchedule: 'constant',
  warmupSteps: 0,
  weightDecay: 0,
  clipGradNorm: 1,
  emaDecay: 0.9,
  accumulate: 1,
  checkpointEvery: 2,
};

function tinyConfig(dataPath: string, clipDir: string): TrainConfig {
  return validateTrainConfig({
    seed: 1,
    data: { source: 'folder', path: dataPath, imageSize: 16, channels: 3, flip: false },
    conditioning: { kind: 'clip', modelId: clipDir, dropout: 0.25 },
    vae: { imageChannels: 3, channels: [8, 8, 16], resBlocksPerLevel: 1, latentChannels: 4, downsampleFactor: 4, groupNormGroups: 4, activation: 'silu' },
    vaeTraining: { ...stage, steps: 4 },
    unet: {
      inChannels: 4,
      sampleSize: 4,
      channels: [16, 32],
      resBlocksPerLevel: 1,
      attentionLevels: [false, true],
      attentionHeads: 2,
      contextDim: 32,
      contextLength: 77,
      timeEmbedDim: 32,
      groupNormGroups: 4,
    },
    unetTraining: { ...stage, steps: 4 },
    scheduler: { type: 'ddpm', numTrainTimesteps: 100, betaSchedule: 'scaled-linear', betaStart: 0.00085, betaEnd: 0.012 },
    lossWeighting: 'mse',
    notes: ['test model: the text encoder is random, not pretrained'],
  });
}

let tiny: ReturnType<typeof makeTinyModel>;
let data: string;
let runA: string;
let pipeA: string;
const quiet = { quiet: true, log: () => {} };

beforeAll(async () => {
  await initBackend({ backend: process.env.TXT2IMG_BACKEND ?? 'wasm', quiet: true });
  tiny = makeTinyModel('tiny-random-clip', { hidden: 32, layers: 1, heads: 2 });
  data = (await writeColorDataset(tempDir('colors'), { count: 12, size: 16 })).root;
  runA = tempDir('runA');
  pipeA = (await runTraining({ config: tinyConfig(data, tiny.result.outDir), runDir: runA, stage: 'all', resume: false, ...quiet }))!;
});

afterAll(() => tiny?.cleanup());

describe('training a tiny text-to-image pipeline', () => {
  it('writes a complete pipeline folder with the training facts', () => {
    expect(readdirSync(pipeA).sort()).toEqual(['model_index.json', 'scheduler', 'text_encoder', 'tokenizer', 'training_vocabulary.json', 'unet', 'vae']);
    const index = JSON.parse(readFileSync(path.join(pipeA, 'model_index.json'), 'utf8'));
    expect(index).toMatchObject({
      _class_name: 'StableDiffusionPipeline',
      text_encoder: ['transformers', 'CLIPTextModel'],
      tokenizer: ['transformers', 'CLIPTokenizer'],
      unet: ['diffusers', 'UNet2DConditionModel'],
      vae: ['diffusers', 'AutoencoderKL'],
      scheduler: ['diffusers', 'DDPMScheduler'],
      safety_checker: [null, null],
      requires_safety_checker: false,
      _txt2img: { version: 2, conditioning: 'clip', conditioningDropout: 0.25, imageSize: 16, trainedSteps: 4 },
    });
    // Notes written from the run itself, then the config's own.
    expect(index._txt2img.notes).toEqual([
      expect.stringMatching(/^trained 4 U-Net steps on .*12 images/),
      'text encoder: a tiny CLIP-architecture model with random weights, NOT pretrained: prompts work only in the words of the training captions',
      'test model: the text encoder is random, not pretrained',
    ]);
    // The trained components are written in diffusers' format.
    const vaeCfg = JSON.parse(readFileSync(path.join(pipeA, 'vae', 'config.json'), 'utf8'));
    expect(vaeCfg._class_name).toBe('AutoencoderKL');
    expect(vaeCfg.scaling_factor).toBeGreaterThan(0);
    expect(vaeCfg.scaling_factor).not.toBe(1);
    expect(JSON.parse(readFileSync(path.join(pipeA, 'unet', 'config.json'), 'utf8'))._class_name).toBe('UNet2DConditionModel');
    const log = readFileSync(path.join(runA, 'unet-stage', 'loss.jsonl'), 'utf8')
      .trim()
      .split('\n');
    expect(log).toHaveLength(4);
    expect(JSON.parse(readFileSync(path.join(runA, 'config.json'), 'utf8')).seed).toBe(1);
  });

  it('is self-contained: moved elsewhere, with the text model it was trained on gone, it gives the same image', async () => {
    const cfg = JSON.parse(readFileSync(path.join(pipeA, 'text_encoder', 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({ architectures: ['CLIPTextModel'], model_type: 'clip_text_model', hidden_size: 32 });
    expect(readdirSync(path.join(pipeA, 'text_encoder')).sort()).toEqual(['config.json', 'model.safetensors', 'onnx']);
    for (const f of ['model_index.json', 'scheduler/scheduler_config.json', 'text_encoder/config.json', 'tokenizer/tokenizer_config.json']) {
      expect(readFileSync(path.join(pipeA, f), 'utf8')).not.toContain(tiny.root);
    }
    const moved = path.join(tempDir('moved'), 'pipe');
    cpSync(pipeA, moved, { recursive: true });
    const opts = { inputs: ['a red square'], guidanceScale: 3, steps: 3, seed: 2 };
    const a = await Txt2ImgPipeline.load(pipeA);
    const want = await a.generate(opts);
    a.dispose();
    const away = `${tiny.root}-away`;
    renameSync(tiny.root, away);
    try {
      const b = await Txt2ImgPipeline.load(moved);
      const got = await b.generate(opts);
      b.dispose();
      expect(Array.from(await got.data())).toEqual(Array.from(await want.data()));
      tf.dispose([got]);
    } finally {
      renameSync(away, tiny.root);
      want.dispose();
    }
  });

  it('runs a large request in batches of BATCH_IMAGES on one noise stream (DDIM: the images of one big batch)', async () => {
    const pipe = await Txt2ImgPipeline.load(pipeA);
    try {
      const n = BATCH_IMAGES + 3;
      const want = await pipe.generate({ inputs: Array(n).fill('a red square'), guidanceScale: 2, steps: 2, seed: 5 });
      const batchesSeen = new Set<number>();
      const before = tf.memory().numTensors;
      const got = await generateImages(
        pipe,
        { prompts: ['a red square'], n, cfg: 2, steps: 2, sampler: 'ddim', eta: 0, seed: 5 },
        {
          model: pipeA,
          log: () => {},
          onStep: (s) => {
            batchesSeen.add(s.batch);
            expect(s.batches).toBe(2);
          },
        },
      );
      expect([...batchesSeen]).toEqual([0, 1]);
      expect(got.images.shape[0]).toBe(n);
      expect(got.parameters).toHaveLength(n);
      expect(maxAbsDiff(await got.images.data(), await want.data())).toBeLessThan(1e-4);
      tf.dispose([got.images]);
      expect(tf.memory().numTensors).toBe(before);
      want.dispose();
      expect(() => requestSettings({ prompts: Array(20).fill('a cat'), n: 256, cfg: 1, steps: 1, sampler: 'ddim', eta: 0, seed: 0 })).toThrow(
        `20 prompt(s) x --n 256 = 5120 images; at most ${MAX_IMAGES} per command (split the request)`,
      );
    } finally {
      pipe.dispose();
    }
  });

  it('refuses a model_index.json imageSize that the U-Net and VAE do not make (no wasm trap, no silent rescale)', async () => {
    for (const size of [64, 2048, 100000]) {
      const copy = path.join(tempDir('size'), 'pipe');
      cpSync(pipeA, copy, { recursive: true });
      const file = path.join(copy, 'model_index.json');
      const index = JSON.parse(readFileSync(file, 'utf8'));
      writeFileSync(file, JSON.stringify({ ...index, _txt2img: { ...index._txt2img, imageSize: size } }));
      await expect(Txt2ImgPipeline.load(copy)).rejects.toThrow(
        `model folder ${copy}: imageSize ${size} does not match the U-Net's sampleSize 4 x the VAE's downsampleFactor 4 = 16`,
      );
    }
  });

  it('says which prompt words the model never saw in training (and keeps quiet about known ones)', async () => {
    const pipe = await Txt2ImgPipeline.load(pipeA);
    try {
      expect(pipe.trainingWords?.has('square')).toBe(true);
      const warnings: string[] = [];
      const run = async (inputs: string[], negative?: string) =>
        tf.dispose(await pipe.generate({ inputs, negative, guidanceScale: 2, steps: 1, seed: 0, warn: (m) => warnings.push(m) }));
      await run(['a red square', 'A Blue square.']);
      expect(warnings).toEqual([]);
      await run(['a red cat, photograph 🐱'], 'blurry');
      expect(warnings).toEqual([
        "warning: the model never saw these words in its training captions: 'cat', 'photograph', '🐱', 'blurry'; it ignores them or draws something arbitrary (its words: training_vocabulary.json)",
      ]);
    } finally {
      pipe.dispose();
    }
  });

  it('refuses to make an image from non-finite values (an overflowing model) instead of a black PNG', async () => {
    const pipe = await Txt2ImgPipeline.load(pipeA);
    try {
      for (const name of pipe.unet.store.names()) {
        const v = pipe.unet.store.get(name);
        tf.tidy(() => v.assign(tf.fill(v.shape, 3e38)));
      }
      const before = tf.memory().numTensors;
      await expect(pipe.generate({ inputs: ['a red square'], guidanceScale: 3, steps: 2, seed: 0 })).rejects.toThrow(
        /^sampling gave non-finite values \(NaN or Inf\) with cfg 3, DDIM, 2 steps: the model overflows with these settings; no image was made$/,
      );
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      pipe.dispose();
    }
  });

  it('an interrupted run resumed in both stages ends with the same weights', async () => {
    const dir = tempDir('runB');
    const config = tinyConfig(data, tiny.result.outDir);
    expect(await runTraining({ config, runDir: dir, stage: 'all', resume: false, stopAfter: 3, ...quiet })).toBeUndefined(); // VAE stops at 3
    expect(await runTraining({ config, runDir: dir, stage: 'all', resume: true, stopAfter: 3, ...quiet })).toBeUndefined(); // U-Net stops at 3
    const out = await runTraining({ config, runDir: dir, stage: 'all', resume: true, ...quiet });
    for (const comp of ['vae', 'unet']) {
      const a = readSafetensors(path.join(pipeA, comp, 'diffusion_pytorch_model.safetensors')).tensors;
      const b = readSafetensors(path.join(out!, comp, 'diffusion_pytorch_model.safetensors')).tensors;
      expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
      let maxDiff = 0;
      for (const [k, v] of a) {
        const w = b.get(k)!.data;
        for (let i = 0; i < v.data.length; i++) maxDiff = Math.max(maxDiff, Math.abs(v.data[i] - w[i]));
      }
      expect(maxDiff, comp).toBeLessThan(1e-5);
    }
  });

  it('classifier-free guidance equals a hand-written two-pass reference loop, and cfg 1 the unguided loop', async () => {
    const pipe = await Txt2ImgPipeline.load(pipeA);
    try {
      const prompts = ['a red square', 'a blue square'];
      const reference = async (scale: number, sampler = 'DDIM') => {
        const sched = createScheduler(withA1111Sampler(pipe.schedulerConfig, sampler));
        sched.setTimesteps(5);
        const rng = new Generator(7);
        const cond = await pipe.encoder.encode(prompts);
        const uncond = await pipe.encoder.unconditional(2);
        let x = tf.tidy(() => tf.mul(rng.randn([2, 4, 4, 4]), sched.initNoiseSigma)) as tf.Tensor4D;
        for (const t of sched.timesteps) {
          const eps = tf.tidy(() => {
            const tv = tf.fill([2], t) as tf.Tensor1D;
            const input = sched.scaleModelInput(x, t) as tf.Tensor4D;
            const c = pipe.unet.apply(input, tv, cond.context);
            if (scale === 1) return c;
            const u = pipe.unet.apply(input, tv, uncond.context);
            return tf.add(u, tf.mul(tf.sub(c, u), scale));
          });
          const { prevSample, predOriginalSample } = sched.step(eps, t, x, rng);
          tf.dispose([eps, x, predOriginalSample]);
          x = prevSample as tf.Tensor4D;
        }
        const img = tf.tidy(() => tf.clipByValue(pipe.vae.decodeLatents(x), -1, 1));
        tf.dispose([x, cond.context, uncond.context]);
        const out = Array.from(await img.data());
        img.dispose();
        return out;
      };
      expect(() => pipe.checkOptions({ inputs: prompts, guidanceScale: 1, steps: 101, seed: 0 })).toThrow(
        /steps must be an integer from 1 to 100 \(the model's training steps\), got 101/,
      );
      expect(() => pipe.checkOptions({ inputs: [], guidanceScale: 1, steps: 1, seed: 0 })).toThrow(/no prompts given/);
      expect(() => pipe.checkOptions({ inputs: prompts, guidanceScale: NaN, steps: 1, seed: 0 })).toThrow(
        /cfg\) must be a finite number from 0 to 100, got NaN/,
      );
      for (const [bad, pattern] of [
        [{ guidanceScale: 1e308 }, /cfg\) must be a finite number from 0 to 100, got 1e\+308/],
        [{ guidanceScale: 1, eta: 2 }, /eta must be a number from 0 \(deterministic DDIM\) to 1 \(DDPM-like noise\), got 2/],
        [{ guidanceScale: 1, eta: 1e6 }, /eta must be a number from 0 .* got 1000000/],
      ] as const) {
        expect(() => pipe.checkOptions({ inputs: prompts, steps: 1, seed: 0, ...bad })).toThrow(pattern);
      }
      const warnings: string[] = [];
      for (const [sampler, eta] of [
        ['ddpm', 0.5],
        ['ddpm', 0],
        ['ddim', 0.5],
      ] as const) {
        tf.dispose(await pipe.generate({ inputs: prompts, guidanceScale: 1, steps: 1, sampler, eta, seed: 7, warn: (m) => warnings.push(m) }));
      }
      expect(warnings).toEqual(['warning: eta 0.5 is ignored: eta applies to the ddim sampler only, not DDPM']);
      // Every sampler kind through the same loop: deterministic, sigma-scaled inputs (Euler a,
      // Heun's repeated timesteps), multistep state (DPM++ with Karras sigmas).
      for (const [scale, sampler] of [
        [1, 'ddim'],
        [3, 'ddim'],
        [3, 'Euler a'],
        [3, 'heun'],
        [3, 'DPM++ 2M Karras'],
      ] as const) {
        const before = tf.memory().numTensors;
        const got = await pipe.generate({ inputs: prompts, guidanceScale: scale, steps: 5, sampler, seed: 7 });
        const values = Array.from(await got.data());
        got.dispose();
        expect(tf.memory().numTensors).toBe(before);
        const ref = await reference(scale, sampler);
        const diff = Math.max(...values.map((v, i) => Math.abs(v - ref[i])));
        expect(diff, `cfg ${scale} ${sampler}`).toBeLessThan(1e-4);
      }
      await expect(pipe.generate({ inputs: prompts, guidanceScale: 1, steps: 2, sampler: 'LMS', seed: 7 })).rejects.toThrow(
        /sampler 'LMS' is not implemented.*; allowed: ddpm, ddim, euler/,
      );
    } finally {
      pipe.dispose();
    }
  });

  it('txt2img writes a PNG whose A1111 parameters round-trip, and the same seed gives the same bytes', async () => {
    const dir = tempDir('out');
    const run = (out: string, seed: number) =>
      runTxt2Img({ prompts: ['a red square'], model: pipeA, negative: 'blurry', cfg: 3, steps: 4, sampler: 'ddim', eta: 0, seed, n: 1, out, ...quiet });
    const a = await run(path.join(dir, 'a.png'), 5);
    await run(path.join(dir, 'b.png'), 5);
    await run(path.join(dir, 'c.png'), 6);
    const bytes = (f: string) => readFileSync(path.join(dir, f));
    expect(bytes('a.png').equals(bytes('b.png'))).toBe(true);
    expect(bytes('a.png').equals(bytes('c.png'))).toBe(false);
    const text = getPngText(bytes('a.png'), 'parameters')!;
    expect(text).toBe(a.parameters[0]);
    const parsed = parseInfotext(text);
    expect(parsed.prompt).toBe('a red square');
    expect(parsed.negativePrompt).toBe('blurry');
    expect(parsed.params).toMatchObject({ Steps: '4', Sampler: 'DDIM', 'CFG scale': '3', Seed: '5', Size: '16x16' });
  });

  it('the txt2img CLI itself samples the pipeline (exit 0, PNG with parameters)', async () => {
    const out = path.join(tempDir('cli-ok'), 'cli.png');
    const r = await runCommand(
      process.execPath,
      [
        '--import',
        'tsx',
        path.join(repo, 'scripts', 'txt2img.ts'),
        'a blue square',
        '--model',
        pipeA,
        '--steps',
        '3',
        '--cfg',
        '2',
        '--seed',
        '4',
        '--out',
        out,
        '--quiet',
      ],
      {
        cwd: repo,
        env: { ...process.env, TXT2IMG_BACKEND: process.env.TXT2IMG_BACKEND ?? 'wasm' },
        timeout: 300_000,
      },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^backend: /m);
    // the default --runtime auto picks onnxruntime on a CPU backend, says so, and records it
    expect(r.stderr).toMatch(/^U-Net runtime: onnxruntime-node on the CPU .*\(auto: faster than the \w+ backend/m);
    expect(parseInfotext(getPngText(readFileSync(out), 'parameters')!).params).toMatchObject({ Seed: '4', Steps: '3', 'U-Net runtime': 'onnx' });
  });

  it('--n with --separate writes a grid plus one file per image, and --save-steps a strip and an animation', async () => {
    const dir = tempDir('grid');
    const out = path.join(dir, 'g.png');
    const r = await runTxt2Img({
      prompts: ['a red square'],
      model: pipeA,
      cfg: 1,
      steps: 3,
      sampler: 'ddpm',
      eta: 0,
      seed: 1,
      n: 3,
      out,
      separate: true,
      saveSteps: true,
      ...quiet,
    });
    expect(r.files.map((f) => path.basename(f)).sort()).toEqual(['g-0.png', 'g-1.png', 'g-2.png', 'g-steps.png', 'g-steps.webp', 'g.png']);
    for (const f of r.files) expect(existsSync(f)).toBe(true);
  });
});

describe('bad data and a label-conditioned MNIST model', () => {
  it('trains on the good files of a bad-data folder and reports each bad one', async () => {
    const fixture = await writeBadDataFixture(tempDir('bad'));
    const lines: string[] = [];
    const config = tinyConfig(fixture.root, tiny.result.outDir);
    config.data = { source: 'folder', path: fixture.root, imageSize: BAD_FIXTURE_SIZE, channels: 3, flip: false };
    config.vaeTraining.steps = 1;
    await runTraining({ config, runDir: tempDir('badrun'), stage: 'vae', resume: false, quiet: true, log: (l) => lines.push(l) });
    const report = lines.join('\n');
    for (const b of fixture.bad) expect(report).toContain(b.file);
    expect(report).toMatch(new RegExp(`${fixture.good.length} images used, ${fixture.bad.length} skipped`));
    // The default runtime (auto) on wasm: gradients by onnxruntime (one 1-thread shard per core), and the log says so.
    const cores = defaultOnnxThreads();
    const how =
      cores > 1 ? `, data-parallel over ${cores} shards of 1 thread \\(one per core; --workers 1: one session on ${cores} threads\\)` : ' \\(1 thread\\)';
    expect(report).toMatch(new RegExp(`vae gradients: onnxruntime-node on the CPU${how}, loss and backward pass traced from tfjs \\(auto: `));
  });

  it('trains the text-conditioned U-Net data-parallel over worker threads (onnxruntime in each)', async () => {
    const dir = tempDir('dp');
    cpSync(path.join(runA, 'vae'), path.join(dir, 'vae'), { recursive: true });
    const config = validateTrainConfig({ ...tinyConfig(data, tiny.result.outDir), unetTraining: { ...stage, steps: 2, workers: 3 } });
    const lines: string[] = [];
    const pipeDir = (await runTraining({ config, runDir: dir, stage: 'unet', resume: false, quiet: true, log: (l) => lines.push(l) }))!;
    expect(lines.join('\n')).toMatch(/data-parallel: 3 shards x 1 onnxruntime-node thread/);
    expect(lines.join('\n')).toMatch(
      /unet gradients: onnxruntime-node on the CPU, data-parallel over 3 shards of 1 thread, loss and backward pass traced from tfjs \(auto: /,
    );
    expect(
      readFileSync(path.join(dir, 'unet-stage', 'loss.jsonl'), 'utf8')
        .trim()
        .split('\n'),
    ).toHaveLength(2);
    expect(existsSync(path.join(pipeDir, 'unet', 'diffusion_pytorch_model.safetensors'))).toBe(true);
  });

  it('trains label-conditioned MNIST for a few steps and samples a requested digit', async () => {
    const config = validateTrainConfig({
      ...tinyConfig(data, tiny.result.outDir),
      data: { source: 'mnist', limit: 32 },
      conditioning: { kind: 'label', numClasses: 10, contextDim: 16, dropout: 0.1 },
      vae: { imageChannels: 1, channels: [8, 8, 16], resBlocksPerLevel: 1, latentChannels: 4, downsampleFactor: 4, groupNormGroups: 4 },
      unet: { ...tinyConfig(data, tiny.result.outDir).unet, sampleSize: 8, contextDim: 16, contextLength: 1 },
      // Data-parallel: each stage's shards run in 2 worker threads.
      vaeTraining: { ...stage, steps: 2, workers: 2 },
      unetTraining: { ...stage, steps: 2, workers: 2 },
    });
    const dir = tempDir('mnist');
    const pipeDir = (await runTraining({ config, runDir: dir, stage: 'all', resume: false, ...quiet }))!;
    expect(existsSync(path.join(pipeDir, 'label_encoder', 'diffusion_pytorch_model.safetensors'))).toBe(true);
    const out = path.join(dir, 'three.png');
    const r = await runTxt2Img({ prompts: [], labels: [3], model: pipeDir, cfg: 2, steps: 3, sampler: 'ddim', eta: 0, seed: 0, n: 2, out, ...quiet });
    expect(parseInfotext(r.parameters[0]).prompt).toBe('label 3');
    await expect(
      runTxt2Img({ prompts: [], labels: [12], model: pipeDir, cfg: 2, steps: 3, sampler: 'ddim', eta: 0, seed: 0, n: 1, out, ...quiet }),
    ).rejects.toThrow(/12/);
    await expect(runTxt2Img({ prompts: ['a cat'], model: pipeDir, cfg: 2, steps: 3, sampler: 'ddim', eta: 0, seed: 0, n: 1, out, ...quiet })).rejects.toThrow(
      /class labels/,
    );
  });
});
