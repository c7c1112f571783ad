/**
 * Noise for a batch in which every image draws from its own seeded Generator: AUTOMATIC1111's
 * per-image seeds (seed, seed + 1, ... across a batch), so an image depends on its seed alone, not
 * on the batch it was generated in or its place there.
 */
import * as tf from '@tensorflow/tfjs';
import { Generator } from './generator.js';

export class PerImageNoise {
  readonly generators: readonly Generator[];

  constructor(readonly seeds: readonly number[]) {
    if (seeds.length === 0) throw new Error('PerImageNoise needs at least one seed');
    this.generators = seeds.map((s) => new Generator(s));
  }

  /**
   * n standard normals for a batch of seeds.length images in row-major [B, ...] order: image i's
   * n / B values come from generator i (the NoiseSource contract of the schedulers).
   */
  normalArray(n: number): Float32Array {
    const b = this.generators.length;
    if (!Number.isInteger(n) || n < 0 || n % b !== 0) throw new Error(`PerImageNoise: ${n} values do not split evenly over ${b} images`);
    const per = n / b;
    const out = new Float32Array(n);
    this.generators.forEach((g, i) => {
      out.set(g.normalArray(per), i * per);
    });
    return out;
  }

  /** A float32 tensor of standard normals, shape [B, ...] with B = seeds.length. */
  randn(shape: number[]): tf.Tensor {
    if (shape[0] !== this.generators.length) throw new Error(`PerImageNoise: shape [${shape.join(', ')}] must start with the ${this.generators.length} images`);
    return tf.tensor(this.normalArray(shape.reduce((a, d) => a * d, 1)), shape, 'float32');
  }
}
