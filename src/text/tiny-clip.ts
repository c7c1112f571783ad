/**
 * A tiny text model with CLIP's text-tower architecture and RANDOM, NOT PRETRAINED weights,
 * written as an ONNX graph in the Hugging Face / transformers.js folder layout.
 *
 * Why: the Hugging Face hub is unreachable on the machines this project is developed and
 * tested on, so the real `Xenova/clip-vit-base-patch32` weights are not available there.
 * Like the `tiny-random-clip` models of diffusers' and transformers.js' own test suites, this
 * lets the real loading and inference code (AutoTokenizer + CLIPTextModelWithProjection of
 * @xenova/transformers, onnxruntime-node) run end to end offline, with the real CLIP tokenizer.
 * Its embeddings carry no meaning: a model conditioned on them learns prompts as arbitrary
 * (but deterministic, distinct) codes. Every place that writes or reports it says so.
 *
 * Architecture (Radford et al. 2021, CLIP text transformer, as in HF CLIPTextModelWithProjection):
 *   x = token_embedding[input_ids] + position_embedding[0..S)                    // [B, S, H]
 *   N times:  x = x + out_proj(causal_mha(layer_norm1(x)))
 *             x = x + fc2(quick_gelu(fc1(layer_norm2(x))))   quick_gelu(z) = z * sigmoid(1.702 z)
 *   last_hidden_state = final_layer_norm(x)                                       // [B, S, H]
 *   text_embeds = last_hidden_state[b, argmax(input_ids[b])] @ text_projection    // [B, P]
 * (EOS pooling: the end-of-text id 49407 is the largest id in CLIP's vocabulary, so the first
 * argmax is the first EOS, exactly what CLIP does.)
 *
 * The ONNX graph has the inputs and outputs of Xenova's `onnx/text_model.onnx`: input
 * `input_ids` int64 [batch_size, sequence_length]; outputs `text_embeds` float32
 * [batch_size, projection_dim] and `last_hidden_state` float32 [batch_size, sequence_length,
 * hidden]. Opset 14, IR 7, only ops onnxruntime 1.14 implements (LayerNorm is decomposed).
 *
 * Weight layout note: linear weights are stored [in, out] (x @ W), unlike PyTorch's [out, in].
 */
import * as tf from '@tensorflow/tfjs';
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Generator } from '../random/generator.js';
import { OnnxGraphBuilder, convertOnnxInitializersToFloat16, listOnnxInitializers } from '../onnx/writer.js';

/** The label written into config.json, the README and the CLI output. */
export const TINY_CLIP_NOTE = 'random weights, not pretrained';

export interface TinyClipOptions {
  /** Hidden size = the context dimension the U-Net sees (default 64). */
  hidden?: number;
  /** Transformer layers (default 2). */
  layers?: number;
  /** Attention heads; must divide hidden (default 2). */
  heads?: number;
  /** MLP width (default 4 * hidden, as CLIP). */
  intermediate?: number;
  /** text_embeds width (default = hidden). */
  projectionDim?: number;
  /** Token-embedding rows (default 49408, CLIP's vocabulary). */
  vocabSize?: number;
  /** Position-embedding rows = the longest sequence (default 77, as CLIP). */
  maxPositions?: number;
  /** LayerNorm epsilon (default 1e-5, as CLIP). */
  layerNormEps?: number;
  /** Seed of the project's Generator that draws every weight (default 0). */
  seed?: number;
  /**
   * The MLP activation, transformers' `hidden_act`: 'quick_gelu' (default; CLIP's and SD-1.x's,
   * z * sigmoid(1.702 z)) or 'gelu' (exact, erf-based; SD-2.x's OpenCLIP text model).
   */
  hiddenAct?: ClipHiddenAct;
}

/** The `hidden_act` values the CLIP text graph implements. */
export const CLIP_HIDDEN_ACTS = ['quick_gelu', 'gelu'] as const;
export type ClipHiddenAct = (typeof CLIP_HIDDEN_ACTS)[number];

export type TinyClipConfig = Required<TinyClipOptions>;

