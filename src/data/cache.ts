/**
 * A cache for the outputs of frozen encoders (VAE latents `[N, h, w, c]`, text embeddings
 * `[N, T, D]`, ...), so training does not re-encode the dataset every run.
 *
 * Each entry is one safetensors file `<dir>/<name>.safetensors` holding named float32 arrays,
 * with the fingerprint of everything the arrays depend on in the header metadata. An entry is
 * reused only while its fingerprint matches; otherwise it is recomputed and replaced. Writes are
 * atomic (temp file, fsync, rename), so a crash never leaves a half-written entry, and an
 * unreadable file counts as a miss.
 *
 * The fingerprint should cover the dataset (file list, sizes, mtimes, captions: see
 * datasetFingerprint), the encoder config and a hash of its weights (hashArrays), and the
 * preprocessing (size, channels, crop). Random crops or flips change the encoder input every
 * epoch, so cache latents only for deterministic preprocessing (center crop, no flip).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../checkpoint/files.js';
import { decodeSafetensors, encodeSafetensors } from '../checkpoint/safetensors.js';
import type { NamedArray } from '../nn/params.js';
import type { CaptionedDataset } from './captioned.js';

export const CACHE_FORMAT = 'txt2img-encoder-cache/1';

/** JSON with object keys sorted at every level (so equal values give equal text). */
export function stableStringify(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v) && !ArrayBuffer.isView(v)) {
      const o = v as Record<string, unknown>;
      return Object.fromEntries(
        Object.keys(o)
          .sort()
          .map((k) => [k, o[k]]),
      );
    }
    if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number>);
    return v;
  });
}

/** SHA-256 (hex) of the stable JSON of the parts. */
export function fingerprint(...parts: unknown[]): string {
  return createHash('sha256').update(stableStringify(parts)).digest('hex');
}

/** SHA-256 (hex) over names, shapes and float32 bytes of arrays (e.g. encoder weights). */
export function hashArrays(arrays: Map<string, NamedArray>): string {
  const h = createHash('sha256');
  for (const name of [...arrays.keys()].sort()) {
    const a = arrays.get(name)!;
    h.update(`${name}\0${a.shape.join(',')}\0`);
    h.update(Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength));
  }
  return h.digest('hex');
}

/** What of a scanned dataset the encoder outputs depend on: paths, sizes, mtimes, captions. */
export function datasetFingerprint(dataset: CaptionedDataset): string {
  return fingerprint(dataset.items.map((it) => ({ path: it.relPath, bytes: it.bytes, mtimeMs: it.mtimeMs, captions: it.captions })));
}

export interface CacheLookup {
  arrays: Map<string, NamedArray> | null;
  /** Why it missed ('' on a hit). */
  reason: string;
}

export class EncoderCache {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = path.resolve(dir);
  }

  file(name: string): string {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) {
      throw new Error(`cache entry name ${JSON.stringify(name)} must be letters, digits, '.', '_' or '-' (starting with a letter or digit)`);
    }
    return path.join(this.dir, `${name}.safetensors`);
  }

  /** The entry's arrays if it exists and its fingerprint matches; else null and why. */
  lookup(name: string, fp: string): CacheLookup {
    const file = this.file(name);
    if (!existsSync(file)) return { arrays: null, reason: 'not cached yet' };
    let decoded: ReturnType<typeof decodeSafetensors>;
    try {
      decoded = decodeSafetensors(readFileSync(file), file);
    } catch (e) {
      return { arrays: null, reason: `unreadable cache file (${(e as Error).message})` };
    }
    if (decoded.metadata.format !== CACHE_FORMAT) return { arrays: null, reason: `not a cache file of format ${CACHE_FORMAT}` };
    if (decoded.metadata.fingerprint !== fp) return { arrays: null, reason: 'fingerprint changed (dataset, encoder or settings differ)' };
    return { arrays: decoded.tensors, reason: '' };
  }

  load(name: string, fp: string): Map<string, NamedArray> | null {
    return this.lookup(name, fp).arrays;
  }

  /** Writes an entry atomically. `info` adds free-form string metadata. */
  save(name: string, fp: string, arrays: Map<string, NamedArray>, info: Record<string, string> = {}): void {
    const file = this.file(name);
    writeFileAtomic(file, encodeSafetensors(arrays, { ...info, format: CACHE_FORMAT, fingerprint: fp }));
  }

  delete(name: string): void {
    rmSync(this.file(name), { force: true });
  }

  /** Returns the cached arrays, or computes, saves and returns them. */
  async getOrCompute(
    name: string,
    fp: string,
    compute: () => Promise<Map<string, NamedArray>> | Map<string, NamedArray>,
  ): Promise<{ arrays: Map<string, NamedArray>; hit: boolean; reason: string }> {
    const found = this.lookup(name, fp);
    if (found.arrays) return { arrays: found.arrays, hit: true, reason: '' };
    const arrays = await compute();
    this.save(name, fp, arrays);
    return { arrays, hit: false, reason: found.reason };
  }
}
