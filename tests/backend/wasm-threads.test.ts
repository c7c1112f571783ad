// The wasm threads shim: arranging, starting, falling back, and leaving no trace.
import * as tf from '@tensorflow/tfjs';
import fs from 'node:fs';
import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { MAX_WASM_THREADS, enableWasmThreads, wasmThreadsUnavailableReason } from '../../src/backend/wasm-threads.js';
import { lastJson, moduleUrl, runChild } from './child.js';

const ourTempDirs = () => fs.readdirSync(os.tmpdir()).filter((d) => d.startsWith(`txt2img-wasm-threads-${process.pid}-`));

describe('enableWasmThreads (one process, before and after the backend starts)', () => {
  it('arranges no threads for counts below 2, never throwing', async () => {
    expect(await enableWasmThreads(Number.NaN)).toBe(1);
    expect(await enableWasmThreads(0)).toBe(1);
    expect(await enableWasmThreads(1)).toBe(1);
    expect(tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT')).toBe(false);
  });

  it('caps the count at the pool size of the tfjs build', async () => {
    expect(await enableWasmThreads(100)).toBe(MAX_WASM_THREADS);
    expect(await enableWasmThreads(2.7)).toBe(2);
    expect(wasmThreadsUnavailableReason()).toBe('');
    expect(tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT')).toBe(true);
  });

  it('leaves other users of a global Worker alone', async () => {
    const W = (globalThis as unknown as { Worker: typeof import('node:worker_threads').Worker }).Worker;
    const w = new W("require('node:worker_threads').parentPort.postMessage(6 * 7)", { eval: true });
    const got = await new Promise((resolve) => w.once('message', resolve));
    expect(got).toBe(42);
    await w.terminate();
  });

  it('starts the backend with the threads, computes correctly, and removes its temp files', async () => {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    expect(await tf.setBackend('wasm')).toBe(true);
    expect(wasm.getThreadsCount()).toBe(2);
    expect(ourTempDirs()).toEqual([]);
    const y = tf.tidy(
      () =>
        tf
          .conv2d(tf.ones([2, 16, 16, 8]) as tf.Tensor4D, tf.ones([3, 3, 8, 16]) as tf.Tensor4D, 1, 'same')
          .sum()
          .dataSync()[0],
    );
    // each of the 16 outputs at a pixel sums 8 channels over its in-image taps
    let taps = 0;
    for (let i = 0; i < 16; i++)
      for (let j = 0; j < 16; j++) taps += (Math.min(i + 1, 15) - Math.max(i - 1, 0) + 1) * (Math.min(j + 1, 15) - Math.max(j - 1, 0) + 1);
    expect(y).toBe(2 * 16 * 8 * taps);
    // too late to change: reports what runs
    expect(await enableWasmThreads(4)).toBe(2);
    expect(wasmThreadsUnavailableReason()).toMatch(/already initialised/);
  });
});

describe('a threaded start that fails', () => {
  it('falls back to one thread with a warning, still computes, and exits', async () => {
    const r = await runChild(`
      const tf = await import('@tensorflow/tfjs');
      const shim = await import(${JSON.stringify(moduleUrl('src/backend/wasm-threads.ts'))});
      const arranged = await shim.enableWasmThreads(2);
      shim.setWasmThreadsWorkerScriptForTests('throw new Error("worker script broken on purpose")');
      const wasm = await import('@tensorflow/tfjs-backend-wasm');
      const ok = await tf.setBackend('wasm');
      const s = tf.matMul(tf.ones([3, 4]), tf.ones([4, 5])).sum().dataSync()[0];
      console.log(JSON.stringify({ arranged, ok, threads: wasm.getThreadsCount(), reason: shim.wasmThreadsUnavailableReason(), s }));
    `);
    expect(r.timedOut).toBe(false);
    expect(r.code).toBe(0);
    const out = lastJson<{ arranged: number; ok: boolean; threads: number; reason: string; s: number }>(r.stdout);
    expect(out).toMatchObject({ arranged: 2, ok: true, threads: 1, s: 60 });
    expect(out.reason).toMatch(/worker script broken on purpose/);
    expect(r.stderr).toMatch(/threaded wasm failed to start .*using the single-threaded wasm binary/);
  });
});
