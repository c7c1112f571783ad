#!/usr/bin/env node
// npm's `prepare` step: builds dist/ (`npm run build`) unless it is newer than every source.
// npm runs `prepare` at `npm install` and `npm pack`, and also the first time `npx txt2img` runs in
// a checkout: npm then "installs" the project into its npx cache (~/.npm/_npx/<hash>), which runs
// this script again. Recompiling an up-to-date tree there cost 40-55 s on 2 cores; the check
// costs milliseconds. `node scripts/prepare.mjs --force` always builds.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// The file bin/txt2img.mjs compares with the sources too; tsc rewrites it on every build.
const built = path.join(root, 'dist', 'scripts', 'txt2img.js');

/** Newest modification time of the files under `dirs` and of `files` (0 when there are none). */
function newest(dirs, files) {
  let t = 0;
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else t = Math.max(t, statSync(p).mtimeMs);
    }
  };
  for (const d of dirs) if (existsSync(d)) walk(d);
  for (const f of files) if (existsSync(f)) t = Math.max(t, statSync(f).mtimeMs);
  return t;
}

const sources = newest([path.join(root, 'src'), path.join(root, 'scripts')], [path.join(root, 'tsconfig.json'), path.join(root, 'tsconfig.build.json')]);
if (process.argv.includes('--force') || !existsSync(built) || sources > statSync(built).mtimeMs) {
  // npm sets npm_execpath to its own CLI while it runs a script; plain `npm` otherwise.
  const npm = process.env.npm_execpath;
  if (npm) execFileSync(process.execPath, [npm, 'run', 'build'], { cwd: root, stdio: 'inherit' });
  else execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' });
}
