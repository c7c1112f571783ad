/**
 * `txt2img serve` as a user starts it: the bin in a child process on a free port (--port 0), its
 * address read from the line it prints; stopped with SIGTERM as Ctrl-C would.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.join(repo, 'bin', 'txt2img.mjs');
export const DEFAULT_MODEL = path.join(repo, 'models', 'default');

export interface ServeProcess {
  url: string;
  pid: number;
  child: ChildProcess;
  /** Everything the server wrote to stderr so far. */
  log(): string;
  stop(): Promise<void>;
}

/** Starts the server with these extra flags; resolves once it listens (rejects if it exits first). */
export function startServe(args: string[], options: { timeout?: number; env?: NodeJS.ProcessEnv } = {}): Promise<ServeProcess> {
  const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', ...args], {
    env: { ...process.env, TXT2IMG_BACKEND: process.env.TXT2IMG_BACKEND ?? 'wasm', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`txt2img serve did not start in time:\n${stderr}`));
    }, options.timeout ?? 120_000);
    child.stdout!.setEncoding('utf8').resume();
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      const m = /listening on (http:\/\/\S+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve({
          url: m[1],
          pid: child.pid!,
          child,
          log: () => stderr,
          stop: async () => {
            if (child.exitCode === null) child.kill('SIGTERM');
            await exited;
          },
        });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`txt2img serve exited with code ${code} before listening:\n${stderr}`));
    });
  });
}
