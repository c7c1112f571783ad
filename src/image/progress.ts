/**
 * A progress bar for long loops, written to stderr.
 *
 * On a TTY the line is redrawn in place with '\r' (at most ~10 times a second). Elsewhere (logs,
 * CI) a full line is printed each time another ~10% is done or `intervalSec` seconds have
 * passed, whichever is first, so logs stay short but a stalled run is visible.
 *
 *   train  [=========>          ]  450/1000  45% loss=0.1234 lr=1e-4  12.3 it/s  ETA 0:44
 */

export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export type ProgressValue = number | string;

export interface ProgressOptions {
  total: number;
  /** Text before the bar, e.g. 'train'. */
  label?: string;
  /** Default process.stderr. */
  stream?: ProgressStream;
  /** Write nothing (tests). */
  silent?: boolean;
  /** Force in-place redraw (true) or line mode (false); default: the stream's isTTY. */
  tty?: boolean;
  /** Line mode: also print when this many seconds passed since the last line; default 30. */
  intervalSec?: number;
  /** Line mode: print each time this fraction of the total is done; default 0.1. */
  everyFraction?: number;
  /** Bar width in characters; default 20 (0 hides the bar). */
  barWidth?: number;
  /** Clock in milliseconds (tests); default performance.now. */
  now?: () => number;
  /** Step already done when the bar starts (a resumed run); the rate counts from here. */
  start?: number;
}

