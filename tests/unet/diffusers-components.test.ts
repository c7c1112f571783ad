/**
 * Our U-Net and VAE against diffusers itself: each reference pipeline in
 * tests/fixtures/diffusers/pipelines (written by diffusers' save_pretrained, float16 weights; see
 * its README.md and scripts/fixtures/diffusers_pipelines.py) is loaded from its `unet/` and `vae/`
 * folders by our code, and our outputs are compared with the ones diffusers computed: the U-Net
 * noise prediction, the VAE posterior mean and logvar, and the VAE decode, each to 1e-4 of the
 * reference's largest magnitude. Then the components are saved by us and loaded again (diffusers'
 * format both ways).
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { readSafetensors } from '../../src/checkpoint/io.js';
import type { NamedArray } from '../../src/nn/params.js';
import { UNet2DCondition } from '../../src/unet/unet2d-condition.js';
import { AutoencoderKL } from '../../src/vae/autoencoder-kl.js';
import { maxAbsDiff } from '../helpers.js';

const FIXTURES = path.resolve(import.meta.dirname, '../fixtures/diffusers/pipelines');
const CASES = existsSync(FIXTURES)
  ? readdirSync(FIXTURES).filter((c) => existsSync(path.join(FIXTURES, c, 'reference.safetensors')) && existsSync(path.join(FIXTURES, c, 'unet')))
  : [];
/** Largest error relative to the reference's largest magnitude. */
const TOLERANCE = 1e-4;

let tmp: string;
beforeAll(async () => {
  await initBackend({ backend: 'wasm', quiet: true });
  tmp = mkdtempSync(path.join(os.tmpdir(), 'diffusers-components-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** NCHW (diffusers) -> NHWC (ours). */
function nhwc(a: NamedArray): tf.Tensor4D {
  return tf.tidy(() => tf.tensor4d(a.data, a.shape as [number, number, number, number]).transpose([0, 2, 3, 1]) as tf.Tensor4D);
}

function relativeError(got: tf.Tensor, want: tf.Tensor): number {
  expect(got.shape).toEqual(want.shape);
  const w = want.dataSync();
  const scale = Math.max(...Array.from(w, Math.abs));
  return maxAbsDiff(got.dataSync(), w) / scale;
}

describe.skipIf(CASES.length === 0)('U-Net and VAE against diffusers (tests/fixtures/diffusers/pipelines)', () => {
  for (const name of CASES) {
    const dir = path.join(FIXTURES, name);
    const ref = () => readSafetensors(path.join(dir, 'reference.safetensors')).tensors;
    const info = () => JSON.parse(readFileSync(path.join(dir, 'reference.json'), 'utf8'));

    it(`${name}: the U-Net's noise prediction equals diffusers'; saved by us, it loads back the same`, async () => {
      const r = ref();
      const before = tf.memory().numTensors;
      const unet = UNet2DCondition.load(path.join(dir, 'unet'));
      const ctx = r.get('unet.encoder_hidden_states')!;
      const sample = nhwc(r.get('unet.sample')!);
      const t = tf.tensor1d(info().unet.timesteps as number[]);
      const context = tf.tensor3d(ctx.data, ctx.shape as [number, number, number]);
      const want = nhwc(r.get('unet.out')!);
      const eps = unet.apply(sample, t, context);
      expect(relativeError(eps, want)).toBeLessThan(TOLERANCE);

      const out = path.join(tmp, name, 'unet');
      await unet.save(out);
      const again = UNet2DCondition.load(out);
      const eps2 = again.apply(sample, t, context);
      expect(maxAbsDiff(eps2.dataSync(), eps.dataSync())).toBe(0);
      tf.dispose([sample, t, context, want, eps, eps2]);
      unet.dispose();
      again.dispose();
      expect(tf.memory().numTensors).toBe(before);
    });

    it.skipIf(!ref().has('vae.encode.image'))(`${name}: the VAE's encode (mean, logvar) and decode equal diffusers'`, () => {
      const r = ref();
      const before = tf.memory().numTensors;
      const vae = AutoencoderKL.load(path.join(dir, 'vae'));
      expect(vae.config.scalingFactor).toBe(info().vae.scalingFactor);
      const image = nhwc(r.get('vae.encode.image')!);
      const post = vae.encode(image);
      const mean = nhwc(r.get('vae.encode.mean')!);
      const logvar = nhwc(r.get('vae.encode.logvar')!);
      expect(relativeError(post.mean, mean)).toBeLessThan(TOLERANCE);
      expect(relativeError(post.logvar, logvar)).toBeLessThan(TOLERANCE);
      const latents = nhwc(r.get('vae.decode.latents')!);
      const decoded = vae.decode(latents);
      const want = nhwc(r.get('vae.decode.out')!);
      expect(relativeError(decoded, want)).toBeLessThan(TOLERANCE);
      tf.dispose([image, mean, logvar, latents, decoded, want]);
      post.dispose();
      vae.dispose();
      expect(tf.memory().numTensors).toBe(before);
    });
  }
});
