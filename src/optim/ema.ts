/**
 * Exponential moving average of weights (Polyak averaging; as in DDPM's training and diffusers'
 * EMAModel): shadow <- decay * shadow + (1 - decay) * param, with the warm-up
 * decay_t = min(decay, (1 + t) / (10 + t)) so early averages are not dominated by the random init.
 */
import * as tf from '@tensorflow/tfjs';
import { type NamedArray, ParamStore } from '../nn/params.js';

export class EMA {
  /** The averaged weights, same names and shapes as the tracked store. */
  readonly shadow: ParamStore;
  updates = 0;

  constructor(
    private readonly store: ParamStore,
    readonly decay = 0.999,
    readonly warmup = true,
  ) {
    if (!(decay >= 0 && decay < 1)) throw new Error(`EMA decay must be in [0, 1), got ${decay}`);
    this.shadow = ParamStore.copyOf(store);
  }

  currentDecay(): number {
    return this.warmup ? Math.min(this.decay, (1 + this.updates) / (10 + this.updates)) : this.decay;
  }

  update(): void {
    const d = this.currentDecay();
    for (const [name, s] of this.shadow.entries()) {
      const p = this.store.get(name);
      tf.tidy(() => s.assign(tf.add(tf.mul(s, d), tf.mul(p, 1 - d))));
    }
    this.updates++;
  }

  /** Writes the averaged weights into a store with the same parameter names. */
  copyTo(target: ParamStore): void {
    target.copyFrom(this.shadow);
  }

  toArrays(): Promise<Map<string, NamedArray>> {
    return this.shadow.toArrays();
  }

  load(updates: number, arrays: Map<string, NamedArray>): void {
    this.shadow.loadArrays(arrays, 'EMA state');
    this.updates = updates;
  }

  dispose(): void {
    this.shadow.dispose();
  }
}
