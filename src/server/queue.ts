/**
 * One job at a time, in the order requests arrived: each request is a Job that waits its turn,
 * then runs to the end whatever happens to its client (a closed connection does not stop the
 * queue). A Job carries what A1111's shared state reports (/sdapi/v1/progress: job_no of
 * job_count batches, sampling_step of sampling_steps, interrupted, skipped) and the latest x0
 * estimate for the live preview, decoded to PNG only when someone asks for it.
 */
import type * as tf from '@tensorflow/tfjs';

export type JobKind = 'txt2img' | 'img2img' | 'options';

/** A1111's job_timestamp: local time as YYYYMMDDHHMMSS. */
export function jobTimestamp(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

export class Job {
  readonly queuedAt = Date.now();
  startedAt?: number;
  finishedAt?: number;
  timestamp = jobTimestamp();
  /** Batches (n_iter) and the current one. */
  jobCount = 1;
  jobNo = 0;
  /** Model evaluations of the current batch and those done. */
  samplingStep = 0;
  samplingSteps = 0;
  interrupted = false;
  skipped = false;
  textinfo: string | null = null;
  /** The x0 estimate of the first image at the latest preview step ([1, h, w, c]; owned here). */
  private previewLatents?: tf.Tensor4D;
  /** Bumped with every new preview (the id /internal/progress clients send back). */
  previewId = -1;
  private previewPng?: { id: number; png: Buffer };
  /** Turns preview latents into a PNG (set by whoever runs the job: it needs the model's VAE). */
  decodePreview?: (latents: tf.Tensor4D) => Promise<Buffer>;

  constructor(
    readonly id: string,
    /** Arrival number: jobs run in this order. */
    readonly seq: number,
    readonly kind: JobKind,
  ) {}

  get active(): boolean {
    return this.startedAt !== undefined && this.finishedAt === undefined;
  }

  /** A1111's progress: 0.01 + (job_no + sampling_step / sampling_steps) / job_count, at most 1. */
  progress(): number {
    if (!this.active) return this.finishedAt !== undefined ? 1 : 0;
    let p = 0.01 + this.jobNo / this.jobCount;
    if (this.samplingSteps > 0) p += ((1 / this.jobCount) * this.samplingStep) / this.samplingSteps;
    return Math.min(p, 1);
  }

  /** Seconds left at the pace so far (A1111's eta_relative). */
  eta(): number {
    if (!this.active) return 0;
    const elapsed = (Date.now() - this.startedAt!) / 1000;
    return elapsed / this.progress() - elapsed;
  }

  /** Keeps a copy of the x0 estimate's first image as the new preview (the previous one is freed). */
  setPreview(x0: tf.Tensor4D): void {
    this.previewLatents?.dispose();
    this.previewLatents = x0.slice([0, 0, 0, 0], [1, -1, -1, -1]);
    this.previewId++;
  }

  /** The preview as PNG bytes (decoded once per preview), or undefined before the first one. */
  async preview(): Promise<{ id: number; png: Buffer } | undefined> {
    if (this.previewPng?.id === this.previewId) return this.previewPng;
    if (!this.previewLatents || !this.decodePreview) return this.previewPng;
    const id = this.previewId;
    const png = await this.decodePreview(this.previewLatents);
    if (!this.previewPng || this.previewPng.id < id) this.previewPng = { id, png };
    return this.previewPng;
  }

  /** Frees the preview latents (the last decoded preview stays readable). */
  release(): void {
    this.previewLatents?.dispose();
    this.previewLatents = undefined;
  }

  /** A1111's shared state dict, for /sdapi/v1/progress. */
  stateDict(): Record<string, unknown> {
    return {
      skipped: this.skipped,
      interrupted: this.interrupted,
      stopping_generation: false,
      job: this.kind === 'options' ? 'options' : `scripts_${this.kind}`,
      job_count: this.jobCount,
      job_timestamp: this.timestamp,
      job_no: this.jobNo,
      sampling_step: this.samplingStep,
      sampling_steps: this.samplingSteps,
    };
  }
}

export class JobQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private seq = 0;
  private readonly waiting: Job[] = [];
  /** The running job. */
  current?: Job;
  /** The last one that ran (its preview stays the current image, as in A1111). */
  last?: Job;
  /** Ids of jobs that finished, newest last (a few hundred kept). */
  private readonly done = new Map<string, Job>();

  /** A new job with the next arrival number; `id` defaults to a fresh one. */
  create(kind: JobKind, id?: string): Job {
    const seq = ++this.seq;
    return new Job(id ?? `task(${seq.toString(36)}${Math.random().toString(36).slice(2, 10)})`, seq, kind);
  }

  /** Jobs waiting their turn, oldest first. */
  get queued(): readonly Job[] {
    return this.waiting;
  }

  find(id: string): { job: Job; state: 'queued' | 'active' | 'done' } | undefined {
    if (this.current?.id === id) return { job: this.current, state: 'active' };
    const q = this.waiting.find((j) => j.id === id);
    if (q) return { job: q, state: 'queued' };
    const d = this.done.get(id);
    return d && { job: d, state: 'done' };
  }

  /** Runs `work` when every job queued before it has finished; resolves or rejects with it. */
  run<T>(job: Job, work: (job: Job) => Promise<T>): Promise<T> {
    this.waiting.push(job);
    const result = this.tail.then(async () => {
      this.waiting.splice(this.waiting.indexOf(job), 1);
      this.current = job;
      job.startedAt = Date.now();
      job.timestamp = jobTimestamp();
      try {
        return await work(job);
      } finally {
        job.finishedAt = Date.now();
        job.release();
        this.current = undefined;
        this.last = job;
        this.done.set(job.id, job);
        if (this.done.size > 256) this.done.delete(this.done.keys().next().value!);
      }
    });
    // The next job waits for this one whether it succeeds or fails.
    this.tail = result.catch(() => undefined);
    return result;
  }
}
