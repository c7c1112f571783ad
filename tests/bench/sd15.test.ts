/**
 * The SD-1.5-size benchmark's parts (src/bench/sd15.ts) at toy sizes: each runs, times what it
 * says and reports the model's size; the SD-1.5 configs parse and count SD-1.5's parameters.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { BlockGenerator, SD15_UNET, SD15_VAE, benchSd15Part } from '../../src/bench/sd15.js';
import { parseUNetConfig } from '../../src/unet/config.js';
import { parseVaeConfig } from '../../src/vae/config.js';
import { clipTokenizerDir } from '../text/shared.js';

beforeAll(async () => {
  await initBackend({ backend: 'wasm', threads: 1, quiet: true });
});

const base = { steps: 2, warmup: 1, seed: 0, scale: 'tiny' as const, tokenizerDir: clipTokenizerDir() };

describe('bench:sd15 parts (tiny scale)', () => {
  it('times U-Net steps on onnxruntime and on tfjs, with no tensor left behind', async () => {
    for (const runtime of ['onnx', 'tfjs'] as const) {
      const before = tf.memory().numTensors;
      const r = await benchSd15Part('unet', { ...base, runtime });
      expect(r.part).toBe('unet');
      expect(r.runtime).toBe(runtime);
      expect(r.timesS).toHaveLength(2);
      expect(r.timesS.every((s) => s > 0)).toBe(true);
      expect(r.firstS).toBeGreaterThan(0);
      expect(r.params).toBeGreaterThan(1000);
      expect(tf.memory().numTensors).toBe(before);
    }
  });

  it('times a VAE decode and a text encode', async () => {
    const vae = await benchSd15Part('vae', { ...base, runtime: 'tfjs' });
    expect(vae.timesS).toHaveLength(1);
    expect(vae.params).toBeGreaterThan(1000);
    const text = await benchSd15Part('text', { ...base, runtime: 'onnx' });
    expect(text.timesS).toHaveLength(2);
    expect(text.params).toBeGreaterThan(49408 * 32); // the token embedding alone
  });

  it("holds SD-1.5's configs (860M-parameter U-Net) and a block generator of the asked size and range", () => {
    const u = parseUNetConfig(SD15_UNET);
    expect(u.channels).toEqual([320, 640, 1280, 1280]);
    expect(parseVaeConfig(SD15_VAE).channels).toEqual([128, 256, 512, 512]);
    const g = new BlockGenerator(3);
    const a = g.uniformArray(5000, -2, 2);
    expect(a).toHaveLength(5000);
    expect(Math.min(...a)).toBeGreaterThanOrEqual(-2);
    expect(Math.max(...a)).toBeLessThanOrEqual(2);
    expect(new Set(a).size).toBeGreaterThan(4900); // not a constant or a short cycle
    const n = g.normalArray(20000);
    const mean = n.reduce((s, x) => s + x, 0) / n.length;
    const sd = Math.sqrt(n.reduce((s, x) => s + (x - mean) ** 2, 0) / n.length);
    expect(Math.abs(mean)).toBeLessThan(0.05);
    expect(Math.abs(sd - 1)).toBeLessThan(0.1);
  });
});
