/**
 * SchedulerConfig: the typed, validated, JSON-serialisable description of a scheduler, saved as
 * `scheduler/scheduler_config.json` in pipeline folders.
 *
 * One flat config serves every scheduler type (as diffusers' `from_config` does), so a model
 * trained with a DDPM config can be sampled with DDIM or Euler by changing `type` alone; fields a
 * type does not use are kept and ignored (`eta`, `setAlphaToOne` for DDPM; `varianceType` for
 * DDIM; `useKarrasSigmas` for DDPM/DDIM; `solverOrder` outside the multistep solvers).
 *
 * Types and the diffusers classes they reproduce (names.ts has the full tables):
 *   ddpm             DDPMScheduler                      ancestral, DDPM eq. 6-7
 *   ddim             DDIMScheduler                      DDIM eq. 12/16
 *   euler            EulerDiscreteScheduler             Karras et al. 2022, Algorithm 1 without the correction
 *   euler-ancestral  EulerAncestralDiscreteScheduler    Euler + DDIM eta = 1 noise, in sigma form
 *   heun             HeunDiscreteScheduler              Karras et al. 2022, Algorithm 1
 *   dpmpp-2m         DPMSolverMultistepScheduler        Lu et al. 2022 (DPM-Solver++), algorithm dpmsolver++
 *   dpmpp-2m-sde     DPMSolverMultistepScheduler        ... algorithm sde-dpmsolver++
 *   unipc            UniPCMultistepScheduler            Zhao et al. 2023, bh2, predicting x0
 */
import { BETA_SCHEDULES, type BetaScheduleName } from './schedules.js';
import { TIMESTEP_SPACINGS, type TimestepSpacing } from './timesteps.js';
import { ConfigChecker } from '../checkpoint/config.js';

/** What the network predicts (./prediction.ts converts between them). */
export const PREDICTION_TYPES = ['epsilon', 'v', 'x0'] as const;
export type PredictionType = (typeof PREDICTION_TYPES)[number];

export const SCHEDULER_TYPES = ['ddpm', 'ddim', 'euler', 'euler-ancestral', 'heun', 'dpmpp-2m', 'dpmpp-2m-sde', 'unipc'] as const;
export type SchedulerType = (typeof SCHEDULER_TYPES)[number];

/** The types that sample on a sigma schedule and honour `useKarrasSigmas`. */
export const SIGMA_SCHEDULER_TYPES = ['euler', 'euler-ancestral', 'heun', 'dpmpp-2m', 'dpmpp-2m-sde', 'unipc'] as const satisfies readonly SchedulerType[];
/** The multistep solvers, which honour `solverOrder`. */
export const MULTISTEP_SCHEDULER_TYPES = ['dpmpp-2m', 'dpmpp-2m-sde', 'unipc'] as const satisfies readonly SchedulerType[];

export function isSigmaSchedulerType(t: SchedulerType): boolean {
  return (SIGMA_SCHEDULER_TYPES as readonly string[]).includes(t);
}

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
  /**
   * Clip the predicted x0 to [-clipSampleRange, clipSampleRange] in every step (pixel-space
   * models). Every type honours it; of diffusers' classes only DDPM, DDIM and Heun have it.
   */
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
  /**
   * Sigma-based types only: replace the spaced sigmas by Karras et al. 2022's schedule (eq. 5,
   * rho = 7) between the same end points (diffusers' `use_karras_sigmas`).
   */
  useKarrasSigmas: boolean;
  /**
   * dpmpp-2m, dpmpp-2m-sde, unipc: how many past model outputs the multistep solver uses (1, 2
   * or 3; diffusers' `solver_order`, default 2). dpmpp-2m with 3 is DPM++ 3M.
   */
  solverOrder: number;
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
  useKarrasSigmas: false,
  solverOrder: 2,
});

const KEYS = Object.keys(DEFAULT_SCHEDULER_CONFIG) as (keyof SchedulerConfig)[];

const check = new ConfigChecker('scheduler config');

/**
 * Validates a (partial) config, fills defaults, and returns a complete SchedulerConfig.
 * Unknown keys are an error (a typo would otherwise be silently ignored).
 */
export function parseSchedulerConfig(input: unknown): SchedulerConfig {
  const raw = check.object(input);
  check.known(raw, KEYS);
  const c = { ...DEFAULT_SCHEDULER_CONFIG, ...raw } as Record<keyof SchedulerConfig, unknown>;
  const out: SchedulerConfig = {
    type: check.oneOf(SCHEDULER_TYPES, c.type, 'type'),
    numTrainTimesteps: check.int(c.numTrainTimesteps, 'numTrainTimesteps', 2, 100_000),
    betaSchedule: check.oneOf(BETA_SCHEDULES, c.betaSchedule, 'betaSchedule'),
    betaStart: check.num(c.betaStart, 'betaStart', (x) => x > 0 && x < 1, 'a number in (0, 1)'),
    betaEnd: check.num(c.betaEnd, 'betaEnd', (x) => x > 0 && x < 1, 'a number in (0, 1)'),
    predictionType: check.oneOf(PREDICTION_TYPES, c.predictionType, 'predictionType'),
    varianceType: check.oneOf(VARIANCE_TYPES, c.varianceType, 'varianceType'),
    clipSample: check.bool(c.clipSample, 'clipSample'),
    clipSampleRange: check.num(c.clipSampleRange, 'clipSampleRange', (x) => x > 0, 'a number > 0'),
    timestepSpacing: check.oneOf(TIMESTEP_SPACINGS, c.timestepSpacing, 'timestepSpacing'),
    stepsOffset: check.int(c.stepsOffset, 'stepsOffset', 0, 100_000),
    setAlphaToOne: check.bool(c.setAlphaToOne, 'setAlphaToOne'),
    eta: check.num(c.eta, 'eta', (x) => x >= 0, 'a number >= 0'),
    rescaleBetasZeroSnr: check.bool(c.rescaleBetasZeroSnr, 'rescaleBetasZeroSnr'),
    useKarrasSigmas: check.bool(c.useKarrasSigmas, 'useKarrasSigmas'),
    solverOrder: check.oneOf([1, 2, 3], c.solverOrder, 'solverOrder'),
  };
  if (out.betaSchedule !== 'cosine' && out.betaEnd < out.betaStart) {
    check.fail('betaEnd', out.betaEnd, `>= betaStart (${out.betaStart})`);
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
