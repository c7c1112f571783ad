/**
 * The models a server offers (A1111's checkpoints, /sdapi/v1/sd-models) and the one it holds in
 * memory. A model is a pipeline folder: the one given with --model, and every pipeline folder
 * directly inside --models DIR. Its hash is SHA-256 over the folder's files (names and bytes, in
 * name order), shown as A1111 shows a checkpoint's: the first 10 hex digits.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { Txt2ImgPipeline, readModelIndex } from '../pipeline/pipeline.js';

export interface ModelEntry {
  /** The folder's name (A1111's model_name). */
  name: string;
  /** Absolute path of the pipeline folder. */
  dir: string;
  sha256: string;
  /** The first 10 hex digits of sha256 (A1111's short hash). */
  hash: string;
  /** Image size the model was trained at (model_index.json). */
  imageSize: number;
}

/** A1111's checkpoint title: "name [hash]". */
export function modelTitle(e: ModelEntry): string {
  return `${e.name} [${e.hash}]`;
}

function filesUnder(dir: string, rel = ''): string[] {
  return readdirSync(path.join(dir, rel), { withFileTypes: true })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .flatMap((e) => {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) return filesUnder(dir, r);
      return e.isFile() ? [r] : [];
    });
}

const hashes = new Map<string, { stamp: string; sha256: string }>();

/** SHA-256 of a folder's files (relative names and contents); cached while sizes and times stay the same. */
export function folderSha256(dir: string): string {
  const files = filesUnder(dir);
  const stamp = files.map((f) => `${f}:${statSync(path.join(dir, f)).size}:${statSync(path.join(dir, f)).mtimeMs}`).join('|');
  const hit = hashes.get(dir);
  if (hit?.stamp === stamp) return hit.sha256;
  const h = createHash('sha256');
  for (const f of files) {
    h.update(`${f}\0`);
    h.update(readFileSync(path.join(dir, f)));
  }
  const sha256 = h.digest('hex');
  hashes.set(dir, { stamp, sha256 });
  return sha256;
}

export class ModelCatalog {
  private entries: ModelEntry[] = [];

  /** `initial`: a pipeline folder; `modelsDir`: a folder of pipeline folders (optional). */
  constructor(
    readonly initial: string,
    readonly modelsDir?: string,
  ) {
    this.refresh();
  }

  /** Scans the folders again (POST /sdapi/v1/refresh-checkpoints). */
  refresh(): void {
    const dirs = [path.resolve(this.initial)];
    if (this.modelsDir) {
      if (!existsSync(this.modelsDir) || !statSync(this.modelsDir).isDirectory()) throw new Error(`--models ${this.modelsDir} is not a folder`);
      for (const e of readdirSync(this.modelsDir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
        const d = path.resolve(this.modelsDir, e.name);
        if (e.isDirectory() && existsSync(path.join(d, 'model_index.json')) && !dirs.includes(d)) dirs.push(d);
      }
    }
    const seen = new Set<string>();
    this.entries = dirs.map((dir) => {
      let name = path.basename(dir);
      // Two folders of the same name (--model and one under --models) keep apart by their parent.
      if (seen.has(name)) name = `${path.basename(path.dirname(dir))}/${name}`;
      seen.add(name);
      const sha256 = folderSha256(dir);
      return { name, dir, sha256, hash: sha256.slice(0, 10), imageSize: readModelIndex(dir).imageSize };
    });
  }

  list(): readonly ModelEntry[] {
    return this.entries;
  }

  /**
   * A model by any name A1111 accepts for a checkpoint: its title, name, short or full hash, or
   * path; a trailing ".safetensors"/".ckpt" and a " [hash]" part are ignored when nothing else fits.
   */
  find(key: string): ModelEntry | undefined {
    const k = key.trim();
    const by = (s: string) =>
      this.entries.find((e) => modelTitle(e) === s || e.name === s || e.hash === s || e.sha256 === s || e.dir === s || path.resolve(s) === e.dir);
    return by(k) ?? by(k.replace(/\s*\[[0-9a-f]+\]$/i, '').replace(/\.(safetensors|ckpt)$/i, ''));
  }

  /** "a [hash], b [hash]": for error messages. */
  describe(): string {
    return this.entries.map(modelTitle).join(', ');
  }
}

/** The one model in memory: switching loads the new one, then frees the old. */
export class ModelHolder {
  private current?: { entry: ModelEntry; pipe: Txt2ImgPipeline };

  constructor(private readonly load: (dir: string) => Promise<Txt2ImgPipeline>) {}

  get entry(): ModelEntry | undefined {
    return this.current?.entry;
  }

  get pipeline(): Txt2ImgPipeline | undefined {
    return this.current?.pipe;
  }

  /** The pipeline of `entry`, loaded if another one (or none) is in memory. */
  async use(entry: ModelEntry): Promise<Txt2ImgPipeline> {
    if (this.current?.entry.dir === entry.dir && this.current.entry.sha256 === entry.sha256) return this.current.pipe;
    const pipe = await this.load(entry.dir);
    this.current?.pipe.dispose();
    this.current = { entry, pipe };
    return pipe;
  }

  dispose(): void {
    this.current?.pipe.dispose();
    this.current = undefined;
  }
}

/** Loads a pipeline folder as the server does (Txt2ImgPipeline.load with the CLIP options). */
export function pipelineLoader(clip?: Parameters<typeof Txt2ImgPipeline.load>[1]): (dir: string) => Promise<Txt2ImgPipeline> {
  return (dir) => Txt2ImgPipeline.load(dir, clip);
}
