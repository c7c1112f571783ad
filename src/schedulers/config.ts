/**
 * SchedulerConfig: the typed, validated, JSON-serialisable description of a scheduler, saved as
 * `scheduler/scheduler_config.json` in pipeline folders.
 *
 * One flat config serves every scheduler type (as diffusers' `from_config` does), so a model
 * trained with a DDPM config can be sampled with DDIM by changing `type` alone; fields a type does
 * not use are kept and ignored (`eta`, `setAlphaToOne` for DDPM; `varianceType` for DDIM).
 */
import { BETA_SCHEDULES, type BetaScheduleName, resolveScheduleAlias } from './schedules.js';
import { PREDICTION_TYPES, type PredictionType } from './prediction.js';
import { TIMESTEP_SPACINGS, type TimestepSpacing, parseTimestepSpacing } from './timesteps.js';

export const SCHEDULER_TYPES = ['ddpm', 'ddim'] as const;
export type SchedulerType = (typeof SCHEDULER_TYPES)[number];

/**
 * DDPM sec. 3.2: sigma_t^2 = beta~_t (the true posterior variance, "fixed small", eq. 7) or
 * sigma_t^2 = beta_t ("fixed large"; the upper bound, optimal for x0 ~ N(0, I)).
 */
export const VARIANCE_TYPES = ['fixed-small', 'fixed-large'] as const;
export type VarianceType = (typeof VARIANCE_TYPES)[number];

export interface SchedulerConfig {
  type: SchedulerType;
  /** T, the number of diffusion steps the model is trained with. */
  numTrainTimesteps: number;
  betaSchedule: BetaScheduleName;
  /** beta at t = 0 (ignored by `cosine`). */
  betaStart: number;
  /** beta at t = T-1 (ignored by `cosine`). */
  betaEnd: number;
  predictionType: PredictionType;
  /** DDPM only. */
  varianceType: VarianceType;
  /** Clip the predicted x0 to [-clipSampleRange, clipSampleRange] in every step (pixel-space models). */
  clipSample: boolean;
  clipSampleRange: number;
  timestepSpacing: TimestepSpacing;
  /** Added to `leading` timesteps (Stable Diffusion: 1). */
  stepsOffset: number;
  /** DDIM: alphaBar used after the last step: 1 (true) or alphaBar_0 (false), as diffusers. */
  setAlphaToOne: boolean;
  /** DDIM eta (eq. 16): 0 deterministic DDIM, 1 DDPM-like ancestral noise. */
  eta: number;
  /** Rescale betas to zero terminal SNR (Lin et al. 2024); needs predictionType v or x0. */
  rescaleBetasZeroSnr: boolean;
}

/** DDPM's own defaults (Ho et al. 2020, sec. 4): T = 1000, linear 1e-4 .. 0.02, eps-prediction. */
export const DEFAULT_SCHEDULER_CONFIG: Readonly<SchedulerConfig> = Object.freeze({
  type: 'ddpm',
  numTrainTimesteps: 1000,
  betaSchedule: 'linear',
  betaStart: 0.0001,
  betaEnd: 0.02,
  predictionType: 'epsilon',
  varianceType: 'fixed-small',
  clipSample: false,
  clipSampleRange: 1,
  timestepSpacing: 'leading',
  stepsOffset: 0,
  setAlphaToOne: true,
  eta: 0,
  rescaleBetasZeroSnr: false,
});

const KEYS = Object.keys(DEFAULT_SCHEDULER_CONFIG) as (keyof SchedulerConfig)[];

function oneOf<T extends string>(allowed: readonly T[], v: unknown, key: string): T {
  if (typeof v === 'string' && (allowed as readonly string[]).includes(v)) return v as T;
  throw new Error(`scheduler config: ${key} '${String(v)}' is unknown; allowed: ${allowed.join(', ')}`);
}

