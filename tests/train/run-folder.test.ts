/**
 * Run folders have one owner (src/train/run-folder.ts): a second writer is refused naming the
 * holder, a stale lock is taken over, an existing run is continued or replaced only when asked,
 * and what an interrupted write left is cleared.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LOCK_NAME, RunLock, checkRunFolder, clearPreviousRun, removePartials } from '../../src/train/run-folder.js';
import { tempDir } from '../fixtures/captioned.js';
import { runCommand } from '../helpers.js';

/** The PID of a process that has exited. */
async function deadPid(): Promise<number> {
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, ['-e', '0']);
  await new Promise((r) => child.on('close', r));
  return child.pid!;
}

describe('RunLock', () => {
  it('refuses a second owner, naming it, and is free again once released', () => {
    const dir = tempDir('lock');
    const lock = RunLock.acquire(dir);
    const held = JSON.parse(readFileSync(path.join(dir, LOCK_NAME), 'utf8'));
    expect(held).toMatchObject({ pid: process.pid, host: os.hostname() });
    expect(() => RunLock.acquire(dir)).toThrow(new RegExp(`run folder ${dir} is in use by process ${process.pid} .*wait for it or stop it`));
    lock.release();
    expect(existsSync(path.join(dir, LOCK_NAME))).toBe(false);
    RunLock.acquire(dir).release();
  });

  it("takes over a stale lock (its process is gone) and refuses another host's", async () => {
    const dir = tempDir('lock-stale');
    const pid = await deadPid();
    writeFileSync(path.join(dir, LOCK_NAME), JSON.stringify({ pid, host: os.hostname(), started: 'then', command: 'train' }));
    const lines: string[] = [];
    const lock = RunLock.acquire(dir, (l) => lines.push(l));
    expect(lines).toEqual([`run folder: removed the stale lock of process ${pid} (no longer running)`]);
    lock.release();
    writeFileSync(path.join(dir, LOCK_NAME), JSON.stringify({ pid, host: 'elsewhere', started: 'then', command: 'train' }));
    expect(() => RunLock.acquire(dir)).toThrow(new RegExp(`locked by process ${pid} on host elsewhere .*delete ${path.join(dir, LOCK_NAME)}`));
  });
});

describe('starting in a folder that holds a run', () => {
  it('is refused without --resume or --overwrite; --overwrite removes all but the latent cache', () => {
    const dir = tempDir('prev-run');
    for (const d of ['vae-stage', 'cache', 'pipeline']) mkdirSync(path.join(dir, d));
    writeFileSync(path.join(dir, 'config.json'), '{}');
    expect(checkRunFolder(tempDir('empty-run'), { resume: false })).toEqual([]);
    expect(checkRunFolder(dir, { resume: true })).toEqual([]);
    expect(() => checkRunFolder(dir, { resume: false })).toThrow(
      /already holds a run \(config.json, pipeline, vae-stage\); pass --resume to continue it or --overwrite to start over/,
    );
    // The U-Net stage alone starts beside a trained VAE; its own outputs are what count then.
    expect(checkRunFolder(dir, { resume: false, stage: 'unet', overwrite: true })).toEqual(['pipeline']);
    const old = checkRunFolder(dir, { resume: false, overwrite: true });
    clearPreviousRun(dir, old);
    expect(readdirSync(dir)).toEqual(['cache']);
  });

  it('clears what interrupted writes left: partial checkpoints, pipelines and temp files', () => {
    const dir = tempDir('partials');
    for (const d of ['.step-000004.partial-123', 'pipeline.partial-456-kx2', 'step-000002']) mkdirSync(path.join(dir, d));
    writeFileSync(path.join(dir, '.latest.tmp-99-abc'), 'x');
    removePartials(dir);
    expect(readdirSync(dir)).toEqual(['step-000002']);
  });
});

describe('the train command on a run folder', () => {
  const repo = path.resolve(import.meta.dirname, '../..');
  const train = (args: string[]) =>
    runCommand(process.execPath, ['--import', 'tsx', path.join(repo, 'scripts', 'train.ts'), ...args], {
      cwd: repo,
      env: { ...process.env, TXT2IMG_BACKEND: 'cpu' },
      timeout: 300_000,
    });
  const config = (dir: string) => {
    const file = path.join(dir, 'c.json');
    writeFileSync(file, readFileSync(path.join(repo, 'configs', 'mnist.json')));
    return file;
  };

  it('refuses a folder another live process holds, and an existing run without --resume, writing nothing', async () => {
    const dir = tempDir('train-lock');
    const run = path.join(dir, 'run');
    mkdirSync(run);
    const { spawn } = await import('node:child_process');
    const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
    try {
      writeFileSync(path.join(run, LOCK_NAME), JSON.stringify({ pid: holder.pid, host: os.hostname(), started: 'now', command: 'train --out run' }));
      const r = await train(['--config', config(dir), '--out', run]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`^error: run folder .*run is in use by process ${holder.pid} \\(train --out run, since now\\)`, 'm'));
    } finally {
      holder.kill();
    }
    writeFileSync(path.join(run, LOCK_NAME), '');
    writeFileSync(path.join(run, 'config.json'), '{"old": true}');
    const r = await train(['--config', config(dir), '--out', run]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/already holds a run \(config.json\); pass --resume to continue it or --overwrite to start over/);
    expect(readFileSync(path.join(run, 'config.json'), 'utf8')).toBe('{"old": true}'); // untouched
    expect(existsSync(path.join(run, LOCK_NAME))).toBe(false); // the stale (empty) lock went, ours too
  });
});

describe('removePartials', () => {
  it('leaves other files alone', () => {
    const dir = tempDir('partials-none');
    writeFileSync(path.join(dir, 'model_index.json'), '{}');
    removePartials(dir);
    expect(readdirSync(dir)).toEqual(['model_index.json']);
  });
});
