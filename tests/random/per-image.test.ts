/** PerImageNoise: each image's noise comes from its own seed, whatever the batch around it. */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { Generator } from '../../src/random/generator.js';
import { PerImageNoise } from '../../src/random/per-image.js';

beforeAll(async () => {
  await initBackend({ backend: 'cpu', quiet: true });
});

describe('PerImageNoise', () => {
  it("image i's values, draw after draw, are generator(seed_i)'s", () => {
    const noise = new PerImageNoise([7, 8, 9]);
    const a = noise.normalArray(12);
    const b = noise.normalArray(6);
    [7, 8, 9].forEach((seed, i) => {
      const g = new Generator(seed);
      expect(Array.from(a.subarray(i * 4, i * 4 + 4))).toEqual(Array.from(g.normalArray(4)));
      expect(Array.from(b.subarray(i * 2, i * 2 + 2))).toEqual(Array.from(g.normalArray(2)));
    });
    // the same seed alone gives the same image noise as inside the batch
    const alone = new PerImageNoise([8]).normalArray(4);
    expect(Array.from(alone)).toEqual(Array.from(a.subarray(4, 8)));
  });

  it('randn is normalArray as a tensor; bad sizes are errors', () => {
    const t = new PerImageNoise([1, 2]).randn([2, 3]);
    expect(Array.from(t.dataSync())).toEqual(Array.from(new PerImageNoise([1, 2]).normalArray(6)));
    t.dispose();
    expect(() => new PerImageNoise([1, 2]).normalArray(5)).toThrow(/5 values do not split evenly over 2 images/);
    expect(() => new PerImageNoise([1, 2]).randn([3, 2])).toThrow(/must start with the 2 images/);
    expect(() => new PerImageNoise([])).toThrow(/at least one seed/);
  });
});
