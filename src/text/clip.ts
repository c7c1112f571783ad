/**
 * CLIP text conditioning through transformers.js: its tokenizer and `CLIPTextModelWithProjection`
 * (ONNX on onnxruntime-node), whose `last_hidden_state` [B, 77, hidden] is the U-Net's
 * cross-attention context, as in Stable Diffusion (all 77 positions attended, no mask). Where the
 * model and tokenizer files are looked up (local folders, the hub) is in docs/text-encoder.md.
 * Long prompts are truncated keeping the end-of-text token last; embeddings are cached per prompt.
 */
import * as tf from '@tensorflow/tfjs';
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { checkBatch, type ConditionEncoder, type Conditioning } from './types.js';
import { ConfigChecker } from '../checkpoint/config.js';
import { hasClipTokenizerFiles, readClipTokenizerFiles } from './clip-folder.js';

import { LOCAL_MODELS_ENV } from './local-models.js';

export { LOCAL_MODELS_ENV };
export const DEFAULT_CLIP_MODEL_ID = 'Xenova/clip-vit-base-patch32';
/** CLIP's context length (its position table has 77 rows). */
export const CLIP_MAX_LENGTH = 77;
const HUB = 'https://huggingface.co';

/** Serialisable settings of a CLIP text encoder (saved as text_encoder/config.json). */
export interface ClipTextEncoderConfig {
  kind: 'clip';
  /** Hub id (`Xenova/clip-vit-base-patch32`) or a path to a model folder: config.json + ONNX weights. */
  modelId: string;
  /** Where the tokenizer comes from (hub id or folder path); absent: the same as modelId. */
  tokenizerId?: string;
  /** A folder in the transformers.js local layout (`<dir>/<model id>/...`). */
  localModelPath?: string;
  /** true: onnx/text_model_quantized.onnx; false: onnx/text_model.onnx; absent: auto (see file comment). */
  quantized?: boolean;
  /** Tokens per prompt, start/end included (77 for CLIP). */
  maxLength: number;
  /** Allow hub downloads; absent: yes unless a local folder is given. */
  allowRemote?: boolean;
  /** Hub revision (default 'main'). */
  revision?: string;
  /** The hidden size the U-Net was built for; checked against the model when it loads. */
  contextDim?: number;
}

const CLIP_CONFIG_FIELDS = ['kind', 'modelId', 'tokenizerId', 'localModelPath', 'quantized', 'maxLength', 'allowRemote', 'revision', 'contextDim'];

export function defaultClipTextEncoderConfig(overrides: Partial<ClipTextEncoderConfig> = {}): ClipTextEncoderConfig {
  return validateClipTextEncoderConfig({ kind: 'clip', modelId: DEFAULT_CLIP_MODEL_ID, maxLength: CLIP_MAX_LENGTH, ...overrides });
}

/**
 * Checks a parsed config.json (or any object) and returns a complete config: `kind` defaults
 * to 'clip', `modelId` to Xenova/clip-vit-base-patch32, `maxLength` to 77. Throws naming the
 * bad field, the value and what is allowed. Fields starting with '_' are comments and dropped.
 */
export function validateClipTextEncoderConfig(obj: unknown): ClipTextEncoderConfig {
  const check = new ConfigChecker('CLIP text encoder config');
  const o = check.object(obj);
  check.known(o, CLIP_CONFIG_FIELDS, undefined, { comments: true });
  check.oneOf(['clip'], o.kind ?? 'clip', 'kind');
  const modelId = check.str(o.modelId ?? DEFAULT_CLIP_MODEL_ID, 'modelId', `a non-empty string (a hub id like '${DEFAULT_CLIP_MODEL_ID}' or a model folder)`);
  const cfg: ClipTextEncoderConfig = { kind: 'clip', modelId, maxLength: CLIP_MAX_LENGTH };
  const optional = <K extends keyof ClipTextEncoderConfig>(key: K, read: (v: unknown) => ClipTextEncoderConfig[K]) => {
    if (o[key] !== undefined) cfg[key] = read(o[key]);
  };
  optional('tokenizerId', (v) =>
    check.str(v, 'tokenizerId', `a non-empty string (a hub id like '${DEFAULT_CLIP_MODEL_ID}' or a tokenizer folder), or absent (same as modelId)`),
  );
  optional('localModelPath', (v) => check.str(v, 'localModelPath', 'a non-empty folder path'));
  optional('quantized', (v) => check.bool(v, 'quantized'));
  optional('maxLength', (v) => check.int(v, 'maxLength', 2, 4096));
  optional('allowRemote', (v) => check.bool(v, 'allowRemote'));
  optional('revision', (v) => check.str(v, 'revision', "a non-empty string (e.g. 'main')"));
  optional('contextDim', (v) => check.int(v, 'contextDim', 1, 65536));
  return cfg;
}

