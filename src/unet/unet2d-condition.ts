/**
 * UNet2DCondition: the noise-prediction network of a latent diffusion model (Rombach et al. 2022,
 * sec. 3.3), shaped as Stable Diffusion's UNet2DConditionModel and sized by a UNetConfig. It is
 * the one U-Net forward pass of the project; training and every sampler call `apply`.
 *
 * Layout (L levels, n = resBlocksPerLevel; see ../shared/bench/peer_torch.py, class UNet):
 *   time:  sinusoid(t, channels[0]) -> Linear -> SiLU -> Linear  (timeEmbedDim)
 *   down:  conv_in; per level i: n x (ResBlock [+ SpatialTransformer]), then a stride-2 conv
 *          (not after the last level); every output is kept as a skip
 *   mid:   ResBlock, SpatialTransformer, ResBlock
 *   up:    per level i, deepest first: (n + 1) x (concat skip, ResBlock [+ SpatialTransformer]),
 *          then nearest-2x + conv3x3 (not after level 0)
 *   out:   GroupNorm, SiLU, conv3x3
 *
 * Zero-initialised (LDM's openaimodel): every ResBlock's conv2, every transformer's proj_out and
 * conv_out, so an untrained U-Net predicts exactly 0 and each block starts as the identity.
 *
 * Parameter names (ours, in memory): `time_embed.linear_{1,2}`, `conv_in`,
 * `down.{level}.res.{j}.*`, `down.{level}.attn.{j}.*`, `down.{level}.downsample.conv`,
 * `mid.res.{0,1}.*`, `mid.attn.*`, `up.{level}.res.{j}.*`, `up.{level}.attn.{j}.*`,
 * `up.{level}.upsample.conv`, `norm_out`, `conv_out`. Levels are numbered by resolution, so
 * `up.{i}` works at `channels[i]` like `down.{i}`. The weights file holds diffusers' names and
 * element layout (./diffusers-names.ts); a file in our names (saved before) loads too.
 */
import * as tf from '@tensorflow/tfjs';
import { type CrossSource, Downsample, type KeyValue, ResBlock, SpatialTransformer, Upsample } from '../nn/blocks.js';
import { Conv2d, GroupNorm, Linear, silu, timestepEmbedding } from '../nn/layers.js';
import { type SaveComponentOptions, loadComponent, saveComponent } from '../checkpoint/io.js';
import { ParamStore } from '../nn/params.js';
import { Generator } from '../random/generator.js';
import type { WeightLayout } from '../checkpoint/layout.js';
import { type UNetConfig, type UNetConfigInput, parseUNetConfig, unetConfigToJSON, unetLevelHeads } from './config.js';
import { unetDiffusersLayout } from './diffusers-names.js';

interface UNetLayer {
  res: ResBlock;
  attn?: SpatialTransformer;
}

interface DownLevel {
  layers: UNetLayer[];
  downsample?: Downsample;
}

interface UpLevel {
  layers: UNetLayer[];
  upsample?: Upsample;
}

/**
 * Cross-attention keys and values of one context, for every transformer of one U-Net, computed
 * once (`UNet2DCondition.precomputeContext`) and reused by every sampling step. It reflects the
 * weights at the time it was made: rebuild it after the weights change. Call dispose() when done.
 */
export class ContextCache {
  private disposed = false;

  constructor(
    /** The U-Net whose weights made it; apply() refuses a cache of another model. */
    readonly owner: UNet2DCondition,
    /** Per transformer name: K and V split into heads, [B * heads, T, C_level / heads] each. */
    readonly kv: ReadonlyMap<string, KeyValue>,
    readonly batch: number,
    readonly length: number,
    /** [B, T], 1 = attend; undefined = every token attended. */
    readonly mask?: tf.Tensor2D,
  ) {}

  get isDisposed(): boolean {
    return this.disposed;
  }

  dispose(): void {
    if (this.disposed) return;
    for (const { k, v } of this.kv.values()) {
      k.dispose();
      v.dispose();
    }
    this.mask?.dispose();
    this.disposed = true;
  }
}

