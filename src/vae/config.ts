import { ConfigChecker, DIFFUSERS_VERSION } from '../checkpoint/config.js';

/**
 * VaeConfig: the typed, validated description of an AutoencoderKL. In memory and in training
 * configs it is camelCase (field names follow the `vae` section of ../shared/bench/ldm-small.json,
 * plus imageChannels, midAttention, reconLoss, klWeight, scalingFactor, ...); on disk,
 * `vae/config.json` is diffusers' AutoencoderKL config (what its save_pretrained writes) with our
 * training-only fields under `_txt2img`. Both that and the camelCase config.json written before
 * (`_version` 1, read as `legacy`) are read.
 */

export const VAE_CLASS_NAME = 'AutoencoderKL';
/**
 * Bumped when a saved config or the parameter layout changes incompatibly. 2: diffusers'
 * architecture (version-1 configs are read with `legacy: true`).
 */
export const VAE_CONFIG_VERSION = 2;

export const VAE_ACTIVATIONS = ['silu'] as const;
export const VAE_RECON_LOSSES = ['mse', 'l1'] as const;
export type VaeReconLoss = (typeof VAE_RECON_LOSSES)[number];
export const VAE_DOWNSAMPLE_FACTORS = [1, 2, 4, 8, 16, 32] as const;
export const VAE_IMAGE_CHANNELS = [1, 3] as const;

export interface VaeConfig {
  _class_name: typeof VAE_CLASS_NAME;
  _version: number;
  /** 1 (grayscale) or 3 (RGB). */
  imageChannels: number;
  /** Width per encoder level (the decoder mirrors it); one stride-2 step between levels. */
  channels: number[];
  /** ResBlocks per encoder level; the decoder has one more per level (diffusers' layers_per_block + 1). */
  resBlocksPerLevel: number;
  latentChannels: number;
  /** Image size / latent size: 2^(channels.length - 1) (SD: 8). */
  downsampleFactor: number;
  /** Image size trained at (diffusers' sample_size; informative). */
  sampleSize: number;
  groupNormGroups: number;
  activation: (typeof VAE_ACTIVATIONS)[number];
  /**
   * The single-head self-attention of the mid blocks (ResBlock, attention, ResBlock) after the
   * encoder's last level and before the decoder's first (diffusers' mid_block_add_attention).
   */
  midAttention: boolean;
  /** 1x1 convs on the posterior moments (quant_conv) and on the latents before decoding (post_quant_conv), as SD's. */
  quantConv: boolean;
  postQuantConv: boolean;
  /**
   * The architecture of models saved before the diffusers format (`_version` 1, and
   * ../shared/bench/peer_torch.py's): GroupNorm eps 1e-5 (diffusers: 1e-6), encoder downsampling
   * padded 1 on every side (diffusers: bottom and right only), resBlocksPerLevel ResBlocks per
   * decoder level (diffusers: one more), mid blocks only with midAttention, no quant convs.
   */
  legacy: boolean;
  reconLoss: VaeReconLoss;
  /** beta: weight of KL(q(z|x) || N(0, I)) in the loss (peer_torch.py: 1e-6). */
  klWeight: number;
  /**
   * Latents are multiplied by this before diffusion and divided by it before decoding, so that
   * they have unit variance (SD's 0.18215). Measure it with `measureScalingFactor`; 1 = unset.
   */
  scalingFactor: number;
}

const DEFAULTS = {
  _class_name: VAE_CLASS_NAME,
  _version: VAE_CONFIG_VERSION,
  imageChannels: 1,
  activation: 'silu',
  midAttention: false,
  sampleSize: 32,
  quantConv: undefined, // = !legacy
  postQuantConv: undefined, // = !legacy
  legacy: false,
  reconLoss: 'mse',
  klWeight: 1e-6,
  scalingFactor: 1,
} as const;

const KEYS: (keyof VaeConfig)[] = [
  '_class_name',
  '_version',
  'imageChannels',
  'channels',
  'resBlocksPerLevel',
  'latentChannels',
  'downsampleFactor',
  'sampleSize',
  'groupNormGroups',
  'activation',
  'midAttention',
  'quantConv',
  'postQuantConv',
  'legacy',
  'reconLoss',
  'klWeight',
  'scalingFactor',
];

const check: ConfigChecker = new ConfigChecker('vae config');

/** An input config: every field of VaeConfig, the defaulted ones optional. */
export type VaeConfigInput = Omit<VaeConfig, keyof typeof DEFAULTS> & Partial<Pick<VaeConfig, keyof typeof DEFAULTS>>;

/**
 * Validates a config (camelCase, a camelCase config.json of `_version` 1, or diffusers'
 * AutoencoderKL config.json), fills defaults and returns a complete VaeConfig. Unknown keys are
 * an error.
 */
