/**
 * Bundles a trained pipeline folder into a self-contained, small folder (the bundled default
 * model, `models/default`), loadable offline:
 *
 *   model_index.json, scheduler/        copied
 *   vae/, unet/ (label_encoder/)        copied; with `fp16` every safetensors file is rewritten
 *                                       as F16 (values rounded to the nearest half)
 *   text_encoder/                       a pipeline in diffusers' format (folder.ts): transformers'
 *                                       CLIPTextModel (config.json + model.safetensors, F16 with
 *                                       `fp16`) and its ONNX conversion (onnx/, token table float16
 *                                       with `fp16`). A pipeline in the earlier format:
 *                                       text_encoder/config.json { modelId: './clip', tokenizerId:
 *                                       '../tokenizer', ... } and text_encoder/clip/ (HF config.json
 *                                       + onnx/text_model.onnx, see writeTinyClipFp16Copy)
 *   tokenizer/                          the CLIP tokenizer the model was trained with, so the
 *                                       bundle loads offline with no setting
 *   README.md                           what it is, that the text encoder is NOT pretrained,
 *                                       and the commands that produced it
 *
 * `quantized: false` is explicit, so no `text_model_quantized.onnx` duplicate is needed. The
 * folder is written under a temporary name and swapped in (replaceDirAtomic).
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { readComponentConfig, readSafetensors, writeSafetensors } from '../checkpoint/io.js';
import { readJson, replaceDirAtomic, tempDirFor, writeJsonAtomic } from '../checkpoint/files.js';
import { DEFAULT_CLIP_MODEL_ID, type ClipTextEncoderConfig, readClipHiddenSize, runClipTextModel, validateClipTextEncoderConfig } from '../text/clip.js';
import { TINY_CLIP_NOTE, writeTinyClipFp16Copy } from '../text/tiny-clip.js';
import { findClipWeights, prepareClipOnnx } from '../text/clip-folder.js';
import { isTransformersConfig } from './folder.js';
import { readModelIndex } from './pipeline.js';
import { VOCABULARY_FILE } from './vocabulary.js';

export interface BundleOptions {
  /** A trained pipeline folder (e.g. runs/scenes/pipeline). */
  pipelineDir: string;
  /** The folder to write (e.g. models/default); replaced atomically if it exists. */
  outDir: string;
  /** Store weights as float16 (F16 safetensors; float16 token embeddings in the ONNX). Default false. */
  fp16?: boolean;
  /**
   * The text model folder (config.json + onnx/text_model.onnx). Default: the pipeline's
   * text_encoder modelId, which must then name a folder (as training on data/tiny-clip writes).
   */
  clipDir?: string;
  /** The tokenizer's hub id, for the README (default Xenova/clip-vit-base-patch32). */
  tokenizerId?: string;
  /**
   * A transformers.js models folder holding `<tokenizerId>/tokenizer.json`: the bundle's tokenizer
   * files must be byte-identical to it (the U-Net learned the token ids of the tokenizer used in
   * training); it is also where the tokenizer comes from when neither the pipeline folder nor the
   * text model folder has one.
   */
  tokenizerCheckDir?: string;
  /** The commands that produced the pipeline, quoted in the README. */
  recipe?: string;
  /** The training run's resolved config (quoted in the README). Default `<pipelineDir>/../config.json` when it exists; false: none. */
  runConfigFile?: string | false;
  /** The bundling command line, quoted in the README (default: reconstructed from the options). */
  command?: string;
  /** Largest allowed difference between the converted and the source text model's outputs (default 1e-2). */
  textModelTolerance?: number;
  log?: (line: string) => void;
}

export interface BundleFile {
  /** Path relative to the bundle folder, '/'-separated. */
  path: string;
  bytes: number;
}

export interface BundleResult {
  outDir: string;
  files: BundleFile[];
  totalBytes: number;
  /** Bytes of what was bundled (pipeline weights and configs plus the text model's config and ONNX). */
  sourceBytes: number;
  /** With fp16: max |difference| of last_hidden_state between the converted and the source text model on fixed token ids. */
  textModelMaxDiff?: number;
  /** Whether the bundled tokenizer was checked against tokenizerCheckDir; undefined without one (a label-conditioned pipeline). */
  tokenizerChecked?: boolean;
}