export class UNet2DCondition {
  readonly config: UNetConfig;
  readonly store: ParamStore;

  private readonly timeLinear1: Linear;
  private readonly timeLinear2: Linear;
  private readonly convIn: Conv2d;
  private readonly down: DownLevel[] = [];
  private readonly midRes0: ResBlock;
  private readonly midAttn: SpatialTransformer;
  private readonly midRes1: ResBlock;
  /** Indexed by level; run from the last to the first. */
  private readonly up: UpLevel[] = [];
  private readonly normOut: GroupNorm;
  private readonly convOut: Conv2d;
  /** Every transformer, in forward order. */
  private readonly transformers: SpatialTransformer[] = [];

  constructor(config: UNetConfigInput | UNetConfig, rng: Generator) {
    const cfg = parseUNetConfig(config);
    this.config = cfg;
    this.store = new ParamStore();
    const s = this.store;
    const { channels: ch, resBlocksPerLevel: n, groupNormGroups: g, timeEmbedDim: tdim, contextDim, normEps: eps } = cfg;
    const levels = ch.length;
    const heads = unetLevelHeads(cfg);
    const geluApprox = cfg.legacy ? 'tanh' : 'none';
    const resOpts = { tembDim: tdim, zeroInitConv2: true, eps };
    const transformer = (name: string, c: number, level: number) => {
      const t = new SpatialTransformer(s, name, c, heads[level], contextDim, g, rng, geluApprox);
      this.transformers.push(t);
      return t;
    };

    const layer = (name: string, level: number, j: number, cin: number, cout: number): UNetLayer => {
      const res = new ResBlock(s, `${name}.res.${j}`, cin, cout, g, rng, resOpts);
      const attn = cfg.attentionLevels[level] ? transformer(`${name}.attn.${j}`, cout, level) : undefined;
      return { res, attn };
    };

    this.timeLinear1 = new Linear(s, 'time_embed.linear_1', ch[0], tdim, rng);
    this.timeLinear2 = new Linear(s, 'time_embed.linear_2', tdim, tdim, rng);
    this.convIn = new Conv2d(s, 'conv_in', cfg.inChannels, ch[0], 3, rng);

    const skips = [ch[0]];
    let prev = ch[0];
    for (let i = 0; i < levels; i++) {
      const level: DownLevel = { layers: [] };
      for (let j = 0; j < n; j++) {
        level.layers.push(layer(`down.${i}`, i, j, prev, ch[i]));
        prev = ch[i];
        skips.push(prev);
      }
      if (i < levels - 1) {
        level.downsample = new Downsample(s, `down.${i}.downsample`, prev, rng);
        skips.push(prev);
      }
      this.down.push(level);
    }

    this.midRes0 = new ResBlock(s, 'mid.res.0', prev, prev, g, rng, resOpts);
    this.midAttn = transformer('mid.attn', prev, levels - 1);
    this.midRes1 = new ResBlock(s, 'mid.res.1', prev, prev, g, rng, resOpts);

    const up: UpLevel[] = new Array(levels);
    for (let i = levels - 1; i >= 0; i--) {
      const level: UpLevel = { layers: [] };
      for (let j = 0; j <= n; j++) {
        level.layers.push(layer(`up.${i}`, i, j, prev + skips.pop()!, ch[i]));
        prev = ch[i];
      }
      if (i > 0) level.upsample = new Upsample(s, `up.${i}.upsample`, prev, rng);
      up[i] = level;
    }
    this.up = up;

    this.normOut = new GroupNorm(s, 'norm_out', g, prev, rng, eps);
    this.convOut = new Conv2d(s, 'conv_out', prev, cfg.outChannels, 3, rng, { zeroInit: true });
  }

  static fromConfig(config: UNetConfigInput | UNetConfig, rng: Generator): UNet2DCondition {
    return new UNet2DCondition(config, rng);
  }

