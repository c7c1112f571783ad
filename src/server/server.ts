/**
 * `txt2img serve`: AUTOMATIC1111's HTTP API (/sdapi/v1/...: same routes, request bodies and
 * response shapes, so A1111 clients work unchanged) and a web page, on node:http. One model in
 * memory; requests run one at a time in arrival order (queue.ts); what a request may ask is capped
 * (Limits), and everything it gets wrong is a 4xx in FastAPI's shapes; nothing a client sends
 * stops the server. Binds 127.0.0.1 unless asked otherwise; with `auth` every route needs HTTP
 * basic credentials, as A1111's --api-auth.
 */
import * as tf from '@tensorflow/tfjs';
import { createHash, randomInt, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { currentBackend } from '../backend/index.js';
import { type EditPixels, loadMask, loadRgb, prepareEdit } from '../image/edit.js';
import { parseInfotext } from '../image/infotext.js';
import { readPngText } from '../image/png-text.js';
import type { Runtime } from '../onnx/runtime.js';
import { editInfotext } from '../pipeline/img2img.js';
import { packageRoot } from '../pipeline/text-to-image.js';
import { A1111_SAMPLERS, type A1111Sampler, parseA1111Sampler } from '../schedulers/index.js';
import type { ClipLoadOptions } from '../text/clip.js';
import {
  DEFAULT_LIMITS,
  INTERNAL_PROGRESS_FIELDS,
  type Limits,
  PNG_INFO_FIELDS,
  PROGRESS_QUERY_FIELDS,
  img2imgFields,
  txt2imgFields,
  unsupportedFields,
} from './api-models.js';
import { type GenerationPlan, type RenderOptions, runGeneration } from './generate.js';
import { type ModelEntry, ModelCatalog, ModelHolder, modelTitle, pipelineLoader } from './models.js';
import { DOCS_HTML, openApiDocument } from './openapi.js';
import { JobQueue } from './queue.js';
import { ValidationError, invalid, parseFields, parseJsonBody } from './schema.js';

export interface ServeOptions {
  /** The pipeline folder loaded first. */
  model: string;
  /** A folder of pipeline folders offered by /sdapi/v1/sd-models (besides `model`). */
  models?: string;
  /** Default 127.0.0.1; '0.0.0.0' for --listen. */
  host?: string;
  /** Default 7860 (A1111's); 0 picks a free port. */
  port?: number;
  /** "user:password" pairs; when given, every route needs one of them (HTTP basic). */
  auth?: string[];
  limits?: Partial<Limits>;
  runtime?: Runtime;
  clip?: ClipLoadOptions;
  log?: (line: string) => void;
}

export interface RunningServer {
  url: string;
  port: number;
  server: http.Server;
  /** Stops listening, waits for the running job, frees the model. */
  close(): Promise<void>;
}

/** A response other than 200, with FastAPI's `{"detail": ...}` body. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly detail: unknown,
    readonly headers: Record<string, string> = {},
  ) {
    super(typeof detail === 'string' ? detail : JSON.stringify(detail));
  }
}

function version(): string {
  try {
    return `txt2img ${(JSON.parse(readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version}`;
  } catch {
    return 'txt2img';
  }
}

/**
 * The page's files, served as they are (no build step): src/server/page in a source checkout (so
 * an edit shows at once), else the copy `npm run build` puts beside this module in dist/.
 */
export function pageDir(): string {
  const source = path.join(packageRoot(), 'src', 'server', 'page');
  return existsSync(source) ? source : fileURLToPath(new URL('./page/', import.meta.url));
}

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

/** A base64 image field (a data: URL prefix allowed) as bytes; loc names it in the 422. */
function decodeBase64Image(value: unknown, loc: (string | number)[]): Buffer {
  if (typeof value !== 'string' || value.trim() === '') throw invalid(loc, 'an image is required: a base64 PNG, JPEG or WebP', 'value_error.missing');
  let text = value.trim();
  if (/^https?:\/\//i.test(text)) throw invalid(loc, 'image URLs are not fetched by this server; send the image as base64');
  const m = /^data:[^,]*,/.exec(text);
  if (m) text = text.slice(m[0].length);
  if (!/^[A-Za-z0-9+/=\s_-]*$/.test(text)) throw invalid(loc, 'not base64: characters other than A-Z a-z 0-9 + / =');
  const bytes = Buffer.from(text, 'base64');
  if (bytes.length === 0) throw invalid(loc, 'the image is empty');
  return bytes;
}

/** Checks an image's size before decoding it (no pixel bomb gets decoded). */
async function checkImageSize(bytes: Buffer, loc: (string | number)[], maxSize: number): Promise<void> {
  let meta: sharp.Metadata;
  try {
    meta = await sharp(bytes).metadata();
  } catch (e) {
    throw invalid(loc, `not an image this server can read (PNG, JPEG, WebP, GIF, TIFF, AVIF): ${(e as Error).message}`);
  }
  if (!meta.width || !meta.height) throw invalid(loc, 'the image has no size');
  if (meta.width > maxSize || meta.height > maxSize) {
    throw invalid(
      loc,
      `the image is ${meta.width}x${meta.height}; its sides may be at most ${maxSize} (this server's --max-size)`,
      'value_error.number.not_le',
      {
        limit_value: maxSize,
      },
    );
  }
}

/** A1111's parse_generation_parameters: Prompt, Negative prompt, every parameter, "Size-1"/"Size-2"; Clip skip defaults to "1". */
function generationParameters(text: string): Record<string, string> {
  const info = parseInfotext(text);
  const out: Record<string, string> = { Prompt: info.prompt, 'Negative prompt': info.negativePrompt };
  for (const [k, v] of Object.entries(info.params)) {
    const size = /^(\d+)x(\d+)$/.exec(v);
    if (size) {
      out[`${k}-1`] = size[1];
      out[`${k}-2`] = size[2];
    } else out[k] = v;
  }
  out['Clip skip'] ??= '1';
  return out;
}

export async function startServer(o: ServeOptions): Promise<RunningServer> {
  const log = o.log ?? ((l: string) => console.error(l));
  const limits: Limits = { ...DEFAULT_LIMITS, ...o.limits };
  const runtime = o.runtime ?? 'tfjs';
  const ver = version();
  const catalog = new ModelCatalog(o.model, o.models);
  const holder = new ModelHolder(pipelineLoader(o.clip ? { clip: o.clip } : {}));
  await holder.use(catalog.list()[0]);
  const queue = new JobQueue();
  /** The model that is current once every queued option change has run. */
  let planned: ModelEntry = catalog.list()[0];
  const options: Record<string, unknown> = {
    sd_model_checkpoint: modelTitle(planned),
    sd_checkpoint_hash: planned.sha256,
    samples_format: 'png',
    return_grid: true,
    enable_pnginfo: true,
    live_previews_enable: true,
    show_progress_every_n_steps: 1,
    eta_ddim: 0,
    CLIP_stop_at_last_layers: 1,
    add_model_hash_to_info: true,
    add_model_name_to_info: true,
    add_version_to_infotext: true,
  };
  /** Options whose type is checked on POST; the others are kept as given (A1111 clients set many). */
  const OPTION_TYPES: Record<string, 'string' | 'boolean' | 'number'> = {
    sd_model_checkpoint: 'string',
    samples_format: 'string',
    return_grid: 'boolean',
    enable_pnginfo: 'boolean',
    live_previews_enable: 'boolean',
    show_progress_every_n_steps: 'number',
    eta_ddim: 'number',
    CLIP_stop_at_last_layers: 'number',
    add_model_hash_to_info: 'boolean',
    add_model_name_to_info: 'boolean',
    add_version_to_infotext: 'boolean',
  };
  /** The options that shape images, from the server's options with a request's override_settings on top. */
  const renderOptions = (override: Record<string, unknown>): RenderOptions => {
    const opt = { ...options, ...override };
    return {
      returnGrid: opt.return_grid !== false,
      enablePngInfo: opt.enable_pnginfo !== false,
      livePreviews: opt.live_previews_enable !== false,
      // A1111's -1 means "once per batch": the last step.
      previewEvery: Number(opt.show_progress_every_n_steps) > 0 ? Number(opt.show_progress_every_n_steps) : Number.MAX_SAFE_INTEGER,
      addModelHash: opt.add_model_hash_to_info !== false,
      addModelName: opt.add_model_name_to_info !== false,
      addVersion: opt.add_version_to_infotext !== false,
    };
  };

  const credentials = (o.auth ?? []).map((pair) => {
    const i = pair.indexOf(':');
    if (i <= 0) throw new Error(`--api-auth must be user:password (comma-separated for several), got '${pair}'`);
    return createHash('sha256').update(pair).digest();
  });
  const authorized = (req: http.IncomingMessage): boolean => {
    if (credentials.length === 0) return true;
    const m = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    if (!m) return false;
    const given = createHash('sha256').update(Buffer.from(m[1], 'base64').toString('utf8')).digest();
    let ok = false;
    for (const c of credentials) ok = timingSafeEqual(c, given) || ok; // every pair compared: no timing hint
    return ok;
  };

  const checkOptionValue = (key: string, value: unknown): void => {
    const type = OPTION_TYPES[key];
    if (type && typeof value !== type)
      throw invalid(['body', key], `${type} expected`, `type_error.${type === 'boolean' ? 'bool' : type === 'number' ? 'float' : 'str'}`);
    if (key === 'samples_format' && value !== 'png') throw invalid(['body', key], "only 'png' is supported");
  };
  const findModel = (key: string): ModelEntry => {
    const e = catalog.find(key);
    if (!e) throw new HttpError(404, `Model not found: '${key}'; available: ${catalog.describe()}`);
    return e;
  };

  /** Checks a txt2img / img2img body; everything that can fail without the model fails here. */
  const planRequest = async (kind: 'txt2img' | 'img2img', input: unknown) => {
    const r = parseFields(input, kind === 'txt2img' ? txt2imgFields(limits) : img2imgFields(limits));
    const refused = unsupportedFields(r);
    if (refused.length)
      throw new ValidationError(refused.map(([f, why]) => ({ loc: ['body', f], msg: `not supported by this server: ${why}`, type: 'value_error' })));
    const override = (r.override_settings ?? {}) as Record<string, unknown>;
    for (const [k, v] of Object.entries(override)) {
      try {
        checkOptionValue(k, v);
      } catch (e) {
        if (e instanceof ValidationError) throw new ValidationError(e.detail.map((d) => ({ ...d, loc: ['body', 'override_settings', ...d.loc.slice(1)] })));
        throw e;
      }
    }
    const entry = typeof override.sd_model_checkpoint === 'string' ? findModel(override.sd_model_checkpoint) : planned;
    // A1111: sampler_name, else sampler_index; A1111 1.9's separate schedule type joins the name.
    let samplerName = String(r.sampler_name || r.sampler_index || 'Euler');
    const schedule = r.scheduler === null ? 'automatic' : String(r.scheduler).trim().toLowerCase();
    if (schedule === 'karras' && !/karras$/i.test(samplerName)) samplerName += ' Karras';
    else if (schedule !== 'automatic' && schedule !== 'karras')
      throw invalid(['body', 'scheduler'], `schedule type '${r.scheduler}' is not supported; allowed: 'Automatic', 'Karras'`);
    let sampler: A1111Sampler;
    try {
      sampler = parseA1111Sampler(samplerName);
    } catch (e) {
      throw new HttpError(404, `Sampler not found: ${(e as Error).message}`);
    }
    let batchSize = r.batch_size as number;
    let pixels: EditPixels | undefined;
    const width = (r.width as number | null) ?? entry.imageSize;
    const height = (r.height as number | null) ?? entry.imageSize;
    if (kind === 'img2img') {
      const inits = r.init_images as string[] | null;
      if (!inits || inits.length === 0) throw new HttpError(404, 'Init image not found');
      // A1111: one init image serves the whole batch; several make the batch.
      if (inits.length > 1) {
        if (inits.length > batchSize) throw invalid(['body', 'init_images'], `bad number of images passed: ${inits.length}; expecting ${batchSize} or less`);
        batchSize = inits.length;
      }
      const initBytes = inits.map((s, i) => decodeBase64Image(s, ['body', 'init_images', i]));
      for (const [i, b] of initBytes.entries()) await checkImageSize(b, ['body', 'init_images', i], limits.maxSize);
      const images = await Promise.all(initBytes.map((b, i) => loadRgb(b, `init_images[${i}]`)));
      let mask: Awaited<ReturnType<typeof loadMask>> | undefined;
      if (r.mask !== null && r.mask !== '') {
        const maskBytes = decodeBase64Image(r.mask, ['body', 'mask']);
        await checkImageSize(maskBytes, ['body', 'mask'], limits.maxSize);
        mask = await loadMask(maskBytes);
      }
      const blur = r.mask_blur as number | null;
      try {
        pixels = await prepareEdit({
          images,
          mask,
          width,
          height,
          resizeMode: r.resize_mode as 0 | 1 | 2,
          maskBlurX: blur ?? (r.mask_blur_x as number),
          maskBlurY: blur ?? (r.mask_blur_y as number),
          maskInvert: r.inpainting_mask_invert === 1,
          inpaintFullRes: r.inpaint_full_res as boolean,
          inpaintFullResPadding: r.inpaint_full_res_padding as number,
          fill: r.inpainting_fill as 0 | 1 | 2 | 3,
        });
      } catch (e) {
        throw invalid(['body', mask ? 'mask' : 'init_images'], (e as Error).message);
      }
    }
    const count = batchSize * (r.n_iter as number);
    if (count > limits.maxImages) {
      throw invalid(
        ['body', 'batch_size'],
        `n_iter x batch_size = ${r.n_iter} x ${batchSize} = ${count} images; at most ${limits.maxImages} per request (this server's --max-images)`,
        'value_error.number.not_le',
        { limit_value: limits.maxImages },
      );
    }
    const prompt = String(r.prompt);
    if (prompt.trim() === '') throw invalid(['body', 'prompt'], 'the prompt is empty: this model draws what the prompt says');
    // A1111: seed -1 is random, from [0, 4294967294); image i gets seed + i.
    const seed = (r.seed as number) === -1 ? randomInt(0, 4294967294) : (r.seed as number);
    const subseed = (r.subseed as number) === -1 ? randomInt(0, 4294967294) : (r.subseed as number);
    const strength = r.denoising_strength as number;
    const plan: GenerationPlan = {
      kind,
      prompt,
      negativePrompt: String(r.negative_prompt ?? ''),
      styles: (r.styles as string[] | null) ?? [],
      sampler,
      steps: r.steps as number,
      cfgScale: r.cfg_scale as number,
      eta: (r.eta as number | null) ?? Number(override.eta_ddim ?? options.eta_ddim ?? 0),
      width,
      height,
      batchSize,
      nIter: r.n_iter as number,
      seeds: Array.from({ length: count }, (_, i) => seed + i),
      subseeds: Array.from({ length: count }, (_, i) => subseed + i),
      denoisingStrength: kind === 'img2img' ? strength : 0,
      edit: pixels && {
        pixels,
        fill: r.inpainting_fill as 0 | 1 | 2 | 3,
        extra: editInfotext({
          strength,
          mask: pixels.mask !== undefined,
          maskBlur: (r.mask_blur as number | null) ?? (r.mask_blur_x as number),
          fill: r.inpainting_fill as 0 | 1 | 2 | 3,
          inpaintFullRes: r.inpaint_full_res as boolean,
          padding: r.inpaint_full_res_padding as number,
          maskInvert: r.inpainting_mask_invert === 1,
          resizeMode: r.resize_mode as 0 | 1 | 2,
        }),
      },
    };
    const parameters = { ...r, seed: r.seed, batch_size: batchSize };
    if (kind === 'img2img' && !r.include_init_images) Object.assign(parameters, { init_images: null, mask: null });
    return { r, plan, entry, override, parameters };
  };

  const generate = async (kind: 'txt2img' | 'img2img', body: unknown, res: http.ServerResponse) => {
    const { r, plan, entry, override, parameters } = await planRequest(kind, body);
    // A model trained with fewer timesteps than asked for cannot take the steps: a 422, before the queue.
    const T = holder.pipeline?.schedulerConfig.numTrainTimesteps ?? Number.MAX_SAFE_INTEGER;
    if ((r.steps as number) > T) {
      throw invalid(['body', 'steps'], `ensure this value is less than or equal to ${T} (the model's training steps)`, 'value_error.number.not_le', {
        limit_value: T,
      });
    }
    const job = queue.create(kind, typeof r.force_task_id === 'string' && r.force_task_id ? r.force_task_id : undefined);
    res.setHeader('X-Txt2img-Job', String(job.seq));
    const result = await queue.run(job, async () => {
      const previous = holder.entry!;
      const pipe = await holder.use(entry);
      try {
        return await runGeneration(pipe, entry, plan, job, { options: renderOptions(override), runtime, version: ver, log });
      } finally {
        // override_settings last for this request only unless told otherwise (A1111's restore).
        if (override.sd_model_checkpoint !== undefined) {
          if (r.override_settings_restore_afterwards !== false) await holder.use(previous);
          else setCurrentModel(entry);
        }
      }
    });
    return { images: r.send_images === false ? [] : result.images.map((b) => b.toString('base64')), parameters, info: JSON.stringify(result.info) };
  };

  const setCurrentModel = (e: ModelEntry) => {
    options.sd_model_checkpoint = modelTitle(e);
    options.sd_checkpoint_hash = e.sha256;
  };

  const idleState = () => ({
    skipped: false,
    interrupted: false,
    stopping_generation: false,
    job: '',
    job_count: 0,
    job_timestamp: queue.last?.timestamp ?? '0',
    job_no: 0,
    sampling_step: 0,
    sampling_steps: 0,
  });

  const queueText = () => (queue.queued.length ? `${queue.queued.length} more job(s) in the queue` : null);

  type Handler = (ctx: { req: http.IncomingMessage; res: http.ServerResponse; url: URL; body: () => Promise<unknown> }) => Promise<unknown>;
  const routes: Record<string, Partial<Record<'GET' | 'POST', Handler>>> = {
    '/sdapi/v1/txt2img': { POST: async ({ body, res }) => generate('txt2img', await body(), res) },
    '/sdapi/v1/img2img': { POST: async ({ body, res }) => generate('img2img', await body(), res) },
    '/sdapi/v1/progress': {
      GET: async ({ url }) => {
        const q = parseFields(Object.fromEntries(url.searchParams), PROGRESS_QUERY_FIELDS, 'query');
        const job = queue.current;
        if (!job || job.kind === 'options') return { progress: 0, eta_relative: 0, state: idleState(), current_image: null, textinfo: queueText() };
        const preview = q.skip_current_image ? undefined : await job.preview();
        return {
          progress: job.progress(),
          eta_relative: job.eta(),
          state: job.stateDict(),
          current_image: preview ? preview.png.toString('base64') : null,
          textinfo: job.textinfo ?? queueText(),
        };
      },
    },
    '/internal/progress': {
      POST: async ({ body }) => {
        const q = parseFields(await body(), INTERNAL_PROGRESS_FIELDS);
        const found = typeof q.id_task === 'string' ? queue.find(q.id_task) : undefined;
        if (!found) return { active: false, queued: false, completed: false, id_live_preview: -1, textinfo: 'Waiting...' };
        const { job, state } = found;
        if (state === 'queued') {
          const ahead = queue.queued.indexOf(job) + (queue.current ? 1 : 0);
          return { active: false, queued: true, completed: false, id_live_preview: -1, textinfo: `In queue: ${ahead} job(s) ahead`, queue_position: ahead };
        }
        const preview = q.live_preview !== false ? await job.preview() : undefined;
        const fresh = preview && preview.id !== q.id_live_preview;
        return {
          active: state === 'active',
          queued: false,
          completed: state === 'done',
          progress: job.progress(),
          eta: job.eta(),
          live_preview: fresh ? `data:image/png;base64,${preview.png.toString('base64')}` : null,
          id_live_preview: preview ? preview.id : -1,
          textinfo: job.textinfo,
          queue_position: 0,
        };
      },
    },
    '/sdapi/v1/interrupt': {
      POST: async () => {
        if (queue.current && queue.current.kind !== 'options') queue.current.interrupted = true;
        return {};
      },
    },
    '/sdapi/v1/skip': {
      POST: async () => {
        if (queue.current && queue.current.kind !== 'options') queue.current.skipped = true;
        return {};
      },
    },
    '/sdapi/v1/samplers': {
      GET: async () => A1111_SAMPLERS.map((s) => ({ name: s.name, aliases: [...s.aliases], options: s.useKarrasSigmas ? { scheduler: 'karras' } : {} })),
    },
    '/sdapi/v1/schedulers': {
      GET: async () => [
        { name: 'automatic', label: 'Automatic', aliases: null, default_rho: -1, need_inner_model: false },
        { name: 'karras', label: 'Karras', aliases: null, default_rho: 7, need_inner_model: false },
      ],
    },
    '/sdapi/v1/sd-models': {
      GET: async () => catalog.list().map((e) => ({ title: modelTitle(e), model_name: e.name, hash: e.hash, sha256: e.sha256, filename: e.dir, config: null })),
    },
    '/sdapi/v1/refresh-checkpoints': {
      POST: async () => {
        catalog.refresh();
        return null;
      },
    },
    '/sdapi/v1/options': {
      GET: async () => ({ ...options }),
      POST: async ({ body }) => {
        const b = await body();
        parseFields(b, {}); // a dict, or FastAPI's 422
        const given = b as Record<string, unknown>;
        for (const [k, v] of Object.entries(given)) checkOptionValue(k, v);
        const entry = typeof given.sd_model_checkpoint === 'string' ? findModel(given.sd_model_checkpoint) : undefined;
        const before = planned;
        if (entry) planned = entry;
        const job = queue.create('options');
        try {
          await queue.run(job, async () => {
            if (entry) {
              await holder.use(entry);
              setCurrentModel(entry);
            }
            const { sd_model_checkpoint: _m, ...rest } = given;
            Object.assign(options, rest);
          });
        } catch (e) {
          if (planned === entry) planned = before; // the model did not load: the old one stays
          throw e;
        }
        return null;
      },
    },
    '/sdapi/v1/png-info': {
      POST: async ({ body }) => {
        const q = parseFields(await body(), PNG_INFO_FIELDS);
        const bytes = decodeBase64Image(q.image, ['body', 'image']);
        let chunks: { keyword: string; text: string }[] = [];
        try {
          chunks = readPngText(bytes);
        } catch {
          await checkImageSize(bytes, ['body', 'image'], Number.MAX_SAFE_INTEGER); // a readable non-PNG has no text chunks
        }
        const info = chunks.find((c) => c.keyword === 'parameters')?.text ?? '';
        const items = Object.fromEntries(chunks.filter((c) => c.keyword !== 'parameters').map((c) => [c.keyword, c.text]));
        return { info, items, parameters: info ? generationParameters(info) : {} };
      },
    },
    '/sdapi/v1/memory': {
      GET: async () => {
        const rss = process.memoryUsage().rss;
        const m = tf.memory();
        return {
          ram: { free: os.freemem(), used: rss, total: os.totalmem() },
          cuda: { error: `no CUDA memory: this server computes on ${currentBackend()?.name ?? 'the CPU'}` },
          tfjs: { num_tensors: m.numTensors, num_bytes: m.numBytes },
        };
      },
    },
    '/openapi.json': { GET: async () => openApiDocument(limits, planned.imageSize, ver) },
  };

  const staticFiles = (): Map<string, string> => {
    const dir = pageDir();
    const files = new Map<string, string>([['/', path.join(dir, 'index.html')]]);
    if (existsSync(dir)) for (const f of readdirSync(dir)) files.set(`/page/${f}`, path.join(dir, f));
    return files;
  };
  const pages = staticFiles();

  const send = (res: http.ServerResponse, status: number, payload: unknown, headers: Record<string, string> = {}) => {
    if (res.writableEnded || res.destroyed) return; // the client left: its job ran anyway
    const text = JSON.stringify(payload);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
    res.end(text);
  };

  const readBody = (req: http.IncomingMessage): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const tooBig = () => new HttpError(413, `the request body is larger than ${limits.maxBody} bytes (this server's --max-body-mb)`, { Connection: 'close' });
      const declared = Number(req.headers['content-length']);
      if (declared > limits.maxBody) {
        req.resume(); // drained, not kept
        reject(tooBig());
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      let over = false;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > limits.maxBody) {
          if (!over) reject(tooBig());
          over = true;
          chunks.length = 0;
        } else if (!over) chunks.push(c);
      });
      req.on('error', reject);
      req.on('end', () => {
        if (over) return;
        const text = Buffer.concat(chunks).toString('utf8');
        if (text.trim() === '') reject(new ValidationError([{ loc: ['body'], msg: 'field required', type: 'value_error.missing' }]));
        else {
          try {
            resolve(parseJsonBody(text));
          } catch (e) {
            reject(e);
          }
        }
      });
    });

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const t0 = performance.now();
    res.on('finish', () => {
      if (res.statusCode >= 400) log(`${req.method} ${req.url} ${res.statusCode} (${((performance.now() - t0) / 1000).toFixed(2)} s)`);
    });
    if (!authorized(req)) {
      send(res, 401, { detail: 'Incorrect username or password' }, { 'WWW-Authenticate': 'Basic realm="txt2img"' });
      req.resume();
      return;
    }
    const url = new URL(req.url ?? '/', 'http://localhost');
    const page = pages.get(url.pathname);
    if (page && (req.method === 'GET' || req.method === 'HEAD')) {
      const data = readFileSync(page);
      res.writeHead(200, {
        'Content-Type': CONTENT_TYPES[path.extname(page)] ?? 'application/octet-stream',
        'Content-Length': data.length,
        'Cache-Control': 'no-cache',
      });
      res.end(req.method === 'HEAD' ? undefined : data);
      return;
    }
    if (url.pathname === '/docs' && req.method === 'GET') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(DOCS_HTML);
      return;
    }
    const route = routes[url.pathname];
    if (!route) {
      req.resume();
      send(res, 404, { detail: 'Not Found' });
      return;
    }
    const handler = route[req.method as 'GET' | 'POST'];
    if (!handler) {
      req.resume();
      send(res, 405, { detail: 'Method Not Allowed' }, { Allow: Object.keys(route).join(', ') });
      return;
    }
    let body: Promise<unknown> | undefined;
    const payload = await handler({ req, res, url, body: () => (body ??= readBody(req)) });
    if (!body) req.resume();
    send(res, 200, payload, { 'X-Process-Time': ((performance.now() - t0) / 1000).toFixed(4) });
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (e instanceof ValidationError) send(res, 422, { detail: e.detail });
      else if (e instanceof HttpError) send(res, e.status, { detail: e.detail }, e.headers);
      else {
        // A1111's exception handler: the error's name and message, status 500.
        const err = e instanceof Error ? e : new Error(String(e));
        log(`error in ${req.method} ${req.url}: ${err.message}`);
        send(res, 500, { error: err.name, detail: '', body: '', errors: err.message });
      }
    });
  });
  // Long generations are fine; a client that never finishes sending its request is not.
  server.requestTimeout = 120_000;
  server.headersTimeout = 30_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 7860, o.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const host = o.host ?? '127.0.0.1';
  const url = `http://${host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host}:${port}`;
  return {
    url,
    port,
    server,
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      await queue.run(queue.create('options'), async () => undefined);
      holder.dispose();
    },
  };
}