/** Runtime options of loadClipTextEncoder (not saved). */
export interface ClipLoadOptions {
  /** Overrides config.localModelPath and TXT2IMG_LOCAL_MODELS (a CLI flag). */
  localModelPath?: string;
  /**
   * Overrides config.allowRemote (hub downloads of whatever is not a folder path: the model and/or
   * the tokenizer). false with no local folder means: only transformers.js' default folder and cache.
   */
  allowRemote?: boolean;
  /** Overrides config.quantized. */
  quantized?: boolean;
  /** Where warnings go (default console.warn). */
  warn?: (message: string) => void;
  /** Prompts kept in the embedding cache, LRU (default 256; the empty prompt is always kept). 0 disables it. */
  cacheSize?: number;
  /** Prompts per ONNX run (default 16). */
  batchSize?: number;
  /** Environment to read TXT2IMG_LOCAL_MODELS from (default process.env; for tests). */
  environment?: Record<string, string | undefined>;
}

/** Where a model will be looked for. */
export interface ClipModelLocation {
  /** The id handed to transformers.js. */
  modelId: string;
  /** transformers.js' env.localModelPath for this load (undefined: its default). */
  localModelPath?: string;
  /** Where the local files are expected: `<localModelPath>/<modelId>`. */
  localDir: string;
  allowRemote: boolean;
  /** Which setting chose the folder. */
  source: 'option' | 'config' | 'env' | 'model path' | 'transformers.js default';
  /** The hub URL prefix of the files (when remote is allowed). */
  remoteBase: string;
}

function isPathLike(id: string): boolean {
  return path.isAbsolute(id) || id.startsWith('./') || id.startsWith('../') || id === '.' || id === '..';
}

const DEFAULT_LOCAL = 'node_modules/@xenova/transformers/models';

/**
 * Where `config`'s model (config.json + ONNX) will be looked for (see the file comment).
 * `defaultLocal` is transformers.js' own env.localModelPath, used when no folder is given
 * (ClipTextEncoder.load passes it).
 */
export function resolveClipModelLocation(config: ClipTextEncoderConfig, opts: ClipLoadOptions = {}, defaultLocal = DEFAULT_LOCAL): ClipModelLocation {
  return resolveLocation(config.modelId, config, opts, defaultLocal);
}

/** Where `config`'s tokenizer will be looked for: `tokenizerId` (default modelId), same rules. */
export function resolveClipTokenizerLocation(config: ClipTextEncoderConfig, opts: ClipLoadOptions = {}, defaultLocal = DEFAULT_LOCAL): ClipModelLocation {
  return resolveLocation(config.tokenizerId ?? config.modelId, config, opts, defaultLocal);
}

function resolveLocation(id: string, config: ClipTextEncoderConfig, opts: ClipLoadOptions, defaultLocal: string): ClipModelLocation {
  const environment = opts.environment ?? process.env;
  const revision = config.revision ?? 'main';
  const remote = (id: string) => `${HUB}/${id}/resolve/${encodeURIComponent(revision)}`;
  if (isPathLike(id)) {
    const dir = path.resolve(id);
    const modelId = path.basename(dir);
    return {
      modelId,
      localModelPath: path.dirname(dir),
      localDir: dir,
      allowRemote: false,
      source: 'model path',
      remoteBase: remote(modelId),
    };
  }
  const envValue = environment[LOCAL_MODELS_ENV];
  const chosen: [string | undefined, ClipModelLocation['source']][] = [
    [opts.localModelPath, 'option'],
    [config.localModelPath, 'config'],
    [envValue && envValue.trim() !== '' ? envValue : undefined, 'env'],
  ];
  const hit = chosen.find(([p]) => p !== undefined && p !== '');
  if (hit) {
    const local = path.resolve(hit[0]!);
    return {
      modelId: id,
      localModelPath: local,
      localDir: path.join(local, id),
      allowRemote: opts.allowRemote ?? config.allowRemote ?? false,
      source: hit[1],
      remoteBase: remote(id),
    };
  }
  const local = path.resolve(defaultLocal);
  return {
    modelId: id,
    localModelPath: undefined,
    localDir: path.join(local, id),
    allowRemote: opts.allowRemote ?? config.allowRemote ?? true,
    source: 'transformers.js default',
    remoteBase: remote(id),
  };
}

const ONNX_FP32 = 'onnx/text_model.onnx';
const ONNX_QUANT = 'onnx/text_model_quantized.onnx';
const BASE_FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json'];
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json'];
const MODEL_CONFIG_FILES = ['config.json'];

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Minimal views of the transformers.js objects we use (its .d.ts types are loose). */
interface TjsTensor {
  dims: number[];
  data: Float32Array | BigInt64Array;
}
interface Tokenizer {
  encode(text: string): number[];
  decode(ids: number[], opts?: { skip_special_tokens?: boolean }): string;
  pad_token_id?: number;
}
interface TextModel {
  (inputs: { input_ids: TjsTensor }): Promise<Record<string, TjsTensor>>;
  config: Record<string, unknown>;
  dispose(): Promise<unknown>;
}

