/**
 * Name tables: AUTOMATIC1111 (stable-diffusion-webui) sampler names -> our scheduler type and
 * options, and our types -> diffusers' scheduler class names.
 *
 * The A1111 column follows diffusers' own mapping table (docs/source/en/api/schedulers/overview.md
 * at commit 58eb52c): A1111 runs k-diffusion's samplers, which use the same update rules but
 * k-diffusion's own discretisation of the sigma range, so the same name gives close, not
 * bit-identical, images across the two programs. What we reproduce exactly is diffusers.
 */
import { SCHEDULER_TYPES, type SchedulerConfig, type SchedulerType, parseSchedulerConfig } from './config.js';

/** The sampler options an A1111 name stands for. */
export interface SamplerChoice {
  type: SchedulerType;
  useKarrasSigmas: boolean;
  /** Only for the multistep types; absent = keep the config's (default 2). */
  solverOrder?: number;
}

export interface A1111Sampler extends SamplerChoice {
  /** The name as A1111's UI and its API (`sampler_name`) spell it. */
  name: string;
  /** A1111's internal short names (`k_euler_a`, ...). */
  aliases: readonly string[];
  note?: string;
}

export const A1111_SAMPLERS: readonly A1111Sampler[] = [
  { name: 'Euler', aliases: ['k_euler'], type: 'euler', useKarrasSigmas: false },
  { name: 'Euler a', aliases: ['k_euler_a'], type: 'euler-ancestral', useKarrasSigmas: false },
  { name: 'Heun', aliases: ['k_heun'], type: 'heun', useKarrasSigmas: false },
  { name: 'DPM++ 2M', aliases: ['k_dpmpp_2m'], type: 'dpmpp-2m', useKarrasSigmas: false, solverOrder: 2 },
  { name: 'DPM++ 2M Karras', aliases: ['k_dpmpp_2m_ka'], type: 'dpmpp-2m', useKarrasSigmas: true, solverOrder: 2 },
  { name: 'DPM++ 2M SDE', aliases: ['k_dpmpp_2m_sde'], type: 'dpmpp-2m-sde', useKarrasSigmas: false, solverOrder: 2 },
  { name: 'DPM++ 2M SDE Karras', aliases: ['k_dpmpp_2m_sde_ka'], type: 'dpmpp-2m-sde', useKarrasSigmas: true, solverOrder: 2 },
  { name: 'DDIM', aliases: ['ddim'], type: 'ddim', useKarrasSigmas: false, note: 'eta 0 unless the config sets eta' },
  { name: 'DDPM', aliases: ['ddpm'], type: 'ddpm', useKarrasSigmas: false },
  {
    name: 'UniPC',
    aliases: ['unipc'],
    type: 'unipc',
    useKarrasSigmas: false,
    solverOrder: 2,
    note: "diffusers' UniPCMultistepScheduler defaults (bh2, order 2); A1111's own defaults are bh1, order 3",
  },
];

/** A1111 names we know but do not implement, with the diffusers class that has them. */
export const A1111_NOT_IMPLEMENTED: Readonly<Record<string, string>> = {
  LMS: 'LMSDiscreteScheduler',
  'LMS Karras': 'LMSDiscreteScheduler',
  DPM2: 'KDPM2DiscreteScheduler',
  'DPM2 Karras': 'KDPM2DiscreteScheduler',
  'DPM2 a': 'KDPM2AncestralDiscreteScheduler',
  'DPM2 a Karras': 'KDPM2AncestralDiscreteScheduler',
  'DPM++ 2S a': 'none (close to DPMSolverSinglestepScheduler)',
  'DPM++ 2S a Karras': 'none (close to DPMSolverSinglestepScheduler)',
  'DPM++ SDE': 'DPMSolverSinglestepScheduler',
  'DPM++ SDE Karras': 'DPMSolverSinglestepScheduler',
  'DPM++ 3M SDE': 'DPMSolverMultistepScheduler (solver_order 3; not mapped here)',
  'DPM++ 3M SDE Karras': 'DPMSolverMultistepScheduler (solver_order 3; not mapped here)',
  'DPM fast': 'none',
  'DPM adaptive': 'none',
  PLMS: 'PNDMScheduler',
  LCM: 'LCMScheduler',
  Restart: 'none',
};

