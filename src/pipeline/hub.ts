/**
 * `--model org/name`: a pipeline on the Hugging Face hub, downloaded once into txt2img's cache
 * (`<cache>/hub/org--name/`, cache = TXT2IMG_CACHE or ~/.cache/txt2img) with progress, then
 * loaded like any folder. Only the files a pipeline run needs are fetched: model_index.json, each
 * component's config, its safetensors weights (full precision, else the fp16 variant) and the
 * tokenizer files. A folder is used once complete (a marker file is written last).
 */
import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline as streamPipeline } from 'node:stream/promises';
import { txt2imgCacheDir } from '../text/clip-folder.js';

export const HUB_ENDPOINT_ENV = 'HF_ENDPOINT';
const COMPLETE = '.txt2img-complete';

export function hubEndpoint(environment: Record<string, string | undefined> = process.env): string {
  return (environment[HUB_ENDPOINT_ENV] ?? 'https://huggingface.co').replace(/\/+$/, '');
}

/** Whether `s` reads as a hub id (`org/name`) rather than a path. */
export function isHubModelId(s: string): boolean {
  return /^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/.test(s) && !s.includes('..') && !s.startsWith('./');
}

export function hubCacheFolder(id: string, cacheDir = txt2imgCacheDir()): string {
  return path.join(cacheDir, 'hub', id.replace('/', '--'));
}

const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'vocab.json', 'merges.txt', 'special_tokens_map.json'];
const WEIGHTS: Record<string, string[]> = {
  unet: ['diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.fp16.safetensors'],
  vae: ['diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.fp16.safetensors'],
  text_encoder: ['model.safetensors', 'model.fp16.safetensors'],
  label_encoder: ['diffusion_pytorch_model.safetensors'],
};

/**
 * The repository files to fetch for a model_index.json, given the repository's file list: per
 * component its config (scheduler: scheduler_config.json; tokenizer: its files) and the first
 * weights variant present. A component without weights in safetensors is an error naming it.
 */
export function selectHubFiles(id: string, index: Record<string, unknown>, files: string[]): string[] {
  const have = new Set(files);
  const out = ['model_index.json'];
  for (const [comp, v] of Object.entries(index)) {
    if (comp.startsWith('_') || !Array.isArray(v) || v[0] === null) continue;
    if (comp === 'scheduler') out.push('scheduler/scheduler_config.json');
    else if (comp === 'tokenizer') out.push(...TOKENIZER_FILES.map((f) => `tokenizer/${f}`).filter((f) => have.has(f)));
    else {
      out.push(`${comp}/config.json`);
      const w = (WEIGHTS[comp] ?? []).map((f) => `${comp}/${f}`).find((f) => have.has(f));
      if (!w) throw new Error(`hub model '${id}' has no safetensors weights for ${comp}/ (looked for ${(WEIGHTS[comp] ?? ['?']).join(', ')})`);
      out.push(w);
    }
  }
  const missing = out.filter((f) => f !== 'model_index.json' && !f.startsWith('tokenizer/') && !have.has(f));
  if (missing.length) throw new Error(`hub model '${id}' lacks ${missing.join(', ')}`);
  return out;
}

export interface ResolveModelOptions {
  cacheDir?: string;
  environment?: Record<string, string | undefined>;
  /** The HTTP client (default globalThis.fetch). */
  fetch?: typeof fetch;
  log?: (line: string) => void;
}

function unreachable(id: string, endpoint: string, e: unknown): Error {
  const cause = (e as { cause?: { code?: string; message?: string } })?.cause;
  const why = cause?.code ?? cause?.message ?? (e as Error)?.message ?? String(e);
  return new Error(`cannot download '${id}': the Hugging Face hub (${endpoint}) could not be reached (${why}); pass a local pipeline folder to --model`);
}

/**
 * A --model value as a folder: an existing path as it is; a hub id (`org/name`) as its cache
 * folder, downloaded first when not complete there.
 */
export async function resolveModel(model: string, opts: ResolveModelOptions = {}): Promise<string> {
  if (existsSync(model) || !isHubModelId(model)) return model;
  const dir = hubCacheFolder(model, opts.cacheDir ?? txt2imgCacheDir(opts.environment));
  if (existsSync(path.join(dir, COMPLETE))) return dir;
  await downloadPipeline(model, dir, opts);
  return dir;
}

async function downloadPipeline(id: string, dir: string, opts: ResolveModelOptions): Promise<void> {
  const endpoint = hubEndpoint(opts.environment);
  const get = opts.fetch ?? globalThis.fetch;
  const log = opts.log ?? ((l: string) => console.error(l));
  const request = async (url: string): Promise<Response> => {
    let res: Response;
    try {
      res = await get(url);
    } catch (e) {
      throw unreachable(id, endpoint, e);
    }
    if (res.status === 401 || res.status === 404) throw new Error(`hub model '${id}' was not found at ${endpoint} (HTTP ${res.status}; private or misspelt?)`);
    if (!res.ok) throw new Error(`cannot download '${id}': ${url} answered HTTP ${res.status}`);
    return res;
  };
  const info = (await (await request(`${endpoint}/api/models/${id}`)).json()) as { siblings?: { rfilename: string }[] };
  const files = (info.siblings ?? []).map((s) => s.rfilename);
  const resolve = (f: string) => `${endpoint}/${id}/resolve/main/${f}`;
  const index = (await (await request(resolve('model_index.json'))).json()) as Record<string, unknown>;
  const wanted = selectHubFiles(id, index, files);
  log(`downloading '${id}' from ${endpoint} into ${dir} (${wanted.length} files)`);
  mkdirSync(dir, { recursive: true });
  for (const f of wanted) {
    const target = path.join(dir, f);
    if (existsSync(target)) continue; // a finished file of an interrupted download (written by rename)
    mkdirSync(path.dirname(target), { recursive: true });
    const res = await request(resolve(f));
    const total = Number(res.headers.get('content-length') ?? 0);
    const part = `${target}.part`;
    let done = 0;
    let last = performance.now();
    const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
    body.on('data', (chunk: Buffer) => {
      done += chunk.length;
      if (performance.now() - last > 2000) {
        last = performance.now();
        log(`  ${f}: ${(done / 1e6).toFixed(1)}${total ? ` / ${(total / 1e6).toFixed(1)}` : ''} MB`);
      }
    });
    try {
      await streamPipeline(body, createWriteStream(part));
    } catch (e) {
      rmSync(part, { force: true });
      throw unreachable(id, endpoint, e);
    }
    if (total && statSync(part).size !== total) throw new Error(`cannot download '${id}': ${f} ended after ${statSync(part).size} of ${total} bytes`);
    renameSync(part, target);
    log(`  ${f}: ${(statSync(target).size / 1e6).toFixed(1)} MB`);
  }
  writeFileSync(path.join(dir, COMPLETE), `${new Date().toISOString()} ${endpoint}/${id}\n`);
}
