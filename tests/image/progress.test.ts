import { describe, expect, it } from 'vitest';
import { formatDuration, ProgressBar, trainingProgress } from '../../src/image/progress.js';

function sink(isTTY: boolean): { stream: { write(s: string): boolean; isTTY: boolean }; out: string[] } {
  const out: string[] = [];
  return {
    stream: {
      write: (s: string) => {
        out.push(s);
        return true;
      },
      isTTY,
    },
    out,
  };
}

describe('ProgressBar', () => {
  it('prints a line every 10% (and at the end) when not a TTY', () => {
    let t = 0;
    const { stream, out } = sink(false);
    const bar = new ProgressBar({ total: 100, label: 'train', stream, now: () => t, intervalSec: 1e9 });
    for (let i = 0; i < 100; i++) {
      t += 100; // 10 it/s
      bar.tick(1, { loss: 1 / (i + 1) });
    }
    bar.finish();
    expect(out).toHaveLength(10);
    expect(out.every((l) => l.endsWith('\n') && !l.includes('\r'))).toBe(true);
    expect(out[0]).toMatch(/^train \[==>\s+\]\s+10\/100\s+10% loss=0\.1000 10\.00 it\/s ETA 0:09\n$/);
    expect(out[9]).toMatch(/100\/100 100% loss=0\.01000 10\.00 it\/s elapsed 0:10/);
  });

  it('also prints after intervalSec when progress is slow', () => {
    let t = 0;
    const { stream, out } = sink(false);
    const bar = new ProgressBar({ total: 1000, stream, now: () => t, intervalSec: 5 });
    for (let i = 0; i < 20; i++) {
      t += 1000;
      bar.tick();
    }
    expect(out).toHaveLength(4); // every 5 s, no 10% crossed
    expect(out[3]).toMatch(/20\/1000\s+2% 1\.00 it\/s ETA 16:20/);
    t += 1000;
    bar.tick();
    bar.finish();
    expect(out).toHaveLength(5);
    expect(out[4]).toMatch(/21\/1000/);
    bar.finish(); // finishing twice prints nothing more
    expect(out).toHaveLength(5);
    // finish() right after a printed line does not repeat it.
    const { stream: s2, out: o2 } = sink(false);
    const b2 = new ProgressBar({ total: 10, stream: s2, now: () => 0 });
    b2.update(10);
    b2.finish();
    expect(o2).toHaveLength(1);
  });

  it('redraws in place on a TTY, throttled, and ends with a newline', () => {
    let t = 0;
    const { stream, out } = sink(true);
    const bar = new ProgressBar({ total: 50, stream, now: () => t, barWidth: 10 });
    for (let i = 0; i < 50; i++) {
      t += 20;
      bar.tick(1, { loss: 0.5, lr: 1e-4 });
    }
    bar.finish();
    expect(out.length).toBeGreaterThan(3);
    expect(out.length).toBeLessThan(20);
    expect(out.slice(0, -1).every((s) => s.startsWith('\r'))).toBe(true);
    expect(out[out.length - 1]).toBe('\n');
    expect(out[out.length - 2]).toMatch(/\r\[==========\] 50\/50 100% loss=0\.5000 lr=1\.00e-4 50\.00 it\/s elapsed 0:01/);
  });

  it('is silent when asked, supports resumed starts and slow rates', () => {
    const { stream, out } = sink(true);
    const bar = new ProgressBar({ total: 10, stream, silent: true });
    bar.tick(5);
    bar.finish();
    expect(out).toEqual([]);
    expect(bar.current).toBe(5);
    let t = 0;
    const slow = new ProgressBar({ total: 10, start: 4, stream, silent: true, now: () => t });
    t = 4000;
    slow.update(6);
    expect(slow.rate()).toBeCloseTo(0.5);
    expect(slow.eta()).toBeCloseTo(8);
    expect(slow.render()).toMatch(/6\/10\s+60% 2\.00 s\/it ETA 0:08/);
    expect(() => new ProgressBar({ total: -1 })).toThrow(/total must be an integer >= 0/);
  });

  it('counts a resumed training run from its first reported step, not from 0', () => {
    const { stream } = sink(true);
    let t = 0;
    const bar = new ProgressBar({ total: 1000, stream, silent: true, now: () => t });
    t = 2000;
    trainingProgress(bar, { step: 601, loss: 0.1, lr: 1e-4 }); // resumed at 600
    t = 4000;
    trainingProgress(bar, { step: 602, loss: 0.1, lr: 1e-4 });
    expect(bar.rate()).toBeCloseTo(0.5); // 2 steps in 4 s, not 602
    bar.startFrom(0); // ignored once steps were shown
    expect(bar.rate()).toBeCloseTo(0.5);
    expect(() => new ProgressBar({ total: 5 }).startFrom(6)).toThrow(/start must be an integer in \[0, 5\], got 6/);
  });

  it("times a training run from its first step's start, not from the set-up before it", () => {
    const { stream } = sink(true);
    let t = 0;
    const bar = new ProgressBar({ total: 100, stream, silent: true, now: () => t });
    t = 60_000; // 58 s of set-up (encoding latents, starting workers), then a 2 s first step
    trainingProgress(bar, { step: 1, loss: 0.1, lr: 1e-4, seconds: 2 });
    t = 63_000;
    trainingProgress(bar, { step: 2, loss: 0.1, lr: 1e-4, seconds: 3 });
    expect(bar.rate()).toBeCloseTo(0.4); // 2 steps in 5 s, not in 63
    expect(bar.eta()).toBeCloseTo(245);
  });

  it('formats durations', () => {
    expect(formatDuration(5)).toBe('0:05');
    expect(formatDuration(65)).toBe('1:05');
    expect(formatDuration(3725)).toBe('1:02:05');
    expect(formatDuration(Infinity)).toBe('?');
  });
});
