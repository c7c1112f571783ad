/** Small helpers shared by test files. */

/** Largest absolute difference of two equally long arrays (a length mismatch is an error). */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Unit roundoff of float32: half the distance from 1 to the next float32. */
export const FLOAT32_UNIT_ROUNDOFF = 2 ** -24;

/**
 * gamma_n = n u / (1 - n u): a sum or dot product of n float32 terms, accumulated in any order
 * (blocked, pairwise, with or without FMA), is within gamma_n * sum |term_i| of the exact value
 * (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., Lemma 3.1 and eq. 3.5). For a
 * multilinear chain (products of convolutions and matrices) the bound holds with n the total
 * accumulation length along the chain and |terms| the same chain evaluated on absolute values
 * (Higham eq. 3.13). So the error depends on the data and the reduction lengths, not on how one
 * CPU happens to order its sums.
 */
export function float32Gamma(n: number): number {
  const nu = n * FLOAT32_UNIT_ROUNDOFF;
  if (!(nu < 1)) throw new Error(`float32Gamma: n = ${n} is too long for a bound`);
  return nu / (1 - nu);
}

/**
 * The largest ratio |got - want| / (2 gamma_n |ref|) over all elements (<= 1: both results are
 * within the rounding bound of the exact value, each having at most gamma_n |ref| of error);
 * `absRef` is the computation repeated on absolute values. Elements whose bound is 0 must match.
 */
export function float32BoundRatio(want: ArrayLike<number>, got: ArrayLike<number>, absRef: ArrayLike<number>, n: number): number {
  if (want.length !== got.length || want.length !== absRef.length) throw new Error(`lengths ${want.length}, ${got.length}, ${absRef.length}`);
  // The absolute-value run is itself rounded (all terms positive: relative error <= gamma_n).
  const g = float32Gamma(n);
  const scale = (2 * g) * (1 + g);
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(want[i] - got[i]);
    const bound = scale * Math.abs(absRef[i]);
    const r = d === 0 ? 0 : bound > 0 ? d / bound : Infinity;
    if (r > worst) worst = r;
  }
  return worst;
}
