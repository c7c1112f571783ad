// The webgpu backend: adapter classification and the start-up line (everywhere), then, where a
// WebGPU adapter exists, a fresh process on it, the synchronous-read refusal, the per-step
// yield and the choices that depend on it (runtime, data-parallel workers).
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { BACKEND_ENV, THREADS_ENV, currentBackend, initBackend, yieldToBackend } from '../../src/backend/index.js';
import { describeAdapter, isSoftwareAdapter, startWebGpu } from '../../src/backend/webgpu.js';
import { resolveRuntime } from '../../src/onnx/runtime.js';
import { gradientSetup } from '../../src/train/trainer.js';
import { noAdapter, webgpu, webgpuTitle } from '../webgpu/adapter.js';
import { lastJson, moduleUrl, runChild } from './child.js';

describe('adapters', () => {
  it('tells software rasterizers from GPUs', () => {
    const llvmpipe = { vendor: 'mesa', architecture: 'software', device: 'llvmpipe-llvm-15-0-6-256-bits-', description: 'llvmpipe: Mesa 25.0.7 (LLVM 15.0.6)' };
    expect(isSoftwareAdapter(llvmpipe)).toBe(true);
    expect(isSoftwareAdapter({ ...llvmpipe, architecture: '' })).toBe(true); // by its name
    expect(isSoftwareAdapter({ vendor: 'google', architecture: '', device: '', description: 'SwiftShader Device (Subzero)' })).toBe(true);
    expect(isSoftwareAdapter({ vendor: 'nvidia', architecture: 'ada', description: 'NVIDIA GeForce RTX 4090', isFallbackAdapter: true })).toBe(true);
    expect(isSoftwareAdapter({ vendor: 'nvidia', architecture: 'ada', description: 'NVIDIA GeForce RTX 4090' })).toBe(false);
    expect(isSoftwareAdapter({ vendor: 'intel', architecture: 'gen-12lp', description: 'Intel(R) Xe Graphics' }, false)).toBe(false);
    expect(isSoftwareAdapter({}, true)).toBe(true);
    expect(describeAdapter({ vendor: 'mesa', architecture: 'software', device: 'llvmpipe', description: '', software: true })).toBe(
      'vendor mesa, architecture software, llvmpipe',
    );
    expect(describeAdapter({ vendor: '', architecture: '', device: '', description: 'X', software: false })).toBe('vendor ?, architecture ?, X');
  });

  it('runtime auto is tfjs beside webgpu on any adapter, and onnx is refused with the way out', async () => {
    expect((await resolveRuntime('auto', { name: 'webgpu', gpu: false })).runtime).toBe('tfjs');
    expect((await resolveRuntime('auto', { name: 'webgpu', gpu: true })).runtime).toBe('tfjs');
    await expect(resolveRuntime('onnx', { name: 'webgpu', gpu: true })).rejects.toThrow(
      /runtime 'onnx' cannot run beside the webgpu backend.*use --runtime tfjs/,
    );
  });

  it.skipIf(!webgpu.adapter?.software)('the automatic order passes over a software adapter without loading Dawn here', async () => {
    await expect(startWebGpu(false)).rejects.toThrow(/the only adapter is a software rasterizer \(vendor .*\); use it with --backend webgpu/);
    expect(tf.findBackendFactory('webgpu')).toBeNull();
  });
});

describe.skipIf(noAdapter)(webgpuTitle('backend webgpu in a fresh process'), () => {
  it('starts on the adapter, names it (warning if it is a software one), computes a conv gradient and exits by itself', async () => {
    const r = await runChild(
      `
      const tf = await import('@tensorflow/tfjs');
      const { initBackend } = await import(${JSON.stringify(moduleUrl('src/backend/index.ts'))});
      const info = await initBackend();
      const x = tf.ones([2, 8, 8, 4]);
      const w = tf.ones([3, 3, 4, 4]);
      const g = tf.grad((ww) => tf.conv2d(x, ww, 1, 'same').sum())(w);
      console.log(JSON.stringify({ info, backend: tf.getBackend(), g00: (await g.data())[0] }));
    `,
      { [BACKEND_ENV]: 'webgpu', [THREADS_ENV]: undefined },
      120_000,
    );
    expect(r.timedOut).toBe(false);
    expect(r.code).toBe(0);
    const out = lastJson<{ info: { name: string; gpu: boolean; description: string; warning?: string }; backend: string; g00: number }>(r.stdout);
    expect(out.backend).toBe('webgpu');
    expect(out.info.name).toBe('webgpu');
    expect(out.g00).toBe(2 * 7 * 7);
    const a = webgpu.adapter!;
    expect(out.info.description).toContain(`backend: webgpu (adapter: ${describeAdapter(a)})`);
    expect(out.info.gpu).toBe(!a.software);
    if (a.software) expect(out.info.description).toMatch(/WARNING: webgpu on a software rasterizer \(.*\): it computes on the CPU.*not GPU speed/);
    expect(out.info.warning !== undefined).toBe(a.software);
    expect(r.stderr).toContain(out.info.description);
  });
});

describe.skipIf(noAdapter)(webgpuTitle('backend webgpu in this process'), () => {
  it('initialises through initBackend and says what it runs on', async () => {
    const info = await initBackend({ backend: 'webgpu', quiet: true });
    expect(info.tfName).toBe('webgpu');
    expect(tf.getBackend()).toBe('webgpu');
    expect(currentBackend()).toBe(info);
  });

  it('refuses a synchronous read of GPU data with what to do, and reads it asynchronously', async () => {
    const before = tf.memory().numTensors;
    const host = tf.tensor1d([1, 2, 3]);
    expect(Array.from(host.dataSync())).toEqual([1, 2, 3]); // still on the host: no GPU read
    const onGpu = tf.tidy(() => tf.mul(tf.ones([2000]), 3));
    expect(() => onGpu.dataSync()).toThrow(/webgpu: a tensor on the GPU was read synchronously .* read it with `await tensor.data\(\)`/);
    expect((await onGpu.data())[1999]).toBe(3);
    expect(onGpu.dataSync()[0]).toBe(3); // cached on the host by the read above
    tf.dispose([host, onGpu]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('yields once per step, letting Dawn finish and free the last step', async () => {
    const x = tf.ones([64, 64]);
    for (let i = 0; i < 3; i++) {
      tf.tidy(() => tf.matMul(x, x));
      await yieldToBackend();
    }
    x.dispose();
  });

  it('trains with one worker where several were asked for, and says so', async () => {
    const lines: string[] = [];
    const r = await gradientSetup('unet', { runtime: 'tfjs', workers: 3 }, {} as never, {} as never, (l) => lines.push(l));
    expect(r.parallel.workers).toBe(1);
    expect(r.onnx).toBeUndefined();
    expect(lines.join('\n')).toMatch(/unet: 3 data-parallel workers asked for, 1 used: the webgpu backend trains in one process/);
  });
});