/** transformers.js' `env` is global: loads that set it run one at a time and restore it. */
let envLock: Promise<unknown> = Promise.resolve();

function describeSource(loc: ClipModelLocation, idField: 'modelId' | 'tokenizerId'): string {
  return {
    option: 'the folder given by the localModelPath option (--local-models)',
    config: 'the folder given by config.localModelPath',
    env: `the folder given by ${LOCAL_MODELS_ENV}`,
    'model path': `the folder given as ${idField}`,
    'transformers.js default': "transformers.js' default local folder",
  }[loc.source];
}

/**
 * The model's files are missing. `separateTokenizer`: the tokenizer comes from elsewhere, so
 * only config.json and the ONNX file are the model's.
 */
function missingModelError(config: ClipTextEncoderConfig, loc: ClipModelLocation, wanted: string[], cause?: string, separateTokenizer = false): Error {
  const lines = wanted.map((f) => {
    const p = path.join(loc.localDir, f);
    return `  ${p} (${isFile(p) ? 'found' : 'missing'})`;
  });
  const from = describeSource(loc, 'modelId');
  const layout = separateTokenizer ? 'config.json,onnx/text_model.onnx' : 'config.json,tokenizer.json,tokenizer_config.json,onnx/text_model.onnx';
  const remoteLine = loc.allowRemote
    ? `and then tried the Hugging Face hub: ${loc.remoteBase}/{${wanted.join(',')}}${cause ? `, which failed: ${cause}` : ''}`
    : `Downloads from the Hugging Face hub are off (${loc.source === 'transformers.js default' ? 'allowRemote is false' : 'a local model folder was given; allowRemote: true would allow them'}).`;
  return new Error(
    [
      `CLIP text model '${config.modelId}' could not be loaded. Looked for these files in ${from}:`,
      ...lines,
      remoteLine,
      'To provide it, either:',
      `  - allow hub access (internet, no local folder or allowRemote: true) so transformers.js downloads '${config.modelId}', or`,
      `  - put the files in a folder in the transformers.js layout <dir>/${config.modelId}/{${layout}}`,
      `    and pass <dir> with --local-models <dir> (localModelPath) or the environment variable ${LOCAL_MODELS_ENV}=<dir>.`,
      '  For offline tests, `npx tsx scripts/make-tiny-clip.ts --out <dir>/tiny-random-clip --tokenizer <CLIP tokenizer folder>`',
      '  writes a tiny CLIP-architecture model with random, NOT pretrained weights.',
    ].join('\n'),
  );
}

/**
 * The tokenizer (tokenizerId, separate from the model) is missing: names every path tried (local
 * folder, transformers.js' cache, the hub) and the two ways to provide it.
 */
function missingTokenizerError(config: ClipTextEncoderConfig, loc: ClipModelLocation, cacheDir: string | undefined, cause?: string): Error {
  const id = config.tokenizerId ?? config.modelId;
  const tried: string[] = [];
  for (const f of TOKENIZER_FILES) {
    const p = path.join(loc.localDir, f);
    tried.push(`  ${p} (${isFile(p) ? 'found' : 'missing'})`);
  }
  if (cacheDir)
    for (const f of TOKENIZER_FILES) tried.push(`  ${path.join(cacheDir, f)} (transformers.js cache, ${isFile(path.join(cacheDir, f)) ? 'found' : 'missing'})`);
  const lines = [
    `CLIP tokenizer '${id}' (for the text model '${config.modelId}') could not be loaded. Looked for it in ${describeSource(loc, 'tokenizerId')}${cacheDir ? " and transformers.js' download cache" : ''}:`,
    ...tried,
  ];
  if (loc.allowRemote) {
    lines.push(
      `and then on the Hugging Face hub: ${TOKENIZER_FILES.map((f) => `${loc.remoteBase}/${f}`).join(', ')}${cause ? `, which failed: ${cause}` : ''}`,
    );
  } else {
    lines.push(
      `Downloads from the Hugging Face hub are off (${loc.source === 'transformers.js default' ? 'allowRemote is false' : loc.source === 'model path' ? 'the tokenizer is a folder path' : 'a local model folder was given; allowRemote: true would allow them'}).`,
    );
  }
  if (loc.source === 'model path') {
    lines.push(
      `To provide it, put tokenizer.json, or vocab.json + merges.txt, with tokenizer_config.json (a CLIP tokenizer, e.g. from ${DEFAULT_CLIP_MODEL_ID}) in ${loc.localDir}.`,
    );
  } else {
    lines.push(
      'To provide it, either:',
      `  - allow internet access (no local models folder, or allowRemote: true) so transformers.js downloads it from ${HUB}/${id}, or`,
      `  - pass --local-models <dir> (localModelPath) or set ${LOCAL_MODELS_ENV}=<dir>, pointing at a folder with ${id}/{${TOKENIZER_FILES.join(',')}}`,
      `    (the tokenizer files suffice; no model weights are needed there).`,
    );
  }
  return new Error(lines.join('\n'));
}

