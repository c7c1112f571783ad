#!/usr/bin/env node
// Part of `npm run build`: copies the files tsc does not emit (the web page of `txt2img serve`,
// src/server/page/) next to the compiled code in dist/, so the packed package serves them.
import { cpSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const from = path.join(root, 'src', 'server', 'page');
const to = path.join(root, 'dist', 'src', 'server', 'page');
rmSync(to, { recursive: true, force: true });
cpSync(from, to, { recursive: true });
