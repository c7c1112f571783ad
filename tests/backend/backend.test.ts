// initBackend: names, environment, errors, and a wasm start with threads. initBackend caches its
// first success per process, so the tests in this file run in order and share one choice
// (wasm); the automatic order and process exit are checked in fresh child processes.
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import { afterAll, describe, expect, it } from 'vitest';
import { BACKEND_ENV, BACKEND_NAMES, THREADS_ENV, currentBackend, initBackend, parseBackendName } from '../../src/backend/index.js';
import { wasmThreadsUnavailableReason } from '../../src/backend/wasm-threads.js';
import { Generator } from '../../src/random/generator.js';
import { lastJson, moduleUrl, runChild } from './child.js';
import { webgpu } from '../webgpu/adapter.js';

/** tfjs-node cannot install on the development machine; where it is, the node cases do not apply. */
const installed = (pkg: string): boolean => {
  try {
    createRequire(import.meta.url).resolve(pkg);
    return true;
  } catch {
    return false;
  }
};
const tfjsNodeInstalled = installed('@tensorflow/tfjs-node') || installed('@tensorflow/tfjs-node-gpu');
const hardwareAdapter = webgpu.adapter !== undefined && !webgpu.adapter.software;

const savedEnv = { backend: process.env[BACKEND_ENV], threads: process.env[THREADS_ENV] };
function setEnv(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}
afterAll(() => {
  setEnv(BACKEND_ENV, savedEnv.backend);
  setEnv(THREADS_ENV, savedEnv.threads);
});

describe('backend names', () => {
  it('parses names case-insensitively and rejects others, listing the allowed ones', () => {
    expect(parseBackendName(' WASM ', '--backend')).toBe('wasm');
    expect(parseBackendName('WebGPU', '--backend')).toBe('webgpu');
    expect(BACKEND_NAMES).toEqual(['node-gpu', 'node', 'webgpu', 'wasm', 'cpu']);
    expect(() => parseBackendName('gpu', '--backend')).toThrow("--backend: unknown backend 'gpu'; allowed: node-gpu, node, webgpu, wasm, cpu");
  });
});

describe('initBackend (one process)', () => {
  it('rejects an unknown name from the flag or the environment', async () => {
    setEnv(BACKEND_ENV, undefined);
    await expect(initBackend({ backend: 'webgl', quiet: true })).rejects.toThrow(/unknown backend 'webgl'; allowed: node-gpu, node, webgpu, wasm, cpu/);
    setEnv(BACKEND_ENV, 'tpu');
    await expect(initBackend({ quiet: true })).rejects.toThrow(new RegExp(`${BACKEND_ENV}: unknown backend 'tpu'`));
    expect(currentBackend()).toBeUndefined();
  });

  it.skipIf(tfjsNodeInstalled)('says clearly that node and node-gpu are not available here', async () => {
    setEnv(BACKEND_ENV, undefined);
    await expect(initBackend({ backend: 'node', quiet: true })).rejects.toThrow(/backend 'node' is not available: @tensorflow\/tfjs-node did not load/);
    setEnv(BACKEND_ENV, 'node-gpu');
    await expect(initBackend({ quiet: true })).rejects.toThrow(/backend 'node-gpu' is not available: @tensorflow\/tfjs-node-gpu did not load/);
    expect(currentBackend()).toBeUndefined();
  });

  it('rejects a bad thread count', async () => {
    setEnv(BACKEND_ENV, 'wasm');
    setEnv(THREADS_ENV, 'many');
    await expect(initBackend({ quiet: true })).rejects.toThrow(new RegExp(`${THREADS_ENV}: threads must be an integer from 1 to 256, got 'many'`));
    await expect(initBackend({ threads: 0, quiet: true })).rejects.toThrow(/--threads: threads must be an integer/);
    expect(currentBackend()).toBeUndefined();
  });

  it('honours TXT2IMG_BACKEND and TXT2IMG_THREADS, and reports the wasm thread count', async () => {
    setEnv(BACKEND_ENV, 'wasm');
    setEnv(THREADS_ENV, '2');
    const lines: string[] = [];
    const info = await initBackend({ log: (l) => lines.push(l) });
    expect(info.name).toBe('wasm');
    expect(info.tfName).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(info.gpu).toBe(false);
    const { getThreadsCount } = await import('@tensorflow/tfjs-backend-wasm');
    expect(info.threads).toBe(getThreadsCount());
    // Node 20 has everything the threads shim needs; where it does not, one thread and a reason.
    expect(info.threads).toBe(wasmThreadsUnavailableReason() === '' ? 2 : 1);
    expect(lines).toEqual([info.description]);
    expect(info.description).toMatch(new RegExp(`^backend: wasm \\(${info.threads} threads?`));
    expect(currentBackend()).toBe(info);
  });

  it('computes conv2d gradients with threads as the cpu backend does', async () => {
    const g = new Generator(5);
    const x = g.normalArray(2 * 16 * 16 * 24);
    const w = g.normalArray(3 * 3 * 24 * 32);
    const grads = (name: string) => {
      tf.setBackend(name);
      return tf.tidy(() => {
        const f = (a: tf.Tensor, b: tf.Tensor) =>
          tf
            .conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 2, 'same')
            .square()
            .sum();
        return tf
          .grads(f)([tf.tensor(x, [2, 16, 16, 24]), tf.tensor(w, [3, 3, 24, 32])])
          .map((t) => t.dataSync());
      });
    };
    const cpu = grads('cpu');
    const wasm = grads('wasm');
    for (let i = 0; i < 2; i++) {
      let num = 0;
      let den = 0;
      cpu[i].forEach((v, j) => {
        num = Math.max(num, Math.abs(v - wasm[i][j]));
        den = Math.max(den, Math.abs(v));
      });
      expect(num / den).toBeLessThan(1e-4);
    }
    tf.setBackend('wasm');
  });

  it('keeps the first choice and refuses to switch', async () => {
    const first = currentBackend()!;
    setEnv(BACKEND_ENV, undefined);
    expect(await initBackend({ quiet: true })).toBe(first);
    expect(await initBackend({ backend: 'wasm', quiet: true })).toBe(first);
    await expect(initBackend({ backend: 'cpu', quiet: true })).rejects.toThrow(
      "backend already initialised as 'wasm'; cannot switch to 'cpu' in the same process",
    );
  });
});

