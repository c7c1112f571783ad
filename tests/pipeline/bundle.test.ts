/**
 * Bundling a trained pipeline into a self-contained folder (src/pipeline/bundle.ts): the tiny
 * NOT-pretrained text model and the CLIP tokenizer travel inside it, so it loads offline with no
 * setting, wherever it is moved.
 */
import * as tf from '@tensorflow/tfjs';
import { cpSync, existsSync, readFileSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { readSafetensors } from '../../src/checkpoint/io.js';
import { roundToHalf } from '../../src/checkpoint/safetensors.js';
import { type BundleResult, bundlePipeline } from '../../src/pipeline/bundle.js';
import { Txt2ImgPipeline } from '../../src/pipeline/pipeline.js';
import { runTraining } from '../../src/train/run-training.js';
import { validateTrainConfig } from '../../src/train/train-config.js';
import { LOCAL_MODELS_ENV } from '../../src/text/clip.js';
import { tempDir, writeColorDataset } from '../fixtures/captioned.js';
import { makeTinyModel, maxAbsDiff, sharedModelsDir } from '../text/shared.js';
import { runCommand } from '../helpers.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const stage = {
  batchSize: 4,
  lr: 1e-3,
  lrSchedule: 'constant',
  warmupSteps: 0,
  weightDecay: 0,
  clipGradNorm: 1,
  emaDecay: 0.5,
  accumulate: 1,
  checkpointEvery: 2,
};
const RECIPE = 'npx tsx scripts/train.ts --config tiny.json --out run  # the test recipe';

let tiny: ReturnType<typeof makeTinyModel>;
let pipeDir: string;
let bundleDir: string;
let bundle: BundleResult;
const shared = { localModelPath: sharedModelsDir() };
const prompts = ['a red square', 'a blue square'];

async function generate(pipe: Txt2ImgPipeline): Promise<Float32Array> {
  const img = await pipe.generate({ inputs: prompts, guidanceScale: 3, steps: 4, sampler: 'ddim', seed: 11 });
  const data = (await img.data()) as Float32Array;
  img.dispose();
  return data;
}

beforeAll(async () => {
  await initBackend({ backend: process.env.TXT2IMG_BACKEND ?? 'wasm', quiet: true });
  tiny = makeTinyModel('tiny-random-clip', { hidden: 32, layers: 1, heads: 2 });
  const data = (await writeColorDataset(tempDir('bundle-colors'), { count: 8, size: 16 })).root;
  const config = validateTrainConfig({
    seed: 2,
    data: { source: 'folder', path: data, imageSize: 16, channels: 3, flip: false },
    conditioning: { kind: 'clip', modelId: tiny.result.outDir, dropout: 0.25 },
    vae: { imageChannels: 3, channels: [8, 8, 16], resBlocksPerLevel: 1, latentChannels: 4, downsampleFactor: 4, groupNormGroups: 4, activation: 'silu' },
    vaeTraining: { ...stage, steps: 2 },
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
    unetTraining: { ...stage, steps: 2 },
    scheduler: { type: 'ddpm', numTrainTimesteps: 100, betaSchedule: 'scaled-linear', betaStart: 0.00085, betaEnd: 0.012 },
    lossWeighting: 'mse',
    notes: ['test model: the text encoder is random, not pretrained'],
  });
  pipeDir = (await runTraining({ config, runDir: tempDir('bundle-run'), stage: 'all', resume: false, quiet: true, log: () => {} }))!;
  bundleDir = path.join(tempDir('bundle-out'), 'models', 'default');
  bundle = await bundlePipeline({ pipelineDir: pipeDir, outDir: bundleDir, fp16: true, recipe: RECIPE, tokenizerCheckDir: sharedModelsDir() });
});

afterAll(() => tiny?.cleanup());

