/**
 * diffusers' `scheduler_config.json` (snake_case keys, `_class_name`) to and from our
 * SchedulerConfig, for the classes we reproduce (names.ts: DIFFUSERS_CLASS_NAMES).
 *
 * Reading follows diffusers' `from_config`: a key the file lacks takes that class's default
 * (notably timestep_spacing: 'leading' for DDPM/DDIM, 'linspace' for the others; clip_sample: true
 * for DDPM/DDIM), keys the class does not know are ignored, and a key whose value changes the
 * sampler in a way we do not implement (trained_betas, thresholding, exponential sigmas, ...) is an
 * error naming it. Writing gives every key that matters explicitly, so the file means the same
 * thing to diffusers whatever its defaults, and refuses settings the class cannot express.
 */
import { type SchedulerConfig, type SchedulerType, parseSchedulerConfig } from './config.js';
import { DIFFUSERS_CLASSES, DIFFUSERS_CLASS_NAMES } from './names.js';
import { type BetaScheduleName, resolveScheduleAlias } from './schedules.js';
import { parseTimestepSpacing } from './timesteps.js';

/** The diffusers commit whose schedulers the fixtures and these tables were checked against. */
export const DIFFUSERS_REFERENCE_COMMIT = '58eb52c0803ea9af3abec60841c2a093bdf1f951';

const PREDICTION_FROM_DIFFUSERS: Record<string, SchedulerConfig['predictionType']> = { epsilon: 'epsilon', v_prediction: 'v', sample: 'x0' };
const PREDICTION_TO_DIFFUSERS: Record<SchedulerConfig['predictionType'], string> = { epsilon: 'epsilon', v: 'v_prediction', x0: 'sample' };

/**
 * JSON.parse for files Python's json module wrote: it allows the bare tokens Infinity, -Infinity
 * and NaN (diffusers writes `"lambda_min_clipped": -Infinity`), which JSON.parse rejects.
 */
export function parseDiffusersJSON(text: string): Record<string, unknown> {
  const marked = text.replace(/("(?:[^"\\]|\\.)*")|(-?Infinity|NaN)/g, (_m, str: string | undefined, tok: string | undefined) =>
    str !== undefined ? str : `{"__nonfinite__":"${tok}"}`,
  );
  const value: unknown = JSON.parse(marked, (_k, v: unknown) => {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      const o = v as Record<string, unknown>;
      const keys = Object.keys(o);
      if (keys.length === 1 && keys[0] === '__nonfinite__') return o.__nonfinite__ === 'NaN' ? NaN : o.__nonfinite__ === '-Infinity' ? -Infinity : Infinity;
    }
    return v;
  });
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('scheduler_config.json must hold a JSON object');
  return value as Record<string, unknown>;
}

function typeFromClass(d: Record<string, unknown>): SchedulerType {
  const cls = d._class_name;
  if (cls === undefined) return 'ddpm';
  if (cls === 'DPMSolverMultistepScheduler') {
    const alg = d.algorithm_type ?? 'dpmsolver++';
    // diffusers itself replaces 'deis' by 'dpmsolver++' in this class.
    if (alg === 'dpmsolver++' || alg === 'deis') return 'dpmpp-2m';
    if (alg === 'sde-dpmsolver++') return 'dpmpp-2m-sde';
    throw new Error(`diffusers DPMSolverMultistepScheduler algorithm_type '${String(alg)}' is not implemented; allowed: dpmsolver++, sde-dpmsolver++`);
  }
  const hit = (Object.keys(DIFFUSERS_CLASS_NAMES) as SchedulerType[]).find((t) => DIFFUSERS_CLASS_NAMES[t] === cls);
  if (!hit) throw new Error(`diffusers scheduler '${String(cls)}' is not implemented; allowed: ${DIFFUSERS_CLASSES.join(', ')}`);
  return hit;
}

/** Rejects a key whose value is not the one we implement (`ok` decides; `what` says what is allowed). */
function only(d: Record<string, unknown>, key: string, ok: (v: unknown) => boolean, what: string): void {
  if (d[key] !== undefined && !ok(d[key])) {
    const v = d[key];
    const shown = typeof v === 'number' ? String(v) : JSON.stringify(v);
    throw new Error(`diffusers ${String(d._class_name ?? 'scheduler')} config with ${key}=${shown} is not supported; allowed: ${what}`);
  }
}

const isFalsy = (v: unknown): boolean => v === false || v === null;

/**
 * Converts a diffusers `scheduler_config.json` object to our config. `options.type` reads the file
 * as another sampler, as diffusers' `EulerDiscreteScheduler.from_config(pipe.scheduler.config)`
 * does: its class is then ignored (SD 1.5's file names PNDMScheduler, which we do not implement)
 * and that type's defaults fill the missing keys.
 */
