/**
 * Schedulers: noise schedules, prediction types, DDPM / DDIM / Euler / Euler a / Heun /
 * DPM-Solver++ (2M, 2M SDE) / UniPC sampling, training targets, and the name tables that connect
 * them to AUTOMATIC1111's sampler names and diffusers' scheduler_config.json.
 *
 *   const sched = createScheduler({ type: 'ddim', betaSchedule: 'scaled-linear', betaStart: 0.00085, betaEnd: 0.012 });
 *   writeFileSync('scheduler/scheduler_config.json', JSON.stringify(schedulerConfigToJSON(sched.config), null, 2));
 *   const again = createScheduler(JSON.parse(readFileSync('scheduler/scheduler_config.json', 'utf8')));
 *   const karras = createScheduler(withA1111Sampler(sched.config, 'DPM++ 2M Karras'));
 *   const fromHub = createScheduler(schedulerConfigFromDiffusers(parseDiffusersJSON(text)));
 *
 * The sampling loop every type supports is documented in types.ts.
 */
import type { SchedulerBase } from './base.js';
import { type SchedulerConfig, parseSchedulerConfig } from './config.js';
import { DDIMScheduler } from './ddim.js';
import { DDPMScheduler } from './ddpm.js';
import { DPMSolverMultistepScheduler } from './dpm-solver.js';
import { EulerAncestralScheduler, EulerScheduler } from './euler.js';
import { HeunScheduler } from './heun.js';
import { UniPCMultistepScheduler } from './unipc.js';

export * from './config.js';
export * from './schedules.js';
export * from './prediction.js';
export * from './timesteps.js';
export * from './training.js';
export * from './sigmas.js';
export * from './names.js';
export * from './diffusers.js';
export * from './strength.js';
export type { NoiseSource, Scheduler, StepOutput, TimestepsInput } from './types.js';
export { SchedulerBase } from './base.js';
export { SigmaSchedulerBase, KDiffusionSchedulerBase, MultistepSchedulerBase, type SigmaSchedule } from './sigma-base.js';
export { DDPMScheduler, type DdpmStepCoefficients } from './ddpm.js';
export { DDIMScheduler, type DdimStepCoefficients } from './ddim.js';
export { EulerScheduler, EulerAncestralScheduler } from './euler.js';
export { HeunScheduler } from './heun.js';
export { DPMSolverMultistepScheduler } from './dpm-solver.js';
export { UniPCMultistepScheduler, solveSmall } from './unipc.js';

export type AnyScheduler =
  | DDPMScheduler
  | DDIMScheduler
  | EulerScheduler
  | EulerAncestralScheduler
  | HeunScheduler
  | DPMSolverMultistepScheduler
  | UniPCMultistepScheduler;

/**
 * Builds a scheduler from a (partial, possibly JSON-parsed) config; missing fields take the
 * defaults of DEFAULT_SCHEDULER_CONFIG, unknown fields and bad values are errors.
 */
export function createScheduler(config: Partial<SchedulerConfig> | unknown = {}): AnyScheduler {
  const c = parseSchedulerConfig(config ?? {});
  switch (c.type) {
    case 'ddpm':
      return new DDPMScheduler(c);
    case 'ddim':
      return new DDIMScheduler(c);
    case 'euler':
      return new EulerScheduler(c);
    case 'euler-ancestral':
      return new EulerAncestralScheduler(c);
    case 'heun':
      return new HeunScheduler(c);
    case 'dpmpp-2m':
    case 'dpmpp-2m-sde':
      return new DPMSolverMultistepScheduler(c);
    case 'unipc':
      return new UniPCMultistepScheduler(c);
  }
}

/** The same schedule with another sampler (e.g. train with DDPM, sample with DDIM or Euler). */
export function withType(s: SchedulerBase, type: SchedulerConfig['type'], overrides: Partial<SchedulerConfig> = {}): AnyScheduler {
  return createScheduler({ ...s.config, ...overrides, type });
}