function num(v: unknown, key: string, ok: (x: number) => boolean, allowed: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) {
    throw new Error(`scheduler config: ${key} must be ${allowed}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function bool(v: unknown, key: string): boolean {
  if (typeof v !== 'boolean') throw new Error(`scheduler config: ${key} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * Validates a (partial) config, fills defaults, and returns a complete SchedulerConfig.
 * Unknown keys are an error (a typo would otherwise be silently ignored).
 */
export function parseSchedulerConfig(input: unknown): SchedulerConfig {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new Error(`scheduler config must be an object, got ${JSON.stringify(input)}`);
  }
  const raw = input as Record<string, unknown>;
  const unknown = Object.keys(raw).filter((k) => !(KEYS as string[]).includes(k));
  if (unknown.length > 0) {
    throw new Error(`scheduler config: unknown key(s) ${unknown.map((k) => `'${k}'`).join(', ')}; allowed: ${KEYS.join(', ')}`);
  }
  const c = { ...DEFAULT_SCHEDULER_CONFIG, ...raw } as Record<keyof SchedulerConfig, unknown>;
  const out: SchedulerConfig = {
    type: oneOf(SCHEDULER_TYPES, c.type, 'type'),
    numTrainTimesteps: num(c.numTrainTimesteps, 'numTrainTimesteps', (x) => Number.isInteger(x) && x >= 2 && x <= 100_000, 'an integer from 2 to 100000'),
    betaSchedule: oneOf(BETA_SCHEDULES, c.betaSchedule, 'betaSchedule'),
    betaStart: num(c.betaStart, 'betaStart', (x) => x > 0 && x < 1, 'a number in (0, 1)'),
    betaEnd: num(c.betaEnd, 'betaEnd', (x) => x > 0 && x < 1, 'a number in (0, 1)'),
    predictionType: oneOf(PREDICTION_TYPES, c.predictionType, 'predictionType'),
    varianceType: oneOf(VARIANCE_TYPES, c.varianceType, 'varianceType'),
    clipSample: bool(c.clipSample, 'clipSample'),
    clipSampleRange: num(c.clipSampleRange, 'clipSampleRange', (x) => x > 0, 'a number > 0'),
    timestepSpacing: oneOf(TIMESTEP_SPACINGS, c.timestepSpacing, 'timestepSpacing'),
    stepsOffset: num(c.stepsOffset, 'stepsOffset', (x) => Number.isInteger(x) && x >= 0, 'an integer >= 0'),
    setAlphaToOne: bool(c.setAlphaToOne, 'setAlphaToOne'),
    eta: num(c.eta, 'eta', (x) => x >= 0, 'a number >= 0'),
    rescaleBetasZeroSnr: bool(c.rescaleBetasZeroSnr, 'rescaleBetasZeroSnr'),
  };
  if (out.betaSchedule !== 'cosine' && out.betaEnd < out.betaStart) {
    throw new Error(`scheduler config: betaEnd (${out.betaEnd}) must be >= betaStart (${out.betaStart})`);
  }
  if (out.rescaleBetasZeroSnr && out.predictionType === 'epsilon') {
    throw new Error(
      "scheduler config: rescaleBetasZeroSnr needs predictionType 'v' or 'x0' (at zero terminal SNR an epsilon " +
        'prediction carries no information about x0; Lin et al. 2024, sec. 3.2)',
    );
  }
  return out;
}

/** A plain JSON object (stable key order) for scheduler_config.json. */
export function schedulerConfigToJSON(config: SchedulerConfig): Record<string, unknown> {
  const valid = parseSchedulerConfig(config);
  const out: Record<string, unknown> = {};
  for (const k of KEYS) out[k] = valid[k];
  return out;
}

/**
 * Converts a diffusers `scheduler_config.json` (DDPMScheduler / DDIMScheduler, snake_case) to
 * ours. Keys we do not model (`_class_name`, `trained_betas`, `thresholding`, ...) are rejected if
 * they change behaviour, and dropped otherwise.
 */
export function schedulerConfigFromDiffusers(d: Record<string, unknown>): SchedulerConfig {
  const out: Record<string, unknown> = {};
  const cls = d._class_name;
  if (cls === 'DDIMScheduler') out.type = 'ddim';
  else if (cls === 'DDPMScheduler' || cls === undefined) out.type = 'ddpm';
  else throw new Error(`diffusers scheduler '${String(cls)}' is not implemented; allowed: DDPMScheduler, DDIMScheduler`);
  if (d.trained_betas != null) throw new Error('diffusers config with trained_betas is not supported');
  if (d.thresholding === true) throw new Error('diffusers config with thresholding=true (dynamic thresholding) is not supported');
  const map: [string, keyof SchedulerConfig][] = [
    ['num_train_timesteps', 'numTrainTimesteps'],
    ['beta_start', 'betaStart'],
    ['beta_end', 'betaEnd'],
    ['clip_sample', 'clipSample'],
    ['clip_sample_range', 'clipSampleRange'],
    ['steps_offset', 'stepsOffset'],
    ['set_alpha_to_one', 'setAlphaToOne'],
    ['rescale_betas_zero_snr', 'rescaleBetasZeroSnr'],
  ];
  for (const [from, to] of map) if (d[from] !== undefined) out[to] = d[from];
  // diffusers' own default for DDPM/DDIM is clip_sample=True (ours is false: latents are unbounded).
  if (d.clip_sample === undefined) out.clipSample = true;
  if (d.beta_schedule !== undefined) out.betaSchedule = resolveScheduleAlias('diffusers', String(d.beta_schedule));
  if (d.timestep_spacing !== undefined) out.timestepSpacing = parseTimestepSpacing(d.timestep_spacing, 'timestep_spacing');
  if (d.prediction_type !== undefined) {
    const p = { epsilon: 'epsilon', v_prediction: 'v', sample: 'x0' }[String(d.prediction_type)];
    if (!p) throw new Error(`diffusers prediction_type '${String(d.prediction_type)}' is unknown; allowed: epsilon, v_prediction, sample`);
    out.predictionType = p;
  }
  if (d.variance_type !== undefined) {
    const v = { fixed_small: 'fixed-small', fixed_large: 'fixed-large' }[String(d.variance_type)];
    if (!v) throw new Error(`diffusers variance_type '${String(d.variance_type)}' is not supported; allowed: fixed_small, fixed_large`);
    out.varianceType = v;
  }
  return parseSchedulerConfig(out);
}

