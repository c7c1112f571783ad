/**
 * A load measurement of `txt2img serve` (scripts/load-test.ts): the server started as users start
 * it (the bin, in its own process), then `clients` concurrent clients send `requests` txt2img
 * requests between them, each client one after another. It checks that every request completes
 * with its image, that the server ran them in arrival order (its X-Txt2img-Job numbers, and the
 * completion times in that order), that no tensor is left behind, and reads the server's memory
 * from /proc: resident size over time and its peak (VmHWM).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../pipeline/text-to-image.js';

export interface LoadTestOptions {
  requests: number;
  clients: number;
  steps: number;
  batchSize: number;
  /** Pipeline folder (default: the bundled model). */
  model?: string;
  runtime?: string;
  backend?: string;
  log?: (line: string) => void;
}

export interface LoadTestResult {
  requests: number;
  clients: number;
  steps: number;
  completed: number;
  failed: { status: number; detail: string }[];
  /** Server job numbers in completion order were increasing (FIFO). */
  inOrder: boolean;
  /** Every job number from the first to the last, once. */
  nothingLost: boolean;
  seconds: number;
  imagesPerSecond: number;
  /** Resident set size of the server, MB: after start-up and the warm-up request, after the first tenth of the requests, at the end, and its peak. */
  rssMb: { start: number; afterFirstTenth: number; end: number; peak: number };
  tensors: { start: number; end: number };
}

/** VmRSS and VmHWM of a process, MB (Linux /proc). */
export function processMemory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

function startServer(o: LoadTestOptions): Promise<{ child: ChildProcess; url: string }> {
  const bin = path.join(packageRoot(), 'bin', 'txt2img.mjs');
  const args = [bin, 'serve', '--port', '0', '--max-images', String(Math.max(64, o.batchSize)), ...(o.model ? ['--model', o.model] : [])];
  if (o.runtime) args.push('--runtime', o.runtime);
  if (o.backend) args.push('--backend', o.backend);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  return new Promise((resolve, reject) => {
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      const m = /listening on (http:\/\/\S+)/.exec(stderr);
      if (m) resolve({ child, url: m[1] });
    });
    child.on('exit', (code) => reject(new Error(`the server exited (code ${code}) before listening:\n${stderr}`)));
  });
}

export async function runLoadTest(o: LoadTestOptions): Promise<LoadTestResult> {
  if (!existsSync('/proc/self/status')) throw new Error('the load test reads the server memory from /proc: Linux only');
  const log = o.log ?? (() => {});
  const { child, url } = await startServer(o);
  const pid = child.pid!;
  try {
    const post = async (body: unknown) => {
      const res = await fetch(`${url}/sdapi/v1/txt2img`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      return { status: res.status, job: Number(res.headers.get('x-txt2img-job')), json: (await res.json()) as { images?: string[]; detail?: unknown } };
    };
    const tensors = async () => ((await (await fetch(`${url}/sdapi/v1/memory`)).json()) as { tfjs: { num_tensors: number } }).tfjs.num_tensors;
    // Warm-up: the first request of a shape compiles kernels (and exports the ONNX U-Net).
    await post({ prompt: 'a red square', steps: o.steps, batch_size: o.batchSize, seed: 0 });
    const startTensors = await tensors();
    const start = processMemory(pid).rss;
    log(`server pid ${pid} at ${url}: ${start.toFixed(0)} MB after warm-up`);
    const prompts = ['a red square', 'a blue circle on the left', 'a smiling face', 'a green star at the top', 'a sad face on a pink background'];
    const done: { job: number; at: number; status: number; images: number; detail?: unknown }[] = [];
    let afterFirstTenth = Number.NaN;
    const t0 = performance.now();
    let next = 0;
    const client = async () => {
      for (;;) {
        const i = next++;
        if (i >= o.requests) return;
        const r = await post({ prompt: prompts[i % prompts.length], steps: o.steps, batch_size: o.batchSize, seed: 1000 + i, sampler_name: 'Euler a' });
        done.push({ job: r.job, at: performance.now(), status: r.status, images: r.json.images?.length ?? 0, detail: r.json.detail });
        if (done.length === Math.max(1, Math.round(o.requests / 10))) afterFirstTenth = processMemory(pid).rss;
        if (done.length % Math.max(1, Math.round(o.requests / 5)) === 0)
          log(`${done.length}/${o.requests} done, server RSS ${processMemory(pid).rss.toFixed(0)} MB`);
      }
    };
    await Promise.all(Array.from({ length: o.clients }, client));
    const seconds = (performance.now() - t0) / 1000;
    const end = processMemory(pid);
    const endTensors = await tensors();
    const byCompletion = [...done].sort((a, b) => a.at - b.at).map((d) => d.job);
    const jobs = [...byCompletion].sort((a, b) => a - b);
    const ok = done.filter((d) => d.status === 200 && d.images === (o.batchSize > 1 ? o.batchSize + 1 : 1));
    return {
      requests: o.requests,
      clients: o.clients,
      steps: o.steps,
      completed: ok.length,
      failed: done.filter((d) => !ok.includes(d)).map((d) => ({ status: d.status, detail: JSON.stringify(d.detail) })),
      inOrder: byCompletion.every((j, i) => i === 0 || j > byCompletion[i - 1]),
      nothingLost: jobs.length === o.requests && jobs.every((j, i) => j === jobs[0] + i),
      seconds,
      imagesPerSecond: (ok.length * o.batchSize) / seconds,
      rssMb: { start, afterFirstTenth, end: end.rss, peak: end.peak },
      tensors: { start: startTensors, end: endTensors },
    };
  } finally {
    child.kill('SIGTERM');
  }
}
