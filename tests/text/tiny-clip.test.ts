import * as tf from '@tensorflow/tfjs';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { roundToHalf } from '../../src/checkpoint/safetensors.js';
import { runClipTextModel } from '../../src/text/clip.js';
import { FLOAT16_SUFFIX, ProtoWriter, convertOnnxInitializersToFloat16, listOnnxInitializers, readOnnxFloatInitializer } from '../../src/onnx/writer.js';
import {
  TINY_CLIP_NOTE,
  TINY_CLIP_TOKEN_EMBEDDING,
  generateTinyClipWeights,
  resolveTinyClipConfig,
  tinyClipForward,
  writeTinyClipFp16Copy,
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
    expect(cfg.text_config).toMatchObject({
      hidden_size: 32,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      vocab_size: 49408,
      max_position_embeddings: 77,
      hidden_act: 'quick_gelu',
    });
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
    let model: Awaited<ReturnType<typeof CLIPTextModelWithProjection.from_pretrained>>;
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

describe('tiny CLIP with float16 token embeddings (a smaller copy of an existing folder)', () => {
  const ids = [
    [49406, 320, 1125, 539, 320, 2368, 49407, ...new Array(70).fill(49407)],
    [49406, ...Array.from({ length: 75 }, (_, i) => (i * 661 + 7) % 49406), 49407],
  ];

  it('reads the existing float32 weights back exactly from the ONNX file', () => {
    const onnx = readFileSync(path.join(tiny.result.outDir, 'onnx/text_model.onnx'));
    const weights = generateTinyClipWeights(tiny.result.config);
    for (const name of [TINY_CLIP_TOKEN_EMBEDDING, 'text_model.encoder.layers.1.mlp.fc2.weight', 'text_projection.weight']) {
      const got = readOnnxFloatInitializer(onnx, name);
      expect(got.dims).toEqual(weights.get(name)!.shape);
      expect(Buffer.from(got.data.buffer).equals(Buffer.from(weights.get(name)!.data.buffer)), name).toBe(true);
    }
  });

  it('stores the table as FLOAT16 + Cast, is half the size, and matches the float32 model to ~1e-3', async () => {
    const out = path.join(tiny.root, 'fp16-copy');
    const r = writeTinyClipFp16Copy({ srcDir: tiny.result.outDir, outDir: out });
    expect(r.files.sort()).toEqual(['config.json', 'onnx/text_model.onnx']);
    expect(readdirSync(path.join(out, 'onnx'))).toEqual(['text_model.onnx']); // no _quantized duplicate
    // vocab 49408 x 32 floats dominate: 6.3 MB -> 3.2 MB.
    expect(r.onnxBytes).toBe(statSync(path.join(out, 'onnx/text_model.onnx')).size);
    expect(r.onnxBytes).toBeLessThan(r.sourceOnnxBytes * 0.55);
    const cfg = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'));
    expect(cfg._txt2img_note).toContain('not pretrained');
    expect(cfg._txt2img_fp16).toContain('float16');
    expect(cfg.text_config.hidden_size).toBe(32);
    const onnx = readFileSync(path.join(out, 'onnx/text_model.onnx'));
    const inits = listOnnxInitializers(onnx);
    expect(inits.find((t) => t.name === TINY_CLIP_TOKEN_EMBEDDING)).toBeUndefined();
    expect(inits.find((t) => t.name === TINY_CLIP_TOKEN_EMBEDDING + FLOAT16_SUFFIX)).toMatchObject({
      dataType: 10,
      dims: [49408, 32],
      dataBytes: 49408 * 32 * 2,
    });
    expect(() => convertOnnxInitializersToFloat16(onnx, [TINY_CLIP_TOKEN_EMBEDDING])).toThrow(
      /no initializer 'text_model\.embeddings\.token_embedding\.weight'/,
    );
    expect(() => writeTinyClipFp16Copy({ srcDir: out, outDir: path.join(tiny.root, 'again') })).toThrow(/converted already/);

    const a = await runClipTextModel(tiny.result.outDir, ids);
    const b = await runClipTextModel(out, ids);
    const diff = maxAbsDiff(a.lastHiddenState, b.lastHiddenState);
    expect(diff).toBeGreaterThan(0); // the table really is rounded
    expect(diff).toBeLessThan(3e-3);
    expect(maxAbsDiff(a.textEmbeds, b.textEmbeds)).toBeLessThan(3e-3);
    // Exactly the float32 model with the table rounded to half: the tfjs reference agrees to 1e-4.
    const weights = generateTinyClipWeights(tiny.result.config);
    const emb = weights.get(TINY_CLIP_TOKEN_EMBEDDING)!;
    weights.set(TINY_CLIP_TOKEN_EMBEDDING, { shape: emb.shape, data: roundToHalf(emb.data) });
    const before = tf.memory().numTensors;
    const ref = tinyClipForward(weights, ids, tiny.result.config);
    expect(maxAbsDiff(b.lastHiddenState, ref.lastHiddenState.dataSync())).toBeLessThan(1e-4);
    expect(maxAbsDiff(b.textEmbeds, ref.textEmbeds.dataSync())).toBeLessThan(1e-4);
    tf.dispose([ref.lastHiddenState, ref.textEmbeds]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('names what is wrong with a bad source', () => {
    expect(() => writeTinyClipFp16Copy({ srcDir: path.join(tiny.root, 'nope'), outDir: path.join(tiny.root, 'x') })).toThrow(/lacks .*config\.json/);
    expect(() => writeTinyClipFp16Copy({ srcDir: tiny.result.outDir, outDir: tiny.result.outDir })).toThrow(/outDir must differ/);
    const onnx = readFileSync(path.join(tiny.result.outDir, 'onnx/text_model.onnx'));
    expect(() => convertOnnxInitializersToFloat16(onnx, ['no.such'])).toThrow(/no initializer 'no\.such'/);
    expect(() => convertOnnxInitializersToFloat16(onnx, ['const.index1'])).toThrow(/data type 7, not FLOAT/);
  });
});
