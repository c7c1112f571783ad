/**
 * AutoencoderKL: the KL-regularised autoencoder of latent diffusion (Rombach et al. 2022,
 * sec. 3 and appendix G; the VAE of Kingma & Welling 2014 with a small KL weight), shaped as
 * ../shared/bench/peer_torch.py's VAE and Stable Diffusion's AutoencoderKL.
 *
 * Encoder: conv_in; per level i: resBlocksPerLevel ResBlocks to channels[i], then a stride-2
 * conv padded on the bottom and right (not after the last level); mid: ResBlock, [single-head
 * self-attention,] ResBlock; GroupNorm, SiLU, conv3x3 to 2 * latentChannels = (mean, logvar) of
 * a diagonal Gaussian posterior; [quant_conv 1x1].
 * Decoder (mirrored): [post_quant_conv 1x1]; conv_in from latentChannels to channels[L-1]; mid;
 * per level i from the deepest: resBlocksPerLevel + 1 ResBlocks to channels[i], then
 * nearest-2x + conv3x3 (not after level 0); GroupNorm, SiLU, conv3x3 to imageChannels.
 * GroupNorm eps 1e-6 throughout. That is diffusers' AutoencoderKL; `legacy` configs (models saved
 * before, and peer_torch.py's VAE) differ as VaeConfig.legacy lists.
 *
 * Parameter names (ours, in memory): `encoder.conv_in`, `encoder.down.{level}.res.{j}.*`,
 * `encoder.down.{level}.downsample.conv`, `encoder.mid.{res.0,attn,res.1}.*`, `encoder.norm_out`,
 * `encoder.conv_out`, `quant_conv`, `post_quant_conv`, and `decoder.conv_in`, `decoder.mid.*`,
 * `decoder.up.{level}.res.{j}.*`, `decoder.up.{level}.upsample.conv`, `decoder.norm_out`,
 * `decoder.conv_out`. The weights file holds diffusers' names and element layout (./diffusers-names.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { Conv1x1, Downsample, ResBlock, SpatialSelfAttention, Upsample } from '../nn/blocks.js';
import { Conv2d, GroupNorm, silu } from '../nn/layers.js';
import { type SaveComponentOptions, loadComponent, saveComponent } from '../checkpoint/io.js';
import type { WeightLayout } from '../checkpoint/layout.js';
import { ParamStore } from '../nn/params.js';
import { Generator } from '../random/generator.js';
import { type VaeConfig, type VaeConfigInput, parseVaeConfig, vaeConfigToJSON } from './config.js';
import { vaeDiffusersLayout } from './diffusers-names.js';

/** logvar is clamped to this range (as SD's DiagonalGaussianDistribution). */
export const LOGVAR_MIN = -30;
export const LOGVAR_MAX = 20;

/**
 * q(z|x) = N(mean, exp(logvar)), per latent element. Owns its two tensors (dispose()); sample()
 * and mode() return new tensors the caller owns.
 */
export class DiagonalGaussian {
  constructor(
    /** [B, h, w, zc] */
    readonly mean: tf.Tensor4D,
    /** [B, h, w, zc], clamped to [LOGVAR_MIN, LOGVAR_MAX] */
    readonly logvar: tf.Tensor4D,
  ) {}

  /** z = mean + exp(logvar / 2) * eps, eps ~ N(0, I) drawn from rng. [B, h, w, zc] */
  sample(rng: Generator): tf.Tensor4D {
    return tf.tidy(() => this.sampleWith(rng.randn(this.mean.shape) as tf.Tensor4D));
  }

  /** mean + std * eps (the reparameterisation trick, Kingma & Welling 2014, eq. 10). */
  sampleWith(eps: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => tf.add(this.mean, tf.mul(tf.exp(tf.mul(this.logvar, 0.5)), eps)) as tf.Tensor4D);
  }

  /** The most likely latent: the mean (a copy). [B, h, w, zc] */
  mode(): tf.Tensor4D {
    return tf.clone(this.mean);
  }

  /** KL(q || N(0, I)) per sample, summed over the latent: 0.5 * sum(mean^2 + var - 1 - logvar). [B] */
  kl(): tf.Tensor1D {
    return tf.tidy(() => {
      const terms = tf.sub(tf.sub(tf.add(tf.square(this.mean), tf.exp(this.logvar)), 1), this.logvar);
      return tf.mul(tf.sum(terms, [1, 2, 3]), 0.5) as tf.Tensor1D;
    });
  }

  dispose(): void {
    this.mean.dispose();
    this.logvar.dispose();
  }
}

export interface VaeLoss {
  /** recon + klWeight * kl */
  loss: tf.Scalar;
  /** Mean squared (or absolute) error per pixel. */
  recon: tf.Scalar;
  /** KL summed over the latent, mean over the batch. */
  kl: tf.Scalar;
}