describe('bundling a trained pipeline (--fp16)', () => {
  it('writes the text model and its tokenizer, F16 weights, and a README with the recipe', () => {
    expect(bundle.files.map((f) => f.path)).toEqual([
      'README.md',
      'model_index.json',
      'scheduler/scheduler_config.json',
      'text_encoder/config.json',
      'text_encoder/model.safetensors',
      'tokenizer/LICENSE-openai-clip',
      'tokenizer/merges.txt',
      'tokenizer/special_tokens_map.json',
      'tokenizer/tokenizer.json',
      'tokenizer/tokenizer_config.json',
      'tokenizer/vocab.json',
      'training_vocabulary.json',
      'unet/config.json',
      'unet/diffusion_pytorch_model.safetensors',
      'vae/config.json',
      'vae/diffusion_pytorch_model.safetensors',
    ]);
    expect(bundle.tokenizerChecked).toBe(true);
    expect(bundle.totalBytes).toBe(bundle.files.reduce((a, f) => a + f.bytes, 0));
    // The F16 weights and text model: about half of what was bundled (the tokenizer is copied as it is).
    const tokenizerBytes = bundle.files.filter((f) => f.path.startsWith('tokenizer/')).reduce((a, f) => a + f.bytes, 0);
    expect(bundle.totalBytes - tokenizerBytes).toBeLessThan(bundle.sourceBytes * 0.55);
    expect(bundle.textModelMaxDiff).toBeGreaterThan(0);
    expect(bundle.textModelMaxDiff).toBeLessThan(3e-3);
    const enc = JSON.parse(readFileSync(path.join(bundleDir, 'text_encoder', 'config.json'), 'utf8'));
    expect(enc).toMatchObject({ architectures: ['CLIPTextModel'], model_type: 'clip_text_model', hidden_size: 32, max_position_embeddings: 77 });
    for (const [comp, name] of [
      ['vae', 'diffusion_pytorch_model.safetensors'],
      ['unet', 'diffusion_pytorch_model.safetensors'],
    ]) {
      const file = path.join(bundleDir, comp, name);
      const buf = readFileSync(file);
      const header = JSON.parse(buf.subarray(8, 8 + Number(buf.readBigUInt64LE(0))).toString());
      expect(
        new Set(
          Object.entries(header)
            .filter(([k]) => k !== '__metadata__')
            .map(([, v]) => (v as { dtype: string }).dtype),
        ),
      ).toEqual(new Set(['F16']));
      // Loading gives exactly the rounded float32 weights.
      const a = readSafetensors(path.join(pipeDir, comp, name)).tensors;
      const b = readSafetensors(file).tensors;
      for (const [k, v] of a) expect(Buffer.from(b.get(k)!.data.buffer).equals(Buffer.from(roundToHalf(v.data).buffer)), k).toBe(true);
    }
    // The text model: its token table F16 (nearly all its bytes), the rest exact.
    const text = readFileSync(path.join(bundleDir, 'text_encoder', 'model.safetensors'));
    const th = JSON.parse(text.subarray(8, 8 + Number(text.readBigUInt64LE(0))).toString());
    for (const [k, v] of Object.entries(th))
      if (k !== '__metadata__') expect((v as { dtype: string }).dtype, k).toBe(k.endsWith('token_embedding.weight') ? 'F16' : 'F32');
    const readme = readFileSync(path.join(bundleDir, 'README.md'), 'utf8');
    expect(readme.split('\n')[0]).toBe('# txt2img default model'); // named after its folder
    expect(readme).toMatch(/text encoder is NOT pretrained/);
    expect(readme).toContain(RECIPE);
    expect(readme).toContain('scripts/bundle-model.ts');
    expect(readme).toContain('--fp16');
    expect(readme).toContain('"conditioning"'); // the run's config.json
    expect(readme).toContain('`tokenizer/`');
    expect(existsSync(`${bundleDir}.old`)).toBe(false);
  });

  it('loads offline with no setting, moved elsewhere, and generates close to (not equal to) the float32 pipeline; no leaks', async () => {
    const before = tf.memory().numTensors;
    const original = await Txt2ImgPipeline.load(pipeDir);
    const want = await generate(original);
    original.dispose();
    // Moved elsewhere, the folder still loads: the text model and tokenizer paths are relative to it.
    const moved = path.join(path.dirname(bundleDir), 'moved');
    renameSync(bundleDir, moved);
    try {
      const pipe = await Txt2ImgPipeline.load(moved, { clip: { allowRemote: false, environment: {} } });
      expect(pipe.encoder.kind).toBe('clip');
      const got = await generate(pipe);
      const got2 = await generate(pipe);
      pipe.dispose();
      expect(Array.from(got2)).toEqual(Array.from(got));
      const diff = maxAbsDiff(got, want);
      expect(diff).toBeGreaterThan(0);
      expect(diff).toBeLessThan(0.02);
    } finally {
      renameSync(moved, bundleDir);
    }
    expect(tf.memory().numTensors).toBe(before);
  });

  it('with its tokenizer folder gone, says which folder lacks which files', async () => {
    const before = tf.memory().numTensors;
    const broken = path.join(tempDir('bundle-no-tokenizer'), 'default');
    cpSync(bundleDir, broken, { recursive: true });
    rmSync(path.join(broken, 'tokenizer'), { recursive: true });
    const err = await Txt2ImgPipeline.load(broken, { clip: { allowRemote: false, environment: {} } }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err).toBeInstanceOf(Error);
    const msg = err!.message;
    expect(msg).toBe(`model folder ${broken} is incomplete: ${path.join(broken, 'tokenizer')} has neither tokenizer.json nor vocab.json + merges.txt`);
    expect(tf.memory().numTensors).toBe(before); // VAE and U-Net were disposed
  });

  it('without --fp16 the bundle (written by the CLI) generates exactly what the pipeline does', async () => {
    const out = path.join(tempDir('bundle-f32'), 'scenes-f32');
    const r = await runCommand(
      process.execPath,
      ['--import', 'tsx', path.join(repo, 'scripts', 'bundle-model.ts'), '--pipeline', pipeDir, '--out', out, '--quiet'],
      {
        cwd: repo,
        env: { ...process.env, [LOCAL_MODELS_ENV]: sharedModelsDir() },
        timeout: 300_000,
      },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^bundled .* -> .*: 16 files, [\d.]+ MB/m);
    const written = readFileSync(path.join(out, 'README.md'), 'utf8');
    expect(written).toMatch(/Stored as float32, exactly as trained/);
    expect(written.split('\n')[0]).toBe(`# txt2img ${path.basename(out)} model`);
    const bad = await runCommand(
      process.execPath,
      ['--import', 'tsx', path.join(repo, 'scripts', 'bundle-model.ts'), '--pipeline', path.join(out, 'nope'), '--out', path.join(out, '..', 'x')],
      {
        cwd: repo,
        timeout: 300_000,
      },
    );
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^error: pipeline folder .*nope does not exist/m);

    const a = await Txt2ImgPipeline.load(pipeDir);
    const b = await Txt2ImgPipeline.load(out);
    try {
      expect(Array.from(await generate(b))).toEqual(Array.from(await generate(a)));
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  it('Txt2ImgPipeline.save(dir, { dtype: F16 }) writes F16 weights that load as the rounded values', async () => {
    const pipe = await Txt2ImgPipeline.load(pipeDir, { clip: shared });
    const dir = path.join(tempDir('save-f16'), 'pipe');
    try {
      await pipe.save(dir, { dtype: 'F16' });
      const unet = readSafetensors(path.join(dir, 'unet', 'diffusion_pytorch_model.safetensors')).tensors;
      const orig = await pipe.unet.store.toArrays();
      // Under diffusers' keys and element layout (the U-Net's weightLayout).
      const layout = pipe.unet.weightLayout();
      for (const [k, v] of orig) {
        const { key, array } = layout.toFile(k, { shape: v.shape, data: roundToHalf(v.data) });
        expect(Array.from(unet.get(key)!.data), k).toEqual(Array.from(array.data));
      }
      const back = await Txt2ImgPipeline.load(dir, { clip: shared });
      back.dispose();
    } finally {
      pipe.dispose();
    }
  });
});
