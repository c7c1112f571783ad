import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { WEIGHTS_NAME, readSafetensors } from '../../src/checkpoint/io.js';
import { computeGradients, disposeGrads } from '../../src/nn/params.js';
import { AdamW } from '../../src/optim/adamw.js';
import { Generator } from '../../src/random/generator.js';
import { AutoencoderKL, DiagonalGaussian, LOGVAR_MAX, measureScalingFactor } from '../../src/vae/autoencoder-kl.js';
import { vaeFromLegacy } from '../../src/vae/legacy.js';
import { type VaeConfigInput, parseVaeConfig, vaeConfigFromLdmSmall, vaeConfigToJSON } from '../../src/vae/config.js';
import { PEER_VAE_CONFIG, peerVaeInputs, perturbParams } from '../unet/peer-fixture.js';
import { LDM_SMALL as LDM_SMALL_FILE, maxAbsDiff } from '../helpers.js';

const BACKEND = 'wasm';
const LDM_SMALL = JSON.parse(readFileSync(LDM_SMALL_FILE, 'utf8'));
const PEER = JSON.parse(readFileSync(new URL('../unet/peer-fixture.json', import.meta.url), 'utf8'));

/** Tiny grayscale, factor 4. */
const TINY: VaeConfigInput = {
  imageChannels: 1,
  channels: [8, 16, 16],
  resBlocksPerLevel: 1,
  latentChannels: 4,
  downsampleFactor: 4,
  groupNormGroups: 4,
};

beforeAll(async () => {
  await initBackend({ backend: BACKEND, quiet: true });
});

function images(b: number, hw: number, c: number, seed = 1): tf.Tensor4D {
  return new Generator(seed).rand([b, hw, hw, c], -1, 1) as tf.Tensor4D;
}

/** Smooth images (random sinusoidal stripes) in [-1, 1], which a tiny VAE can learn quickly. */
function smoothImages(b: number, hw: number, c: number, seed = 1): tf.Tensor4D {
  const rng = new Generator(seed);
  const d = new Float32Array(b * hw * hw * c);
  for (let n = 0; n < b; n++)
    for (let k = 0; k < c; k++) {
      const fy = rng.uniform() * 0.5,
        fx = rng.uniform() * 0.5,
        ph = rng.uniform() * 6;
      for (let y = 0; y < hw; y++) for (let x = 0; x < hw; x++) d[((n * hw + y) * hw + x) * c + k] = 0.8 * Math.sin(fy * y + fx * x + ph);
    }
  return tf.tensor4d(d, [b, hw, hw, c]);
}

