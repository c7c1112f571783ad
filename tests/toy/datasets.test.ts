import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { Generator } from '../../src/random/generator.js';
import { applyNormalization, fitNormalization, loadDataset, makeMoons, makeSCurve, makeSwissRoll, parseDatasetSpec } from '../../src/toy/datasets.js';
import { chamfer, slicedWasserstein } from '../../src/toy/metrics.js';

describe('toy datasets', () => {
  it('s-curve without noise lies on (sin t, sign(t)(cos t - 1)), t in [-3pi/2, 3pi/2]', () => {
    const p = makeSCurve(500, new Generator(1), 0);
    for (let i = 0; i < 500; i++) {
      const x = p[2 * i];
      const z = p[2 * i + 1];
      expect(Math.abs(x)).toBeLessThanOrEqual(1 + 1e-6);
      // |z| = 1 - cos t in [0, 2]; z and the branch of t agree: x^2 + (|z| - 1)^2 = 1
      expect(x * x + (Math.abs(z) - 1) ** 2).toBeCloseTo(1, 4);
    }
  });

  it('moons and swiss roll follow the sklearn formulas', () => {
    const m = makeMoons(400, new Generator(2), 0);
    for (let i = 0; i < 400; i++) {
      const [x, y] = [m[2 * i], m[2 * i + 1]];
      if (i % 2 === 0) expect(x * x + y * y).toBeCloseTo(1, 4);
      else expect((1 - x) ** 2 + (0.5 - y) ** 2).toBeCloseTo(1, 4);
    }
    const s = makeSwissRoll(300, new Generator(3), 0);
    for (let i = 0; i < 300; i++) {
      const r = Math.hypot(s[2 * i], s[2 * i + 1]); // = t
      expect(r).toBeGreaterThanOrEqual(1.5 * Math.PI - 1e-4);
      expect(r).toBeLessThanOrEqual(4.5 * Math.PI + 1e-4);
    }
  });

  it('normalisation: zero mean, mean per-axis variance 1, one scale (aspect kept)', () => {
    const p = makeSwissRoll(5000, new Generator(4));
    const norm = fitNormalization(p);
    const q = applyNormalization(p, norm);
    let mx = 0;
    let my = 0;
    let v = 0;
    for (let i = 0; i < 5000; i++) {
      mx += q[2 * i];
      my += q[2 * i + 1];
    }
    for (let i = 0; i < 5000; i++) v += (q[2 * i] - mx / 5000) ** 2 + (q[2 * i + 1] - my / 5000) ** 2;
    expect(Math.abs(mx / 5000)).toBeLessThan(1e-5);
    expect(Math.abs(my / 5000)).toBeLessThan(1e-5);
    expect(v / 10000).toBeCloseTo(1, 4);
    // aspect: ratio of ranges unchanged
    expect((q[0] - q[2]) / (q[1] - q[3])).toBeCloseTo((p[0] - p[2]) / (p[1] - p[3]), 3);
  });

  it('is seeded: same Generator seed, same points', () => {
    expect(Array.from(makeSCurve(50, new Generator(9)))).toEqual(Array.from(makeSCurve(50, new Generator(9))));
  });

  it('image:<path> draws points where the picture is dark, y up, normalised', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'toy2d-'));
    const path = join(dir, 'l.png');
    // white 100x100 with a black vertical bar (x 10..29, y 0..99) and a black foot (x 10..79, y 80..99): an "L"
    const w = 100;
    const buf = Buffer.alloc(w * w * 3, 255);
    for (let y = 0; y < w; y++) {
      for (let x = 0; x < w; x++) {
        if ((x >= 10 && x < 30) || (y >= 80 && x >= 10 && x < 80)) buf.fill(0, 3 * (y * w + x), 3 * (y * w + x) + 3);
      }
    }
    await sharp(buf, { raw: { width: w, height: w, channels: 3 } })
      .png()
      .toFile(path);
    const ds = await loadDataset(parseDatasetSpec(`image:${path}`), new Generator(5));
    const p = ds.sample(4000, new Generator(6));
    // back to pixel coordinates
    let inside = 0;
    let foot = 0;
    for (let i = 0; i < 4000; i++) {
      const x = p[2 * i] * ds.norm.scale + ds.norm.mean[0];
      const y = -(p[2 * i + 1] * ds.norm.scale + ds.norm.mean[1]);
      if ((x >= 10 && x < 30) || (y >= 80 && x >= 10 && x < 80)) inside++;
      if (x >= 30 && y >= 80) foot++;
    }
    expect(inside).toBe(4000);
    // the foot beyond the bar has 50x20 of the 20x100 + 50x20 dark pixels: 1/3
    expect(foot / 4000).toBeGreaterThan(0.29);
    expect(foot / 4000).toBeLessThan(0.38);

    const blank = join(dir, 'blank.png');
    await sharp({ create: { width: 8, height: 8, channels: 3, background: '#ffffff' } })
      .png()
      .toFile(blank);
    await expect(loadDataset(parseDatasetSpec(`image:${blank}`), new Generator(0))).rejects.toThrow(/has no dark pixels/);
    await expect(loadDataset(parseDatasetSpec(`image:${join(dir, 'missing.png')}`), new Generator(0))).rejects.toThrow(/cannot read the picture/);
  });

  it('unknown datasets are errors naming the value and what is allowed', () => {
    expect(() => parseDatasetSpec('circles')).toThrow(/--dataset 'circles' is unknown; allowed: s-curve, moons, swiss-roll, image:<path/);
    expect(() => parseDatasetSpec('image:')).toThrow(/image: needs a path/);
  });
});

describe('distances', () => {
  it('sliced W2: 0 for identical sets; |v| / sqrt(2) for a translation by v', () => {
    const a = makeMoons(500, new Generator(1));
    expect(slicedWasserstein(a, a)).toBe(0);
    const b = Float32Array.from(a, (v, i) => (i % 2 === 0 ? v + 0.3 : v - 0.4)); // v = (0.3, -0.4), |v| = 0.5
    expect(slicedWasserstein(a, b)).toBeCloseTo(0.5 / Math.SQRT2, 5);
  });

  it('sliced W2 handles different sizes by quantiles', () => {
    const a = makeSCurve(2000, new Generator(1));
    const b = makeSCurve(500, new Generator(2));
    expect(slicedWasserstein(a, b)).toBeLessThan(0.1);
    expect(slicedWasserstein(a, new Generator(3).normalArray(1000))).toBeGreaterThan(0.3);
  });

  it('chamfer: symmetric mean nearest-neighbour distance', () => {
    expect(chamfer(new Float32Array([0, 0]), new Float32Array([3, 4]))).toBe(10);
    // a = {(0,0), (1,0)}, b = {(0,0)}: a->b mean (0 + 1)/2, b->a 0
    expect(chamfer(new Float32Array([0, 0, 1, 0]), new Float32Array([0, 0]))).toBeCloseTo(0.5, 12);
    const a = makeMoons(300, new Generator(4));
    expect(chamfer(a, a)).toBe(0);
  });
});
