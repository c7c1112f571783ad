import { ConfigChecker, DIFFUSERS_VERSION } from '../checkpoint/config.js';

/**
 * UNetConfig: the typed, validated description of a UNet2DCondition. In memory and in training
 * configs it is camelCase (the `unet` section of ../shared/bench/ldm-small.json parses as it is);
 * on disk, `unet/config.json` is diffusers' UNet2DConditionModel config (what its
 * save_pretrained writes), with our extras under `_txt2img` (diffusers ignores `_` keys). Both
 * that and the camelCase config.json written before (`_version` 1) are read.
 */

export const UNET_CLASS_NAME = 'UNet2DCondition';
/** diffusers' class, the `_class_name` of the config.json we write. */
export const DIFFUSERS_UNET_CLASS_NAME = 'UNet2DConditionModel';
/**
 * Bumped when a saved config or the parameter layout changes incompatibly. 2: exact GELU
 * (version-1 configs are read with `legacy: true`).
 */
export const UNET_CONFIG_VERSION = 2;

export const UNET_ACTIVATIONS = ['silu'] as const;
export const UNET_FEED_FORWARDS = ['geglu'] as const;
export const UNET_DOWNSAMPLES = ['conv3x3-stride2'] as const;
export const UNET_UPSAMPLES = ['nearest2x-conv3x3'] as const;

export interface UNetConfig {
  _class_name: typeof UNET_CLASS_NAME;
  _version: number;
  /**
   * Input channels: the VAE's latentChannels, or 2 x latentChannels + 1 for an inpainting U-Net
   * (latents, mask, masked-image latents; diffusers' StableDiffusionInpaintPipeline).
   */
  inChannels: number;
  /** Output channels (the VAE's latentChannels); omitted in config.json when equal to inChannels. */
  outChannels: number;
  /** Latent height and width trained at (the model runs on any size divisible by 2^(levels-1)). */
  sampleSize: number;
  /** Width per level; one stride-2 downsample between consecutive levels. */
  channels: number[];
  resBlocksPerLevel: number;
  /** One flag per level: a spatial transformer after each ResBlock of that level. */
  attentionLevels: boolean[];
  /**
   * Attention heads, one number for every level or one per level (diffusers' `attention_head_dim`,
   * which UNet2DConditionModel reads as a head count; SD-2 has [5, 10, 20, 20]). The middle block
   * uses the last level's.
   */
  attentionHeads: number | number[];
  /** Width of the text-encoder states cross-attention reads. */
  contextDim: number;
  /** Tokens per context (77 for CLIP); informative, other lengths are accepted. */
  contextLength: number;
  timeEmbedDim: number;
  groupNormGroups: number;
  /** GroupNorm epsilon of the ResBlocks and the output norm (diffusers' norm_eps). */
  normEps: number;
  /** Timestep embedding [cos, sin] (true) or [sin, cos]; diffusers' flip_sin_to_cos. */
  flipSinToCos: boolean;
  /** diffusers' freq_shift (downscale_freq_shift) of the timestep embedding. */
  freqShift: number;
  /** proj_in / proj_out of the transformers stored as Linear (SD-2) instead of conv 1x1. */
  linearProjection: boolean;
  /** diffusers' upcast_attention (fp16 only; we compute in float32): kept to write it back. */
  upcastAttention: boolean;
  /** Models saved before the diffusers format (`_version` 1): the tanh GELU in the transformers. */
  legacy: boolean;
  activation: (typeof UNET_ACTIVATIONS)[number];
  feedForward: (typeof UNET_FEED_FORWARDS)[number];
  downsample: (typeof UNET_DOWNSAMPLES)[number];
  upsample: (typeof UNET_UPSAMPLES)[number];
}

/** Fields that may be omitted, with their defaults. */
const DEFAULTS = {
  _class_name: UNET_CLASS_NAME,
  outChannels: undefined, // = inChannels
  _version: UNET_CONFIG_VERSION,
  normEps: 1e-5,
  flipSinToCos: true,
  freqShift: 0,
  linearProjection: false,
  upcastAttention: false,
  legacy: false,
  activation: 'silu',
  feedForward: 'geglu',
  downsample: 'conv3x3-stride2',
  upsample: 'nearest2x-conv3x3',
} as const;

