/**
 * A run folder has one owner at a time: a lock file (`run.lock`: PID, host, start time) taken
 * before anything in the folder is written and removed when the run ends. A lock whose process
 * is gone (same host) is stale and taken over; a live one refuses the second writer, naming it.
 * Also the start-up rules: an existing run is continued only with `resume`, replaced only with
 * `overwrite`, and what a killed run left half-written is cleared.
 */
import { closeSync, existsSync, openSync, readFileSync, readdirSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const LOCK_NAME = 'run.lock';

interface LockInfo {
  pid: number;
  host: string;
  started: string;
  command: string;
}

/** Whether process `pid` on this host is running (a process we may not signal is running too). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readLock(file: string): LockInfo | undefined {
  try {
    const j = JSON.parse(readFileSync(file, 'utf8')) as Partial<LockInfo>;
    return typeof j.pid === 'number' && typeof j.host === 'string' ? (j as LockInfo) : undefined;
  } catch {
    return undefined; // being written, or garbage: handled as stale below
  }
}

export class RunLock {
  private released = false;
  private readonly onExit = () => this.release();

  private constructor(readonly file: string) {
    process.once('exit', this.onExit);
  }

  /**
   * Takes the run folder's lock (creating the folder). Throws, naming the holder, when another
   * live process holds it; takes over a stale one (reported through `log`).
   */
  static acquire(runDir: string, log: (line: string) => void = () => {}): RunLock {
    const file = path.join(runDir, LOCK_NAME);
    const me: LockInfo = { pid: process.pid, host: os.hostname(), started: new Date().toISOString(), command: process.argv.slice(1).join(' ') };
    for (let attempt = 0; attempt < 3; attempt++) {
      let fd: number;
      try {
        fd = openSync(file, 'wx');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`run folder ${runDir} does not exist and could not be used`);
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const held = readLock(file);
        if (held && held.host !== me.host) {
          throw new Error(
            `run folder ${runDir} is locked by process ${held.pid} on host ${held.host} (since ${held.started}); if no run is using it, delete ${file}`,
          );
        }
        if (held && alive(held.pid)) {
          throw new Error(
            `run folder ${runDir} is in use by process ${held.pid} (${held.command || 'a training run'}, since ${held.started}); wait for it or stop it`,
          );
        }
        log(`run folder: removed the stale lock of process ${held?.pid ?? '?'} (no longer running)`);
        rmSync(file, { force: true });
        continue;
      }
      try {
        writeSync(fd, `${JSON.stringify(me)}\n`);
      } finally {
        closeSync(fd);
      }
      return new RunLock(file);
    }
    throw new Error(`run folder ${runDir}: could not take ${file} (another run keeps taking it)`);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    process.off('exit', this.onExit);
    try {
      const held = readLock(this.file);
      if (held?.pid === process.pid) unlinkSync(this.file);
    } catch {
      // already gone
    }
  }
}

/** What a previous run left in a folder: anything but the lock and the encoder cache. */
function previousRun(runDir: string): string[] {
  if (!existsSync(runDir)) return [];
  return readdirSync(runDir).filter((f) => f !== LOCK_NAME && f !== 'cache' && !f.startsWith('.'));
}

/** What the U-Net stage alone writes: starting it beside a trained VAE is not a second run. */
const UNET_STAGE_OUTPUTS = ['unet-stage', 'pipeline'];

/**
 * Start-up rule for a folder that already holds a run: continue it (`resume`) or replace it
 * (`overwrite`), else refuse, saying how to choose. Only what the stages being started write
 * counts (`unet` alone runs beside the trained VAE of an earlier `vae` stage). Returns what
 * `overwrite` will remove (the caller removes it with clearPreviousRun once the new run's inputs
 * are known good).
 */
export function checkRunFolder(runDir: string, o: { resume: boolean; overwrite?: boolean; stage?: 'vae' | 'unet' | 'all' }): string[] {
  const old = previousRun(runDir).filter((f) => o.stage !== 'unet' || UNET_STAGE_OUTPUTS.includes(f));
  if (old.length === 0 || o.resume) return [];
  if (!o.overwrite) {
    throw new Error(
      `run folder ${runDir} already holds a run (${old.slice(0, 4).join(', ')}${old.length > 4 ? ', ...' : ''}); pass --resume to continue it or --overwrite to start over`,
    );
  }
  return old;
}

/** Removes a previous run's files (checkRunFolder's list); the latent cache stays. */
export function clearPreviousRun(runDir: string, old: string[], log?: (line: string) => void): void {
  if (old.length === 0) return;
  for (const f of old) rmSync(path.join(runDir, f), { recursive: true, force: true });
  log?.(`run folder: removed the previous run (${old.join(', ')}); the latent cache is kept`);
}

/** Removes what an interrupted write left in a folder: `.NAME.partial-PID...` and `NAME.partial-...` siblings. */
export function removePartials(dir: string, log?: (line: string) => void): void {
  if (!existsSync(dir)) return;
  for (const f of readdirSync(dir)) {
    if (!/\.partial-\d+/.test(f) && !/\.tmp-\d+-/.test(f)) continue;
    rmSync(path.join(dir, f), { recursive: true, force: true });
    log?.(`run folder: removed ${path.join(dir, f)}, left by an interrupted write`);
  }
}
