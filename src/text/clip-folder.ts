/**
 * A Stable Diffusion pipeline folder's text parts as transformers writes them, made runnable by
 * transformers.js:
 *   text_encoder/  `CLIPTextModel`: config.json (CLIPTextConfig keys) + model.safetensors (HF names,
 *                  linear weights [out, in]). transformers.js runs ONNX, so the weights are converted
 *                  once to `onnx/text_model.onnx` with tiny-clip.ts' graph writer, next to them (or in
 *                  a cache folder when the folder is read-only), stamped with the source's hash.
 *   tokenizer/     CLIP's BPE: tokenizer.json, or vocab.json + merges.txt as SD-1.5's repository has
 *                  them (tokenizer.json is then built in memory), with tokenizer_config.json /
 *                  special_tokens_map.json.
 * Writing: our CLIP text weights as a CLIPTextModel folder that `CLIPTextModel.from_pretrained`
 * loads with no missing or unexpected keys.
 */
import { createHash } from 'node:crypto';
import { accessSync, closeSync, constants, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readJson, writeFileAtomic, writeJsonAtomic } from '../checkpoint/files.js';
import { readSafetensors, writeSafetensors } from '../checkpoint/io.js';
import type { SafetensorsWriteDtype } from '../checkpoint/safetensors.js';
import type { NamedArray } from '../nn/params.js';
import { FLOAT16_SUFFIX, convertOnnxInitializersToFloat16, listOnnxInitializers, readOnnxInitializerAsFloat32 } from '../onnx/writer.js';
import {
  CLIP_HIDDEN_ACTS,
  type ClipHiddenAct,
  TINY_CLIP_TOKEN_EMBEDDING,
  type TinyClipConfig,
  type TinyClipWeights,
  buildTinyClipOnnx,
  resolveTinyClipConfig,
} from './tiny-clip.js';

/** transformers' weights file name, and the half-precision variant diffusers repositories carry. */
export const CLIP_WEIGHTS_FILES = ['model.safetensors', 'model.fp16.safetensors'] as const;
/** The converted graph and its stamp (which weights file, its size and sha256). */
export const CLIP_ONNX_FILE = 'onnx/text_model.onnx';
const CLIP_ONNX_QUANT = 'onnx/text_model_quantized.onnx';
export const CLIP_ONNX_STAMP = 'onnx/txt2img-source.json';
/** The environment variable naming txt2img's cache folder (default ~/.cache/txt2img). */
export const CACHE_ENV = 'TXT2IMG_CACHE';

export function txt2imgCacheDir(environment: Record<string, string | undefined> = process.env): string {
  const v = environment[CACHE_ENV];
  return v && v.trim() !== '' ? path.resolve(v) : path.join(os.homedir(), '.cache', 'txt2img');
}

const P = 'text_model';

/**
 * A transformers CLIPTextConfig (flat, or a CLIPConfig's `text_config`) as the graph's options.
 * Missing keys take CLIPTextConfig's defaults; a value the graph cannot represent is an error
 * naming the key (e.g. an activation other than quick_gelu / gelu).
 */
export function clipTextConfigFromHf(obj: unknown, source: string): TinyClipConfig {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw new Error(`${source}: must hold a JSON object`);
  const o0 = obj as Record<string, unknown>;
  const o = (o0.text_config && typeof o0.text_config === 'object' ? o0.text_config : o0) as Record<string, unknown>;
  const int = (k: string, dflt: number): number => {
    const v = o[k] ?? dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new Error(`${source}: ${k} must be a positive integer, got ${JSON.stringify(o[k])}`);
    return v;
  };
  const act = (o.hidden_act ?? 'quick_gelu') as ClipHiddenAct;
  if (!CLIP_HIDDEN_ACTS.includes(act)) {
    throw new Error(`${source}: hidden_act ${JSON.stringify(o.hidden_act)} is not implemented; allowed: ${CLIP_HIDDEN_ACTS.join(', ')}`);
  }
  const eps = o.layer_norm_eps ?? 1e-5;
  if (typeof eps !== 'number' || !(eps > 0 && eps < 1)) throw new Error(`${source}: layer_norm_eps must be a number in (0, 1), got ${JSON.stringify(eps)}`);
  const hidden = int('hidden_size', 512);
  const heads = int('num_attention_heads', 8);
  if (hidden % heads !== 0) throw new Error(`${source}: num_attention_heads ${heads} must divide hidden_size ${hidden}`);
  return resolveTinyClipConfig({
    hidden,
    heads,
    layers: int('num_hidden_layers', 12),
    intermediate: int('intermediate_size', 2048),
    projectionDim: int('projection_dim', 512),
    vocabSize: int('vocab_size', 49408),
    maxPositions: int('max_position_embeddings', 77),
    layerNormEps: eps,
    hiddenAct: act,
  });
}