interface Level {
  res: ResBlock[];
  resample?: Downsample | Upsample;
}

interface MidBlock {
  res0: ResBlock;
  attn?: SpatialSelfAttention;
  res1: ResBlock;
}

export class AutoencoderKL {
  private cfg: VaeConfig;
  readonly store: ParamStore;

  private readonly encConvIn: Conv2d;
  private readonly encLevels: Level[] = [];
  private readonly encMid?: MidBlock;
  private readonly encNormOut: GroupNorm;
  private readonly encConvOut: Conv2d;
  private readonly quantConv?: Conv1x1;
  private readonly postQuantConv?: Conv1x1;
  private readonly decConvIn: Conv2d;
  private readonly decMid?: MidBlock;
  /** Indexed by level; run from the last to the first. */
  private readonly decLevels: Level[];
  private readonly decNormOut: GroupNorm;
  private readonly decConvOut: Conv2d;

  constructor(config: VaeConfigInput | VaeConfig, rng: Generator) {
    const cfg = parseVaeConfig(config);
    this.cfg = cfg;
    this.store = new ParamStore();
    const s = this.store;
    const { channels: ch, resBlocksPerLevel: n, groupNormGroups: g, latentChannels: zc, legacy } = cfg;
    const levels = ch.length;
    const eps = legacy ? 1e-5 : 1e-6;
    const res = (name: string, cin: number, cout: number) => new ResBlock(s, name, cin, cout, g, rng, { eps });
    // diffusers always has the mid blocks (mid_block_add_attention only drops the attention).
    const hasMid = cfg.midAttention || !legacy;
    const mid = (name: string, c: number): MidBlock => ({
      res0: res(`${name}.res.0`, c, c),
      attn: cfg.midAttention ? new SpatialSelfAttention(s, `${name}.attn`, c, g, rng) : undefined,
      res1: res(`${name}.res.1`, c, c),
    });

    // Encoder
    this.encConvIn = new Conv2d(s, 'encoder.conv_in', cfg.imageChannels, ch[0], 3, rng);
    let prev = ch[0];
    for (let i = 0; i < levels; i++) {
      const level: Level = { res: [] };
      for (let j = 0; j < n; j++) {
        level.res.push(res(`encoder.down.${i}.res.${j}`, prev, ch[i]));
        prev = ch[i];
      }
      if (i < levels - 1) level.resample = new Downsample(s, `encoder.down.${i}.downsample`, prev, rng, legacy ? 'symmetric' : 'bottom-right');
      this.encLevels.push(level);
    }
    if (hasMid) this.encMid = mid('encoder.mid', prev);
    this.encNormOut = new GroupNorm(s, 'encoder.norm_out', g, prev, rng, eps);
    this.encConvOut = new Conv2d(s, 'encoder.conv_out', prev, 2 * zc, 3, rng);
    if (cfg.quantConv) this.quantConv = new Conv1x1(s, 'quant_conv', 2 * zc, 2 * zc, rng);

    // Decoder
    if (cfg.postQuantConv) this.postQuantConv = new Conv1x1(s, 'post_quant_conv', zc, zc, rng);
    prev = ch[levels - 1];
    this.decConvIn = new Conv2d(s, 'decoder.conv_in', zc, prev, 3, rng);
    if (hasMid) this.decMid = mid('decoder.mid', prev);
    const dec: Level[] = new Array(levels);
    const decRes = legacy ? n : n + 1;
    for (let i = levels - 1; i >= 0; i--) {
      const level: Level = { res: [] };
      for (let j = 0; j < decRes; j++) {
        level.res.push(res(`decoder.up.${i}.res.${j}`, prev, ch[i]));
        prev = ch[i];
      }
      if (i > 0) level.resample = new Upsample(s, `decoder.up.${i}.upsample`, prev, rng);
      dec[i] = level;
    }
    this.decLevels = dec;
    this.decNormOut = new GroupNorm(s, 'decoder.norm_out', g, prev, rng, eps);
    this.decConvOut = new Conv2d(s, 'decoder.conv_out', prev, cfg.imageChannels, 3, rng);
  }

  static fromConfig(config: VaeConfigInput | VaeConfig, rng: Generator): AutoencoderKL {
    return new AutoencoderKL(config, rng);
  }

  /**
   * Writes `config.json` (diffusers' AutoencoderKL config, scalingFactor included) and the weights
   * (diffusers' names and layout) into the folder `dir`: what `save_pretrained` writes. A legacy
   * VAE, which diffusers cannot represent, is written in our own keys and names as before.
   */
  async save(dir: string, opts: SaveComponentOptions = {}): Promise<void> {
    await saveComponent(dir, vaeConfigToJSON(this.cfg), this.store, undefined, { ...opts, layout: this.weightLayout() });
  }