/** Seconds as m:ss or h:mm:ss. */
export function formatDuration(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return '?';
  const s = Math.round(sec);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

function formatValue(v: ProgressValue): string {
  if (typeof v === 'string') return v;
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return v.toPrecision(4);
}

export class ProgressBar {
  readonly total: number;
  private step: number;
  private startStep: number;
  private startTime: number;
  private values: Record<string, ProgressValue> = {};
  private readonly stream: ProgressStream;
  private readonly silent: boolean;
  private readonly tty: boolean;
  private readonly interval: number;
  private readonly fraction: number;
  private readonly barWidth: number;
  private readonly label: string;
  private readonly now: () => number;
  private lastDraw = -Infinity;
  private lastLineTime: number;
  private lastLineBucket: number;
  private lastLen = 0;
  private lastPrinted = -1;
  private finished = false;
  private updated = false;

  constructor(options: ProgressOptions) {
    const { total } = options;
    if (!Number.isInteger(total) || total < 0) throw new Error(`ProgressBar total must be an integer >= 0, got ${total}`);
    this.total = total;
    this.startStep = options.start ?? 0;
    if (!Number.isInteger(this.startStep) || this.startStep < 0 || this.startStep > total) {
      throw new Error(`ProgressBar start must be an integer in [0, ${total}], got ${options.start}`);
    }
    this.step = this.startStep;
    this.stream = options.stream ?? process.stderr;
    this.silent = options.silent ?? false;
    this.tty = options.tty ?? Boolean(this.stream.isTTY);
    this.interval = (options.intervalSec ?? 30) * 1000;
    this.fraction = options.everyFraction ?? 0.1;
    if (!(this.fraction > 0 && this.fraction <= 1)) throw new Error(`ProgressBar everyFraction must be in (0, 1], got ${this.fraction}`);
    this.barWidth = options.barWidth ?? 20;
    this.label = options.label ?? '';
    this.now = options.now ?? (() => performance.now());
    this.startTime = this.now();
    this.lastLineTime = this.startTime;
    this.lastLineBucket = this.bucket(this.step);
  }

  /**
   * The step this run starts from, when it is known only after the bar was made (a resumed
   * training run reports its first step late): the rate counts from here, and from
   * `secondsAgo` before now (when that step's work began: the set-up before it, e.g. encoding
   * a dataset's latents, is not a step). Ignored after the first update.
   */
  startFrom(step: number, secondsAgo?: number): void {
    if (this.step !== this.startStep || this.updated) return;
    if (!Number.isInteger(step) || step < 0 || step > this.total) throw new Error(`ProgressBar start must be an integer in [0, ${this.total}], got ${step}`);
    this.startStep = step;
    this.step = step;
    this.lastLineBucket = this.bucket(step);
    if (secondsAgo !== undefined && Number.isFinite(secondsAgo) && secondsAgo >= 0) {
      this.startTime = Math.max(this.startTime, this.now() - secondsAgo * 1000);
      this.lastLineTime = this.startTime;
    }
  }

  /** Steps per second since the bar started (0 before the first step). */
  rate(): number {
    const dt = (this.now() - this.startTime) / 1000;
    const done = this.step - this.startStep;
    return dt > 0 && done > 0 ? done / dt : 0;
  }

  /** Estimated seconds left (Infinity before the first step). */
  eta(): number {
    const r = this.rate();
    return r > 0 ? (this.total - this.step) / r : Infinity;
  }

  get current(): number {
    return this.step;
  }

  /** Advances by n steps and merges named values (e.g. `{ loss }`). */
  tick(n = 1, values?: Record<string, ProgressValue>): void {
    this.update(this.step + n, values);
  }

  /** Sets the absolute step and merges named values. */
  update(step: number, values?: Record<string, ProgressValue>): void {
    if (!Number.isFinite(step)) throw new Error(`ProgressBar step must be a number, got ${step}`);
    this.step = Math.min(Math.max(step, 0), this.total);
    this.updated = true;
    if (values) Object.assign(this.values, values);
    if (this.silent || this.finished) return;
    const t = this.now();
    if (this.tty) {
      if (t - this.lastDraw >= 100 || this.step >= this.total) this.draw(t);
    } else {
      const b = this.bucket(this.step);
      if (b > this.lastLineBucket || t - this.lastLineTime >= this.interval) this.printLine(t);
    }
  }

  /** Prints the final state (once) and ends the line. */
  finish(values?: Record<string, ProgressValue>): void {
    if (values) Object.assign(this.values, values);
    if (this.silent || this.finished) {
      this.finished = true;
      return;
    }
    if (this.tty) {
      this.draw(this.now());
      this.stream.write('\n');
    } else if (this.lastPrinted !== this.step) {
      this.printLine(this.now());
    }
    this.finished = true;
  }

  /** The status line (without '\r' or newline). */
  render(): string {
    const parts: string[] = [];
    if (this.label) parts.push(this.label);
    const frac = this.total > 0 ? this.step / this.total : 1;
    if (this.barWidth > 0) {
      const filled = Math.floor(frac * this.barWidth);
      const bar = '='.repeat(filled) + (filled < this.barWidth ? '>' : '') + ' '.repeat(Math.max(0, this.barWidth - filled - 1));
      parts.push(`[${bar}]`);
    }
    const w = String(this.total).length;
    parts.push(`${String(this.step).padStart(w)}/${this.total}`, `${String(Math.floor(frac * 100)).padStart(3)}%`);
    for (const [k, v] of Object.entries(this.values)) parts.push(`${k}=${formatValue(v)}`);
    const r = this.rate();
    parts.push(r >= 1 || r === 0 ? `${r.toFixed(2)} it/s` : `${(1 / r).toFixed(2)} s/it`);
    parts.push(this.step >= this.total ? `elapsed ${formatDuration((this.now() - this.startTime) / 1000)}` : `ETA ${formatDuration(this.eta())}`);
    return parts.join(' ');
  }

  private bucket(step: number): number {
    return this.total > 0 ? Math.floor(step / this.total / this.fraction + 1e-9) : 0;
  }

  private printLine(t: number): void {
    this.lastLineBucket = this.bucket(this.step);
    this.lastLineTime = t;
    this.lastPrinted = this.step;
    this.stream.write(`${this.render()}\n`);
  }

  private draw(t: number): void {
    this.lastDraw = t;
    let line = this.render();
    const cols = this.stream.columns;
    if (cols && line.length > cols - 1) line = line.slice(0, cols - 1);
    const pad = this.lastLen > line.length ? ' '.repeat(this.lastLen - line.length) : '';
    this.lastLen = line.length;
    this.stream.write(`\r${line}${pad}`);
  }
}

/**
 * Shows a training step; the first one tells where a resumed run started and, with its duration
 * (`seconds`), when its work began, so the rate and ETA are this call's steps' own.
 */
export function trainingProgress(bar: ProgressBar, s: { step: number; loss: number; lr: number; seconds?: number }): void {
  bar.startFrom(s.step - 1, s.seconds);
  bar.update(s.step, { loss: s.loss.toFixed(4), lr: s.lr.toExponential(2) });
}
