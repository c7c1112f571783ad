/**
 * AdamW (Loshchilov & Hutter 2019, Algorithm 2): Adam (Kingma & Ba 2015, Algorithm 1) with
 * decoupled weight decay. State (m, v per parameter, and the step count) is exposed by name so
 * training checkpoints can save it and a resumed run continues exactly.
 */
import * as tf from '@tensorflow/tfjs';
import { ADAMW_KERNEL } from '../backend/wasm-kernels.js';
import type { NamedArray, ParamStore } from '../nn/params.js';

export interface AdamWConfig {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

export function validateAdamWConfig(c: AdamWConfig): Required<AdamWConfig> {
  const r = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, ...c };
  const check = (name: string, v: number, ok: boolean, allowed: string) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok) throw new Error(`AdamW ${name} must be ${allowed}, got ${v}`);
  };
  check('lr', r.lr, r.lr >= 0, 'a finite number >= 0');
  check('beta1', r.beta1, r.beta1 >= 0 && r.beta1 < 1, 'in [0, 1)');
  check('beta2', r.beta2, r.beta2 >= 0 && r.beta2 < 1, 'in [0, 1)');
  check('eps', r.eps, r.eps > 0, '> 0');
  check('weightDecay', r.weightDecay, r.weightDecay >= 0, '>= 0');
  return r;
}

export class AdamW {
  readonly config: Required<AdamWConfig>;
  /** Number of updates applied so far. */
  stepCount = 0;
  private readonly m = new Map<string, tf.Variable>();
  private readonly v = new Map<string, tf.Variable>();

  constructor(
    private readonly store: ParamStore,
    config: AdamWConfig,
  ) {
    this.config = validateAdamWConfig(config);
  }

  private slot(map: Map<string, tf.Variable>, name: string, like: tf.Variable): tf.Variable {
    let s = map.get(name);
    if (!s) {
      s = tf.tidy(() => tf.variable(tf.zerosLike(like), false));
      map.set(name, s);
    }
    return s;
  }

  /** One update from gradients keyed by parameter name. Does not dispose the gradients. */
  step(grads: Map<string, tf.Tensor>, lr = this.config.lr): void {
    const { beta1, beta2, eps, weightDecay } = this.config;
    this.stepCount++;
    const bc1 = 1 - beta1 ** this.stepCount;
    const bc2 = 1 - beta2 ** this.stepCount;
    const fused = tf.getKernel(ADAMW_KERNEL, tf.getBackend()) !== undefined;
    for (const [name, g] of grads) {
      const p = this.store.get(name);
      const m = this.slot(this.m, name, p);
      const v = this.slot(this.v, name, p);
      if (fused && g.dtype === 'float32') {
        const attrs = { beta1, beta2, bc1, bc2, eps, lr, decay: 1 - lr * weightDecay };
        const [pNew, mNew, vNew] = tf.engine().runKernel(ADAMW_KERNEL, { p, g, m, v }, attrs) as tf.Tensor[];
        m.assign(mNew);
        v.assign(vNew);
        p.assign(pNew);
        tf.dispose([pNew, mNew, vNew]);
        continue;
      }
      tf.tidy(() => {
        const mNew = tf.add(tf.mul(m, beta1), tf.mul(g, 1 - beta1));
        const vNew = tf.add(tf.mul(v, beta2), tf.mul(tf.square(g), 1 - beta2));
        m.assign(mNew);
        v.assign(vNew);
        // p <- p - lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)
        const update = tf.div(tf.div(mNew, bc1), tf.add(tf.sqrt(tf.div(vNew, bc2)), eps));
        const decayed = weightDecay > 0 ? tf.mul(p, 1 - lr * weightDecay) : p;
        p.assign(tf.sub(decayed, tf.mul(update, lr)));
      });
    }
  }

