/**
 * The project's only source of randomness: a seeded, serialisable generator.
 *
 * All noise (initial latents, DDPM ancestral noise, training noise, dropout of conditioning,
 * weight initialisation, data shuffling) is drawn here in JavaScript and uploaded as tensors,
 * so the same seed gives bit-identical noise on every tfjs backend (cpu, wasm, node, webgpu).
 *
 * Algorithm: xoshiro128** (Blackman & Vigna, 2018) for 32-bit output, seeded through
 * splitmix32 so that nearby seeds give unrelated streams. Normals use the Box-Muller
 * transform on pairs of uniforms.
 */
import * as tf from '@tensorflow/tfjs';

/** Serialisable state: four 32-bit words. Saved in training checkpoints for exact resume. */
export type GeneratorState = [number, number, number, number];

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export class Generator {
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  constructor(seed: number = 0) {
    if (!Number.isInteger(seed) || seed < 0 || seed > Number.MAX_SAFE_INTEGER) {
      throw new Error(`Generator seed must be an integer in [0, ${Number.MAX_SAFE_INTEGER}], got ${seed}`);
    }
    // Fold high bits in so seeds above 2^32 still differ.
    const hi = Math.floor(seed / 2 ** 32) >>> 0;
    const sm = splitmix32((seed >>> 0) ^ Math.imul(hi, 0x27d4eb2d));
    this.s0 = sm();
    this.s1 = sm();
    this.s2 = sm();
    this.s3 = sm();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /**
   * For a model whose every parameter is overwritten right after it is built (loaded from a
   * file, copied from another model or thread): its arrays are zeros and no number is drawn, so
   * building an SD-1.5-size U-Net (860M parameters, ~0.1-0.3 us per draw here) does not spend
   * minutes on random values that are thrown away. Single draws from it are an error: it is no
   * source of noise.
   */
  static forLoadedWeights(): Generator {
    return new NoDraws();
  }

  static fromState(state: GeneratorState): Generator {
    const g = new Generator(0);
    g.setState(state);
    return g;
  }

  getState(): GeneratorState {
    return [this.s0, this.s1, this.s2, this.s3];
  }

  setState(state: GeneratorState): void {
    if (!Array.isArray(state) || state.length !== 4 || state.some((v) => !Number.isInteger(v) || v < 0 || v > 0xffffffff)) {
      throw new Error(`Generator state must be four uint32 words, got ${JSON.stringify(state)}`);
    }
    if (state.every((v) => v === 0)) throw new Error('Generator state must not be all zeros');
    [this.s0, this.s1, this.s2, this.s3] = state.map((v) => v >>> 0);
  }

  /** A new, independent generator derived from this one's stream (advances this one). */
  spawn(): Generator {
    const g = new Generator(0);
    g.setState([this.nextUint32(), this.nextUint32(), this.nextUint32(), (this.nextUint32() | 1) >>> 0]);
    return g;
  }

  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  uniform(): number {
    const a = this.nextUint32() >>> 5; // 27 bits
    const b = this.nextUint32() >>> 6; // 26 bits
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** Integer uniform in [lo, hi) (unbiased, by rejection). */
  randint(lo: number, hi: number): number {
    if (!Number.isInteger(lo) || !Number.isInteger(hi) || hi <= lo) {
      throw new Error(`randint needs integers lo < hi, got [${lo}, ${hi})`);
    }
    const range = hi - lo;
    if (range > 0xffffffff) return lo + Math.floor(this.uniform() * range);
    const limit = Math.floor(0x100000000 / range) * range;
    let x: number;
    do x = this.nextUint32();
    while (x >= limit);
    return lo + (x % range);
  }

  /** Standard normal (Box-Muller; the pair's second value is discarded). */
  normal(): number {
    let u = 0;
    while (u === 0) u = this.uniform();
    const v = this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** n standard normals, both values of each Box-Muller pair used. */
  normalArray(n: number): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      let u = 0;
      while (u === 0) u = this.uniform();
      const v = this.uniform();
      const r = Math.sqrt(-2 * Math.log(u));
      out[i] = r * Math.cos(2 * Math.PI * v);
      if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
    }
    return out;
  }

  uniformArray(n: number, lo = 0, hi = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * this.uniform();
    return out;
  }

  /** In-place Fisher-Yates shuffle. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.randint(0, i + 1);
      [items[i], items[j]] = [items[j], items[i]];
    }
    return items;
  }

  /** A float32 tensor of standard normals with the given shape. */
  randn(shape: number[]): tf.Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    return tf.tensor(this.normalArray(n), shape, 'float32');
  }

  /** A float32 tensor of uniforms in [lo, hi). */
  rand(shape: number[], lo = 0, hi = 1): tf.Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    return tf.tensor(this.uniformArray(n, lo, hi), shape, 'float32');
  }
}

/** Generator.forLoadedWeights(): zero arrays, no draws. */
class NoDraws extends Generator {
  override nextUint32(): number {
    throw new Error('Generator.forLoadedWeights() draws no random numbers: it only builds models whose weights are loaded next');
  }

  override uniformArray(n: number): Float32Array {
    return new Float32Array(n);
  }

  override normalArray(n: number): Float32Array {
    return new Float32Array(n);
  }
}
