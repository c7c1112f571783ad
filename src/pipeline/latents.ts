/**
 * `txt2img --latents FILE`: initial latents given as diffusers' `latents=` takes them, NCHW
 * [B, 4, h, w] standard normals, in a .npy file (float32 / float16 / float64, C order) or a
 * safetensors file holding one tensor, so an image can be reproduced across diffusers and us.
 * Converted to our NHWC layout; B must be the number of images, or 1 (the same start for each).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { decodeSafetensors } from '../checkpoint/safetensors.js';
import { halfBitsToFloat } from '../checkpoint/safetensors.js';

export interface LatentsFile {
  file: string;
  /** As stored: [B, c, h, w]. */
  shape: number[];
  /** Row-major NCHW values. */
  data: Float32Array;
  /** First 10 hex digits of the file's sha256, for the infotext. */
  hash: string;
}

/** Parses a .npy file (format 1.0-3.0) of float32, float16 or float64 values in C order. */
export function parseNpy(buf: Buffer, source: string): { shape: number[]; data: Float32Array } {
  if (buf.length < 10 || buf.readUInt8(0) !== 0x93 || buf.subarray(1, 6).toString('latin1') !== 'NUMPY')
    throw new Error(`${source}: not a .npy file (no \\x93NUMPY magic)`);
  const major = buf.readUInt8(6);
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + headerLen;
  if (start > buf.length) throw new Error(`${source}: .npy header longer than the file; truncated?`);
  const header = buf.subarray(major === 1 ? 10 : 12, start).toString('latin1');
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || !fortran || shapeText === undefined) throw new Error(`${source}: unreadable .npy header ${JSON.stringify(header.trim())}`);
  if (fortran === 'True') throw new Error(`${source}: Fortran-order arrays are not supported; save with np.ascontiguousarray`);
  const shape = shapeText
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '')
    .map(Number);
  const n = shape.reduce((a, b) => a * b, 1);
  const sizes: Record<string, number> = { '<f4': 4, '<f2': 2, '<f8': 8 };
  const size = sizes[descr];
  if (!size) throw new Error(`${source}: dtype '${descr}' is not supported; allowed: float32 '<f4', float16 '<f2', float64 '<f8'`);
  if (buf.length - start !== n * size) throw new Error(`${source}: ${buf.length - start} data bytes for shape (${shape.join(', ')}) of '${descr}'; truncated?`);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const at = start + i * size;
    data[i] = size === 4 ? buf.readFloatLE(at) : size === 8 ? buf.readDoubleLE(at) : halfBitsToFloat(buf.readUInt16LE(at));
  }
  return { shape, data };
}

/** Reads a latents file (.npy, or .safetensors with exactly one tensor). */
export function readLatentsFile(file: string): LatentsFile {
  if (!existsSync(file)) throw new Error(`--latents ${file} does not exist`);
  const buf = readFileSync(file);
  const hash = createHash('sha256').update(buf).digest('hex').slice(0, 10);
  const ext = path.extname(file).toLowerCase();
  if (ext === '.npy') return { file, hash, ...parseNpy(buf, file) };
  if (ext === '.safetensors') {
    const { tensors } = decodeSafetensors(buf, file);
    if (tensors.size !== 1)
      throw new Error(`${file}: must hold exactly one tensor (the latents), holds ${tensors.size}: ${[...tensors.keys()].slice(0, 5).join(', ')}`);
    const [t] = tensors.values();
    return { file, hash, shape: t.shape, data: t.data };
  }
  throw new Error(`--latents ${file}: must be a .npy or .safetensors file`);
}

/**
 * The latents for `batch` images as NHWC [batch, h, w, c] values: the file's [B, c, h, w]
 * transposed, B = batch, or 1 repeated for every image. A wrong shape is an error naming both.
 */
export function latentsToNHWC(l: LatentsFile, batch: number, c: number, h: number, w: number): Float32Array {
  const [b, lc, lh, lw] = l.shape;
  if (l.shape.length !== 4 || lc !== c || lh !== h || lw !== w || (b !== batch && b !== 1)) {
    throw new Error(
      `--latents ${l.file}: shape [${l.shape.join(', ')}] does not fit this model and request, which take [${batch === 1 ? 1 : `${batch} or 1`}, ${c}, ${h}, ${w}] (NCHW, as diffusers' latents=)`,
    );
  }
  const out = new Float32Array(batch * h * w * c);
  for (let n = 0; n < batch; n++) {
    const src = (b === 1 ? 0 : n) * c * h * w;
    for (let ch = 0; ch < c; ch++)
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out[((n * h + y) * w + x) * c + ch] = l.data[src + (ch * h + y) * w + x];
  }
  return out;
}