  /**
   * A VAE from a component folder: diffusers' (as save_pretrained writes it) or ours from before
   * (camelCase config, our names). Names and shapes checked.
   */
  static load(dir: string): AutoencoderKL {
    return loadComponent(
      dir,
      'vae',
      parseVaeConfig,
      (c) => new AutoencoderKL(c, Generator.forLoadedWeights()),
      undefined,
      (m) => m.weightLayout(),
    );
  }

  /** Our parameter names <-> diffusers' keys and element layout; undefined for a legacy VAE (our names only). */
  weightLayout(): WeightLayout | undefined {
    return this.cfg.legacy ? undefined : vaeDiffusersLayout(this.store);
  }

  get config(): VaeConfig {
    return this.cfg;
  }

  /** Stores a measured latent scaling factor in the config (see measureScalingFactor). */
  setScalingFactor(value: number): void {
    this.cfg = parseVaeConfig({ ...this.cfg, scalingFactor: value });
  }

  numParams(): number {
    return this.store.numParams();
  }

  private static runMid(m: MidBlock | undefined, x: tf.Tensor4D): tf.Tensor4D {
    if (!m) return x;
    const h = m.res0.apply(x);
    return m.res1.apply(m.attn ? m.attn.apply(h) : h);
  }

  /** images: [B, H, W, imageChannels] in [-1, 1], H and W divisible by downsampleFactor. */
  encode(images: tf.Tensor4D): DiagonalGaussian {
    const { imageChannels, downsampleFactor: f, latentChannels: zc } = this.cfg;
    if (images.rank !== 4 || images.shape[3] !== imageChannels) {
      throw new Error(`vae.encode: images must be [B, H, W, ${imageChannels}] (imageChannels), got [${images.shape.join(', ')}]`);
    }
    if (images.shape[1] % f !== 0 || images.shape[2] % f !== 0) {
      throw new Error(`vae.encode: image height and width must be divisible by ${f} (downsampleFactor), got ${images.shape[1]}x${images.shape[2]}`);
    }
    const [mean, logvar] = tf.tidy(() => {
      // 1. conv_in: [B, H, W, Cimg] -> [B, H, W, ch0]
      let h = this.encConvIn.apply(images);
      // 2. levels: ResBlocks, stride-2 conv between levels -> [B, H/f, W/f, ch[L-1]]
      for (const level of this.encLevels) {
        for (const r of level.res) h = r.apply(h);
        if (level.resample) h = level.resample.apply(h);
      }
      // 3. optional mid block
      h = AutoencoderKL.runMid(this.encMid, h);
      // 4. GroupNorm, SiLU, conv -> [B, h, w, 2 zc] = (mean, logvar)
      let moments = this.encConvOut.apply(silu(this.encNormOut.apply(h)) as tf.Tensor4D);
      if (this.quantConv) moments = this.quantConv.apply(moments) as tf.Tensor4D; // [B, h, w, 2 zc]
      const [m, lv] = tf.split(moments, [zc, zc], 3) as [tf.Tensor4D, tf.Tensor4D];
      return [m, tf.clipByValue(lv, LOGVAR_MIN, LOGVAR_MAX) as tf.Tensor4D];
    });
    return new DiagonalGaussian(mean, logvar);
  }

  /** latents: [B, h, w, latentChannels] (unscaled) -> images [B, h*f, w*f, imageChannels]. */
  decode(latents: tf.Tensor4D): tf.Tensor4D {
    const zc = this.cfg.latentChannels;
    if (latents.rank !== 4 || latents.shape[3] !== zc) {
      throw new Error(`vae.decode: latents must be [B, h, w, ${zc}] (latentChannels), got [${latents.shape.join(', ')}]`);
    }
    return tf.tidy(() => {
      // 1. [post_quant_conv], conv_in: [B, h, w, zc] -> [B, h, w, ch[L-1]]
      const z = this.postQuantConv ? (this.postQuantConv.apply(latents) as tf.Tensor4D) : latents;
      let h = this.decConvIn.apply(z);
      // 2. optional mid block
      h = AutoencoderKL.runMid(this.decMid, h);
      // 3. levels, deepest first: ResBlocks, nearest-2x + conv between levels -> [B, H, W, ch0]
      for (let i = this.decLevels.length - 1; i >= 0; i--) {
        const level = this.decLevels[i];
        for (const r of level.res) h = r.apply(h);
        if (level.resample) h = level.resample.apply(h);
      }
      // 4. GroupNorm, SiLU, conv -> [B, H, W, imageChannels]
      return this.decConvOut.apply(silu(this.decNormOut.apply(h)) as tf.Tensor4D);
    });
  }