describe('AutoencoderKL config', () => {
  it("parses ldm-small.json and has exactly the PyTorch peer's parameter count", () => {
    const cfg = vaeConfigFromLdmSmall(LDM_SMALL);
    expect(cfg).toMatchObject({ imageChannels: 1, channels: [32, 64, 64], downsampleFactor: 4, midAttention: false, reconLoss: 'mse', klWeight: 1e-6 });
    const vae = AutoencoderKL.fromConfig(cfg, new Generator(0));
    // 456,489 parameters in 72 tensors: ../shared/bench/peer_torch.py's VAE(cfg["vae"], 1) built with
    // Debian's python3-torch (1.13) and counted as sum(p.numel() for p in vae.parameters()).
    expect(vae.numParams()).toBe(456_489);
    expect(vae.store.size).toBe(72);
    const names = vae.store.names();
    for (const n of [
      'encoder.conv_in.weight',
      'encoder.down.0.res.0.conv1.weight',
      'encoder.down.1.downsample.conv.weight',
      'encoder.down.1.res.0.shortcut.weight',
      'encoder.conv_out.bias',
      'decoder.conv_in.weight',
      'decoder.up.2.upsample.conv.weight',
      'decoder.up.0.res.0.norm2.weight',
      'decoder.conv_out.weight',
    ]) {
      expect(names).toContain(n);
    }
    vae.dispose();
  });

  it('round-trips through JSON (diffusers keys; legacy in ours); midAttention adds the attention', () => {
    const cfg = parseVaeConfig({ ...TINY, midAttention: true, reconLoss: 'l1', klWeight: 1e-4, scalingFactor: 0.5, postQuantConv: false });
    const json = JSON.parse(JSON.stringify(vaeConfigToJSON(cfg)));
    expect(json).toMatchObject({
      _class_name: 'AutoencoderKL',
      block_out_channels: [8, 16, 16],
      mid_block_add_attention: true,
      use_quant_conv: true,
      use_post_quant_conv: false,
      _txt2img: { reconLoss: 'l1', klWeight: 1e-4 },
    });
    expect(parseVaeConfig(json)).toEqual(cfg);
    const legacy = parseVaeConfig({ ...TINY, legacy: true });
    const legacyJson = JSON.parse(JSON.stringify(vaeConfigToJSON(legacy)));
    expect(legacyJson.channels).toEqual([8, 16, 16]);
    expect(parseVaeConfig(legacyJson)).toEqual(legacy);
    // A camelCase config.json of version 1 is legacy.
    expect(parseVaeConfig({ _class_name: 'AutoencoderKL', _version: 1, ...TINY }).legacy).toBe(true);
    const vae = new AutoencoderKL(cfg, new Generator(0));
    const names = vae.store.names();
    expect(names).toContain('encoder.mid.attn.to_q.bias');
    expect(names).toContain('decoder.mid.res.1.conv2.weight');
    expect(names).toContain('decoder.up.0.res.1.conv2.weight'); // resBlocksPerLevel + 1 in the decoder
    expect(names).toContain('quant_conv.weight');
    expect(names).not.toContain('post_quant_conv.weight');
    vae.dispose();
    // Without midAttention: diffusers' mid blocks keep their ResBlocks, legacy ones have none.
    const plain = new AutoencoderKL(TINY, new Generator(0));
    expect(plain.store.names().filter((n) => n.includes('.mid.')).length).toBeGreaterThan(0);
    expect(plain.store.names().some((n) => n.includes('.mid.attn'))).toBe(false);
    plain.dispose();
    const old = new AutoencoderKL({ ...TINY, legacy: true }, new Generator(0));
    expect(old.store.names().some((n) => n.includes('.mid.') || n.includes('quant_conv'))).toBe(false);
    old.dispose();
  });

  it('refuses a diffusers key it cannot represent, naming the key and the value', () => {
    const base = vaeConfigToJSON(parseVaeConfig({ ...TINY, imageChannels: 3 }));
    const bad = (patch: Record<string, unknown>) => () => parseVaeConfig({ ...base, ...patch });
    expect(bad({ shift_factor: 0.1159 })).toThrow(/shift_factor must be null .*got 0.1159/);
    expect(bad({ latents_mean: [0, 0, 0, 0] })).toThrow(/latents_mean must be null/);
    expect(bad({ down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'AttnDownEncoderBlock2D'] })).toThrow(
      /down_block_types must be a list of 3 'DownEncoderBlock2D'.*AttnDownEncoderBlock2D/,
    );
    expect(bad({ out_channels: 1 })).toThrow(/out_channels must be equal to in_channels \(3\), got 1/);
    expect(bad({ act_fn: 'relu' })).toThrow(/act_fn must be 'silu', got "relu"/);
    expect(bad({ use_quant_conv: 'no' })).toThrow(/quantConv must be true or false, got "no"/);
    expect(bad({ norm_type: 'spatial' })).toThrow(/unknown diffusers key\(s\) 'norm_type'/);
  });

  it('rejects bad configs naming the field, the value and what is allowed', () => {
    const bad = (patch: Record<string, unknown>) => () => parseVaeConfig({ ...TINY, ...patch });
    expect(bad({ downsampleFactor: 3 })).toThrow(/downsampleFactor must be one of 1, 2, 4, 8, 16, 32, got 3/);
    expect(bad({ downsampleFactor: 8 })).toThrow(/downsampleFactor 8 needs 4 levels.*channels \[8, 16, 16\] has 3/);
    expect(bad({ imageChannels: 2 })).toThrow(/imageChannels must be one of 1, 3, got 2/);
    expect(bad({ reconLoss: 'huber' })).toThrow(/reconLoss 'huber' is unknown; allowed: mse, l1/);
    expect(bad({ groupNormGroups: 3 })).toThrow(/channels\[0\] must be divisible by groupNormGroups \(3\), got 8/);
    expect(bad({ klWeight: -1 })).toThrow(/klWeight must be a finite number >= 0, got -1/);
    expect(bad({ scalingFactor: 0 })).toThrow(/scalingFactor must be a finite number > 0, got 0/);
    expect(bad({ midAttention: 'yes' })).toThrow(/midAttention must be true or false, got "yes"/);
    expect(bad({ latentChannel: 4 })).toThrow(/unknown key\(s\) 'latentChannel'; allowed: .*latentChannels/);
    expect(bad({ _class_name: 'UNet2DCondition' })).toThrow(/_class_name must be 'AutoencoderKL'/);
    expect(() => vaeConfigFromLdmSmall({})).toThrow(/no 'vae' section/);
  });
});

