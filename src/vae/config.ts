/**
 * VaeConfig: the typed, validated, JSON-serialisable description of an AutoencoderKL, saved as
 * `vae/config.json`. Field names follow the `vae` section of /work/shared/bench/ldm-small.json
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

const WHAT = 'vae config';

function fail(key: string, value: unknown, allowed: string): never {
  throw new Error(`${WHAT}: ${key} must be ${allowed}, got ${JSON.stringify(value)}`);
}

function int(v: unknown, key: string, min: number, max = 1 << 20): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) fail(key, v, `an integer from ${min} to ${max}`);
  return v;
}

function num(v: unknown, key: string, ok: (x: number) => boolean, allowed: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) fail(key, v, allowed);
  return v;
}

function oneOf<T extends string | number>(allowed: readonly T[], v: unknown, key: string): T {
  if ((allowed as readonly unknown[]).includes(v)) return v as T;
  return fail(key, v, `one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`);
}

/** An input config: every field of VaeConfig, the defaulted ones optional. */
export type VaeConfigInput = Omit<VaeConfig, keyof typeof DEFAULTS> & Partial<Pick<VaeConfig, keyof typeof DEFAULTS>>;

/** Validates a config, fills defaults and returns a complete VaeConfig. Unknown keys are an error. */
export function parseVaeConfig(input: unknown): VaeConfig {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) fail('the config', input, 'an object');
  const raw = input as Record<string, unknown>;
  const unknown = Object.keys(raw).filter((k) => !(KEYS as string[]).includes(k));
  if (unknown.length > 0) {
    throw new Error(`${WHAT}: unknown key(s) ${unknown.map((k) => `'${k}'`).join(', ')}; allowed: ${KEYS.join(', ')}`);
  }
  const missing = KEYS.filter((k) => !(k in DEFAULTS) && raw[k] === undefined);
  if (missing.length > 0) throw new Error(`${WHAT}: missing key(s) ${missing.map((k) => `'${k}'`).join(', ')}`);
  const c = { ...DEFAULTS, ...raw } as Record<string, unknown>;

  if (c._class_name !== VAE_CLASS_NAME) fail('_class_name', c._class_name, `'${VAE_CLASS_NAME}'`);
  const version = int(c._version, '_version', 1);
  if (version > VAE_CONFIG_VERSION) fail('_version', version, `at most ${VAE_CONFIG_VERSION} (this library's version; the config is newer)`);

  if (!Array.isArray(c.channels) || c.channels.length < 2 || c.channels.length > 6) fail('channels', c.channels, 'an array of 2 to 6 integers');
  const channels = (c.channels as unknown[]).map((v, i) => int(v, `channels[${i}]`, 1));
  const groups = int(c.groupNormGroups, 'groupNormGroups', 1);
  channels.forEach((ch, i) => {
    if (ch % groups !== 0) fail(`channels[${i}]`, ch, `divisible by groupNormGroups (${groups})`);
  });
  const factor = oneOf(VAE_DOWNSAMPLE_FACTORS, c.downsampleFactor, 'downsampleFactor');
  if (2 ** (channels.length - 1) !== factor) {
    throw new Error(
      `${WHAT}: downsampleFactor ${factor} needs ${Math.log2(factor) + 1} levels (2^(levels-1)), ` +
        `but channels [${channels.join(', ')}] has ${channels.length}`,
    );
  }
  if (typeof c.midAttention !== 'boolean') fail('midAttention', c.midAttention, 'true or false');

  return {
    _class_name: VAE_CLASS_NAME,
    _version: version,
    imageChannels: oneOf(VAE_IMAGE_CHANNELS, c.imageChannels, 'imageChannels'),
    channels,
    resBlocksPerLevel: int(c.resBlocksPerLevel, 'resBlocksPerLevel', 1, 16),
    latentChannels: int(c.latentChannels, 'latentChannels', 1, 64),
    downsampleFactor: factor,
    groupNormGroups: groups,
    activation: oneOf(VAE_ACTIVATIONS, c.activation, 'activation'),
    midAttention: c.midAttention,
    reconLoss: oneOf(VAE_RECON_LOSSES, c.reconLoss, 'reconLoss'),
    klWeight: num(c.klWeight, 'klWeight', (x) => x >= 0, 'a finite number >= 0'),
    scalingFactor: num(c.scalingFactor, 'scalingFactor', (x) => x > 0, 'a finite number > 0'),
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
  if (!j?.vae) throw new Error(`${WHAT}: the file has no 'vae' section`);
  const fromImage = j.image?.channels !== undefined ? { imageChannels: j.image.channels } : {};
  return parseVaeConfig({ ...j.vae, ...fromImage, ...overrides });
}