const CLIP_SUBDIR = 'clip';
/** What transformers.js needs of a tokenizer, and what the slow tokenizers and the licence add. */
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json'];
const TOKENIZER_EXTRA_FILES = ['special_tokens_map.json', 'vocab.json', 'merges.txt', 'LICENSE-openai-clip'];
const WEIGHT_COMPONENTS = ['vae', 'unet', 'label_encoder'];

/** Token id rows the converted text model is checked on: CLIP-like prompts and padding, and ids from all over the vocabulary. */
function checkIds(vocab: number): number[][] {
  const bos = Math.min(49406, vocab - 2);
  const eos = Math.min(49407, vocab - 1);
  const row = (mid: number[]) => {
    const r = [bos, ...mid.slice(0, 75), eos];
    while (r.length < 77) r.push(eos);
    return r;
  };
  return [
    row([320, 1125, 539, 320, 2368].map((v) => v % vocab)), // "a photo of a cat"
    row([]),
    row(Array.from({ length: 75 }, (_, i) => (i * 661 + 7) % bos)),
    row(Array.from({ length: 30 }, (_, i) => (bos - 1 - i * 1597) % bos)),
  ];
}

function filesUnder(dir: string, rel = ''): BundleFile[] {
  const out: BundleFile[] = [];
  for (const name of readdirSync(path.join(dir, rel)).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const st = statSync(path.join(dir, r));
    if (st.isDirectory()) out.push(...filesUnder(dir, r));
    else out.push({ path: r, bytes: st.size });
  }
  return out;
}

function displayPath(p: string): string {
  const rel = path.relative(process.cwd(), p);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : p;
}

function formatBytes(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)} MB` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} kB` : `${n} B`;
}

/** The text model folder the pipeline was trained with (see BundleOptions.clipDir). */
function resolveClipSource(pipelineDir: string, cfg: ClipTextEncoderConfig, clipDir: string | undefined): string {
  const encDir = path.join(pipelineDir, 'text_encoder');
  let dir: string;
  if (clipDir !== undefined) dir = path.resolve(clipDir);
  else if (cfg.modelId.startsWith('./') || cfg.modelId.startsWith('../')) dir = path.resolve(encDir, cfg.modelId);
  else if (path.isAbsolute(cfg.modelId) || existsSync(path.join(cfg.modelId, 'config.json'))) dir = path.resolve(cfg.modelId);
  else {
    throw new Error(
      `the pipeline's text model '${cfg.modelId}' is a hub id, not a folder; the bundle needs its files: pass clipDir (--clip DIR) with config.json and onnx/text_model.onnx`,
    );
  }
  if (!existsSync(path.join(dir, 'config.json')) || !existsSync(clipOnnxFile(dir))) {
    throw new Error(`text model folder ${dir} lacks config.json or onnx/text_model.onnx (or onnx/text_model_quantized.onnx)`);
  }
  return dir;
}

/** A text model folder's ONNX graph: text_model.onnx, else the one under the quantized name. */
function clipOnnxFile(dir: string): string {
  const fp32 = path.join(dir, 'onnx', 'text_model.onnx');
  const quant = path.join(dir, 'onnx', 'text_model_quantized.onnx');
  return existsSync(fp32) || !existsSync(quant) ? fp32 : quant;
}

/** Copies a component folder's files; with fp16, safetensors files are rewritten as F16. */
function copyComponent(src: string, dst: string, fp16: boolean): void {
  mkdirSync(dst, { recursive: true });
  for (const f of readdirSync(src)) {
    const from = path.join(src, f);
    if (!statSync(from).isFile() || f.startsWith('.')) continue;
    if (fp16 && f.endsWith('.safetensors')) {
      const { tensors, metadata } = readSafetensors(from);
      writeSafetensors(path.join(dst, f), tensors, metadata, { dtype: 'F16' });
    } else copyFileSync(from, path.join(dst, f));
  }
}

