import * as tf from '@tensorflow/tfjs';
import { copyFileSync, cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIP_ONNX_FILE, CLIP_ONNX_STAMP, clipTextConfigFromHf, prepareClipOnnx, readClipTextWeights, writeClipTextModel } from '../../src/text/clip-folder.js';
import { loadClipTextEncoder, loadClipTokenizerFolder } from '../../src/text/clip.js';
import { generateTinyClipWeights, resolveTinyClipConfig, tinyClipForward } from '../../src/text/tiny-clip.js';
import { clipTokenizerDir, maxAbsDiff } from './shared.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIXTURES = path.join(repoRoot, 'tests', 'fixtures', 'transformers', 'clip-text');

interface Expected {
  prompts: string[];
  input_ids: number[][];
  shape: [number, number, number];
  last_hidden_state: string;
}

function floats(b64: string): Float32Array {
  const buf = Buffer.from(b64, 'base64');
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}

let tmp: string;
beforeAll(async () => {
  await tf.setBackend('cpu');
  tmp = mkdtempSync(path.join(os.tmpdir(), 'txt2img-clipfolder-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe.each(['quick_gelu', 'gelu'])("transformers' CLIPTextModel + tokenizer (%s fixture)", (name) => {
  it("converts model.safetensors to ONNX once and gives transformers' hidden states and token ids", async () => {
    const dir = path.join(tmp, name);
    cpSync(path.join(FIXTURES, name), dir, { recursive: true });
    const expected = JSON.parse(readFileSync(path.join(dir, 'expected.json'), 'utf8')) as Expected;
    const logs: string[] = [];
    const first = prepareClipOnnx(path.join(dir, 'text_encoder'), { log: (l) => logs.push(l) });
    expect(first).toMatchObject({ modelDir: path.join(dir, 'text_encoder'), how: 'converted', quantized: false });
    expect(logs[0]).toContain('model.safetensors');
    expect(existsSync(path.join(dir, 'text_encoder', CLIP_ONNX_STAMP))).toBe(true);
    const mtime = statSync(path.join(dir, 'text_encoder', CLIP_ONNX_FILE)).mtimeMs;
    expect(prepareClipOnnx(path.join(dir, 'text_encoder')).how).toBe('cached');
    expect(statSync(path.join(dir, 'text_encoder', CLIP_ONNX_FILE)).mtimeMs).toBe(mtime);

    const enc = await loadClipTextEncoder({ modelId: first.modelDir, tokenizerId: path.join(dir, 'tokenizer'), quantized: false }, { cacheSize: 0 });
    try {
      expect(enc.tokenize(expected.prompts).ids).toEqual(expected.input_ids);
      const c = await enc.encode(expected.prompts);
      expect(c.context.shape).toEqual(expected.shape);
      const diff = maxAbsDiff(c.context.dataSync(), floats(expected.last_hidden_state));
      expect(diff).toBeLessThan(1e-4);
      c.context.dispose();
    } finally {
      enc.dispose();
    }
  });
});

describe('CLIP text folders', () => {
  it('a stale conversion is redone when model.safetensors changes; a read-only folder converts into the cache', () => {
    const dir = path.join(tmp, 'stale');
    cpSync(path.join(FIXTURES, 'gelu', 'text_encoder'), dir, { recursive: true });
    expect(prepareClipOnnx(dir).how).toBe('converted');
    copyFileSync(path.join(FIXTURES, 'quick_gelu', 'text_encoder', 'model.safetensors'), path.join(dir, 'model.safetensors'));
    copyFileSync(path.join(FIXTURES, 'quick_gelu', 'text_encoder', 'config.json'), path.join(dir, 'config.json'));
    expect(prepareClipOnnx(dir).how).toBe('converted');

    const ro = path.join(tmp, 'readonly');
    cpSync(path.join(FIXTURES, 'gelu', 'text_encoder'), ro, { recursive: true });
    const cacheDir = path.join(tmp, 'cache');
    const a = prepareClipOnnx(ro, { inPlace: false, cacheDir });
    expect(a.how).toBe('converted');
    expect(a.modelDir.startsWith(path.join(cacheDir, 'clip-onnx'))).toBe(true);
    expect(existsSync(path.join(a.modelDir, 'config.json'))).toBe(true);
    expect(existsSync(path.join(ro, 'onnx'))).toBe(false);
    expect(prepareClipOnnx(ro, { inPlace: false, cacheDir })).toEqual({ ...a, how: 'cached' });
  });

  it('uses an onnx/ model that came with the folder', () => {
    const dir = path.join(tmp, 'shipped');
    cpSync(path.join(FIXTURES, 'gelu', 'text_encoder'), dir, { recursive: true });
    prepareClipOnnx(dir);
    rmSync(path.join(dir, CLIP_ONNX_STAMP));
    rmSync(path.join(dir, 'model.safetensors'));
    expect(prepareClipOnnx(dir)).toEqual({ modelDir: dir, quantized: false, how: 'shipped' });
  });

  it('bad folders: one-line errors naming the file and the tensor or key', () => {
    const dir = path.join(tmp, 'bad');
    cpSync(path.join(FIXTURES, 'gelu', 'text_encoder'), dir, { recursive: true });
    const file = path.join(dir, 'model.safetensors');
    const bytes = readFileSync(file);
    writeFileSync(file, bytes.subarray(0, bytes.length - 100));
    expect(() => prepareClipOnnx(dir)).toThrow(/model\.safetensors.*truncated/);
    const c = clipTextConfigFromHf(JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')), 'config.json');
    writeFileSync(file, bytes);
    expect(() => readClipTextWeights(file, { ...c, layers: 4 })).toThrow(/missing tensor 'text_model\.encoder\.layers\.3\.layer_norm1\.weight'/);
    expect(() => readClipTextWeights(file, { ...c, intermediate: 10 })).toThrow(
      /'text_model\.encoder\.layers\.0\.mlp\.fc1\.weight' has shape \[48, 24\], config\.json implies \[10, 24\]/,
    );
    expect(() => clipTextConfigFromHf({ hidden_act: 'gelu_new' }, 'x/config.json')).toThrow(
      'x/config.json: hidden_act "gelu_new" is not implemented; allowed: quick_gelu, gelu',
    );
    rmSync(file);
    expect(() => prepareClipOnnx(dir)).toThrow(/has neither model\.safetensors nor model\.fp16\.safetensors nor onnx\/text_model\.onnx/);
  });

  it('writes our CLIP text weights as a CLIPTextModel folder that reads back exactly and runs as the reference', async () => {
    const opts = { hidden: 16, layers: 2, heads: 2, vocabSize: 49408, seed: 3, hiddenAct: 'gelu' as const };
    const c = resolveTinyClipConfig(opts);
    const w = generateTinyClipWeights(opts);
    const dir = path.join(tmp, 'written');
    writeClipTextModel(dir, w, c, { _txt2img_note: 'random weights, not pretrained' });
    const hf = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
    expect(hf).toMatchObject({ architectures: ['CLIPTextModel'], model_type: 'clip_text_model', hidden_act: 'gelu', hidden_size: 16, vocab_size: 49408 });
    const back = readClipTextWeights(path.join(dir, 'model.safetensors'), clipTextConfigFromHf(hf, 'config.json'));
    expect(back.has('text_projection.weight')).toBe(false);
    for (const [k, v] of back) expect(maxAbsDiff(v.data, w.get(k)!.data), k).toBe(0);
    expect(prepareClipOnnx(dir).how).toBe('cached'); // written with its conversion

    const enc = await loadClipTextEncoder({ modelId: dir, tokenizerId: clipTokenizerDir(), quantized: false }, { cacheSize: 0 });
    try {
      expect(enc.notPretrained).toBe(true);
      const prompts = ['a photo of a cat'];
      const got = await enc.encode(prompts);
      const ref = tinyClipForward(w, enc.tokenize(prompts).ids, opts);
      expect(maxAbsDiff(got.context.dataSync(), ref.lastHiddenState.dataSync())).toBeLessThan(1e-4);
      tf.dispose([got.context, ref.lastHiddenState, ref.textEmbeds]);
    } finally {
      enc.dispose();
    }
  });

  it("builds the tokenizer from vocab.json + merges.txt with the same ids as CLIP's tokenizer.json", async () => {
    const dir = path.join(tmp, 'bpe');
    cpSync(clipTokenizerDir(), dir, { recursive: true });
    rmSync(path.join(dir, 'tokenizer.json'));
    type Tok = { encode(t: string): number[] };
    const built = (await loadClipTokenizerFolder(dir)) as Tok;
    const full = (await loadClipTokenizerFolder(clipTokenizerDir())) as Tok;
    for (const p of ['a photo of a cat', 'An OIL painting, 1889 -- "Starry Night"!', "it's     déjà vu <|endoftext|>", '']) {
      expect(built.encode(p)).toEqual(full.encode(p));
    }
    expect(built.encode('a photo of a cat')).toEqual([49406, 320, 1125, 539, 320, 2368, 49407]);
    rmSync(path.join(dir, 'merges.txt'));
    await expect(loadClipTokenizerFolder(dir)).rejects.toThrow(`tokenizer folder ${dir} has neither tokenizer.json nor vocab.json + merges.txt`);
  });
});
