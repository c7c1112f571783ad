/**
 * img2img and inpainting on the bundled default model: strength 1 is txt2img, strength 0 the
 * input, small strengths stay near the input; inpainting keeps the known latents and pixels; an
 * inpainting U-Net (9 input channels) is fed the mask and the masked image's latents; the CLI's
 * `img2img` subcommand writes PNGs and names bad input.
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { type Uint8Image, batchImage, tensorToBatch } from '../../src/image/convert.js';
import { prepareEdit } from '../../src/image/edit.js';
import { parseInfotext } from '../../src/image/infotext.js';
import { getPngText } from '../../src/image/png-text.js';
import { planEdit } from '../../src/pipeline/img2img.js';
import { type GenerateOptions, Txt2ImgPipeline } from '../../src/pipeline/pipeline.js';
import { Generator } from '../../src/random/generator.js';
import { UNet2DCondition } from '../../src/unet/unet2d-condition.js';
import { tempDir } from '../fixtures/captioned.js';
import { runCommand } from '../helpers.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const MODEL = path.join(repo, 'models', 'default');

let pipe: Txt2ImgPipeline;
let scene: Uint8Image; // a 32x32 image the model itself drew
const base: Omit<GenerateOptions, 'inputs'> = { guidanceScale: 5, steps: 10, sampler: 'ddim', seed: 3, warn: () => {} };
const pixelsBase = {
  width: 32,
  height: 32,
  resizeMode: 0 as const,
  maskBlurX: 0,
  maskBlurY: 0,
  maskInvert: false,
  inpaintFullRes: false,
  inpaintFullResPadding: 0,
  fill: 1 as const,
};

beforeAll(async () => {
  await initBackend({ backend: process.env.TXT2IMG_BACKEND ?? 'wasm', quiet: true });
  pipe = await Txt2ImgPipeline.load(MODEL);
  const t = await pipe.generate({ ...base, inputs: ['a red square on a blue background'], steps: 20 });
  scene = batchImage(await tensorToBatch(t), 0);
  t.dispose();
}, 120_000);

afterAll(() => pipe?.dispose());

async function pixelsOf(t: tf.Tensor4D): Promise<Float32Array> {
  return (await t.data()) as Float32Array;
}

function meanAbs(a: ArrayLike<number>, b: ArrayLike<number>, pick: (i: number) => boolean = () => true): number {
  let s = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    if (!pick(i)) continue;
    s += Math.abs(a[i] - b[i]);
    n++;
  }
  return s / n;
}

const asFloats = (im: Uint8Image) => Float32Array.from(im.data, (v) => v / 127.5 - 1);

function square(x1: number, y1: number, x2: number, y2: number): Uint8Image {
  const data = new Uint8Array(32 * 32);
  for (let y = y1; y < y2; y++) for (let x = x1; x < x2; x++) data[y * 32 + x] = 255;
  return { data, width: 32, height: 32, channels: 1 };
}

describe('img2img', () => {
  it('strength 1 ignores the input: the same images as txt2img with the same seed, for every sampler family', async () => {
    for (const sampler of ['ddim', 'Euler a', 'DPM++ 2M Karras']) {
      const o = { ...base, steps: 3, sampler, inputs: ['a green circle'] };
      const plan = await planEdit(pipe, await prepareEdit({ ...pixelsBase, images: [scene] }), { strength: 1, fill: 1 });
      const a = await pipe.generate(o);
      const b = await pipe.generate({ ...o, edit: plan.hook(0, 1) });
      expect(Array.from(await pixelsOf(b))).toEqual(Array.from(await pixelsOf(a)));
      tf.dispose([a, b]);
      plan.dispose();
    }
  });

  it('strength 0 returns the input; small strengths stay near it, larger ones move away', async () => {
    const pixels = await prepareEdit({ ...pixelsBase, images: [scene] });
    const zero = await planEdit(pipe, pixels, { strength: 0, fill: 1 });
    expect(zero.identity).toBe(true);
    expect(zero.input(0).data).toEqual(scene.data);
    const before = tf.memory().numTensors;
    const dist: number[] = [];
    for (const strength of [0.2, 0.5, 0.9]) {
      const plan = await planEdit(pipe, pixels, { strength, fill: 1 });
      const out = await pipe.generate({ ...base, inputs: ['a yellow star'], seed: 5, edit: plan.hook(0, 1) });
      dist.push(meanAbs(await pixelsOf(out), asFloats(scene)));
      out.dispose();
      plan.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
    expect(dist[0]).toBeLessThan(0.1); // ~ the VAE's round trip
    expect(dist[0]).toBeLessThan(dist[1]);
    expect(dist[1]).toBeLessThan(dist[2]);
  });
});

describe('inpainting with a normal model', () => {
  it('the known latents are put back at every level: far from the mask the result is the decoded input', async () => {
    const mask = square(16, 16, 32, 32);
    const pixels = await prepareEdit({ ...pixelsBase, images: [scene], mask });
    const plan = await planEdit(pipe, pixels, { strength: 1, fill: 1 });
    const out = await pipe.generate({ ...base, inputs: ['a yellow star'], edit: plan.hook(0, 1) });
    const roundTrip = tf.tidy(() => pipe.vae.decodeLatents(pipe.vae.encodeLatents(tf.tensor4d(asFloats(scene), [1, 32, 32, 3]))));
    const got = await pixelsOf(out);
    const want = await pixelsOf(roundTrip);
    // pixels at least 6 away from the masked quarter (the VAE decoder's reach), and inside it
    const far = (i: number) => {
      const p = Math.floor(i / 3);
      return p % 32 < 10 || Math.floor(p / 32) < 10;
    };
    const inside = (i: number) => {
      const p = Math.floor(i / 3);
      return p % 32 >= 16 && Math.floor(p / 32) >= 16;
    };
    // Not exactly 0 far away: the decoder's GroupNorm statistics and mid-block attention are
    // image-wide, so the repainted quarter shifts every pixel a little (0.018 measured).
    expect(meanAbs(got, want, far)).toBeLessThan(0.04);
    expect(meanAbs(got, want, inside)).toBeGreaterThan(0.1);
    // the overlay puts the original's own pixels back outside the mask
    const final = await plan.finish(batchImage(await tensorToBatch(out), 0), 0);
    for (let p = 0; p < 32 * 32; p++) {
      if (mask.data[p] === 0) expect(Array.from(final.data.subarray(p * 3, p * 3 + 3))).toEqual(Array.from(scene.data.subarray(p * 3, p * 3 + 3)));
    }
    tf.dispose([out, roundTrip]);
    plan.dispose();
  });

  it('the blend hook: after the last step exactly the input latents where known, the result where masked', async () => {
    const pixels = await prepareEdit({ ...pixelsBase, images: [scene], mask: square(0, 0, 16, 32) });
    const plan = await planEdit(pipe, pixels, { strength: 0.5, fill: 1 });
    const { createScheduler } = await import('../../src/schedulers/index.js');
    const s = createScheduler({ ...pipe.schedulerConfig, type: 'ddim' });
    s.setTimesteps(10);
    const start = plan.hook(0, 1)(s, new Generator(1), [1, 8, 8, 4]);
    expect(start.index).toBe(5);
    const x = tf.fill([1, 8, 8, 4], 7) as tf.Tensor4D;
    const end = start.blend!(x, 10);
    const x0 = tf.tidy(() => pipe.vae.encodeLatents(tf.tensor4d(asFloats(scene), [1, 32, 32, 3])));
    const e = await end.data();
    const k = await x0.data();
    for (let p = 0; p < 64; p++) {
      const masked = p % 8 < 4; // latent columns 0..3 = pixel columns 0..15
      for (let c = 0; c < 4; c++) expect(e[p * 4 + c]).toBeCloseTo(masked ? 7 : k[p * 4 + c], 5);
    }
    tf.dispose([x, end, x0]);
    start.dispose();
    plan.dispose();
  });
});

describe('an inpainting U-Net (9 input channels)', () => {
  it('sees the binarised latent mask and the masked image latents; txt2img gives it an all-repaint mask', async () => {
    const unet = UNet2DCondition.fromConfig({ ...pipe.unet.config, inChannels: 9, outChannels: 4 }, new Generator(0));
    const inpaint = new Txt2ImgPipeline(pipe.vae, unet, pipe.encoder, pipe.schedulerConfig, pipe.info);
    expect(inpaint.inpainting).toBe(true);
    const seen: tf.Tensor4D[] = [];
    const apply = unet.apply.bind(unet);
    unet.apply = (sample, t, ctx, mask) => {
      seen.push(tf.keep(sample.clone()));
      return apply(sample, t, ctx, mask);
    };
    const mask = square(16, 0, 32, 32);
    const pixels = await prepareEdit({ ...pixelsBase, images: [scene], mask });
    const plan = await planEdit(inpaint, pixels, { strength: 1, fill: 1 });
    expect(plan.inpaintingConditioning).toBe(true);
    const out = await inpaint.generate({ ...base, guidanceScale: 1, steps: 2, inputs: ['a red square'], edit: plan.hook(0, 1) });
    expect(seen.length).toBe(2);
    expect(seen[0].shape).toEqual([1, 8, 8, 9]);
    const [m, latents] = tf.split(seen[0].slice([0, 0, 0, 4], [1, 8, 8, 5]), [1, 4], 3);
    expect(Array.from(await m.data())).toEqual(Array.from({ length: 64 }, (_, p) => (p % 8 >= 4 ? 1 : 0)));
    const maskedImage = tf.tidy(() => {
      const img = tf.tensor4d(asFloats(scene), [1, 32, 32, 3]);
      const keepLeft = tf.tensor4d(
        Float32Array.from(mask.data, (v) => (v ? 0 : 1)),
        [1, 32, 32, 1],
      );
      return pipe.vae.encodeLatents(tf.mul(img, keepLeft) as tf.Tensor4D);
    });
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(latents, maskedImage))).dataSync()[0])).toBeLessThan(1e-5);
    // text to image with it: mask 1 everywhere, the latents of an all-0 image
    tf.dispose(seen.splice(0));
    const t2i = await inpaint.generate({ ...base, guidanceScale: 1, steps: 1, inputs: ['a red square'] });
    expect(Array.from(await seen[0].slice([0, 0, 0, 4], [1, 8, 8, 1]).data()).every((v) => v === 1)).toBe(true);
    tf.dispose([out, t2i, m, latents, maskedImage, ...seen]);
    plan.dispose();
    unet.dispose();
  });

  it('a pipeline folder with one saves outChannels and loads back; a wrong width is an error', async () => {
    const dir = tempDir('inpaint-pipe');
    const unet = UNet2DCondition.fromConfig({ ...pipe.unet.config, inChannels: 9, outChannels: 4 }, new Generator(0));
    const p = new Txt2ImgPipeline(pipe.vae, unet, pipe.encoder, pipe.schedulerConfig, pipe.info);
    await p.save(path.join(dir, 'pipe'));
    const cfg = JSON.parse(readFileSync(path.join(dir, 'pipe', 'unet', 'config.json'), 'utf8'));
    expect([cfg.in_channels, cfg.out_channels]).toEqual([9, 4]); // diffusers' keys
    expect(JSON.parse(readFileSync(path.join(MODEL, 'unet', 'config.json'), 'utf8')).outChannels).toBeUndefined();
    const back = await Txt2ImgPipeline.load(path.join(dir, 'pipe'));
    expect(back.inpainting).toBe(true);
    back.dispose();
    const bad = UNet2DCondition.fromConfig({ ...pipe.unet.config, inChannels: 6, outChannels: 4 }, new Generator(0));
    expect(() => new Txt2ImgPipeline(pipe.vae, bad, pipe.encoder, pipe.schedulerConfig, pipe.info)).toThrow(
      /the U-Net's inChannels 6 must be the VAE's latentChannels 4, or 9 for an inpainting U-Net/,
    );
    bad.dispose();
    unet.dispose();
  });
});

describe('txt2img img2img (the CLI)', () => {
  const bin = path.join(repo, 'bin', 'txt2img.mjs');
  const dir = tempDir('img2img-cli');
  mkdirSync(dir, { recursive: true });

  it('writes the edited image with its parameters; inpainting keeps the unmasked pixels', async () => {
    // a 40x30 RGBA photo: RGBA and a size other than the model's
    const w = 40;
    const h = 30;
    const rgba = Buffer.alloc(w * h * 4);
    for (let i = 0; i < w * h; i++) rgba.set([30, 60 + (i % w), 200, 255], i * 4);
    writeFileSync(
      path.join(dir, 'photo.png'),
      await sharp(rgba, { raw: { width: w, height: h, channels: 4 } })
        .png()
        .toBuffer(),
    );
    const m = Buffer.alloc(w * h);
    for (let i = 0; i < w * h; i++) m[i] = i % w >= 20 && Math.floor(i / w) >= 10 ? 255 : 0;
    writeFileSync(
      path.join(dir, 'mask.png'),
      await sharp(m, { raw: { width: w, height: h, channels: 1 } })
        .png()
        .toBuffer(),
    );
    const out = path.join(dir, 'inpainted.png');
    const r = await runCommand(
      process.execPath,
      [
        bin,
        'img2img',
        '--init',
        path.join(dir, 'photo.png'),
        '--mask',
        path.join(dir, 'mask.png'),
        '--only-masked',
        '--padding',
        '4',
        '--mask-blur',
        '0',
        '--strength',
        '0.8',
        '--steps',
        '8',
        'a yellow star',
        '--out',
        out,
        '--quiet',
      ],
      { cwd: dir, timeout: 120_000 },
    );
    expect(r.stderr).toMatch(/wrote .*inpainted\.png/);
    expect(r.code).toBe(0);
    const png = readFileSync(out);
    const info = parseInfotext(getPngText(png, 'parameters')!);
    expect(info.prompt).toBe('a yellow star');
    expect(info.params).toMatchObject({
      'Denoising strength': '0.8',
      'Mask blur': '0',
      'Inpaint area': 'Only masked',
      'Masked area padding': '4',
      'Masked content': 'original',
    });
    const { data, info: meta } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    expect([meta.width, meta.height]).toEqual([w, h]); // "only masked": the original's size
    expect(Array.from(data.subarray(0, 3))).toEqual([30, 60, 200]);
  });

  it('names a mask of another size, a bad strength and a missing file', async () => {
    writeFileSync(
      path.join(dir, 'small.png'),
      await sharp(Buffer.alloc(16 * 16, 255), { raw: { width: 16, height: 16, channels: 1 } })
        .png()
        .toBuffer(),
    );
    const run = (...args: string[]) =>
      runCommand(process.execPath, [bin, 'img2img', ...args, '--out', path.join(dir, 'x.png'), 'a red square'], { cwd: dir, timeout: 120_000 });
    const last = (r: { stderr: string }) => r.stderr.trim().split('\n').at(-1);
    const size = await run('--init', path.join(dir, 'photo.png'), '--mask', path.join(dir, 'small.png'));
    expect(last(size)).toBe('error: the mask is 16x16 but the init image is 40x30; they must be the same size');
    expect(size.code).toBe(1);
    const strength = await run('--init', path.join(dir, 'photo.png'), '--strength', '1.5');
    expect(last(strength)).toBe("error: --strength must be a number from 0 to 1, got '1.5'");
    const missing = await run('--init', path.join(dir, 'nope.png'));
    expect(last(missing)).toMatch(/^error: --init .*nope\.png: no such file$/);
    expect(existsSync(path.join(dir, 'x.png'))).toBe(false);
  });
});
