/**
 * The layers every model of the project is built from. NHWC throughout.
 *
 * Written around three tfjs 4.22 limitations (see src/backend): dense layers reshape to 2-D
 * before matMul (core's BatchMatMul gradient throws for 3-D x 2-D broadcasting), nearest
 * upsampling is a reshape times ones (cpu's ResizeNearestNeighborGrad is wrong for batch > 1),
 * and broadcasts stay at rank <= 4 (the tile/broadcastTo gradient supports rank <= 4 only).
 */
import * as tf from '@tensorflow/tfjs';
import type { Generator } from '../random/generator.js';
import { type ParamStore, fanInUniform, ones, zeros } from './params.js';

export interface LinearOptions {
  bias?: boolean;
  /** Zero-initialised weights (output projections that must start as identity residuals). */
  zeroInit?: boolean;
}

export class Linear {
  readonly weight: tf.Variable; // [in, out]
  readonly bias?: tf.Variable; // [out]

  constructor(
    store: ParamStore,
    name: string,
    readonly inFeatures: number,
    readonly outFeatures: number,
    rng: Generator,
    opts: LinearOptions = {},
  ) {
    const init = opts.zeroInit ? zeros : fanInUniform(inFeatures);
    this.weight = store.add(`${name}.weight`, [inFeatures, outFeatures], init, rng);
    if (opts.bias ?? true) this.bias = store.add(`${name}.bias`, [outFeatures], opts.zeroInit ? zeros : fanInUniform(inFeatures), rng);
  }

  /** x: [..., in] -> [..., out] */
  apply(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const lead = x.shape.slice(0, -1);
      const x2 = x.rank === 2 ? (x as tf.Tensor2D) : (x.reshape([-1, this.inFeatures]) as tf.Tensor2D);
      let y: tf.Tensor = tf.matMul(x2, this.weight as tf.Tensor2D);
      if (this.bias) y = tf.add(y, this.bias);
      return x.rank === 2 ? y : y.reshape([...lead, this.outFeatures]);
    });
  }
}

export interface Conv2dOptions {
  stride?: number;
  bias?: boolean;
  zeroInit?: boolean;
}

export class Conv2d {
  readonly weight: tf.Variable; // [kh, kw, in, out]
  readonly bias?: tf.Variable; // [out]
  readonly stride: number;

  constructor(
    store: ParamStore,
    name: string,
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernel: number,
    rng: Generator,
    opts: Conv2dOptions = {},
  ) {
    this.stride = opts.stride ?? 1;
    const fanIn = inChannels * kernel * kernel;
    const init = opts.zeroInit ? zeros : fanInUniform(fanIn);
    this.weight = store.add(`${name}.weight`, [kernel, kernel, inChannels, outChannels], init, rng);
    if (opts.bias ?? true) this.bias = store.add(`${name}.bias`, [outChannels], opts.zeroInit ? zeros : fanInUniform(fanIn), rng);
  }

  /**
   * x: [B, H, W, Cin] -> [B, ceil(H/s), ceil(W/s), Cout]. 'same' padding; for stride 2 on even
   * sizes tfjs pads (0, 1), the asymmetric padding of Stable Diffusion's Downsample.
   */
  apply(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      const y = tf.conv2d(x, this.weight as tf.Tensor4D, this.stride, 'same');
      return this.bias ? tf.add(y, this.bias) : y;
    });
  }
}

export class GroupNorm {
  readonly gamma: tf.Variable; // [C]
  readonly beta: tf.Variable; // [C]

  constructor(
    store: ParamStore,
    name: string,
    readonly groups: number,
    readonly channels: number,
    rng: Generator,
    readonly eps = 1e-5,
  ) {
    if (channels % groups !== 0) throw new Error(`${name}: GroupNorm needs channels (${channels}) divisible by groups (${groups})`);
    this.gamma = store.add(`${name}.weight`, [channels], ones, rng);
    this.beta = store.add(`${name}.bias`, [channels], zeros, rng);
  }

  /** x: [B, H, W, C], statistics per (sample, group) over H, W and the group's channels. */
  apply(x: tf.Tensor4D): tf.Tensor4D {
    return groupNorm(x, this.gamma, this.beta, this.groups, this.eps);
  }
}