  /**
   * Latents for diffusion: a posterior sample (with rng) or its mean (without), times
   * scalingFactor. images [B, H, W, C] -> [B, H/f, W/f, latentChannels]
   */
  encodeLatents(images: tf.Tensor4D, rng?: Generator): tf.Tensor4D {
    const post = this.encode(images);
    try {
      return tf.tidy(() => tf.mul(rng ? post.sample(rng) : post.mean, this.cfg.scalingFactor) as tf.Tensor4D);
    } finally {
      post.dispose();
    }
  }

  /** Images from diffusion latents: decode(latents / scalingFactor). */
  decodeLatents(latents: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => this.decode(tf.div(latents, this.cfg.scalingFactor) as tf.Tensor4D));
  }

  /**
   * The training loss: reconstruction (MSE or L1, mean per pixel) of decode(z), z ~ q(z|x),
   * plus klWeight * KL (summed over the latent, mean over the batch), as peer_torch.py.
   * For computeGradients: `computeGradients(vae.store, () => vae.lossFn(x, rng).loss)`; to read
   * recon and kl afterwards, tf.keep them inside the closure (and dispose them later).
   */
  lossFn(images: tf.Tensor4D, rng: Generator): VaeLoss {
    const eps = rng.randn(this.latentShape(images.shape)) as tf.Tensor4D;
    try {
      return this.lossFromNoise(images, eps);
    } finally {
      eps.dispose();
    }
  }

  /** The latent shape of a batch of images [B, H, W, C]: [B, H/f, W/f, zc]. */
  latentShape(imageShape: readonly number[]): [number, number, number, number] {
    const [b, h, w] = imageShape;
    const f = this.cfg.downsampleFactor;
    return [b, h / f, w / f, this.cfg.latentChannels];
  }

  /** lossFn with the posterior's noise given: z = mean + std * eps (eps [B, h, w, zc]). */
  lossFromNoise(images: tf.Tensor4D, eps: tf.Tensor4D): VaeLoss {
    return tf.tidy(() => {
      const post = this.encode(images);
      const z = post.sampleWith(eps);
      const out = this.decode(z);
      const diff = tf.sub(out, images);
      const recon = (this.cfg.reconLoss === 'mse' ? tf.mean(tf.square(diff)) : tf.mean(tf.abs(diff))) as tf.Scalar;
      const kl = tf.mean(post.kl()) as tf.Scalar;
      const loss = tf.add(recon, tf.mul(kl, this.cfg.klWeight)) as tf.Scalar;
      return { loss, recon, kl };
    });
  }

  dispose(): void {
    this.store.dispose();
  }
}

export interface MeasureScalingOptions {
  /** Sample the posterior with this generator (as SD measured 0.18215); default: its mean. */
  rng?: Generator;
  /** Stop after this many batches. */
  maxBatches?: number;
  /** Dispose each batch after use (batches an iterator creates). Default false. */
  disposeBatches?: boolean;
}

/**
 * The latent scaling factor: 1 / std of the (unscaled) latents of the given images, the std
 * taken over every latent element of every batch. Store it with vae.setScalingFactor().
 * images: one batch [B, H, W, C] or an (async) iterable of batches.
 */
export async function measureScalingFactor(
  vae: AutoencoderKL,
  images: tf.Tensor4D | Iterable<tf.Tensor4D> | AsyncIterable<tf.Tensor4D>,
  opts: MeasureScalingOptions = {},
): Promise<number> {
  const batches: Iterable<tf.Tensor4D> | AsyncIterable<tf.Tensor4D> = images instanceof tf.Tensor ? [images] : images;
  let n = 0;
  let sum = 0;
  let sumSq = 0;
  let seen = 0;
  for await (const batch of batches) {
    if (opts.maxBatches !== undefined && seen >= opts.maxBatches) break;
    seen++;
    const post = vae.encode(batch);
    const z = opts.rng ? post.sample(opts.rng) : post.mode();
    post.dispose();
    const data = await z.data();
    z.dispose();
    if (opts.disposeBatches) batch.dispose();
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      sum += v;
      sumSq += v * v;
    }
    n += data.length;
  }
  if (n < 2) throw new Error(`measureScalingFactor: needs at least 2 latent values, got ${n} (no images?)`);
  const mean = sum / n;
  const variance = (sumSq - n * mean * mean) / (n - 1);
  if (!(variance > 0) || !Number.isFinite(variance)) {
    throw new Error(`measureScalingFactor: latent variance is ${variance}; cannot scale (untrained or collapsed VAE?)`);
  }
  return 1 / Math.sqrt(variance);
}
