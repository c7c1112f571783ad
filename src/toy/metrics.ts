/**
 * Distances between 2-D point clouds (Float32Array [N, 2] interleaved), to check that generated
 * points measurably match the data. Both are deterministic (no randomness).
 *
 * sliced Wasserstein-2 (Rabin et al. 2011; Bonneel et al. 2015):
 *   SW2(P, Q)^2 = mean over directions theta of W2^2(<P, theta>, <Q, theta>),
 *   each 1-D W2 from sorted projections compared at matched quantiles (i + 1/2) / m.
 *   In 2-D the directions are K evenly spaced angles in [0, pi), so no random projections.
 * Chamfer distance (symmetric, Euclidean, not squared):
 *   mean_p min_q |p - q| + mean_q min_p |p - q|.
 *
 * Also RunningAverage, the loss smoothing shared by the progress bar and the loss curve.
 */

export function numPoints(p: Float32Array): number {
  if (p.length % 2 !== 0) throw new Error(`a 2-D point array must have even length, got ${p.length}`);
  return p.length / 2;
}

function quantiles(sorted: Float64Array, m: number): Float64Array {
  const n = sorted.length;
  if (n === m) return sorted;
  const out = new Float64Array(m);
  for (let i = 0; i < m; i++) {
    const pos = ((i + 0.5) / m) * n - 0.5;
    const lo = Math.max(0, Math.min(n - 1, Math.floor(pos)));
    const hi = Math.min(n - 1, lo + 1);
    const f = Math.min(1, Math.max(0, pos - lo));
    out[i] = sorted[lo] * (1 - f) + sorted[hi] * f;
  }
  return out;
}

export function slicedWasserstein(a: Float32Array, b: Float32Array, directions = 64): number {
  const na = numPoints(a);
  const nb = numPoints(b);
  if (na === 0 || nb === 0) throw new Error('slicedWasserstein needs two non-empty point sets');
  const m = Math.min(na, nb);
  const pa = new Float64Array(na);
  const pb = new Float64Array(nb);
  let total = 0;
  for (let k = 0; k < directions; k++) {
    const th = (Math.PI * k) / directions;
    const c = Math.cos(th);
    const s = Math.sin(th);
    for (let i = 0; i < na; i++) pa[i] = a[2 * i] * c + a[2 * i + 1] * s;
    for (let i = 0; i < nb; i++) pb[i] = b[2 * i] * c + b[2 * i + 1] * s;
    pa.sort();
    pb.sort();
    const qa = quantiles(pa, m);
    const qb = quantiles(pb, m);
    let w = 0;
    for (let i = 0; i < m; i++) w += (qa[i] - qb[i]) ** 2;
    total += w / m;
  }
  return Math.sqrt(total / directions);
}

function meanNearest(a: Float32Array, b: Float32Array): number {
  const na = numPoints(a);
  const nb = numPoints(b);
  let sum = 0;
  for (let i = 0; i < na; i++) {
    const x = a[2 * i];
    const y = a[2 * i + 1];
    let best = Infinity;
    for (let j = 0; j < nb; j++) {
      const dx = x - b[2 * j];
      const dy = y - b[2 * j + 1];
      const d = dx * dx + dy * dy;
      if (d < best) best = d;
    }
    sum += Math.sqrt(best);
  }
  return sum / na;
}

export function chamfer(a: Float32Array, b: Float32Array): number {
  if (numPoints(a) === 0 || numPoints(b) === 0) throw new Error('chamfer needs two non-empty point sets');
  return meanNearest(a, b) + meanNearest(b, a);
}

export interface DistanceReport {
  slicedW2: number;
  chamfer: number;
}

export function distances(a: Float32Array, b: Float32Array): DistanceReport {
  return { slicedW2: slicedWasserstein(a, b), chamfer: chamfer(a, b) };
}

/**
 * Bias-corrected exponential moving average (the correction Adam uses for its moments), so the
 * first values are not pulled towards 0: v_n = m_n / (1 - decay^n), m_n = decay m_{n-1} + (1 - decay) x_n.
 * A window of about 1 / (1 - decay) values.
 */
export class RunningAverage {
  private m = 0;
  private n = 0;

  constructor(readonly decay: number) {
    if (!(decay >= 0 && decay < 1)) throw new Error(`RunningAverage decay must be in [0, 1), got ${decay}`);
  }

  /** Adds a value and returns the new average. */
  add(x: number): number {
    this.m = this.decay * this.m + (1 - this.decay) * x;
    this.n++;
    return this.value;
  }

  /** The current average (NaN before the first value). */
  get value(): number {
    return this.n ? this.m / (1 - this.decay ** this.n) : NaN;
  }
}