/**
 * Group normalisation (Wu & He 2018, eq. 1-3) of x: [B, H, W, C], per (sample, group), with its
 * gradient in closed form (see layerNorm) rearranged so that no full-size x̂ is formed:
 * with per-(sample, channel) sums S1 = sum_hw dy and S2 = sum_hw dy x, and per-group statistics
 * mu, r = 1 / sigma over N = H W C/G values,
 *   sum_hw dy x̂ = (S2 - mu S1) r,   m1 = mean_group(gamma dy),   m2 = mean_group(gamma dy x̂),
 *   dx = dy (gamma r) + x (-m2 r^2) + (mu m2 r - m1) r
 * so the backward pass is one product and two spatial sums, then dx in four full-size ops (11
 * with x̂, the forward pass 6 instead of 7): GroupNorm is most of a VAE step's elementwise work.
 */
export function groupNorm(x: tf.Tensor4D, gamma: tf.Tensor, beta: tf.Tensor, groups: number, eps: number): tf.Tensor4D {
  const [b, h, w, c] = x.shape;
  const cg = c / groups;
  const statsShape = [b, h * w, groups, cg]; // statistics over axes 1 and 3
  const n = h * w * cg;
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xIn, gammaIn, betaIn, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const xr = xIn.reshape(statsShape); // [B, HW, G, C/G]
    const mean = tf.mean(xr, [1, 3], true); // [B, 1, G, 1]
    const d = tf.sub(xr, mean);
    const rstd = tf.rsqrt(tf.add(tf.mean(tf.square(d), [1, 3], true), eps)); // [B, 1, G, 1]
    const scale = tf.mul(rstd, gammaIn.reshape([groups, cg])); // [B, 1, G, C/G]
    save([xIn, mean, rstd, gammaIn]);
    const value = tf.add(tf.mul(d, scale), betaIn.reshape([groups, cg])).reshape(x.shape);
    const gradFunc = (dy: tf.Tensor, [xs, mu, r, gm]: tf.Tensor[]): tf.Tensor[] => {
      const dyr = dy.reshape(statsShape);
      const xr2 = xs.reshape(statsShape);
      const g = gm.reshape([groups, cg]);
      const s1 = tf.sum(dyr, 1, true); // [B, 1, G, C/G]
      const s2 = tf.sum(tf.mul(dyr, xr2), 1, true); // [B, 1, G, C/G]
      const sXhat = tf.mul(tf.sub(s2, tf.mul(mu, s1)), r); // [B, 1, G, C/G]: sum_hw dy x̂
      const m1 = tf.div(tf.sum(tf.mul(s1, g), 3, true), n); // [B, 1, G, 1]
      const m2 = tf.div(tf.sum(tf.mul(sXhat, g), 3, true), n); // [B, 1, G, 1]
      const dyScale = tf.mul(g, r); // [B, 1, G, C/G]
      const xScale = tf.neg(tf.mul(m2, tf.square(r))); // [B, 1, G, 1]
      const offset = tf.mul(tf.sub(tf.mul(tf.mul(mu, m2), r), m1), r); // [B, 1, G, 1]
      const dx = tf.add(tf.add(tf.mul(dyr, dyScale), tf.mul(xr2, xScale)), offset);
      return [dx.reshape(x.shape), tf.sum(sXhat, [0, 1]).reshape([c]), tf.sum(s1, [0, 1]).reshape([c])];
    };
    return { value, gradFunc };
  });
  return tf.tidy(() => op(x, gamma, beta)) as tf.Tensor4D;
}

/**
 * Layer normalisation (Ba et al. 2016, eq. 3-4) of x: [..., C] over its last axis, with its
 * gradient in closed form: for x̂ = (x - mean) / sigma over the C values of a row and g = dy * gamma,
 *   dx = (g - mean(g) - x̂ mean(g x̂)) / sigma,   dgamma = sum(dy x̂),   dbeta = sum(dy)
 * (the batch-norm derivation of Ioffe & Szegedy 2015, sec. 3, over a row instead of a batch).
 * tfjs' autodiff of the forward formula runs about twice as many full-size ops (each mean's
 * gradient broadcasts through a ones tensor).
 */
