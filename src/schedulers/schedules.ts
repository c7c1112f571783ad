/**
 * Noise (beta) schedules and the coefficient tables derived from them.
 *
 * Everything here is float64 JavaScript arithmetic on plain Float64Arrays: only a scheduler's
 * `step` / `addNoise` ever touch tensors. Notation follows DDPM (Ho et al. 2020):
 *   alpha_t = 1 - beta_t,   alphaBar_t = prod_{s <= t} alpha_s   (DDPM eq. 4 uses alphaBar_t),
 * with timesteps 0-based (t = 0 .. T-1), as in diffusers.
 *
 * Schedule names (ours, kebab-case) and what they compute:
 *   linear         beta_t = linspace(betaStart, betaEnd, T)                     (DDPM sec. 4)
 *   scaled-linear  beta_t = linspace(sqrt(betaStart), sqrt(betaEnd), T)^2       (Stable Diffusion;
 *                  this is what CompVis' latent-diffusion code calls `linear`)
 *   cosine         alphaBar(t) = f(t) / f(0), f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2, s = 0.008,
 *                  beta_t = min(1 - alphaBar(t+1) / alphaBar(t), 0.999)        (Nichol & Dhariwal
 *                  2021, eq. 17 and the clip below it; betaStart/betaEnd are ignored)
 *   sigmoid        beta_t = sigmoid(linspace(-6, 6, T)) * (betaEnd - betaStart) + betaStart
 *                  (GeoDiff, Xu et al. 2022; diffusers' `sigmoid`)
 *   quadratic      beta_t = linspace(sqrt(betaStart), sqrt(betaEnd), T)^2: Ho et al.'s `quad`
 *                  schedule (the DDPM reference code) and the toy-diffusion tutorials' `quadratic`.
 *                  NOTE: the formula is the same as `scaled-linear`; the two names exist because
 *                  the literature uses both (with different default beta ranges: quadratic is
 *                  usually run with DDPM's 1e-4..0.02, scaled-linear with SD's 0.00085..0.012).
 *
 * Other code bases name these differently; SCHEDULE_ALIASES maps their names to ours. The trap
 * it exists for: CompVis' `linear` is *our* `scaled-linear`, not our `linear`.
 */

export const BETA_SCHEDULES = ['linear', 'scaled-linear', 'cosine', 'sigmoid', 'quadratic'] as const;
export type BetaScheduleName = (typeof BETA_SCHEDULES)[number];

/** Code bases whose schedule names we translate. */
export const SCHEDULE_SOURCES = ['diffusers', 'compvis', 'ddpm', 'improved-diffusion'] as const;
export type ScheduleSource = (typeof SCHEDULE_SOURCES)[number];

export interface ScheduleAlias {
  source: ScheduleSource;
  /** The name as that code base spells it. */
  name: string;
  ours: BetaScheduleName;
  note: string;
}

/**
 * The explicit alias table. Read it as "when <source> says <name>, we say <ours>".
 * Names a source has that we do not implement (CompVis `sqrt`, DDPM `const`/`jsd`/`warmup*`)
 * are absent and resolve to an error.
 */
export const SCHEDULE_ALIASES: readonly ScheduleAlias[] = [
  { source: 'diffusers', name: 'linear', ours: 'linear', note: 'torch.linspace(beta_start, beta_end, T)' },
  { source: 'diffusers', name: 'scaled_linear', ours: 'scaled-linear', note: 'linspace(sqrt(beta_start), sqrt(beta_end))**2' },
  { source: 'diffusers', name: 'squaredcos_cap_v2', ours: 'cosine', note: 'betas_for_alpha_bar, cosine, max_beta 0.999' },
  { source: 'diffusers', name: 'sigmoid', ours: 'sigmoid', note: 'GeoDiff sigmoid schedule' },
  // CompVis latent-diffusion / stable-diffusion, ldm/modules/diffusionmodules/util.py make_beta_schedule:
  { source: 'compvis', name: 'linear', ours: 'scaled-linear', note: "CompVis' `linear` is linspace(sqrt(start), sqrt(end))**2" },
  { source: 'compvis', name: 'sqrt_linear', ours: 'linear', note: "CompVis' `sqrt_linear` is a plain linspace(start, end)" },
  { source: 'compvis', name: 'cosine', ours: 'cosine', note: 'Nichol & Dhariwal, clipped at 0.999' },
  // Ho et al.'s reference code (diffusion_utils_2.get_beta_schedule):
  { source: 'ddpm', name: 'linear', ours: 'linear', note: 'np.linspace(beta_start, beta_end, T)' },
  { source: 'ddpm', name: 'quad', ours: 'quadratic', note: 'np.linspace(sqrt(beta_start), sqrt(beta_end), T)**2' },
  // openai/improved-diffusion (its `linear` rescales the range by 1000/T; with T = 1000 it is ours):
  { source: 'improved-diffusion', name: 'linear', ours: 'linear', note: 'betas 1e-4*1000/T .. 0.02*1000/T' },
  { source: 'improved-diffusion', name: 'cosine', ours: 'cosine', note: 'Nichol & Dhariwal eq. 17' },
];

