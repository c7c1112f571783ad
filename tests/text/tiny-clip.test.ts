import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProtoWriter } from '../../src/text/onnx-writer.js';
import {
  TINY_CLIP_NOTE,
  generateTinyClipWeights,
  resolveTinyClipConfig,
  tinyClipForward,
  writeTinyClipModel,
} from '../../src/text/tiny-clip.js';
import { clipTokenizerDir, makeTinyModel, maxAbsDiff } from './shared.js';

let tiny: ReturnType<typeof makeTinyModel>;

beforeAll(async () => {
  await tf.setBackend('cpu');
  tiny = makeTinyModel('tiny-random-clip', { seed: 3, hidden: 32, layers: 2, heads: 4 });
});

afterAll(() => tiny?.cleanup());

describe('protobuf writer', () => {
  it('encodes varints, negative int64s, floats and strings as protobuf does', () => {
    expect([...new ProtoWriter().varint(1, 150).finish()]).toEqual([0x08, 0x96, 0x01]);
    expect([...new ProtoWriter().varint(2, -1).finish()]).toEqual([0x10, 255, 255, 255, 255, 255, 255, 255, 255, 255, 1]);
    expect([...new ProtoWriter().float(2, 1).finish()]).toEqual([0x15, 0, 0, 0x80, 0x3f]);
    expect([...new ProtoWriter().string(3, 'ab').finish()]).toEqual([0x1a, 2, 0x61, 0x62]);
    expect(() => new ProtoWriter().varint(1, 2 ** 60)).toThrow(/not a safe integer/);
  });
});

describe('tiny CLIP generator (random weights, not pretrained)', () => {
  it('draws the same weights from the same seed and others from another', () => {
    const a = generateTinyClipWeights({ seed: 5, hidden: 8, layers: 1, heads: 2, vocabSize: 50, maxPositions: 10 });
    const b = generateTinyClipWeights({ seed: 5, hidden: 8, layers: 1, heads: 2, vocabSize: 50, maxPositions: 10 });
    const c = generateTinyClipWeights({ seed: 6, hidden: 8, layers: 1, heads: 2, vocabSize: 50, maxPositions: 10 });
    const name = 'text_model.encoder.layers.0.self_attn.q_proj.weight';
    expect(a.get(name)!.shape).toEqual([8, 8]);
    expect(Array.from(a.get(name)!.data)).toEqual(Array.from(b.get(name)!.data));
    expect(maxAbsDiff(a.get(name)!.data, c.get(name)!.data)).toBeGreaterThan(0);
    expect(a.get('text_projection.weight')!.shape).toEqual([8, 8]);
    expect(a.get('text_model.embeddings.token_embedding.weight')!.shape).toEqual([50, 8]);
  });

  it('rejects bad options, naming them', () => {
    expect(() => resolveTinyClipConfig({ hidden: 64, heads: 3 })).toThrow(/'heads' \(3\) must divide 'hidden' \(64\)/);
    expect(() => resolveTinyClipConfig({ layers: 0 })).toThrow(/'layers' must be an integer from 1/);
    expect(() => resolveTinyClipConfig({ hidden: 6.5 })).toThrow(/'hidden'/);
    expect(() => writeTinyClipModel({ outDir: path.join(tiny.root, 'x'), tokenizerDir: clipTokenizerDir(), vocabSize: 1000 })).toThrow(
      /'vocabSize' \(1000\) is too small.*49407/,
    );
    expect(() => writeTinyClipModel({ outDir: path.join(tiny.root, 'x'), tokenizerDir: tiny.root })).toThrow(/lacks .*tokenizer\.json/);
  });

  it('writes the HF folder layout, labelled not pretrained', () => {
    const dir = tiny.result.outDir;
    expect(tiny.result.files).toEqual(
      expect.arrayContaining(['config.json', 'onnx/text_model.onnx', 'onnx/text_model_quantized.onnx', 'tokenizer.json', 'tokenizer_config.json', 'README.md']),
    );
    const cfg = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
    expect(cfg.model_type).toBe('clip');
    expect(cfg._txt2img_note).toContain('not pretrained');
    expect(cfg.text_config).toMatchObject({ hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 49408, max_position_embeddings: 77, hidden_act: 'quick_gelu' });
    expect(readFileSync(path.join(dir, 'README.md'), 'utf8')).toMatch(/NOT PRETRAINED/);
    expect(TINY_CLIP_NOTE).toBe('random weights, not pretrained');
    const fp32 = readFileSync(path.join(dir, 'onnx/text_model.onnx'));
    expect(readFileSync(path.join(dir, 'onnx/text_model_quantized.onnx')).equals(fp32)).toBe(true);
  });

  it('the ONNX graph, run by transformers.js / onnxruntime, matches the tfjs reference forward', async () => {
    const { CLIPTextModelWithProjection, Tensor, env } = await import('@xenova/transformers');
    const saved = { localModelPath: env.localModelPath, allowRemoteModels: env.allowRemoteModels };
    env.localModelPath = tiny.root;
    env.allowRemoteModels = false;
    let model;
    try {
      model = await CLIPTextModelWithProjection.from_pretrained('tiny-random-clip', { quantized: false });
    } finally {
      Object.assign(env, saved);
    }
    const weights = generateTinyClipWeights(tiny.result.config);
    const before = tf.memory().numTensors;
    // Full 77-token rows (padding included) and a short 9-token batch (dynamic sequence length:
    // the graph slices its causal mask and positions to S).
    const full = [
      [49406, 320, 1125, 539, 320, 2368, 49407, ...new Array(70).fill(49407)],
      [49406, 12, 40000, 7, 49407, ...new Array(72).fill(49407)],
    ];
    const short = [
      [49406, 1, 2, 3, 4, 5, 6, 7, 49407],
      [49406, 49405, 100, 49407, 49407, 49407, 49407, 49407, 49407],
      [49406, 320, 2368, 49407, 49407, 49407, 49407, 49407, 49407],
    ];
    for (const ids of [full, short]) {
      const B = ids.length;
      const S = ids[0].length;
      const input = new Tensor('int64', BigInt64Array.from(ids.flat().map(BigInt)), [B, S]);
      const out = await model({ input_ids: input });
      expect(out.last_hidden_state.dims).toEqual([B, S, 32]);
      expect(out.text_embeds.dims).toEqual([B, 32]);
      const ref = tinyClipForward(weights, ids, tiny.result.config);
      const errHidden = maxAbsDiff(out.last_hidden_state.data as Float32Array, ref.lastHiddenState.dataSync());
      const errEmbeds = maxAbsDiff(out.text_embeds.data as Float32Array, ref.textEmbeds.dataSync());
      expect(errHidden).toBeLessThan(1e-4);
      expect(errEmbeds).toBeLessThan(1e-4);
      // Not trivially equal rows: prompts differ, and the layer norm output has unit scale.
      const h = ref.lastHiddenState.dataSync();
      expect(maxAbsDiff(h.slice(0, 32), h.slice(S * 32, S * 32 + 32))).toBe(0); // same BOS, causal: identical first token
      expect(maxAbsDiff(h.slice(32, 64), h.slice(S * 32 + 32, S * 32 + 64))).toBeGreaterThan(1e-2);
      tf.dispose([ref.lastHiddenState, ref.textEmbeds]);
    }
    expect(tf.memory().numTensors).toBe(before);
    await model.dispose();
  });
});