/** Picks the ONNX file: explicit setting, else what exists locally / in the cache, else quantized. */
function chooseQuantized(explicit: boolean | undefined, dirs: string[]): boolean {
  if (explicit !== undefined) return explicit;
  for (const d of dirs) {
    if (isFile(path.join(d, ONNX_QUANT))) return true;
    if (isFile(path.join(d, ONNX_FP32))) return false;
  }
  return true;
}

/** Counters for tests and logs. */
export interface ClipEncoderStats {
  /** ONNX forward runs. */
  modelRuns: number;
  /** Prompts computed by the model. */
  promptsComputed: number;
  /** Prompts served from the cache. */
  cacheHits: number;
}

export interface TokenizedPrompts {
  /** [B][maxLength] padded ids. */
  ids: number[][];
  /** Token count of each prompt before truncation, start/end included. */
  lengths: number[];
  truncated: boolean[];
}

export class ClipTextEncoder implements ConditionEncoder {
  readonly kind = 'clip' as const;
  readonly contextLength: number;
  readonly stats: ClipEncoderStats = { modelRuns: 0, promptsComputed: 0, cacheHits: 0 };
  private readonly cache = new Map<string, Float32Array>();
  private emptyPrompt?: Float32Array;
  private disposed = false;
  private readonly eos: number;
  private readonly pad: number;
  private contextDimValue = 0;
  /**
   * The transformers CLIPTextModel folder (config.json + model.safetensors) this encoder's ONNX
   * model was converted from, when it was (pipeline/folder.ts sets it; saving copies that folder).
   */
  sourceFolder?: string;

  private constructor(
    readonly config: ClipTextEncoderConfig,
    readonly location: ClipModelLocation,
    /** Whether onnx/text_model_quantized.onnx was loaded. */
    readonly quantized: boolean,
    private readonly tokenizer: Tokenizer,
    private readonly model: TextModel,
    private readonly warn: (m: string) => void,
    private readonly cacheSize: number,
    private readonly batchSize: number,
    /** Where the tokenizer came from (the same as `location` unless config.tokenizerId says otherwise). */
    readonly tokenizerLocation: ClipModelLocation = location,
  ) {
    this.contextLength = config.maxLength;
    const special = tokenizer.encode('');
    if (special.length !== 2)
      throw new Error(`CLIP tokenizer '${config.tokenizerId ?? config.modelId}': expected "" to encode as [start, end], got [${special.join(', ')}]`);
    this.eos = special[1]; // special[0] is the start token, which tokenize() keeps from encode()
    this.pad = tokenizer.pad_token_id ?? this.eos;
  }

  /**
   * Whether the text model declares itself not pretrained (the tiny random CLIP of tiny-clip.ts
   * marks its config so), to be said wherever the model is used.
   */
  get notPretrained(): boolean {
    return typeof this.model.config._txt2img_note === 'string' && this.model.config._txt2img_note.startsWith('random weights');
  }

  /** D: the model's hidden size (known after load). */
  get contextDim(): number {
    return this.contextDimValue;
  }

