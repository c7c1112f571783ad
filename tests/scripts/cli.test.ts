/**
 * The CLIs as a user runs them: bad input is one line on stderr naming the value and what is
 * allowed, a non-zero exit code, and no output file.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { type AddressInfo, createServer } from 'node:net';
import path from 'node:path';
import sharp from 'sharp';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../fixtures/captioned.js';
import { runCommand } from '../helpers.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

async function cli(script: string, args: string[], env: Record<string, string> = {}) {
  const r = await runCommand(process.execPath, ['--import', 'tsx', path.join(repo, 'scripts', script), ...args], {
    cwd: repo,
    env: { ...process.env, TXT2IMG_BACKEND: 'cpu', ...env },
    timeout: 300_000,
  });
  return { code: r.code, stderr: r.stderr.trim(), stdout: r.stdout };
}

describe('txt2img CLI input errors', () => {
  const dir = tempDir('cli');
  const out = path.join(dir, 'x.png');
  const model = tempDir('model'); // exists but is no pipeline
  const cases: [string, string[], RegExp][] = [
    ['non-numeric cfg', ['a cat', '--model', model, '--cfg', 'abc', '--out', out], /--cfg must be a finite decimal number, got 'abc'/],
    ['non-finite cfg', ['a cat', '--model', model, '--cfg', 'Infinity', '--out', out], /--cfg must be a finite decimal number, got 'Infinity'/],
    ['hexadecimal cfg', ['a cat', '--model', model, '--cfg', '0x10', '--out', out], /--cfg must be a finite decimal number, got '0x10'/],
    ['steps < 1', ['a cat', '--model', model, '--steps', '0', '--out', out], /--steps must be an integer from 1 to .*, got '0'/],
    ['fractional width', ['a cat', '--model', model, '--width', '12.5', '--out', out], /--width must be an integer from 1 to 8192 pixels, got 12.5/],
    [
      'unknown sampler',
      ['a cat', '--model', model, '--sampler', 'warp', '--out', out],
      /unknown sampler 'warp'; allowed: ddpm, ddim, euler, .*DPM\+\+ 2M Karras/,
    ],
    ['empty prompt', ['', '--model', model, '--out', out], /prompt is empty/],
    ['missing model folder', ['a cat', '--model', path.join(dir, 'nope'), '--out', out], /model folder .*nope does not exist/],
    ['incomplete model folder', ['a cat', '--model', model, '--out', out], /incomplete: no model_index.json/],
    ['unwritable output', ['a cat', '--model', model, '--out', path.join(dir, 'no', 'such', 'dir', 'x.png')], /cannot write .* does not exist/],
    ['output not a png', ['a cat', '--model', model, '--out', path.join(dir, 'x.jpg')], /--out must name a .png file/],
    ['unknown flag', ['a cat', '--modle', model], /Unknown argument: modle/],
    ['empty backend', ['a cat', '--model', model, '--backend', '', '--out', out], /--backend is empty; allowed: node-gpu, node, webgpu, wasm, cpu/],
    [
      'more images than a command makes',
      [...Array(20).fill('a cat'), '--n', '256', '--model', model, '--out', out],
      /20 prompt\(s\) x --n 256 = 5120 images; at most 1024 per command/,
    ],
    ['unknown runtime', ['a cat', '--model', model, '--runtime', 'gpu', '--out', out], /--runtime: unknown U-Net runtime 'gpu'; allowed: auto, tfjs, onnx/],
  ];
  for (const [name, args, pattern] of cases) {
    it(name, async () => {
      const r = await cli('txt2img.ts', args);
      expect(r.code, r.stderr).not.toBe(0);
      expect(r.stderr).toMatch(pattern);
      expect(existsSync(out)).toBe(false);
    });
  }

  it('an incomplete model folder lists the missing components', async () => {
    const m = tempDir('m2');
    mkdirSync(path.join(m, 'scheduler'), { recursive: true });
    writeFileSync(
      path.join(m, 'model_index.json'),
      JSON.stringify({ _class_name: 'Txt2ImgPipeline', _version: 1, conditioning: 'clip', conditioningDropout: 0.1, imageSize: 16 }),
    );
    const r = await cli('txt2img.ts', ['a cat', '--model', m, '--out', out]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/incomplete: missing vae\/, unet\/, text_encoder\//);
  });
});

describe('hub ids in every generating command', () => {
  it('txt2img img2img and txt2img serve take --model org/name and name the hub when it cannot be reached', async () => {
    // A port nothing listens on (taken, then freed): the download is refused at once.
    const server = createServer().listen(0, '127.0.0.1');
    await once(server, 'listening');
    const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    server.close();
    const dir = tempDir('cli-hub');
    const init = path.join(dir, 'init.png');
    writeFileSync(
      init,
      await sharp({ create: { width: 8, height: 8, channels: 3, background: '#808080' } })
        .png()
        .toBuffer(),
    );
    const env = { HF_ENDPOINT: endpoint, TXT2IMG_CACHE: path.join(dir, 'cache') };
    const unreachable = `cannot download 'org/name': the Hugging Face hub (${endpoint}) could not be reached (ECONNREFUSED)`;
    const r = await cli('txt2img.ts', ['img2img', '--init', init, '--model', 'org/name', 'a cat', '--out', path.join(dir, 'x.png')], env);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(unreachable);
    const r2 = await cli('txt2img.ts', ['serve', '--model', 'org/name', '--port', '0'], env);
    expect(r2.code).not.toBe(0);
    expect(r2.stderr).toContain(unreachable);
    expect(existsSync(path.join(dir, 'x.png'))).toBe(false);
  });
});

describe('train CLI input errors', () => {
  it('a bad config value is named with what is allowed', async () => {
    const dir = tempDir('traincli');
    const cfg = path.join(dir, 'c.json');
    writeFileSync(cfg, JSON.stringify({ seed: 0, data: { source: 'mnist' }, conditioning: { kind: 'label', numClasses: 10, contextDim: 8, dropout: 2 } }));
    const r = await cli('train.ts', ['--config', cfg, '--out', path.join(dir, 'run')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/conditioning.dropout must be a probability in \[0, 1\], got 2/);
    const r2 = await cli('train.ts', ['--config', cfg, '--out', path.join(dir, 'run'), '--stage', 'both']);
    expect(r2.stderr).toMatch(/--stage must be one of vae, unet, all, got 'both'/);
    const r3 = await cli('train.ts', ['--config', cfg, '--out', path.join(dir, 'run'), '--workers', '0']);
    expect(r3.stderr).toMatch(/--workers must be an integer from 1 to 64, got '0'/);
    const r4 = await cli('train.ts', ['--config', cfg, '--out', path.join(dir, 'run'), '--runtime', 'gpu']);
    expect(r4.stderr).toMatch(/--runtime: unknown runtime 'gpu'; allowed: auto, tfjs, onnx/);
  });
});

describe('bench CLI input errors', () => {
  it('names the bad figure or runtime with what is allowed', async () => {
    const r = await cli('bench.ts', ['--only', 'fid']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--only: unknown figure 'fid'; allowed: vae_train_step_ms, unet_train_step_ms, unet_forward_ms, sample_images_per_s/);
    const r2 = await cli('bench.ts', ['--runtime', 'gpu']);
    expect(r2.stderr).toMatch(/--runtime: unknown runtime 'gpu'; allowed: auto, tfjs, onnx/);
  });
});

describe('train-classifier CLI input errors', () => {
  it('names the bad runtime or worker count with what is allowed', async () => {
    const out = path.join(tempDir('clfcli'), 'clf');
    const r = await cli('train-classifier.ts', ['--out', out, '--runtime', 'gpu']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--runtime: unknown runtime 'gpu'; allowed: auto, tfjs, onnx/);
    const r2 = await cli('train-classifier.ts', ['--out', out, '--workers', '0']);
    expect(r2.stderr).toMatch(/--workers must be an integer from 1 to 64, got '0'/);
    expect(existsSync(out)).toBe(false);
  });
});

describe('evaluate CLI', () => {
  it('--no-vae is accepted (the next error is the missing model, not an unknown flag)', async () => {
    const r = await cli('evaluate.ts', ['--model', path.join(tempDir('eval-cli'), 'nope'), '--classifier', 'runs/none', '--no-vae']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).not.toMatch(/Unknown argument/);
    expect(r.stderr).toMatch(/nope/);
  });
});
