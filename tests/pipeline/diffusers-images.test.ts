/**
 * Whole images against diffusers: each text-to-image reference pipeline of
 * tests/fixtures/diffusers/pipelines (diffusers' own save_pretrained output; README.md there) is
 * assembled into a complete folder (the case plus the shared `_text/` text encoder and
 * tokenizer), and `txt2img --model DIR --latents L` (runTxt2Img, the CLI's path: folder loading,
 * CLIP conversion to ONNX, tokenizer from vocab.json + merges.txt, guided DDIM, VAE decode, PNG)
 * must give diffusers' 10-step, cfg 7.5 image from the same initial latents to 1/255.
 */
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { readSafetensors, writeSafetensors } from '../../src/checkpoint/io.js';
import { runTxt2Img } from '../../src/pipeline/txt2img.js';

const FIXTURES = path.resolve(import.meta.dirname, '../fixtures/diffusers/pipelines');
/**
 * Text-to-image cases, with the sampler and reference image: DDIM with SD-1.5's schedule where the
 * folder's scheduler is that DDIM (l2_list_linear's predicts v, as SD-2.1), else the folder's own
 * scheduler (l3_list_conv: DPM-Solver++ 2M, linspace spacing). Two are not square: l2_list_linear
 * (16 x 24, H x W) passes --width/--height as diffusers' height=/width=; sd_vae_l4 (48 x 32, an
 * SD-1.5-shaped VAE) takes its size from the latents file alone.
 */
const RUNS: { name: string; sampler: string; image: string; size?: { width: number; height: number } }[] = [
  { name: 'l2_int_conv', sampler: 'ddim', image: 'image.ddim.uint8' },
  { name: 'l3_int_linear', sampler: 'ddim', image: 'image.ddim.uint8' },
  { name: 'l3_list_conv', sampler: 'dpmpp-2m', image: 'image.dpmpp_2m.uint8' },
  { name: 'l2_list_linear', sampler: 'ddim', image: 'image.ddim_v.uint8', size: { width: 24, height: 16 } },
  { name: 'sd_vae_l4', sampler: 'ddim', image: 'image.ddim.uint8' },
];
const CASES = RUNS.filter((r) => existsSync(path.join(FIXTURES, r.name, 'reference.safetensors')));

let tmp: string;
beforeAll(async () => {
  await initBackend({ backend: 'wasm', quiet: true });
  tmp = mkdtempSync(path.join(os.tmpdir(), 'diffusers-images-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe.skipIf(CASES.length === 0)("txt2img --latents on diffusers' reference pipelines", () => {
  for (const { name, sampler, image, size } of CASES) {
    it(`${name}, ${sampler}${size ? `, ${size.height}x${size.width}` : ''}: the image equals diffusers' to 1/255`, async () => {
      const dir = path.join(tmp, name);
      cpSync(path.join(FIXTURES, name), dir, { recursive: true });
      cpSync(path.join(FIXTURES, '_text', 'text_encoder'), path.join(dir, 'text_encoder'), { recursive: true });
      cpSync(path.join(FIXTURES, '_text', 'tokenizer'), path.join(dir, 'tokenizer'), { recursive: true });
      const info = JSON.parse(readFileSync(path.join(dir, 'reference.json'), 'utf8'));
      const ref = readSafetensors(path.join(dir, 'reference.safetensors')).tensors;
      const latentsFile = path.join(tmp, `${name}-latents.safetensors`);
      writeSafetensors(latentsFile, new Map([['latents', ref.get('image.latents')!]]));
      const want = ref.get(image)!; // [1, H, W, 3], values 0..255
      const run = info.imageRun;
      const out = path.join(tmp, `${name}.png`);
      await runTxt2Img({
        model: dir,
        prompts: [run.prompt],
        negative: run.negative_prompt,
        cfg: run.guidance_scale,
        steps: run.num_inference_steps,
        sampler,
        eta: 0,
        seed: 0,
        n: 1,
        out,
        latents: latentsFile,
        ...size,
        runtime: 'tfjs',
        quiet: true,
        log: () => {},
      });
      const { data, info: png } = await sharp(out).removeAlpha().raw().toBuffer({ resolveWithObject: true });
      expect([1, png.height, png.width, 3]).toEqual(want.shape);
      let worst = 0;
      for (let i = 0; i < data.length; i++) worst = Math.max(worst, Math.abs(data[i] - want.data[i]));
      expect(worst).toBeLessThanOrEqual(1);
    });
  }
});
