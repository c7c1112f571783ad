/** Small helpers shared by test files. */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

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
  const scale = 2 * g * (1 + g);
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(want[i] - got[i]);
    const bound = scale * Math.abs(absRef[i]);
    const r = d === 0 ? 0 : bound > 0 ? d / bound : Infinity;
    if (r > worst) worst = r;
  }
  return worst;
}

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * ldm-small.json, the benchmark shapes: the shared copy beside the repository (../shared/bench,
 * where the PyTorch peer reads it) when there is one, else the copy in tests/fixtures (checked
 * equal to the shared one by tests/bench/bench.test.ts wherever both exist).
 */
export const SHARED_LDM_SMALL = path.resolve(repoRoot, '../shared/bench/ldm-small.json');
export const LDM_SMALL = existsSync(SHARED_LDM_SMALL) ? SHARED_LDM_SMALL : path.join(repoRoot, 'tests', 'fixtures', 'ldm-small.json');

export interface Finished {
  /** Exit code (null when killed, e.g. by the timeout). */
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command to completion without blocking this thread (unlike spawnSync, which starves
 * vitest's worker RPC during long runs: "Timeout calling onTaskUpdate"). Kills it after
 * `timeout` ms.
 */
export function runCommand(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = opts.timeout ? setTimeout(() => child.kill('SIGKILL'), opts.timeout) : undefined;
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
