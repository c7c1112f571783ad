import * as tf from '@tensorflow/tfjs';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { WEIGHTS_NAME, readSafetensors, writeSafetensors } from '../../src/checkpoint/io.js';
import { computeGradients, disposeGrads } from '../../src/nn/params.js';
import { AdamW } from '../../src/optim/adamw.js';
import { Generator } from '../../src/random/generator.js';
import { type UNetConfigInput, parseUNetConfig, unetConfigFromLdmSmall, unetConfigToJSON } from '../../src/unet/config.js';
import { unetFromLegacy } from '../../src/unet/legacy.js';
import { UNet2DCondition } from '../../src/unet/unet2d-condition.js';
import { PEER_UNET_CONFIG, peerUNetInputs, perturbParams } from './peer-fixture.js';
import { LDM_SMALL as LDM_SMALL_FILE, maxAbsDiff } from '../helpers.js';

const BACKEND = 'wasm';
const LDM_SMALL = JSON.parse(readFileSync(LDM_SMALL_FILE, 'utf8'));
const PEER = JSON.parse(readFileSync(new URL('./peer-fixture.json', import.meta.url), 'utf8'));

/** Tiny: two levels (factor 2), attention on the deeper one only (the config the peer fixture uses). */
const TINY: UNetConfigInput = PEER_UNET_CONFIG;

beforeAll(async () => {
  await initBackend({ backend: BACKEND, quiet: true });
});

function inputs(cfg: UNetConfigInput, b: number, hw: number, t = 5, seed = 1) {
  const rng = new Generator(seed);
  return {
    sample: rng.randn([b, hw, hw, cfg.inChannels]) as tf.Tensor4D,
    timesteps: tf.tensor1d(
      Array.from({ length: b }, (_, i) => (i * 137 + 11) % 1000),
      'int32',
    ),
    context: rng.randn([b, t, cfg.contextDim]) as tf.Tensor3D,
  };
}