/** A named float32 array (shape row-major). */
export interface TinyClipWeight {
  shape: number[];
  data: Float32Array;
}
export type TinyClipWeights = Map<string, TinyClipWeight>;

function checkInt(name: string, v: unknown, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw new Error(`tiny CLIP option '${name}' must be an integer from ${lo} to ${hi}, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Fills in defaults and checks every option (names the bad one and what is allowed). */
export function resolveTinyClipConfig(opts: TinyClipOptions = {}): TinyClipConfig {
  const hidden = checkInt('hidden', opts.hidden ?? 64, 2, 4096);
  const heads = checkInt('heads', opts.heads ?? 2, 1, hidden);
  if (hidden % heads !== 0) throw new Error(`tiny CLIP option 'heads' (${heads}) must divide 'hidden' (${hidden})`);
  const cfg: TinyClipConfig = {
    hidden,
    layers: checkInt('layers', opts.layers ?? 2, 1, 48),
    heads,
    intermediate: checkInt('intermediate', opts.intermediate ?? 4 * hidden, 1, 65536),
    projectionDim: checkInt('projectionDim', opts.projectionDim ?? hidden, 1, 65536),
    vocabSize: checkInt('vocabSize', opts.vocabSize ?? 49408, 2, 1 << 20),
    maxPositions: checkInt('maxPositions', opts.maxPositions ?? 77, 1, 4096),
    layerNormEps: opts.layerNormEps ?? 1e-5,
    seed: checkInt('seed', opts.seed ?? 0, 0, Number.MAX_SAFE_INTEGER),
    hiddenAct: opts.hiddenAct ?? 'quick_gelu',
  };
  if (!CLIP_HIDDEN_ACTS.includes(cfg.hiddenAct)) {
    throw new Error(`tiny CLIP option 'hiddenAct' must be one of ${CLIP_HIDDEN_ACTS.join(', ')}, got ${JSON.stringify(opts.hiddenAct)}`);
  }
  if (typeof cfg.layerNormEps !== 'number' || !(cfg.layerNormEps > 0 && cfg.layerNormEps < 1)) {
    throw new Error(`tiny CLIP option 'layerNormEps' must be a number in (0, 1), got ${JSON.stringify(opts.layerNormEps)}`);
  }
  return cfg;
}

const P = 'text_model';

/**
 * Draws the weights from `Generator(seed)` in a fixed order (deterministic on every platform).
 * Standard deviations follow HF's CLIP initialisation (factor 1): token 0.02, position 0.01,
 * q/k/v and fc2 H^-0.5 (2N)^-0.5, out_proj H^-0.5, fc1 (2H)^-0.5, projection H^-0.5.
 * Unlike HF (zero biases, unit LayerNorms), biases get N(0, 0.02) and LayerNorm gains
 * 1 + N(0, 0.05) / shifts N(0, 0.02), so that a numerical check of an export exercises every
 * parameter. Not pretrained: these are random numbers.
 */
export function generateTinyClipWeights(opts: TinyClipOptions = {}): TinyClipWeights {
  const c = resolveTinyClipConfig(opts);
  const rng = new Generator(c.seed);
  const w: TinyClipWeights = new Map();
  const normal = (name: string, shape: number[], std: number, mean = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = rng.normalArray(n);
    for (let i = 0; i < n; i++) data[i] = mean + std * data[i];
    w.set(name, { shape, data });
  };
  const H = c.hidden;
  const inStd = H ** -0.5 * (2 * c.layers) ** -0.5;
  const outStd = H ** -0.5;
  const fcStd = (2 * H) ** -0.5;
  const ln = (name: string) => {
    normal(`${name}.weight`, [H], 0.05, 1);
    normal(`${name}.bias`, [H], 0.02);
  };
  const linear = (name: string, fanIn: number, fanOut: number, std: number) => {
    normal(`${name}.weight`, [fanIn, fanOut], std);
    normal(`${name}.bias`, [fanOut], 0.02);
  };
  normal(`${P}.embeddings.token_embedding.weight`, [c.vocabSize, H], 0.02);
  normal(`${P}.embeddings.position_embedding.weight`, [c.maxPositions, H], 0.01);
  for (let l = 0; l < c.layers; l++) {
    const L = `${P}.encoder.layers.${l}`;
    ln(`${L}.layer_norm1`);
    linear(`${L}.self_attn.q_proj`, H, H, inStd);
    linear(`${L}.self_attn.k_proj`, H, H, inStd);
    linear(`${L}.self_attn.v_proj`, H, H, inStd);
    linear(`${L}.self_attn.out_proj`, H, H, outStd);
    ln(`${L}.layer_norm2`);
    linear(`${L}.mlp.fc1`, H, c.intermediate, fcStd);
    linear(`${L}.mlp.fc2`, c.intermediate, H, inStd);
  }
  ln(`${P}.final_layer_norm`);
  normal('text_projection.weight', [H, c.projectionDim], H ** -0.5);
  return w;
}

export function countTinyClipParams(weights: TinyClipWeights): number {
  let n = 0;
  for (const v of weights.values()) n += v.data.length;
  return n;
}

/** The additive causal mask [P, P]: 0 on and below the diagonal, -1e9 above. */
function causalMask(n: number): Float32Array {
  const m = new Float32Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) m[i * n + j] = -1e9;
  return m;
}

/**
 * Serialises the ONNX graph (see the file comment for its inputs/outputs). Weights without
 * `text_projection.weight` (transformers' CLIPTextModel, as in Stable Diffusion) give the pooled
 * end-of-text state as `pooler_output` [B, H] instead of `text_embeds`.
 */
export function buildTinyClipOnnx(weights: TinyClipWeights, opts: TinyClipOptions = {}): Uint8Array {
  const c = resolveTinyClipConfig(opts);
  const H = c.hidden;
  const nh = c.heads;
  const hd = H / nh;
  const g = new OnnxGraphBuilder('tiny_clip_text_model_not_pretrained');
  const W = (name: string): string => {
    const t = weights.get(name);
    if (!t) throw new Error(`tiny CLIP weights: missing '${name}'`);
    return g.floats(name, t.shape, t.data);
  };

  const ids = g.input({ name: 'input_ids', dataType: 'INT64', shape: ['batch_size', 'sequence_length'] });
  // Constants.
  const one = g.int64s('const.index1', [1], [1]);
  const zero1 = g.int64s('const.zero1', [1], [0]);
  const zero2 = g.int64s('const.zero2', [2], [0, 0]);
  const axes01 = g.int64s('const.axes01', [2], [0, 1]);
  const headShape = g.int64s('const.head_shape', [4], [0, 0, nh, hd]);
  const mergeShape = g.int64s('const.merge_shape', [3], [0, 0, H]);
  const scale = g.floats('const.attn_scale', [], [hd ** -0.5]);
  const geluK = c.hiddenAct === 'quick_gelu' ? g.floats('const.quick_gelu', [], [1.702]) : g.floats('const.inv_sqrt2', [], [Math.SQRT1_2]);
  const half = c.hiddenAct === 'gelu' ? g.floats('const.half', [], [0.5]) : '';
  const oneF = c.hiddenAct === 'gelu' ? g.floats('const.one', [], [1]) : '';
  const eps = g.floats('const.ln_eps', [], [c.layerNormEps]);
  const mask = g.floats('const.causal_mask', [c.maxPositions, c.maxPositions], causalMask(c.maxPositions));

  // Sequence length S as a [1] int64, and the causal mask / positions sliced to it.
  const shape = g.op('Shape', [ids]);
  const s1 = g.op('Gather', [shape, one], { axis: 0 }); // [1]
  const ss = g.op('Concat', [s1, s1], { axis: 0 }); // [2]
  const maskS = g.op('Slice', [mask, zero2, ss, axes01]); // [S, S]
  const pos = g.op('Slice', [W(`${P}.embeddings.position_embedding.weight`), zero1, s1, zero1]); // [S, H]
  const tok = g.op('Gather', [W(`${P}.embeddings.token_embedding.weight`), ids], { axis: 0 }); // [B, S, H]
  let x = g.op('Add', [tok, pos]);

  const layerNorm = (input: string, name: string): string => {
    const mean = g.op('ReduceMean', [input], { axes: [-1], keepdims: 1 });
    const d = g.op('Sub', [input, mean]);
    const variance = g.op('ReduceMean', [g.op('Mul', [d, d])], { axes: [-1], keepdims: 1 });
    const std = g.op('Sqrt', [g.op('Add', [variance, eps])]);
    const normed = g.op('Div', [d, std]);
    return g.op('Add', [g.op('Mul', [normed, W(`${name}.weight`)]), W(`${name}.bias`)]);
  };
  const linear = (input: string, name: string): string => g.op('Add', [g.op('MatMul', [input, W(`${name}.weight`)]), W(`${name}.bias`)]);

  for (let l = 0; l < c.layers; l++) {
    const L = `${P}.encoder.layers.${l}`;
    const h = layerNorm(x, `${L}.layer_norm1`);
    const heads = (t: string) => g.op('Reshape', [t, headShape]); // [B, S, nh, hd]
    const q = g.op('Transpose', [heads(linear(h, `${L}.self_attn.q_proj`))], { perm: [0, 2, 1, 3] }); // [B, nh, S, hd]
    const kT = g.op('Transpose', [heads(linear(h, `${L}.self_attn.k_proj`))], { perm: [0, 2, 3, 1] }); // [B, nh, hd, S]
    const v = g.op('Transpose', [heads(linear(h, `${L}.self_attn.v_proj`))], { perm: [0, 2, 1, 3] }); // [B, nh, S, hd]
    const scores = g.op('Add', [g.op('Mul', [g.op('MatMul', [q, kT]), scale]), maskS]); // [B, nh, S, S]
    const probs = g.op('Softmax', [scores], { axis: -1 });
    const ctx = g.op('Transpose', [g.op('MatMul', [probs, v])], { perm: [0, 2, 1, 3] }); // [B, S, nh, hd]
    const merged = g.op('Reshape', [ctx, mergeShape]); // [B, S, H]
    x = g.op('Add', [x, linear(merged, `${L}.self_attn.out_proj`)]);

    const h2 = layerNorm(x, `${L}.layer_norm2`);
    const f1 = linear(h2, `${L}.mlp.fc1`);
    // quick_gelu: z * sigmoid(1.702 z); gelu: 0.5 z (1 + erf(z / sqrt 2)) (opset 14 has no Gelu op)
    const act =
      c.hiddenAct === 'quick_gelu'
        ? g.op('Mul', [f1, g.op('Sigmoid', [g.op('Mul', [f1, geluK])])])
        : g.op('Mul', [g.op('Mul', [f1, half]), g.op('Add', [g.op('Erf', [g.op('Mul', [f1, geluK])]), oneF])]);
    x = g.op('Add', [x, linear(act, `${L}.mlp.fc2`)]);
  }
  const last = layerNorm(x, `${P}.final_layer_norm`);
  g.op('Identity', [last], {}, 'last_hidden_state');

  // EOS pooling: first argmax of the ids (ORT's ArgMax has no int64 kernel, so cast to int32).
  const eosIdx = g.op('ArgMax', [g.op('Cast', [ids], { to: 6 })], { axis: -1, keepdims: 1 }); // [B, 1] int64
  const pooled = g.op('GatherND', [last, eosIdx], { batch_dims: 1 }); // [B, H]
  if (weights.has('text_projection.weight')) {
    g.op('MatMul', [pooled, W('text_projection.weight')], {}, 'text_embeds');
    g.output({ name: 'text_embeds', dataType: 'FLOAT', shape: ['batch_size', c.projectionDim] });
  } else {
    g.op('Identity', [pooled], {}, 'pooler_output');
    g.output({ name: 'pooler_output', dataType: 'FLOAT', shape: ['batch_size', H] });
  }
  g.output({ name: 'last_hidden_state', dataType: 'FLOAT', shape: ['batch_size', 'sequence_length', H] });
  return g.toModel({
    opsetVersion: 14,
    irVersion: 7,
    producerName: 'txt2img tiny-clip',
    docString: `CLIP-architecture text model with ${TINY_CLIP_NOTE} (seed ${c.seed}); generated by txt2img for offline tests`,
    metadata: { txt2img_note: TINY_CLIP_NOTE, seed: String(c.seed) },
  });
}

/**
 * The same forward pass in tfjs, as the numerical reference for the ONNX export.
 * inputIds: [B][S] token ids -> lastHiddenState [B, S, H], textEmbeds [B, P] (caller disposes).
 */
export function tinyClipForward(
  weights: TinyClipWeights,
  inputIds: number[][],
  opts: TinyClipOptions = {},
): { lastHiddenState: tf.Tensor3D; textEmbeds: tf.Tensor2D } {
  const c = resolveTinyClipConfig(opts);
  const B = inputIds.length;
  const S = inputIds[0]?.length ?? 0;
  if (B === 0 || S === 0 || inputIds.some((r) => r.length !== S)) throw new Error('tinyClipForward: inputIds must be a non-empty rectangular [B][S] array');
  if (S > c.maxPositions) throw new Error(`tinyClipForward: sequence length ${S} exceeds maxPositions ${c.maxPositions}`);
  const H = c.hidden;
  const nh = c.heads;
  const hd = H / nh;
  return tf.tidy(() => {
    const t = (name: string) => {
      const w = weights.get(name);
      if (!w) throw new Error(`tiny CLIP weights: missing '${name}'`);
      return tf.tensor(w.data, w.shape, 'float32');
    };
    const layerNorm = (x: tf.Tensor2D, name: string) => {
      const mean = tf.mean(x, -1, true);
      const d = tf.sub(x, mean);
      const variance = tf.mean(tf.mul(d, d), -1, true);
      return tf.add(tf.mul(tf.div(d, tf.sqrt(tf.add(variance, c.layerNormEps))), t(`${name}.weight`)), t(`${name}.bias`)) as tf.Tensor2D;
    };
    const linear = (x: tf.Tensor2D, name: string) => tf.add(tf.matMul(x, t(`${name}.weight`) as tf.Tensor2D), t(`${name}.bias`)) as tf.Tensor2D;
    const flatIds = tf.tensor1d(inputIds.flat(), 'int32');
    const tok = tf.gather(t(`${P}.embeddings.token_embedding.weight`), flatIds); // [B*S, H]
    const pos = tf.slice(t(`${P}.embeddings.position_embedding.weight`), [0, 0], [S, H]); // [S, H]
    let x = tf.add(tok.reshape([B, S, H]), pos).reshape([B * S, H]) as tf.Tensor2D; // rows [B*S, H]
    const mask = tf.tensor2d(causalMask(S), [S, S]);
    for (let l = 0; l < c.layers; l++) {
      const L = `${P}.encoder.layers.${l}`;
      const h = layerNorm(x, `${L}.layer_norm1`);
      const split = (y: tf.Tensor2D) =>
        y
          .reshape([B, S, nh, hd])
          .transpose([0, 2, 1, 3])
          .reshape([B * nh, S, hd]) as tf.Tensor3D;
      const q = split(linear(h, `${L}.self_attn.q_proj`));
      const k = split(linear(h, `${L}.self_attn.k_proj`));
      const v = split(linear(h, `${L}.self_attn.v_proj`));
      const scores = tf.add(tf.mul(tf.matMul(q, k, false, true), hd ** -0.5), mask); // [B*nh, S, S]
      const ctx = tf.matMul(tf.softmax(scores, -1), v); // [B*nh, S, hd]
      const merged = ctx
        .reshape([B, nh, S, hd])
        .transpose([0, 2, 1, 3])
        .reshape([B * S, H]) as tf.Tensor2D;
      x = tf.add(x, linear(merged, `${L}.self_attn.out_proj`));
      const f1 = linear(layerNorm(x, `${L}.layer_norm2`), `${L}.mlp.fc1`);
      const act = (c.hiddenAct === 'quick_gelu' ? tf.mul(f1, tf.sigmoid(tf.mul(f1, 1.702))) : gelu(f1)) as tf.Tensor2D;
      x = tf.add(x, linear(act, `${L}.mlp.fc2`));
    }
    const last = layerNorm(x, `${P}.final_layer_norm`); // [B*S, H]
    const eos = inputIds.map((row, b) => {
      let best = 0;
      for (let i = 1; i < S; i++) if (row[i] > row[best]) best = i;
      return b * S + best;
    });
    const pooled = tf.gather(last, tf.tensor1d(eos, 'int32')); // [B, H]
    const textEmbeds = tf.matMul(pooled, t('text_projection.weight') as tf.Tensor2D) as tf.Tensor2D;
    return { lastHiddenState: last.reshape([B, S, H]) as tf.Tensor3D, textEmbeds };
  });
}

/** Exact GELU, 0.5 z (1 + erf(z / sqrt 2)), as torch's nn.functional.gelu. */
function gelu(z: tf.Tensor2D): tf.Tensor2D {
  return tf.mul(tf.mul(z, 0.5), tf.add(tf.erf(tf.mul(z, Math.SQRT1_2)), 1)) as tf.Tensor2D;
}

/** Files copied from the tokenizer folder (the first two are required). */
export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'vocab.json', 'merges.txt', 'special_tokens_map.json', 'LICENSE-openai-clip'];
const REQUIRED_TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json'];

/** The largest token id the tokenizer can emit (vocabulary plus added tokens). */
function tokenizerMaxId(tokenizerJsonPath: string): number {
  const json = JSON.parse(readFileSync(tokenizerJsonPath, 'utf8')) as {
    model?: { vocab?: Record<string, number> };
    added_tokens?: { id: number }[];
  };
  let max = -1;
  for (const id of Object.values(json.model?.vocab ?? {})) if (id > max) max = id;
  for (const t of json.added_tokens ?? []) if (t.id > max) max = t.id;
  return max;
}

export interface WriteTinyClipOptions extends TinyClipOptions {
  /** The model folder to create (e.g. `<local models dir>/tiny-random-clip`). */
  outDir: string;
  /** A folder with a CLIP tokenizer (tokenizer.json, tokenizer_config.json, ...). */
  tokenizerDir: string;
  /**
   * Also write `onnx/text_model_quantized.onnx`, a byte-identical float32 copy (default true):
   * transformers.js 2.17.2 loads the `_quantized` file unless `quantized: false` is passed, so
   * with the copy plain transformers.js code loads the folder with its defaults too.
   */
  quantizedCopy?: boolean;
}

export interface WriteTinyClipResult {
  outDir: string;
  config: TinyClipConfig;
  numParams: number;
  files: string[];
  onnxBytes: number;
}

/** The HF `config.json` transformers.js reads (model_type clip plus a text_config). */
export function tinyClipHfConfig(c: TinyClipConfig): Record<string, unknown> {
  return {
    _txt2img_note: `${TINY_CLIP_NOTE}: a tiny CLIP-architecture text model generated by txt2img (scripts/make-tiny-clip.ts) for tests and offline runs; its embeddings carry no meaning`,
    _txt2img_generator: { ...c, weightLayout: 'linear weights [in, out]' },
    architectures: ['CLIPTextModelWithProjection'],
    model_type: 'clip',
    projection_dim: c.projectionDim,
    text_config: {
      model_type: 'clip_text_model',
      vocab_size: c.vocabSize,
      hidden_size: c.hidden,
      intermediate_size: c.intermediate,
      num_hidden_layers: c.layers,
      num_attention_heads: c.heads,
      max_position_embeddings: c.maxPositions,
      hidden_act: c.hiddenAct,
      layer_norm_eps: c.layerNormEps,
      projection_dim: c.projectionDim,
      bos_token_id: 49406,
      eos_token_id: 49407,
      pad_token_id: 1,
    },
  };
}

/**
 * Generates the model and writes the folder:
 *   config.json, README.md, onnx/text_model.onnx (+ onnx/text_model_quantized.onnx copy),
 *   tokenizer files copied from `tokenizerDir`.
 */
export function writeTinyClipModel(opts: WriteTinyClipOptions): WriteTinyClipResult {
  const c = resolveTinyClipConfig(opts);
  const tokDir = path.resolve(opts.tokenizerDir);
  const missing = REQUIRED_TOKENIZER_FILES.map((f) => path.join(tokDir, f)).filter((f) => !existsSync(f));
  if (missing.length > 0) {
    throw new Error(
      `tokenizer folder '${tokDir}' lacks ${missing.join(', ')}; pass a folder holding a CLIP tokenizer (e.g. <models>/Xenova/clip-vit-base-patch32)`,
    );
  }
  const maxId = tokenizerMaxId(path.join(tokDir, 'tokenizer.json'));
  if (maxId >= c.vocabSize) {
    throw new Error(
      `tiny CLIP option 'vocabSize' (${c.vocabSize}) is too small for the tokenizer in '${tokDir}', whose ids go up to ${maxId}; use at least ${maxId + 1}`,
    );
  }
  const outDir = path.resolve(opts.outDir);
  mkdirSync(path.join(outDir, 'onnx'), { recursive: true });
  const weights = generateTinyClipWeights(c);
  const onnx = buildTinyClipOnnx(weights, c);
  const files: string[] = [];
  const write = (rel: string, data: string | Uint8Array) => {
    writeFileSync(path.join(outDir, rel), data);
    files.push(rel);
  };
  write('onnx/text_model.onnx', onnx);
  if (opts.quantizedCopy ?? true) write('onnx/text_model_quantized.onnx', onnx);
  write('config.json', `${JSON.stringify(tinyClipHfConfig(c), null, 2)}\n`);
  for (const f of TOKENIZER_FILES) {
    const src = path.join(tokDir, f);
    if (existsSync(src)) {
      copyFileSync(src, path.join(outDir, f));
      files.push(f);
    }
  }
  const numParams = countTinyClipParams(weights);
  write(
    'README.md',
    [
      '# Tiny CLIP-architecture text model (random weights, NOT PRETRAINED)',
      '',
      'Generated by txt2img `scripts/make-tiny-clip.ts` for tests and offline runs. The weights are',
      `random numbers drawn from seed ${c.seed}; the embeddings carry no meaning. Architecture of CLIP's`,
      `text tower: hidden ${c.hidden}, ${c.layers} layers, ${c.heads} heads, MLP ${c.intermediate}, projection ${c.projectionDim},`,
      `vocabulary ${c.vocabSize}, ${c.maxPositions} positions, ${numParams} parameters.`,
      '',
      "Files: `onnx/text_model.onnx` (inputs/outputs of Xenova's CLIP text_model.onnx: `input_ids` ->",
      '`text_embeds`, `last_hidden_state`); `onnx/text_model_quantized.onnx`, if present, is an identical',
      'float32 copy (NOT quantized) so transformers.js loads it with its default `quantized: true`.',
      `Tokenizer files are copies of '${tokDir}' (OpenAI CLIP BPE, MIT licence).`,
      '',
    ].join('\n'),
  );
  return { outDir, config: c, numParams, files, onnxBytes: onnx.length };
}

