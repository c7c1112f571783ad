import * as tf from '@tensorflow/tfjs';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Generator } from '../../src/random/generator.js';
import { ParamStore } from '../../src/nn/params.js';
import { decodeSafetensors, encodeSafetensors } from '../../src/checkpoint/safetensors.js';
import { loadComponentWeights, readComponentConfig, saveComponent } from '../../src/checkpoint/io.js';
import { recoverDir, replaceDirAtomic, writeFileAtomic } from '../../src/checkpoint/files.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const tmp = () => mkdtempSync(path.join(os.tmpdir(), 'txt2img-ckpt-'));

describe('safetensors', () => {
  it('round-trips exactly and has the documented byte layout', () => {
    const g = new Generator(0);
    const tensors = new Map([
      ['b.weight', { shape: [2, 3], data: g.normalArray(6) }],
      ['a.bias', { shape: [3], data: new Float32Array([1, -2, 3.5]) }],
    ]);
    const buf = encodeSafetensors(tensors, { format: 'pt' });
    // Header: u64 LE length, JSON, data 8-byte aligned.
    const n = Number(buf.readBigUInt64LE(0));
    expect((8 + n) % 8).toBe(0);
    const header = JSON.parse(buf.subarray(8, 8 + n).toString());
    expect(header.__metadata__).toEqual({ format: 'pt' });
    expect(header['a.bias']).toEqual({ dtype: 'F32', shape: [3], data_offsets: [0, 12] });
    expect(header['b.weight']).toEqual({ dtype: 'F32', shape: [2, 3], data_offsets: [12, 36] });
    expect(buf.readFloatLE(8 + n + 4)).toBe(-2);
    const back = decodeSafetensors(buf);
    for (const [k, v] of tensors) {
      expect(back.tensors.get(k)!.shape).toEqual(v.shape);
      expect(Array.from(back.tensors.get(k)!.data)).toEqual(Array.from(v.data));
    }
  });

  it('is read by an independent Python reader (struct + json)', () => {
    const dir = tmp();
    const file = path.join(dir, 'w.safetensors');
    writeFileSync(file, encodeSafetensors(new Map([['x', { shape: [2, 2], data: new Float32Array([1, 2, 3, 4.25]) }]])));
    const py = `
import json, struct, sys
b = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
s, e = h['x']['data_offsets']
vals = struct.unpack('<4f', b[8 + n + s:8 + n + e])
print(json.dumps({'shape': h['x']['shape'], 'vals': vals}))`;
    let out: string;
    try {
      out = execFileSync('python3', ['-c', py, file], { encoding: 'utf8' });
    } catch {
      return; // no python3 on this machine: the byte-layout test above still covers the format
    }
    expect(JSON.parse(out)).toEqual({ shape: [2, 2], vals: [1, 2, 3, 4.25] });
  });

  it('rejects truncated or malformed files with the file named', () => {
    const buf = encodeSafetensors(new Map([['x', { shape: [4], data: new Float32Array(4) }]]));
    expect(() => decodeSafetensors(buf.subarray(0, buf.length - 4), 'w.safetensors')).toThrow(/w.safetensors: 'x' data_offsets \[0, 16\] outside the data/);
    expect(() => decodeSafetensors(Buffer.from([1, 2]), 'f')).toThrow(/too short/);
    const junk = Buffer.alloc(16);
    junk.writeBigUInt64LE(4n, 0);
    junk.write('nope', 8);
    expect(() => decodeSafetensors(junk, 'f')).toThrow(/not valid JSON/);
  });

  it('refuses tensors whose bytes overlap, and bytes that belong to no tensor', () => {
    const file = (entries: Record<string, [number, number]>, dataBytes: number) => {
      const header = Object.fromEntries(Object.entries(entries).map(([k, o]) => [k, { dtype: 'F32', shape: [(o[1] - o[0]) / 4], data_offsets: o }]));
      const json = Buffer.from(JSON.stringify(header));
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(json.length), 0);
      return Buffer.concat([len, json, Buffer.alloc(dataBytes)]);
    };
    expect(decodeSafetensors(file({ a: [0, 8], b: [8, 16] }, 16), 'ok').tensors.size).toBe(2);
    expect(() => decodeSafetensors(file({ a: [0, 8], b: [4, 12] }, 12), 'w')).toThrow(
      "w: 'b' data_offsets [4, 12] overlap the previous tensor's (which ends at 8)",
    );
    expect(() => decodeSafetensors(file({ a: [0, 8], b: [12, 16] }, 16), 'w')).toThrow("w: bytes 8..12 belong to no tensor (before 'b')");
    expect(() => decodeSafetensors(file({ a: [0, 8] }, 12), 'w')).toThrow('w: bytes 8..12 at the end belong to no tensor');
  });
});

describe('component folders', () => {
  it('save/load round trip is exact and a mismatch is explained', async () => {
    const dir = path.join(tmp(), 'unet');
    const a = new ParamStore();
    a.add('conv.weight', [3, 3, 2, 4], { kind: 'normal', std: 1 }, new Generator(1));
    a.add('conv.bias', [4], { kind: 'normal', std: 1 }, new Generator(2));
    await saveComponent(dir, { _class_name: 'Test', width: 4 }, a);
    expect(readComponentConfig(dir)).toEqual({ _class_name: 'Test', width: 4 });
    const b = new ParamStore();
    b.add('conv.weight', [3, 3, 2, 4], { kind: 'zeros' }, new Generator(0));
    b.add('conv.bias', [4], { kind: 'zeros' }, new Generator(0));
    loadComponentWeights(dir, b);
    expect(Array.from(b.get('conv.weight').dataSync())).toEqual(Array.from(a.get('conv.weight').dataSync()));
    const c = new ParamStore();
    c.add('conv.weight', [3, 3, 2, 8], { kind: 'zeros' }, new Generator(0));
    c.add('conv.bias', [8], { kind: 'zeros' }, new Generator(0));
    expect(() => loadComponentWeights(dir, c)).toThrow(/'conv.weight' has shape \[3, 3, 2, 4\], the model expects \[3, 3, 2, 8\]/);
    expect(() => readComponentConfig(path.join(dir, 'missing'))).toThrow(/does not exist/);
    [a, b, c].forEach((s) => {
      s.dispose();
    });
  });

  it('an atomic write never leaves a partial file in place of the old one', () => {
    const dir = tmp();
    const file = path.join(dir, 'x.json');
    writeFileAtomic(file, 'old');
    const bad = { length: 10 } as unknown as Buffer; // makes writeSync throw mid-write
    expect(() => writeFileAtomic(file, bad)).toThrow();
    expect(readFileSync(file, 'utf8')).toBe('old');
    expect(readdirSync(dir)).toEqual(['x.json']);
  });

  it('replaceDirAtomic swaps folders and recoverDir undoes an interrupted swap', () => {
    const root = tmp();
    const final = path.join(root, 'ckpt');
    mkdirSync(final);
    writeFileSync(path.join(final, 'v'), '1');
    const next = path.join(root, 'ckpt.partial');
    mkdirSync(next);
    writeFileSync(path.join(next, 'v'), '2');
    replaceDirAtomic(next, final);
    expect(readFileSync(path.join(final, 'v'), 'utf8')).toBe('2');
    expect(existsSync(`${final}.old`)).toBe(false);
    // Simulate a crash after the first rename: only ckpt.old remains.
    renameSync(final, `${final}.old`);
    recoverDir(final);
    expect(readFileSync(path.join(final, 'v'), 'utf8')).toBe('2');
  });
});
