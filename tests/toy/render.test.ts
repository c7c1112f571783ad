import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { formatDuration, ProgressBar } from '../../src/toy/progress.js';
import { Canvas, formatNumber, multiPageTiff, renderFrame, renderLossCurve, strip, writeAnimation, writePng } from '../../src/toy/render.js';

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

  it('writes PNG, loss curve, and animated GIF and WebP with one page per frame', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'toy2d-render-'));
    const frames = [0, 1, 2].map((k) => renderFrame(new Float32Array([k - 1, 0]), { extent: 3 }, { size: 32, color: [0, 0, 255], radius: 2, alpha: 1 }));
    await writePng(renderLossCurve(Float32Array.from({ length: 500 }, (_, i) => 1 / (1 + i))), join(dir, 'loss.png'));
    const meta = await sharp(join(dir, 'loss.png')).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 720, 360]);
    for (const fmt of ['gif', 'webp'] as const) {
      const p = join(dir, `a.${fmt}`);
      await writeAnimation(frames, p, fmt, [100, 100, 400]);
      const m = await sharp(p, { animated: true }).metadata();
      expect([m.format, m.pages, m.pageHeight, m.width]).toEqual([fmt, 3, 32, 32]);
      expect(m.delay).toEqual([100, 100, 400]);
      expect(m.loop).toBe(0);
    }
    expect(multiPageTiff(frames).length).toBe(8 + 3 * (2 + 120 + 4 + 6 + 32 * 32 * 3));
  });
});

describe('progress bar', () => {
  function fakeStream(tty: boolean) {
    const out: string[] = [];
    return { out, stream: { isTTY: tty, write: (s: string) => out.push(s) } as unknown as NodeJS.WriteStream };
  }

  it('prints a line per 10% when not a TTY, and in place with \\r on a TTY', () => {
    const plain = fakeStream(false);
    const bar = new ProgressBar(100, plain.stream);
    for (let i = 1; i <= 100; i++) bar.update(i, 0.5);
    expect(plain.out.length).toBe(11);
    expect(plain.out.at(-1)).toMatch(/\[#+\] 100\/100 {2}loss 0\.5000 \(avg 0\.5000\) .* done in 0:00\n$/);
    const tty = fakeStream(true);
    const bar2 = new ProgressBar(3, tty.stream);
    bar2.update(1, 1);
    bar2.update(3, 1);
    expect(tty.out[0].startsWith('\r')).toBe(true);
    expect(tty.out.at(-1)).toMatch(/ETA|done/);
    expect(tty.out.at(-1)!.endsWith('\n')).toBe(true);
    expect(formatDuration(3725)).toBe('1:02:05');
    expect(formatDuration(65)).toBe('1:05');
  });
});