describe('UNet2DCondition config', () => {
  it("parses ldm-small.json and has exactly the PyTorch peer's parameter count", () => {
    const cfg = unetConfigFromLdmSmall(LDM_SMALL);
    expect(cfg.channels).toEqual([64, 128]);
    expect(cfg._class_name).toBe('UNet2DCondition');
    const unet = UNet2DCondition.fromConfig(cfg, new Generator(0));
    // 7,108,292 parameters in 434 tensors: ../shared/bench/peer_torch.py's UNet(cfg["unet"]) built
    // with Debian's python3-torch (1.13) and counted as sum(p.numel() for p in unet.parameters()).
    expect(unet.numParams()).toBe(7_108_292);
    expect(unet.store.size).toBe(434);
    const names = unet.store.names();
    for (const n of [
      'time_embed.linear_1.weight',
      'conv_in.weight',
      'down.0.res.1.conv1.weight',
      'down.0.downsample.conv.weight',
      'down.1.attn.0.attn2.to_k.weight',
      'mid.attn.attn2.to_k.weight',
      'mid.res.1.time_proj.bias',
      'up.1.res.2.shortcut.weight',
      'up.1.upsample.conv.weight',
      'up.0.attn.2.ff.proj.weight',
      'norm_out.weight',
      'conv_out.bias',
    ]) {
      expect(names).toContain(n);
    }
    expect(names.some((n) => /to_[qkv]\.bias$/.test(n))).toBe(false); // q/k/v without bias, as the peer
    unet.dispose();
  });

  it("round-trips through JSON in diffusers' keys", () => {
    for (const c of [TINY, { ...TINY, attentionHeads: [2, 4], linearProjection: true, flipSinToCos: false, freqShift: 1, normEps: 1e-6, legacy: true }]) {
      const cfg = parseUNetConfig(c);
      const json = JSON.parse(JSON.stringify(unetConfigToJSON(cfg)));
      expect(parseUNetConfig(json)).toEqual(cfg);
      expect(json).toMatchObject({
        _class_name: 'UNet2DConditionModel',
        block_out_channels: [8, 16],
        layers_per_block: 1,
        cross_attention_dim: cfg.contextDim,
      });
      expect(json.down_block_types).toEqual(['DownBlock2D', 'CrossAttnDownBlock2D']);
      expect(json.up_block_types).toEqual(['CrossAttnUpBlock2D', 'UpBlock2D']);
    }
  });

  it("reads a camelCase config.json of version 1 as legacy (the tanh GELU), and diffusers' defaults for keys left out", () => {
    const { legacy: _, ...fresh } = TINY;
    expect(parseUNetConfig({ _class_name: 'UNet2DCondition', _version: 1, ...fresh }).legacy).toBe(true);
    expect(parseUNetConfig(fresh).legacy).toBe(false);
    const d = parseUNetConfig({
      _class_name: 'UNet2DConditionModel',
      block_out_channels: [32, 64],
      down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'],
      up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
      sample_size: 32,
    });
    expect(d).toMatchObject({
      inChannels: 4,
      channels: [32, 64],
      attentionLevels: [true, false],
      resBlocksPerLevel: 2,
      attentionHeads: 8,
      contextDim: 1280,
      timeEmbedDim: 128,
      groupNormGroups: 32,
      normEps: 1e-5,
      legacy: false,
    });
  });

  it('refuses a diffusers key it cannot represent, naming the key and the value', () => {
    const base = unetConfigToJSON(parseUNetConfig(TINY));
    const bad = (patch: Record<string, unknown>) => () => parseUNetConfig({ ...base, ...patch });
    expect(bad({ class_embed_type: 'timestep' })).toThrow(/class_embed_type must be null .*got "timestep"/);
    expect(bad({ transformer_layers_per_block: 2 })).toThrow(/transformer_layers_per_block must be 1 .*got 2/);
    expect(bad({ num_attention_heads: 4 })).toThrow(/num_attention_heads must be null .*got 4/);
    expect(bad({ up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'] })).toThrow(
      /up_block_types\[0\] must be 'CrossAttnUpBlock2D' \(the up blocks mirror down_block_types\), got "UpBlock2D"/,
    );
    expect(bad({ down_block_types: ['DownBlock2D', 'SimpleCrossAttnDownBlock2D'] })).toThrow(
      /down_block_types\[1\] must be 'CrossAttnDownBlock2D' or 'DownBlock2D', got "SimpleCrossAttnDownBlock2D"/,
    );
    expect(bad({ layers_per_block: [1, 2] })).toThrow(/layers_per_block must be the same for every block/);
    expect(bad({ addition_embed_type: 'text_time' })).toThrow(/addition_embed_type must be null/);
    expect(bad({ mid_block_type: null })).toThrow(/mid_block_type must be 'UNetMidBlock2DCrossAttn', got null/);
    expect(bad({ attention_head_dim: 3 })).toThrow(/attentionHeads must be a divisor of channels\[1\] \(16\), got 3/);
    expect(bad({ some_new_key: 1 })).toThrow(/unknown diffusers key\(s\) 'some_new_key'/);
    expect(bad({ _txt2img: { contextLen: 5 } })).toThrow(/unknown key\(s\) '_txt2img.contextLen'/);
  });

  it('rejects bad configs naming the field, the value and what is allowed', () => {
    const bad = (patch: Record<string, unknown>) => () => parseUNetConfig({ ...TINY, ...patch });
    expect(bad({ channels: [8, 18] })).toThrow(/channels\[1\] must be divisible by groupNormGroups \(4\), got 18/);
    expect(bad({ attentionLevels: [true] })).toThrow(/attentionLevels must be an array of 2 booleans.*got \[true\]/);
    expect(bad({ attentionHeads: 3 })).toThrow(/attentionHeads must be a divisor of channels\[1\] \(16\), got 3/);
    expect(bad({ sampleSize: 7 })).toThrow(/sampleSize must be divisible by 2.*got 7/);
    expect(bad({ feedForward: 'swiglu' })).toThrow(/feedForward 'swiglu' is unknown; allowed: geglu/);
    expect(bad({ activation: 'relu' })).toThrow(/activation 'relu' is unknown; allowed: silu/);
    expect(bad({ resBlocksPerLevel: 0 })).toThrow(/resBlocksPerLevel must be an integer from 1 to 16, got 0/);
    expect(bad({ contextDim: 1.5 })).toThrow(/contextDim must be an integer.*got 1.5/);
    expect(bad({ channels: [7, 16], groupNormGroups: 1 })).toThrow(/channels\[0\] must be even.*got 7/);
    expect(bad({ chanels: [8, 16] })).toThrow(/unknown key\(s\) 'chanels'; allowed: .*channels/);
    expect(bad({ _version: 3 })).toThrow(/_version must be at most 2.*got 3/);
    expect(bad({ _class_name: 'AutoencoderKL' })).toThrow(/_class_name must be 'UNet2DCondition', got "AutoencoderKL"/);
    const { timeEmbedDim: _, ...missing } = TINY;
    expect(() => parseUNetConfig(missing)).toThrow(/missing key\(s\) 'timeEmbedDim'/);
  });
});

describe('UNet2DCondition forward', () => {
  it('gives [B, h, w, C] finite outputs for factor 2 and factor 4 configs, and zeros untrained', () => {
    const configs: UNetConfigInput[] = [
      TINY,
      { ...TINY, inChannels: 3, channels: [8, 16, 16], attentionLevels: [true, false, true], resBlocksPerLevel: 2, sampleSize: 8 },
    ];
    for (const cfg of configs) {
      const unet = new UNet2DCondition(cfg, new Generator(3));
      const x = inputs(cfg, 2, 8);
      const eps = unet.apply(x.sample, x.timesteps, x.context);
      expect(eps.shape).toEqual([2, 8, 8, cfg.inChannels]);
      // conv_out is zero-initialised: an untrained U-Net predicts exactly 0.
      expect(Array.from(eps.dataSync()).every((v) => v === 0)).toBe(true);
      perturbParams(unet.store, 5);
      const eps2 = unet.apply(x.sample, x.timesteps, x.context);
      const d = eps2.dataSync();
      expect(d.every(Number.isFinite)).toBe(true);
      expect(Math.max(...Array.from(d, Math.abs))).toBeGreaterThan(1e-3);
      // Other spatial sizes divisible by the factor work too (16x8 here).
      const wide = unet.apply(new Generator(9).randn([2, 16, 8, cfg.inChannels]) as tf.Tensor4D, x.timesteps, x.context);
      expect(wide.shape).toEqual([2, 16, 8, cfg.inChannels]);
      tf.dispose([eps, eps2, wide, x.sample, x.timesteps, x.context]);
      unet.dispose();
    }
  });

  it('equals the PyTorch peer (peer_torch.py) for the same weights and inputs', () => {
    const unet = new UNet2DCondition(PEER_UNET_CONFIG, new Generator(0));
    perturbParams(unet.store, 7);
    const x = peerUNetInputs();
    const eps = unet.apply(x.sample, x.timesteps, x.context);
    expect(eps.shape).toEqual(PEER.eps.shape);
    expect(maxAbsDiff(eps.dataSync(), PEER.eps.data)).toBeLessThan(1e-4);
    tf.dispose([eps, x.sample, x.timesteps, x.context]);
    unet.dispose();
  });

  it('a precomputed context cache gives the same output as the raw context, with and without a mask', () => {
    const unet = new UNet2DCondition(TINY, new Generator(4));
    perturbParams(unet.store, 6);
    const x = inputs(TINY, 2, 8);
    const mask = tf.tensor2d([
      [1, 1, 1, 0, 0],
      [1, 1, 1, 1, 1],
    ]);

    const raw = unet.apply(x.sample, x.timesteps, x.context);
    const cache = unet.precomputeContext(x.context);
    const cached = unet.apply(x.sample, x.timesteps, cache);
    expect(maxAbsDiff(raw.dataSync(), cached.dataSync())).toBeLessThan(1e-5);

    const rawM = unet.apply(x.sample, x.timesteps, x.context, mask);
    const cacheM = unet.precomputeContext(x.context, mask);
    const cachedM = unet.apply(x.sample, x.timesteps, cacheM);
    expect(maxAbsDiff(rawM.dataSync(), cachedM.dataSync())).toBeLessThan(1e-5);
    // The mask matters, and masked tokens have no influence: change them, same output.
    expect(maxAbsDiff(raw.dataSync(), rawM.dataSync())).toBeGreaterThan(1e-4);
    const changed = tf.tidy(() => {
      const keep = mask.reshape([2, 5, 1]);
      return tf.add(tf.mul(x.context, keep), tf.mul(tf.sub(1, keep), 7)) as tf.Tensor3D;
    });
    const rawM2 = unet.apply(x.sample, x.timesteps, changed, mask);
    expect(maxAbsDiff(rawM.dataSync(), rawM2.dataSync())).toBeLessThan(1e-5);

    // One timestep for the whole batch equals it repeated.
    const t1 = tf.tensor1d([250]);
    const a = unet.apply(x.sample, t1, cache);
    const b = unet.apply(x.sample, tf.tensor1d([250, 250]), cache);
    expect(maxAbsDiff(a.dataSync(), b.dataSync())).toBeLessThan(1e-6);

    const before = tf.memory().numTensors;
    cache.dispose();
    cacheM.dispose();
    expect(tf.memory().numTensors).toBe(before - 4 * 2 * 2 - 1); // K and V of 4 transformers (down 1, mid, up 2), x2 caches, + mask
    expect(() => unet.apply(x.sample, x.timesteps, cache)).toThrow(/disposed/);
    const other = new UNet2DCondition(TINY, new Generator(4));
    const foreign = other.precomputeContext(x.context);
    expect(() => unet.apply(x.sample, x.timesteps, foreign)).toThrow(/another U-Net/);
    foreign.dispose();
    other.dispose();
    tf.dispose([raw, cached, rawM, cachedM, changed, rawM2, t1, a, b, mask, x.sample, x.timesteps, x.context]);
    unet.dispose();
  });

  it('rejects inputs of the wrong shape with clear errors', () => {
    const unet = new UNet2DCondition(TINY, new Generator(0));
    const x = inputs(TINY, 2, 8);
    const bad3 = tf.zeros([2, 8, 8, 3]) as tf.Tensor4D;
    const odd = tf.zeros([2, 7, 8, 4]) as tf.Tensor4D;
    const ctx = tf.zeros([2, 5, 10]) as tf.Tensor3D;
    const ctx1 = tf.zeros([1, 5, 12]) as tf.Tensor3D;
    const t3 = tf.zeros([3]) as tf.Tensor1D;
    const mask = tf.ones([2, 4]) as tf.Tensor2D;
    expect(() => unet.apply(bad3, x.timesteps, x.context)).toThrow(/sample must be \[B, h, w, 4\] \(inChannels\), got \[2, 8, 8, 3\]/);
    expect(() => unet.apply(odd, x.timesteps, x.context)).toThrow(/divisible by 2.*got 7x8/);
    expect(() => unet.apply(x.sample, x.timesteps, ctx)).toThrow(/context must be \[B, T, 12\] \(contextDim\), got \[2, 5, 10\]/);
    expect(() => unet.apply(x.sample, x.timesteps, ctx1)).toThrow(/context has batch 1, the sample has 2/);
    expect(() => unet.apply(x.sample, t3, x.context)).toThrow(/timesteps must be \[2\] or \[1\], got \[3\]/);
    expect(() => unet.apply(x.sample, x.timesteps, x.context, mask)).toThrow(/context mask must be \[2, 5\].*got \[2, 4\]/);
    tf.dispose([bad3, odd, ctx, ctx1, t3, mask, x.sample, x.timesteps, x.context]);
    unet.dispose();
  });
});

describe('UNet2DCondition training', () => {
  it('AdamW steps on a fixed batch reduce the epsilon MSE, without leaking tensors', () => {
    const unet = new UNet2DCondition(TINY, new Generator(11));
    const opt = new AdamW(unet.store, { lr: 3e-3, weightDecay: 0 });
    const x = inputs(TINY, 4, 8, 5, 21);
    const noise = new Generator(22).randn([4, 8, 8, 4]) as tf.Tensor4D;
    const noisy = tf.tidy(() => tf.add(tf.mul(x.sample, 0.6), tf.mul(noise, 0.8))) as tf.Tensor4D;
    const step = (): number => {
      const { loss, grads } = computeGradients(unet.store, () => tf.mean(tf.square(tf.sub(unet.apply(noisy, x.timesteps, x.context), noise))) as tf.Scalar);
      opt.step(grads);
      const v = loss.dataSync()[0];
      loss.dispose();
      disposeGrads(grads);
      return v;
    };
    const losses = [step()];
    const afterFirst = tf.memory().numTensors; // AdamW's slots now exist
    for (let i = 0; i < 7; i++) losses.push(step());
    expect(tf.memory().numTensors).toBe(afterFirst);
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(losses[losses.length - 1]).toBeLessThan(losses[0] * 0.9);

    // Forward passes (raw and cached context) leak nothing either.
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) {
      const cache = unet.precomputeContext(x.context);
      tf.dispose([unet.apply(noisy, x.timesteps, x.context), unet.apply(noisy, x.timesteps, cache)]);
      cache.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
    opt.dispose();
    tf.dispose([noise, noisy, x.sample, x.timesteps, x.context]);
    unet.dispose();
  });
});

describe('UNet2DCondition save / load', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'unet-test-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('round-trips config and weights', async () => {
    const unet = new UNet2DCondition(TINY, new Generator(2));
    perturbParams(unet.store, 3);
    await unet.save(path.join(dir, 'unet'));
    const loaded = UNet2DCondition.load(path.join(dir, 'unet'));
    expect(loaded.config).toEqual(unet.config);
    const x = inputs(TINY, 1, 8);
    const a = unet.apply(x.sample, x.timesteps, x.context);
    const b = loaded.apply(x.sample, x.timesteps, x.context);
    expect(maxAbsDiff(a.dataSync(), b.dataSync())).toBe(0);
    tf.dispose([a, b, x.sample, x.timesteps, x.context]);
    loaded.dispose();
    unet.dispose();
  });

  it("writes diffusers' keys in PyTorch's layout (linear projections as Linear); reads our old folders too", async () => {
    const cfg = { ...TINY, linearProjection: true, attentionHeads: [2, 4] };
    const unet = new UNet2DCondition(cfg, new Generator(2));
    perturbParams(unet.store, 3);
    const dir1 = path.join(dir, 'diffusers');
    await unet.save(dir1);
    const { tensors } = readSafetensors(path.join(dir1, WEIGHTS_NAME));
    const ours = await unet.store.toArrays();
    expect(tensors.size).toBe(ours.size);
    expect(tensors.get('down_blocks.1.resnets.0.conv1.weight')?.shape).toEqual([16, 8, 3, 3]); // ours [3, 3, 8, 16]
    expect(tensors.get('down_blocks.1.resnets.0.conv_shortcut.weight')?.shape).toEqual([16, 8, 1, 1]);
    expect(tensors.get('time_embedding.linear_1.weight')?.shape).toEqual([16, 8]); // ours [8, 16]
    expect(tensors.get('up_blocks.0.attentions.1.proj_in.weight')?.shape).toEqual([16, 16]); // Linear (use_linear_projection)
    expect(tensors.get('mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight')?.shape).toEqual([16, 12]);
    expect(tensors.get('up_blocks.1.upsamplers.0.conv.weight')).toBeUndefined(); // level 0 has no upsampler
    expect(tensors.get('up_blocks.0.upsamplers.0.conv.weight')?.shape).toEqual([16, 16, 3, 3]);
    // One element: ours [kh, kw, in, out] = [1, 2, 3, 4] is PyTorch's [out, in, kh, kw] = [4, 3, 1, 2].
    const w = ours.get('down.1.res.0.conv1.weight')!;
    const t = tensors.get('down_blocks.1.resnets.0.conv1.weight')!;
    expect(t.data[((4 * 8 + 3) * 3 + 1) * 3 + 2]).toBe(w.data[((1 * 3 + 2) * 8 + 3) * 16 + 4]);

    // A folder as this project wrote it before: camelCase config of version 1, our names and layout.
    const dir2 = path.join(dir, 'old');
    mkdirSync(dir2, { recursive: true });
    const { legacy: _, ...fresh } = TINY;
    writeFileSync(path.join(dir2, 'config.json'), JSON.stringify({ _class_name: 'UNet2DCondition', _version: 1, ...fresh }));
    const old = new UNet2DCondition({ ...fresh, legacy: true }, new Generator(2));
    perturbParams(old.store, 4);
    writeSafetensors(path.join(dir2, WEIGHTS_NAME), await old.store.toArrays());
    const reloaded = UNet2DCondition.load(dir2);
    expect(reloaded.config.legacy).toBe(true);
    const x = inputs(TINY, 1, 8);
    const a = old.apply(x.sample, x.timesteps, x.context);
    const b = reloaded.apply(x.sample, x.timesteps, x.context);
    expect(maxAbsDiff(a.dataSync(), b.dataSync())).toBe(0);
    tf.dispose([a, b, x.sample, x.timesteps, x.context]);
    for (const m of [unet, old, reloaded]) m.dispose();
  });

  it('lists missing, unexpected and wrongly shaped diffusers keys in one error', async () => {
    const unet = new UNet2DCondition(TINY, new Generator(2));
    const d = path.join(dir, 'broken');
    await unet.save(d);
    const file = path.join(d, WEIGHTS_NAME);
    const { tensors } = readSafetensors(file);
    tensors.delete('conv_in.bias');
    tensors.set('conv_out.weight', { shape: [4, 8, 1, 1], data: new Float32Array(32) });
    tensors.set('down_blocks.0.resnets.0.extra.weight', { shape: [1], data: new Float32Array(1) });
    writeSafetensors(file, tensors);
    const before = tf.memory().numTensors;
    expect(() => UNet2DCondition.load(d)).toThrow(
      /does not match the model \(3 problem\(s\)\):\n {2}missing 'conv_in.bias' \[8\]\n {2}'conv_out.weight' has shape \[4, 8, 1, 1\], the model expects \[4, 8, 3, 3\]\n {2}unexpected 'down_blocks.0.resnets.0.extra.weight'/,
    );
    expect(tf.memory().numTensors).toBe(before);
    unet.dispose();
  });

  it('unetFromLegacy keeps the weights and switches to the exact GELU', () => {
    const legacy = new UNet2DCondition(TINY, new Generator(2));
    perturbParams(legacy.store, 3);
    const unet = unetFromLegacy(legacy);
    expect(unet.config).toEqual({ ...legacy.config, legacy: false, _version: 2 });
    const x = inputs(TINY, 1, 8);
    const a = legacy.apply(x.sample, x.timesteps, x.context);
    const b = unet.apply(x.sample, x.timesteps, x.context);
    const d = maxAbsDiff(a.dataSync(), b.dataSync()) / Math.max(...Array.from(a.dataSync(), Math.abs));
    expect(d).toBeGreaterThan(0);
    expect(d).toBeLessThan(1e-2);
    expect(() => unetFromLegacy(unet)).toThrow(/not legacy/);
    tf.dispose([a, b, x.sample, x.timesteps, x.context]);
    unet.dispose();
    legacy.dispose();
  });
});
