/**
 * Crash-safe file primitives: every write goes to a temporary name in the same folder, is
 * fsynced, then renamed over the target, so a crash mid-save leaves the previous file intact;
 * whole folders are written under a temporary name and swapped in (replaceDirAtomic).
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';

/** The environment variable that names a crash point (tests/train/crash-safety.test.ts). */
export const CRASH_AT_ENV = 'TXT2IMG_CRASH_AT';
const crashCounts = new Map<string, number>();

/**
 * Fault injection for the crash-safety test: with TXT2IMG_CRASH_AT=NAME:N, the Nth time the run
 * reaches point NAME the process kills itself as `kill -9` would (no cleanup, no exit handlers).
 * Without the variable it does nothing.
 */
export function crashPoint(name: string): void {
  const spec = process.env[CRASH_AT_ENV];
  if (!spec?.startsWith(`${name}:`)) return;
  const n = (crashCounts.get(name) ?? 0) + 1;
  crashCounts.set(name, n);
  if (n === Number(spec.slice(name.length + 1))) process.kill(process.pid, 'SIGKILL');
}

function fsyncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic there.
  }
}

/** Writes data to `file` atomically (temp file in the same folder, fsync, rename, fsync folder). */
export function writeFileAtomic(file: string, data: Buffer | string): void {
  const dir = path.dirname(file);
  mkdirSync(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${Date.now().toString(36)}`);
  const fd = openSync(tmp, 'w');
  try {
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    // Node's write errors (ENOSPC, EIO) do not name the file.
    throw new Error(`cannot write ${file}: ${(e as Error).message}`);
  }
  closeSync(fd);
  renameSync(tmp, file);
  fsyncDir(dir);
}

export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, `${JSON.stringify(value, null, 2)}\n`);
}

export function readJson(file: string, what: string): unknown {
  if (!existsSync(file)) throw new Error(`${what}: ${file} does not exist`);
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${what}: ${file} is not valid JSON (${(e as Error).message})`);
  }
}

/**
 * Makes `tmpDir` (a fully written folder) become `finalDir`. An existing `finalDir` is moved
 * aside first and removed only after the swap; if the process dies between the two renames,
 * `recoverDir` restores the previous folder on the next start.
 */
export function replaceDirAtomic(tmpDir: string, finalDir: string): void {
  const old = `${finalDir}.old`;
  rmSync(old, { recursive: true, force: true });
  if (existsSync(finalDir)) renameSync(finalDir, old);
  crashPoint('swap'); // between the two renames: recoverDir's case
  renameSync(tmpDir, finalDir);
  fsyncDir(path.dirname(finalDir));
  rmSync(old, { recursive: true, force: true });
}

/** Restores `finalDir` from `finalDir.old` when a previous replaceDirAtomic was interrupted. */
export function recoverDir(finalDir: string): void {
  const old = `${finalDir}.old`;
  if (!existsSync(finalDir) && existsSync(old)) renameSync(old, finalDir);
  else if (existsSync(old)) rmSync(old, { recursive: true, force: true });
}

/** A temporary sibling folder name for writing a folder that replaceDirAtomic will swap in. */
export function tempDirFor(finalDir: string): string {
  return `${finalDir}.partial-${process.pid}-${Date.now().toString(36)}`;
}