export function parseVaeConfig(input: unknown): VaeConfig {
  if (isDiffusersVaeConfig(input)) return parseVaeConfig(vaeConfigFromDiffusers(input));
  const raw = check.object(input);
  // A config.json saved before the diffusers format has the legacy architecture.
  const c = check.fields(raw._version === 1 && raw.legacy === undefined ? { ...raw, legacy: true } : raw, KEYS, DEFAULTS, VAE_CLASS_NAME, VAE_CONFIG_VERSION);

  if (!Array.isArray(c.channels) || c.channels.length < 1 || c.channels.length > 6) check.fail('channels', c.channels, 'an array of 1 to 6 integers');
  const channels = (c.channels as unknown[]).map((v, i) => check.int(v, `channels[${i}]`, 1));
  const groups = check.int(c.groupNormGroups, 'groupNormGroups', 1);
  channels.forEach((ch, i) => {
    if (ch % groups !== 0) check.fail(`channels[${i}]`, ch, `divisible by groupNormGroups (${groups})`);
  });
  const factor = check.oneOf(VAE_DOWNSAMPLE_FACTORS, c.downsampleFactor, 'downsampleFactor');
  if (2 ** (channels.length - 1) !== factor) {
    throw new Error(
      `${check.what}: downsampleFactor ${factor} needs ${Math.log2(factor) + 1} levels (2^(levels-1)), ` +
        `but channels [${channels.join(', ')}] has ${channels.length}`,
    );
  }
  if (typeof c.midAttention !== 'boolean') check.fail('midAttention', c.midAttention, 'true or false');
  const legacy = check.bool(c.legacy, 'legacy');
  const quantConv = c.quantConv === undefined ? !legacy : check.bool(c.quantConv, 'quantConv');
  const postQuantConv = c.postQuantConv === undefined ? !legacy : check.bool(c.postQuantConv, 'postQuantConv');
  if (legacy && (quantConv || postQuantConv))
    check.fail(quantConv ? 'quantConv' : 'postQuantConv', true, 'false with legacy (the legacy architecture has no quant convs)');

  return {
    _class_name: VAE_CLASS_NAME,
    _version: c._version as number,
    imageChannels: check.oneOf(VAE_IMAGE_CHANNELS, c.imageChannels, 'imageChannels'),
    channels,
    resBlocksPerLevel: check.int(c.resBlocksPerLevel, 'resBlocksPerLevel', 1, 16),
    latentChannels: check.int(c.latentChannels, 'latentChannels', 1, 64),
    downsampleFactor: factor,
    sampleSize: check.int(c.sampleSize, 'sampleSize', 1),
    groupNormGroups: groups,
    activation: check.oneOf(VAE_ACTIVATIONS, c.activation, 'activation'),
    midAttention: c.midAttention,
    quantConv,
    postQuantConv,
    legacy,
    reconLoss: check.oneOf(VAE_RECON_LOSSES, c.reconLoss, 'reconLoss'),
    klWeight: check.num(c.klWeight, 'klWeight', (x) => x >= 0, 'a finite number >= 0'),
    scalingFactor: check.num(c.scalingFactor, 'scalingFactor', (x) => x > 0, 'a finite number > 0'),
  };
}

/**
 * The `vae` section of an ldm-small.json-style file, with imageChannels from its `image`
 * section; `overrides` sets the fields the file does not name (reconLoss, klWeight, ...). It is
 * read with `legacy: true`: ldm-small.json describes ../shared/bench/peer_torch.py's VAE, which
 * has the legacy architecture (see VaeConfig.legacy).
 */
export function vaeConfigFromLdmSmall(json: unknown, overrides: Partial<VaeConfig> = {}): VaeConfig {
  const j = json as { vae?: Record<string, unknown>; image?: { channels?: unknown } } | null;
  if (!j?.vae) throw new Error(`${check.what}: the file has no 'vae' section`);
  const fromImage = j.image?.channels !== undefined ? { imageChannels: j.image.channels } : {};
  return parseVaeConfig({ legacy: true, ...j.vae, ...fromImage, ...overrides });
}

// ---------------------------------------------------------------------------------------------
// diffusers' AutoencoderKL config.json

export const DIFFUSERS_VAE_CLASS_NAME = 'AutoencoderKL';

/** diffusers' AutoencoderKL defaults (its __init__ signature), for keys a config.json leaves out. */
const DIFFUSERS_DEFAULTS: Record<string, unknown> = {
  in_channels: 3,
  out_channels: 3,
  down_block_types: ['DownEncoderBlock2D'],
  up_block_types: ['UpDecoderBlock2D'],
  block_out_channels: [64],
  layers_per_block: 1,
  act_fn: 'silu',
  latent_channels: 4,
  norm_num_groups: 32,
  sample_size: 32,
  scaling_factor: 0.18215,
  shift_factor: null,
  latents_mean: null,
  latents_std: null,
  force_upcast: true,
  use_quant_conv: true,
  use_post_quant_conv: true,
  mid_block_add_attention: true,
};
/** Keys read and ignored: metadata, and force_upcast (fp16 only; we compute in float32). */
const IGNORED_KEYS = ['_class_name', '_diffusers_version', '_name_or_path', 'force_upcast'];

/** Our training-only fields under `_txt2img` in config.json. */
interface VaeExtras {
  reconLoss?: VaeReconLoss;
  klWeight?: number;
}

