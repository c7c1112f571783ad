/**
 * Pipeline folders in diffusers' format (src/pipeline/folder.ts): model_index.json, the scheduler
 * config, text_encoder/ as transformers' CLIPTextModel and tokenizer/; the earlier txt2img format
 * still loads and converts; label pipelines; --latents; hub ids (the hub is not reachable here).
 */
import * as tf from '@tensorflow/tfjs';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { createServer as createHttpServer } from 'node:http';
import { type AddressInfo, createServer } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { encodeSafetensors } from '../../src/checkpoint/safetensors.js';
import { getPngText } from '../../src/image/png-text.js';
import { convertPipelineFolder } from '../../src/pipeline/convert.js';
import { readModelIndex } from '../../src/pipeline/folder.js';
import { hubCacheFolder, isHubModelId, resolveModel, selectHubFiles } from '../../src/pipeline/hub.js';
import { latentsToNHWC, parseNpy, readLatentsFile } from '../../src/pipeline/latents.js';
import { type GenerateOptions, Txt2ImgPipeline } from '../../src/pipeline/pipeline.js';
import { runTxt2Img } from '../../src/pipeline/txt2img.js';
import { Generator } from '../../src/random/generator.js';
import { createScheduler } from '../../src/schedulers/index.js';
import { loadClipTextEncoder } from '../../src/text/clip.js';
import { LabelEncoder } from '../../src/text/label.js';
import { UNet2DCondition } from '../../src/unet/unet2d-condition.js';
import { AutoencoderKL } from '../../src/vae/autoencoder-kl.js';
import { tempDir } from '../fixtures/captioned.js';
import { makeTinyModel } from '../text/shared.js';
import { PEER_UNET_CONFIG, PEER_VAE_CONFIG } from '../unet/peer-fixture.js';
import { maxAbsDiff } from '../helpers.js';

const UNET = { ...PEER_UNET_CONFIG, contextDim: 16, contextLength: 77 };
const SCHED = { type: 'ddim' as const, numTrainTimesteps: 100, betaSchedule: 'scaled-linear' as const, betaStart: 0.00085, betaEnd: 0.012 };
const GEN: Omit<GenerateOptions, 'inputs'> = { guidanceScale: 3, steps: 3, seed: 7 };

let tiny: ReturnType<typeof makeTinyModel>;
let root: string;
let pipeDir: string;
let want: Float32Array;

async function image(dir: string, opts: Partial<GenerateOptions> = {}, warn?: (m: string) => void): Promise<Float32Array> {
  const pipe = await Txt2ImgPipeline.load(dir, { warn, log: () => {} });
  try {
    const x = await pipe.generate({ ...GEN, inputs: ['a red square'], ...opts });
    const data = (await x.data()) as Float32Array;
    x.dispose();
    return data;
  } finally {
    pipe.dispose();
  }
}

beforeAll(async () => {
  await initBackend({ backend: process.env.TXT2IMG_BACKEND ?? 'wasm', quiet: true });
  tiny = makeTinyModel('clip', { hidden: 16, layers: 1, heads: 2, quantizedCopy: false });
  root = tempDir('pipefolder');
  const enc = await loadClipTextEncoder({ modelId: tiny.result.outDir, quantized: false });
  const pipe = new Txt2ImgPipeline(
    new AutoencoderKL(PEER_VAE_CONFIG, new Generator(1)),
    new UNet2DCondition(UNET, new Generator(2)),
    enc,
    createScheduler(SCHED).config,
    { conditioning: 'clip', conditioningDropout: 0.1, imageSize: 32, trainedSteps: 3, notes: ['a test pipeline'] },
  );
  const x = await pipe.generate({ ...GEN, inputs: ['a red square'] });
  want = (await x.data()) as Float32Array;
  x.dispose();
  pipeDir = path.join(root, 'sd');
  await pipe.save(pipeDir);
  pipe.dispose();
}, 120_000);