  /** Loads tokenizer and model (see the file comment for where it looks). */
  static async load(config: ClipTextEncoderConfig, opts: ClipLoadOptions = {}): Promise<ClipTextEncoder> {
    const cfg = validateClipTextEncoderConfig(config);
    for (const [k, v] of [
      ['cacheSize', opts.cacheSize],
      ['batchSize', opts.batchSize],
    ] as const) {
      if (v !== undefined && (!Number.isInteger(v) || v < (k === 'batchSize' ? 1 : 0))) {
        throw new Error(`CLIP load option '${k}' must be an integer >= ${k === 'batchSize' ? 1 : 0}, got ${JSON.stringify(v)}`);
      }
    }
    const tjs = await import('@xenova/transformers');
    const env = tjs.env as unknown as {
      localModelPath: string;
      allowRemoteModels: boolean;
      allowLocalModels: boolean;
      useFSCache: boolean;
      cacheDir: string | null;
    };
    const loc = resolveClipModelLocation(cfg, opts, env.localModelPath);
    const tokLoc = resolveClipTokenizerLocation(cfg, opts, env.localModelPath);
    // One place for both (the usual case): checked and reported together, as one folder.
    const together =
      tokLoc.modelId === loc.modelId && tokLoc.localModelPath === loc.localModelPath && tokLoc.allowRemote === loc.allowRemote && tokLoc.source === loc.source;
    // transformers.js consults its download cache BEFORE the local folder, so a cached hub copy
    // with the same id would shadow a folder the user named: with a named folder, no cache.
    const cacheFor = (l: ClipModelLocation) => {
      const use = l.source === 'transformers.js default' && env.useFSCache;
      return { use, dir: use && env.cacheDir ? path.join(env.cacheDir, l.modelId) : undefined };
    };
    const modelCache = cacheFor(loc);
    const tokCache = cacheFor(tokLoc);
    const quantized = chooseQuantized(opts.quantized ?? cfg.quantized, [loc.localDir, ...(modelCache.dir ? [modelCache.dir] : [])]);
    const onnxFile = quantized ? ONNX_QUANT : ONNX_FP32;
    const wanted = [...BASE_FILES, onnxFile];
    const modelWanted = together ? wanted : [...MODEL_CONFIG_FILES, onnxFile];
    const present = (l: ClipModelLocation, cacheDir: string | undefined, f: string) =>
      isFile(path.join(l.localDir, f)) || (cacheDir !== undefined && isFile(path.join(cacheDir, f)));
    if (!loc.allowRemote && modelWanted.some((f) => !present(loc, modelCache.dir, f))) {
      const explicit = opts.quantized ?? cfg.quantized;
      const both = [ONNX_FP32, ONNX_QUANT];
      throw missingModelError(
        cfg,
        loc,
        explicit === undefined ? [...(together ? BASE_FILES : MODEL_CONFIG_FILES), ...both] : modelWanted,
        undefined,
        !together,
      );
    }
    // A tokenizer folder given as a path is read by us (tokenizer.json, or vocab.json + merges.txt).
    const folderTokenizer = tokLoc.source === 'model path';
    if (
      folderTokenizer
        ? !hasClipTokenizerFiles(tokLoc.localDir)
        : !together && !tokLoc.allowRemote && TOKENIZER_FILES.some((f) => !present(tokLoc, tokCache.dir, f))
    ) {
      throw missingTokenizerError(cfg, tokLoc, tokCache.dir);
    }

    type Stage = 'tokenizer' | 'model';
    const run = async () => {
      const saved = {
        localModelPath: env.localModelPath,
        allowRemoteModels: env.allowRemoteModels,
        allowLocalModels: env.allowLocalModels,
        useFSCache: env.useFSCache,
      };
      // Each from_pretrained call gets its own location settings.
      const withEnv = async <T>(
        l: ClipModelLocation,
        useCache: boolean,
        f: (common: { revision: string; local_files_only: boolean }) => Promise<T>,
      ): Promise<T> => {
        env.localModelPath = l.localModelPath ?? saved.localModelPath;
        env.allowRemoteModels = l.allowRemote;
        env.allowLocalModels = true;
        env.useFSCache = useCache;
        return f({ revision: cfg.revision ?? 'main', local_files_only: !l.allowRemote });
      };
      let stage: Stage = 'tokenizer';
      try {
        const tokenizer = (folderTokenizer
          ? await loadClipTokenizerFolder(tokLoc.localDir)
          : await withEnv(tokLoc, tokCache.use, (common) => tjs.AutoTokenizer.from_pretrained(tokLoc.modelId, common))) as unknown as Tokenizer;
        stage = 'model';
        const model = (await withEnv(loc, modelCache.use, (common) =>
          tjs.CLIPTextModelWithProjection.from_pretrained(loc.modelId, { ...common, quantized }),
        )) as unknown as TextModel;
        return { tokenizer, model };
      } catch (e) {
        throw { stage, error: e };
      } finally {
        Object.assign(env, saved);
      }
    };
    const pending = envLock.then(run, run);
    envLock = pending.catch(() => undefined);
    let loaded: { tokenizer: Tokenizer; model: TextModel };
    try {
      loaded = await pending;
    } catch (failure) {
      const { stage, error: e } = failure as { stage: Stage; error: unknown };
      const msg = (e as Error)?.message ?? String(e);
      const notFound = /not found|could not locate|fetch failed|ENOTFOUND|EAI_AGAIN|ECONNREFUSED|network|404/i.test(msg);
      if (notFound) {
        const cause = msg.split('\n')[0];
        if (stage === 'tokenizer' && !together) throw missingTokenizerError(cfg, tokLoc, tokCache.dir, cause);
        throw missingModelError(cfg, loc, together ? wanted : modelWanted, cause, !together);
      }
      if (stage === 'tokenizer') {
        throw new Error(`CLIP tokenizer '${tokLoc.modelId}' (${tokLoc.localDir}) failed to load: ${msg}`);
      }
      const file = path.join(loc.localDir, onnxFile);
      const size = isFile(file) ? `, ${statSync(file).size} bytes` : '';
      throw new Error(
        `CLIP text model '${cfg.modelId}' (${file}${size}) failed to load: ${msg}. ` +
          'If onnxruntime could not create a session, the ONNX file is likely incomplete or corrupt (re-download or regenerate it); ' +
          "transformers.js' warning above has onnxruntime's own message.",
      );
    }

    const enc = new ClipTextEncoder(
      cfg,
      loc,
      quantized,
      loaded.tokenizer,
      loaded.model,
      opts.warn ?? ((m) => console.warn(m)),
      opts.cacheSize ?? 256,
      opts.batchSize ?? 16,
      tokLoc,
    );
    try {
      await enc.checkModel();
    } catch (e) {
      enc.dispose();
      throw e;
    }
    return enc;
  }

