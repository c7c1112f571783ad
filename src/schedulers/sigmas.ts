/**
 * Noise levels (sigmas) and timestep tables for the sigma-based samplers (Euler, Euler ancestral,
 * Heun, DPM-Solver++, UniPC). Plain float64 arithmetic on arrays; no tensors.
 *
 * A VP model (x_t = a x0 + s eps, a^2 + s^2 = 1) is the same process as the variance-exploding
 * x~ = x_t / a = x0 + sigma eps with
 *   sigma_t = sqrt((1 - alphaBar_t) / alphaBar_t)          (Karras et al. 2022, Table 1, "VP")
 * and back: a = 1 / sqrt(sigma^2 + 1), s = sigma a. The half log-SNR used by DPM-Solver and UniPC is
 *   lambda = log(a / s) = -log(sigma)                      (Lu et al. 2022, DPM-Solver's lambda_t)
 *
 * The timestep tables reproduce diffusers' (commit 58eb52c) for each scheduler family, since
 * they differ from DDPM/DDIM's (timesteps.ts) and between families:
 *   k-diffusion family (EulerDiscrete, EulerAncestralDiscrete, HeunDiscrete): n points,
 *     linspace is NOT rounded (fractional timesteps, stored as float32), leading/trailing as DDIM.
 *   multistep family (DPMSolverMultistep, UniPCMultistep): n + 1 points with the last dropped,
 *     rounded to integers: linspace round(linspace(0, T - 1, n + 1))[:-1], leading
 *     floor(T / (n + 1)) * i + offset; trailing as DDIM.
 */
import { type TimestepSpacing, parseTimestepSpacing, roundHalfEven, trailingTimesteps } from './timesteps.js';

/** sigma_t = sqrt((1 - alphaBar_t) / alphaBar_t) for every training timestep (Karras et al. 2022, Table 1). */
export function sigmasFromAlphasCumprod(alphasCumprod: Float64Array): Float64Array {
  return alphasCumprod.map((ab) => Math.sqrt((1 - ab) / ab));
}

/** VP coefficients of a noise level: a = 1 / sqrt(sigma^2 + 1), s = sigma a (s = 0, a = 1 at sigma = 0). */
export function alphaSigmaFromSigma(sigma: number): { alpha: number; sigma: number } {
  const alpha = 1 / Math.sqrt(sigma * sigma + 1);
  return { alpha, sigma: sigma * alpha };
}

/** Half log-SNR lambda = log(a / s) = -log(sigma) (DPM-Solver's lambda_t); +Infinity at sigma = 0. */
export function lambdaFromSigma(sigma: number): number {
  return -Math.log(sigma);
}

/** numpy.interp(x, [0, 1, ..., n-1], fp): piecewise linear on the integer grid, clamped at the ends. */
export function interpOnGrid(x: number, fp: Float64Array): number {
  if (x <= 0) return fp[0];
  const last = fp.length - 1;
  if (x >= last) return fp[last];
  const i = Math.floor(x);
  const w = x - i;
  return w === 0 ? fp[i] : fp[i] + w * (fp[i + 1] - fp[i]);
}

/**
 * Karras et al. 2022, eq. 5: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
 * i = 0 .. n-1, rho = 7 ("the value used in the paper"). Descending from sigma_max to sigma_min.
 */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number, rho = 7): Float64Array {
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const ramp = n === 1 ? 0 : i === n - 1 ? 1 : i / (n - 1);
    out[i] = (maxInv + ramp * (minInv - maxInv)) ** rho;
  }
  return out;
}

/**
 * The (fractional) training timestep whose sigma is `sigma`: linear interpolation of the timestep
 * in log-sigma between the two neighbouring training sigmas, clamped to [0, T-1]. This is how a
 * schedule defined by sigmas (Karras) is told to a network conditioned on discrete timesteps.
 * logSigmas: log(sigma_t) for t = 0 .. T-1 (increasing).
 */
export function sigmaToTimestep(sigma: number, logSigmas: Float64Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  const T = logSigmas.length;
  // Last index whose log-sigma is <= logSigma (0 if none), kept below T-1 so that i+1 exists.
  let low = 0;
  for (let i = 0; i < T; i++) if (logSigmas[i] <= logSigma) low = i;
  low = Math.min(low, T - 2);
  const lo = logSigmas[low];
  const hi = logSigmas[low + 1];
  const w = Math.min(1, Math.max(0, (lo - logSigma) / (lo - hi)));
  return (1 - w) * low + w * (low + 1);
}

function checkSteps(T: number, n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > T) {
    throw new Error(`number of inference steps must be an integer from 1 to numTrainTimesteps (${T}), got ${n}`);
  }
}

/**
 * Timesteps of the k-diffusion family (diffusers' Euler / Euler ancestral / Heun), descending.
 * linspace is fractional and rounded to float32, as the network receives it.
 */
export function kdiffusionTimesteps(T: number, n: number, spacing: TimestepSpacing, stepsOffset = 0): number[] {
  checkSteps(T, n);
  const out: number[] = [];
  switch (spacing) {
    case 'linspace': {
      // numpy.linspace(0, T - 1, n, dtype=float32): i * step, the last point exactly T - 1.
      const step = n === 1 ? 0 : (T - 1) / (n - 1);
      for (let i = n - 1; i >= 0; i--) out.push(Math.fround(i === n - 1 && n > 1 ? T - 1 : i * step));
      break;
    }
    case 'leading': {
      const r = Math.floor(T / n);
      for (let i = n - 1; i >= 0; i--) out.push(i * r + stepsOffset);
      break;
    }
    case 'trailing':
      out.push(...trailingTimesteps(T, n));
      break;
    default:
      parseTimestepSpacing(spacing);
  }
  return checkRange(out, T, spacing, n, stepsOffset);
}

/** Timesteps of the multistep family (diffusers' DPMSolverMultistep / UniPCMultistep), descending integers. */
export function multistepTimesteps(T: number, n: number, spacing: TimestepSpacing, stepsOffset = 0): number[] {
  checkSteps(T, n);
  const out: number[] = [];
  switch (spacing) {
    case 'linspace': {
      // round(linspace(0, T - 1, n + 1)) without its first point (0), descending.
      const step = (T - 1) / n;
      for (let i = n; i >= 1; i--) out.push(i === n ? T - 1 : roundHalfEven(i * step));
      break;
    }
    case 'leading': {
      const r = Math.floor(T / (n + 1));
      for (let i = n; i >= 1; i--) out.push(i * r + stepsOffset);
      break;
    }
    case 'trailing':
      out.push(...trailingTimesteps(T, n));
      break;
    default:
      parseTimestepSpacing(spacing);
  }
  // n + 1 points in [0, T) cannot all differ when n >= T (leading: floor(T / (n + 1)) = 0); a
  // repeated level is a zero-length step, which the multistep divided differences divide by.
  const dup = out.findIndex((t, i) => i > 0 && t === out[i - 1]);
  if (dup > 0) throw new Error(`${spacing} spacing with ${n} steps repeats timestep ${out[dup]}; use fewer than ${T} steps`);
  return checkRange(out, T, spacing, n, stepsOffset);
}

function checkRange(out: number[], T: number, spacing: TimestepSpacing, n: number, stepsOffset: number): number[] {
  const bad = out.find((t) => t < 0 || t > T - 1);
  if (bad !== undefined) {
    throw new Error(`${spacing} spacing with ${n} steps and stepsOffset ${stepsOffset} gives timestep ${bad}, outside [0, ${T - 1}]`);
  }
  return out;
}
