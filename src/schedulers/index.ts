/**
 * Schedulers: noise schedules, prediction types, DDPM / DDIM sampling and training targets.
 *
 *   const sched = createScheduler({ type: 'ddim', betaSchedule: 'scaled-linear', betaStart: 0.00085, betaEnd: 0.012 });
 *   writeFileSync('scheduler/scheduler_config.json', JSON.stringify(schedulerConfigToJSON(sched.config), null, 2));
 *   const again = createScheduler(JSON.parse(readFileSync('scheduler/scheduler_config.json', 'utf8')));
 */
import { SchedulerBase } from './base.js';
import { type SchedulerConfig, parseSchedulerConfig } from './config.js';
import { DDIMScheduler } from './ddim.js';
import { DDPMScheduler } from './ddpm.js';

export * from './config.js';
export * from './schedules.js';
export * from './prediction.js';
export * from './timesteps.js';
export * from './training.js';
export type { Scheduler, StepOutput, TimestepsInput } from './types.js';
export { SchedulerBase } from './base.js';
export { DDPMScheduler, type DdpmStepCoefficients } from './ddpm.js';
export { DDIMScheduler, type DdimStepCoefficients } from './ddim.js';

export type AnyScheduler = DDPMScheduler | DDIMScheduler;

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
  }
}

/** The same schedule with another sampler (e.g. train with DDPM, sample with DDIM). */
export function withType(s: SchedulerBase, type: SchedulerConfig['type'], overrides: Partial<SchedulerConfig> = {}): AnyScheduler {
  return createScheduler({ ...s.config, ...overrides, type });
}