export function schedulerConfigFromDiffusers(d: Record<string, unknown>, options: { type?: SchedulerType } = {}): SchedulerConfig {
  const type = options.type ?? typeFromClass(d);
  const cls = DIFFUSERS_CLASS_NAMES[type];
  const dd: Record<string, unknown> = { ...d, _class_name: cls };
  const out: Record<string, unknown> = { type };
  const vp = type === 'ddpm' || type === 'ddim';
  const multistep = type === 'dpmpp-2m' || type === 'dpmpp-2m-sde' || type === 'unipc';

  only(dd, 'trained_betas', (v) => v === null, 'null (use beta_start/beta_end/beta_schedule)');
  only(dd, 'thresholding', isFalsy, 'false (dynamic thresholding is not implemented)');
  for (const k of ['use_exponential_sigmas', 'use_beta_sigmas', 'use_lu_lambdas', 'use_flow_sigmas', 'use_dynamic_shifting']) only(dd, k, isFalsy, 'false');
  if (!vp) {
    only(dd, 'final_sigmas_type', (v) => v === 'zero', "'zero'");
    only(dd, 'sigma_min', (v) => v === null, 'null');
    only(dd, 'sigma_max', (v) => v === null, 'null');
  }
  if (type === 'euler') {
    only(dd, 'interpolation_type', (v) => v === 'linear', "'linear'");
    only(dd, 'timestep_type', (v) => v === 'discrete', "'discrete'");
  }
  if (type === 'dpmpp-2m' || type === 'dpmpp-2m-sde') {
    // diffusers maps the UniPC/DEIS solver names to midpoint in this class.
    only(dd, 'solver_type', (v) => ['midpoint', 'logrho', 'bh1', 'bh2'].includes(String(v)), "'midpoint'");
    only(dd, 'lambda_min_clipped', (v) => v === -Infinity, '-Infinity (no clipping)');
    only(dd, 'variance_type', (v) => v === null, 'null');
    // lower_order_final only changes 3M's second-to-last step; the last step is first order anyway (final sigma 0).
    if ((dd.solver_order ?? 2) === 3) only(dd, 'lower_order_final', (v) => v === true, 'true with solver_order 3');
  }
  if (type === 'unipc') {
    // diffusers maps the DPM-Solver solver names to bh2 in this class.
    only(dd, 'solver_type', (v) => ['bh2', 'midpoint', 'heun', 'logrho'].includes(String(v)), "'bh2'");
    only(dd, 'predict_x0', (v) => v === true, 'true');
    only(dd, 'lower_order_final', (v) => v === true, 'true');
    only(dd, 'disable_corrector', (v) => Array.isArray(v) && v.length === 0, '[]');
    only(dd, 'solver_p', (v) => v === null, 'null');
    only(dd, 'shift_terminal', (v) => v === null, 'null');
  }

  const map: [string, keyof SchedulerConfig][] = [
    ['num_train_timesteps', 'numTrainTimesteps'],
    ['beta_start', 'betaStart'],
    ['beta_end', 'betaEnd'],
    ['steps_offset', 'stepsOffset'],
    ['rescale_betas_zero_snr', 'rescaleBetasZeroSnr'],
  ];
  if (vp || type === 'heun') map.push(['clip_sample', 'clipSample'], ['clip_sample_range', 'clipSampleRange']);
  if (type === 'ddim') map.push(['set_alpha_to_one', 'setAlphaToOne']);
  if (!vp && type !== 'euler-ancestral') map.push(['use_karras_sigmas', 'useKarrasSigmas']);
  if (multistep) map.push(['solver_order', 'solverOrder']);
  for (const [from, to] of map) if (dd[from] !== undefined && dd[from] !== null) out[to] = dd[from];

  // Class defaults that differ from ours: DDPM/DDIM clip x0 by default; the others have no
  // clip_sample key (Heun's default is false) and their timestep_spacing default is linspace.
  if (vp && dd.clip_sample === undefined) out.clipSample = true;
  if (!vp && type !== 'heun') out.clipSample = false;
  out.timestepSpacing = dd.timestep_spacing !== undefined ? parseTimestepSpacing(dd.timestep_spacing, 'timestep_spacing') : vp ? 'leading' : 'linspace';
  if (dd.beta_schedule !== undefined) {
    const s = resolveScheduleAlias('diffusers', String(dd.beta_schedule));
    if (s === 'sigmoid' && type !== 'ddpm')
      throw new Error(`diffusers ${cls} has no beta_schedule 'sigmoid'; allowed: linear, scaled_linear, squaredcos_cap_v2`);
    out.betaSchedule = s;
  }
  if (dd.prediction_type !== undefined) {
    const p = PREDICTION_FROM_DIFFUSERS[String(dd.prediction_type)];
    if (!p)
      throw new Error(`diffusers prediction_type '${String(dd.prediction_type)}' is unknown; allowed: ${Object.keys(PREDICTION_FROM_DIFFUSERS).join(', ')}`);
    out.predictionType = p;
  }
  if (type === 'ddpm' && dd.variance_type !== undefined) {
    const v = { fixed_small: 'fixed-small', fixed_large: 'fixed-large' }[String(dd.variance_type)];
    if (!v) throw new Error(`diffusers variance_type '${String(dd.variance_type)}' is not supported; allowed: fixed_small, fixed_large`);
    out.varianceType = v;
  }
  return parseSchedulerConfig(out);
}

