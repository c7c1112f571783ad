import { readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scanCaptionedFolder } from '../../src/data/captioned.js';
import { datasetFingerprint, EncoderCache, fingerprint, hashArrays, stableStringify } from '../../src/data/cache.js';
import { Generator } from '../../src/random/generator.js';
import { tempDir, writeColorDataset } from '../fixtures/captioned.js';

let dir: string;
beforeAll(() => {
  dir = tempDir('cache');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function arrays(seed: number): Map<string, { shape: number[]; data: Float32Array }> {
  const g = new Generator(seed);
  return new Map([
    ['latents', { shape: [3, 2, 2, 4], data: g.normalArray(48) }],
    ['text_embeddings', { shape: [3, 5, 8], data: g.normalArray(120) }],
  ]);
}

describe('fingerprints', () => {
  it('are stable under key order and change with content', () => {
    expect(stableStringify({ b: 1, a: { d: [1, 2], c: 'x' } })).toBe('{"a":{"c":"x","d":[1,2]},"b":1}');
    expect(fingerprint({ a: 1, b: 2 }, 'v1')).toBe(fingerprint({ b: 2, a: 1 }, 'v1'));
    expect(fingerprint({ a: 1 })).not.toBe(fingerprint({ a: 2 }));
    expect(hashArrays(arrays(1))).toBe(hashArrays(arrays(1)));
    expect(hashArrays(arrays(1))).not.toBe(hashArrays(arrays(2)));
  });

  it('follow dataset files (size, mtime) and captions', async () => {
    const root = path.join(dir, 'ds');
    await writeColorDataset(root, { count: 3, size: 16 });
    const fp1 = datasetFingerprint(await scanCaptionedFolder(root, { size: 16 }));
    expect(datasetFingerprint(await scanCaptionedFolder(root, { size: 16 }))).toBe(fp1);
    const img = path.join(root, '0001_green.png');
    utimesSync(img, new Date(2020, 0, 1), new Date(2020, 0, 1));
    const fp2 = datasetFingerprint(await scanCaptionedFolder(root, { size: 16 }));
    expect(fp2).not.toBe(fp1);
    writeFileSync(path.join(root, '0001_green.txt'), 'a different caption\n');
    utimesSync(img, new Date(2020, 0, 1), new Date(2020, 0, 1));
    expect(datasetFingerprint(await scanCaptionedFolder(root, { size: 16 }))).not.toBe(fp2);
  });
});

describe('EncoderCache', () => {
  it('stores arrays and reuses them only while the fingerprint matches', async () => {
    const cache = new EncoderCache(path.join(dir, 'run', 'cache'));
    const a = arrays(3);
    let calls = 0;
    const compute = (): Map<string, { shape: number[]; data: Float32Array }> => {
      calls++;
      return a;
    };
    const first = await cache.getOrCompute('vae-latents', 'fp-1', compute);
    expect(first.hit).toBe(false);
    expect(first.reason).toBe('not cached yet');
    const second = await cache.getOrCompute('vae-latents', 'fp-1', compute);
    expect(second.hit).toBe(true);
    expect(calls).toBe(1);
    expect(second.arrays.get('latents')!.shape).toEqual([3, 2, 2, 4]);
    expect(Array.from(second.arrays.get('latents')!.data)).toEqual(Array.from(a.get('latents')!.data));
    expect(Array.from(second.arrays.get('text_embeddings')!.data)).toEqual(Array.from(a.get('text_embeddings')!.data));

    const third = await cache.getOrCompute('vae-latents', 'fp-2', compute);
    expect(third.hit).toBe(false);
    expect(third.reason).toMatch(/fingerprint changed/);
    expect(calls).toBe(2);
    expect(cache.load('vae-latents', 'fp-1')).toBeNull();
    expect(cache.load('vae-latents', 'fp-2')).not.toBeNull();
    // Atomic writes leave no temp files behind.
    expect(readdirSync(cache.dir)).toEqual(['vae-latents.safetensors']);
  });

  it('treats a corrupt file as a miss and rejects bad names', async () => {
    const cache = new EncoderCache(path.join(dir, 'corrupt'));
    cache.save('x', 'fp', arrays(1));
    writeFileSync(cache.file('x'), Buffer.from([1, 2, 3]));
    expect(cache.lookup('x', 'fp').reason).toMatch(/unreadable cache file/);
    const r = await cache.getOrCompute('x', 'fp', () => arrays(1));
    expect(r.hit).toBe(false);
    expect(cache.lookup('x', 'fp').arrays).not.toBeNull();
    expect(() => cache.file('../escape')).toThrow(/cache entry name/);
  });
});