describe('AutoencoderKL forward', () => {
  it('encodes and decodes with the right shapes: grayscale factor 4, RGB factor 8, with mid attention', () => {
    const cases: { cfg: VaeConfigInput; hw: number }[] = [
      { cfg: TINY, hw: 16 },
      { cfg: { ...TINY, imageChannels: 3, channels: [8, 8, 16, 16], downsampleFactor: 8, latentChannels: 3, midAttention: true }, hw: 16 },
    ];
    for (const { cfg, hw } of cases) {
      const vae = new AutoencoderKL(cfg, new Generator(2));
      const f = cfg.downsampleFactor;
      const x = images(2, hw, cfg.imageChannels ?? 1);
      const post = vae.encode(x);
      expect(post.mean.shape).toEqual([2, hw / f, hw / f, cfg.latentChannels]);
      expect(post.logvar.shape).toEqual(post.mean.shape);
      const z = post.sample(new Generator(3));
      const y = vae.decode(z);
      expect(y.shape).toEqual([2, hw, hw, cfg.imageChannels]);
      for (const t of [post.mean, post.logvar, z, y]) expect(t.dataSync().every(Number.isFinite)).toBe(true);
      // The same generator state gives the same sample; mode() is the mean.
      const z2 = post.sample(new Generator(3));
      expect(maxAbsDiff(z.dataSync(), z2.dataSync())).toBe(0);
      const m = post.mode();
      expect(maxAbsDiff(m.dataSync(), post.mean.dataSync())).toBe(0);
      tf.dispose([x, z, z2, y, m]);
      post.dispose();
      vae.dispose();
    }
  });

  it('equals the PyTorch peer (peer_torch.py) for the same weights and inputs', () => {
    const vae = new AutoencoderKL(PEER_VAE_CONFIG, new Generator(0));
    perturbParams(vae.store, 8);
    const { images: x } = peerVaeInputs();
    const post = vae.encode(x);
    const dec = vae.decode(post.mean);
    expect(maxAbsDiff(post.mean.dataSync(), PEER.mean.data)).toBeLessThan(1e-4);
    expect(maxAbsDiff(post.logvar.dataSync(), PEER.logvar.data)).toBeLessThan(1e-4);
    expect(dec.shape).toEqual(PEER.decoded.shape);
    expect(maxAbsDiff(dec.dataSync(), PEER.decoded.data)).toBeLessThan(1e-4);
    tf.dispose([x, dec]);
    post.dispose();
    vae.dispose();
  });

  it('clamps logvar to [-30, 20] and computes the KL of a diagonal Gaussian', () => {
    const vae = new AutoencoderKL({ ...TINY, quantConv: false }, new Generator(0));
    const bias = vae.store.get('encoder.conv_out.bias');
    bias.assign(tf.tensor1d([0, 0, 0, 0, 100, 100, 100, 100]));
    const x = images(1, 16, 1);
    const post = vae.encode(x);
    expect(Math.min(...post.logvar.dataSync())).toBe(LOGVAR_MAX);
    post.dispose();

    const mean = tf.tensor4d([0.5, -1, 0, 2], [1, 1, 2, 2]);
    const logvar = tf.tensor4d([0, 1, -1, 0.5], [1, 1, 2, 2]);
    const g = new DiagonalGaussian(mean, logvar);
    const kl = g.kl();
    let expected = 0;
    [
      [0.5, 0],
      [-1, 1],
      [0, -1],
      [2, 0.5],
    ].forEach(([m, lv]) => {
      expected += 0.5 * (m * m + Math.exp(lv) - 1 - lv);
    });
    expect(kl.dataSync()[0]).toBeCloseTo(expected, 5);
    tf.dispose([x, kl]);
    g.dispose();
    vae.dispose();
  });

  it('measures the scaling factor as 1 / std of the latents; encodeLatents / decodeLatents apply it', async () => {
    const vae = new AutoencoderKL(TINY, new Generator(4));
    const a = images(3, 16, 1, 5);
    const b = images(2, 16, 1, 6);
    // Reference: the std of all latent means of both batches, computed here.
    const vals: number[] = [];
    for (const x of [a, b]) {
      const p = vae.encode(x);
      vals.push(...p.mean.dataSync());
      p.dispose();
    }
    const mu = vals.reduce((s, v) => s + v, 0) / vals.length;
    const std = Math.sqrt(vals.reduce((s, v) => s + (v - mu) ** 2, 0) / (vals.length - 1));
    const f = await measureScalingFactor(vae, [a, b]);
    expect(f).toBeCloseTo(1 / std, 4);
    const fAsync = await measureScalingFactor(
      vae,
      (async function* () {
        yield a;
        yield b;
      })(),
    );
    expect(fAsync).toBeCloseTo(f, 6);
    const fSampled = await measureScalingFactor(vae, a, { rng: new Generator(1) });
    expect(Number.isFinite(fSampled) && fSampled > 0).toBe(true);

    vae.setScalingFactor(f);
    expect(vae.config.scalingFactor).toBe(f);
    expect(() => vae.setScalingFactor(-1)).toThrow(/scalingFactor must be a finite number > 0, got -1/);
    const z = vae.encodeLatents(a);
    const p = vae.encode(a);
    expect(maxAbsDiff(z.dataSync(), p.mean.mul(f).dataSync())).toBeLessThan(1e-5);
    const y1 = vae.decodeLatents(z);
    const y2 = vae.decode(p.mean);
    expect(maxAbsDiff(y1.dataSync(), y2.dataSync())).toBeLessThan(1e-4);
    tf.dispose([a, b, z, y1, y2]);
    p.dispose();
    vae.dispose();
  });
});

