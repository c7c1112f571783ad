/**
 * `txt2img serve` on a label-conditioned pipeline (an MNIST-style model), in-process: the prompt
 * names the class (its number or name); what only the model can refuse (an unknown class, a
 * negative prompt it cannot take, more steps than it was trained with) is a 422 naming the field.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { Txt2ImgPipeline } from '../../src/pipeline/pipeline.js';
import { Generator } from '../../src/random/generator.js';
import { createScheduler } from '../../src/schedulers/index.js';
import { type RunningServer, startServer } from '../../src/server/server.js';
import { LabelEncoder } from '../../src/text/label.js';
import { UNet2DCondition } from '../../src/unet/unet2d-condition.js';
import { AutoencoderKL } from '../../src/vae/autoencoder-kl.js';
import { tempDir } from '../fixtures/captioned.js';
import { PEER_UNET_CONFIG, PEER_VAE_CONFIG } from '../unet/peer-fixture.js';

let server: RunningServer;

beforeAll(async () => {
  await initBackend({ backend: process.env.TXT2IMG_BACKEND ?? 'wasm', quiet: true });
  const dir = path.join(tempDir('label-serve'), 'digits');
  const encoder = new LabelEncoder(
    { kind: 'label', numClasses: 3, contextDim: PEER_UNET_CONFIG.contextDim, classNames: ['zero', 'one', 'two'] },
    new Generator(3),
  );
  const scheduler = createScheduler({ type: 'ddpm', numTrainTimesteps: 100 }).config;
  const pipe = new Txt2ImgPipeline(
    new AutoencoderKL(PEER_VAE_CONFIG, new Generator(1)),
    new UNet2DCondition(PEER_UNET_CONFIG, new Generator(2)),
    encoder,
    scheduler,
    { conditioning: 'label', conditioningDropout: 0.1, imageSize: 32 },
  );
  await pipe.save(dir);
  pipe.dispose();
  server = await startServer({ model: dir, port: 0, runtime: 'tfjs', log: () => {} });
}, 120_000);

afterAll(async () => {
  await server?.close();
});

// biome-ignore lint/suspicious/noExplicitAny: JSON from the server, read by the assertions
type Json = Record<string, any>;

async function post(body: unknown) {
  const res = await fetch(`${server.url}/sdapi/v1/txt2img`, { method: 'POST', body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Json };
}

describe('a label-conditioned model behind the A1111 API', () => {
  it('draws the class the prompt names, by number or by name', async () => {
    for (const prompt of ['2', 'one']) {
      const r = await post({ prompt, steps: 2, seed: 4 });
      expect(r.status).toBe(200);
      expect(JSON.parse(r.json.info).infotexts[0]).toMatch(new RegExp(`^${prompt}\\nSteps: 2, Sampler: Euler`));
    }
  });

  it('an unknown class, a negative prompt or too many steps is a 422 naming the field', async () => {
    const cls = await post({ prompt: 'seven', steps: 2 });
    expect(cls.status).toBe(422);
    expect(cls.json.detail[0]).toMatchObject({
      loc: ['body', 'prompt'],
      msg: expect.stringMatching(/label 0 'seven' is not a class; allowed: integers from 0 to 2/),
    });
    const neg = await post({ prompt: '1', negative_prompt: 'blurry', steps: 2 });
    expect(neg.json.detail[0]).toMatchObject({ loc: ['body', 'negative_prompt'], msg: expect.stringMatching(/needs a text-conditioned model/) });
    const steps = await post({ prompt: '1', steps: 101 });
    expect(steps.json.detail[0]).toMatchObject({ loc: ['body', 'steps'], msg: "ensure this value is less than or equal to 100 (the model's training steps)" });
  });
});
