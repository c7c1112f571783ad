/**
 * Sampler names and config files: AUTOMATIC1111 names -> our type and options, our types ->
 * diffusers class names, diffusers' scheduler_config.json in and out (with each class's
 * defaults, and one-line errors for what we do not implement), and the new config fields.
 */
import { describe, expect, it } from 'vitest';
import {
  A1111_NOT_IMPLEMENTED,
  A1111_SAMPLERS,
  DEFAULT_SCHEDULER_CONFIG,
  DIFFUSERS_CLASS_NAMES,
  type SchedulerConfig,
  SCHEDULER_TYPES,
  createScheduler,
  parseA1111Sampler,
  parseDiffusersJSON,
  parseSchedulerConfig,
  schedulerConfigFromDiffusers,
  schedulerConfigToDiffusers,
  withA1111Sampler,
} from '../../src/schedulers/index.js';

/** runwayml/stable-diffusion-v1-5, scheduler/scheduler_config.json. */
const SD15 = {
  _class_name: 'PNDMScheduler',
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

const ALLOWED_A1111 = 'Euler, Euler a, Heun, DPM\\+\\+ 2M, DPM\\+\\+ 2M Karras, DPM\\+\\+ 2M SDE, DPM\\+\\+ 2M SDE Karras, DDIM, DDPM, UniPC';

describe('AUTOMATIC1111 sampler names', () => {
  it('the names the brief lists map to our types and options', () => {
    const want: Record<string, [string, boolean]> = {
      Euler: ['euler', false],
      'Euler a': ['euler-ancestral', false],
      Heun: ['heun', false],
      'DPM++ 2M': ['dpmpp-2m', false],
      'DPM++ 2M Karras': ['dpmpp-2m', true],
      'DPM++ 2M SDE': ['dpmpp-2m-sde', false],
      'DPM++ 2M SDE Karras': ['dpmpp-2m-sde', true],
      DDIM: ['ddim', false],
      UniPC: ['unipc', false],
    };
    for (const [name, [type, karras]] of Object.entries(want)) {
      const s = parseA1111Sampler(name);
      expect([s.type, s.useKarrasSigmas]).toEqual([type, karras]);
    }
  });

  it('accepts other capitalisation, extra spaces and the k_ aliases', () => {
    expect(parseA1111Sampler('  dpm++   2m karras ').name).toBe('DPM++ 2M Karras');
    expect(parseA1111Sampler('EULER A').type).toBe('euler-ancestral');
    expect(parseA1111Sampler('k_dpmpp_2m_sde_ka')).toMatchObject({ type: 'dpmpp-2m-sde', useKarrasSigmas: true });
  });

  it('every entry builds a scheduler on SD 1.5 and keeps its noise schedule', () => {
    const base = schedulerConfigFromDiffusers(SD15, { type: 'ddim' });
    for (const entry of A1111_SAMPLERS) {
      const c = withA1111Sampler(base, entry.name);
      expect(c).toMatchObject({ type: entry.type, useKarrasSigmas: entry.useKarrasSigmas, betaSchedule: 'scaled-linear', stepsOffset: 1 });
      const s = createScheduler(c);
      s.setTimesteps(12);
      expect(s.timesteps.length).toBeGreaterThanOrEqual(12);
    }
  });

  it('unknown and unimplemented names are one-line errors listing the allowed names', () => {
    expect(() => parseA1111Sampler('Euler b')).toThrow(new RegExp(`^unknown A1111 sampler 'Euler b'; allowed: ${ALLOWED_A1111}$`));
    expect(() => parseA1111Sampler('LMS Karras')).toThrow(
      new RegExp(`^A1111 sampler 'LMS Karras' is not implemented \\(diffusers: LMSDiscreteScheduler\\); allowed: ${ALLOWED_A1111}$`),
    );
    expect(() => parseA1111Sampler(3)).toThrow(/^A1111 sampler name must be a string, got 3; allowed: Euler/);
    for (const name of Object.keys(A1111_NOT_IMPLEMENTED)) expect(() => parseA1111Sampler(name)).toThrow(/is not implemented/);
  });
});

describe('diffusers scheduler_config.json', () => {
  it('class names: one per type (the two DPM-Solver++ types share one)', () => {
    expect(Object.keys(DIFFUSERS_CLASS_NAMES)).toEqual([...SCHEDULER_TYPES]);
    expect(DIFFUSERS_CLASS_NAMES['dpmpp-2m']).toBe('DPMSolverMultistepScheduler');
    expect(DIFFUSERS_CLASS_NAMES['dpmpp-2m-sde']).toBe('DPMSolverMultistepScheduler');
    expect(DIFFUSERS_CLASS_NAMES.euler).toBe('EulerDiscreteScheduler');
  });

  it("SD 1.5's PNDMScheduler file is an error naming the class; read as another type it takes that class's defaults", () => {
    expect(() => schedulerConfigFromDiffusers(SD15)).toThrow(
      /^diffusers scheduler 'PNDMScheduler' is not implemented; allowed: DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler/,
    );
    // diffusers: EulerDiscreteScheduler.from_config(sd15) -> timestep_spacing 'linspace', timesteps 999, 888, 777, ...
    const euler = schedulerConfigFromDiffusers(SD15, { type: 'euler' });
    expect(euler).toMatchObject({ type: 'euler', timestepSpacing: 'linspace', stepsOffset: 1, clipSample: false, betaSchedule: 'scaled-linear' });
    const e = createScheduler(euler);
    e.setTimesteps(10);
    expect(e.timesteps.slice(0, 3)).toEqual([999, 888, 777]);
    // DPMSolverMultistepScheduler.from_config(sd15) -> 999, 899, 799; HeunDiscrete: 999, 888, 888
    const d = createScheduler(schedulerConfigFromDiffusers(SD15, { type: 'dpmpp-2m' }));
    d.setTimesteps(10);
    expect(d.timesteps.slice(0, 3)).toEqual([999, 899, 799]);
    const h = createScheduler(schedulerConfigFromDiffusers(SD15, { type: 'heun' }));
    h.setTimesteps(10);
    expect(h.timesteps.slice(0, 3)).toEqual([999, 888, 888]);
    // DDIM keeps its own default spacing (leading).
    expect(schedulerConfigFromDiffusers(SD15, { type: 'ddim' }).timestepSpacing).toBe('leading');
  });

  it('reads the class and its algorithm: DPMSolverMultistep dpmsolver++ / sde-dpmsolver++', () => {
    expect(schedulerConfigFromDiffusers({ _class_name: 'DPMSolverMultistepScheduler' }).type).toBe('dpmpp-2m');
    expect(
      schedulerConfigFromDiffusers({ _class_name: 'DPMSolverMultistepScheduler', algorithm_type: 'sde-dpmsolver++', use_karras_sigmas: true, solver_order: 3 }),
    ).toMatchObject({
      type: 'dpmpp-2m-sde',
      useKarrasSigmas: true,
      solverOrder: 3,
    });
    expect(schedulerConfigFromDiffusers({ _class_name: 'UniPCMultistepScheduler', solver_order: 1, prediction_type: 'v_prediction' })).toMatchObject({
      type: 'unipc',
      solverOrder: 1,
      predictionType: 'v',
    });
  });

  it('settings we do not implement are one-line errors naming key, value and what is allowed', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [
        { _class_name: 'EulerDiscreteScheduler', trained_betas: [0.1, 0.2] },
        /^diffusers EulerDiscreteScheduler config with trained_betas=\[0.1,0.2\] is not supported; allowed: null/,
      ],
      [{ _class_name: 'EulerDiscreteScheduler', use_exponential_sigmas: true }, /use_exponential_sigmas=true is not supported; allowed: false$/],
      [{ _class_name: 'EulerDiscreteScheduler', interpolation_type: 'log_linear' }, /interpolation_type="log_linear" is not supported; allowed: 'linear'$/],
      [{ _class_name: 'EulerDiscreteScheduler', final_sigmas_type: 'sigma_min' }, /final_sigmas_type="sigma_min" is not supported; allowed: 'zero'$/],
      [{ _class_name: 'EulerDiscreteScheduler', timestep_type: 'continuous' }, /timestep_type="continuous" is not supported/],
      [
        { _class_name: 'DPMSolverMultistepScheduler', algorithm_type: 'dpmsolver' },
        /^diffusers DPMSolverMultistepScheduler algorithm_type 'dpmsolver' is not implemented; allowed: dpmsolver\+\+, sde-dpmsolver\+\+$/,
      ],
      [{ _class_name: 'DPMSolverMultistepScheduler', solver_type: 'heun' }, /solver_type="heun" is not supported; allowed: 'midpoint'$/],
      [
        { _class_name: 'DPMSolverMultistepScheduler', thresholding: true },
        /thresholding=true is not supported; allowed: false \(dynamic thresholding is not implemented\)$/,
      ],
      [{ _class_name: 'DPMSolverMultistepScheduler', lambda_min_clipped: -5.1 }, /lambda_min_clipped=-5.1 is not supported; allowed: -Infinity/],
      [
        { _class_name: 'DPMSolverMultistepScheduler', solver_order: 3, lower_order_final: false },
        /lower_order_final=false is not supported; allowed: true with solver_order 3$/,
      ],
      [{ _class_name: 'UniPCMultistepScheduler', solver_type: 'bh1' }, /solver_type="bh1" is not supported; allowed: 'bh2'$/],
      [{ _class_name: 'UniPCMultistepScheduler', disable_corrector: [0] }, /disable_corrector=\[0\] is not supported; allowed: \[\]$/],
      [
        { _class_name: 'HeunDiscreteScheduler', beta_schedule: 'exp' },
        /^diffusers schedule 'exp' has no equivalent here; allowed diffusers names: linear, scaled_linear, squaredcos_cap_v2, sigmoid$/,
      ],
      [{ _class_name: 'EulerDiscreteScheduler', beta_schedule: 'sigmoid' }, /^diffusers EulerDiscreteScheduler has no beta_schedule 'sigmoid'/],
      [
        { _class_name: 'EulerDiscreteScheduler', prediction_type: 'flow_prediction' },
        /^diffusers prediction_type 'flow_prediction' is unknown; allowed: epsilon, v_prediction, sample$/,
      ],
      [{ _class_name: 'UniPCMultistepScheduler', solver_order: 4 }, /^scheduler config: solverOrder must be one of 1, 2, 3, got 4$/],
    ];
    for (const [d, re] of cases) expect(() => schedulerConfigFromDiffusers(d)).toThrow(re);
    // What diffusers itself treats as equivalent is accepted.
    expect(
      schedulerConfigFromDiffusers({ _class_name: 'DPMSolverMultistepScheduler', solver_order: 2, lower_order_final: false, euler_at_final: true }).type,
    ).toBe('dpmpp-2m');
    expect(schedulerConfigFromDiffusers({ _class_name: 'DPMSolverMultistepScheduler', algorithm_type: 'deis', solver_type: 'logrho' }).type).toBe('dpmpp-2m');
  });

  it('parseDiffusersJSON reads the -Infinity diffusers writes, and leaves strings alone', () => {
    const d = parseDiffusersJSON('{"lambda_min_clipped": -Infinity, "a": [Infinity, NaN], "note": "Infinity -Infinity NaN", "q": "say \\"NaN\\""}');
    expect(d.lambda_min_clipped).toBe(-Infinity);
    expect(d.a).toEqual([Infinity, NaN]);
    expect(d.note).toBe('Infinity -Infinity NaN');
    expect(d.q).toBe('say "NaN"');
    expect(() => parseDiffusersJSON('[1]')).toThrow(/must hold a JSON object/);
  });

  it('writes every type back; reading the file gives the same config', () => {
    const configs: Partial<SchedulerConfig>[] = [
      { type: 'ddpm', varianceType: 'fixed-large', clipSample: true },
      { type: 'ddim', setAlphaToOne: false, predictionType: 'v', timestepSpacing: 'trailing' },
      { type: 'euler', useKarrasSigmas: true, betaSchedule: 'scaled-linear', betaStart: 0.00085, betaEnd: 0.012, stepsOffset: 1 },
      { type: 'euler-ancestral', timestepSpacing: 'linspace', predictionType: 'v', rescaleBetasZeroSnr: true },
      { type: 'heun', clipSample: true, clipSampleRange: 2, predictionType: 'x0' },
      { type: 'dpmpp-2m', solverOrder: 3, betaSchedule: 'cosine' },
      { type: 'dpmpp-2m-sde', useKarrasSigmas: true },
      { type: 'unipc', solverOrder: 1, timestepSpacing: 'leading' },
    ];
    for (const partial of configs) {
      const c = parseSchedulerConfig(partial);
      const written = schedulerConfigToDiffusers(c);
      expect(written._class_name).toBe(DIFFUSERS_CLASS_NAMES[c.type]);
      const back = schedulerConfigFromDiffusers(parseDiffusersJSON(JSON.stringify(written)));
      expect(back).toEqual(c);
    }
  });

  it('refuses to write what the diffusers class cannot express', () => {
    const w = (p: Partial<SchedulerConfig>) => () => schedulerConfigToDiffusers(parseSchedulerConfig(p));
    expect(w({ type: 'euler-ancestral', useKarrasSigmas: true })).toThrow(
      /^cannot write useKarrasSigmas as a diffusers EulerAncestralDiscreteScheduler config \(the class has no such option\)$/,
    );
    expect(w({ type: 'euler', clipSample: true })).toThrow(/^cannot write clipSample as a diffusers EulerDiscreteScheduler config/);
    expect(w({ type: 'heun', predictionType: 'v', rescaleBetasZeroSnr: true })).toThrow(
      /^cannot write rescaleBetasZeroSnr as a diffusers HeunDiscreteScheduler config/,
    );
    expect(w({ type: 'unipc', betaSchedule: 'sigmoid' })).toThrow(/^cannot write betaSchedule 'sigmoid' as a diffusers UniPCMultistepScheduler config/);
    // Options a type ignores are left out, not refused.
    expect(schedulerConfigToDiffusers(parseSchedulerConfig({ type: 'ddim', useKarrasSigmas: true, eta: 0.5 }))).not.toHaveProperty('use_karras_sigmas');
  });
});

describe('config fields useKarrasSigmas and solverOrder', () => {
  it('default off / 2, validated with one-line errors, kept through JSON', () => {
    expect(DEFAULT_SCHEDULER_CONFIG.useKarrasSigmas).toBe(false);
    expect(DEFAULT_SCHEDULER_CONFIG.solverOrder).toBe(2);
    expect(() => parseSchedulerConfig({ useKarrasSigmas: 'yes' })).toThrow(/^scheduler config: useKarrasSigmas must be true or false, got "yes"$/);
    expect(() => parseSchedulerConfig({ solverOrder: 2.5 })).toThrow(/^scheduler config: solverOrder must be one of 1, 2, 3, got 2.5$/);
    expect(() => parseSchedulerConfig({ type: 'euler_a' })).toThrow(
      /^scheduler config: type 'euler_a' is unknown; allowed: ddpm, ddim, euler, euler-ancestral, heun, dpmpp-2m, dpmpp-2m-sde, unipc$/,
    );
    const c = parseSchedulerConfig({ type: 'unipc', useKarrasSigmas: true, solverOrder: 3 });
    expect(parseSchedulerConfig(JSON.parse(JSON.stringify(c)))).toEqual(c);
  });
});
