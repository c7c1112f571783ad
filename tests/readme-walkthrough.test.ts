/**
 * The README's "Training your own folder" walk-through, run as written: the bash block between
 * `<!-- walkthrough:start -->` and `<!-- walkthrough:end -->` is extracted and run by bash in an
 * empty temp folder that sees the repository's files (bin, configs, models, scripts, src, ...)
 * through symlinks, so everything it writes (data/, runs/, my-model/, ...) lands there.
 *
 * Two things differ from a user's terminal, and only these: `npx txt2img` / `npx tsx` are a shell
 * function calling the repository's bin/txt2img.mjs and node_modules/.bin/tsx (npm's own lookup
 * of a project's bin runs through its npx cache, which a temp folder does not have), and the two
 * training step counts (`--set vaeTraining.steps=N --set unetTraining.steps=N`) are replaced by
 * TXT2IMG_WALKTHROUGH_STEPS (default 2; `readme` keeps the README's counts) so that the file takes
 * about a minute on 2 cores.
 *
 * Checked: every file the block says it makes, and that the moved pipeline still generates the
 * same image once the folders it was trained from are gone (it carries its text model).
 */
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { runCommand } from './helpers.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The bash block between the walk-through markers of README.md. */
function walkthroughBlock(readme: string): string {
  const m = /<!-- walkthrough:start -->\s*```bash\n([\s\S]*?)```\s*<!-- walkthrough:end -->/.exec(readme);
  if (!m) throw new Error('README.md has no ```bash block between <!-- walkthrough:start --> and <!-- walkthrough:end -->');
  return m[1];
}

/** The block with its two training step counts replaced (each must occur exactly once). */
function withSteps(block: string, steps: number | 'readme'): string {
  let out = block;
  for (const stage of ['vaeTraining', 'unetTraining']) {
    const re = new RegExp(`--set ${stage}\\.steps=(\\d+)`, 'g');
    const found = block.match(re) ?? [];
    if (found.length !== 1) throw new Error(`the walk-through must set ${stage}.steps exactly once with --set, found ${found.length}`);
    if (steps !== 'readme') out = out.replace(re, `--set ${stage}.steps=${steps}`);
  }
  return out;
}

function stepsFromEnv(): number | 'readme' {
  const v = process.env.TXT2IMG_WALKTHROUGH_STEPS ?? '2';
  if (v === 'readme') return v;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`TXT2IMG_WALKTHROUGH_STEPS must be a positive integer or 'readme', got '${v}'`);
  return n;
}

/** `npx` for the two commands the block uses, from this repository. */
const NPX_SHIM = `npx() {
  case "$1" in
    txt2img) shift; node "$TXT2IMG_REPO/bin/txt2img.mjs" "$@" ;;
    tsx) shift; "$TXT2IMG_REPO/node_modules/.bin/tsx" "$@" ;;
    *) echo "walk-through test: unexpected npx $1" >&2; return 127 ;;
  esac
}
`;

/** The environment without this project's settings: a user's fresh terminal has none of them. */
const userEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TXT2IMG_')));

/** Runs a bash script (errexit, nounset, pipefail) in `cwd`; stdout and stderr together. */
async function bash(script: string, cwd: string): Promise<{ code: number | null; out: string }> {
  const r = await runCommand('bash', ['-euo', 'pipefail', '-c', script], { cwd, env: { ...userEnv, TXT2IMG_REPO: repo } });
  return { code: r.code, out: `${r.stdout}\n${r.stderr}` };
}

async function pixels(file: string): Promise<{ width: number; height: number; data: number[] }> {
  const { data, info } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, data: Array.from(data) };
}

describe('README walk-through: train on a captioned folder, generate, move, bundle', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('extracts one block with both step counts, and refuses a README without one', () => {
    const block = walkthroughBlock(readFileSync(path.join(repo, 'README.md'), 'utf8'));
    expect(withSteps(block, 3)).toMatch(/--set vaeTraining\.steps=3 --set unetTraining\.steps=3/);
    expect(() => walkthroughBlock('# no walk-through')).toThrow(/no ```bash block/);
    expect(() => withSteps('npx tsx scripts/train.ts --set unetTraining.steps=5', 2)).toThrow(/vaeTraining\.steps exactly once/);
  });

  it('runs as written and gives a relocatable pipeline and a bundle', async () => {
    const block = withSteps(walkthroughBlock(readFileSync(path.join(repo, 'README.md'), 'utf8')), stepsFromEnv());
    const dir = mkdtempSync(path.join(os.tmpdir(), 'txt2img-walkthrough-'));
    dirs.push(dir);
    for (const f of ['bin', 'configs', 'models', 'node_modules', 'package.json', 'scripts', 'src', 'tsconfig.json', 'dist']) {
      if (existsSync(path.join(repo, f))) symlinkSync(path.join(repo, f), path.join(dir, f));
    }
    const run = await bash(NPX_SHIM + block, dir);
    expect(run.code, run.out).toBe(0);

    // What each step says it makes.
    expect(existsSync(path.join(dir, 'data/my-scenes/train/00000.png'))).toBe(true);
    expect(existsSync(path.join(dir, 'data/my-scenes/train/00000.txt'))).toBe(true);
    expect(existsSync(path.join(dir, 'data/tiny-clip/onnx/text_model.onnx'))).toBe(true);
    expect(existsSync(path.join(dir, 'runs/mine/unet-stage/loss.jsonl'))).toBe(true);
    expect(existsSync(path.join(dir, 'runs/mine/pipeline'))).toBe(false); // moved
    for (const f of ['model_index.json', 'text_encoder/config.json', 'training_vocabulary.json', 'unet/diffusion_pytorch_model.safetensors']) {
      expect(existsSync(path.join(dir, 'my-model', f)), f).toBe(true);
    }
    for (const f of ['README.md', 'tokenizer/tokenizer.json', 'text_encoder/model.safetensors']) {
      expect(existsSync(path.join(dir, 'my-bundle', f)), f).toBe(true);
    }
    const mine = await pixels(path.join(dir, 'mine.png'));
    expect([mine.width, mine.height]).toEqual([32, 32]);
    expect((await pixels(path.join(dir, 'moved.png'))).data).toEqual(mine.data);
    const bundled = await pixels(path.join(dir, 'bundled.png'));
    expect([bundled.width, bundled.height]).toEqual([32, 32]);

    // No path in the moved pipeline's text encoder config leads outside it.
    const enc = JSON.parse(readFileSync(path.join(dir, 'my-model/text_encoder/config.json'), 'utf8'));
    for (const k of ['modelId', 'tokenizerId']) {
      if (typeof enc[k] === 'string') expect(enc[k], k).toMatch(/^\.\.?\/(?!\.\.)/);
    }

    // The data and the run it came from gone, the moved pipeline still draws the same image.
    renameSync(path.join(dir, 'data'), path.join(dir, 'data-gone'));
    rmSync(path.join(dir, 'runs'), { recursive: true, force: true });
    const movedLine = /^npx txt2img --model my-model .* --out moved\.png$/m.exec(block);
    expect(movedLine, 'the block generates from the moved folder with --out moved.png').not.toBeNull();
    const again = await bash(NPX_SHIM + (movedLine?.[0] ?? '').replace('moved.png', 'again.png'), dir);
    expect(again.code, again.out).toBe(0);
    expect((await pixels(path.join(dir, 'again.png'))).data).toEqual(mine.data);
  });
});