  /** Runs "" once: learns the hidden size, checks outputs and positions, warms the cache. */
  private async checkModel(): Promise<void> {
    const textConfig = (this.model.config.text_config ?? this.model.config) as Record<string, unknown>;
    const maxPos = textConfig.max_position_embeddings;
    if (typeof maxPos === 'number' && this.config.maxLength > maxPos) {
      throw new Error(
        `CLIP text encoder config: maxLength ${this.config.maxLength} exceeds the model's max_position_embeddings (${maxPos}) for '${this.config.modelId}'`,
      );
    }
    const [row] = await this.compute(['']);
    this.emptyPrompt = row;
    if (this.config.contextDim !== undefined && this.config.contextDim !== this.contextDimValue) {
      throw new Error(
        `CLIP text encoder config: contextDim is ${this.config.contextDim}, but the model '${this.config.modelId}' has hidden size ${this.contextDimValue}; ` +
          'the U-Net was built for another text encoder',
      );
    }
  }

  /**
   * Token ids padded to maxLength. Prompts over maxLength tokens (start/end included) keep their
   * first maxLength - 1 tokens and the end token, and are reported in `truncated`.
   */
  tokenize(prompts: string[]): TokenizedPrompts {
    const L = this.config.maxLength;
    const out: TokenizedPrompts = { ids: [], lengths: [], truncated: [] };
    for (const p of prompts) {
      let ids = this.tokenizer.encode(p);
      out.lengths.push(ids.length);
      const cut = ids.length > L;
      if (cut) ids = [...ids.slice(0, L - 1), this.eos];
      while (ids.length < L) ids.push(this.pad);
      out.ids.push(ids);
      out.truncated.push(cut);
    }
    return out;
  }

  private checkPrompts(inputs: unknown, who: string): string[] {
    if (this.disposed) throw new Error(`CLIP text encoder: ${who} after dispose()`);
    if (!Array.isArray(inputs) || inputs.length === 0)
      throw new Error(`CLIP text encoder: ${who} needs a non-empty array of prompts, got ${JSON.stringify(inputs)}`);
    inputs.forEach((p, i) => {
      if (typeof p !== 'string') {
        throw new Error(`CLIP text encoder: prompt ${i} is ${typeof p} ${JSON.stringify(p)}; prompts must be strings (class labels need the label encoder)`);
      }
    });
    return inputs as string[];
  }

  /** Runs the model on prompts (no cache); returns one [T * D] row per prompt. */
  private async compute(prompts: string[]): Promise<Float32Array[]> {
    const tjs = await import('@xenova/transformers');
    const L = this.config.maxLength;
    const rows: Float32Array[] = [];
    for (let start = 0; start < prompts.length; start += this.batchSize) {
      const chunk = prompts.slice(start, start + this.batchSize);
      const tok = this.tokenize(chunk);
      tok.truncated.forEach((cut, i) => {
        if (!cut) return;
        const droppedIds = this.tokenizer.encode(chunk[i]).slice(L - 1, -1);
        const words = this.tokenizer.decode(droppedIds, { skip_special_tokens: true }).trim().split(/\s+/);
        const shown = words.length > 6 ? `${words.slice(0, 6).join(' ')} ... (${words.length} words)` : words.join(' ');
        this.warn(
          `CLIP text encoder: a prompt of ${tok.lengths[i]} tokens (start/end included) is over the limit of ${L}; its last ${droppedIds.length} tokens are dropped: "${shown}"`,
        );
      });
      const ids = new BigInt64Array(chunk.length * L);
      tok.ids.forEach((r, b) => {
        r.forEach((id, t) => {
          ids[b * L + t] = BigInt(id);
        });
      });
      const input = new tjs.Tensor('int64', ids, [chunk.length, L]) as unknown as TjsTensor;
      const out = await this.model({ input_ids: input });
      this.stats.modelRuns++;
      const hs = out.last_hidden_state;
      if (hs?.dims.length !== 3 || hs.dims[0] !== chunk.length || hs.dims[1] !== L || !(hs.data instanceof Float32Array)) {
        throw new Error(
          `CLIP text model '${this.config.modelId}' must return last_hidden_state float32 [${chunk.length}, ${L}, hidden]; ` +
            `got ${hs ? `[${hs.dims.join(', ')}]` : `only ${Object.keys(out).join(', ')}`}`,
        );
      }
      const D = hs.dims[2];
      if (this.contextDimValue === 0) this.contextDimValue = D;
      else if (D !== this.contextDimValue) throw new Error(`CLIP text model returned hidden size ${D}, earlier ${this.contextDimValue}`);
      for (let b = 0; b < chunk.length; b++) rows.push(hs.data.slice(b * L * D, (b + 1) * L * D));
      this.stats.promptsComputed += chunk.length;
    }
    return rows;
  }

