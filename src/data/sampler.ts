/**
 * Epoch-based shuffled index stream with a serialisable position.
 *
 * Epoch e visits every index once in a permutation drawn from a Generator seeded by (seed, e),
 * so any epoch's order can be recomputed from the seed alone. Batches are taken from the
 * endless stream epoch 0, epoch 1, ... and may straddle an epoch boundary (so a dataset smaller
 * than the batch still works and nothing is dropped).
 *
 * A loader's position is `{ epoch, index, rngState }`: the next index to take, plus the state of
 * the loader's augmentation generator (caption choice, crop, flip). Saving it with a training
 * checkpoint and passing it back gives the same next batches.
 */
import { Generator, type GeneratorState } from '../random/generator.js';

export interface LoaderPosition {
  epoch: number;
  /** Next position inside the epoch's permutation, in [0, N). */
  index: number;
  /** Augmentation generator state. */
  rngState: GeneratorState;
}

const MAX_SEED = 9007199254740991n;

/** The Generator that shuffles epoch `epoch` for `seed`. */
export function epochGenerator(seed: number, epoch: number): Generator {
  const s = (BigInt(seed) * 0x9e3779b97f4a7c15n + BigInt(epoch) * 0xbf58476d1ce4e5b9n + 0x94d049bb133111ebn) % MAX_SEED;
  return new Generator(Number(s));
}

/** The initial augmentation-generator state for a seed (independent of the shuffle streams). */
export function initialRngState(seed: number): GeneratorState {
  const s = (BigInt(seed) * 0xd6e8feb86659fd93n + 0x2545f4914f6cdd1dn) % MAX_SEED;
  return new Generator(Number(s)).getState();
}

export function checkPosition(p: LoaderPosition, n: number, what = 'loader position'): void {
  if (typeof p !== 'object' || p === null) throw new Error(`${what} must be { epoch, index, rngState }, got ${JSON.stringify(p)}`);
  if (!Number.isInteger(p.epoch) || p.epoch < 0) throw new Error(`${what}: epoch must be an integer >= 0, got ${p.epoch}`);
  if (!Number.isInteger(p.index) || p.index < 0 || p.index >= n) {
    throw new Error(`${what}: index must be an integer in [0, ${n}) for a dataset of ${n} items, got ${p.index} (did the dataset change?)`);
  }
  Generator.fromState(p.rngState); // validates
}

export class EpochSampler {
  readonly size: number;
  readonly seed: number;
  readonly shuffle: boolean;
  private epoch = 0;
  private index = 0;
  private orderEpoch = -1;
  private order: Uint32Array = new Uint32Array(0);

  constructor(size: number, seed: number, shuffle = true) {
    if (!Number.isInteger(size) || size < 1) throw new Error(`sampler: dataset size must be a positive integer, got ${size}`);
    if (!Number.isInteger(seed) || seed < 0 || seed > Number.MAX_SAFE_INTEGER) {
      throw new Error(`sampler: seed must be an integer in [0, ${Number.MAX_SAFE_INTEGER}], got ${seed}`);
    }
    this.size = size;
    this.seed = seed;
    this.shuffle = shuffle;
  }

  /** The visiting order of an epoch. */
  epochOrder(epoch: number): Uint32Array {
    if (epoch === this.orderEpoch) return this.order;
    const idx = Array.from({ length: this.size }, (_, i) => i);
    if (this.shuffle) epochGenerator(this.seed, epoch).shuffle(idx);
    this.order = Uint32Array.from(idx);
    this.orderEpoch = epoch;
    return this.order;
  }

  get position(): { epoch: number; index: number } {
    return { epoch: this.epoch, index: this.index };
  }

  seek(epoch: number, index: number): void {
    if (!Number.isInteger(epoch) || epoch < 0 || !Number.isInteger(index) || index < 0 || index >= this.size) {
      throw new Error(`sampler: cannot seek to epoch ${epoch} index ${index} (dataset of ${this.size})`);
    }
    this.epoch = epoch;
    this.index = index;
  }

  /** Takes the next item index (and the epoch it belongs to). */
  next(): { item: number; epoch: number } {
    const order = this.epochOrder(this.epoch);
    const r = { item: order[this.index], epoch: this.epoch };
    this.index++;
    if (this.index >= this.size) {
      this.index = 0;
      this.epoch++;
    }
    return r;
  }
}
