/** EpochSampler: every index once per epoch, a fresh order per epoch, the same order for the same seed. */
import { describe, expect, it } from 'vitest';
import { EpochSampler, epochGenerator } from '../../src/data/sampler.js';

describe('EpochSampler', () => {
  it('visits every index once per epoch, in a different order per epoch', () => {
    const s = new EpochSampler(10, 3);
    const e0 = Array.from({ length: 10 }, () => s.next());
    const e1 = Array.from({ length: 10 }, () => s.next());
    expect(e0.every((x) => x.epoch === 0) && e1.every((x) => x.epoch === 1)).toBe(true);
    expect(e0.map((x) => x.item).sort((a, b) => a - b)).toEqual([...Array(10).keys()]);
    expect(e1.map((x) => x.item)).not.toEqual(e0.map((x) => x.item));
    expect(epochGenerator(3, 1).getState()).toEqual(epochGenerator(3, 1).getState());
    expect(Array.from(new EpochSampler(4, 3, false).epochOrder(5))).toEqual([0, 1, 2, 3]);
  });
});