function readme(o: {
  opts: BundleOptions;
  index: ReturnType<typeof readModelIndex>;
  clipSrc: string;
  clipHf: Record<string, unknown>;
  tokenizerId: string;
  files: BundleFile[];
  textModelMaxDiff?: number;
  runConfig?: { file: string; text: string };
  command: string;
}): string {
  const gen = o.clipHf._txt2img_generator as Record<string, unknown> | undefined;
  const tc = (o.clipHf.text_config ?? o.clipHf) as Record<string, unknown>;
  const tiny = isTinyClip(o.clipHf);
  const hf = isTransformersConfig(o.clipHf) && o.clipHf.model_type === 'clip_text_model';
  const fp16 = o.opts.fp16 === true;
  const total = o.files.reduce((a, f) => a + f.bytes, 0);
  const L: string[] = [];
  // Named after its folder: models/default is "txt2img default model", models/mnist "txt2img mnist model".
  L.push(`# txt2img ${path.basename(path.resolve(o.opts.outDir))} model`, '');
  const clip = o.index.conditioning === 'clip';
  L.push(
    `A small ${clip ? 'text' : 'label'}-to-image latent diffusion pipeline (a txt2img pipeline folder, diffusers layout): ${o.index.imageSize}x${o.index.imageSize} images,`,
    `a KL VAE, a U-Net with cross-attention to ${clip ? 'a CLIP-architecture text encoder' : 'a learned class-label embedding'}, trained ${o.index.trainedSteps ?? '?'} U-Net steps`,
    `with conditioning dropout ${o.index.conditioningDropout}.${clip ? ' It is what `npx txt2img "a smiling face"` uses.' : ''}`,
    '',
  );
  if (!clip) {
    // no text encoder
  } else if (tiny) {
    L.push(
      `**The text encoder is NOT pretrained.** \`text_encoder/${hf ? '' : `${CLIP_SUBDIR}/`}\` is a tiny CLIP-architecture text model`,
      `(hidden ${tc.hidden_size}, ${tc.num_hidden_layers} layers, ${tc.num_attention_heads} heads) with random weights` +
        (gen?.seed !== undefined ? ` (seed ${gen.seed}, generated by scripts/make-tiny-clip.ts)` : '') +
        '; its embeddings carry no meaning',
      'beyond what the U-Net learned from the training captions, so prompts unlike those captions give arbitrary images.',
      '',
    );
  } else {
    L.push(`The text encoder in \`text_encoder/${hf ? '' : `${CLIP_SUBDIR}/`}\` is a copy of ${displayPath(o.clipSrc)}.`, '');
  }
  for (const n of o.index.notes ?? []) L.push(`Note from training: ${n}`);
  if (o.index.notes?.length) L.push('');
  if (clip)
    L.push(
      '## Tokenizer',
      '',
      `Prompts are tokenized with the real CLIP BPE tokenizer of \`${o.tokenizerId}\` (OpenAI CLIP's vocabulary), whose files`,
      hf
        ? "are in `tokenizer/` (a pipeline folder in diffusers' format: `text_encoder/` is transformers' CLIPTextModel), so this folder loads offline as it is."
        : 'are in `tokenizer/` (`tokenizerId: "../tokenizer"` in `text_encoder/config.json`), so this folder loads offline as it is.',
      '',
    );
  L.push('## Weights', '');
  if (fp16) {
    L.push(
      'Stored as float16 to keep the folder small: the safetensors weights are F16 (every value rounded to the nearest',
      `half, ties to even; loading gives back exactly those values as float32)${clip ? ', and the text model keeps its' : '.'}`,
    );
    if (clip && hf)
      L.push(
        'token-embedding table is F16 in text_encoder/model.safetensors (every other text-model weight is float32); the ONNX model transformers.js runs is converted from it on first use (text_encoder/onnx/).',
      );
    else if (clip) L.push('token-embedding table as float16 with a Cast to float32 in the ONNX graph (every other text-model weight is float32).');
    if (o.textModelMaxDiff !== undefined) {
      L.push(`The text model's outputs differ from the float32 original's by at most ${o.textModelMaxDiff.toExponential(2)} on the check inputs.`);
    }
  } else {
    L.push('Stored as float32, exactly as trained.');
  }
  L.push('', '| file | bytes |', '|---|---:|');
  for (const f of o.files) L.push(`| ${f.path} | ${f.bytes} |`);
  L.push(`| (total, without this README) | ${total} |`, '');
  L.push('## How it was made', '');
  if (o.opts.recipe) L.push('```bash', o.opts.recipe.trim(), '```', '');
  L.push('Bundled from the trained pipeline with:', '', '```bash', o.command, '```', '');
  if (o.runConfig) {
    L.push(`The training run's resolved config (\`${displayPath(o.runConfig.file)}\`):`, '', '```json', o.runConfig.text.trim(), '```', '');
  }
  return L.join('\n');
}