/** Translates another code base's schedule name to ours (error lists what that source may say). */
export function resolveScheduleAlias(source: ScheduleSource, name: string): BetaScheduleName {
  const hit = SCHEDULE_ALIASES.find((a) => a.source === source && a.name === name);
  if (hit) return hit.ours;
  const allowed = SCHEDULE_ALIASES.filter((a) => a.source === source).map((a) => a.name);
  if (allowed.length === 0) throw new Error(`unknown schedule source '${source}'; allowed: ${SCHEDULE_SOURCES.join(', ')}`);
  throw new Error(`${source} schedule '${name}' has no equivalent here; allowed ${source} names: ${allowed.join(', ')}`);
}

export function isBetaScheduleName(v: unknown): v is BetaScheduleName {
  return typeof v === 'string' && (BETA_SCHEDULES as readonly string[]).includes(v);
}

export function parseBetaScheduleName(v: unknown, what = 'beta schedule'): BetaScheduleName {
  if (isBetaScheduleName(v)) return v;
  const hint = v === 'scaled_linear' || v === 'squaredcos_cap_v2' ? ` (that is a diffusers name; use resolveScheduleAlias('diffusers', '${v}'))` : '';
  throw new Error(`${what} '${String(v)}' is unknown; allowed: ${BETA_SCHEDULES.join(', ')}${hint}`);
}

/** numpy.linspace(a, b, n) in float64 (endpoints exact). */
export function linspace(a: number, b: number, n: number): Float64Array {
  const out = new Float64Array(n);
  if (n === 1) {
    out[0] = a;
    return out;
  }
  const step = (b - a) / (n - 1);
  for (let i = 0; i < n; i++) out[i] = a + step * i;
  out[n - 1] = b;
  return out;
}

/** Nichol & Dhariwal 2021, eq. 17 (unnormalised f; alphaBar(t) = f(t) / f(0)); u = t / T in [0, 1]. */
export function cosineF(u: number, s = 0.008): number {
  return Math.cos(((u + s) / (1 + s)) * (Math.PI / 2)) ** 2;
}

/** The beta clip below Nichol & Dhariwal eq. 17 (prevents the singularity at t = T). */
export const COSINE_MAX_BETA = 0.999;

function checkRange(T: number, betaStart: number, betaEnd: number, name: BetaScheduleName): void {
  if (!Number.isInteger(T) || T < 1) throw new Error(`numTrainTimesteps must be an integer >= 1, got ${T}`);
  if (name === 'cosine') return;
  if (!(Number.isFinite(betaStart) && betaStart > 0 && betaStart < 1)) {
    throw new Error(`betaStart must be a number in (0, 1), got ${betaStart}`);
  }
  if (!(Number.isFinite(betaEnd) && betaEnd > 0 && betaEnd < 1)) {
    throw new Error(`betaEnd must be a number in (0, 1), got ${betaEnd}`);
  }
  if (betaEnd < betaStart) throw new Error(`betaEnd (${betaEnd}) must be >= betaStart (${betaStart})`);
}

/** beta_0 .. beta_{T-1} for a named schedule. */
export function makeBetas(name: BetaScheduleName, T: number, betaStart: number, betaEnd: number): Float64Array {
  parseBetaScheduleName(name);
  checkRange(T, betaStart, betaEnd, name);
  switch (name) {
    case 'linear':
      return linspace(betaStart, betaEnd, T);
    case 'scaled-linear':
    case 'quadratic':
      return linspace(Math.sqrt(betaStart), Math.sqrt(betaEnd), T).map((b) => b * b);
    case 'cosine': {
      const out = new Float64Array(T);
      for (let i = 0; i < T; i++) out[i] = Math.min(1 - cosineF((i + 1) / T) / cosineF(i / T), COSINE_MAX_BETA);
      return out;
    }
    case 'sigmoid':
      return linspace(-6, 6, T).map((x) => (1 / (1 + Math.exp(-x))) * (betaEnd - betaStart) + betaStart);
  }
}

/** alphaBar_t = prod_{s <= t} (1 - beta_s) (DDPM, notation above eq. 4). */
export function cumprodAlphas(betas: Float64Array): Float64Array {
  const out = new Float64Array(betas.length);
  let acc = 1;
  for (let i = 0; i < betas.length; i++) {
    acc *= 1 - betas[i];
    out[i] = acc;
  }
  return out;
}

/**
 * Rescales betas to zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules and
 * Sample Steps are Flawed", Algorithm 1): shift and scale sqrt(alphaBar) so that its last value
 * is 0 and its first is unchanged. Only meaningful with v- (or x0-) prediction.
 */
export function rescaleZeroTerminalSnr(betas: Float64Array): Float64Array {
  const ab = cumprodAlphas(betas);
  const sq = ab.map(Math.sqrt);
  const first = sq[0];
  const last = sq[sq.length - 1];
  if (!(first > last)) throw new Error('cannot rescale a schedule whose alphaBar does not decrease');
  const rescaled = sq.map((v) => ((v - last) * first) / (first - last));
  const abNew = rescaled.map((v) => v * v);
  const out = new Float64Array(betas.length);
  out[0] = 1 - abNew[0];
  for (let i = 1; i < out.length; i++) out[i] = 1 - abNew[i] / abNew[i - 1];
  return out;
}

/** Signal-to-noise ratio alphaBar / (1 - alphaBar) (Kingma et al. 2021, eq. 2-3). */
export function snr(alphaBar: number): number {
  return alphaBar / (1 - alphaBar);
}
