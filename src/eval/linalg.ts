/**
 * Small dense linear algebra in float64 for evaluation metrics: feature means and covariances,
 * a Jacobi eigen-solver for symmetric matrices, the square root of a symmetric PSD matrix, and
 * the Fréchet distance between two Gaussians (the "FID" formula of Heusel et al. 2017):
 *
 *   d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr( (S1 S2)^(1/2) )
 *
 * where tr((S1 S2)^(1/2)) = tr((sqrt(S1) S2 sqrt(S1))^(1/2)): the product S1 S2 is not symmetric,
 * but it is similar to the symmetric PSD matrix sqrt(S1) S2 sqrt(S1) (same eigenvalues), whose
 * square root's trace is the sum of the square roots of its eigenvalues.
 *
 * Matrices are row-major Float64Arrays of n * n values.
 */

export interface Eigen {
  /** Eigenvalues, descending. */
  values: Float64Array;
  /** Eigenvectors as the columns of a row-major n x n matrix, in the order of `values`. */
  vectors: Float64Array;
  /** Sweeps used. */
  sweeps: number;
}

function checkSquare(a: ArrayLike<number>, n: number, what: string): void {
  if (!Number.isInteger(n) || n < 1) throw new Error(`${what}: n must be a positive integer, got ${n}`);
  if (a.length !== n * n) throw new Error(`${what}: expected ${n * n} values for a ${n}x${n} matrix, got ${a.length}`);
}

/**
 * Eigen-decomposition of a symmetric matrix by the cyclic Jacobi method (Golub & Van Loan,
 * "Matrix Computations", sec. 8.5): each rotation zeroes one off-diagonal pair; sweeps over all
 * pairs repeat until the off-diagonal norm is negligible (quadratic convergence). The input is
 * not modified; only its upper triangle is read and it is treated as symmetric.
 */
export function jacobiEigen(matrix: ArrayLike<number>, n: number, opts: { maxSweeps?: number; tol?: number } = {}): Eigen {
  checkSquare(matrix, n, 'jacobiEigen');
  const maxSweeps = opts.maxSweeps ?? 100;
  const tol = opts.tol ?? 1e-14;
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      const v = Number(matrix[i * n + j]);
      if (!Number.isFinite(v)) throw new Error(`jacobiEigen: entry (${i}, ${j}) is ${v}; the matrix must be finite`);
      a[i * n + j] = v;
      a[j * n + i] = v;
    }
  }
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;

  let frob = 0;
  for (let i = 0; i < n * n; i++) frob += a[i] * a[i];
  frob = Math.sqrt(frob);
  let sweeps = 0;
  for (; sweeps < maxSweeps; sweeps++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p * n + q] * a[p * n + q];
    off = Math.sqrt(2 * off);
    if (off <= tol * frob || off === 0) break;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        if (apq === 0) continue;
        const app = a[p * n + p];
        const aqq = a[q * n + q];
        // tan(theta) = t, the smaller root of t^2 + 2 t theta - 1 = 0, theta = (aqq - app) / (2 apq).
        const theta = (aqq - app) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        // A <- J^T A J on rows/columns p and q.
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p];
          const akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k];
          const aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        a[p * n + q] = a[q * n + p] = 0;
        // V <- V J
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p];
          const vkq = v[k * n + q];
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  if (sweeps === maxSweeps) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p * n + q] * a[p * n + q];
    if (Math.sqrt(2 * off) > 1e-8 * Math.max(frob, 1e-300))
      throw new Error(`jacobiEigen: no convergence after ${maxSweeps} sweeps (off-diagonal norm ${Math.sqrt(2 * off)})`);
  }
  // Sort descending.
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => a[j * n + j] - a[i * n + i]);
  const values = new Float64Array(n);
  const vectors = new Float64Array(n * n);
  order.forEach((src, dst) => {
    values[dst] = a[src * n + src];
    for (let k = 0; k < n; k++) vectors[k * n + dst] = v[k * n + src];
  });
  return { values, vectors, sweeps };
}

/** C = A B for n x n row-major matrices. */
export function matmul(a: ArrayLike<number>, b: ArrayLike<number>, n: number): Float64Array {
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < n; k++) {
      const aik = a[i * n + k];
      if (aik === 0) continue;
      for (let j = 0; j < n; j++) c[i * n + j] += aik * b[k * n + j];
    }
  }
  return c;
}

/**
 * The symmetric PSD square root V diag(sqrt(max(l, 0))) V^T of a symmetric matrix; eigenvalues
 * below zero (round-off of a PSD matrix) are clamped to 0.
 */
