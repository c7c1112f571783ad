/**
 * Blocks shared by the VAE and the U-Net, built from the layers in ./layers.ts. NHWC throughout.
 *
 * The shapes follow Stable Diffusion (Rombach et al. 2022) as written plainly in
 * ../shared/bench/peer_torch.py: a ResBlock is (GroupNorm, SiLU, conv3x3) twice with an
 * optional time-embedding add and a 1x1 shortcut when the channels change; Downsample is a
 * stride-2 conv3x3, padded 1 on every side (the U-Net's, PyTorch's `padding=1`) or 1 on the bottom
 * and right only (the VAE encoder's in diffusers); Upsample is nearest-2x then conv3x3; SpatialTransformer is SD's Transformer2DModel with one BasicTransformerBlock.
 *
 * Parameter names below the block's own name are PyTorch-like (`conv1`, `time_proj`, `attn2.to_k`,
 * `ff.proj`, `proj_out`), so a checkpoint lists as readably as a diffusers state dict.
 */
import * as tf from '@tensorflow/tfjs';
import type { Generator } from '../random/generator.js';
import { Conv2d, type GeluApproximation, GroupNorm, LayerNorm, Linear, attendHeads, gelu, mergeHeads, silu, splitHeads, upsampleNearest2x } from './layers.js';
import type { ParamStore } from './params.js';

/** A 1x1 convolution stored as a conv weight [1, 1, in, out] but computed as one matMul. */
export class Conv1x1 {
  readonly conv: Conv2d;

  constructor(
    store: ParamStore,
    name: string,
    readonly inChannels: number,
    readonly outChannels: number,
    rng: Generator,
    zeroInit = false,
  ) {
    this.conv = new Conv2d(store, name, inChannels, outChannels, 1, rng, { zeroInit });
  }

  /** x: [..., in] (channels last, any rank) -> [..., out] */
  apply(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const lead = x.shape.slice(0, -1);
      const w = this.conv.weight.reshape([this.inChannels, this.outChannels]) as tf.Tensor2D;
      let y: tf.Tensor = tf.matMul(x.reshape([-1, this.inChannels]) as tf.Tensor2D, w);
      if (this.conv.bias) y = tf.add(y, this.conv.bias);
      return y.reshape([...lead, this.outChannels]);
    });
  }
}

export interface ResBlockOptions {
  /** Width of the time embedding added after conv1 (U-Net); omit for none (VAE). */
  tembDim?: number;
  /** Zero-initialised conv2, so the block starts as its shortcut (LDM's openaimodel ResBlock). */
  zeroInitConv2?: boolean;
  /** GroupNorm epsilon (PyTorch's default 1e-5). */
  eps?: number;
}

/** (GroupNorm, SiLU, conv3x3) twice; + time_proj(silu(temb)) after conv1; 1x1 shortcut if cin != cout. */
export class ResBlock {
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly timeProj?: Linear;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  readonly shortcut?: Conv1x1;

  constructor(
    store: ParamStore,
    name: string,
    readonly inChannels: number,
    readonly outChannels: number,
    groups: number,
    rng: Generator,
    opts: ResBlockOptions = {},
  ) {
    const eps = opts.eps ?? 1e-5;
    this.norm1 = new GroupNorm(store, `${name}.norm1`, groups, inChannels, rng, eps);
    this.conv1 = new Conv2d(store, `${name}.conv1`, inChannels, outChannels, 3, rng);
    if (opts.tembDim !== undefined) this.timeProj = new Linear(store, `${name}.time_proj`, opts.tembDim, outChannels, rng);
    this.norm2 = new GroupNorm(store, `${name}.norm2`, groups, outChannels, rng, eps);
    this.conv2 = new Conv2d(store, `${name}.conv2`, outChannels, outChannels, 3, rng, { zeroInit: opts.zeroInitConv2 ?? false });
    if (inChannels !== outChannels) this.shortcut = new Conv1x1(store, `${name}.shortcut`, inChannels, outChannels, rng);
  }

  /**
   * x: [B, H, W, Cin] -> [B, H, W, Cout]. tembAct: silu(time embedding) [B, tembDim], computed
   * once per forward by the caller (every ResBlock of the U-Net applies SiLU to the same tensor).
   */
  apply(x: tf.Tensor4D, tembAct?: tf.Tensor2D): tf.Tensor4D {
    return tf.tidy(() => {
      let h = this.conv1.apply(silu(this.norm1.apply(x)) as tf.Tensor4D); // [B, H, W, Cout]
      if (this.timeProj) {
        if (!tembAct) throw new Error('ResBlock: this block takes a time embedding, none was given');
        const [b] = tembAct.shape;
        h = tf.add(h, this.timeProj.apply(tembAct).reshape([b, 1, 1, this.outChannels])) as tf.Tensor4D;
      }
      h = this.conv2.apply(silu(this.norm2.apply(h)) as tf.Tensor4D);
      const skip = this.shortcut ? (this.shortcut.apply(x) as tf.Tensor4D) : x;
      return tf.add(skip, h) as tf.Tensor4D;
    });
  }
}

