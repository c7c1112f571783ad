/**
 * The published package as a user gets it: `npm pack`, install the tarball into an empty project,
 * then use it both ways: the library API from a plain .mjs file, and the `txt2img` bin. Needs the
 * npm registry (for the dependencies), as `npm install` does.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { getPngText } from '../src/image/png-text.js';
import { parseInfotext } from '../src/image/infotext.js';
import { tempDir } from './fixtures/captioned.js';
import { runCommand } from './helpers.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

async function run(cmd: string, args: string[], cwd: string, timeout = 300_000) {
  const env: NodeJS.ProcessEnv = { ...process.env, TXT2IMG_BACKEND: 'wasm', npm_config_audit: 'false', npm_config_fund: 'false' };
  // Nothing from this repository's environment: the consumer has only what it installed.
  for (const k of ['TXT2IMG_LOCAL_MODELS', 'NODE_OPTIONS', 'VITEST', 'VITEST_POOL_ID', 'VITEST_WORKER_ID']) delete env[k];
  const r = await runCommand(cmd, args, { cwd, env, timeout });
  return { code: r.code, out: `${r.stdout}\n${r.stderr}` };
}

describe('the packed package in an empty project', () => {
  it('installs from its tarball, imports as a library from .mjs, and runs the txt2img bin', async () => {
    const work = tempDir('pack');
    const packed = await run('npm', ['pack', '--pack-destination', work], repo);
    expect(packed.code, packed.out).toBe(0);
    const tarball = readdirSync(work).find((f) => f.endsWith('.tgz'));
    expect(tarball).toBeDefined();

    const app = path.join(work, 'app');
    // transformers.js 2.17 asks for sharp 0.32, whose install downloads libvips from GitHub; the
    // override takes the sharp this package uses (prebuilt binaries from the npm registry).
    mkdirSync(app);
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module', overrides: { sharp: '^0.33.5' } }));
    const installed = await run('npm', ['install', path.join(work, tarball!)], app);
    expect(installed.code, installed.out).toBe(0);

    // The library: types and compiled JavaScript from dist/, the bundled model by default.
    writeFileSync(
      path.join(app, 'use.mjs'),
      [
        "import { writeFileSync } from 'node:fs';",
        "import { pipeline, SAMPLER_NAMES } from 'txt2img';",
        "const generate = await pipeline(undefined, { runtime: 'tfjs' });",
        "const [image] = await generate('a red square', { steps: 3, seed: 1, sampler: 'Euler a' });",
        "writeFileSync('lib.png', image.png);",
        'generate.dispose();',
        'console.log(JSON.stringify({ samplers: SAMPLER_NAMES.length, parameters: image.parameters }));',
      ].join('\n'),
    );
    const lib = await run('node', ['use.mjs'], app);
    expect(lib.code, lib.out).toBe(0);
    const result = JSON.parse(
      lib.out
        .trim()
        .split('\n')
        .find((l) => l.startsWith('{'))!,
    );
    expect(result.samplers).toBeGreaterThan(8);
    expect(parseInfotext(result.parameters)).toMatchObject({ prompt: 'a red square', params: { Steps: '3', Sampler: 'Euler a', Seed: '1' } });
    expect(getPngText(readFileSync(path.join(app, 'lib.png')), 'parameters')).toBe(result.parameters);
    expect(existsSync(path.join(app, 'node_modules', 'txt2img', 'src'))).toBe(false); // compiled output only
    // txt2img serve's page, copied beside the compiled server by the build
    for (const f of ['index.html', 'app.js', 'style.css'])
      expect(existsSync(path.join(app, 'node_modules', 'txt2img', 'dist', 'src', 'server', 'page', f))).toBe(true);

    // The bin, as `npx txt2img` runs it there.
    const help = await run('npx', ['txt2img', '--help'], app);
    expect(help.code, help.out).toBe(0);
    expect(help.out).toMatch(/--sampler/);
    const cli = await run('npx', ['txt2img', 'a blue circle', '--steps', '3', '--out', 'cli.png', '--quiet'], app);
    expect(cli.code, cli.out).toBe(0);
    expect(parseInfotext(getPngText(readFileSync(path.join(app, 'cli.png')), 'parameters')!).prompt).toBe('a blue circle');
  }, 600_000);
});