/** The token-embedding table: [vocab, hidden], 97% of a tiny CLIP's bytes at hidden 32. */
export const TINY_CLIP_TOKEN_EMBEDDING = `${P}.embeddings.token_embedding.weight`;

export interface TinyClipFp16Options {
  /** An existing tiny CLIP folder (config.json + onnx/text_model.onnx), e.g. data/tiny-clip. */
  srcDir: string;
  /** The folder to write (created; files in it are overwritten). */
  outDir: string;
  /** Also copy the tokenizer files (default false: config.json and the ONNX graph only). */
  copyTokenizer?: boolean;
}

export interface TinyClipFp16Result {
  outDir: string;
  files: string[];
  onnxBytes: number;
  sourceOnnxBytes: number;
}

/**
 * Writes a smaller copy of an existing tiny CLIP folder: its `onnx/text_model.onnx` with the
 * token-embedding table stored as FLOAT16 (each value rounded to the nearest half, ties to even)
 * and a Cast back to float at the start of the graph, so inputs, outputs and every other weight
 * are unchanged; the outputs differ from the float32 model's only through the rounded token
 * embeddings (~1e-4 at the default scale). The weights are taken from the existing file, not
 * regenerated, so a folder whose generator code has since changed converts just the same.
 * Writes config.json (the source's, with a `_txt2img_fp16` note) and onnx/text_model.onnx; no
 * `_quantized` copy (load it with quantized: false).
 */