  private lookup(prompt: string): Float32Array | undefined {
    if (prompt === '' && this.emptyPrompt) return this.emptyPrompt;
    const hit = this.cache.get(prompt);
    if (hit) {
      this.cache.delete(prompt); // refresh LRU position
      this.cache.set(prompt, hit);
    }
    return hit;
  }

  private remember(prompt: string, row: Float32Array): void {
    if (prompt === '') {
      this.emptyPrompt = row;
      return;
    }
    if (this.cacheSize === 0) return;
    this.cache.set(prompt, row);
    while (this.cache.size > this.cacheSize) this.cache.delete(this.cache.keys().next().value as string);
  }

  /** Prompts -> context [B, maxLength, hidden] (no mask: all positions attended, as SD). */
  async encode(inputs: string[] | number[]): Promise<Conditioning> {
    const prompts = this.checkPrompts(inputs, 'encode');
    const rows = new Map<string, Float32Array>();
    const todo: string[] = [];
    for (const p of prompts) {
      if (rows.has(p) || todo.includes(p)) continue;
      const hit = this.lookup(p);
      if (hit) {
        rows.set(p, hit);
        this.stats.cacheHits++;
      } else todo.push(p);
    }
    if (todo.length > 0) {
      const computed = await this.compute(todo);
      todo.forEach((p, i) => {
        rows.set(p, computed[i]);
        this.remember(p, computed[i]);
      });
    }
    if (this.disposed) throw new Error('CLIP text encoder: disposed during encode');
    const T = this.contextLength;
    const D = this.contextDim;
    const data = new Float32Array(prompts.length * T * D);
    prompts.forEach((p, b) => {
      data.set(rows.get(p)!, b * T * D);
    });
    return { context: tf.tensor3d(data, [prompts.length, T, D]) };
  }

  /** The empty prompt "" repeated: what classifier-free guidance uses. */
  async unconditional(batch: number): Promise<Conditioning> {
    checkBatch(batch, 'CLIP text encoder unconditional');
    return this.encode(new Array<string>(batch).fill(''));
  }

  /** Drops cached embeddings (the empty prompt's too). */
  clearCache(): void {
    this.cache.clear();
    this.emptyPrompt = undefined;
  }