  /**
   * Writes `config.json` (diffusers' UNet2DConditionModel config) and the weights (safetensors,
   * diffusers' names and layout) into the folder `dir`: what `save_pretrained` writes.
   */
  async save(dir: string, opts: SaveComponentOptions = {}): Promise<void> {
    await saveComponent(dir, unetConfigToJSON(this.config), this.store, undefined, { ...opts, layout: this.weightLayout() });
  }

  /**
   * A U-Net from a component folder: diffusers' (config.json and weights as save_pretrained
   * writes them) or ours from before (camelCase config, our names). Names and shapes checked.
   */
  static load(dir: string): UNet2DCondition {
    return loadComponent(
      dir,
      'unet',
      parseUNetConfig,
      (c) => new UNet2DCondition(c, Generator.forLoadedWeights()),
      undefined,
      (m) => m.weightLayout(),
    );
  }

  /** Our parameter names <-> diffusers' keys and element layout. */
  weightLayout(): WeightLayout {
    return unetDiffusersLayout(this.store, this.config);
  }

  /** Spatial sizes must be divisible by this (one stride-2 step between levels). */
  get downsampleFactor(): number {
    return 2 ** (this.config.channels.length - 1);
  }

  numParams(): number {
    return this.store.numParams();
  }

  private checkContext(context: tf.Tensor, what: string): void {
    if (context.rank !== 3 || context.shape[2] !== this.config.contextDim) {
      throw new Error(`${what}: context must be [B, T, ${this.config.contextDim}] (contextDim), got [${context.shape.join(', ')}]`);
    }
  }

  private checkMask(mask: tf.Tensor, b: number, t: number, what: string): void {
    if (mask.rank !== 2 || mask.shape[0] !== b || mask.shape[1] !== t) {
      throw new Error(`${what}: context mask must be [${b}, ${t}] (batch, context tokens), got [${mask.shape.join(', ')}]`);
    }
  }

  /**
   * Cross-attention K and V of `context` [B, T, contextDim] for every transformer, to pass to
   * apply() in place of the context across sampling steps. mask [B, T] (1 = attend) is kept
   * with it. The caller owns the cache (dispose()); it does not take ownership of the inputs.
   */
  precomputeContext(context: tf.Tensor3D, mask?: tf.Tensor2D): ContextCache {
    this.checkContext(context, 'precomputeContext');
    const [b, t] = context.shape;
    if (mask) this.checkMask(mask, b, t, 'precomputeContext');
    const flat = tf.tidy(() =>
      this.transformers.flatMap((tr) => {
        const { k, v } = tr.projectContext(context);
        return [k, v];
      }),
    );
    const kv = new Map<string, KeyValue>(this.transformers.map((tr, i) => [tr.name, { k: flat[2 * i], v: flat[2 * i + 1] }]));
    return new ContextCache(this, kv, b, t, mask ? tf.clone(mask) : undefined);
  }

