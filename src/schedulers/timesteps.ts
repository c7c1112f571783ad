/**
 * Which of the T training timesteps a sampler with n steps visits (diffusers' `timestep_spacing`;
 * compared in Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
 * Table 2). 0-based; returned in descending order (the order a sampler visits them).
 *
 *   leading   (Stable Diffusion / diffusers default): r = floor(T / n);  t_i = i * r + offset
 *             T = 1000, n = 10, offset 0:  900, 800, ..., 100, 0   (SD uses offset 1: 901 .. 1)
 *   trailing  r = T / n;  t_i = round(T - i * r) - 1
 *             T = 1000, n = 10:            999, 899, ..., 199, 99
 *   linspace  (DDIM / iDDPM):  round(linspace(0, T - 1, n))
 *             T = 1000, n = 10:            999, 888, 777, ..., 111, 0
 * Rounding is half-to-even, as numpy's np.round, so the tables equal diffusers' for every n.
 */

export const TIMESTEP_SPACINGS = ['leading', 'trailing', 'linspace'] as const;
export type TimestepSpacing = (typeof TIMESTEP_SPACINGS)[number];

export function parseTimestepSpacing(v: unknown, what = 'timestepSpacing'): TimestepSpacing {
  if (typeof v === 'string' && (TIMESTEP_SPACINGS as readonly string[]).includes(v)) return v as TimestepSpacing;
  throw new Error(`${what} '${String(v)}' is unknown; allowed: ${TIMESTEP_SPACINGS.join(', ')}`);
}

/** numpy's np.round: half to even. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** diffusers' "trailing" spacing (Lin et al. 2024, Table 2), the same for every sampler family: round(T - i T / n) - 1, descending. */
export function trailingTimesteps(T: number, n: number): number[] {
  const r = T / n;
  return Array.from({ length: n }, (_, i) => roundHalfEven(T - i * r) - 1);
}

export function makeTimesteps(T: number, n: number, spacing: TimestepSpacing, stepsOffset = 0): number[] {
  if (!Number.isInteger(n) || n < 1 || n > T) {
    throw new Error(`number of inference steps must be an integer from 1 to numTrainTimesteps (${T}), got ${n}`);
  }
  const out: number[] = [];
  switch (spacing) {
    case 'leading': {
      const r = Math.floor(T / n);
      for (let i = n - 1; i >= 0; i--) out.push(i * r + stepsOffset);
      break;
    }
    case 'trailing':
      out.push(...trailingTimesteps(T, n));
      break;
    case 'linspace': {
      for (let i = n - 1; i >= 0; i--) out.push(n === 1 ? 0 : roundHalfEven(((T - 1) * i) / (n - 1)));
      break;
    }
    default:
      parseTimestepSpacing(spacing);
  }
  const bad = out.find((t) => t < 0 || t >= T);
  if (bad !== undefined) {
    throw new Error(`${spacing} spacing with ${n} steps and stepsOffset ${stepsOffset} gives timestep ${bad}, outside [0, ${T - 1}]`);
  }
  return out;
}