const KEYS: (keyof UNetConfig)[] = [
  '_class_name',
  '_version',
  'inChannels',
  'outChannels',
  'sampleSize',
  'channels',
  'resBlocksPerLevel',
  'attentionLevels',
  'attentionHeads',
  'contextDim',
  'contextLength',
  'timeEmbedDim',
  'groupNormGroups',
  'normEps',
  'flipSinToCos',
  'freqShift',
  'linearProjection',
  'upcastAttention',
  'legacy',
  'activation',
  'feedForward',
  'downsample',
  'upsample',
];

const check: ConfigChecker = new ConfigChecker('unet config');

/** An input config: every field of UNetConfig, the defaulted ones optional. */
export type UNetConfigInput = Omit<UNetConfig, keyof typeof DEFAULTS> & Partial<Pick<UNetConfig, keyof typeof DEFAULTS>>;

/** The heads of each level (attentionHeads expanded). */
export function unetLevelHeads(config: Pick<UNetConfig, 'attentionHeads' | 'channels'>): number[] {
  const h = config.attentionHeads;
  return typeof h === 'number' ? config.channels.map(() => h) : [...h];
}

/**
 * Validates a config (a camelCase object such as ldm-small.json's `unet` section or a training
 * config's, a camelCase config.json of `_version` 1, or diffusers' UNet2DConditionModel
 * config.json), fills defaults and returns a complete UNetConfig. Unknown keys are an error.
 */
export function parseUNetConfig(input: unknown): UNetConfig {
  if (isDiffusersUNetConfig(input)) return parseUNetConfig(unetConfigFromDiffusers(input));
  const raw = check.object(input);
  // A config.json saved before the diffusers format computed the transformers' GELU with tanh.
  const c = check.fields(raw._version === 1 && raw.legacy === undefined ? { ...raw, legacy: true } : raw, KEYS, DEFAULTS, UNET_CLASS_NAME, UNET_CONFIG_VERSION);

  if (!Array.isArray(c.channels) || c.channels.length < 1 || c.channels.length > 6) check.fail('channels', c.channels, 'an array of 1 to 6 integers');
  const channels = (c.channels as unknown[]).map((v, i) => check.int(v, `channels[${i}]`, 1));
  const levels = channels.length;
  const groups = check.int(c.groupNormGroups, 'groupNormGroups', 1);
  channels.forEach((ch, i) => {
    if (ch % groups !== 0) check.fail(`channels[${i}]`, ch, `divisible by groupNormGroups (${groups})`);
  });
  if (channels[0] % 2 !== 0) check.fail('channels[0]', channels[0], 'even (it is the sinusoidal timestep embedding width)');

  if (!Array.isArray(c.attentionLevels) || c.attentionLevels.length !== levels) {
    check.fail('attentionLevels', c.attentionLevels, `an array of ${levels} booleans (one per entry of channels)`);
  }
  const attentionLevels = (c.attentionLevels as unknown[]).map((v, i) => {
    if (typeof v !== 'boolean') check.fail(`attentionLevels[${i}]`, v, 'true or false');
    return v;
  });
  let attentionHeads: number | number[];
  if (Array.isArray(c.attentionHeads)) {
    if (c.attentionHeads.length !== levels) check.fail('attentionHeads', c.attentionHeads, `one integer or an array of ${levels} (one per entry of channels)`);
    attentionHeads = c.attentionHeads.map((v, i) => check.int(v, `attentionHeads[${i}]`, 1));
  } else attentionHeads = check.int(c.attentionHeads, 'attentionHeads', 1);
  const heads = unetLevelHeads({ attentionHeads, channels });
  channels.forEach((ch, i) => {
    // The middle block always has a transformer, at the last level's width.
    const key = Array.isArray(attentionHeads) ? `attentionHeads[${i}]` : 'attentionHeads';
    if ((attentionLevels[i] || i === levels - 1) && ch % heads[i] !== 0) check.fail(key, heads[i], `a divisor of channels[${i}] (${ch})`);
  });

  const factor = 2 ** (levels - 1);
  const sampleSize = check.int(c.sampleSize, 'sampleSize', 1);
  if (sampleSize % factor !== 0) check.fail('sampleSize', sampleSize, `divisible by ${factor} (2^(levels-1) for ${levels} levels)`);

  const inChannels = check.int(c.inChannels, 'inChannels', 1);
  const half = channels[0] / 2;
  return {
    _class_name: UNET_CLASS_NAME,
    _version: c._version as number,
    inChannels,
    outChannels: c.outChannels === undefined ? inChannels : check.int(c.outChannels, 'outChannels', 1),
    sampleSize,
    channels,
    resBlocksPerLevel: check.int(c.resBlocksPerLevel, 'resBlocksPerLevel', 1, 16),
    attentionLevels,
    attentionHeads,
    contextDim: check.int(c.contextDim, 'contextDim', 1),
    contextLength: check.int(c.contextLength, 'contextLength', 1),
    timeEmbedDim: check.int(c.timeEmbedDim, 'timeEmbedDim', 1),
    groupNormGroups: groups,
    normEps: check.num(c.normEps, 'normEps', (x) => x > 0 && x < 1, 'a number between 0 and 1'),
    flipSinToCos: check.bool(c.flipSinToCos, 'flipSinToCos'),
    freqShift: check.num(c.freqShift, 'freqShift', (x) => x < half, `a number below ${half} (half the embedding width channels[0])`),
    linearProjection: check.bool(c.linearProjection, 'linearProjection'),
    upcastAttention: check.bool(c.upcastAttention, 'upcastAttention'),
    legacy: check.bool(c.legacy, 'legacy'),
    activation: check.oneOf(UNET_ACTIVATIONS, c.activation, 'activation'),
    feedForward: check.oneOf(UNET_FEED_FORWARDS, c.feedForward, 'feedForward'),
    downsample: check.oneOf(UNET_DOWNSAMPLES, c.downsample, 'downsample'),
    upsample: check.oneOf(UNET_UPSAMPLES, c.upsample, 'upsample'),
  };
}

