#!/usr/bin/env node
// Entry point of `npx txt2img`: the compiled CLI (dist/, built by `npm install` / `npm run build`).
// In a source checkout whose src/ or scripts/ changed after the last build, it runs the
// TypeScript through tsx instead (a devDependency), so an edit is never shadowed by stale output.
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const compiled = path.join(root, 'dist', 'scripts', 'txt2img.js');

/** Newest modification time of the .ts files under the given folders (0 when there are none). */
function newestSource(dirs) {
  let newest = 0;
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  for (const d of dirs) if (existsSync(d)) walk(d);
  return newest;
}

const stale = !existsSync(compiled) || newestSource([path.join(root, 'src'), path.join(root, 'scripts')]) > statSync(compiled).mtimeMs;
if (stale) {
  const { register } = await import('tsx/esm/api').catch(() => {
    console.error(`error: ${compiled} is missing or older than the sources, and tsx is not installed to run them; run \`npm run build\``);
    process.exit(1);
  });
  register();
  await import(pathToFileURL(path.join(root, 'scripts', 'txt2img.ts')).href);
} else {
  await import(pathToFileURL(compiled).href);
}