export function writeTinyClipFp16Copy(opts: TinyClipFp16Options): TinyClipFp16Result {
  const src = path.resolve(opts.srcDir);
  const cfgFile = path.join(src, 'config.json');
  // The float32 graph, or its copy under transformers.js' default (quantized) name.
  const onnxFile =
    ['text_model.onnx', 'text_model_quantized.onnx'].map((f) => path.join(src, 'onnx', f)).find((f) => existsSync(f)) ??
    path.join(src, 'onnx', 'text_model.onnx');
  for (const f of [cfgFile, onnxFile]) if (!existsSync(f)) throw new Error(`tiny CLIP folder '${src}' lacks ${f}`);
  let hf: Record<string, unknown>;
  try {
    hf = JSON.parse(readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${cfgFile} is not valid JSON (${(e as Error).message})`);
  }
  if (hf.model_type !== 'clip') throw new Error(`${cfgFile}: model_type must be 'clip', got ${JSON.stringify(hf.model_type)}`);
  const onnx = readFileSync(onnxFile);
  const emb = listOnnxInitializers(onnx).find((t) => t.name === TINY_CLIP_TOKEN_EMBEDDING);
  if (!emb) throw new Error(`${onnxFile} has no initializer '${TINY_CLIP_TOKEN_EMBEDDING}' (not a txt2img tiny CLIP graph, or converted already?)`);
  if (emb.dataType !== 1) throw new Error(`${onnxFile}: '${TINY_CLIP_TOKEN_EMBEDDING}' has ONNX data type ${emb.dataType}, not FLOAT (1); converted already?`);
  const converted = convertOnnxInitializersToFloat16(onnx, [TINY_CLIP_TOKEN_EMBEDDING]);
  const outDir = path.resolve(opts.outDir);
  if (outDir === src) throw new Error(`writeTinyClipFp16Copy: outDir must differ from srcDir (${src})`);
  mkdirSync(path.join(outDir, 'onnx'), { recursive: true });
  const files: string[] = [];
  writeFileSync(path.join(outDir, 'onnx', 'text_model.onnx'), converted);
  files.push('onnx/text_model.onnx');
  const { _txt2img_note, _txt2img_generator, ...rest } = hf;
  const outCfg = {
    ...(_txt2img_note !== undefined ? { _txt2img_note } : {}),
    ...(_txt2img_generator !== undefined ? { _txt2img_generator } : {}),
    _txt2img_fp16: `onnx/text_model.onnx stores '${TINY_CLIP_TOKEN_EMBEDDING}' as float16 (rounded to nearest even, cast to float32 in the graph); every other weight is float32. Converted from ${onnx.length} bytes.`,
    ...rest,
  };
  writeFileSync(path.join(outDir, 'config.json'), `${JSON.stringify(outCfg, null, 2)}\n`);
  files.push('config.json');
  if (opts.copyTokenizer) {
    for (const f of TOKENIZER_FILES) {
      if (existsSync(path.join(src, f))) {
        copyFileSync(path.join(src, f), path.join(outDir, f));
        files.push(f);
      }
    }
  }
  return { outDir, files, onnxBytes: statSync(path.join(outDir, 'onnx', 'text_model.onnx')).size, sourceOnnxBytes: onnx.length };
}