function normalise(name: string): string {
  return name.trim().replace(/\s+/g, ' ').toLowerCase();
}

/**
 * The type and options for an A1111 sampler name (exact, or ignoring case and extra spaces, or an
 * A1111 short alias). Errors name the value and list the accepted names.
 */
export function parseA1111Sampler(name: unknown): A1111Sampler {
  const allowed = A1111_SAMPLERS.map((s) => s.name).join(', ');
  if (typeof name !== 'string') throw new Error(`A1111 sampler name must be a string, got ${JSON.stringify(name)}; allowed: ${allowed}`);
  const key = normalise(name);
  const hit = A1111_SAMPLERS.find((s) => normalise(s.name) === key || s.aliases.includes(key));
  if (hit) return hit;
  const known = Object.keys(A1111_NOT_IMPLEMENTED).find((k) => normalise(k) === key);
  if (known) {
    throw new Error(`A1111 sampler '${name}' is not implemented (diffusers: ${A1111_NOT_IMPLEMENTED[known]}); allowed: ${allowed}`);
  }
  throw new Error(`unknown A1111 sampler '${name}'; allowed: ${allowed}`);
}

/** Every sampler name a user may give: our scheduler types, then A1111's names. */
export const SAMPLER_NAMES: readonly string[] = [...SCHEDULER_TYPES, ...A1111_SAMPLERS.map((s) => s.name)];

/**
 * A sampler as users name it: one of our scheduler types ('dpmpp-2m', any case) or an A1111 name
 * ('DPM++ 2M Karras', as parseA1111Sampler reads it). Returns its A1111 entry, whose `name` is
 * what a PNG's parameters record. Errors name the value and list every accepted name.
 */
export function parseSamplerName(name: unknown): A1111Sampler {
  const key = typeof name === 'string' ? normalise(name) : undefined;
  const byType = A1111_SAMPLERS.find((s) => s.type === key && !s.useKarrasSigmas);
  if (byType) return byType;
  try {
    return parseA1111Sampler(name);
  } catch (e) {
    const why = (e as Error).message.replace(/; allowed: .*$/, '');
    throw new Error(`${why.replace(/^unknown A1111 sampler/, 'unknown sampler')}; allowed: ${SAMPLER_NAMES.join(', ')}`);
  }
}

/** `base` (a model's scheduler config: its noise schedule) set up to sample as the named A1111 sampler. */
export function withA1111Sampler(base: Partial<SchedulerConfig>, name: string): SchedulerConfig {
  const s = parseA1111Sampler(name);
  const options: Partial<SchedulerConfig> = { type: s.type, useKarrasSigmas: s.useKarrasSigmas };
  if (s.solverOrder !== undefined) options.solverOrder = s.solverOrder;
  return parseSchedulerConfig({ ...base, ...options });
}

/** Our type -> the diffusers class that implements it (the two DPM types share one class). */
export const DIFFUSERS_CLASS_NAMES: Readonly<Record<SchedulerType, string>> = {
  ddpm: 'DDPMScheduler',
  ddim: 'DDIMScheduler',
  euler: 'EulerDiscreteScheduler',
  'euler-ancestral': 'EulerAncestralDiscreteScheduler',
  heun: 'HeunDiscreteScheduler',
  'dpmpp-2m': 'DPMSolverMultistepScheduler',
  'dpmpp-2m-sde': 'DPMSolverMultistepScheduler',
  unipc: 'UniPCMultistepScheduler',
};

/** The diffusers classes we can read, in a stable order (for error messages). */
export const DIFFUSERS_CLASSES: readonly string[] = [...new Set(Object.values(DIFFUSERS_CLASS_NAMES))];