describe('initBackend (fresh processes)', () => {
  const snippet = `
    const tf = await import('@tensorflow/tfjs');
    const { initBackend } = await import(${JSON.stringify(moduleUrl('src/backend/index.ts'))});
    const info = await initBackend();
    const x = tf.ones([2, 8, 8, 4]);
    const w = tf.ones([3, 3, 4, 4]);
    const g = tf.grad((ww) => tf.conv2d(x, ww, 1, 'same').sum())(w);
    console.log(JSON.stringify({ info, backend: tf.getBackend(), g00: (await g.data())[0] }));
  `;
  type Out = { info: { name: string; threads: number; description: string }; backend: string; g00: number };

  // A GPU adapter would come first (webgpu); llvmpipe is passed over unless asked for.
  it.skipIf(tfjsNodeInstalled || hardwareAdapter)(
    'picks wasm by the automatic order here (no tfjs-node, no GPU adapter), and exits by itself with threads running',
    async () => {
      const r = await runChild(snippet, { [BACKEND_ENV]: undefined, [THREADS_ENV]: undefined });
      expect(r.timedOut).toBe(false);
      expect(r.code).toBe(0);
      const out = lastJson<Out>(r.stdout);
      expect(out.info.name).toBe('wasm');
      expect(out.backend).toBe('wasm');
      expect(out.g00).toBe(2 * 7 * 7); // x = 1: tap (0,0) reads a pixel for 7x7 of the 8x8 outputs, per image
      expect(r.stderr).toContain(out.info.description);
      expect(out.info.threads).toBeGreaterThanOrEqual(1);
    },
  );

  // Runs only on a machine with a GPU adapter (none was available where this was written).
  it.skipIf(tfjsNodeInstalled || !hardwareAdapter)('picks webgpu by the automatic order on a GPU adapter', async () => {
    const r = await runChild(snippet, { [BACKEND_ENV]: undefined, [THREADS_ENV]: undefined }, 120_000);
    expect(r.code).toBe(0);
    const out = lastJson<Out>(r.stdout);
    expect(out.info.name).toBe('webgpu');
    expect(out.backend).toBe('webgpu');
    expect(out.g00).toBe(2 * 7 * 7);
    expect(r.stderr).toContain(out.info.description);
  });

  it('honours TXT2IMG_BACKEND=cpu in a fresh process', async () => {
    const r = await runChild(snippet, { [BACKEND_ENV]: 'cpu', [THREADS_ENV]: undefined });
    expect(r.timedOut).toBe(false);
    expect(r.code).toBe(0);
    const out = lastJson<Out>(r.stdout);
    expect(out.info.name).toBe('cpu');
    expect(out.backend).toBe('cpu');
    expect(out.info.threads).toBe(1);
    expect(out.g00).toBe(2 * 7 * 7);
  });
});