/** Writes the bundle (see the file comment); returns its files and sizes. */
export async function bundlePipeline(opts: BundleOptions): Promise<BundleResult> {
  const log = opts.log ?? (() => {});
  const src = path.resolve(opts.pipelineDir);
  const outDir = path.resolve(opts.outDir);
  const fp16 = opts.fp16 === true;
  if (outDir === src || outDir.startsWith(src + path.sep) || src.startsWith(outDir + path.sep)) {
    throw new Error(`the bundle folder ${outDir} must be outside the pipeline folder ${src} (and not contain it)`);
  }
  // (No recoverDir here: a reader must not touch a folder that a training run may be swapping.)
  if (!existsSync(src) || !statSync(src).isDirectory()) throw new Error(`pipeline folder ${src} does not exist`);
  const index = readModelIndex(src);
  const components = ['vae', 'unet', index.conditioning === 'clip' ? 'text_encoder' : 'label_encoder', 'scheduler'];
  const missing = components.filter((c) => !existsSync(path.join(src, c)));
  if (missing.length) throw new Error(`pipeline folder ${src} is incomplete: missing ${missing.map((m) => `${m}/`).join(', ')}`);
  const tokenizerId = opts.tokenizerId ?? DEFAULT_CLIP_MODEL_ID;
  const tolerance = opts.textModelTolerance ?? 1e-2;

  const runConfigFile = opts.runConfigFile === false ? undefined : (opts.runConfigFile ?? path.join(path.dirname(src), 'config.json'));
  let runConfig: { file: string; text: string } | undefined;
  if (runConfigFile !== undefined) {
    if (existsSync(runConfigFile))
      runConfig = { file: path.resolve(runConfigFile), text: JSON.stringify(readJson(runConfigFile, 'training run config'), null, 2) };
    else if (opts.runConfigFile !== undefined) throw new Error(`training run config ${runConfigFile} does not exist`);
  }

  mkdirSync(path.dirname(outDir), { recursive: true });
  const tmp = tempDirFor(outDir);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  let sourceBytes = 0;
  const countSource = (f: string) => (sourceBytes += statSync(f).size);
  try {
    for (const c of [...WEIGHT_COMPONENTS, 'scheduler']) {
      const dir = path.join(src, c);
      if (!existsSync(dir) || (c === 'label_encoder' && index.conditioning !== 'label')) continue;
      copyComponent(dir, path.join(tmp, c), fp16 && c !== 'scheduler');
      for (const f of readdirSync(dir)) if (statSync(path.join(dir, f)).isFile() && !f.startsWith('.')) countSource(path.join(dir, f));
      log(`${c}: ${fp16 && c !== 'scheduler' ? 'weights rewritten as F16' : 'copied'}`);
    }
    for (const f of ['model_index.json', VOCABULARY_FILE]) {
      if (!existsSync(path.join(src, f))) continue;
      copyFileSync(path.join(src, f), path.join(tmp, f));
      countSource(path.join(src, f));
    }

    let clipSrc = '';
    let clipHf: Record<string, unknown> = {};
    let textModelMaxDiff: number | undefined;
    let tokenizerChecked = false;
    const hfText =
      index.conditioning === 'clip' && isTransformersConfig(readComponentConfig(path.join(src, 'text_encoder'), 'text encoder') as Record<string, unknown>);
    if (hfText) {
      // diffusers' format: text_encoder/ (transformers' CLIPTextModel) and tokenizer/ as they are;
      // with fp16 the text weights are F16 too, and their ONNX conversion keeps the token table half.
      const encDir = path.join(src, 'text_encoder');
      const weights = findClipWeights(encDir);
      if (!weights) throw new Error(`pipeline folder ${src}: text_encoder/ has no model.safetensors`);
      clipSrc = encDir;
      clipHf = readJson(path.join(encDir, 'config.json'), 'text model config') as Record<string, unknown>;
      countSource(path.join(encDir, 'config.json'));
      countSource(weights);
      const tokSrc = path.join(src, 'tokenizer');
      if (!existsSync(path.join(tokSrc, 'tokenizer_config.json'))) throw new Error(`no tokenizer to bundle: ${tokSrc} has no tokenizer_config.json`);
      const ref = opts.tokenizerCheckDir !== undefined ? path.join(path.resolve(opts.tokenizerCheckDir), tokenizerId) : undefined;
      if (ref) {
        for (const f of TOKENIZER_FILES) {
          const theirs = path.join(ref, f);
          if (!existsSync(theirs)) throw new Error(`tokenizer check: ${theirs} does not exist (tokenizerCheckDir must hold ${tokenizerId}/${f})`);
          if (!existsSync(path.join(tokSrc, f)) || !readFileSync(path.join(tokSrc, f)).equals(readFileSync(theirs))) {
            throw new Error(
              `tokenizer check: ${path.join(tokSrc, f)} differs from ${theirs}; the model was trained with another tokenizer than '${tokenizerId}' (pass the right tokenizerId)`,
            );
          }
        }
        tokenizerChecked = true;
        log(`tokenizer: ${tokSrc} equals ${ref}`);
      }
      copyComponent(tokSrc, path.join(tmp, 'tokenizer'), false);
      const encOut = path.join(tmp, 'text_encoder');
      mkdirSync(encOut, { recursive: true });
      copyFileSync(path.join(encDir, 'config.json'), path.join(encOut, 'config.json'));
      if (fp16) {
        const { tensors, metadata } = readSafetensors(weights);
        // The token table alone as F16 (nearly all the bytes), as writeClipTextModel does.
        writeSafetensors(path.join(encOut, 'model.safetensors'), tensors, metadata, {
          dtypes: Object.fromEntries([...tensors.keys()].filter((k) => k.endsWith('embeddings.token_embedding.weight')).map((k) => [k, 'F16' as const])),
        });
      } else copyFileSync(weights, path.join(encOut, 'model.safetensors'));
      if (fp16) {
        // The ONNX conversion is not shipped (it is made on first use, next to the weights or in
        // the cache): the check converts into a scratch folder.
        const scratch = `${tmp}.onnx-check`;
        try {
          const converted = prepareClipOnnx(encOut, { inPlace: false, cacheDir: scratch });
          const source = prepareClipOnnx(encDir);
          const vocab = Number(((clipHf.text_config ?? clipHf) as Record<string, unknown>).vocab_size ?? 49408);
          const ids = checkIds(vocab);
          const a = await runClipTextModel(source.modelDir, ids, { quantized: source.quantized });
          const b = await runClipTextModel(converted.modelDir, ids);
          textModelMaxDiff = 0;
          for (let i = 0; i < a.lastHiddenState.length; i++)
            textModelMaxDiff = Math.max(textModelMaxDiff, Math.abs(a.lastHiddenState[i] - b.lastHiddenState[i]));
        } finally {
          rmSync(scratch, { recursive: true, force: true });
        }
        if (!(textModelMaxDiff <= tolerance))
          throw new Error(`the float16 text model's outputs differ from ${encDir}'s by ${textModelMaxDiff}, over the tolerance ${tolerance}`);
        log(`text model: token table F16; outputs within ${textModelMaxDiff.toExponential(2)} of the float32 model`);
      } else log('text model: copied (float32)');
    } else if (index.conditioning === 'clip') {
      const encDir = path.join(src, 'text_encoder');
      const cfg = validateClipTextEncoderConfig(readComponentConfig(encDir, 'text encoder'));
      countSource(path.join(encDir, 'config.json'));
      clipSrc = resolveClipSource(src, cfg, opts.clipDir);
      clipHf = readJson(path.join(clipSrc, 'config.json'), 'text model config') as Record<string, unknown>;
      countSource(path.join(clipSrc, 'config.json'));
      countSource(clipOnnxFile(clipSrc));

      // The tokenizer the model was trained with: the pipeline's own, else the text model's,
      // else the reference folder's; with a reference, it must be byte-identical to it.
      const ref = opts.tokenizerCheckDir !== undefined ? path.join(path.resolve(opts.tokenizerCheckDir), tokenizerId) : undefined;
      const hasTokenizer = (dir: string) => TOKENIZER_FILES.every((f) => existsSync(path.join(dir, f)));
      const tokSrc = [path.join(src, 'tokenizer'), clipSrc, ...(ref ? [ref] : [])].find(hasTokenizer);
      if (!tokSrc) {
        throw new Error(
          `no tokenizer to bundle: neither ${path.join(src, 'tokenizer')} nor the text model folder ${clipSrc} has ${TOKENIZER_FILES.join(' and ')}; pass --local-models DIR (a transformers.js folder holding ${tokenizerId}/)`,
        );
      }
      if (ref) {
        for (const f of TOKENIZER_FILES) {
          const theirs = path.join(ref, f);
          if (!existsSync(theirs)) throw new Error(`tokenizer check: ${theirs} does not exist (tokenizerCheckDir must hold ${tokenizerId}/${f})`);
          if (!readFileSync(path.join(tokSrc, f)).equals(readFileSync(theirs))) {
            throw new Error(
              `tokenizer check: ${path.join(tokSrc, f)} differs from ${theirs}; the model was trained with another tokenizer than '${tokenizerId}' (pass the right tokenizerId)`,
            );
          }
        }
        tokenizerChecked = true;
        log(`tokenizer: ${tokSrc} equals ${ref}`);
      }
      const tokOut = path.join(tmp, 'tokenizer');
      mkdirSync(tokOut, { recursive: true });
      for (const f of [...TOKENIZER_FILES, ...TOKENIZER_EXTRA_FILES])
        if (existsSync(path.join(tokSrc, f))) copyFileSync(path.join(tokSrc, f), path.join(tokOut, f));

      const clipOut = path.join(tmp, 'text_encoder', CLIP_SUBDIR);
      if (fp16) {
        writeTinyClipFp16Copy({ srcDir: clipSrc, outDir: clipOut });
        const vocab = Number(((clipHf.text_config ?? clipHf) as Record<string, unknown>).vocab_size ?? 49408);
        const ids = checkIds(vocab);
        const a = await runClipTextModel(clipSrc, ids, { quantized: clipOnnxFile(clipSrc).endsWith('_quantized.onnx') });
        const b = await runClipTextModel(clipOut, ids);
        textModelMaxDiff = 0;
        for (let i = 0; i < a.lastHiddenState.length; i++) textModelMaxDiff = Math.max(textModelMaxDiff, Math.abs(a.lastHiddenState[i] - b.lastHiddenState[i]));
        if (!(textModelMaxDiff <= tolerance)) {
          throw new Error(`the float16 text model's outputs differ from ${clipSrc}'s by ${textModelMaxDiff}, over the tolerance ${tolerance}`);
        }
        log(`text model: token embeddings as float16; outputs within ${textModelMaxDiff.toExponential(2)} of the float32 model`);
      } else {
        mkdirSync(path.join(clipOut, 'onnx'), { recursive: true });
        copyFileSync(path.join(clipSrc, 'config.json'), path.join(clipOut, 'config.json'));
        copyFileSync(clipOnnxFile(clipSrc), path.join(clipOut, 'onnx', 'text_model.onnx'));
        log('text model: copied (float32)');
      }
      const encCfg: ClipTextEncoderConfig = validateClipTextEncoderConfig({
        kind: 'clip',
        modelId: `./${CLIP_SUBDIR}`,
        tokenizerId: '../tokenizer',
        quantized: false,
        maxLength: cfg.maxLength,
        contextDim: cfg.contextDim ?? readClipHiddenSize(clipSrc),
        ...(cfg.revision !== undefined ? { revision: cfg.revision } : {}),
      });
      writeJsonAtomic(path.join(tmp, 'text_encoder', 'config.json'), {
        _comment: `the text model is ./${CLIP_SUBDIR} (${isTinyClip(clipHf) ? TINY_CLIP_NOTE : 'bundled'}); the tokenizer is ../tokenizer, the CLIP tokenizer of '${tokenizerId}'`,
        ...encCfg,
      });
    }

    const files = filesUnder(tmp);
    const command =
      opts.command ??
      [
        'npx tsx scripts/bundle-model.ts',
        `--pipeline ${displayPath(src)}`,
        `--out ${displayPath(outDir)}`,
        ...(fp16 ? ['--fp16'] : []),
        ...(opts.clipDir ? [`--clip ${displayPath(path.resolve(opts.clipDir))}`] : []),
        ...(opts.tokenizerId ? [`--tokenizer-id ${opts.tokenizerId}`] : []),
      ].join(' ');
    writeFileSync(path.join(tmp, 'README.md'), readme({ opts, index, clipSrc, clipHf, tokenizerId, files, textModelMaxDiff, runConfig, command }));
    replaceDirAtomic(tmp, outDir);
    const all = filesUnder(outDir);
    const totalBytes = all.reduce((a, f) => a + f.bytes, 0);
    log(`wrote ${outDir}: ${all.length} files, ${formatBytes(totalBytes)} (from ${formatBytes(sourceBytes)})`);
    return { outDir, files: all, totalBytes, sourceBytes, textModelMaxDiff, tokenizerChecked: index.conditioning === 'clip' ? tokenizerChecked : undefined };
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

function isTinyClip(hf: Record<string, unknown>): boolean {
  return hf._txt2img_generator !== undefined || String(hf._txt2img_note ?? '').includes(TINY_CLIP_NOTE);
}
