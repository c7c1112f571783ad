/**
 * The source tree's layout (docs/CONVENTIONS.md): no import cycles, every import runs down the
 * floors below, and the commands load only what they use (training loads no evaluation code).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { cycles, importGraph, staticClosure, upwardImports } from './layout.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The rooms of src/, bottom floor first: a room imports only rooms on floors below its own. */
const FLOORS = [
  'random',
  'backend',
  'nn',
  'checkpoint',
  'optim',
  'image',
  'schedulers',
  'data',
  'unet',
  'vae',
  'onnx',
  'text',
  'pipeline',
  'server',
  'train',
  'classifier',
  'eval',
  'bench',
  'toy',
  '.', // src/index.ts: the library's public API
] as const;

describe('the checks themselves', () => {
  const graph = (pairs: [string, string][]) => {
    const edges = new Map<string, Set<string>>();
    for (const [a, b] of pairs) {
      if (!edges.has(a)) edges.set(a, new Set());
      if (!edges.has(b)) edges.set(b, new Set());
      edges.get(a)!.add(b);
    }
    return edges;
  };

  it('find a cycle of three files, and none in a diamond', () => {
    expect(
      cycles(
        graph([
          ['a', 'b'],
          ['b', 'c'],
          ['c', 'a'],
          ['c', 'd'],
        ]),
      ),
    ).toEqual([['a', 'b', 'c']]);
    expect(
      cycles(
        graph([
          ['a', 'b'],
          ['a', 'c'],
          ['b', 'd'],
          ['c', 'd'],
        ]),
      ),
    ).toEqual([]);
  });

  it('find an upward import and a room without a floor', () => {
    const edges = graph([
      ['src/pipeline/p.ts', 'src/train/t.ts'],
      ['src/train/t.ts', 'src/pipeline/p.ts'],
      ['src/x/y.ts', 'src/random/generator.ts'],
    ]);
    expect(upwardImports(edges, ['random', 'pipeline', 'train'])).toEqual([
      'src/pipeline/p.ts -> src/train/t.ts (pipeline imports train, a floor above it)',
      "src/x/y.ts: room 'x' has no floor",
    ]);
  });
});

describe('src/ layout', () => {
  const { edges, staticEdges } = importGraph(ROOT, ['src', 'scripts']);
  const src = new Map([...edges].filter(([f]) => f.startsWith('src/')));

  it('has no import cycles', () => {
    expect(cycles(src)).toEqual([]);
  });

  it('imports only downward, room by room', () => {
    expect(upwardImports(src, FLOORS)).toEqual([]);
  });

  it('imports only files that exist', () => {
    const missing = [...edges].flatMap(([f, targets]) => [...targets].filter((t) => !edges.has(t)).map((t) => `${f} -> ${t}`));
    expect(missing).toEqual([]);
  });

  it('train loads no evaluation, benchmark or classifier code', () => {
    const loaded = [...staticClosure(staticEdges, 'scripts/train.ts')];
    expect(loaded.filter((f) => /^src\/(eval|bench|classifier)\//.test(f))).toEqual([]);
  });

  it('txt2img loads no training code and no ONNX exporter until the onnx runtime is used', () => {
    const loaded = [...staticClosure(staticEdges, 'scripts/txt2img.ts')];
    expect(loaded.filter((f) => /^src\/(train|eval|bench|classifier)\/|^src\/onnx\/(export|trace|gradients)\.ts$/.test(f))).toEqual([]);
  });
});
