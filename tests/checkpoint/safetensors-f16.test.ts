import * as tf from '@tensorflow/tfjs';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadComponentWeights, saveComponent } from '../../src/checkpoint/io.js';
import { decodeSafetensors, encodeSafetensors, floatToHalfBits, halfBitsToFloat, roundToHalf } from '../../src/checkpoint/safetensors.js';
import { ParamStore } from '../../src/nn/params.js';
import { Generator } from '../../src/random/generator.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const f32 = (v: number) => Math.fround(v);
/** The float32 one ulp above / below a positive float32. */
function nextUp(v: number, dir: 1 | -1): number {
  const a = new Float32Array([v]);
  new Uint32Array(a.buffer)[0] += dir;
  return a[0];
}

describe('float32 -> float16 rounding', () => {
  it('matches hand-computed halves: normals, ties to even, subnormals, overflow, NaN, signed zero', () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [0.5, 0x3800],
      [1 / 3, 0x3555], // 0.333251953125
      [0.1, 0x2e66], // 0.0999755859375
      [65504, 0x7bff], // largest half
      [65519, 0x7bff], // below the midpoint to 65536
      [65520, 0x7c00], // the midpoint: ties to even = Infinity
      [1e5, 0x7c00], // overflow
      [-1e5, 0xfc00],
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
      [1 + 2 ** -11, 0x3c00], // exactly halfway between 1 and 1+2^-10: to even (1)
      [1 + 3 * 2 ** -11, 0x3c02], // halfway between 0x3c01 and 0x3c02: to even (0x3c02)
      [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above halfway: up
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -14 - 2 ** -24, 0x03ff], // largest subnormal
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -25, 0x0000], // half of it: tie to even = 0
      [1.5 * 2 ** -25, 0x0001], // over half: up
      [3 * 2 ** -25, 0x0002], // 1.5 units: tie to even = 2
      [5 * 2 ** -25, 0x0002], // 2.5 units: tie to even = 2
      [-3 * 2 ** -24, 0x8003],
      [2 ** -26, 0x0000], // underflow
      [1e-45, 0x0000], // a float32 subnormal
      [2 ** -14 - 2 ** -25, 0x0400], // halfway between 0x03ff and 0x0400: to even (0x0400)
    ];
    for (const [v, bits] of cases) {
      expect(floatToHalfBits(v).toString(16), `${v}`).toBe(bits.toString(16));
    }
    expect(Number.isNaN(halfBitsToFloat(floatToHalfBits(NaN)))).toBe(true);
    expect(floatToHalfBits(NaN) & 0x7c00).toBe(0x7c00);
    expect(floatToHalfBits(NaN) & 0x3ff).not.toBe(0);
    expect(halfBitsToFloat(0x3555)).toBe(0.333251953125);
    expect(halfBitsToFloat(0x0001)).toBe(2 ** -24);
    expect(Object.is(halfBitsToFloat(0x8000), -0)).toBe(true);
    // The value is first rounded to float32 (as stored): 1 + 2^-11 + 2^-30 is 1 + 2^-11 in float32.
    expect(floatToHalfBits(1 + 2 ** -11 + 2 ** -30)).toBe(0x3c00);
  });

  it('every half round-trips, and every midpoint between neighbours rounds to the even one (exhaustive)', () => {
    for (let h = 0; h < 0x7c00; h++) {
      const v = halfBitsToFloat(h);
      expect(floatToHalfBits(v)).toBe(h);
      expect(floatToHalfBits(-v)).toBe(h | 0x8000);
      const next = halfBitsToFloat(h + 1); // 0x7c00 is Infinity: use 65536 as the next "value"
      const mid = f32((v + (h + 1 === 0x7c00 ? 65536 : next)) / 2);
      const even = h % 2 === 0 ? h : h + 1;
      if (floatToHalfBits(mid) !== even) expect(floatToHalfBits(mid), `midpoint above 0x${h.toString(16)}`).toBe(even);
      if (floatToHalfBits(nextUp(mid, -1)) !== h) expect(floatToHalfBits(nextUp(mid, -1))).toBe(h);
      if (floatToHalfBits(nextUp(mid, 1)) !== h + 1) expect(floatToHalfBits(nextUp(mid, 1))).toBe(h + 1);
    }
  });

  it('agrees with numpy float32 -> float16 on random and edge values (when numpy is installed)', () => {
    const g = new Generator(3);
    const vals = new Float32Array(4096);
    const n = g.normalArray(vals.length);
    for (let i = 0; i < vals.length; i++) vals[i] = n[i] * 10 ** ((i % 13) - 8); // 1e-8 .. 1e4 scales
    vals.set([0, -0, 65504, 65519, 65520, 7e4, -7e4, 2 ** -25, 3 * 2 ** -25, 2 ** -24, 1e-45, Infinity, -Infinity], 0);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'txt2img-f16-'));
    const file = path.join(dir, 'v.f32');
    writeFileSync(file, Buffer.from(vals.buffer));
    let out: Buffer;
    try {
      out = execFileSync('python3', ['-c', 'import sys, numpy as np; sys.stdout.buffer.write(np.fromfile(sys.argv[1], "<f4").astype("<f2").tobytes())', file], {
        stdio: ['ignore', 'pipe', 'ignore'],
      });
    } catch {
      rmSync(dir, { recursive: true, force: true });
      return; // no python3/numpy here: the hand-computed and exhaustive tests cover the rounding
    }
    rmSync(dir, { recursive: true, force: true });
    let mismatches = 0;
    for (let i = 0; i < vals.length; i++) if (out.readUInt16LE(2 * i) !== floatToHalfBits(vals[i])) mismatches++;
    expect(mismatches).toBe(0);
  });
});