/** The `unet` section of an ldm-small.json-style file ({ unet: {...}, ... }). */
export function unetConfigFromLdmSmall(json: unknown): UNetConfig {
  const section = (json as { unet?: unknown } | null)?.unet;
  if (section === undefined) throw new Error(`${check.what}: the file has no 'unet' section`);
  // ldm-small.json describes ../shared/bench/peer_torch.py's U-Net, whose GELU is PyTorch's exact one.
  return parseUNetConfig(section);
}

// ---------------------------------------------------------------------------------------------
// diffusers' UNet2DConditionModel config.json

/**
 * diffusers' UNet2DConditionModel defaults (its __init__ signature), used for keys a config.json
 * leaves out (older diffusers versions wrote fewer keys).
 */
const DIFFUSERS_DEFAULTS: Record<string, unknown> = {
  sample_size: null,
  in_channels: 4,
  out_channels: 4,
  center_input_sample: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  mid_block_type: 'UNetMidBlock2DCrossAttn',
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  only_cross_attention: false,
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  downsample_padding: 1,
  mid_block_scale_factor: 1,
  dropout: 0,
  act_fn: 'silu',
  norm_num_groups: 32,
  norm_eps: 1e-5,
  cross_attention_dim: 1280,
  transformer_layers_per_block: 1,
  reverse_transformer_layers_per_block: null,
  encoder_hid_dim: null,
  encoder_hid_dim_type: null,
  attention_head_dim: 8,
  num_attention_heads: null,
  dual_cross_attention: false,
  use_linear_projection: false,
  class_embed_type: null,
  addition_embed_type: null,
  addition_time_embed_dim: null,
  num_class_embeds: null,
  upcast_attention: false,
  resnet_time_scale_shift: 'default',
  resnet_skip_time_act: false,
  resnet_out_scale_factor: 1,
  time_embedding_type: 'positional',
  time_embedding_dim: null,
  time_embedding_act_fn: null,
  timestep_post_act: null,
  time_cond_proj_dim: null,
  conv_in_kernel: 3,
  conv_out_kernel: 3,
  projection_class_embeddings_input_dim: null,
  attention_type: 'default',
  class_embeddings_concat: false,
  mid_block_only_cross_attention: null,
  cross_attention_norm: null,
  addition_embed_type_num_heads: 64,
};

/**
 * Keys that select features our U-Net does not have: each must hold its default (or, for the
 * per-block ones, a list of it). Other values are refused by name.
 */