export function layerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor {
  const axis = [x.rank - 1];
  const outer = x.shape.slice(0, -1).map((_, i) => i); // every axis but the channels
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xIn, gammaIn, betaIn, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const d = tf.sub(xIn, tf.mean(xIn, axis, true));
    const rstd = tf.rsqrt(tf.add(tf.mean(tf.square(d), axis, true), eps));
    const xhat = tf.mul(d, rstd);
    save([xhat, rstd, gammaIn]);
    const value = tf.add(tf.mul(xhat, gammaIn), betaIn);
    const gradFunc = (dy: tf.Tensor, [xh, r, gm]: tf.Tensor[]): tf.Tensor[] => {
      const g = tf.mul(dy, gm);
      const dx = tf.mul(tf.sub(tf.sub(g, tf.mean(g, axis, true)), tf.mul(xh, tf.mean(tf.mul(g, xh), axis, true))), r);
      return [dx, tf.sum(tf.mul(dy, xh), outer), tf.sum(dy, outer)];
    };
    return { value, gradFunc };
  });
  return tf.tidy(() => op(x, gamma, beta));
}

export class LayerNorm {
  readonly gamma: tf.Variable;
  readonly beta: tf.Variable;

  constructor(
    store: ParamStore,
    name: string,
    readonly channels: number,
    rng: Generator,
    readonly eps = 1e-5,
  ) {
    this.gamma = store.add(`${name}.weight`, [channels], ones, rng);
    this.beta = store.add(`${name}.bias`, [channels], zeros, rng);
  }

  /** x: [..., C], normalised over the last axis. */
  apply(x: tf.Tensor): tf.Tensor {
    return layerNorm(x, this.gamma, this.beta, this.eps);
  }
}

export class Embedding {
  readonly table: tf.Variable; // [num, dim]

  constructor(
    store: ParamStore,
    name: string,
    readonly num: number,
    readonly dim: number,
    rng: Generator,
    std = 1,
  ) {
    this.table = store.add(`${name}.weight`, [num, dim], { kind: 'normal', std }, rng);
  }

  /**
   * ids: [N] int32 -> [N, dim], as one-hot [N, num] x table: the gradient is a GEMM. (Gather's
   * gradient needs UnsortedSegmentSum, which tfjs' wasm backend lacks; the tables here are small:
   * class labels, not vocabularies.)
   */
  apply(ids: tf.Tensor1D): tf.Tensor2D {
    return tf.tidy(() => tf.matMul(tf.oneHot(ids, this.num), this.table as tf.Tensor2D));
  }
}

export function silu(x: tf.Tensor): tf.Tensor {
  // d/dx x s(x) = s + x s (1 - s) = s + y (1 - s): 4 full-size ops where autodiff of x * s(x) runs 6.
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xIn, save] = args as [tf.Tensor, tf.GradSaveFunc];
    const s = tf.sigmoid(xIn);
    const value = tf.mul(xIn, s);
    save([s, value]);
    return { value, gradFunc: (dy: tf.Tensor, [sv, y]: tf.Tensor[]) => tf.mul(dy, tf.add(sv, tf.mul(y, tf.sub(1, sv)))) };
  });
  return tf.tidy(() => op(x));
}

/** Which GELU: 'none' = exact (erf, PyTorch's F.gelu default and diffusers' GEGLU), 'tanh' = the approximation. */
export type GeluApproximation = 'none' | 'tanh';

/**
 * GELU (Hendrycks & Gimpel 2016, sec. 2), exact: x * Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2
 * (what diffusers' GEGLU computes), or with approximate = 'tanh': 0.5 x (1 + tanh(z)),
 * z = sqrt(2/pi) (x + 0.044715 x^3), computed as the identical x * sigmoid(2z) because wasm's
 * Tanh and Pow kernels are ~10x slower than Sigmoid.
 */
export function gelu(x: tf.Tensor, approximate: GeluApproximation = 'none'): tf.Tensor {
  return approximate === 'tanh' ? geluTanh(x) : geluErf(x);
}

function geluErf(x: tf.Tensor): tf.Tensor {
  // y = x Phi(x): dy/dx = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xIn, save] = args as [tf.Tensor, tf.GradSaveFunc];
    const cdf = tf.mul(tf.add(tf.erf(tf.mul(xIn, Math.SQRT1_2)), 1), 0.5);
    save([xIn, cdf]);
    const gradFunc = (dy: tf.Tensor, [xs, p]: tf.Tensor[]) => {
      const pdf = tf.mul(tf.exp(tf.mul(tf.square(xs), -0.5)), 1 / Math.sqrt(2 * Math.PI));
      return tf.mul(dy, tf.add(p, tf.mul(xs, pdf)));
    };
    return { value: tf.mul(xIn, cdf), gradFunc };
  });
  return tf.tidy(() => op(x));
}