/** Every tensor of a CLIP text model: name -> [shape as stored by transformers, linear ([out, in])]. */
function expectedTensors(c: TinyClipConfig, projection: boolean): Map<string, { shape: number[]; linear: boolean }> {
  const m = new Map<string, { shape: number[]; linear: boolean }>();
  const H = c.hidden;
  const vec = (n: string, len = H) => m.set(n, { shape: [len], linear: false });
  const lin = (n: string, fanIn: number, fanOut: number) => {
    m.set(`${n}.weight`, { shape: [fanOut, fanIn], linear: true });
    vec(`${n}.bias`, fanOut);
  };
  m.set(`${P}.embeddings.token_embedding.weight`, { shape: [c.vocabSize, H], linear: false });
  m.set(`${P}.embeddings.position_embedding.weight`, { shape: [c.maxPositions, H], linear: false });
  for (let l = 0; l < c.layers; l++) {
    const L = `${P}.encoder.layers.${l}`;
    for (const ln of ['layer_norm1', 'layer_norm2']) {
      vec(`${L}.${ln}.weight`);
      vec(`${L}.${ln}.bias`);
    }
    for (const p of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) lin(`${L}.self_attn.${p}`, H, H);
    lin(`${L}.mlp.fc1`, H, c.intermediate);
    lin(`${L}.mlp.fc2`, c.intermediate, H);
  }
  vec(`${P}.final_layer_norm.weight`);
  vec(`${P}.final_layer_norm.bias`);
  if (projection) m.set('text_projection.weight', { shape: [c.projectionDim, H], linear: true });
  return m;
}

/** Transposes a row-major [r, c] matrix. */
function transpose(data: Float32Array, r: number, c: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = data[i * c + j];
  return out;
}

/**
 * Reads a transformers CLIPTextModel (or CLIPTextModelWithProjection) safetensors file into the
 * graph writer's weights (linear weights [in, out]). Missing tensors, wrong shapes and unknown
 * tensors are errors naming the file and the tensor.
 */
export function readClipTextWeights(file: string, c: TinyClipConfig): TinyClipWeights {
  const raw = readSafetensors(file).tensors;
  // transformers 5 saves CLIPTextModel without the `text_model.` prefix that SD checkpoints (and
  // transformers 4) use; both load.
  const tensors = new Map([...raw].map(([k, v]) => [k.startsWith(`${P}.`) || k === 'text_projection.weight' ? k : `${P}.${k}`, v]));
  const want = expectedTensors(c, tensors.has('text_projection.weight'));
  const unknown = [...tensors.keys()].filter((k) => !want.has(k) && k !== `${P}.embeddings.position_ids`);
  if (unknown.length) {
    throw new Error(
      `${file}: unexpected tensor${unknown.length > 1 ? 's' : ''} ${unknown
        .slice(0, 3)
        .map((k) => `'${k}'`)
        .join(', ')}${unknown.length > 3 ? ` (+${unknown.length - 3} more)` : ''}; not a CLIPTextModel of this config.json (${c.layers} layers)`,
    );
  }
  const out: TinyClipWeights = new Map();
  for (const [name, spec] of want) {
    const t = tensors.get(name);
    if (!t) throw new Error(`${file}: missing tensor '${name}' (a CLIPTextModel with ${c.layers} layers, hidden ${c.hidden} has it)`);
    if (t.shape.length !== spec.shape.length || t.shape.some((d, i) => d !== spec.shape[i])) {
      throw new Error(`${file}: tensor '${name}' has shape [${t.shape.join(', ')}], config.json implies [${spec.shape.join(', ')}]`);
    }
    out.set(name, spec.linear ? { shape: [spec.shape[1], spec.shape[0]], data: transpose(t.data, spec.shape[0], spec.shape[1]) } : t);
  }
  return out;
}

/** The graph writer's weights as transformers' CLIPTextModel tensors (linear [out, in]; no projection). */
export function clipTextWeightsToHf(weights: TinyClipWeights, c: TinyClipConfig): Map<string, NamedArray> {
  const out = new Map<string, NamedArray>();
  for (const [name, spec] of expectedTensors(c, false)) {
    const w = weights.get(name);
    if (!w) throw new Error(`CLIP text weights: missing '${name}'`);
    out.set(name, spec.linear ? { shape: spec.shape, data: transpose(w.data, spec.shape[1], spec.shape[0]) } : { shape: w.shape, data: w.data });
  }
  return out;
}

