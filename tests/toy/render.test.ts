import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { writeFileAtomic } from '../../src/checkpoint/files.js';
import { encodeAnimation } from '../../src/image/animate.js';
import { writePng } from '../../src/image/convert.js';
import { RunningAverage } from '../../src/toy/metrics.js';
import { Canvas, formatNumber, renderFrame, renderLossCurve, strip } from '../../src/toy/render.js';

describe('rasteriser', () => {
  it('draws points where the view maps them (y up)', () => {
    const c = renderFrame(new Float32Array([1.5, 1.5]), { extent: 3 }, { size: 100, color: [255, 0, 0], radius: 2, alpha: 1 });
    // (1.5, 1.5) in [-3, 3]^2 -> pixel (75, 25)
    const px = (x: number, y: number) => Array.from(c.data.subarray(4 * (y * 100 + x), 4 * (y * 100 + x) + 3));
    expect(px(75, 25)).toEqual([255, 0, 0]);
    expect(px(25, 75)).toEqual([255, 255, 255]);
  });

  it('text uses the bitmap font; strips and numbers', () => {
    const c = new Canvas(40, 12);
    c.text(0, 0, 'T=1', [0, 0, 0], 2);
    let dark = 0;
    for (let i = 0; i < 40 * 12; i++) if (c.data[4 * i] === 0) dark++;
    expect(dark).toBeGreaterThan(20);
    const s = strip([new Canvas(10, 10), new Canvas(10, 10)], 4);
    expect([s.width, s.height]).toEqual([24, 10]);
    expect(formatNumber(0.23456)).toBe('0.235');
    expect(formatNumber(0.00001234)).toBe('1.2e-5');
  });

  it('toImage gives the RGB pixels for src/image', () => {
    const c = new Canvas(3, 2, [10, 20, 30]);
    c.rect(1, 1, 1, 1, [200, 100, 0]);
    const im = c.toImage();
    expect([im.width, im.height, im.channels]).toEqual([3, 2, 3]);
    expect(Array.from(im.data.subarray(0, 3))).toEqual([10, 20, 30]);
    expect(Array.from(im.data.subarray(3 * 4, 3 * 5))).toEqual([200, 100, 0]);
  });

  it('writes PNG, loss curve, and animated GIF and WebP with one page per frame (through src/image)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'toy2d-render-'));
    const frames = [0, 1, 2].map((k) => renderFrame(new Float32Array([k - 1, 0]), { extent: 3 }, { size: 32, color: [0, 0, 255], radius: 2, alpha: 1 }));
    await writePng(join(dir, 'loss.png'), renderLossCurve(Float32Array.from({ length: 500 }, (_, i) => 1 / (1 + i))).toImage());
    const meta = await sharp(join(dir, 'loss.png')).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 720, 360]);
    for (const fmt of ['gif', 'webp'] as const) {
      const p = join(dir, `a.${fmt}`);
      writeFileAtomic(
        p,
        await encodeAnimation(
          frames.map((f) => f.toImage()),
          fmt,
          { delay: [100, 100, 400], loop: 0 },
        ),
      );
      const m = await sharp(p, { animated: true }).metadata();
      expect([m.format, m.pages, m.pageHeight, m.width]).toEqual([fmt, 3, 32, 32]);
      expect(m.delay).toEqual([100, 100, 400]);
      expect(m.loop).toBe(0);
    }
  });
});

describe('running average (progress bar and loss curve)', () => {
  it('is bias-corrected: starts at the first value, follows a constant exactly', () => {
    const a = new RunningAverage(0.99);
    expect(a.value).toBeNaN();
    expect(a.add(0.5)).toBeCloseTo(0.5, 12);
    for (let i = 0; i < 50; i++) a.add(0.5);
    expect(a.value).toBeCloseTo(0.5, 12);
    // two values: (0.01 * 0.99 * 1 + 0.01 * 3) / (1 - 0.99^2)
    const b = new RunningAverage(0.99);
    b.add(1);
    expect(b.add(3)).toBeCloseTo((0.0099 + 0.03) / (1 - 0.99 ** 2), 12);
    expect(() => new RunningAverage(1)).toThrow(/decay must be in \[0, 1\)/);
  });
});