const FIXED_KEYS = [
  'center_input_sample',
  'only_cross_attention',
  'downsample_padding',
  'mid_block_scale_factor',
  'dropout',
  'act_fn',
  'transformer_layers_per_block',
  'reverse_transformer_layers_per_block',
  'encoder_hid_dim',
  'encoder_hid_dim_type',
  'num_attention_heads',
  'dual_cross_attention',
  'class_embed_type',
  'addition_embed_type',
  'addition_time_embed_dim',
  'num_class_embeds',
  'resnet_time_scale_shift',
  'resnet_skip_time_act',
  'resnet_out_scale_factor',
  'time_embedding_type',
  'time_embedding_act_fn',
  'timestep_post_act',
  'time_cond_proj_dim',
  'conv_in_kernel',
  'conv_out_kernel',
  'projection_class_embeddings_input_dim',
  'attention_type',
  'class_embeddings_concat',
  'mid_block_only_cross_attention',
  'cross_attention_norm',
] as const;
/** Keys read and ignored: metadata, and settings that matter only with a feature refused above. */
const IGNORED_KEYS = ['_class_name', '_diffusers_version', '_name_or_path', 'addition_embed_type_num_heads'];

/** Our extras under `_txt2img` in config.json. */
interface UNetExtras {
  contextLength?: number;
  legacy?: boolean;
}

/** Whether `input` is a diffusers UNet2DConditionModel config (rather than our camelCase one). */
export function isDiffusersUNetConfig(input: unknown): input is Record<string, unknown> {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) return false;
  const o = input as Record<string, unknown>;
  return o._class_name === DIFFUSERS_UNET_CLASS_NAME || (o._class_name === undefined && 'block_out_channels' in o);
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** One value for every level: an int, or a list whose entries are all equal (diffusers allows per-block lists). */
function uniform(v: unknown, key: string, levels: number): unknown {
  if (!Array.isArray(v)) return v;
  if (v.length !== levels) check.fail(key, v, `one value or a list of ${levels} (one per block)`);
  if (!v.every((x) => sameJson(x, v[0]))) check.fail(key, v, 'the same for every block (per-block values are not supported)');
  return v[0];
}

