/**
 * The load measurement (scripts/load-test.ts) in small: 10 requests from 5 concurrent clients on
 * the bundled model all complete, in arrival order, nothing lost, no tensor left behind, and the
 * server's memory does not grow with the requests.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runCommand } from '../helpers.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

describe('txt2img serve under load', () => {
  const linux = process.platform === 'linux';
  it.skipIf(!linux)(`10 requests from 5 clients: all complete in order, memory flat${linux ? '' : ' (skipped: it reads /proc, Linux only)'}`, async () => {
    const r = await runCommand(
      process.execPath,
      ['--import', 'tsx', path.join(repo, 'scripts', 'load-test.ts'), '--requests', '10', '--clients', '5', '--steps', '3', '--runtime', 'tfjs', '--json'],
      { cwd: repo, env: { ...process.env, TXT2IMG_BACKEND: process.env.TXT2IMG_BACKEND ?? 'wasm' }, timeout: 400_000 },
    );
    expect(r.stderr).toBe('');
    const result = JSON.parse(r.stdout);
    expect(result).toMatchObject({ requests: 10, clients: 5, completed: 10, failed: [], inOrder: true, nothingLost: true });
    expect(result.tensors.end).toBe(result.tensors.start);
    // Flat: the requests after the first tenth add no more than a few MB of heap churn.
    expect(result.rssMb.end).toBeLessThan(result.rssMb.afterFirstTenth + 40);
    expect(result.rssMb.peak).toBeGreaterThanOrEqual(result.rssMb.end);
    expect(r.code).toBe(0);
  });
});