export function sqrtmPsd(matrix: ArrayLike<number>, n: number): Float64Array {
  const { values, vectors: v } = jacobiEigen(matrix, n);
  const out = new Float64Array(n * n);
  for (let k = 0; k < n; k++) {
    const r = Math.sqrt(Math.max(values[k], 0));
    if (r === 0) continue;
    for (let i = 0; i < n; i++) {
      const vik = v[i * n + k] * r;
      if (vik === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j] += vik * v[j * n + k];
    }
  }
  return out;
}

export interface Gaussian {
  dim: number;
  count: number;
  mean: Float64Array;
  /** Unbiased (n - 1) covariance, row-major dim x dim. */
  cov: Float64Array;
}

/** Mean and (unbiased) covariance of `count` row vectors of length `dim` stored row-major. */
export function meanCov(rows: ArrayLike<number>, count: number, dim: number): Gaussian {
  if (!Number.isInteger(count) || count < 2) throw new Error(`meanCov: needs at least 2 vectors, got ${count}`);
  if (rows.length !== count * dim) throw new Error(`meanCov: expected ${count} x ${dim} = ${count * dim} values, got ${rows.length}`);
  const mean = new Float64Array(dim);
  for (let r = 0; r < count; r++) for (let j = 0; j < dim; j++) mean[j] += rows[r * dim + j];
  for (let j = 0; j < dim; j++) mean[j] /= count;
  const cov = new Float64Array(dim * dim);
  const d = new Float64Array(dim);
  for (let r = 0; r < count; r++) {
    for (let j = 0; j < dim; j++) d[j] = rows[r * dim + j] - mean[j];
    for (let i = 0; i < dim; i++) {
      const di = d[i];
      if (di === 0) continue;
      for (let j = i; j < dim; j++) cov[i * dim + j] += di * d[j];
    }
  }
  for (let i = 0; i < dim; i++) {
    for (let j = i; j < dim; j++) {
      const c = cov[i * dim + j] / (count - 1);
      cov[i * dim + j] = c;
      cov[j * dim + i] = c;
    }
  }
  return { dim, count, mean, cov };
}

/** Fréchet distance between N(mu1, S1) and N(mu2, S2) (see the header). */
export function frechetDistance(g1: Pick<Gaussian, 'dim' | 'mean' | 'cov'>, g2: Pick<Gaussian, 'dim' | 'mean' | 'cov'>): number {
  const n = g1.dim;
  if (g2.dim !== n) throw new Error(`frechetDistance: dimensions differ (${n} vs ${g2.dim})`);
  let meanTerm = 0;
  for (let i = 0; i < n; i++) meanTerm += (g1.mean[i] - g2.mean[i]) ** 2;
  let tr1 = 0;
  let tr2 = 0;
  for (let i = 0; i < n; i++) {
    tr1 += g1.cov[i * n + i];
    tr2 += g2.cov[i * n + i];
  }
  const r1 = sqrtmPsd(g1.cov, n);
  const m = matmul(matmul(r1, g2.cov, n), r1, n);
  // Symmetrise against round-off before the eigen-solver.
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const s = 0.5 * (m[i * n + j] + m[j * n + i]);
      m[i * n + j] = s;
      m[j * n + i] = s;
    }
  }
  const { values } = jacobiEigen(m, n);
  let trSqrt = 0;
  for (const l of values) trSqrt += Math.sqrt(Math.max(l, 0));
  // Round-off can make an exact 0 slightly negative.
  return Math.max(0, meanTerm + tr1 + tr2 - 2 * trSqrt);
}

/** Fréchet distance between the Gaussians fitted to two sets of feature rows. */
export function featureFid(a: ArrayLike<number>, countA: number, b: ArrayLike<number>, countB: number, dim: number): number {
  return frechetDistance(meanCov(a, countA, dim), meanCov(b, countB, dim));
}

/** Mean Euclidean distance over all pairs of `count` rows of length `dim`. */
export function meanPairwiseDistance(rows: ArrayLike<number>, count: number, dim: number): number {
  if (count < 2) return NaN;
  let sum = 0;
  for (let i = 0; i < count; i++) {
    for (let j = i + 1; j < count; j++) {
      let d = 0;
      for (let k = 0; k < dim; k++) {
        const x = rows[i * dim + k] - rows[j * dim + k];
        d += x * x;
      }
      sum += Math.sqrt(d);
    }
  }
  return sum / ((count * (count - 1)) / 2);
}