/** A diffusers UNet2DConditionModel config -> our camelCase config input (validated by parseUNetConfig). */
export function unetConfigFromDiffusers(input: Record<string, unknown>): Record<string, unknown> {
  const known = new Set([...Object.keys(DIFFUSERS_DEFAULTS), ...IGNORED_KEYS, '_txt2img']);
  const unknown = Object.keys(input).filter((k) => !known.has(k));
  if (unknown.length)
    throw new Error(`${check.what}: unknown diffusers key(s) ${unknown.map((k) => `'${k}'`).join(', ')} (not a UNet2DConditionModel key we can represent)`);
  if (input._class_name !== undefined && input._class_name !== DIFFUSERS_UNET_CLASS_NAME)
    check.fail('_class_name', input._class_name, `'${DIFFUSERS_UNET_CLASS_NAME}'`);
  const d = { ...DIFFUSERS_DEFAULTS, ...input };

  const boc = d.block_out_channels;
  if (!Array.isArray(boc) || boc.length < 1) check.fail('block_out_channels', boc, 'a list of 1 to 6 integers');
  const levels = boc.length;
  for (const k of FIXED_KEYS) {
    const v = d[k];
    const def = DIFFUSERS_DEFAULTS[k];
    const ok =
      sameJson(v, def) ||
      (Array.isArray(v) && v.length === levels && v.every((x) => sameJson(x, def))) ||
      (k === 'mid_block_only_cross_attention' && v === false);
    if (!ok)
      check.fail(
        k,
        v,
        `${JSON.stringify(def)} (this U-Net has no other; it is ${k === 'num_attention_heads' ? "diffusers' attention_head_dim that sets the heads" : 'a feature beyond SD-1.x / SD-2.x'})`,
      );
  }
  if (d.mid_block_type !== 'UNetMidBlock2DCrossAttn') check.fail('mid_block_type', d.mid_block_type, "'UNetMidBlock2DCrossAttn'");

  const down = d.down_block_types;
  const up = d.up_block_types;
  if (!Array.isArray(down) || down.length !== levels)
    check.fail('down_block_types', down, `a list of ${levels} block types (one per block_out_channels entry)`);
  if (!Array.isArray(up) || up.length !== levels) check.fail('up_block_types', up, `a list of ${levels} block types (one per block_out_channels entry)`);
  const attentionLevels = down.map((t, i) => {
    if (t !== 'CrossAttnDownBlock2D' && t !== 'DownBlock2D') check.fail(`down_block_types[${i}]`, t, "'CrossAttnDownBlock2D' or 'DownBlock2D'");
    return t === 'CrossAttnDownBlock2D';
  });
  up.forEach((t, i) => {
    // up_blocks run deepest first: up_block_types[i] is level levels-1-i.
    const want = attentionLevels[levels - 1 - i] ? 'CrossAttnUpBlock2D' : 'UpBlock2D';
    if (t !== want) check.fail(`up_block_types[${i}]`, t, `'${want}' (the up blocks mirror down_block_types)`);
  });

  const extras = (d._txt2img ?? {}) as UNetExtras;
  check.object(extras, '_txt2img');
  check.known(extras as Record<string, unknown>, ['contextLength', 'legacy'], '_txt2img');
  const ch0 = boc[0] as number;
  const out: Record<string, unknown> = {
    inChannels: d.in_channels,
    outChannels: d.out_channels,
    // sample_size is informative (diffusers' pipelines default the image size from it); SD's 64 when unset.
    sampleSize: d.sample_size ?? 64,
    channels: boc,
    resBlocksPerLevel: uniform(d.layers_per_block, 'layers_per_block', levels),
    attentionLevels,
    attentionHeads: d.attention_head_dim,
    contextDim: uniform(d.cross_attention_dim, 'cross_attention_dim', levels),
    contextLength: extras.contextLength ?? 77,
    timeEmbedDim: d.time_embedding_dim ?? (typeof ch0 === 'number' ? 4 * ch0 : ch0),
    groupNormGroups: d.norm_num_groups,
    normEps: d.norm_eps,
    flipSinToCos: d.flip_sin_to_cos,
    freqShift: d.freq_shift,
    linearProjection: d.use_linear_projection,
    upcastAttention: d.upcast_attention,
    legacy: extras.legacy ?? false,
  };
  // A null where we need a value reads as missing in parseUNetConfig's message.
  for (const [k, v] of Object.entries(out)) if (v === null) delete out[k];
  return out;
}

/** The config.json we write: diffusers' UNet2DConditionModel keys (all of them, as save_pretrained writes), our extras under `_txt2img`. */
export function unetConfigToJSON(config: UNetConfig): Record<string, unknown> {
  const c = parseUNetConfig(config);
  const levels = c.channels.length;
  const extras: UNetExtras = { contextLength: c.contextLength, ...(c.legacy ? { legacy: true } : {}) };
  const values: Record<string, unknown> = {
    ...DIFFUSERS_DEFAULTS,
    sample_size: c.sampleSize,
    in_channels: c.inChannels,
    out_channels: c.outChannels,
    flip_sin_to_cos: c.flipSinToCos,
    freq_shift: c.freqShift,
    down_block_types: c.attentionLevels.map((a) => (a ? 'CrossAttnDownBlock2D' : 'DownBlock2D')),
    up_block_types: c.attentionLevels.map((_, i) => (c.attentionLevels[levels - 1 - i] ? 'CrossAttnUpBlock2D' : 'UpBlock2D')),
    block_out_channels: c.channels,
    layers_per_block: c.resBlocksPerLevel,
    norm_num_groups: c.groupNormGroups,
    norm_eps: c.normEps,
    cross_attention_dim: c.contextDim,
    attention_head_dim: c.attentionHeads,
    use_linear_projection: c.linearProjection,
    upcast_attention: c.upcastAttention,
    time_embedding_dim: c.timeEmbedDim === 4 * c.channels[0] ? null : c.timeEmbedDim,
  };
  // Sorted keys, as diffusers' to_json_string writes them.
  const out: Record<string, unknown> = { _class_name: DIFFUSERS_UNET_CLASS_NAME, _diffusers_version: DIFFUSERS_VERSION, _txt2img: extras };
  for (const k of Object.keys(values).sort()) out[k] = values[k];
  return out;
}