/**
 * config.json of a transformers CLIPTextModel (CLIPTextConfig keys); `extra` adds notes ('_' keys).
 * Float keys whose value is integral (attention_dropout 0.0, initializer_factor 1.0) are left to
 * their defaults: JSON.stringify writes them as 0 and 1, which transformers 5's strict config
 * classes refuse as non-floats.
 */
export function clipTextConfigToHf(c: TinyClipConfig, extra: Record<string, unknown> = {}, ids: { bos?: number; eos?: number; pad?: number } = {}) {
  return {
    ...extra,
    architectures: ['CLIPTextModel'],
    bos_token_id: ids.bos ?? 49406,
    eos_token_id: ids.eos ?? 49407,
    pad_token_id: ids.pad ?? 49407,
    hidden_act: c.hiddenAct,
    hidden_size: c.hidden,
    initializer_range: 0.02,
    intermediate_size: c.intermediate,
    layer_norm_eps: c.layerNormEps,
    max_position_embeddings: c.maxPositions,
    model_type: 'clip_text_model',
    num_attention_heads: c.heads,
    num_hidden_layers: c.layers,
    projection_dim: c.projectionDim,
    torch_dtype: 'float32',
    vocab_size: c.vocabSize,
  };
}

/**
 * Writes `dir` as a transformers CLIPTextModel folder (config.json + model.safetensors; F16: the
 * token-embedding table as F16, the rest F32) and its ONNX conversion (onnx/text_model.onnx +
 * stamp), so loading it needs no conversion.
 */
export function writeClipTextModel(
  dir: string,
  weights: TinyClipWeights,
  c: TinyClipConfig,
  extra: Record<string, unknown> = {},
  dtype: SafetensorsWriteDtype = 'F32',
): void {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, CLIP_WEIGHTS_FILES[0]);
  // F16: the token table alone (nearly all of a small model's bytes), so the other weights stay exact.
  writeSafetensors(file, clipTextWeightsToHf(weights, c), { format: 'pt' }, dtype === 'F16' ? { dtypes: { [TINY_CLIP_TOKEN_EMBEDDING]: 'F16' } } : {});
  writeJsonAtomic(path.join(dir, 'config.json'), clipTextConfigToHf(c, extra));
  // The conversion, as loading would make it (from the written, possibly rounded, weights).
  prepareClipOnnx(dir, { inPlace: true });
}

/** A tensor's dtype in a safetensors file's header (with or without the `text_model.` prefix). */
function tensorDtype(file: string, name: string): string | undefined {
  const fd = openSync(file, 'r');
  let header: Record<string, { dtype?: string }>;
  try {
    const len = Buffer.alloc(8);
    readSync(fd, len, 0, 8, 0);
    const json = Buffer.alloc(Number(len.readBigUInt64LE(0)));
    readSync(fd, json, 0, json.length, 8);
    header = JSON.parse(json.toString('utf8'));
  } finally {
    closeSync(fd);
  }
  return (header[name] ?? header[name.replace(/^text_model\./, '')])?.dtype;
}

interface Stamp {
  source: string;
  bytes: number;
  sha256: string;
}