  /** State as named arrays: `m.<param>`, `v.<param>`; the step count is returned separately. */
  async stateArrays(): Promise<{ step: number; arrays: Map<string, NamedArray> }> {
    const arrays = new Map<string, NamedArray>();
    for (const [prefix, map] of [
      ['m', this.m],
      ['v', this.v],
    ] as const) {
      for (const [name, s] of map) arrays.set(`${prefix}.${name}`, { shape: [...s.shape], data: (await s.data()) as Float32Array });
    }
    return { step: this.stepCount, arrays };
  }

  loadState(step: number, arrays: Map<string, NamedArray>): void {
    if (!Number.isInteger(step) || step < 0) throw new Error(`optimizer step must be an integer >= 0, got ${step}`);
    for (const key of arrays.keys()) {
      const dot = key.indexOf('.');
      const prefix = key.slice(0, dot);
      const name = key.slice(dot + 1);
      if ((prefix !== 'm' && prefix !== 'v') || !this.store.has(name)) throw new Error(`optimizer state has unexpected entry '${key}'`);
      const p = this.store.get(name);
      const a = arrays.get(key)!;
      if (a.shape.length !== p.shape.length || a.shape.some((d, i) => d !== p.shape[i])) {
        throw new Error(`optimizer state '${key}' has shape [${a.shape.join(', ')}], parameter is [${p.shape.join(', ')}]`);
      }
    }
    this.disposeState();
    for (const [key, a] of arrays) {
      const dot = key.indexOf('.');
      const map = key.slice(0, dot) === 'm' ? this.m : this.v;
      map.set(
        key.slice(dot + 1),
        tf.tidy(() => tf.variable(tf.tensor(a.data, a.shape, 'float32'), false)),
      );
    }
    this.stepCount = step;
  }

  private disposeState(): void {
    for (const s of this.m.values()) s.dispose();
    for (const s of this.v.values()) s.dispose();
    this.m.clear();
    this.v.clear();
  }

  dispose(): void {
    this.disposeState();
  }
}

/**
 * Scales gradients in place so their global L2 norm is at most maxNorm (Pascanu et al. 2013).
 * Returns the norm before clipping (NaN/Inf propagate, so callers can detect divergence).
 */
export function clipGradNorm(grads: Map<string, tf.Tensor>, maxNorm: number): number {
  const norm = globalNorm(grads, maxNorm);
  const value = norm.dataSync()[0];
  norm.dispose();
  return scaleToNorm(grads, maxNorm, value);
}

/**
 * clipGradNorm with the norm read asynchronously: the webgpu backend cannot read GPU data
 * synchronously in Node (see src/backend/webgpu.ts), and elsewhere it costs nothing more.
 */
export async function clipGradNormAsync(grads: Map<string, tf.Tensor>, maxNorm: number): Promise<number> {
  const norm = globalNorm(grads, maxNorm);
  const value = (await norm.data())[0];
  norm.dispose();
  return scaleToNorm(grads, maxNorm, value);
}

function globalNorm(grads: Map<string, tf.Tensor>, maxNorm: number): tf.Scalar {
  if (!(maxNorm > 0)) throw new Error(`gradient clip norm must be > 0, got ${maxNorm}`);
  return tf.tidy(() => {
    const sq = [...grads.values()].map((g) => tf.sum(tf.square(g)));
    return tf.sqrt(tf.addN(sq)) as tf.Scalar;
  });
}

function scaleToNorm(grads: Map<string, tf.Tensor>, maxNorm: number, value: number): number {
  if (Number.isFinite(value) && value > maxNorm) {
    const scale = maxNorm / (value + 1e-6);
    for (const [name, g] of grads) {
      grads.set(name, tf.mul(g, scale));
      g.dispose();
    }
  }
  return value;
}

/** acc += grads (both keyed by name); creates entries on first use. Disposes nothing of grads. */
export function accumulateGrads(acc: Map<string, tf.Tensor>, grads: Map<string, tf.Tensor>): void {
  for (const [name, g] of grads) {
    const prev = acc.get(name);
    if (prev) {
      acc.set(name, tf.add(prev, g));
      prev.dispose();
    } else acc.set(name, tf.clone(g));
  }
}