describe('F16 safetensors', () => {
  it('writes dtype F16 with 2 bytes per value; reading gives the rounded values as float32', () => {
    const data = new Float32Array([1, 1 / 3, -0.1, 2 ** -24, 65504, 1 + 3 * 2 ** -11, NaN, -Infinity]);
    const tensors = new Map([
      ['w', { shape: [2, 4], data }],
      ['b', { shape: [3], data: new Float32Array([0.5, -2, 3]) }],
    ]);
    const buf = encodeSafetensors(tensors, { format: 'pt' }, { dtype: 'F16' });
    const n = Number(buf.readBigUInt64LE(0));
    expect((8 + n) % 8).toBe(0);
    const header = JSON.parse(buf.subarray(8, 8 + n).toString());
    expect(header.b).toEqual({ dtype: 'F16', shape: [3], data_offsets: [0, 6] });
    expect(header.w).toEqual({ dtype: 'F16', shape: [2, 4], data_offsets: [6, 22] });
    expect(buf.length).toBe(8 + n + 22);
    expect(buf.readUInt16LE(8 + n)).toBe(0x3800); // b[0] = 0.5
    expect(buf.readUInt16LE(8 + n + 6 + 2)).toBe(0x3555); // w[1] = 1/3
    const back = decodeSafetensors(buf);
    const w = back.tensors.get('w')!.data;
    expect(Array.from(w)).toEqual(Array.from(roundToHalf(data)));
    expect(Array.from(w.slice(0, 6))).toEqual([1, 0.333251953125, -0.0999755859375, 2 ** -24, 65504, 1 + 2 * 2 ** -10]);
    expect(Number.isNaN(w[6])).toBe(true);
    expect(w[7]).toBe(-Infinity);
    expect(Array.from(back.tensors.get('b')!.data)).toEqual([0.5, -2, 3]);
    expect(back.metadata).toEqual({ format: 'pt' });
  });

  it('refuses finite values beyond the half range (naming the tensor) and unknown dtypes', () => {
    const t = new Map([['big.weight', { shape: [2], data: new Float32Array([1, 70000]) }]]);
    expect(() => encodeSafetensors(t, {}, { dtype: 'F16' })).toThrow(/'big\.weight': value 70000 at index 1 is outside the float16 range/);
    expect(() => encodeSafetensors(t, {}, { dtype: 'BF16' as 'F16' })).toThrow(/dtype must be one of F32, F16, got "BF16"/);
    expect(encodeSafetensors(t, {}, { dtype: 'F32' }).equals(encodeSafetensors(t))).toBe(true);
  });

  it('saveComponent(..., { dtype: F16 }) halves the file and loads back the rounded weights', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'txt2img-f16c-'));
    const g = new Generator(1);
    const store = new ParamStore();
    store.add('a.weight', [64, 32], { kind: 'normal', std: 0.05 }, g);
    store.add('a.bias', [32], { kind: 'normal', std: 1 }, g);
    await saveComponent(path.join(dir, 'f32'), { x: 1 }, store);
    await saveComponent(path.join(dir, 'f16'), { x: 1 }, store, undefined, { dtype: 'F16' });
    const size = (d: string) => statSync(path.join(dir, d, 'diffusion_pytorch_model.safetensors')).size;
    expect(size('f16')).toBeLessThan(size('f32') * 0.55);
    expect(JSON.parse(readFileSync(path.join(dir, 'f16', 'config.json'), 'utf8'))).toEqual({ x: 1 });
    const original = await store.toArrays();
    const loaded = new ParamStore();
    loaded.add('a.weight', [64, 32], { kind: 'zeros' }, g);
    loaded.add('a.bias', [32], { kind: 'zeros' }, g);
    const before = tf.memory().numTensors;
    loadComponentWeights(path.join(dir, 'f16'), loaded);
    expect(tf.memory().numTensors).toBe(before);
    const got = await loaded.toArrays();
    for (const [name, a] of original) {
      const want = roundToHalf(a.data);
      expect(Array.from(got.get(name)!.data), name).toEqual(Array.from(want));
      let maxRel = 0;
      for (let i = 0; i < want.length; i++) maxRel = Math.max(maxRel, Math.abs(want[i] - a.data[i]) / Math.abs(a.data[i]));
      expect(maxRel).toBeLessThanOrEqual(2 ** -11);
    }
    store.dispose();
    loaded.dispose();
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('per-tensor element types', () => {
  it('stores the tensors named in dtypes as F16 and the rest in dtype; I64 tensors read as numbers', () => {
    const a = { shape: [3], data: new Float32Array([0.1, -2.5, 1e-3]) };
    const b = { shape: [2], data: new Float32Array([0.1, 7]) };
    const buf = encodeSafetensors(
      new Map([
        ['a', a],
        ['b', b],
      ]),
      {},
      { dtypes: { a: 'F16' } },
    );
    const header = JSON.parse(buf.subarray(8, 8 + Number(buf.readBigUInt64LE(0))).toString());
    expect(header.a.dtype).toBe('F16');
    expect(header.b.dtype).toBe('F32');
    const back = decodeSafetensors(buf);
    expect(Array.from(back.tensors.get('a')!.data)).toEqual(Array.from(roundToHalf(a.data)));
    expect(back.tensors.get('b')!.data).toEqual(b.data);
    expect(() => encodeSafetensors(new Map([['a', a]]), {}, { dtypes: { a: 'BF16' as 'F16' } })).toThrow(
      'safetensors dtype must be one of F32, F16, got "BF16"',
    );
    // transformers' CLIP checkpoints carry an I64 `position_ids` buffer.
    const ids = Buffer.alloc(16);
    ids.writeBigInt64LE(3n, 0);
    ids.writeBigInt64LE(-1n, 8);
    const json = Buffer.from(JSON.stringify({ p: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    expect(Array.from(decodeSafetensors(Buffer.concat([len, json, ids])).tensors.get('p')!.data)).toEqual([3, -1]);
  });
});