function stampOf(file: string): Stamp {
  const data = readFileSync(file);
  return { source: path.basename(file), bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') };
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function writable(dir: string): boolean {
  try {
    accessSync(dir, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** The weights file of a CLIPTextModel folder (model.safetensors, else model.fp16.safetensors). */
export function findClipWeights(dir: string): string | undefined {
  return CLIP_WEIGHTS_FILES.map((f) => path.join(dir, f)).find(isFile);
}

/**
 * The weights of a text model folder whose ONNX graph tiny-clip.ts wrote (initializers under HF
 * names, linear weights [in, out]; a float16 token table too), with its config; undefined for any
 * other graph (e.g. an exported hub model, whose weights cannot be named back).
 */
export function readOurClipOnnx(modelDir: string, onnxFile: string): { weights: TinyClipWeights; config: TinyClipConfig } | undefined {
  const cfgFile = path.join(modelDir, 'config.json');
  const onnx = readFileSync(onnxFile);
  const names = new Set(listOnnxInitializers(onnx).map((i) => i.name));
  const config = clipTextConfigFromHf(readJson(cfgFile, 'text model config'), cfgFile);
  const want = expectedTensors(config, names.has('text_projection.weight'));
  if (![...want.keys()].every((n) => names.has(n) || names.has(n + FLOAT16_SUFFIX))) return undefined;
  const weights: TinyClipWeights = new Map();
  for (const [name, spec] of want) {
    const { dims, data } = readOnnxInitializerAsFloat32(onnx, name);
    const shape = spec.linear ? [spec.shape[1], spec.shape[0]] : spec.shape;
    if (dims.length !== shape.length || dims.some((d, i) => d !== shape[i])) return undefined;
    weights.set(name, { shape, data });
  }
  return { weights, config };
}

export interface PreparedClipModel {
  /** The folder transformers.js loads: config.json + onnx/text_model(_quantized).onnx. */
  modelDir: string;
  quantized: boolean;
  /** What happened: an ONNX model shipped with the folder, a conversion made now, or a cached one. */
  how: 'shipped' | 'converted' | 'cached';
}

/**
 * The ONNX model transformers.js runs for a CLIPTextModel folder: its own `onnx/` model when it
 * has one that is not our conversion of stale weights, else model.safetensors converted now (in
 * `<dir>/onnx/`, or `<cache>/clip-onnx/<sha256>/` when `dir` is not writable).
 */
export function prepareClipOnnx(
  dir: string,
  opts: {
    cacheDir?: string;
    /** false: never write into `dir` (a read-only install); default: when it is writable. */
    inPlace?: boolean;
    log?: (line: string) => void;
  } = {},
): PreparedClipModel {
  const cfgFile = path.join(dir, 'config.json');
  if (!isFile(cfgFile)) throw new Error(`text encoder folder ${dir} has no config.json`);
  const weights = findClipWeights(dir);
  const shipped = [CLIP_ONNX_FILE, CLIP_ONNX_QUANT].find((f) => isFile(path.join(dir, f)));
  const stampFile = path.join(dir, CLIP_ONNX_STAMP);
  if (shipped && !isFile(stampFile)) return { modelDir: dir, quantized: shipped === CLIP_ONNX_QUANT, how: 'shipped' };
  if (!weights) {
    throw new Error(`text encoder folder ${dir} has neither ${CLIP_WEIGHTS_FILES.join(' nor ')} nor ${CLIP_ONNX_FILE}`);
  }
  const stamp = stampOf(weights);
  const same = (f: string) => {
    try {
      const s = JSON.parse(readFileSync(f, 'utf8')) as Stamp;
      return s.source === stamp.source && s.bytes === stamp.bytes && s.sha256 === stamp.sha256;
    } catch {
      return false;
    }
  };
  if (shipped === CLIP_ONNX_FILE && same(stampFile)) return { modelDir: dir, quantized: false, how: 'cached' };
  const inPlace = opts.inPlace !== false && writable(dir) && (!existsSync(path.join(dir, 'onnx')) || writable(path.join(dir, 'onnx')));
  const target = inPlace ? dir : path.join(opts.cacheDir ?? txt2imgCacheDir(), 'clip-onnx', stamp.sha256.slice(0, 32));
  if (!inPlace && isFile(path.join(target, CLIP_ONNX_FILE)) && same(path.join(target, CLIP_ONNX_STAMP))) {
    return { modelDir: target, quantized: false, how: 'cached' };
  }
  const c = clipTextConfigFromHf(readJson(cfgFile, 'text encoder config'), cfgFile);
  const t0 = performance.now();
  const w = readClipTextWeights(weights, c);
  mkdirSync(path.join(target, 'onnx'), { recursive: true });
  let onnx = buildTinyClipOnnx(w, c);
  // A half-precision token table (most of a small model's bytes) stays half in the graph: exact,
  // as its values are halves, and the conversion is no bigger than its source.
  if (tensorDtype(weights, TINY_CLIP_TOKEN_EMBEDDING) === 'F16') onnx = convertOnnxInitializersToFloat16(onnx, [TINY_CLIP_TOKEN_EMBEDDING]);
  writeFileAtomic(path.join(target, CLIP_ONNX_FILE), Buffer.from(onnx));
  if (!inPlace) copyFileSync(cfgFile, path.join(target, 'config.json'));
  writeJsonAtomic(path.join(target, CLIP_ONNX_STAMP), stamp);
  opts.log?.(
    `converted ${weights} to ONNX for transformers.js: ${path.join(target, CLIP_ONNX_FILE)} (${((performance.now() - t0) / 1000).toFixed(1)} s, once)`,
  );
  return { modelDir: target, quantized: false, how: 'converted' };
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

/** A special token in tokenizer_config.json / special_tokens_map.json: a string or an AddedToken object. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

/** The files a CLIP tokenizer folder needs: tokenizer.json, or vocab.json + merges.txt. */
export function hasClipTokenizerFiles(dir: string): boolean {
  return isFile(path.join(dir, 'tokenizer.json')) || (isFile(path.join(dir, 'vocab.json')) && isFile(path.join(dir, 'merges.txt')));
}

/** The CLIP pre-tokenizer pattern (CLIP's own regex, with its two special tokens kept whole). */
const CLIP_SPLIT = "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";

/**
 * The tokenizers-library JSON of a CLIP BPE tokenizer, built from vocab.json and merges.txt the
 * way transformers' CLIPConverter builds it: NFC + whitespace squeeze + lowercase, CLIP's split
 * and byte-level pre-tokenizer, BPE with '</w>' word ends, <|startoftext|> ... <|endoftext|>.
 */
export function buildClipTokenizerJson(vocab: Record<string, number>, mergesText: string, special: { bos: string; eos: string; unk: string }, source: string) {
  const merges = mergesText
    .split(/\r?\n/)
    .filter((l, i) => l.trim() !== '' && !(i === 0 && l.startsWith('#version')))
    .map((l) => l.trim());
  const id = (tok: string) => {
    const v = vocab[tok];
    if (typeof v !== 'number') throw new Error(`${source}: vocab.json has no '${tok}' token`);
    return v;
  };
  const added = (content: string, normalized: boolean) => ({
    id: id(content),
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized,
    special: true,
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [added(special.bos, true), ...(special.eos !== special.bos ? [added(special.eos, false)] : [])],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'NFC' }, { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' }, { type: 'Lowercase' }] },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: CLIP_SPLIT }, behavior: 'Removed', invert: true },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      ],
    },
    post_processor: {
      type: 'RobertaProcessing',
      sep: [special.eos, id(special.eos)],
      cls: [special.bos, id(special.bos)],
      trim_offsets: false,
      add_prefix_space: false,
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: special.unk,
      continuing_subword_prefix: '',
      end_of_word_suffix: '</w>',
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
}

/**
 * tokenizer.json (read, or built from vocab.json + merges.txt) and tokenizer_config.json (with
 * special_tokens_map.json's tokens filled in) of a CLIP tokenizer folder, as transformers.js'
 * tokenizer constructor takes them. tokenizer.json's merges in the newer pair form ([a, b]) are
 * given in the "a b" form transformers.js 2.x reads.
 */
export function readClipTokenizerFiles(dir: string): { tokenizerJson: Record<string, unknown>; tokenizerConfig: Record<string, unknown> } {
  const read = (f: string) => (isFile(path.join(dir, f)) ? (readJson(path.join(dir, f), `tokenizer ${f}`) as Record<string, unknown>) : {});
  const tokenizerConfig: Record<string, unknown> = {
    tokenizer_class: 'CLIPTokenizer',
    model_max_length: 77,
    ...read('special_tokens_map.json'),
    ...read('tokenizer_config.json'),
  };
  const bos = tokenContent(tokenizerConfig.bos_token) ?? '<|startoftext|>';
  const eos = tokenContent(tokenizerConfig.eos_token) ?? '<|endoftext|>';
  const unk = tokenContent(tokenizerConfig.unk_token) ?? eos;
  // transformers.js reads these as strings (or AddedToken objects); plain strings for all.
  for (const k of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
    const v = tokenContent(tokenizerConfig[k]);
    if (v !== undefined) tokenizerConfig[k] = v;
  }
  tokenizerConfig.pad_token ??= eos;
  let tokenizerJson: Record<string, unknown>;
  if (isFile(path.join(dir, 'tokenizer.json'))) {
    tokenizerJson = readJson(path.join(dir, 'tokenizer.json'), 'tokenizer.json') as Record<string, unknown>;
    const model = tokenizerJson.model as { merges?: unknown[] } | undefined;
    if (model?.merges) model.merges = model.merges.map((m) => (Array.isArray(m) ? m.join(' ') : m));
  } else if (isFile(path.join(dir, 'vocab.json')) && isFile(path.join(dir, 'merges.txt'))) {
    const vocab = readJson(path.join(dir, 'vocab.json'), 'tokenizer vocab.json') as Record<string, number>;
    tokenizerJson = buildClipTokenizerJson(vocab, readFileSync(path.join(dir, 'merges.txt'), 'utf8'), { bos, eos, unk }, dir);
  } else {
    throw new Error(`tokenizer folder ${dir} has neither tokenizer.json nor vocab.json + merges.txt`);
  }
  return { tokenizerJson, tokenizerConfig };
}
