import { describe, expect, it } from 'vitest';
import {
  DDIMScheduler,
  DDPMScheduler,
  DEFAULT_SCHEDULER_CONFIG,
  createScheduler,
  parseSchedulerConfig,
  schedulerConfigFromDiffusers,
  schedulerConfigToJSON,
  withType,
} from '../../src/schedulers/index.js';

describe('SchedulerConfig', () => {
  it('defaults are DDPM (Ho et al. 2020): T = 1000, linear 1e-4..0.02, epsilon, fixed-small', () => {
    const s = createScheduler();
    expect(s).toBeInstanceOf(DDPMScheduler);
    expect(s.config).toEqual(DEFAULT_SCHEDULER_CONFIG);
    expect(s.timesteps.length).toBe(1000);
    expect(s.timesteps[0]).toBe(999);
  });

  it('round-trips through JSON (scheduler_config.json) to an identical scheduler', () => {
    const s = createScheduler({
      type: 'ddim',
      betaSchedule: 'scaled-linear',
      betaStart: 0.00085,
      betaEnd: 0.012,
      predictionType: 'v',
      stepsOffset: 1,
      eta: 0.3,
    });
    const json = JSON.stringify(schedulerConfigToJSON(s.config), null, 2);
    const again = createScheduler(JSON.parse(json));
    expect(again).toBeInstanceOf(DDIMScheduler);
    expect(again.config).toEqual(s.config);
    expect(Array.from(again.alphasCumprod)).toEqual(Array.from(s.alphasCumprod));
    expect(Object.keys(JSON.parse(json))).toEqual(Object.keys(DEFAULT_SCHEDULER_CONFIG));
  });

  it('withType keeps the schedule and swaps the sampler', () => {
    const train = createScheduler({ betaSchedule: 'cosine', predictionType: 'v' });
    const sampler = withType(train, 'ddim', { eta: 0 });
    expect(sampler).toBeInstanceOf(DDIMScheduler);
    expect(Array.from(sampler.alphasCumprod)).toEqual(Array.from(train.alphasCumprod));
    expect(sampler.config.predictionType).toBe('v');
  });

  it('bad values and unknown keys are errors naming the value and what is allowed', () => {
    expect(() => parseSchedulerConfig({ type: 'lms' })).toThrow(
      /type 'lms' is unknown; allowed: ddpm, ddim, euler, euler-ancestral, heun, dpmpp-2m, dpmpp-2m-sde, unipc$/,
    );
    expect(() => parseSchedulerConfig({ betaSchedule: 'scaled_linear' })).toThrow(
      /betaSchedule 'scaled_linear' is unknown; allowed: linear, scaled-linear, cosine, sigmoid, quadratic/,
    );
    expect(() => parseSchedulerConfig({ predictionType: 'v_prediction' })).toThrow(/predictionType 'v_prediction' is unknown; allowed: epsilon, v, x0/);
    expect(() => parseSchedulerConfig({ numTrainTimesteps: 10.5 })).toThrow(/numTrainTimesteps must be an integer from 2 to 100000, got 10.5/);
    expect(() => parseSchedulerConfig({ eta: -1 })).toThrow(/eta must be a number >= 0, got -1/);
    expect(() => parseSchedulerConfig({ clipSample: 'yes' })).toThrow(/clipSample must be true or false, got "yes"/);
    expect(() => parseSchedulerConfig({ beta_start: 0.1 })).toThrow(/unknown key\(s\) 'beta_start'; allowed: type, numTrainTimesteps/);
    expect(() => parseSchedulerConfig({ rescaleBetasZeroSnr: true })).toThrow(/needs predictionType 'v' or 'x0'/);
    expect(() => parseSchedulerConfig(null)).toThrow(/must be an object, got null/);
  });

  it("converts diffusers' Stable Diffusion v1 scheduler_config.json", () => {
    // runwayml/stable-diffusion-v1-5, scheduler/scheduler_config.json (PNDM there; DDIM here)
    const sd = {
      _class_name: 'DDIMScheduler',
      _diffusers_version: '0.6.0',
      beta_end: 0.012,
      beta_schedule: 'scaled_linear',
      beta_start: 0.00085,
      num_train_timesteps: 1000,
      set_alpha_to_one: false,
      skip_prk_steps: true,
      steps_offset: 1,
      trained_betas: null,
      clip_sample: false,
    };
    const c = schedulerConfigFromDiffusers(sd);
    expect(c).toMatchObject({
      type: 'ddim',
      betaSchedule: 'scaled-linear',
      betaStart: 0.00085,
      betaEnd: 0.012,
      setAlphaToOne: false,
      stepsOffset: 1,
      clipSample: false,
      predictionType: 'epsilon',
    });
    const s = createScheduler(c);
    s.setTimesteps(50);
    expect(s.timesteps.slice(0, 3)).toEqual([981, 961, 941]);
    expect(s.timesteps.at(-1)).toBe(1);
    expect(schedulerConfigFromDiffusers({ prediction_type: 'v_prediction' }).predictionType).toBe('v');
    expect(() => schedulerConfigFromDiffusers({ _class_name: 'PNDMScheduler' })).toThrow(
      /^diffusers scheduler 'PNDMScheduler' is not implemented; allowed: DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, HeunDiscreteScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler$/,
    );
  });
});
