/** WeightLayout: one tensor at a time between our element layout and PyTorch's, both ways. */
import { describe, expect, it } from 'vitest';
import { WeightLayout } from '../../src/checkpoint/layout.js';

const seq = (n: number) => Float32Array.from({ length: n }, (_, i) => i);

describe('WeightLayout', () => {
  const layout = new WeightLayout('diffusers', [
    { name: 'lin.weight', key: 'fc.weight', kind: 'linear' },
    { name: 'conv.weight', key: 'conv.weight', kind: 'conv' },
    { name: 'proj.weight', key: 'proj_in.weight', kind: 'conv1x1-linear' },
    { name: 'norm.bias', key: 'norm.b', kind: 'copy' },
  ]);

  it('transposes linear [in, out] <-> [out, in] and conv [kh, kw, in, out] <-> [out, in, kh, kw], exactly invertible', () => {
    const lin = { shape: [2, 3], data: seq(6) }; // ours [in 2, out 3]
    const f = layout.toFile('lin.weight', lin);
    expect(f).toEqual({ key: 'fc.weight', array: { shape: [3, 2], data: Float32Array.from([0, 3, 1, 4, 2, 5]) } });
    expect(layout.fromFile('fc.weight', f.array)).toEqual({ name: 'lin.weight', array: lin });

    const conv = { shape: [2, 3, 4, 5], data: seq(120) }; // [kh, kw, in, out]
    const c = layout.toFile('conv.weight', conv);
    expect(c.array.shape).toEqual([5, 4, 2, 3]);
    // file[o, i, y, x] = ours[y, x, i, o]
    for (const [o, i, y, x] of [
      [4, 3, 1, 2],
      [0, 1, 1, 0],
      [2, 0, 0, 2],
    ]) {
      expect(c.array.data[((o * 4 + i) * 2 + y) * 3 + x]).toBe(conv.data[((y * 3 + x) * 4 + i) * 5 + o]);
    }
    expect(layout.fromFile('conv.weight', c.array)).toEqual({ name: 'conv.weight', array: conv });

    const proj = { shape: [1, 1, 2, 3], data: seq(6) }; // a 1x1 conv stored as a diffusers Linear
    const p = layout.toFile('proj.weight', proj);
    expect(p.array).toEqual({ shape: [3, 2], data: Float32Array.from([0, 3, 1, 4, 2, 5]) });
    expect(layout.fromFile('proj_in.weight', p.array)).toEqual({ name: 'proj.weight', array: proj });
    expect(layout.fileShape('proj.weight', [1, 1, 2, 3])).toEqual([3, 2]);
    expect(layout.toFile('norm.bias', { shape: [2], data: seq(2) }).key).toBe('norm.b');
  });

  it('tells a file in its keys from one in our names, and names what it cannot map', () => {
    expect(layout.matches(['fc.weight', 'conv.weight', 'proj_in.weight', 'norm.b'])).toBe(true);
    expect(layout.matches(['lin.weight', 'conv.weight', 'proj.weight', 'norm.bias'])).toBe(false);
    expect(() => layout.fromFile('other.weight', { shape: [1], data: seq(1) })).toThrow(/unknown key 'other.weight'/);
    expect(() => layout.fromFile('conv.weight', { shape: [5, 4], data: seq(20) })).toThrow(/'conv.weight' has rank 2, expected 4/);
    expect(() => layout.toFile('nope', { shape: [1], data: seq(1) })).toThrow(/no file key for parameter 'nope'/);
    expect(
      () =>
        new WeightLayout('x', [
          { name: 'a', key: 'k', kind: 'copy' },
          { name: 'b', key: 'k', kind: 'copy' },
        ]),
    ).toThrow(/'b' -> 'k' is mapped twice/);
  });
});
