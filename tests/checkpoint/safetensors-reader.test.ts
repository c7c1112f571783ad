/**
 * SafetensorsReader (src/checkpoint/safetensors.ts): tensors read one at a time through a file
 * descriptor, at the header's offsets, F32 / F16 / BF16; a truncated file refused at open; no
 * whole-file buffer (a sparse file past readFileSync's 2 GiB limit reads fine); and
 * loadComponentWeights going through it.
 */
import * as tf from '@tensorflow/tfjs';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadComponentWeights, saveComponent } from '../../src/checkpoint/io.js';
import { SafetensorsReader, decodeSafetensors, encodeSafetensors, roundToHalf } from '../../src/checkpoint/safetensors.js';
import { type NamedArray, ParamStore, zeros } from '../../src/nn/params.js';
import { Generator } from '../../src/random/generator.js';

let dir: string;
beforeAll(async () => {
  await tf.setBackend('cpu');
  dir = mkdtempSync(path.join(os.tmpdir(), 'st-reader-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A header + data file, written by hand (so offsets and dtypes are exactly what the test says). */
function writeRaw(file: string, header: Record<string, unknown>, data: Uint8Array): void {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(file, Buffer.concat([len, json, data]));
}

const tensors = (): Map<string, NamedArray> => {
  const g = new Generator(1);
  return new Map([
    ['b.weight', { shape: [3, 5], data: g.normalArray(15) }],
    ['a.bias', { shape: [4], data: g.normalArray(4) }],
    ['c', { shape: [2, 1, 3], data: g.normalArray(6) }],
  ]);
};

describe('SafetensorsReader', () => {
  it('reads each tensor at its own offsets, F32 exactly and F16 as the rounded halves, like decodeSafetensors', () => {
    for (const dtype of ['F32', 'F16'] as const) {
      const file = path.join(dir, `ours-${dtype}.safetensors`);
      const t = tensors();
      writeFileSync(file, encodeSafetensors(t, { format: 'pt' }, { dtype }));
      const r = SafetensorsReader.open(file);
      try {
        expect(r.metadata).toEqual({ format: 'pt' });
        expect([...r.entries.values()].map((e) => e.dtype)).toEqual([dtype, dtype, dtype]);
        // Read out of order: each read seeks to its own tensor.
        for (const name of ['c', 'a.bias', 'b.weight']) {
          const got = r.read(name);
          const want = t.get(name)!;
          expect(got.shape).toEqual(want.shape);
          expect(Array.from(got.data)).toEqual(Array.from(dtype === 'F16' ? roundToHalf(want.data) : want.data));
        }
        const whole = decodeSafetensors(readFileSync(file));
        for (const [name, a] of whole.tensors) expect(Array.from(r.read(name).data)).toEqual(Array.from(a.data));
        expect(r.shapes()).toEqual(new Map([...whole.tensors].map(([k, a]) => [k, a.shape])));
        expect(() => r.read('nope')).toThrow(/no tensor 'nope'/);
      } finally {
        r.close();
      }
      expect(() => r.read('c')).toThrow(/closed/);
    }
  });

  it('honours hand-written offsets (tensors in any order) and BF16', () => {
    const file = path.join(dir, 'raw.safetensors');
    const data = Buffer.alloc(4 + 4);
    data.writeUInt16LE(0x3c00, 0); // F16 1
    data.writeUInt16LE(0xc000, 2); // F16 -2
    data.writeFloatLE(0.25, 4); // F32
    writeRaw(
      file,
      {
        second: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
        first: { dtype: 'F16', shape: [2], data_offsets: [0, 4] },
      },
      data,
    );
    const r = SafetensorsReader.open(file);
    expect(Array.from(r.read('first').data)).toEqual([1, -2]);
    expect(Array.from(r.read('second').data)).toEqual([0.25]);
    r.close();
    const bf = path.join(dir, 'bf16.safetensors');
    const d2 = Buffer.alloc(2);
    d2.writeUInt16LE(0x3fc0); // BF16 1.5
    writeRaw(bf, { x: { dtype: 'BF16', shape: [1], data_offsets: [0, 2] } }, d2);
    const r2 = SafetensorsReader.open(bf);
    expect(Array.from(r2.read('x').data)).toEqual([1.5]);
    r2.close();
  });

  it('refuses a truncated file at open, naming the tensor that runs past the end', () => {
    const full = encodeSafetensors(tensors(), {}, { dtype: 'F16' });
    const file = path.join(dir, 'truncated.safetensors');
    writeFileSync(file, full.subarray(0, full.length - 3));
    expect(() => SafetensorsReader.open(file)).toThrow(/'c' data_offsets \[\d+, \d+\] outside the data \(\d+ bytes\); truncated file\?/);
    writeFileSync(file, full.subarray(0, 20));
    expect(() => SafetensorsReader.open(file)).toThrow(/header length \d+ does not fit the file \(20 bytes\); truncated or not safetensors/);
    writeFileSync(file, full.subarray(0, 5));
    expect(() => SafetensorsReader.open(file)).toThrow(/too short to be safetensors \(5 bytes\)/);
  });

  it('reads one tensor of a 2.5 GB file without a whole-file buffer (a sparse file readFileSync refuses)', () => {
    const file = path.join(dir, 'sparse.safetensors');
    const big = 1_250_000_000; // F16 values: 2.5 GB, zeros, never written (sparse)
    const json = Buffer.from(
      JSON.stringify({ small: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, big: { dtype: 'F16', shape: [big], data_offsets: [8, 8 + 2 * big] } }),
    );
    const head = Buffer.alloc(8 + json.length + 8);
    head.writeBigUInt64LE(BigInt(json.length));
    json.copy(head, 8);
    head.writeFloatLE(3.5, 8 + json.length);
    head.writeFloatLE(-1, 8 + json.length + 4);
    const fd = openSync(file, 'w');
    writeSync(fd, head);
    closeSync(fd);
    truncateSync(file, head.length + 2 * big);
    expect(() => readFileSync(file)).toThrow(/2 GiB|too large|ERR_FS_FILE_TOO_LARGE/i);
    const before = process.memoryUsage().arrayBuffers;
    const r = SafetensorsReader.open(file);
    expect(Array.from(r.read('small').data)).toEqual([3.5, -1]);
    expect(r.entries.get('big')!.shape).toEqual([big]);
    r.close();
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(16 * 2 ** 20);
    rmSync(file);
  });

  it('is what loadComponentWeights reads with: F16 weights, and a wrong shape named before any value is read', async () => {
    const g = new Generator(3);
    const store = new ParamStore();
    store.add('w', [2, 3], { kind: 'normal', std: 1 }, g);
    store.add('b', [3], { kind: 'normal', std: 1 }, g);
    await saveComponent(path.join(dir, 'comp'), { kind: 'test' }, store, undefined, { dtype: 'F16' });
    const loaded = new ParamStore();
    loaded.add('w', [2, 3], zeros, g);
    loaded.add('b', [3], zeros, g);
    loadComponentWeights(path.join(dir, 'comp'), loaded);
    const want = await store.toArrays();
    for (const [name, v] of loaded.entries()) expect(Array.from(v.dataSync())).toEqual(Array.from(roundToHalf(want.get(name)!.data)));
    const wrong = new ParamStore();
    wrong.add('w', [3, 2], zeros, g);
    wrong.add('b', [3], zeros, g);
    expect(() => loadComponentWeights(path.join(dir, 'comp'), wrong)).toThrow(/'w' has shape \[2, 3\], the model expects \[3, 2\]/);
    expect(Array.from(wrong.get('b').dataSync())).toEqual([0, 0, 0]); // nothing assigned
    for (const s of [store, loaded, wrong]) s.dispose();
  });
});