/**
 * Where a stride-2 Downsample pads: 'symmetric' = 1 on every side (PyTorch
 * `Conv2d(c, c, 3, stride=2, padding=1)`, diffusers' U-Net), 'bottom-right' = 1 after the last
 * row and column only (diffusers' VAE encoder: `F.pad(x, (0, 1, 0, 1))`, then `padding=0`).
 */
export type DownsamplePadding = 'symmetric' | 'bottom-right';

/** conv3x3, stride 2, padded as `padding` says. */
export class Downsample {
  readonly conv: Conv2d;

  constructor(
    store: ParamStore,
    name: string,
    readonly channels: number,
    rng: Generator,
    readonly padding: DownsamplePadding = 'symmetric',
  ) {
    this.conv = new Conv2d(store, `${name}.conv`, channels, channels, 3, rng, { stride: 2 });
  }

  /** x: [B, H, W, C] (H, W even) -> [B, H/2, W/2, C] */
  apply(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      const w = this.conv.weight as tf.Tensor4D;
      const y =
        this.padding === 'symmetric'
          ? tf.conv2d(x, w, 2, 1)
          : tf.conv2d(
              tf.pad(x, [
                [0, 0],
                [0, 1],
                [0, 1],
                [0, 0],
              ]),
              w,
              2,
              'valid',
            );
      return tf.add(y, this.conv.bias!) as tf.Tensor4D;
    });
  }
}

/** Nearest-neighbour 2x, then conv3x3. */
export class Upsample {
  readonly conv: Conv2d;

  constructor(
    store: ParamStore,
    name: string,
    readonly channels: number,
    rng: Generator,
  ) {
    this.conv = new Conv2d(store, `${name}.conv`, channels, channels, 3, rng);
  }

  /** x: [B, H, W, C] -> [B, 2H, 2W, C] */
  apply(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => this.conv.apply(upsampleNearest2x(x)));
  }
}

/**
 * Keys and values of one attention layer for a given context, split into heads:
 * [B * heads, T, dim / heads] each (see splitHeads).
 */
export interface KeyValue {
  k: tf.Tensor3D;
  v: tf.Tensor3D;
}

export interface AttentionOptions {
  /** Width of the context keys and values come from (cross-attention); default dim (self). */
  contextDim?: number;
  /** Bias on to_q/to_k/to_v (SD's U-Net: none; SD's VAE attention: yes). to_out always has one. */
  qkvBias?: boolean;
}

/** Multi-head attention; to_q / to_k / to_v / to_out as in diffusers' Attention. */
export class Attention {
  readonly toQ: Linear;
  readonly toK: Linear;
  readonly toV: Linear;
  readonly toOut: Linear;

  constructor(
    store: ParamStore,
    name: string,
    readonly dim: number,
    readonly heads: number,
    rng: Generator,
    opts: AttentionOptions = {},
  ) {
    if (!Number.isInteger(heads) || heads < 1 || dim % heads !== 0) {
      throw new Error(`${name}: attention heads must be a positive integer dividing the width ${dim}, got ${heads}`);
    }
    const cdim = opts.contextDim ?? dim;
    const bias = opts.qkvBias ?? false;
    this.toQ = new Linear(store, `${name}.to_q`, dim, dim, rng, { bias });
    this.toK = new Linear(store, `${name}.to_k`, cdim, dim, rng, { bias });
    this.toV = new Linear(store, `${name}.to_v`, cdim, dim, rng, { bias });
    this.toOut = new Linear(store, `${name}.to_out`, dim, dim, rng);
  }

  /** context: [B, T, contextDim] -> { k, v }: [B * heads, T, dim / heads] each. */
  projectKV(context: tf.Tensor3D): KeyValue {
    return tf.tidy(() => ({
      k: splitHeads(this.toK.apply(context) as tf.Tensor3D, this.heads),
      v: splitHeads(this.toV.apply(context) as tf.Tensor3D, this.heads),
    }));
  }

  /**
   * x: [B, N, dim] -> [B, N, dim]. Keys/values from `source`: precomputed (projectKV), or a
   * context to project, or (undefined) x itself: self-attention. mask: [B, T], 1 = attend.
   */
  apply(x: tf.Tensor3D, source?: { context: tf.Tensor3D } | KeyValue, mask?: tf.Tensor2D): tf.Tensor3D {
    return tf.tidy(() => {
      const qh = splitHeads(this.toQ.apply(x) as tf.Tensor3D, this.heads); // [B*h, N, d]
      const kv = source === undefined ? this.projectKV(x) : 'context' in source ? this.projectKV(source.context) : source;
      const out = mergeHeads(attendHeads(qh, kv.k, kv.v, this.heads, mask), this.heads); // [B, N, dim]
      return this.toOut.apply(out) as tf.Tensor3D;
    });
  }
}

/** GEGLU feed-forward (Shazeer 2020): proj to 2 * mult * C, h * gelu(gate), out to C. */
export class GEGLU {
  readonly proj: Linear;
  readonly out: Linear;