function geluTanh(x: tf.Tensor): tf.Tensor {
  const a = 2 * Math.sqrt(2 / Math.PI);
  const b = a * 0.044715;
  // y = x s(z), z = x (a + b x^2): dy/dx = s + x s (1 - s) dz/dx = s + y (1 - s) (a + 3 b x^2),
  // 8 full-size ops where autodiff of the forward formula runs 12.
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xIn, save] = args as [tf.Tensor, tf.GradSaveFunc];
    const x2 = tf.square(xIn);
    const s = tf.sigmoid(tf.mul(xIn, tf.add(a, tf.mul(b, x2))));
    const value = tf.mul(xIn, s);
    save([x2, s, value]);
    const gradFunc = (dy: tf.Tensor, [sq, sv, y]: tf.Tensor[]) => tf.mul(dy, tf.add(sv, tf.mul(tf.mul(y, tf.sub(1, sv)), tf.add(a, tf.mul(3 * b, sq)))));
    return { value, gradFunc };
  });
  return tf.tidy(() => op(x));
}

export interface TimestepEmbeddingOptions {
  /** [cos, sin] (true, Stable Diffusion's) or [sin, cos]. Default true. */
  flipSinToCos?: boolean;
  /** diffusers' downscale_freq_shift: f_i = maxPeriod^(-i / (half - freqShift)). Default 0 (SD's). */
  freqShift?: number;
  maxPeriod?: number;
}

/**
 * Sinusoidal timestep embedding (Vaswani et al. 2017, sec. 3.5; diffusers' get_timestep_embedding):
 * [cos(t f_i), sin(t f_i)] (flipSinToCos) with f_i = maxPeriod^(-i / (half - freqShift)).
 * (diffusers rounds the exponent to float32 before exp; computing f_i in float64 instead changes
 * the U-Net's output by ~1e-7 relative, below the 1e-4 we test to, and keeps earlier models' images.)
 * t: [B] (float or int) -> [B, dim]
 */
export function timestepEmbedding(t: tf.Tensor1D, dim: number, opts: TimestepEmbeddingOptions = {}): tf.Tensor2D {
  if (dim % 2 !== 0) throw new Error(`timestep embedding dim must be even, got ${dim}`);
  const { flipSinToCos = true, freqShift = 0, maxPeriod = 10000 } = opts;
  return tf.tidy(() => {
    const half = dim / 2;
    const freqs = new Float32Array(half);
    for (let i = 0; i < half; i++) freqs[i] = Math.exp((-Math.log(maxPeriod) * i) / (half - freqShift));
    const args = tf.mul(t.toFloat().reshape([-1, 1]), tf.tensor2d(freqs, [1, half])); // [B, half]
    const [cos, sin] = [tf.cos(args), tf.sin(args)];
    return tf.concat(flipSinToCos ? [cos, sin] : [sin, cos], 1) as tf.Tensor2D;
  });
}

/** Nearest-neighbour 2x upsampling as two rank-4 broadcasts. x: [B, H, W, C] -> [B, 2H, 2W, C] */
export function upsampleNearest2x(x: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const [b, h, w, c] = x.shape;
    const cols = tf.mul(x.reshape([b * h, w, 1, c]), tf.ones([1, 1, 2, 1])); // [BH, W, 2, C]
    const rows = tf.mul(cols.reshape([b, h, 1, 2 * w * c]), tf.ones([1, 1, 2, 1])); // [B, H, 2, 2WC]
    return rows.reshape([b, 2 * h, 2 * w, c]);
  });
}

/** [B, T, heads * d] -> [B * heads, T, d] */
export function splitHeads(x: tf.Tensor3D, heads: number): tf.Tensor3D {
  return tf.tidy(() => {
    const [b, t, c] = x.shape;
    const d = c / heads;
    return x
      .reshape([b, t, heads, d])
      .transpose([0, 2, 1, 3])
      .reshape([b * heads, t, d]) as tf.Tensor3D;
  });
}

