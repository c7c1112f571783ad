import { ConfigChecker } from '../checkpoint/config.js';

/**
 * UNetConfig: the typed, validated, JSON-serialisable description of a UNet2DCondition, saved as
 * `unet/config.json`. Field names are those of the `unet` section of
 * ../shared/bench/ldm-small.json, so that section parses as it is.
 */

export const UNET_CLASS_NAME = 'UNet2DCondition';
/** Bumped when a saved config or the parameter layout changes incompatibly. */
export const UNET_CONFIG_VERSION = 1;

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
  attentionHeads: number;
  /** Width of the text-encoder states cross-attention reads. */
  contextDim: number;
  /** Tokens per context (77 for CLIP); informative, other lengths are accepted. */
  contextLength: number;
  timeEmbedDim: number;
  groupNormGroups: number;
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
  'activation',
  'feedForward',
  'downsample',
  'upsample',
];

const check: ConfigChecker = new ConfigChecker('unet config');

/** An input config: every field of UNetConfig, the defaulted ones optional. */
export type UNetConfigInput = Omit<UNetConfig, keyof typeof DEFAULTS> & Partial<Pick<UNetConfig, keyof typeof DEFAULTS>>;

/**
 * Validates a config (an object such as ldm-small.json's `unet` section or a saved config.json),
 * fills defaults and returns a complete UNetConfig. Unknown keys are an error.
 */
export function parseUNetConfig(input: unknown): UNetConfig {
  const c = check.fields(input, KEYS, DEFAULTS, UNET_CLASS_NAME, UNET_CONFIG_VERSION);

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
  const heads = check.int(c.attentionHeads, 'attentionHeads', 1);
  channels.forEach((ch, i) => {
    // The middle block always has a transformer, at the last level's width.
    if ((attentionLevels[i] || i === levels - 1) && ch % heads !== 0) check.fail('attentionHeads', heads, `a divisor of channels[${i}] (${ch})`);
  });

  const factor = 2 ** (levels - 1);
  const sampleSize = check.int(c.sampleSize, 'sampleSize', 1);
  if (sampleSize % factor !== 0) check.fail('sampleSize', sampleSize, `divisible by ${factor} (2^(levels-1) for ${levels} levels)`);

  const inChannels = check.int(c.inChannels, 'inChannels', 1);
  return {
    _class_name: UNET_CLASS_NAME,
    _version: c._version as number,
    inChannels,
    outChannels: c.outChannels === undefined ? inChannels : check.int(c.outChannels, 'outChannels', 1),
    sampleSize,
    channels,
    resBlocksPerLevel: check.int(c.resBlocksPerLevel, 'resBlocksPerLevel', 1, 16),
    attentionLevels,
    attentionHeads: heads,
    contextDim: check.int(c.contextDim, 'contextDim', 1),
    contextLength: check.int(c.contextLength, 'contextLength', 1),
    timeEmbedDim: check.int(c.timeEmbedDim, 'timeEmbedDim', 1),
    groupNormGroups: groups,
    activation: check.oneOf(UNET_ACTIVATIONS, c.activation, 'activation'),
    feedForward: check.oneOf(UNET_FEED_FORWARDS, c.feedForward, 'feedForward'),
    downsample: check.oneOf(UNET_DOWNSAMPLES, c.downsample, 'downsample'),
    upsample: check.oneOf(UNET_UPSAMPLES, c.upsample, 'upsample'),
  };
}

/** A plain JSON object (stable key order) for config.json. */
export function unetConfigToJSON(config: UNetConfig): Record<string, unknown> {
  const valid = parseUNetConfig(config);
  const out: Record<string, unknown> = {};
  for (const k of KEYS) if (k !== 'outChannels' || valid.outChannels !== valid.inChannels) out[k] = valid[k];
  return out;
}

/** The `unet` section of an ldm-small.json-style file ({ unet: {...}, ... }). */
export function unetConfigFromLdmSmall(json: unknown): UNetConfig {
  const section = (json as { unet?: unknown } | null)?.unet;
  if (section === undefined) throw new Error(`${check.what}: the file has no 'unet' section`);
  return parseUNetConfig(section);
}
