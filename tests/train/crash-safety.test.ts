/**
 * `kill -9` at the worst moments of a run (TXT2IMG_CRASH_AT: while a checkpoint is written, between
 * the renames of a folder swap, while the pipeline is exported), then `train --resume`: the run
 * must end with the pipeline an uninterrupted run exports, byte for byte, and nothing half-written.
 */
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { CRASH_AT_ENV } from '../../src/checkpoint/files.js';
import { tempDir } from '../fixtures/captioned.js';
import { runCommand } from '../helpers.js';

const repo = path.resolve(import.meta.dirname, '../..');

/** Label-conditioned MNIST at toy widths: both stages, a checkpoint (and an export) every step. */
function writeConfig(dir: string): string {
  const c = JSON.parse(readFileSync(path.join(repo, 'configs', 'mnist-small.json'), 'utf8'));
  c.data.limit = 8;
  c.vae.channels = [4, 4, 8];
  c.vae.groupNormGroups = 2;
  Object.assign(c.unet, { channels: [8, 8], attentionHeads: 2, contextDim: 8, timeEmbedDim: 16, groupNormGroups: 2 });
  c.conditioning.contextDim = 8;
  const stage = { steps: 3, batchSize: 2, warmupSteps: 0, checkpointEvery: 1, workers: 1, runtime: 'tfjs' };
  Object.assign(c.vaeTraining, stage);
  Object.assign(c.unetTraining, stage);
  c.validation = undefined;
  const file = path.join(dir, 'config.json');
  writeFileSync(file, JSON.stringify(c));
  return file;
}

const train = (config: string, out: string, extra: string[], crash?: string) =>
  runCommand(process.execPath, ['--import', 'tsx', path.join(repo, 'scripts', 'train.ts'), '--config', config, '--out', out, '--quiet', ...extra], {
    cwd: repo,
    env: { ...process.env, TXT2IMG_BACKEND: 'wasm', TXT2IMG_THREADS: '1', [CRASH_AT_ENV]: crash ?? '' },
    timeout: 300_000,
  });

/** Every file of a pipeline folder, by relative path. */
function files(dir: string, rel = ''): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const e of readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const r = path.join(rel, e.name);
    if (e.isDirectory()) for (const [k, v] of files(dir, r)) out.set(k, v);
    else out.set(r, readFileSync(path.join(dir, r)));
  }
  return out;
}

let config: string;
let reference: Map<string, Buffer>;

beforeAll(async () => {
  const dir = tempDir('crash-ref');
  config = writeConfig(dir);
  const r = await train(config, path.join(dir, 'run'), []);
  expect(r.code, r.stderr).toBe(0);
  reference = files(path.join(dir, 'run', 'pipeline'));
});

describe('a run killed at the worst moments', () => {
  // NAME:N = the Nth time the run reaches NAME (checkpoints: VAE steps 1-3, then U-Net steps 1-3).
  const points = [
    ['a checkpoint written but not yet in place (U-Net step 2)', 'checkpoint-written:5'],
    ['a checkpoint in place but the latest pointer not yet moved (VAE step 3)', 'checkpoint-placed:3'],
    ['between the two renames of a folder swap (an old checkpoint moved aside)', 'swap:5'],
    ['the final pipeline export written but not swapped in', 'export-written:3'],
  ] as const;
  for (const [when, point] of points) {
    it(`resumes to the same pipeline after kill -9 at ${when}`, async () => {
      const run = path.join(tempDir('crash'), 'run');
      const killed = await train(config, run, [], point);
      expect(killed.code, killed.stderr).toBeNull(); // killed by the signal, no exit code
      const resumed = await train(config, run, ['--resume']);
      expect(resumed.code, resumed.stderr).toBe(0);
      const got = files(path.join(run, 'pipeline'));
      expect([...got.keys()].sort()).toEqual([...reference.keys()].sort());
      for (const [name, bytes] of reference) expect(got.get(name)!.equals(bytes), name).toBe(true);
      // Nothing half-written is left, and the lock is gone.
      const leftovers = [run, path.join(run, 'vae-stage', 'checkpoints'), path.join(run, 'unet-stage', 'checkpoints')].flatMap((d) =>
        readdirSync(d).filter((f) => /partial|\.tmp-|\.old$|run\.lock/.test(f)),
      );
      expect(leftovers).toEqual([]);
      expect(existsSync(path.join(run, 'pipeline.old'))).toBe(false);
    });
  }
});
