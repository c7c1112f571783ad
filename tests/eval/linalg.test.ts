import { describe, expect, it } from 'vitest';
import { featureFid, frechetDistance, jacobiEigen, matmul, meanCov, meanPairwiseDistance, sqrtmPsd } from '../../src/eval/linalg.js';
import { Generator } from '../../src/random/generator.js';
import { maxAbsDiff } from '../helpers.js';

function transpose(a: Float64Array, n: number): Float64Array {
  const t = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) t[j * n + i] = a[i * n + j];
  return t;
}

/** A random symmetric n x n matrix. */
function randomSymmetric(n: number, rng: Generator): Float64Array {
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) a[i * n + j] = a[j * n + i] = rng.normal();
  return a;
}

/** Gaussian sample rows x = mu + L z with a fixed mixing matrix L. */
function gaussianRows(count: number, dim: number, rng: Generator, shift: number[] = []): Float64Array {
  const L = new Float64Array(dim * dim);
  const lrng = new Generator(99);
  for (let i = 0; i < dim; i++) for (let j = 0; j <= i; j++) L[i * dim + j] = i === j ? 1 + lrng.uniform() : 0.5 * lrng.normal();
  const out = new Float64Array(count * dim);
  const z = new Float64Array(dim);
  for (let r = 0; r < count; r++) {
    for (let j = 0; j < dim; j++) z[j] = rng.normal();
    for (let i = 0; i < dim; i++) {
      let s = shift[i] ?? 0;
      for (let j = 0; j <= i; j++) s += L[i * dim + j] * z[j];
      out[r * dim + i] = s;
    }
  }
  return out;
}

describe('Jacobi eigen-solver', () => {
  it('solves known matrices', () => {
    const d = jacobiEigen([3, 0, 0, 0, -1, 0, 0, 0, 2], 3);
    expect(Array.from(d.values)).toEqual([3, 2, -1]);
    expect(d.sweeps).toBe(0);

    const e = jacobiEigen([2, 1, 1, 2], 2);
    expect(e.values[0]).toBeCloseTo(3, 12);
    expect(e.values[1]).toBeCloseTo(1, 12);
    // eigenvector of 3 is (1, 1)/sqrt 2 up to sign
    expect(Math.abs(e.vectors[0])).toBeCloseTo(Math.SQRT1_2, 12);
    expect(e.vectors[0] * e.vectors[2]).toBeGreaterThan(0);

    // Eigenvalues of the 1-D Laplacian tridiag(-1, 2, -1) of size n: 2 - 2 cos(k pi / (n + 1)).
    const n = 6;
    const lap = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      lap[i * n + i] = 2;
      if (i > 0) lap[i * n + i - 1] = lap[(i - 1) * n + i] = -1;
    }
    const expected = Array.from({ length: n }, (_, k) => 2 - 2 * Math.cos(((k + 1) * Math.PI) / (n + 1))).sort((a, b) => b - a);
    const got = jacobiEigen(lap, n).values;
    expect(maxAbsDiff(got, expected)).toBeLessThan(1e-12);
  });

  it('reconstructs a random symmetric matrix from orthonormal eigenvectors', () => {
    const n = 24;
    const a = randomSymmetric(n, new Generator(1));
    const { values, vectors: v } = jacobiEigen(a, n);
    const vtv = matmul(transpose(v, n), v, n);
    const eye = new Float64Array(n * n);
    for (let i = 0; i < n; i++) eye[i * n + i] = 1;
    expect(maxAbsDiff(vtv, eye)).toBeLessThan(1e-12);
    const lam = new Float64Array(n * n);
    for (let i = 0; i < n; i++) lam[i * n + i] = values[i];
    expect(maxAbsDiff(matmul(matmul(v, lam, n), transpose(v, n), n), a)).toBeLessThan(1e-11);
    for (let i = 1; i < n; i++) expect(values[i]).toBeLessThanOrEqual(values[i - 1]);
  });

  it('rejects bad input', () => {
    expect(() => jacobiEigen([1, 2, 3], 2)).toThrow(/expected 4 values/);
    expect(() => jacobiEigen([1, NaN, NaN, 1], 2)).toThrow(/finite/);
  });

  it('square root of a PSD matrix squares back', () => {
    const n = 10;
    const b = randomSymmetric(n, new Generator(2));
    const psd = matmul(b, b, n); // B B^T with B symmetric
    const r = sqrtmPsd(psd, n);
    expect(maxAbsDiff(matmul(r, r, n), psd)).toBeLessThan(1e-9);
  });
});

describe('Fréchet distance', () => {
  const dim = 8;
  const count = 2000;
  const x = gaussianRows(count, dim, new Generator(3));

  it('of a sample against itself is ~0', () => {
    expect(featureFid(x, count, x, count, dim)).toBeLessThan(1e-8);
  });

  it('against the same sample shifted equals ||mu1 - mu2||^2 (equal covariances)', () => {
    const delta = [1, -2, 0.5, 0, 0, 3, 0, -1];
    const shifted = x.map((v, i) => v + delta[i % dim]);
    const closed = delta.reduce((a, d) => a + d * d, 0);
    expect(featureFid(x, count, shifted, count, dim)).toBeCloseTo(closed, 8);
  });

  it('matches the closed form for diagonal covariances', () => {
    const a = { dim: 3, mean: Float64Array.from([0, 0, 0]), cov: Float64Array.from([4, 0, 0, 0, 1, 0, 0, 0, 9]) };
    const b = { dim: 3, mean: Float64Array.from([1, 0, 0]), cov: Float64Array.from([1, 0, 0, 0, 1, 0, 0, 0, 1]) };
    // ||dmu||^2 + sum (sqrt(a_i) - sqrt(b_i))^2 = 1 + (2-1)^2 + 0 + (3-1)^2 = 6
    expect(frechetDistance(a, b)).toBeCloseTo(6, 10);
    expect(frechetDistance(b, a)).toBeCloseTo(6, 10);
  });

  it('two independent samples of one Gaussian are close, a different Gaussian is far', () => {
    const y = gaussianRows(count, dim, new Generator(4));
    const near = featureFid(x, count, y, count, dim);
    const far = featureFid(x, count, gaussianRows(count, dim, new Generator(5), [2, 2, 2, 2, 2, 2, 2, 2]), count, dim);
    expect(near).toBeLessThan(0.2);
    expect(far).toBeGreaterThan(30);
  });

  it('mean and covariance, pairwise distances', () => {
    const g = meanCov([1, 2, 3, 4, 5, 6], 3, 2); // rows (1,2), (3,4), (5,6)
    expect(Array.from(g.mean)).toEqual([3, 4]);
    expect(Array.from(g.cov)).toEqual([4, 4, 4, 4]);
    expect(meanPairwiseDistance([0, 0, 3, 4, 0, 0], 3, 2)).toBeCloseTo((5 + 0 + 5) / 3, 12);
  });
});
