/**
 * The import graph of the source tree, for tests/layout.test.ts: which file imports which
 * (static imports and re-exports, and dynamic `import('./x.js')` with a literal path), the rooms
 * (top-level folders of src/) and checks that the graph has no cycle and no import runs upward.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

/** `import ... from`, `export ... from` and `import '...'` statements with a relative path; group 1: `type` (erased at run time). */
const STATEMENT = /(?:^|\n)\s*(?:import|export)\s+(type\s+)?(?:[^'";]*?\bfrom\s*)?['"](\.{1,2}\/[^'"]+)['"]/g;
/** `import('...')` with a literal relative path: loaded when that line runs. */
const DYNAMIC = /\bimport\s*\(\s*['"](\.{1,2}\/[^'"]+)['"]/g;

export interface ImportGraph {
  /** file (relative to the root, '/'-separated) -> the files it imports */
  edges: Map<string, Set<string>>;
  /** the same, static value imports only (what loading a file loads at once) */
  staticEdges: Map<string, Set<string>>;
}

function sourceFiles(root: string, dir: string): string[] {
  return readdirSync(path.join(root, dir)).flatMap((name) => {
    const rel = `${dir}/${name}`;
    if (statSync(path.join(root, rel)).isDirectory()) return sourceFiles(root, rel);
    return /\.(ts|mjs)$/.test(name) ? [rel] : [];
  });
}

/** Imports of every .ts / .mjs file under `dirs` of `root`; a `.js` specifier names its `.ts` file. */
export function importGraph(root: string, dirs: string[]): ImportGraph {
  const edges = new Map<string, Set<string>>();
  const staticEdges = new Map<string, Set<string>>();
  for (const file of dirs.flatMap((d) => sourceFiles(root, d))) {
    const text = readFileSync(path.join(root, file), 'utf8');
    const all = new Set<string>();
    const stat = new Set<string>();
    const resolve = (spec: string) => path.posix.normalize(path.posix.join(path.posix.dirname(file), spec)).replace(/\.js$/, '.ts');
    for (const m of text.matchAll(STATEMENT)) {
      all.add(resolve(m[2]));
      if (!m[1]) stat.add(resolve(m[2]));
    }
    for (const m of text.matchAll(DYNAMIC)) all.add(resolve(m[1]));
    edges.set(file, all);
    staticEdges.set(file, stat);
  }
  return { edges, staticEdges };
}

/** Every cycle's files (strongly connected components of more than one file, or a self-import). */
export function cycles(edges: Map<string, Set<string>>): string[][] {
  // Tarjan's algorithm.
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || edges.get(v)?.has(v)) found.push(scc.sort());
    }
  };
  for (const v of edges.keys()) if (!index.has(v)) visit(v);
  return found;
}

/** The room of a file under src/: its top-level folder ('src/train/stages.ts' -> 'train'), or '.' for src/*.ts. */
export function roomOf(file: string): string {
  const parts = file.split('/');
  return parts.length > 2 ? parts[1] : '.';
}

/**
 * Imports that run upward: from a room to a room listed after it in `floors` (bottom first).
 * Rooms missing from `floors` are reported too, so a new room must be given its floor.
 */
export function upwardImports(edges: Map<string, Set<string>>, floors: readonly string[]): string[] {
  const floor = new Map(floors.map((r, i) => [r, i]));
  const problems: string[] = [];
  for (const [from, targets] of edges) {
    for (const to of targets) {
      const [a, b] = [roomOf(from), roomOf(to)];
      if (!floor.has(a)) problems.push(`${from}: room '${a}' has no floor`);
      else if (!floor.has(b)) problems.push(`${from} -> ${to}: room '${b}' has no floor`);
      else if (floor.get(b)! > floor.get(a)!) problems.push(`${from} -> ${to} (${a} imports ${b}, a floor above it)`);
    }
  }
  return [...new Set(problems)].sort();
}

/** Every file loaded, at once, by loading `entry` (the closure of its static imports). */
export function staticClosure(edges: Map<string, Set<string>>, entry: string): Set<string> {
  const seen = new Set<string>();
  const todo = [entry];
  while (todo.length) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    for (const g of edges.get(f) ?? []) todo.push(g);
  }
  return seen;
}
