import * as tf from '@tensorflow/tfjs';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ClipTextEncoder,
  LOCAL_MODELS_ENV,
  defaultClipTextEncoderConfig,
  loadClipTextEncoder,
  resolveClipModelLocation,
  resolveClipTokenizerLocation,
  validateClipTextEncoderConfig,
} from '../../src/text/clip.js';
import { generateTinyClipWeights, tinyClipForward } from '../../src/text/tiny-clip.js';
import { CLIP_ID, clipTokenizerDir, makeTinyModel, maxAbsDiff, sharedModelsDir } from './shared.js';

const ID = 'tiny-random-clip';
const CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407];

let tiny: ReturnType<typeof makeTinyModel>;
let enc: ClipTextEncoder;
const warnings: string[] = [];

beforeAll(async () => {
  await tf.setBackend('cpu');
  tiny = makeTinyModel(ID, { seed: 0 }); // hidden 64, 2 layers, 2 heads (the defaults)
  enc = await loadClipTextEncoder({ modelId: ID }, { localModelPath: tiny.root, warn: (m) => warnings.push(m) });
});

afterAll(() => {
  enc?.dispose();
  tiny?.cleanup();
});

describe('CLIP text encoder on a tiny random (not pretrained) model with the real tokenizer', () => {
  it('tokenizes with CLIP BPE and pads with the end token to 77', () => {
    const { ids, lengths, truncated } = enc.tokenize(['a photo of a cat', '']);
    expect(ids[0].slice(0, 7)).toEqual(CAT_IDS);
    expect(ids[0]).toHaveLength(77);
    expect(ids[0].slice(7).every((t) => t === 49407)).toBe(true);
    expect(ids[1].slice(0, 2)).toEqual([49406, 49407]);
    expect(lengths).toEqual([7, 2]);
    expect(truncated).toEqual([false, false]);
  });

  it('encodes to [B, 77, hidden], equal to the tfjs reference forward', async () => {
    expect(enc.kind).toBe('clip');
    expect(enc.contextDim).toBe(64);
    expect(enc.contextLength).toBe(77);
    expect(enc.quantized).toBe(true); // the folder has text_model_quantized.onnx (an identical copy)
    const prompts = ['a photo of a cat', 'an oil painting of a lighthouse at dusk'];
    const c = await enc.encode(prompts);
    expect(c.context.shape).toEqual([2, 77, 64]);
    expect(c.mask).toBeUndefined();
    const ref = tinyClipForward(generateTinyClipWeights({ seed: 0 }), enc.tokenize(prompts).ids);
    expect(maxAbsDiff(c.context.dataSync(), ref.lastHiddenState.dataSync())).toBeLessThan(1e-4);
    tf.dispose([c.context, ref.lastHiddenState, ref.textEmbeds]);
  });

  it('caches embeddings per prompt (the empty prompt from load on)', async () => {
    const runs0 = enc.stats.modelRuns;
    const a = await enc.encode(['a red cube', 'a blue sphere']);
    expect(enc.stats.modelRuns).toBe(runs0 + 1);
    const hits0 = enc.stats.cacheHits;
    const b = await enc.encode(['a blue sphere', 'a red cube', 'a red cube']);
    expect(enc.stats.modelRuns).toBe(runs0 + 1);
    expect(enc.stats.cacheHits).toBe(hits0 + 2);
    const ad = a.context.dataSync();
    const bd = b.context.dataSync();
    const row = 77 * 64;
    expect(Array.from(bd.slice(0, row))).toEqual(Array.from(ad.slice(row, 2 * row)));
    expect(Array.from(bd.slice(row, 2 * row))).toEqual(Array.from(ad.slice(0, row)));
    expect(Array.from(bd.slice(2 * row))).toEqual(Array.from(ad.slice(0, row)));
    const u = await enc.unconditional(3);
    expect(u.context.shape).toEqual([3, 77, 64]);
    expect(enc.stats.modelRuns).toBe(runs0 + 1); // "" was computed at load
    const e = await enc.encode(['']);
    expect(Array.from(e.context.dataSync())).toEqual(Array.from(u.context.dataSync().slice(0, row)));
    tf.dispose([a.context, b.context, u.context, e.context]);
  });

  it('warns about and truncates prompts over 77 tokens, keeping the end token last', async () => {
    const long = `${Array.from({ length: 90 }, (_, i) => (i % 2 ? 'cat' : 'dog')).join(' ')} zebra`;
    const tok = enc.tokenize([long]);
    expect(tok.lengths[0]).toBe(93); // start + 91 words + end, counted before truncation
    expect(tok.truncated[0]).toBe(true);
    expect(tok.ids[0]).toHaveLength(77);
    expect(tok.ids[0][76]).toBe(49407);
    warnings.length = 0;
    const c = await enc.encode([long]);
    expect(c.context.shape).toEqual([1, 77, 64]);
    expect(warnings).toHaveLength(1);
    // One short line: the count, and the first dropped words (not the whole tail).
    expect(warnings[0]).toBe(
      'CLIP text encoder: a prompt of 93 tokens (start/end included) is over the limit of 77; its last 16 tokens are dropped: "cat dog cat dog cat dog ... (16 words)"',
    );
    tf.dispose(c.context);
  });

  it('rejects non-string inputs and bad batch sizes', async () => {
    await expect(enc.encode([3, 4])).rejects.toThrow(/prompt 0 is number 3; prompts must be strings/);
    await expect(enc.encode([])).rejects.toThrow(/non-empty array/);
    await expect(enc.unconditional(0)).rejects.toThrow(/batch must be a positive integer, got 0/);
  });

  it('leaks no tf tensors', async () => {
    const before = tf.memory().numTensors;
    const c = await enc.encode(['a photo of a cat', 'something new']);
    const u = await enc.unconditional(2);
    tf.dispose([c.context, u.context]);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('CLIP model locations and errors', () => {
  it('finds the folder through TXT2IMG_LOCAL_MODELS, and a folder given as modelId', async () => {
    const e1 = await loadClipTextEncoder({ modelId: ID }, { environment: { [LOCAL_MODELS_ENV]: tiny.root } });
    expect(e1.location.source).toBe('env');
    expect(e1.location.allowRemote).toBe(false);
    const e2 = await loadClipTextEncoder({ modelId: tiny.result.outDir, quantized: false }, { environment: {} });
    expect(e2.location.source).toBe('model path');
    expect(e2.quantized).toBe(false);
    const a = await e1.encode(['a photo of a cat']);
    const b = await e2.encode(['a photo of a cat']);
    expect(maxAbsDiff(a.context.dataSync(), b.context.dataSync())).toBe(0);
    tf.dispose([a.context, b.context]);
    e1.dispose();
    e2.dispose();
  });

  it('resolves precedence option > config > env, remote on only without a local folder', () => {
    const cfg = defaultClipTextEncoderConfig({ localModelPath: '/cfg' });
    expect(resolveClipModelLocation(cfg, { localModelPath: '/opt', environment: { [LOCAL_MODELS_ENV]: '/env' } })).toMatchObject({
      source: 'option',
      localDir: path.join('/opt', cfg.modelId),
      allowRemote: false,
    });
    expect(resolveClipModelLocation(cfg, { environment: { [LOCAL_MODELS_ENV]: '/env' } }).source).toBe('config');
    expect(resolveClipModelLocation(defaultClipTextEncoderConfig(), { environment: { [LOCAL_MODELS_ENV]: '/env' } }).localDir).toBe(path.join('/env', CLIP_ID));
    const hub = resolveClipModelLocation(defaultClipTextEncoderConfig(), { environment: {} }, '/tjs/models');
    expect(hub).toMatchObject({ source: 'transformers.js default', allowRemote: true, modelId: CLIP_ID });
    expect(hub.remoteBase).toBe(`https://huggingface.co/${CLIP_ID}/resolve/main`);
    expect(resolveClipModelLocation(defaultClipTextEncoderConfig({ allowRemote: true }), { localModelPath: '/x' }).allowRemote).toBe(true);
  });

  it('a missing model names the exact files it looked for and how to provide them', async () => {
    // A model folder with the real CLIP tokenizer and a model config but no ONNX weights, as a
    // user without network access has it.
    const shared = mkdtempSync(path.join(os.tmpdir(), 'txt2img-noweights-'));
    mkdirSync(path.join(shared, CLIP_ID), { recursive: true });
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(path.join(clipTokenizerDir(), f), path.join(shared, CLIP_ID, f));
    copyFileSync(path.join(tiny.root, ID, 'config.json'), path.join(shared, CLIP_ID, 'config.json'));
    const err = await loadClipTextEncoder({ modelId: CLIP_ID }, { localModelPath: shared }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err).toBeInstanceOf(Error);
    const msg = err!.message;
    expect(msg).toContain(`${path.join(shared, CLIP_ID, 'onnx/text_model.onnx')} (missing)`);
    expect(msg).toContain(`${path.join(shared, CLIP_ID, 'onnx/text_model_quantized.onnx')} (missing)`);
    expect(msg).toContain(`${path.join(shared, CLIP_ID, 'tokenizer.json')} (found)`);
    expect(msg).toMatch(/hub are off/);
    expect(msg).toContain(LOCAL_MODELS_ENV);
    expect(msg).toMatch(/--local-models/);
    rmSync(shared, { recursive: true, force: true });

    const noQuant = makeTinyModel('fp32-only', { seed: 1, hidden: 16, layers: 1, quantizedCopy: false });
    try {
      const auto = await loadClipTextEncoder({ modelId: 'fp32-only' }, { localModelPath: noQuant.root });
      expect(auto.quantized).toBe(false); // auto picks the file that exists
      expect(auto.contextDim).toBe(16);
      auto.dispose();
      await expect(loadClipTextEncoder({ modelId: 'fp32-only', quantized: true }, { localModelPath: noQuant.root })).rejects.toThrow(
        new RegExp(`${path.join(noQuant.root, 'fp32-only', 'onnx/text_model_quantized.onnx').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(missing\\)`),
      );
    } finally {
      noQuant.cleanup();
    }
  });

  it('takes the tokenizer from tokenizerId, apart from the model weights (a folder without tokenizer files)', async () => {
    const weightsOnly = path.join(tiny.root, 'weights-only');
    mkdirSync(path.join(weightsOnly, 'onnx'), { recursive: true });
    for (const f of ['config.json', 'onnx/text_model.onnx']) copyFileSync(path.join(tiny.result.outDir, f), path.join(weightsOnly, f));
    const shared = sharedModelsDir();
    const e = await loadClipTextEncoder({ modelId: weightsOnly, tokenizerId: CLIP_ID, quantized: false }, { localModelPath: shared });
    expect(e.location).toMatchObject({ source: 'model path', localDir: weightsOnly, allowRemote: false });
    expect(e.tokenizerLocation).toMatchObject({ source: 'option', modelId: CLIP_ID, localDir: path.join(shared, CLIP_ID), allowRemote: false });
    expect(e.config.tokenizerId).toBe(CLIP_ID);
    expect(e.tokenize(['a photo of a cat']).ids[0].slice(0, 7)).toEqual(CAT_IDS);
    const a = await e.encode(['a photo of a cat']);
    const b = await enc.encode(['a photo of a cat']); // (cached from a batch of 2: not bit-identical)
    expect(maxAbsDiff(a.context.dataSync(), b.context.dataSync())).toBeLessThan(1e-5);
    tf.dispose([a.context, b.context]);
    e.dispose();
    // The same through TXT2IMG_LOCAL_MODELS.
    const e2 = await loadClipTextEncoder({ modelId: weightsOnly, tokenizerId: CLIP_ID }, { environment: { [LOCAL_MODELS_ENV]: shared } });
    expect(e2.tokenizerLocation.source).toBe('env');
    e2.dispose();

    // No tokenizer source: no local folder and downloads off. The message names every path tried.
    const msg = await loadClipTextEncoder({ modelId: weightsOnly, tokenizerId: CLIP_ID }, { allowRemote: false, environment: {} }).then(
      () => '',
      (err: Error) => err.message,
    );
    const tokLoc = resolveClipTokenizerLocation(
      validateClipTextEncoderConfig({ modelId: weightsOnly, tokenizerId: CLIP_ID }),
      { allowRemote: false, environment: {} },
      (await import('@xenova/transformers')).env.localModelPath,
    );
    expect(tokLoc.source).toBe('transformers.js default');
    expect(msg).toContain(`CLIP tokenizer '${CLIP_ID}' (for the text model '${weightsOnly}') could not be loaded`);
    expect(msg).toContain(`${path.join(tokLoc.localDir, 'tokenizer.json')} (missing)`);
    expect(msg).toContain(`${path.join(tokLoc.localDir, 'tokenizer_config.json')} (missing)`);
    expect(msg).toMatch(/allowRemote is false/);
    expect(msg).toMatch(/allow internet access/);
    expect(msg).toContain(`--local-models <dir>`);
    expect(msg).toContain(LOCAL_MODELS_ENV);
    expect(msg).toContain(`${CLIP_ID}/{tokenizer.json,tokenizer_config.json}`);
    // A local folder without the tokenizer: that folder's paths.
    const empty = mkdtempSync(path.join(os.tmpdir(), 'txt2img-notok-'));
    await expect(loadClipTextEncoder({ modelId: weightsOnly, tokenizerId: CLIP_ID }, { localModelPath: empty })).rejects.toThrow(
      `${path.join(empty, CLIP_ID, 'tokenizer.json')} (missing)`,
    );
    rmSync(empty, { recursive: true, force: true });
    // Without tokenizerId the folder must hold the tokenizer itself (one combined message, as before).
    await expect(loadClipTextEncoder({ modelId: weightsOnly }, { environment: {} })).rejects.toThrow(`${path.join(weightsOnly, 'tokenizer.json')} (missing)`);
  });

  it('checks the model against the config (contextDim, maxLength)', async () => {
    await expect(loadClipTextEncoder({ modelId: ID, contextDim: 768 }, { localModelPath: tiny.root })).rejects.toThrow(
      /contextDim is 768, but the model 'tiny-random-clip' has hidden size 64/,
    );
    await expect(loadClipTextEncoder({ modelId: ID, maxLength: 100 }, { localModelPath: tiny.root })).rejects.toThrow(
      /maxLength 100 exceeds the model's max_position_embeddings \(77\)/,
    );
  });

  it('validates configs with errors naming the field and what is allowed', () => {
    expect(validateClipTextEncoderConfig({})).toEqual({ kind: 'clip', modelId: CLIP_ID, maxLength: 77 });
    const full = {
      kind: 'clip',
      modelId: 'm',
      localModelPath: '/x',
      quantized: false,
      maxLength: 64,
      allowRemote: true,
      revision: 'main',
      contextDim: 512,
      _comment: 'x',
    };
    const { _comment, ...rest } = full;
    expect(validateClipTextEncoderConfig(full)).toEqual(rest);
    expect(JSON.parse(JSON.stringify(validateClipTextEncoderConfig(full)))).toEqual(rest);
    expect(() => validateClipTextEncoderConfig(null)).toThrow(/must be an object, got null/);
    expect(() => validateClipTextEncoderConfig({ kind: 'label' })).toThrow(/kind 'label' is unknown; allowed: clip/);
    expect(() => validateClipTextEncoderConfig({ maxLength: 0 })).toThrow(/maxLength must be an integer from 2 to 4096, got 0/);
    expect(() => validateClipTextEncoderConfig({ quantized: 'yes' })).toThrow(/quantized must be true or false, got "yes"/);
    expect(() => validateClipTextEncoderConfig({ modelId: '' })).toThrow(/modelId must be a non-empty string/);
    expect(() => validateClipTextEncoderConfig({ modelID: 'x' })).toThrow(/unknown key\(s\) 'modelID'; allowed: kind, modelId/);
    expect(() => validateClipTextEncoderConfig({ contextDim: -1 })).toThrow(/contextDim must be an integer from 1 to 65536, got -1/);
    expect(validateClipTextEncoderConfig({ modelId: './clip', tokenizerId: CLIP_ID })).toEqual({
      kind: 'clip',
      modelId: './clip',
      tokenizerId: CLIP_ID,
      maxLength: 77,
    });
    expect(validateClipTextEncoderConfig({ modelId: './clip' })).not.toHaveProperty('tokenizerId'); // absent: same as modelId
    expect(() => validateClipTextEncoderConfig({ tokenizerId: ' ' })).toThrow(
      /tokenizerId must be a non-empty string .*or absent \(same as modelId\), got " "/,
    );
    expect(() => validateClipTextEncoderConfig({ tokenizerId: 3 })).toThrow(/tokenizerId must be a non-empty string/);
    const split = validateClipTextEncoderConfig({ modelId: '/m/clip', tokenizerId: CLIP_ID });
    expect(resolveClipModelLocation(split, { localModelPath: '/opt' })).toMatchObject({ source: 'model path', localDir: '/m/clip' });
    expect(resolveClipTokenizerLocation(split, { localModelPath: '/opt' })).toMatchObject({
      source: 'option',
      localDir: path.join('/opt', CLIP_ID),
      allowRemote: false,
    });
    expect(resolveClipTokenizerLocation(split, { environment: {} }, '/tjs')).toMatchObject({ source: 'transformers.js default', allowRemote: true });
    expect(resolveClipTokenizerLocation(split, { environment: {}, allowRemote: false }, '/tjs').allowRemote).toBe(false);
  });

  it('rejects use after dispose', async () => {
    const e = await loadClipTextEncoder({ modelId: ID }, { localModelPath: tiny.root });
    e.dispose();
    await expect(e.encode(['x'])).rejects.toThrow(/after dispose/);
  });
});
