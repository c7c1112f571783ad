/**
 * The commands on webgpu, as a user runs them: `npx txt2img "a smiling face" --backend webgpu`
 * (the bundled model; pixels as on wasm), a short `train` of both stages that asked for two
 * data-parallel workers, and the benchmark on ldm-small's shapes made tiny. Skipped, saying why,
 * where there is no WebGPU adapter.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { describeAdapter } from '../../src/backend/webgpu.js';
import { tempDir, writeColorDataset } from '../fixtures/captioned.js';
import { makeTinyModel, sharedModelsDir } from '../text/shared.js';
import { noAdapter, webgpu, webgpuTitle } from './adapter.js';
import { type Finished, LDM_SMALL, runCommand } from '../helpers.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Runs `node <args>` in the repository with the shared tokenizer; resolves with its exit and output. */
function run(args: string[], timeout = 300_000): Promise<Finished> {
  const env: NodeJS.ProcessEnv = { ...process.env, TXT2IMG_LOCAL_MODELS: sharedModelsDir() };
  delete env.NODE_OPTIONS; // vitest's loader flags must not reach the command
  delete env.TXT2IMG_BACKEND;
  return runCommand(process.execPath, args, { cwd: repo, env, timeout });
}

describe.skipIf(noAdapter)(webgpuTitle('the commands on webgpu'), () => {
  const adapterLine = () => `backend: webgpu (adapter: ${describeAdapter(webgpu.adapter!)})`;

  it('npx txt2img "a smiling face" --backend webgpu: the bundled model, pixels as on wasm', async () => {
    const dir = tempDir('wg-cli');
    const common = ['bin/txt2img.mjs', 'a smiling face', '--steps', '4', '--seed', '2', '--quiet'];
    const gpu = await run([...common, '--backend', 'webgpu', '--out', path.join(dir, 'webgpu.png')]);
    expect(gpu.code, gpu.stderr).toBe(0);
    expect(gpu.stderr).toContain(adapterLine());
    if (webgpu.adapter!.software) expect(gpu.stderr).toMatch(/WARNING: webgpu on a software rasterizer/);
    expect(gpu.stderr).toMatch(/^U-Net runtime: tfjs .*auto: the webgpu backend/m);
    const cpu = await run([...common, '--backend', 'wasm', '--runtime', 'tfjs', '--out', path.join(dir, 'wasm.png')]);
    expect(cpu.code, cpu.stderr).toBe(0);
    const [a, b] = await Promise.all(['webgpu.png', 'wasm.png'].map((f) => sharp(path.join(dir, f)).raw().toBuffer({ resolveWithObject: true })));
    expect(a.info).toEqual(b.info);
    let worst = 0;
    for (let i = 0; i < a.data.length; i++) worst = Math.max(worst, Math.abs(a.data[i] - b.data[i]));
    // 8-bit pixels of images that agree to ~1e-5: a pixel may round to the next level.
    expect(worst).toBeLessThanOrEqual(1);
  });

  it("bench on webgpu: the report labelled with the adapter's caveat", async () => {
    const spec = JSON.parse(readFileSync(LDM_SMALL, 'utf8'));
    spec.vae.channels = [8, 8, 8];
    spec.vae.groupNormGroups = 4;
    Object.assign(spec.unet, {
      channels: [8, 16],
      attentionHeads: 2,
      contextDim: 16,
      contextLength: 3,
      timeEmbedDim: 16,
      groupNormGroups: 4,
      resBlocksPerLevel: 1,
    });
    Object.assign(spec.measure, { trainBatch: 2, sampleBatch: 2, sampleSteps: 3 });
    const file = path.join(tempDir('wg-bench'), 'tiny.json');
    writeFileSync(file, JSON.stringify(spec));
    // Two figures (training and sampling run elsewhere here): llvmpipe takes ~25 s for all four.
    const r = await run([
      '--import',
      'tsx',
      'scripts/bench.ts',
      '--backend',
      'webgpu',
      '--config',
      file,
      '--repeat',
      '1',
      '--warmup',
      '0',
      '--only',
      'vae_train_step_ms,unet_forward_ms',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^ldm-small benchmark: backend webgpu/m);
    for (const f of ['vae_train_step_ms', 'unet_forward_ms']) expect(r.stdout).toMatch(new RegExp(`^  ${f} +[\\d.]+ ms`, 'm'));
    if (webgpu.adapter!.software)
      expect(r.stdout).toMatch(/^ {2}note: webgpu on a software rasterizer .*a correctness run of the GPU code path, not GPU speed$/m);
    else expect(r.stdout).not.toMatch(/note: webgpu/);
  });

  it('train (both stages, a step each, 2 workers asked for) runs on webgpu in one process, and its pipeline samples', async () => {
    const tiny = makeTinyModel('tiny-random-clip', { hidden: 32, layers: 1, heads: 2 });
    try {
      const dir = tempDir('wg-train-cli');
      const data = (await writeColorDataset(path.join(dir, 'data'), { count: 4, size: 16 })).root;
      const stage = {
        batchSize: 2,
        lr: 1e-3,
        lrSchedule: 'constant',
        warmupSteps: 0,
        weightDecay: 0,
        clipGradNorm: 1,
        emaDecay: 0.9,
        accumulate: 1,
        checkpointEvery: 1,
        steps: 1,
      };
      const config = {
        seed: 1,
        data: { source: 'folder', path: data, imageSize: 16, channels: 3, flip: false },
        conditioning: { kind: 'clip', modelId: tiny.result.outDir, dropout: 0.25 },
        vae: { imageChannels: 3, channels: [8, 8, 16], resBlocksPerLevel: 1, latentChannels: 4, downsampleFactor: 4, groupNormGroups: 4, activation: 'silu' },
        vaeTraining: stage,
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
        unetTraining: stage,
        scheduler: { type: 'ddpm', numTrainTimesteps: 100, betaSchedule: 'scaled-linear', betaStart: 0.00085, betaEnd: 0.012 },
        lossWeighting: 'mse',
        notes: ['test model: the text encoder is random, not pretrained'],
      };
      const configFile = path.join(dir, 'config.json');
      writeFileSync(configFile, JSON.stringify(config));
      const out = path.join(dir, 'run');
      const r = await run(['--import', 'tsx', 'scripts/train.ts', '--config', configFile, '--out', out, '--backend', 'webgpu', '--workers', '2', '--quiet']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain(adapterLine());
      for (const s of ['vae', 'unet']) {
        expect(r.stderr).toContain(`${s}: 2 data-parallel workers asked for, 1 used: the webgpu backend trains in one process`);
        expect(r.stderr).toMatch(new RegExp(`^${s} gradients: tfjs \\(the backend above\\) \\(auto: the webgpu backend`, 'm'));
        const steps = readFileSync(path.join(out, `${s}-stage`, 'loss.jsonl'), 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as { loss: number; gradNorm: number });
        expect(steps).toHaveLength(1);
        for (const st of steps) expect(Number.isFinite(st.loss) && Number.isFinite(st.gradNorm)).toBe(true);
      }
      const pipeline = path.join(out, 'pipeline');
      expect(existsSync(path.join(pipeline, 'unet', 'diffusion_pytorch_model.safetensors'))).toBe(true);
      const png = path.join(dir, 'sample.png');
      const s = await run(['bin/txt2img.mjs', 'a red square', '--model', pipeline, '--backend', 'webgpu', '--steps', '2', '--out', png, '--quiet']);
      expect(s.code, s.stderr).toBe(0);
      expect((await sharp(png).metadata()).width).toBe(16);
    } finally {
      tiny.cleanup();
    }
  });
});