/** [B * heads, T, d] -> [B, T, heads * d] */
export function mergeHeads(x: tf.Tensor3D, heads: number): tf.Tensor3D {
  return tf.tidy(() => {
    const [bh, t, d] = x.shape;
    const b = bh / heads;
    return x
      .reshape([b, heads, t, d])
      .transpose([0, 2, 1, 3])
      .reshape([b, t, heads * d]) as tf.Tensor3D;
  });
}

/**
 * Largest score tensor [B*h, N, T] one attention computes at once (elements; 2^24 = 64 MiB of
 * float32). Beyond it the (batch, head) rows are attended in chunks: SD-1.5's 64x64 self-attention
 * at batch 2 would otherwise hold a 1 GiB score tensor and its softmax next to 3.4 GB of weights,
 * past the wasm backend's 4 GB heap. Chunks give the same numbers (each row is independent).
 */
export const ATTENTION_SCORE_CHUNK = 1 << 24;

/**
 * Scaled dot-product attention (Vaswani et al. 2017, eq. 1) on inputs already split into heads,
 * q [B*h, N, d], k and v
 * [B*h, T, d] -> [B*h, N, d]. mask: [B, T], 1 = attend. maxScores: see ATTENTION_SCORE_CHUNK.
 */
export function attendHeads(
  qh: tf.Tensor3D,
  kh: tf.Tensor3D,
  vh: tf.Tensor3D,
  heads: number,
  mask?: tf.Tensor2D,
  maxScores = ATTENTION_SCORE_CHUNK,
): tf.Tensor3D {
  const [bh, n, d] = qh.shape;
  const tk = kh.shape[1];
  const rows = Math.max(1, Math.floor(maxScores / (n * tk))); // (batch, head) rows per chunk
  if (rows >= bh) return attendChunk(qh, kh, vh, heads, mask);
  return tf.tidy(() => {
    // Chunks hold whole batch items when a mask is given (its bias is per batch item, tiled over heads).
    const step = mask ? Math.max(heads, rows - (rows % heads)) : rows;
    const parts: tf.Tensor3D[] = [];
    for (let s = 0; s < bh; s += step) {
      const len = Math.min(step, bh - s);
      const m = mask ? (mask.slice([s / heads, 0], [len / heads, tk]) as tf.Tensor2D) : undefined;
      const rowsOf = (x: tf.Tensor3D, t: number) => x.slice([s, 0, 0], [len, t, d]);
      parts.push(attendChunk(rowsOf(qh, n), rowsOf(kh, tk), rowsOf(vh, tk), heads, m));
    }
    return tf.concat(parts, 0) as tf.Tensor3D; // [B*h, N, d]
  });
}

function attendChunk(qh: tf.Tensor3D, kh: tf.Tensor3D, vh: tf.Tensor3D, heads: number, mask?: tf.Tensor2D): tf.Tensor3D {
  return tf.tidy(() => {
    const [bh, , d] = qh.shape;
    const tk = kh.shape[1];
    // Scale q ([B*h, N, d]) rather than the scores ([B*h, N, T]): fewer multiplies.
    let scores = tf.matMul(tf.mul(qh, 1 / Math.sqrt(d)), kh, false, true) as tf.Tensor3D; // [B*h, N, T]
    if (mask) {
      // Large negative bias on masked keys; [B, T] -> [B*h, 1, T]
      const b = bh / heads;
      const bias = tf.mul(tf.sub(1, mask.toFloat()), -1e9).reshape([b, 1, 1, tk]).tile([1, heads, 1, 1]).reshape([bh, 1, tk]);
      scores = tf.add(scores, bias);
    }
    return tf.matMul(tf.softmax(scores, -1), vh) as tf.Tensor3D; // [B*h, N, d]
  });
}

/**
 * Scaled dot-product attention (Vaswani et al. 2017, eq. 1) over `heads` heads.
 * q: [B, Tq, C], k and v: [B, Tk, C] -> [B, Tq, C]. mask (optional): [B, Tk], 1 = attend.
 */
export function attention(q: tf.Tensor3D, k: tf.Tensor3D, v: tf.Tensor3D, heads: number, mask?: tf.Tensor2D): tf.Tensor3D {
  const c = q.shape[2];
  if (c % heads !== 0) throw new Error(`attention: channels (${c}) must be divisible by heads (${heads})`);
  return tf.tidy(() => mergeHeads(attendHeads(splitHeads(q, heads), splitHeads(k, heads), splitHeads(v, heads), heads, mask), heads));
}