  /** Releases the ONNX session and the cache. Holds no tf tensors. */
  /**
   * Copies the files this encoder was loaded from into a pipeline folder, so the folder carries
   * its text model and tokenizer and works offline wherever it is moved: the model's config.json
   * and ONNX file into `<dir>/<modelSubdir>`, the tokenizer's files into `<dir>/<tokenizerSubdir>`.
   * Returns the config with ids relative to `<dir>/text_encoder`, or, for a part loaded from the
   * hub or its cache (no local files), keeps that part's id (the caller says so).
   */
  embedFiles(
    dir: string,
    modelSubdir = 'text_encoder/clip',
    tokenizerSubdir = 'tokenizer',
  ): { config: ClipTextEncoderConfig; embedded: { model: boolean; tokenizer: boolean } } {
    const config: ClipTextEncoderConfig = { ...this.config, quantized: this.quantized };
    delete config.localModelPath;
    const copy = (from: string, files: string[], to: string): boolean => {
      if (!files.every((f) => isFile(path.join(from, f)))) return false;
      for (const f of files) {
        mkdirSync(path.dirname(path.join(to, f)), { recursive: true });
        copyFileSync(path.join(from, f), path.join(to, f));
      }
      return true;
    };
    const relative = (sub: string) => `./${path.relative('text_encoder', sub).split(path.sep).join('/')}`.replace(/^\.\/\.\.\//, '../');
    const model = copy(this.location.localDir, [...MODEL_CONFIG_FILES, this.quantized ? ONNX_QUANT : ONNX_FP32], path.join(dir, modelSubdir));
    if (model) config.modelId = relative(modelSubdir);
    const tokFrom = this.tokenizerLocation.localDir;
    const optional = ['special_tokens_map.json', 'vocab.json', 'merges.txt', 'LICENSE-openai-clip'].filter((f) => isFile(path.join(tokFrom, f)));
    const tokenizer = copy(tokFrom, [...TOKENIZER_FILES, ...optional], path.join(dir, tokenizerSubdir));
    if (tokenizer) config.tokenizerId = relative(tokenizerSubdir);
    else if (model && config.tokenizerId === undefined) config.tokenizerId = this.tokenizerLocation.modelId;
    return { config, embedded: { model, tokenizer } };
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.clearCache();
    this.model.dispose().catch(() => undefined);
  }
}

/** Outputs of runClipTextModel. */
export interface ClipTextModelOutputs {
  /** [B, S, hidden] row-major. */
  lastHiddenState: Float32Array;
  /** [B, projection] row-major (a model without projection: the pooled state [B, hidden]). */
  textEmbeds: Float32Array;
  hidden: number;
}

/**
 * Runs the ONNX text model of a model folder (config.json + onnx/text_model.onnx, or the
 * `_quantized` file with quantized: true) on token ids [B][S], without a tokenizer: for checking
 * an exported or converted model against another. Offline; no transformers.js cache.
 */
export async function runClipTextModel(modelDir: string, ids: number[][], opts: { quantized?: boolean } = {}): Promise<ClipTextModelOutputs> {
  const B = ids.length;
  const S = ids[0]?.length ?? 0;
  if (B === 0 || S === 0 || ids.some((r) => r.length !== S)) throw new Error('runClipTextModel: ids must be a non-empty rectangular [B][S] array');
  const dir = path.resolve(modelDir);
  const file = path.join(dir, opts.quantized ? ONNX_QUANT : ONNX_FP32);
  for (const f of [path.join(dir, 'config.json'), file]) if (!isFile(f)) throw new Error(`CLIP text model folder ${dir}: ${f} is missing`);
  const tjs = await import('@xenova/transformers');
  const env = tjs.env as unknown as { localModelPath: string; allowRemoteModels: boolean; allowLocalModels: boolean; useFSCache: boolean };
  const run = async () => {
    const saved = {
      localModelPath: env.localModelPath,
      allowRemoteModels: env.allowRemoteModels,
      allowLocalModels: env.allowLocalModels,
      useFSCache: env.useFSCache,
    };
    try {
      Object.assign(env, { localModelPath: path.dirname(dir), allowRemoteModels: false, allowLocalModels: true, useFSCache: false });
      return (await tjs.CLIPTextModelWithProjection.from_pretrained(path.basename(dir), {
        quantized: opts.quantized ?? false,
        local_files_only: true,
      })) as unknown as TextModel;
    } finally {
      Object.assign(env, saved);
    }
  };
  const pending = envLock.then(run, run);
  envLock = pending.catch(() => undefined);
  const model = await pending;
  try {
    const input = new tjs.Tensor('int64', BigInt64Array.from(ids.flat().map((v) => BigInt(v))), [B, S]) as unknown as TjsTensor;
    const out = await model({ input_ids: input });
    const hs = out.last_hidden_state;
    // A CLIPTextModel graph (no projection, clip-folder.ts) gives its pooled state instead.
    const te = out.text_embeds ?? out.pooler_output;
    if (!hs || !(hs.data instanceof Float32Array) || !te || !(te.data instanceof Float32Array)) {
      throw new Error(`CLIP text model ${file} must return float32 last_hidden_state and text_embeds (or pooler_output); got ${Object.keys(out).join(', ')}`);
    }
    return { lastHiddenState: hs.data, textEmbeds: te.data, hidden: hs.dims[2] };
  } finally {
    await model.dispose();
  }
}

/**
 * The CLIP tokenizer of a folder, read by us rather than by transformers.js' file lookup, so a
 * folder with only vocab.json + merges.txt (SD-1.5's repository) works (clip-folder.ts).
 */
export async function loadClipTokenizerFolder(dir: string): Promise<unknown> {
  const { tokenizerJson, tokenizerConfig } = readClipTokenizerFiles(dir);
  const tjs = await import('@xenova/transformers');
  return new tjs.CLIPTokenizer(tokenizerJson, tokenizerConfig);
}

/** Validates the config and loads the encoder (see ClipTextEncoder.load). */
export async function loadClipTextEncoder(config: Partial<ClipTextEncoderConfig> = {}, opts: ClipLoadOptions = {}): Promise<ClipTextEncoder> {
  return ClipTextEncoder.load(validateClipTextEncoderConfig({ kind: 'clip', ...config }), opts);
}

/** Reads a model folder's config.json hidden size without loading it (undefined if unknown). */
export function readClipHiddenSize(modelDir: string): number | undefined {
  const p = path.join(modelDir, 'config.json');
  if (!existsSync(p)) return undefined;
  const c = JSON.parse(readFileSync(p, 'utf8')) as { hidden_size?: number; text_config?: { hidden_size?: number } };
  return c.text_config?.hidden_size ?? c.hidden_size;
}
