import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ParamStore, computeGradients, disposeGrads } from '../../src/nn/params.js';
import { Generator } from '../../src/random/generator.js';
import { LabelEncoder, validateLabelEncoderConfig } from '../../src/text/label.js';
import { concatConditioning } from '../../src/text/types.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const row = (table: Float32Array | Int32Array | Uint8Array, i: number, d: number) => Array.from(table.slice(i * d, (i + 1) * d));

describe('label encoder', () => {
  it('embeds labels as one context token [B, 1, D] from its table; null class for unconditional', async () => {
    const enc = new LabelEncoder({ kind: 'label', numClasses: 4, contextDim: 6 }, new Generator(0));
    expect(enc.kind).toBe('label');
    expect(enc.contextLength).toBe(1);
    expect(enc.contextDim).toBe(6);
    expect(enc.nullClass).toBe(4);
    expect(enc.params.names()).toEqual(['embedding.weight']);
    expect(enc.params.numParams()).toBe(5 * 6);
    const table = enc.table.dataSync() as Float32Array;
    const before = tf.memory().numTensors;
    const c = await enc.encode([2, 0, 2]);
    expect(c.context.shape).toEqual([3, 1, 6]);
    const d = c.context.dataSync() as Float32Array;
    expect(row(d, 0, 6)).toEqual(row(table, 2, 6));
    expect(row(d, 1, 6)).toEqual(row(table, 0, 6));
    const u = await enc.unconditional(2);
    expect(u.context.shape).toEqual([2, 1, 6]);
    expect(row(u.context.dataSync() as Float32Array, 1, 6)).toEqual(row(table, 4, 6));
    const both = concatConditioning([u, c]);
    expect(both.context.shape).toEqual([5, 1, 6]);
    tf.dispose([c.context, u.context, both.context]);
    expect(tf.memory().numTensors).toBe(before);
    enc.dispose();
    expect(() => enc.embed(tf.tensor1d([0], 'int32'))).toThrow(/after dispose/);
  });

  it('accepts class names and numeric strings', async () => {
    const enc = new LabelEncoder({ kind: 'label', numClasses: 3, contextDim: 2, classNames: ['cat', 'dog', 'car'] }, new Generator(1));
    expect(enc.labelsToIndices(['dog', '2', 0])).toEqual([1, 2, 0]);
    const a = await enc.encode(['car']);
    const b = await enc.encode([2]);
    expect(Array.from(a.context.dataSync())).toEqual(Array.from(b.context.dataSync()));
    tf.dispose([a.context, b.context]);
    enc.dispose();
  });

  it('rejects bad labels, naming the value and the allowed range', async () => {
    const enc = new LabelEncoder({ kind: 'label', numClasses: 10, contextDim: 4 }, new Generator(0));
    await expect(enc.encode([3, -1])).rejects.toThrow(/label 1 is -1; allowed: integers from 0 to 9/);
    await expect(enc.encode([10])).rejects.toThrow(/label 0 is 10; allowed: integers from 0 to 9 \(10 is the reserved null class/);
    await expect(enc.encode([1.5])).rejects.toThrow(/label 0 is 1.5/);
    await expect(enc.encode(['cat'])).rejects.toThrow(/'cat' is not a class; allowed: integers from 0 to 9 \(this encoder has no class names\)/);
    await expect(enc.encode([])).rejects.toThrow(/non-empty array/);
    await expect(enc.unconditional(-2)).rejects.toThrow(/batch must be a positive integer, got -2/);
    expect(() => enc.embed(tf.tensor1d([0, 11], 'int32'))).toThrow(/label 11 at index 1 is out of range; allowed 0..9, or 10 \(the null class\)/);
    expect(() => enc.embed(tf.tensor1d([0, 1], 'float32'))).toThrow(/int32 tensor of shape \[B\], got float32 tensor of shape \[2\]/);
    expect(() => enc.embed(tf.tensor2d([[0]], [1, 1], 'int32') as unknown as tf.Tensor1D)).toThrow(/got int32 tensor of shape \[1, 1\]/);
    enc.dispose();
  });

  it('is differentiable: gradients reach exactly the table rows used (null class included)', () => {
    const enc = new LabelEncoder({ kind: 'label', numClasses: 3, contextDim: 5 }, new Generator(2));
    const labels = tf.tensor1d([1, 3, 1], 'int32');
    const before = tf.memory().numTensors;
    // loss = sum(context^2) -> d/d table[r] = 2 * count(r) * table[r]
    const { loss, grads } = computeGradients(enc.params, () => tf.sum(tf.square(enc.embed(labels))) as tf.Scalar);
    const g = grads.get('embedding.weight')!;
    expect(g.shape).toEqual([4, 5]);
    const gd = g.dataSync() as Float32Array;
    const t = enc.table.dataSync() as Float32Array;
    for (let r = 0; r < 4; r++) {
      const count = r === 1 ? 2 : r === 3 ? 1 : 0;
      for (let j = 0; j < 5; j++) expect(gd[r * 5 + j]).toBeCloseTo(2 * count * t[r * 5 + j], 5);
    }
    loss.dispose();
    disposeGrads(grads);
    expect(tf.memory().numTensors).toBe(before);
    // Trained together with the U-Net through a union store.
    const union = ParamStore.union({ label_encoder: enc.params });
    expect(union.names()).toEqual(['label_encoder.embedding.weight']);
    labels.dispose();
    enc.dispose();
  });

  it('validates its config', () => {
    expect(validateLabelEncoderConfig({ numClasses: 2, contextDim: 8 })).toEqual({ kind: 'label', numClasses: 2, contextDim: 8 });
    expect(() => validateLabelEncoderConfig({ numClasses: 0, contextDim: 8 })).toThrow(/numClasses must be an integer from 1 to 1000000, got 0/);
    expect(() => validateLabelEncoderConfig({ numClasses: 2 })).toThrow(/contextDim is missing; it must be an integer from 1 to 65536/);
    expect(() => validateLabelEncoderConfig({ numClasses: 2, contextDim: 8, kind: 'clip' })).toThrow(/kind 'clip' is unknown; allowed: label/);
    expect(() => validateLabelEncoderConfig({ numClasses: 2, contextDim: 8, classes: 3 })).toThrow(
      /unknown key\(s\) 'classes'; allowed: kind, numClasses, contextDim, classNames/,
    );
    expect(() => validateLabelEncoderConfig({ numClasses: 2, contextDim: 8, classNames: ['a'] })).toThrow(/classNames must be an array of 2 non-empty strings/);
    expect(() => validateLabelEncoderConfig({ numClasses: 2, contextDim: 8, classNames: ['a', 'a'] })).toThrow(/'a' appears twice/);
    expect(() => validateLabelEncoderConfig([])).toThrow(/the config must be an object, got \[\]/);
  });
});