const BETA_TO_DIFFUSERS: Record<BetaScheduleName, string> = {
  linear: 'linear',
  'scaled-linear': 'scaled_linear',
  // The same formula as scaled-linear (schedules.ts).
  quadratic: 'scaled_linear',
  cosine: 'squaredcos_cap_v2',
  sigmoid: 'sigmoid',
};

/**
 * Our config as a diffusers `scheduler_config.json` object for DIFFUSERS_CLASS_NAMES[config.type].
 * Settings that class cannot express are errors (e.g. Karras sigmas for Euler ancestral, clipping
 * for Euler); options our type ignores (eta, or useKarrasSigmas for DDIM) are left out. DDIM's eta
 * is an argument of diffusers' step(), not part of its config.
 */
export function schedulerConfigToDiffusers(config: SchedulerConfig): Record<string, unknown> {
  const c = parseSchedulerConfig(config);
  const cls = DIFFUSERS_CLASS_NAMES[c.type];
  const refuse = (what: string): never => {
    throw new Error(`cannot write ${what} as a diffusers ${cls} config (the class has no such option)`);
  };
  if (c.betaSchedule === 'sigmoid' && c.type !== 'ddpm') refuse("betaSchedule 'sigmoid'");
  const vp = c.type === 'ddpm' || c.type === 'ddim';
  const out: Record<string, unknown> = {
    _class_name: cls,
    num_train_timesteps: c.numTrainTimesteps,
    beta_start: c.betaStart,
    beta_end: c.betaEnd,
    beta_schedule: BETA_TO_DIFFUSERS[c.betaSchedule],
    trained_betas: null,
    prediction_type: PREDICTION_TO_DIFFUSERS[c.predictionType],
    timestep_spacing: c.timestepSpacing,
    steps_offset: c.stepsOffset,
  };
  if (c.type === 'heun') {
    if (c.rescaleBetasZeroSnr) refuse('rescaleBetasZeroSnr');
  } else out.rescale_betas_zero_snr = c.rescaleBetasZeroSnr;
  if (vp || c.type === 'heun') {
    out.clip_sample = c.clipSample;
    out.clip_sample_range = c.clipSampleRange;
  } else if (c.clipSample) refuse('clipSample');
  switch (c.type) {
    case 'ddpm':
      out.variance_type = c.varianceType === 'fixed-small' ? 'fixed_small' : 'fixed_large';
      break;
    case 'ddim':
      out.set_alpha_to_one = c.setAlphaToOne;
      break;
    case 'euler':
      Object.assign(out, { use_karras_sigmas: c.useKarrasSigmas, interpolation_type: 'linear', timestep_type: 'discrete', final_sigmas_type: 'zero' });
      break;
    case 'euler-ancestral':
      if (c.useKarrasSigmas) refuse('useKarrasSigmas');
      break;
    case 'heun':
      out.use_karras_sigmas = c.useKarrasSigmas;
      break;
    case 'dpmpp-2m':
    case 'dpmpp-2m-sde':
      Object.assign(out, {
        algorithm_type: c.type === 'dpmpp-2m' ? 'dpmsolver++' : 'sde-dpmsolver++',
        solver_order: c.solverOrder,
        solver_type: 'midpoint',
        lower_order_final: true,
        use_karras_sigmas: c.useKarrasSigmas,
        final_sigmas_type: 'zero',
      });
      break;
    case 'unipc':
      Object.assign(out, {
        solver_order: c.solverOrder,
        solver_type: 'bh2',
        predict_x0: true,
        lower_order_final: true,
        use_karras_sigmas: c.useKarrasSigmas,
        final_sigmas_type: 'zero',
      });
      break;
  }
  return out;
}