  /**
   * Predicts the noise of `sample`.
   *   sample:    [B, h, w, inChannels], h and w divisible by 2^(levels-1)
   *   timesteps: [B] (or [1] for one timestep for the whole batch), integer or float
   *   context:   [B, T, contextDim], or a ContextCache from precomputeContext
   *   mask:      [B, T], 1 = attend (raw context only; a cache carries its own)
   * Returns eps: [B, h, w, outChannels].
   */
  apply(sample: tf.Tensor4D, timesteps: tf.Tensor1D, context: tf.Tensor3D | ContextCache, mask?: tf.Tensor2D): tf.Tensor4D {
    const cfg = this.config;
    if (sample.rank !== 4 || sample.shape[3] !== cfg.inChannels) {
      throw new Error(`unet: sample must be [B, h, w, ${cfg.inChannels}] (inChannels), got [${sample.shape.join(', ')}]`);
    }
    const [b, hgt, wid] = sample.shape;
    const f = this.downsampleFactor;
    if (hgt % f !== 0 || wid % f !== 0) {
      throw new Error(`unet: sample height and width must be divisible by ${f} (2^(levels-1)), got ${hgt}x${wid}`);
    }
    if (timesteps.rank !== 1 || (timesteps.shape[0] !== b && timesteps.shape[0] !== 1)) {
      throw new Error(`unet: timesteps must be [${b}] or [1], got [${timesteps.shape.join(', ')}]`);
    }
    let crossFor: (tr: SpatialTransformer) => CrossSource;
    let crossMask: tf.Tensor2D | undefined;
    if (context instanceof ContextCache) {
      if (context.owner !== this) throw new Error('unet: the ContextCache was made by another U-Net');
      if (context.isDisposed) throw new Error('unet: the ContextCache has been disposed');
      if (context.batch !== b) throw new Error(`unet: the ContextCache has batch ${context.batch}, the sample has ${b}`);
      if (mask) throw new Error('unet: pass the context mask to precomputeContext, not with a ContextCache');
      const kv = context.kv;
      crossFor = (tr) => kv.get(tr.name)!;
      crossMask = context.mask;
    } else {
      this.checkContext(context, 'unet');
      if (context.shape[0] !== b) throw new Error(`unet: context has batch ${context.shape[0]}, the sample has ${b}`);
      if (mask) this.checkMask(mask, b, context.shape[1], 'unet');
      const src = { context };
      crossFor = () => src;
      crossMask = mask;
    }

    return tf.tidy(() => {
      const layer = (l: UNetLayer, x: tf.Tensor4D, tembAct: tf.Tensor2D): tf.Tensor4D => {
        const h = l.res.apply(x, tembAct);
        return l.attn ? l.attn.apply(h, crossFor(l.attn), crossMask) : h;
      };

      // 1. time embedding: sinusoid [B, ch0] -> Linear, SiLU, Linear -> temb [B, tdim]; every
      //    ResBlock projects silu(temb), computed once here.
      const freq = timestepEmbedding(timesteps, cfg.channels[0], { flipSinToCos: cfg.flipSinToCos, freqShift: cfg.freqShift }); // [B, ch0]
      const temb = this.timeLinear2.apply(silu(this.timeLinear1.apply(freq))) as tf.Tensor2D; // [B, tdim]
      const tembAct = silu(temb) as tf.Tensor2D;

      // 2. conv_in: [B, h, w, inChannels] -> [B, h, w, ch0]
      let h = this.convIn.apply(sample);
      const skips: tf.Tensor4D[] = [h];

      // 3. down path: level i runs at [B, h/2^i, w/2^i, ch[i]]; every output is a skip
      for (const level of this.down) {
        for (const l of level.layers) {
          h = layer(l, h, tembAct);
          skips.push(h);
        }
        if (level.downsample) {
          h = level.downsample.apply(h); // [B, H/2, W/2, C]
          skips.push(h);
        }
      }

      // 4. middle: ResBlock, transformer, ResBlock at [B, h/f, w/f, ch[L-1]]
      h = this.midRes0.apply(h, tembAct);
      h = this.midAttn.apply(h, crossFor(this.midAttn), crossMask);
      h = this.midRes1.apply(h, tembAct);

      // 5. up path, deepest level first: concat the matching skip on channels, ResBlock
      //    [B, H, W, C + C_skip] -> [B, H, W, ch[i]] (+ transformer); then nearest-2x + conv
      for (let i = this.up.length - 1; i >= 0; i--) {
        const level = this.up[i];
        for (const l of level.layers) h = layer(l, tf.concat([h, skips.pop()!], 3) as tf.Tensor4D, tembAct);
        if (level.upsample) h = level.upsample.apply(h); // [B, 2H, 2W, C]
      }

      // 6. out: GroupNorm, SiLU, conv3x3 -> [B, h, w, outChannels]
      return this.convOut.apply(silu(this.normOut.apply(h)) as tf.Tensor4D);
    });
  }

  dispose(): void {
    this.store.dispose();
  }
}
