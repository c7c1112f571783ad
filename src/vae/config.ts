import { ConfigChecker } from '../checkpoint/config.js';

/**
 * VaeConfig: the typed, validated, JSON-serialisable description of an AutoencoderKL, saved as
 * `vae/config.json`. Field names follow the `vae` section of ../shared/bench/ldm-small.json
 * (plus imageChannels, midAttention, reconLoss, klWeight, scalingFactor), so that section parses
 * with `vaeConfigFromLdmSmall`.
 */

export const VAE_CLASS_NAME = 'AutoencoderKL';
/** Bumped when a saved config or the parameter layout changes incompatibly. */
export const VAE_CONFIG_VERSION = 1;

export const VAE_ACTIVATIONS = ['silu'] as const;
export const VAE_RECON_LOSSES = ['mse', 'l1'] as const;
export type VaeReconLoss = (typeof VAE_RECON_LOSSES)[number];
export const VAE_DOWNSAMPLE_FACTORS = [4, 8] as const;
export const VAE_IMAGE_CHANNELS = [1, 3] as const;

export interface VaeConfig {
  _class_name: typeof VAE_CLASS_NAME;
  _version: number;
  /** 1 (grayscale) or 3 (RGB). */
  imageChannels: number;
  /** Width per encoder level (the decoder mirrors it); one stride-2 step between levels. */
  channels: number[];
  resBlocksPerLevel: number;
  latentChannels: number;
  /** Image size / latent size: 2^(channels.length - 1), 4 or 8. */
  downsampleFactor: number;
  groupNormGroups: number;
  activation: (typeof VAE_ACTIVATIONS)[number];
  /**
   * SD's mid block (ResBlock, single-head self-attention, ResBlock) after the encoder's last
   * level and before the decoder's first. Off for ldm-small (the PyTorch peer has none).
   */
  midAttention: boolean;
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
  'groupNormGroups',
  'activation',
  'midAttention',
  'reconLoss',
  'klWeight',
  'scalingFactor',
];

const check: ConfigChecker = new ConfigChecker('vae config');

/** An input config: every field of VaeConfig, the defaulted ones optional. */
export type VaeConfigInput = Omit<VaeConfig, keyof typeof DEFAULTS> & Partial<Pick<VaeConfig, keyof typeof DEFAULTS>>;

/** Validates a config, fills defaults and returns a complete VaeConfig. Unknown keys are an error. */
export function parseVaeConfig(input: unknown): VaeConfig {
  const c = check.fields(input, KEYS, DEFAULTS, VAE_CLASS_NAME, VAE_CONFIG_VERSION);

  if (!Array.isArray(c.channels) || c.channels.length < 2 || c.channels.length > 6) check.fail('channels', c.channels, 'an array of 2 to 6 integers');
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

  return {
    _class_name: VAE_CLASS_NAME,
    _version: c._version as number,
    imageChannels: check.oneOf(VAE_IMAGE_CHANNELS, c.imageChannels, 'imageChannels'),
    channels,
    resBlocksPerLevel: check.int(c.resBlocksPerLevel, 'resBlocksPerLevel', 1, 16),
    latentChannels: check.int(c.latentChannels, 'latentChannels', 1, 64),
    downsampleFactor: factor,
    groupNormGroups: groups,
    activation: check.oneOf(VAE_ACTIVATIONS, c.activation, 'activation'),
    midAttention: c.midAttention,
    reconLoss: check.oneOf(VAE_RECON_LOSSES, c.reconLoss, 'reconLoss'),
    klWeight: check.num(c.klWeight, 'klWeight', (x) => x >= 0, 'a finite number >= 0'),
    scalingFactor: check.num(c.scalingFactor, 'scalingFactor', (x) => x > 0, 'a finite number > 0'),
  };
}

/** A plain JSON object (stable key order) for config.json. */
export function vaeConfigToJSON(config: VaeConfig): Record<string, unknown> {
  const valid = parseVaeConfig(config);
  const out: Record<string, unknown> = {};
  for (const k of KEYS) out[k] = valid[k];
  return out;
}

/**
 * The `vae` section of an ldm-small.json-style file, with imageChannels from its `image`
 * section; `overrides` sets the fields the file does not name (reconLoss, klWeight, ...).
 */
export function vaeConfigFromLdmSmall(json: unknown, overrides: Partial<VaeConfig> = {}): VaeConfig {
  const j = json as { vae?: Record<string, unknown>; image?: { channels?: unknown } } | null;
  if (!j?.vae) throw new Error(`${check.what}: the file has no 'vae' section`);
  const fromImage = j.image?.channels !== undefined ? { imageChannels: j.image.channels } : {};
  return parseVaeConfig({ ...j.vae, ...fromImage, ...overrides });
}