afterAll(() => tiny?.cleanup());

describe("a pipeline folder in diffusers' format", () => {
  it('has the files and keys StableDiffusionPipeline.save_pretrained writes, our facts under _txt2img', () => {
    expect(readdirSync(pipeDir).sort()).toEqual(['model_index.json', 'scheduler', 'text_encoder', 'tokenizer', 'unet', 'vae']);
    const index = JSON.parse(readFileSync(path.join(pipeDir, 'model_index.json'), 'utf8'));
    expect(index).toEqual({
      _class_name: 'StableDiffusionPipeline',
      _diffusers_version: '0.40.0.dev0',
      _txt2img: { version: 2, conditioning: 'clip', conditioningDropout: 0.1, imageSize: 32, trainedSteps: 3, notes: ['a test pipeline'] },
      feature_extractor: [null, null],
      image_encoder: [null, null],
      requires_safety_checker: false,
      safety_checker: [null, null],
      scheduler: ['diffusers', 'DDIMScheduler'],
      text_encoder: ['transformers', 'CLIPTextModel'],
      tokenizer: ['transformers', 'CLIPTokenizer'],
      unet: ['diffusers', 'UNet2DConditionModel'],
      vae: ['diffusers', 'AutoencoderKL'],
    });
    expect(Object.keys(index)).toEqual(Object.keys(index).sort());
    const sched = JSON.parse(readFileSync(path.join(pipeDir, 'scheduler', 'scheduler_config.json'), 'utf8'));
    expect(sched).toMatchObject({
      _class_name: 'DDIMScheduler',
      num_train_timesteps: 100,
      beta_schedule: 'scaled_linear',
      beta_start: 0.00085,
      set_alpha_to_one: true,
    });
    expect(sched.numTrainTimesteps).toBeUndefined();
    expect(JSON.parse(readFileSync(path.join(pipeDir, 'text_encoder', 'config.json'), 'utf8'))).toMatchObject({
      architectures: ['CLIPTextModel'],
      hidden_size: 16,
      _txt2img_note: expect.stringMatching(/^random weights, not pretrained/),
    });
    expect(existsSync(path.join(pipeDir, 'text_encoder', 'model.safetensors'))).toBe(true);
    expect(readdirSync(path.join(pipeDir, 'tokenizer')).sort()).toEqual(
      ['LICENSE-openai-clip', 'merges.txt', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json', 'vocab.json'].sort(),
    );
  });

  it('loads back and gives the same image, also moved elsewhere with its source text model gone', async () => {
    const moved = path.join(tempDir('pipefolder-moved'), 'sd');
    cpSync(pipeDir, moved, { recursive: true });
    expect(maxAbsDiff(await image(moved), want)).toBeLessThan(1e-5);
  });

  it('a folder diffusers wrote (no _txt2img, PNDM scheduler, tokenizer as vocab.json + merges.txt): loads with a warning naming the class', async () => {
    const dir = path.join(tempDir('pipefolder-foreign'), 'sd');
    cpSync(pipeDir, dir, { recursive: true });
    const file = path.join(dir, 'model_index.json');
    const { _txt2img, ...index } = JSON.parse(readFileSync(file, 'utf8'));
    writeFileSync(file, JSON.stringify({ ...index, scheduler: ['diffusers', 'PNDMScheduler'] }));
    // SD-1.5's scheduler_config.json (its values; our folder's schedule).
    writeFileSync(
      path.join(dir, 'scheduler', 'scheduler_config.json'),
      JSON.stringify({
        _class_name: 'PNDMScheduler',
        _diffusers_version: '0.6.0',
        beta_end: 0.012,
        beta_schedule: 'scaled_linear',
        beta_start: 0.00085,
        num_train_timesteps: 100,
        set_alpha_to_one: true,
        skip_prk_steps: true,
        steps_offset: 0,
        trained_betas: null,
        clip_sample: false,
      }),
    );
    rmSync(path.join(dir, 'tokenizer', 'tokenizer.json'));
    rmSync(path.join(dir, 'text_encoder', 'onnx'), { recursive: true }); // converted again on load
    expect(readModelIndex(dir)).toMatchObject({ format: 'diffusers', conditioning: 'clip', conditioningDropout: 0.1, imageSize: 32 });
    const warnings: string[] = [];
    expect(maxAbsDiff(await image(dir, {}, (m) => warnings.push(m)), want)).toBeLessThan(1e-5);
    expect(warnings).toEqual([
      expect.stringMatching(/scheduler_config\.json: scheduler class PNDMScheduler is not implemented here; .* as DDIMScheduler's .*--sampler, default ddim/),
    ]);
    expect(existsSync(path.join(dir, 'text_encoder', 'onnx', 'text_model.onnx'))).toBe(true);
  });

  it('bad folders: one-line errors naming the file or the component', async () => {
    const copy = (name: string) => {
      const dir = path.join(tempDir(`pipefolder-${name}`), 'sd');
      cpSync(pipeDir, dir, { recursive: true });
      return dir;
    };
    let dir = copy('missing');
    rmSync(path.join(dir, 'text_encoder'), { recursive: true });
    await expect(Txt2ImgPipeline.load(dir)).rejects.toThrow(`model folder ${dir} is incomplete: missing text_encoder/`);
    dir = copy('class');
    const file = path.join(dir, 'model_index.json');
    writeFileSync(file, JSON.stringify({ ...JSON.parse(readFileSync(file, 'utf8')), _class_name: 'StableDiffusionXLPipeline' }));
    await expect(Txt2ImgPipeline.load(dir)).rejects.toThrow(`${file}: _class_name "StableDiffusionXLPipeline" is not a pipeline this txt2img runs; allowed:`);
    writeFileSync(
      file,
      JSON.stringify({ ...JSON.parse(readFileSync(file, 'utf8')), _class_name: 'StableDiffusionPipeline', unet: ['diffusers', 'UNet2DModel'] }),
    );
    await expect(Txt2ImgPipeline.load(dir)).rejects.toThrow(`${file}: unet is ["diffusers","UNet2DModel"]; this txt2img runs UNet2DConditionModel there`);
    dir = copy('tokenizer');
    for (const f of ['tokenizer.json', 'merges.txt']) rmSync(path.join(dir, 'tokenizer', f));
    await expect(Txt2ImgPipeline.load(dir)).rejects.toThrow(`${path.join(dir, 'tokenizer')} has neither tokenizer.json nor vocab.json + merges.txt`);
    dir = copy('truncated');
    rmSync(path.join(dir, 'text_encoder', 'onnx'), { recursive: true });
    const weights = path.join(dir, 'text_encoder', 'model.safetensors');
    writeFileSync(weights, readFileSync(weights).subarray(0, 1000));
    await expect(Txt2ImgPipeline.load(dir, { log: () => {} })).rejects.toThrow(`${weights}: `);
    dir = copy('scheduler');
    writeFileSync(path.join(dir, 'scheduler', 'scheduler_config.json'), JSON.stringify({ _class_name: 'DDIMScheduler', thresholding: true }));
    await expect(Txt2ImgPipeline.load(dir)).rejects.toThrow(/scheduler_config\.json: .*thresholding/);
  });
});

describe('the earlier txt2img format', () => {
  it('keeps loading, and convert-pipeline rewrites it in diffusers format with the same image', async () => {
    const dir = path.join(tempDir('pipefolder-legacy'), 'old');
    cpSync(pipeDir, dir, { recursive: true });
    // The earlier layout: facts at the top, camelCase scheduler, text_encoder/config.json naming ./clip.
    writeFileSync(
      path.join(dir, 'model_index.json'),
      JSON.stringify({
        _class_name: 'Txt2ImgPipeline',
        _version: 1,
        conditioning: 'clip',
        conditioningDropout: 0.1,
        imageSize: 32,
        vae: ['txt2img', 'AutoencoderKL'],
        unet: ['txt2img', 'UNet2DCondition'],
        text_encoder: ['txt2img', 'ClipTextEncoder'],
        scheduler: ['txt2img', 'DDIMScheduler'],
      }),
    );
    writeFileSync(path.join(dir, 'scheduler', 'scheduler_config.json'), JSON.stringify(createScheduler(SCHED).config));
    rmSync(path.join(dir, 'text_encoder'), { recursive: true });
    mkdirSync(path.join(dir, 'text_encoder'));
    cpSync(tiny.result.outDir, path.join(dir, 'text_encoder', 'clip'), { recursive: true });
    writeFileSync(
      path.join(dir, 'text_encoder', 'config.json'),
      JSON.stringify({ kind: 'clip', modelId: './clip', tokenizerId: '../tokenizer', maxLength: 77, quantized: false }),
    );
    writeFileSync(path.join(dir, 'README.md'), '# an old run\n');
    expect(readModelIndex(dir).format).toBe('txt2img-v1');
    expect(maxAbsDiff(await image(dir), want)).toBe(0);

    const r = await convertPipelineFolder(dir);
    expect(r).toMatchObject({ from: 'txt2img-v1', kept: ['README.md'] });
    expect(readModelIndex(dir)).toMatchObject({ format: 'diffusers', className: 'StableDiffusionPipeline' });
    expect(JSON.parse(readFileSync(path.join(dir, 'text_encoder', 'config.json'), 'utf8')).architectures).toEqual(['CLIPTextModel']);
    expect(existsSync(path.join(dir, 'text_encoder', 'clip'))).toBe(false);
    expect(readFileSync(path.join(dir, 'README.md'), 'utf8')).toBe('# an old run\n');
    // A legacy VAE / U-Net (the peer's configs are read as legacy) gets diffusers' numerics on
    // conversion (unet/legacy.ts, vae/legacy.ts): the image moves a little (8e-5 measured), no more.
    expect(maxAbsDiff(await image(dir), want)).toBeLessThan(1e-3);
  });
});

describe('a label-conditioned pipeline', () => {
  it('is a Txt2ImgLabelPipeline with label_encoder/ in our format, and loads back', async () => {
    const dir = path.join(tempDir('pipefolder-label'), 'digits');
    const enc = new LabelEncoder({ kind: 'label', numClasses: 3, contextDim: PEER_UNET_CONFIG.contextDim }, new Generator(3));
    const pipe = new Txt2ImgPipeline(
      new AutoencoderKL(PEER_VAE_CONFIG, new Generator(1)),
      new UNet2DCondition(PEER_UNET_CONFIG, new Generator(2)),
      enc,
      createScheduler({ type: 'ddpm', numTrainTimesteps: 100 }).config,
      { conditioning: 'label', conditioningDropout: 0.1, imageSize: 32 },
    );
    await pipe.save(dir);
    pipe.dispose();
    const index = JSON.parse(readFileSync(path.join(dir, 'model_index.json'), 'utf8'));
    expect(index).toEqual({
      _class_name: 'Txt2ImgLabelPipeline',
      _diffusers_version: '0.40.0.dev0',
      _txt2img: { version: 2, conditioning: 'label', conditioningDropout: 0.1, imageSize: 32 },
      label_encoder: ['txt2img', 'LabelEncoder'],
      scheduler: ['diffusers', 'DDPMScheduler'],
      unet: ['diffusers', 'UNet2DConditionModel'],
      vae: ['diffusers', 'AutoencoderKL'],
    });
    const back = await Txt2ImgPipeline.load(dir);
    expect(back.info).toEqual({ conditioning: 'label', conditioningDropout: 0.1, imageSize: 32 });
    back.dispose();
  });
});

function npy(shape: number[], data: Float32Array): Buffer {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  header += `${' '.repeat(63 - ((header.length + 10) % 64))}\n`;
  const pre = Buffer.alloc(10);
  pre.writeUInt8(0x93, 0);
  pre.write('NUMPY', 1, 'latin1');
  pre.writeUInt8(1, 6);
  pre.writeUInt16LE(header.length, 8);
  return Buffer.concat([pre, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

describe('--latents', () => {
  it("reads NCHW .npy / .safetensors latents, starts from them as diffusers' latents= does, and says so in the PNG", async () => {
    const dir = tempDir('pipefolder-latents');
    const [c, h] = [4, 8];
    const nchw = new Generator(11).normalArray(2 * c * h * h);
    const file = path.join(dir, 'latents.npy');
    writeFileSync(file, npy([2, c, h, h], nchw));
    const st = path.join(dir, 'latents.safetensors');
    writeFileSync(st, encodeSafetensors(new Map([['latents', { shape: [2, c, h, h], data: nchw }]])));
    const l = readLatentsFile(file);
    expect(l.shape).toEqual([2, c, h, h]);
    expect(readLatentsFile(st).data).toEqual(l.data);
    const nhwc = latentsToNHWC(l, 2, c, h, h);
    expect(nhwc[((1 * h + 3) * h + 5) * c + 2]).toBe(nchw[((1 * c + 2) * h + 3) * h + 5]); // [1, 3, 5, 2] = NCHW [1, 2, 3, 5]
    expect(Array.from(latentsToNHWC({ ...l, shape: [1, c, h, h] }, 2, c, h, h).subarray(c * h * h))).toEqual(
      Array.from(latentsToNHWC({ ...l, shape: [1, c, h, h] }, 1, c, h, h)),
    );
    expect(() => latentsToNHWC(l, 3, c, h, h)).toThrow(
      `--latents ${file}: shape [2, 4, 8, 8] does not fit this model and request, which take [3 or 1, 4, 8, 8]`,
    );
    expect(() => parseNpy(Buffer.from('not numpy'), 'x.npy')).toThrow('x.npy: not a .npy file');

    // The pipeline from given latents, and the CLI path with the file: the same images.
    const pipe = await Txt2ImgPipeline.load(pipeDir, { log: () => {} });
    const before = tf.memory().numTensors;
    const latents = tf.tensor4d(nhwc, [2, h, h, c]);
    const x = await pipe.generate({ ...GEN, inputs: ['a red square', 'a blue circle'], latents });
    const direct = (await x.data()) as Float32Array;
    tf.dispose([x, latents]);
    expect(tf.memory().numTensors).toBe(before);
    const drawn = await pipe.generate({ ...GEN, inputs: ['a red square', 'a blue circle'] });
    expect(maxAbsDiff((await drawn.data()) as Float32Array, direct)).toBeGreaterThan(0.01); // the latents matter
    drawn.dispose();
    pipe.dispose();
    const out = path.join(dir, 'out.png');
    const r = await runTxt2Img({
      model: pipeDir,
      prompts: ['a red square', 'a blue circle'],
      n: 1,
      cfg: 3,
      steps: 3,
      sampler: 'ddim',
      eta: 0,
      seed: 7,
      out,
      separate: true,
      latents: file,
      quiet: true,
      log: () => {},
    });
    expect(r.parameters[1]).toContain(`Initial latents: latents.npy (sha256 ${l.hash})`);
    expect(getPngText(readFileSync(r.files[1]), 'parameters')).toContain('Initial latents: latents.npy');
    await expect(
      runTxt2Img({ model: pipeDir, prompts: ['a'], n: 3, cfg: 3, steps: 1, sampler: 'ddim', eta: 0, seed: 7, out, latents: file, quiet: true, log: () => {} }),
    ).rejects.toThrow('shape [2, 4, 8, 8] does not fit this model and request, which take [3 or 1, 4, 8, 8]');
  });
});

describe('--model org/name', () => {
  it('tells hub ids from paths, picks the files a pipeline needs, and names the id when the hub is unreachable', async () => {
    expect(isHubModelId('stable-diffusion-v1-5/stable-diffusion-v1-5')).toBe(true);
    expect(isHubModelId('./runs/x')).toBe(false);
    expect(isHubModelId('/abs/path')).toBe(false);
    expect(isHubModelId('runs/x/pipeline')).toBe(false);
    expect(hubCacheFolder('org/name', '/c')).toBe(path.join('/c', 'hub', 'org--name'));
    const index = JSON.parse(readFileSync(path.join(pipeDir, 'model_index.json'), 'utf8'));
    const files = [
      'model_index.json',
      'scheduler/scheduler_config.json',
      'text_encoder/config.json',
      'text_encoder/model.fp16.safetensors',
      'text_encoder/pytorch_model.bin',
      'tokenizer/merges.txt',
      'tokenizer/vocab.json',
      'tokenizer/tokenizer_config.json',
      'unet/config.json',
      'unet/diffusion_pytorch_model.safetensors',
      'unet/diffusion_pytorch_model.fp16.safetensors',
      'vae/config.json',
      'vae/diffusion_pytorch_model.bin',
    ];
    expect(() => selectHubFiles('org/name', index, files)).toThrow("hub model 'org/name' has no safetensors weights for vae/");
    expect(selectHubFiles('org/name', index, [...files, 'vae/diffusion_pytorch_model.safetensors']).sort()).toEqual(
      [
        'model_index.json',
        'scheduler/scheduler_config.json',
        'text_encoder/config.json',
        'text_encoder/model.fp16.safetensors',
        'tokenizer/merges.txt',
        'tokenizer/tokenizer_config.json',
        'tokenizer/vocab.json',
        'unet/config.json',
        'unet/diffusion_pytorch_model.safetensors',
        'vae/config.json',
        'vae/diffusion_pytorch_model.safetensors',
      ].sort(),
    );
    // An existing folder is used as it is; a hub id goes to the hub (here: refused connection).
    expect(await resolveModel(pipeDir)).toBe(pipeDir);
    const cacheDir = tempDir('pipefolder-hub');
    // A port nothing listens on (taken, then freed).
    const server = createServer().listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as AddressInfo).port;
    server.close();
    const endpoint = `http://127.0.0.1:${port}`;
    await expect(resolveModel('org/name', { cacheDir, environment: { HF_ENDPOINT: endpoint } })).rejects.toThrow(
      `cannot download 'org/name': the Hugging Face hub (${endpoint}) could not be reached (ECONNREFUSED); pass a local pipeline folder to --model`,
    );
    expect(existsSync(hubCacheFolder('org/name', cacheDir))).toBe(false);
  });

  it('downloads what a pipeline needs from a hub-like HTTP server into the cache, once, and runs it', async () => {
    // A local server answering the two hub routes the client uses, from a folder on disk.
    const served: string[] = [];
    const listing = readdirSync(pipeDir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => path.relative(pipeDir, path.join(e.parentPath, e.name)).split(path.sep).join('/'));
    const server = createHttpServer((req, res) => {
      const url = req.url ?? '';
      if (url === '/api/models/org/tiny') {
        res.end(JSON.stringify({ siblings: listing.map((rfilename) => ({ rfilename })) }));
        return;
      }
      const m = /^\/org\/tiny\/resolve\/main\/(.+)$/.exec(url);
      if (m && listing.includes(m[1])) {
        served.push(m[1]);
        const data = readFileSync(path.join(pipeDir, m[1]));
        res.setHeader('content-length', data.length);
        res.end(data);
        return;
      }
      res.statusCode = 404;
      res.end();
    }).listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const environment = { HF_ENDPOINT: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
      const cacheDir = tempDir('pipefolder-hub-ok');
      const lines: string[] = [];
      const dir = await resolveModel('org/tiny', { cacheDir, environment, log: (l) => lines.push(l) });
      expect(dir).toBe(hubCacheFolder('org/tiny', cacheDir));
      expect(lines[0]).toMatch(/^downloading 'org\/tiny' from http:\/\/127\.0\.0\.1:\d+ into .* \(\d+ files\)$/);
      expect(served).not.toContain('text_encoder/onnx/text_model.onnx'); // only what a run needs
      expect(served).toContain('unet/diffusion_pytorch_model.safetensors');
      expect(maxAbsDiff(await image(dir), want)).toBeLessThan(1e-5);
      const count = served.length;
      expect(await resolveModel('org/tiny', { cacheDir, environment })).toBe(dir); // cached: no request
      expect(served.length).toBe(count);
      await expect(resolveModel('org/missing', { cacheDir, environment })).rejects.toThrow("hub model 'org/missing' was not found at");
    } finally {
      server.close();
    }
  });
});

describe('width and height', () => {
  it('generates at any multiple of the VAE x U-Net downsampling, takes the size from non-square latents, and names a bad size', async () => {
    const pipe = await Txt2ImgPipeline.load(pipeDir, { log: () => {} });
    const f = pipe.vae.config.downsampleFactor;
    const m = pipe.sizeMultiple;
    expect(m).toBe(f * 2 ** (pipe.unet.config.channels.length - 1));
    const before = tf.memory().numTensors;
    const wide = await pipe.generate({ ...GEN, inputs: ['a red square'], width: 3 * m, height: m });
    expect(wide.shape).toEqual([1, m, 3 * m, 3]); // [B, H, W, C]
    wide.dispose();
    expect(tf.memory().numTensors).toBe(before);
    // The model's own size is the default, and asking for it changes nothing.
    const own = await pipe.generate({ ...GEN, inputs: ['a red square'], width: 32, height: 32 });
    expect(maxAbsDiff((await own.data()) as Float32Array, want)).toBe(0);
    own.dispose();
    await expect(pipe.generate({ ...GEN, inputs: ['a'], width: m + 1 })).rejects.toThrow(
      `width must be a multiple of ${m} from ${m} to 8192 pixels for this model (its VAE and U-Net downsampling), got ${m + 1}; its own size is 32`,
    );
    expect(() => pipe.imageShape({ height: 2 * m }, true)).toThrow(`img2img works at the model's size 32x32; width/height 32x${2 * m} are for text to image`);
    pipe.dispose();

    // The CLI path: the size from a non-square latents file [1, c, h, w], written in the PNG.
    const dir = tempDir('pipefolder-size');
    const [c, h, w] = [4, m / f, (2 * m) / f];
    const file = path.join(dir, 'latents.npy');
    writeFileSync(file, npy([1, c, h, w], new Generator(12).normalArray(c * h * w)));
    const out = path.join(dir, 'out.png');
    const run = { model: pipeDir, prompts: ['a red square'], n: 1, cfg: 3, steps: 2, sampler: 'ddim', eta: 0, seed: 7, out, quiet: true, log: () => {} };
    const r = await runTxt2Img({ ...run, latents: file });
    expect(r.parameters[0]).toContain(`Size: ${2 * m}x${m}`);
    const png = readFileSync(out);
    expect([png.readUInt32BE(16), png.readUInt32BE(20)]).toEqual([2 * m, m]); // IHDR width, height
    // Explicit sizes that disagree with the latents, and impossible sizes, fail before any file is written.
    rmSync(out);
    await expect(runTxt2Img({ ...run, latents: file, width: m })).rejects.toThrow(
      `shape [1, 4, ${h}, ${w}] does not fit this model and request, which take [1, 4, ${h}, ${m / f}]`,
    );
    await expect(runTxt2Img({ ...run, width: 0 })).rejects.toThrow('--width must be an integer from 1 to 8192 pixels, got 0');
    await expect(runTxt2Img({ ...run, height: 1.5 })).rejects.toThrow('--height must be an integer from 1 to 8192 pixels, got 1.5');
    expect(existsSync(out)).toBe(false);
  });
});