describe('AutoencoderKL training', () => {
  for (const reconLoss of ['mse', 'l1'] as const) {
    it(`AdamW steps on a fixed batch reduce the loss (${reconLoss}), without leaking tensors`, () => {
      const vae = new AutoencoderKL({ ...TINY, imageChannels: 3, reconLoss, klWeight: 1e-3 }, new Generator(7));
      const opt = new AdamW(vae.store, { lr: 3e-3, weightDecay: 0 });
      const x = smoothImages(2, 16, 3, 8);
      const step = (seed: number) => {
        let parts: { recon: tf.Scalar; kl: tf.Scalar } | undefined;
        const { loss, grads } = computeGradients(vae.store, () => {
          const l = vae.lossFn(x, new Generator(seed));
          parts = { recon: tf.keep(l.recon), kl: tf.keep(l.kl) };
          return l.loss;
        });
        opt.step(grads);
        const out = { loss: loss.dataSync()[0], recon: parts!.recon.dataSync()[0], kl: parts!.kl.dataSync()[0] };
        tf.dispose([loss, parts!.recon, parts!.kl]);
        disposeGrads(grads);
        return out;
      };
      const first = step(100);
      expect(first.loss).toBeCloseTo(first.recon + 1e-3 * first.kl, 4);
      const afterFirst = tf.memory().numTensors;
      let last = first;
      for (let i = 1; i < 8; i++) last = step(100 + i);
      expect(tf.memory().numTensors).toBe(afterFirst);
      expect(Number.isFinite(last.loss)).toBe(true);
      expect(last.loss).toBeLessThan(first.loss * 0.9);

      const before = tf.memory().numTensors;
      for (let i = 0; i < 3; i++) {
        const l = vae.lossFn(x, new Generator(i));
        tf.dispose([l.loss, l.recon, l.kl]);
        const p = vae.encode(x);
        tf.dispose(vae.decode(p.mean));
        p.dispose();
      }
      expect(tf.memory().numTensors).toBe(before);
      opt.dispose();
      x.dispose();
      vae.dispose();
    });
  }
});