  constructor(
    store: ParamStore,
    name: string,
    readonly dim: number,
    rng: Generator,
    readonly mult = 4,
    /** diffusers' GEGLU uses the exact GELU ('none'); 'tanh' for models saved before (legacy). */
    readonly approximate: GeluApproximation = 'none',
  ) {
    this.proj = new Linear(store, `${name}.proj`, dim, 2 * mult * dim, rng);
    this.out = new Linear(store, `${name}.out`, mult * dim, dim, rng);
  }

  /** x: [..., C] -> [..., C] */
  apply(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const [h, gate] = tf.split(this.proj.apply(x), 2, -1); // [..., 4C] each
      return this.out.apply(tf.mul(h, gelu(gate, this.approximate)));
    });
  }
}

/** Where a transformer's cross-attention gets its keys and values. */
export type CrossSource = { context: tf.Tensor3D } | KeyValue;

/**
 * SD's Transformer2DModel with one BasicTransformerBlock: GroupNorm (eps 1e-6), 1x1 proj_in;
 * LayerNorm (eps 1e-5) + self-attention, LayerNorm + cross-attention, LayerNorm + GEGLU (each
 * residual); 1x1 proj_out (zero-initialised, so the block starts as the identity); residual to
 * the input. proj_in / proj_out are per-pixel linear maps either way: diffusers' conv 1x1 (SD-1)
 * and Linear (use_linear_projection, SD-2) differ only in the file's weight layout.
 */
export class SpatialTransformer {
  readonly norm: GroupNorm;
  readonly projIn: Conv1x1;
  readonly norm1: LayerNorm;
  readonly attn1: Attention;
  readonly norm2: LayerNorm;
  readonly attn2: Attention;
  readonly norm3: LayerNorm;
  readonly ff: GEGLU;
  readonly projOut: Conv1x1;

  constructor(
    store: ParamStore,
    readonly name: string,
    readonly channels: number,
    heads: number,
    contextDim: number,
    groups: number,
    rng: Generator,
    approximate: GeluApproximation = 'none',
  ) {
    const c = channels;
    this.norm = new GroupNorm(store, `${name}.norm`, groups, c, rng, 1e-6);
    this.projIn = new Conv1x1(store, `${name}.proj_in`, c, c, rng);
    this.norm1 = new LayerNorm(store, `${name}.norm1`, c, rng);
    this.attn1 = new Attention(store, `${name}.attn1`, c, heads, rng);
    this.norm2 = new LayerNorm(store, `${name}.norm2`, c, rng);
    this.attn2 = new Attention(store, `${name}.attn2`, c, heads, rng, { contextDim });
    this.norm3 = new LayerNorm(store, `${name}.norm3`, c, rng);
    this.ff = new GEGLU(store, `${name}.ff`, c, rng, 4, approximate);
    this.projOut = new Conv1x1(store, `${name}.proj_out`, c, c, rng, true);
  }

  /** Cross-attention keys and values for a context [B, T, contextDim] (reusable across calls). */
  projectContext(context: tf.Tensor3D): KeyValue {
    return this.attn2.projectKV(context);
  }

  /** x: [B, H, W, C] -> [B, H, W, C]; cross: the context or its precomputed K/V; mask [B, T]. */
  apply(x: tf.Tensor4D, cross: CrossSource, mask?: tf.Tensor2D): tf.Tensor4D {
    return tf.tidy(() => {
      const [b, hgt, wid, c] = x.shape;
      let h = this.projIn.apply(this.norm.apply(x)).reshape([b, hgt * wid, c]) as tf.Tensor3D; // [B, HW, C]
      h = tf.add(h, this.attn1.apply(this.norm1.apply(h) as tf.Tensor3D));
      h = tf.add(h, this.attn2.apply(this.norm2.apply(h) as tf.Tensor3D, cross, mask));
      h = tf.add(h, this.ff.apply(this.norm3.apply(h)));
      return tf.add(x, this.projOut.apply(h).reshape([b, hgt, wid, c])) as tf.Tensor4D;
    });
  }
}

/**
 * Self-attention over the pixels of a feature map with a GroupNorm in front and a residual
 * around it (the mid-block attention of SD's AutoencoderKL: one head, biased projections).
 */
export class SpatialSelfAttention {
  readonly norm: GroupNorm;
  readonly attn: Attention;

  constructor(
    store: ParamStore,
    name: string,
    readonly channels: number,
    groups: number,
    rng: Generator,
    heads = 1,
    eps = 1e-6,
  ) {
    this.norm = new GroupNorm(store, `${name}.norm`, groups, channels, rng, eps);
    this.attn = new Attention(store, name, channels, heads, rng, { qkvBias: true }); // `${name}.to_q`, ...
  }

  /** x: [B, H, W, C] -> [B, H, W, C] */
  apply(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      const [b, hgt, wid, c] = x.shape;
      const h = this.norm.apply(x).reshape([b, hgt * wid, c]) as tf.Tensor3D;
      return tf.add(x, this.attn.apply(h).reshape([b, hgt, wid, c])) as tf.Tensor4D;
    });
  }
}
