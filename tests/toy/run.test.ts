import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { createScheduler } from '../../src/schedulers/index.js';
import { TOY2D_DEFAULTS, type Toy2dOptions, runToy2d, toySchedulerConfig, validateToy2dOptions } from '../../src/toy/run.js';

beforeAll(async () => {
  await initBackend({ backend: 'cpu', quiet: true });
});

const base: Toy2dOptions = { ...TOY2D_DEFAULTS, dataset: 's-curve', out: 'unused', progress: false };

describe('toy2d run', () => {
  it('writes strips, samples, loss curve, animation, config and report', async () => {
    const out = mkdtempSync(join(tmpdir(), 'toy2d-run-'));
    const lines: string[] = [];
    const report = await runToy2d({
      ...base,
      out,
      steps: 20,
      batch: 32,
      timesteps: 20,
      hidden: 16,
      blocks: 1,
      fourierDim: 4,
      samples: 200,
      frames: 3,
      sampler: 'ddim',
      sampleSteps: 5,
      eta: 0.5,
      anim: 'webp',
      log: (l) => lines.push(l),
    });
    for (const f of ['forward.png', 'reverse.png', 'samples.png', 'loss.png', 'process.png', 'diffusion.webp', 'scheduler_config.json', 'report.json']) {
      expect(existsSync(join(out, f)), f).toBe(true);
    }
    const anim = await sharp(join(out, 'diffusion.webp'), { animated: true }).metadata();
    // forward + reverse, 4x the strip frames each (9 + 9); with 5 sampler steps some reverse frames
    // repeat, and libwebp merges identical consecutive frames into one longer frame.
    expect(anim.pages).toBeGreaterThanOrEqual(9 + 6);
    expect(anim.pages).toBeLessThanOrEqual(18);
    const cfg = createScheduler(JSON.parse(readFileSync(join(out, 'scheduler_config.json'), 'utf8')));
    expect(cfg.config).toMatchObject({ type: 'ddim', numTrainTimesteps: 20, eta: 0.5 });
    expect(report.noise.slicedW2).toBeGreaterThan(report.secondReal.slicedW2);
    const text = lines.join('\n');
    expect(text).toMatch(/generated \(ddim, 5 steps\)/);
    expect(text).toMatch(/pure noise N\(0, I\)/);
    expect(text).toMatch(/second real sample/);
  });

  it('scales betas by 1000/T so a short chain still ends in noise', () => {
    const c = toySchedulerConfig({ timesteps: 50, schedule: 'linear', sampler: 'ddpm', prediction: 'epsilon' });
    expect(c.betaStart).toBeCloseTo(0.002, 12);
    expect(c.betaEnd).toBeCloseTo(0.4, 12);
    expect(createScheduler(c).alphasCumprod[49]).toBeLessThan(1e-4);
  });

  it('validates flags with errors naming the value and what is allowed', () => {
    const bad = (o: Partial<Toy2dOptions>) => () => validateToy2dOptions({ ...base, ...o });
    expect(bad({ dataset: 'spiral' })).toThrow(/--dataset 'spiral' is unknown; allowed: s-curve, moons, swiss-roll, image:<path/);
    expect(bad({ steps: 0 })).toThrow(/--steps must be an integer from 1 to 10000000, got 0/);
    expect(bad({ batch: 2.5 })).toThrow(/--batch must be an integer from 1 to 65536, got 2.5/);
    expect(bad({ lr: Number.NaN })).toThrow(/--lr must be a number in \(0, 1\], got NaN/);
    expect(bad({ schedule: 'scaled_linear' as never })).toThrow(
      /--schedule 'scaled_linear' is not allowed; allowed: linear, scaled-linear, cosine, sigmoid, quadratic/,
    );
    expect(bad({ sampler: 'euler' as never })).toThrow(/--sampler 'euler' is not allowed; allowed: ddpm, ddim/);
    expect(bad({ sampleSteps: 51 })).toThrow(/--sample-steps must be an integer from 1 to 50, got 51/);
    expect(bad({ eta: 1 })).toThrow(/--eta 1 applies to --sampler ddim only/);
    expect(bad({ sampler: 'ddim', eta: -1 })).toThrow(/--eta must be a number in \[0, 10\], got -1/);
    expect(bad({ seed: -3 })).toThrow(/--seed must be an integer/);
    expect(bad({ anim: 'mp4' as never })).toThrow(/--anim 'mp4' is not allowed; allowed: gif, webp/);
    expect(bad({ timesteps: 1 })).toThrow(/--timesteps must be an integer from 2 to 100000, got 1/);
    expect(validateToy2dOptions({ ...base, sampler: 'ddim' }).sampleSteps).toBe(50);
    expect(validateToy2dOptions({ ...base }).sampleSteps).toBe(50);
  });
});