describe('AutoencoderKL save / load', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'vae-test-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('round-trips config (scaling factor included) and weights', async () => {
    const vae = new AutoencoderKL(TINY, new Generator(2));
    vae.setScalingFactor(0.4321);
    await vae.save(path.join(dir, 'vae'));
    const loaded = AutoencoderKL.load(path.join(dir, 'vae'));
    expect(loaded.config).toEqual(vae.config);
    const x = images(1, 16, 1);
    const a = vae.encodeLatents(x);
    const b = loaded.encodeLatents(x);
    expect(maxAbsDiff(a.dataSync(), b.dataSync())).toBe(0);
    tf.dispose([a, b, x]);
    loaded.dispose();
    vae.dispose();
  });

  it("writes diffusers' keys in PyTorch's layout; a legacy VAE in our own names, and both load back", async () => {
    const vae = new AutoencoderKL({ ...TINY, midAttention: true }, new Generator(2));
    await vae.save(path.join(dir, 'diffusers'));
    const { tensors } = readSafetensors(path.join(dir, 'diffusers', WEIGHTS_NAME));
    expect(tensors.size).toBe(vae.store.size);
    expect(tensors.get('quant_conv.weight')?.shape).toEqual([8, 8, 1, 1]);
    expect(tensors.get('post_quant_conv.weight')?.shape).toEqual([4, 4, 1, 1]);
    expect(tensors.get('encoder.mid_block.attentions.0.group_norm.weight')?.shape).toEqual([16]);
    expect(tensors.get('decoder.mid_block.attentions.0.to_out.0.weight')?.shape).toEqual([16, 16]);
    expect(tensors.get('encoder.down_blocks.1.downsamplers.0.conv.weight')?.shape).toEqual([16, 16, 3, 3]);
    expect(tensors.get('encoder.down_blocks.1.resnets.0.conv_shortcut.weight')?.shape).toEqual([16, 8, 1, 1]);
    // Decoder blocks deepest first, resBlocksPerLevel + 1 ResBlocks each; level 0 has no upsampler.
    expect(tensors.get('decoder.up_blocks.2.resnets.1.conv1.weight')?.shape).toEqual([8, 8, 3, 3]);
    expect(tensors.get('decoder.up_blocks.0.upsamplers.0.conv.weight')?.shape).toEqual([16, 16, 3, 3]);
    expect(tensors.has('decoder.up_blocks.2.upsamplers.0.conv.weight')).toBe(false);
    vae.dispose();

    const legacy = new AutoencoderKL({ ...TINY, legacy: true }, new Generator(3));
    await legacy.save(path.join(dir, 'legacy'));
    expect(readSafetensors(path.join(dir, 'legacy', WEIGHTS_NAME)).tensors.has('decoder.up.0.res.0.conv1.weight')).toBe(true);
    const loaded = AutoencoderKL.load(path.join(dir, 'legacy'));
    expect(loaded.config).toEqual(legacy.config);
    const x = images(1, 16, 1);
    const a = legacy.encodeLatents(x);
    const b = loaded.encodeLatents(x);
    expect(maxAbsDiff(a.dataSync(), b.dataSync())).toBe(0);
    tf.dispose([a, b, x]);
    loaded.dispose();
    legacy.dispose();
  });

  it("vaeFromLegacy gives diffusers' architecture with the legacy decoder's output (identity blocks added)", () => {
    const legacy = new AutoencoderKL({ ...TINY, imageChannels: 3, legacy: true }, new Generator(5));
    perturbParams(legacy.store, 6);
    const vae = vaeFromLegacy(legacy);
    expect(vae.config).toMatchObject({ legacy: false, quantConv: false, postQuantConv: false, midAttention: false });
    expect(vae.store.size).toBeGreaterThan(legacy.store.size);
    expect(maxAbsDiff(vae.store.get('decoder.up.0.res.1.conv2.weight').dataSync(), new Float32Array(8 * 8 * 9))).toBe(0);
    const z = new Generator(7).randn([1, 4, 4, 4]) as tf.Tensor4D;
    const a = legacy.decode(z);
    const b = vae.decode(z);
    // Only GroupNorm's eps differs (1e-5 -> 1e-6).
    const scale = Math.max(...Array.from(a.dataSync(), Math.abs));
    expect(maxAbsDiff(a.dataSync(), b.dataSync()) / scale).toBeLessThan(1e-3);
    expect(() => vaeFromLegacy(vae)).toThrow(/not legacy/);
    tf.dispose([z, a, b]);
    vae.dispose();
    legacy.dispose();
  });
});
