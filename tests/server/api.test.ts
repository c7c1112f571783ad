/**
 * `txt2img serve` as AUTOMATIC1111 clients see it: the server started as a user starts it, an A1111
 * client script with the request bodies of A1111's API documentation run against it unchanged,
 * then seeds, grids, caps and errors (FastAPI's 422 shapes, 413, 404, 405), interrupt, a client
 * that leaves, the queue's order, model switching, basic auth and the OpenAPI document.
 */
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../fixtures/captioned.js';
import { runCommand } from '../helpers.js';
import { DEFAULT_MODEL, type ServeProcess, startServe } from './serve-process.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const CLIENT = path.join(here, '..', 'fixtures', 'a1111-client.mjs');

let serve: ServeProcess;
let models: string;

// biome-ignore lint/suspicious/noExplicitAny: JSON from the server, read by the assertions
type Json = Record<string, any>;

async function call(
  method: string,
  route: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: Json; headers: Headers }> {
  const res = await fetch(`${serve.url}${route}`, {
    method,
    headers: { 'Content-Type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: Json;
  try {
    json = JSON.parse(text);
  } catch {
    json = { text };
  }
  return { status: res.status, json, headers: res.headers };
}

const post = (route: string, body?: unknown) => call('POST', route, body);

async function pixels(b64: string): Promise<{ data: Buffer; width: number; height: number }> {
  const { data, info } = await sharp(Buffer.from(b64, 'base64')).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

beforeAll(async () => {
  // Two pipeline folders to switch between: the bundled model, and a copy that differs in one file.
  models = tempDir('serve-models');
  cpSync(DEFAULT_MODEL, path.join(models, 'scenes-a'), { recursive: true });
  cpSync(DEFAULT_MODEL, path.join(models, 'scenes-b'), { recursive: true });
  const idx = path.join(models, 'scenes-b', 'model_index.json');
  const json = JSON.parse(readFileSync(idx, 'utf8'));
  json.notes = [...(json.notes ?? []), 'a copy, to switch to'];
  writeFileSync(idx, JSON.stringify(json, null, 2));
  serve = await startServe([
    '--model',
    path.join(models, 'scenes-a'),
    '--models',
    models,
    '--runtime',
    'tfjs',
    '--max-steps',
    '60',
    '--max-images',
    '8',
    '--max-size',
    '1024',
    '--max-body-mb',
    '1',
  ]);
}, 180_000);

afterAll(async () => {
  await serve?.stop();
});

describe('an A1111 client script, unchanged', () => {
  it("gets images, info, PNG info, models, samplers and options with the documentation's request bodies", async () => {
    const r = await runCommand(process.execPath, [CLIENT, serve.url], { timeout: 300_000 });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout);

    expect(report.guide.status).toBe(200);
    expect(report.guide.keys).toEqual(['images', 'parameters', 'info']);
    expect(report.guide.images).toEqual([{ signature: 'PNG', width: 32, height: 32, bytes: expect.any(Number) }]);
    const info = report.guide.info;
    // every field of A1111's Processed.js()
    for (const k of [
      'prompt',
      'all_prompts',
      'negative_prompt',
      'all_negative_prompts',
      'seed',
      'all_seeds',
      'subseed',
      'all_subseeds',
      'subseed_strength',
      'width',
      'height',
      'sampler_name',
      'cfg_scale',
      'steps',
      'batch_size',
      'restore_faces',
      'face_restoration_model',
      'sd_model_name',
      'sd_model_hash',
      'sd_vae_name',
      'sd_vae_hash',
      'seed_resize_from_w',
      'seed_resize_from_h',
      'denoising_strength',
      'extra_generation_params',
      'index_of_first_image',
      'infotexts',
      'styles',
      'job_timestamp',
      'clip_skip',
      'is_using_inpainting_conditioning',
      'version',
    ])
      expect(info).toHaveProperty(k);
    expect(info).toMatchObject({
      prompt: 'maltese puppy',
      steps: 5,
      sampler_name: 'Euler',
      cfg_scale: 7,
      batch_size: 1,
      index_of_first_image: 0,
      sd_model_name: 'scenes-a',
    });
    expect(Number.isInteger(info.seed) && info.seed >= 0 && info.seed < 4294967294).toBe(true); // seed -1: random, reported
    expect(info.all_seeds).toEqual([info.seed]);
    expect(info.infotexts[0]).toMatch(
      new RegExp(`^maltese puppy\\nSteps: 5, Sampler: Euler, CFG scale: 7, Seed: ${info.seed}, Size: 32x32, Model hash: [0-9a-f]{10}, Model: scenes-a`),
    );

    expect(report.pngInfo.status).toBe(200);
    expect(report.pngInfo.json.info).toBe(info.infotexts[0]);
    expect(report.pngInfo.json.parameters).toMatchObject({
      Prompt: 'maltese puppy',
      'Negative prompt': '',
      Steps: '5',
      Sampler: 'Euler',
      'Size-1': '32',
      'Size-2': '32',
      Seed: String(info.seed),
    });

    expect(report.txt2img.status).toBe(200);
    expect(report.txt2img.images).toEqual([{ signature: 'PNG', width: 512, height: 512, bytes: expect.any(Number) }]);
    expect(report.txt2img.info).toMatchObject({ seed: 1, all_seeds: [1], sampler_name: 'DPM++ 2M', width: 512, height: 512, steps: 20 });
    expect(report.txt2img.parameters).toMatchObject({
      prompt: 'masterpiece, (best quality:1.1), 1girl <lora:lora_model:1>',
      seed: 1,
      steps: 20,
      sampler_name: 'DPM++ 2M',
      send_images: true,
    });

    expect(report.img2img.status).toBe(200);
    expect(report.img2img.images).toEqual([{ signature: 'PNG', width: 512, height: 512, bytes: expect.any(Number) }]);
    expect(report.img2img.info).toMatchObject({ denoising_strength: 0.5, seed: 1 });
    expect(report.img2img.info.infotexts[0]).toContain('Denoising strength: 0.5');
    expect(report.img2img.parameters).toMatchObject({ init_images: null, denoising_strength: 0.5 });

    expect(report.models.json.map((m: Json) => m.model_name)).toEqual(['scenes-a', 'scenes-b']);
    expect(report.models.json[0]).toMatchObject({
      title: expect.stringMatching(/^scenes-a \[[0-9a-f]{10}\]$/),
      hash: expect.stringMatching(/^[0-9a-f]{10}$/),
      config: null,
    });
    expect(report.samplers.names).toEqual(expect.arrayContaining(['Euler', 'Euler a', 'DPM++ 2M Karras', 'UniPC']));
    expect(report.options.status).toBe(200);
    expect(report.options.json).toBeNull();
    expect(report.options.back).toMatchObject({ sd_model_checkpoint: report.models.json[0].title, CLIP_stop_at_last_layers: 2 });
    expect(report.override).toEqual({ status: 200, images: 1 });
    expect(report.progress.keys).toEqual(['progress', 'eta_relative', 'state', 'current_image', 'textinfo']);
    expect(Object.keys(report.progress.state)).toEqual([
      'skipped',
      'interrupted',
      'stopping_generation',
      'job',
      'job_count',
      'job_timestamp',
      'job_no',
      'sampling_step',
      'sampling_steps',
    ]);
    expect(report.interrupt).toEqual({ status: 200, json: {} });
  });
});

describe('seeds, batches and grids as A1111', () => {
  it('batch_size x n_iter images seeded seed + i, a grid in front; an image depends on its seed alone', async () => {
    const r = await post('/sdapi/v1/txt2img', { prompt: 'a blue circle', seed: 100, steps: 6, batch_size: 3, n_iter: 2, sampler_name: 'Euler a' });
    expect(r.status).toBe(200);
    const info = JSON.parse(r.json.info);
    expect(info.all_seeds).toEqual([100, 101, 102, 103, 104, 105]);
    expect(info.index_of_first_image).toBe(1);
    expect(r.json.images.length).toBe(7);
    expect(info.infotexts.length).toBe(7);
    expect(info.infotexts[3]).toContain('Seed: 102,');
    const grid = await pixels(r.json.images[0]);
    expect([grid.width, grid.height]).toEqual([96, 64]); // 3 x 2 cells of 32, no padding
    const alone = await post('/sdapi/v1/txt2img', { prompt: 'a blue circle', seed: 102, steps: 6, sampler_name: 'Euler a' });
    const a = await pixels(alone.json.images[0]);
    const b = await pixels(r.json.images[3]);
    let worst = 0;
    for (let i = 0; i < a.data.length; i++) worst = Math.max(worst, Math.abs(a.data[i] - b.data[i]));
    expect(worst).toBeLessThanOrEqual(2); // the same noise; only float rounding of batch 1 vs 3
  });
});

describe('bad requests: FastAPI shapes, the caps named', () => {
  it('wrong types and malformed JSON are 422s listing every problem', async () => {
    const types = await post('/sdapi/v1/txt2img', { prompt: 'a', steps: 'many', cfg_scale: [1], restore_faces: 'perhaps', styles: 'x' });
    expect(types.status).toBe(422);
    expect(types.json.detail).toEqual([
      { loc: ['body', 'styles'], msg: 'value is not a valid list', type: 'type_error.list' },
      { loc: ['body', 'steps'], msg: 'value is not a valid integer', type: 'type_error.integer' },
      { loc: ['body', 'cfg_scale'], msg: 'value is not a valid float', type: 'type_error.float' },
      { loc: ['body', 'restore_faces'], msg: 'value could not be parsed to a boolean', type: 'type_error.bool' },
    ]);
    const broken = await post('/sdapi/v1/txt2img', '{"prompt": "a", "steps": }');
    expect(broken.status).toBe(422);
    expect(broken.json.detail[0]).toMatchObject({ loc: ['body', expect.any(Number)], type: 'value_error.jsondecode' });
    const notDict = await post('/sdapi/v1/txt2img', [1, 2]);
    expect(notDict.json.detail).toEqual([{ loc: ['body'], msg: 'value is not a valid dict', type: 'type_error.dict' }]);
    const empty = await post('/sdapi/v1/txt2img', '');
    expect(empty.json.detail).toEqual([{ loc: ['body'], msg: 'field required', type: 'value_error.missing' }]);
  });

  it('a request over a cap is a 4xx naming the field, the cap and the flag', async () => {
    const steps = await post('/sdapi/v1/txt2img', { prompt: 'a', steps: 61 });
    expect(steps.status).toBe(422);
    expect(steps.json.detail).toEqual([
      {
        loc: ['body', 'steps'],
        msg: "ensure this value is less than or equal to 60 (this server's --max-steps)",
        type: 'value_error.number.not_le',
        ctx: { limit_value: 60 },
      },
    ]);
    const images = await post('/sdapi/v1/txt2img', { prompt: 'a', batch_size: 3, n_iter: 3 });
    expect(images.json.detail[0]).toMatchObject({
      loc: ['body', 'batch_size'],
      msg: "n_iter x batch_size = 3 x 3 = 9 images; at most 8 per request (this server's --max-images)",
    });
    const size = await post('/sdapi/v1/txt2img', { prompt: 'a', width: 1025 });
    expect(size.json.detail[0]).toMatchObject({ loc: ['body', 'width'], msg: "ensure this value is less than or equal to 1024 (this server's --max-size)" });
    const big = await post('/sdapi/v1/txt2img', { prompt: 'a'.repeat(1_100_000) });
    expect(big.status).toBe(413);
    expect(big.json.detail).toBe("the request body is larger than 1048576 bytes (this server's --max-body-mb)");
  });

  it('what this server cannot do is refused by name, not ignored; unknown samplers and models are 404s', async () => {
    const hr = await post('/sdapi/v1/txt2img', { prompt: 'a', enable_hr: true, restore_faces: true });
    expect(hr.status).toBe(422);
    expect(hr.json.detail.map((d: Json) => d.loc[1])).toEqual(['enable_hr', 'restore_faces']);
    expect(hr.json.detail[0].msg).toBe('not supported by this server: the hires fix is not supported');
    const sampler = await post('/sdapi/v1/txt2img', { prompt: 'a', sampler_name: 'LMS' });
    expect(sampler.status).toBe(404);
    expect(sampler.json.detail).toMatch(/^Sampler not found: A1111 sampler 'LMS' is not implemented/);
    const model = await post('/sdapi/v1/txt2img', { prompt: 'a', override_settings: { sd_model_checkpoint: 'sd_xl_base_1.0' } });
    expect(model.status).toBe(404);
    expect(model.json.detail).toMatch(/^Model not found: 'sd_xl_base_1.0'; available: scenes-a \[/);
    const prompt = await post('/sdapi/v1/txt2img', { prompt: '  ' });
    expect(prompt.json.detail[0]).toMatchObject({ loc: ['body', 'prompt'] });
    expect((await call('GET', '/sdapi/v1/nothing')).json).toEqual({ detail: 'Not Found' });
    const method = await call('GET', '/sdapi/v1/txt2img');
    expect([method.status, method.json]).toEqual([405, { detail: 'Method Not Allowed' }]);
  });

  it('img2img input: missing, undecodable, too large, or a mask of another size', async () => {
    const png = (w: number, h: number, channels: 1 | 3 = 3) =>
      sharp(Buffer.alloc(w * h * channels, 200), { raw: { width: w, height: h, channels } })
        .png()
        .toBuffer();
    const b64 = async (w: number, h: number, c: 1 | 3 = 3) => (await png(w, h, c)).toString('base64');
    expect((await post('/sdapi/v1/img2img', { prompt: 'a' })).json).toEqual({ detail: 'Init image not found' });
    const garbage = await post('/sdapi/v1/img2img', { prompt: 'a', init_images: ['bm90IGFuIGltYWdl'] });
    expect(garbage.json.detail[0]).toMatchObject({ loc: ['body', 'init_images', 0], msg: expect.stringMatching(/^not an image this server can read/) });
    const huge = await post('/sdapi/v1/img2img', { prompt: 'a', init_images: [await b64(1030, 4)] });
    expect(huge.json.detail[0].msg).toBe("the image is 1030x4; its sides may be at most 1024 (this server's --max-size)");
    const mask = await post('/sdapi/v1/img2img', { prompt: 'a', init_images: [await b64(40, 30)], mask: await b64(30, 40, 1) });
    expect(mask.status).toBe(422);
    expect(mask.json.detail[0]).toMatchObject({ loc: ['body', 'mask'], msg: 'the mask is 30x40 but the init image is 40x30; they must be the same size' });
  });
});

describe('the queue', () => {
  it('runs requests in arrival order, each with its own progress; a client that leaves does not stop it', async () => {
    const leaver = new AbortController();
    const first = fetch(`${serve.url}/sdapi/v1/txt2img`, {
      method: 'POST',
      body: JSON.stringify({ prompt: 'a red square', steps: 30, force_task_id: 'leaver' }),
      signal: leaver.signal,
    }).catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 200));
    const second = post('/sdapi/v1/txt2img', { prompt: 'a green star', steps: 10, force_task_id: 'second' });
    await new Promise((r) => setTimeout(r, 200));
    const third = post('/sdapi/v1/txt2img', { prompt: 'a sad face', steps: 10, force_task_id: 'third' });
    await new Promise((r) => setTimeout(r, 200));
    const queued = (await post('/internal/progress', { id_task: 'third' })).json;
    expect(queued).toMatchObject({ active: false, queued: true, completed: false, queue_position: 2 });
    leaver.abort();
    expect(await first).toBeInstanceOf(Error);
    let active: Json = {};
    for (let i = 0; i < 200 && !active.active; i++) {
      active = (await post('/internal/progress', { id_task: 'leaver', id_live_preview: -1 })).json;
      if (!active.active) await new Promise((r) => setTimeout(r, 50));
    }
    expect(active.active).toBe(true); // still running for nobody
    const [b, c] = await Promise.all([second, third]);
    expect([b.status, c.status]).toEqual([200, 200]);
    expect(Number(b.headers.get('x-txt2img-job'))).toBeLessThan(Number(c.headers.get('x-txt2img-job')));
    expect((await post('/internal/progress', { id_task: 'leaver' })).json).toMatchObject({ completed: true, progress: 1 });
    // previews came with the progress
    expect(typeof active.live_preview === 'string' || active.id_live_preview === -1).toBe(true);
  });

  it('interrupt stops the running job between steps: its batch ends early, the later batches never run', async () => {
    const started = Date.now();
    const job = post('/sdapi/v1/txt2img', { prompt: 'a yellow star', steps: 60, n_iter: 4, force_task_id: 'long' });
    let p: Json = {};
    for (let i = 0; i < 400 && !(p.state?.sampling_step >= 3); i++) {
      p = (await call('GET', '/sdapi/v1/progress')).json;
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(p.state.job_count).toBe(4);
    expect(p.current_image).toEqual(expect.any(String)); // the live preview, base64 PNG
    expect((await post('/sdapi/v1/interrupt')).json).toEqual({});
    const r = await job;
    expect(r.status).toBe(200);
    const info = JSON.parse(r.json.info);
    expect(r.json.images.length).toBe(1); // the interrupted batch's image only
    expect(info.all_seeds.length).toBe(4);
    expect(Date.now() - started).toBeLessThan(60_000);
    expect((await call('GET', '/sdapi/v1/progress')).json.progress).toBe(0); // idle again
  });
});

describe('models and options', () => {
  it('switches sd_model_checkpoint between pipeline folders, per request or for good', async () => {
    const list = (await call('GET', '/sdapi/v1/sd-models')).json as Json[];
    const [a, b] = list;
    expect(a.hash).not.toBe(b.hash);
    const once = await post('/sdapi/v1/txt2img', { prompt: 'a red square', steps: 4, override_settings: { sd_model_checkpoint: b.model_name } });
    expect(JSON.parse(once.json.info).sd_model_name).toBe('scenes-b');
    expect((await call('GET', '/sdapi/v1/options')).json.sd_model_checkpoint).toBe(a.title); // restored afterwards
    expect((await post('/sdapi/v1/options', { sd_model_checkpoint: b.title })).status).toBe(200);
    expect((await call('GET', '/sdapi/v1/options')).json.sd_model_checkpoint).toBe(b.title);
    const after = await post('/sdapi/v1/txt2img', { prompt: 'a red square', steps: 4 });
    expect(JSON.parse(after.json.info)).toMatchObject({ sd_model_name: 'scenes-b', sd_model_hash: b.hash });
    const bad = await post('/sdapi/v1/options', { sd_model_checkpoint: 'nope' });
    expect(bad.status).toBe(404);
    const badType = await post('/sdapi/v1/options', { return_grid: 'sometimes' });
    expect(badType.json.detail[0]).toMatchObject({ loc: ['body', 'return_grid'] });
    await post('/sdapi/v1/options', { sd_model_checkpoint: a.title });
  });

  it('serves its OpenAPI document, the docs page and memory figures; no tensors leak across requests', async () => {
    const doc = (await call('GET', '/openapi.json')).json;
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(['/sdapi/v1/txt2img', '/sdapi/v1/img2img', '/sdapi/v1/progress', '/sdapi/v1/options', '/sdapi/v1/png-info']),
    );
    const t2i = doc.components.schemas.StableDiffusionProcessingTxt2Img.properties;
    expect(t2i.steps).toMatchObject({ type: 'integer', default: 50, maximum: 60 });
    expect(t2i.width.default).toBe(32);
    const docs = await fetch(`${serve.url}/docs`);
    expect(docs.headers.get('content-type')).toMatch(/text\/html/);
    const before = (await call('GET', '/sdapi/v1/memory')).json.tfjs.num_tensors;
    await post('/sdapi/v1/txt2img', { prompt: 'a red square', steps: 4, batch_size: 2 });
    const mask = await sharp(Buffer.from(Array.from({ length: 32 * 32 }, (_, i) => (i % 32 > 16 ? 255 : 0))), { raw: { width: 32, height: 32, channels: 1 } })
      .png()
      .toBuffer();
    const init = await sharp(Buffer.alloc(32 * 32 * 3, 90), { raw: { width: 32, height: 32, channels: 3 } })
      .png()
      .toBuffer();
    const inpaint = await post('/sdapi/v1/img2img', {
      prompt: 'a red square',
      steps: 4,
      init_images: [init.toString('base64')],
      mask: mask.toString('base64'),
      inpainting_fill: 2,
    });
    expect(inpaint.status).toBe(200);
    const memory = (await call('GET', '/sdapi/v1/memory')).json;
    expect(memory.tfjs.num_tensors).toBe(before);
    expect(memory.ram.used).toBeGreaterThan(0);
  });
});

describe('--api-auth and --listen', () => {
  it('refuses every route without the credentials and serves them with; --listen binds all interfaces', async () => {
    expect(serve.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/); // the default: loopback only
    const locked = await startServe(['--runtime', 'tfjs', '--api-auth', 'alice:s3cret,bob:pw', '--listen'], { timeout: 180_000 });
    try {
      expect(locked.log()).toMatch(/listening on http:\/\/127\.0\.0\.1:\d+ \(all interfaces, port \d+\) with HTTP basic auth/);
      for (const route of ['/', '/sdapi/v1/samplers', '/openapi.json', '/page/app.js']) {
        const res = await fetch(`${locked.url}${route}`);
        expect(res.status).toBe(401);
        expect(res.headers.get('www-authenticate')).toMatch(/^Basic/);
      }
      const wrong = await fetch(`${locked.url}/sdapi/v1/samplers`, { headers: { Authorization: `Basic ${Buffer.from('alice:nope').toString('base64')}` } });
      expect(wrong.status).toBe(401);
      const ok = await fetch(`${locked.url}/sdapi/v1/samplers`, { headers: { Authorization: `Basic ${Buffer.from('bob:pw').toString('base64')}` } });
      expect(ok.status).toBe(200);
      const page = await fetch(`${locked.url}/`, { headers: { Authorization: `Basic ${Buffer.from('alice:s3cret').toString('base64')}` } });
      expect(await page.text()).toContain('<title>txt2img</title>');
    } finally {
      await locked.stop();
    }
  });
});