/**
 * Whether `input` is a diffusers AutoencoderKL config rather than our camelCase one. Both have
 * `_class_name` 'AutoencoderKL'; diffusers' has snake_case keys (block_out_channels).
 */
export function isDiffusersVaeConfig(input: unknown): input is Record<string, unknown> {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) return false;
  return 'block_out_channels' in input || '_diffusers_version' in input;
}

/** A diffusers AutoencoderKL config -> our camelCase config input (validated by parseVaeConfig). */
export function vaeConfigFromDiffusers(input: Record<string, unknown>): Record<string, unknown> {
  const known = new Set([...Object.keys(DIFFUSERS_DEFAULTS), ...IGNORED_KEYS, '_txt2img']);
  const unknown = Object.keys(input).filter((k) => !known.has(k));
  if (unknown.length)
    throw new Error(`${check.what}: unknown diffusers key(s) ${unknown.map((k) => `'${k}'`).join(', ')} (not an AutoencoderKL key we can represent)`);
  if (input._class_name !== undefined && input._class_name !== DIFFUSERS_VAE_CLASS_NAME)
    check.fail('_class_name', input._class_name, `'${DIFFUSERS_VAE_CLASS_NAME}'`);
  const d = { ...DIFFUSERS_DEFAULTS, ...input };
  for (const k of ['shift_factor', 'latents_mean', 'latents_std']) {
    if (d[k] !== null) check.fail(k, d[k], 'null (latents are only scaled, by scaling_factor, here)');
  }
  if (d.act_fn !== 'silu') check.fail('act_fn', d.act_fn, "'silu'");
  const boc = d.block_out_channels;
  if (!Array.isArray(boc) || boc.length < 1 || boc.length > 6) check.fail('block_out_channels', boc, 'a list of 1 to 6 integers');
  const levels = boc.length;
  for (const [key, type] of [
    ['down_block_types', 'DownEncoderBlock2D'],
    ['up_block_types', 'UpDecoderBlock2D'],
  ] as const) {
    const v = d[key];
    if (!Array.isArray(v) || v.length !== levels || v.some((t) => t !== type))
      check.fail(key, v, `a list of ${levels} '${type}' (one per block_out_channels entry)`);
  }
  if (d.in_channels !== d.out_channels) check.fail('out_channels', d.out_channels, `equal to in_channels (${JSON.stringify(d.in_channels)})`);
  const extras = (d._txt2img ?? {}) as VaeExtras;
  check.object(extras, '_txt2img');
  check.known(extras as Record<string, unknown>, ['reconLoss', 'klWeight'], '_txt2img');
  const out: Record<string, unknown> = {
    imageChannels: d.in_channels,
    channels: boc,
    resBlocksPerLevel: d.layers_per_block,
    latentChannels: d.latent_channels,
    downsampleFactor: 2 ** (levels - 1),
    sampleSize: d.sample_size,
    groupNormGroups: d.norm_num_groups,
    midAttention: d.mid_block_add_attention,
    quantConv: d.use_quant_conv,
    postQuantConv: d.use_post_quant_conv,
    scalingFactor: d.scaling_factor,
    ...extras,
  };
  for (const [k, v] of Object.entries(out)) if (v === null) delete out[k];
  return out;
}

/**
 * The config.json we write: diffusers' AutoencoderKL keys (all of them, sorted, as save_pretrained
 * writes them), reconLoss and klWeight under `_txt2img`. A legacy VAE has no diffusers form (its
 * decoder has fewer ResBlocks): it is written as before, in our camelCase keys.
 */
export function vaeConfigToJSON(config: VaeConfig): Record<string, unknown> {
  const c = parseVaeConfig(config);
  if (c.legacy) {
    const out: Record<string, unknown> = {};
    for (const k of KEYS) if (k !== 'quantConv' && k !== 'postQuantConv') out[k] = c[k];
    return out;
  }
  const levels = c.channels.length;
  const extras: VaeExtras = { reconLoss: c.reconLoss, klWeight: c.klWeight };
  const values: Record<string, unknown> = {
    ...DIFFUSERS_DEFAULTS,
    in_channels: c.imageChannels,
    out_channels: c.imageChannels,
    down_block_types: new Array(levels).fill('DownEncoderBlock2D'),
    up_block_types: new Array(levels).fill('UpDecoderBlock2D'),
    block_out_channels: c.channels,
    layers_per_block: c.resBlocksPerLevel,
    latent_channels: c.latentChannels,
    norm_num_groups: c.groupNormGroups,
    sample_size: c.sampleSize,
    scaling_factor: c.scalingFactor,
    use_quant_conv: c.quantConv,
    use_post_quant_conv: c.postQuantConv,
    mid_block_add_attention: c.midAttention,
  };
  const out: Record<string, unknown> = { _class_name: DIFFUSERS_VAE_CLASS_NAME, _diffusers_version: DIFFUSERS_VERSION, _txt2img: extras };
  for (const k of Object.keys(values).sort()) out[k] = values[k];
  return out;
}
