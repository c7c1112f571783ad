/**
 * A training progress bar on stderr: in place with \r on a TTY, else one line every 10%.
 *   [##########----------]  1200/3000  loss 0.4123 (avg 0.4301)  52.1 it/s  ETA 0:35
 */

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${String(r).padStart(2, '0')}` : `${m}:${String(r).padStart(2, '0')}`;
}

export class ProgressBar {
  private readonly start = performance.now();
  private lastDraw = 0;
  private lastDecile = -1;
  private avg = 0;
  private seen = 0;

  constructor(
    readonly total: number,
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly width = 24,
    private readonly label = 'train',
  ) {}

  private get tty(): boolean {
    return Boolean(this.stream.isTTY);
  }

  /** Call after each step with the 1-based step count and its loss. */
  update(step: number, loss: number): void {
    this.seen++;
    // running average with a ~100-step window (bias-corrected)
    const k = 0.99;
    this.avg = k * this.avg + (1 - k) * loss;
    const avg = this.avg / (1 - k ** this.seen);
    const now = performance.now();
    const done = step >= this.total;
    if (this.tty) {
      if (!done && now - this.lastDraw < 100) return;
      this.lastDraw = now;
      this.stream.write(`\r${this.line(step, loss, avg, now)}${done ? '\n' : ''}`);
    } else {
      const decile = Math.floor((10 * step) / this.total);
      if (decile === this.lastDecile && !done) return;
      this.lastDecile = decile;
      this.stream.write(`${this.line(step, loss, avg, now)}\n`);
    }
  }

  line(step: number, loss: number, avg: number, now = performance.now()): string {
    const frac = Math.min(1, step / this.total);
    const filled = Math.round(frac * this.width);
    const secs = (now - this.start) / 1000;
    const rate = step / Math.max(secs, 1e-9);
    const eta = (this.total - step) / Math.max(rate, 1e-9);
    const digits = String(this.total).length;
    return (
      `${this.label} [${'#'.repeat(filled)}${'-'.repeat(this.width - filled)}] ${String(step).padStart(digits)}/${this.total}` +
      `  loss ${loss.toFixed(4)} (avg ${avg.toFixed(4)})  ${rate.toFixed(1)} it/s  ` +
      (step >= this.total ? `done in ${formatDuration(secs)}` : `ETA ${formatDuration(eta)}`)
    );
  }
}
