// Runs a snippet in a fresh Node process (initBackend caches its choice per process).
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** A file: URL for a module of the project, for `await import(...)` inside a snippet. */
export const moduleUrl = (rel: string): string => pathToFileURL(path.join(ROOT, rel)).href;

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  timedOut: boolean;
}

/**
 * `node --import tsx --input-type=module -e <code>` in the project root with `env` added to
 * (or, for undefined values, removed from) this process' environment. The child must exit by
 * itself: after `timeoutMs` it is killed and `timedOut` is set.
 */
export function runChild(code: string, env: Record<string, string | undefined> = {}, timeoutMs = 60_000): Promise<ChildResult> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env };
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete childEnv[k];
    else childEnv[k] = v;
  }
  // vitest's own settings must not leak into the child
  delete childEnv.NODE_OPTIONS;
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      cwd: ROOT,
      env: childEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - t0, timedOut });
    });
  });
}

/** The last line of stdout that parses as JSON. */
export function lastJson<T>(out: string): T {
  const lines = out.trim().split('\n').reverse();
  for (const l of lines) {
    try {
      return JSON.parse(l) as T;
    } catch {
      // not this one
    }
  }
  throw new Error(`no JSON line in child output:\n${out}`);
}
