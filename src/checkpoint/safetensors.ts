/**
 * The safetensors format (huggingface/safetensors): an 8-byte little-endian header length N,
 * N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {str: str}},
 * then the raw little-endian tensor bytes. Python's `safetensors.numpy.load_file` reads ours.
 * `SafetensorsReader` reads a file tensor by tensor through a file descriptor (the header first,
 * then each tensor's own bytes when asked), so a 1.7 GB F16 U-Net never sits in memory whole,
 * nor as a 3.4 GB float32 copy.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import type { NamedArray } from '../nn/params.js';

export interface SafetensorsFile {
  tensors: Map<string, NamedArray>;
  metadata: Record<string, string>;
}

const MAX_HEADER = 100 * 1024 * 1024;

/** Element types this module writes: F32 (exact) or F16 (IEEE half, round to nearest even). */
export const SAFETENSORS_WRITE_DTYPES = ['F32', 'F16'] as const;
export type SafetensorsWriteDtype = (typeof SAFETENSORS_WRITE_DTYPES)[number];

export interface EncodeSafetensorsOptions {
  /**
   * 'F32' (default) stores the values exactly; 'F16' stores IEEE 754 half floats, each value
   * rounded to the nearest half (ties to even), half the bytes. A finite value beyond the half
   * range (|v| >= 65520, which would become Infinity) is an error naming the tensor; NaN and
   * +-Infinity are kept as they are.
   */
  dtype?: SafetensorsWriteDtype;
  /** Per-tensor element types overriding `dtype` (e.g. only a large embedding table as F16). */
  dtypes?: Record<string, SafetensorsWriteDtype>;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/**
 * The IEEE 754 binary16 bits of a number: first rounded to float32 (as it would be stored), then
 * to the nearest half, ties to even. Overflow gives +-Infinity (0x7c00 / 0xfc00), values below
 * half the smallest subnormal (2^-25) give +-0, subnormal halves (|v| < 2^-14) are produced
 * exactly, NaN gives a quiet NaN (0x7e00 with the sign).
 */
export function floatToHalfBits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | (mant !== 0 ? 0x7e00 : 0x7c00);
  const e = exp - 127 + 15; // the half's biased exponent
  if (e >= 31) return sign | 0x7c00;
  if (e >= 1) {
    // Normal half: keep the top 10 mantissa bits, round on the 13 dropped ones. A carry out of the
    // mantissa correctly bumps the exponent (and 0x7bff + 1 = 0x7c00 is Infinity).
    const half = (e << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    return sign | (rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1) ? half + 1 : half);
  }
  // Subnormal half (or zero): the value is m * 2^(e - 25) with the implicit bit made explicit,
  // i.e. m >> (14 - e) units of 2^-24. Shifts over 24 leave less than half a unit: zero.
  const shift = 14 - e;
  if (shift > 24) return sign;
  const m = mant | 0x800000;
  const half = m >>> shift;
  const rest = m & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  return sign | (rest > halfway || (rest === halfway && (half & 1) === 1) ? half + 1 : half);
}

/** The number a binary16 bit pattern stands for (exact). */
export function halfBitsToFloat(h: number): number {
  return f16ToFloat(h);
}

/** Rounds every value to the nearest half float (what an F16 file stores), as float32. */
export function roundToHalf(data: ArrayLike<number>): Float32Array {
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = f16ToFloat(floatToHalfBits(data[i]));
  return out;
}

/** Half-float bits of every value; throws naming `what` if a finite value overflows to Infinity. */
export function toHalfBits(data: ArrayLike<number>, what = 'tensor'): Uint16Array {
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const h = floatToHalfBits(data[i]);
    if ((h & 0x7fff) === 0x7c00 && Number.isFinite(data[i])) {
      throw new Error(`${what}: value ${data[i]} at index ${i} is outside the float16 range (|v| < 65520); store it as F32`);
    }
    out[i] = h;
  }
  return out;
}

export function encodeSafetensors(tensors: Map<string, NamedArray>, metadata: Record<string, string> = {}, opts: EncodeSafetensorsOptions = {}): Buffer {
  const dtypeOf = (name: string): SafetensorsWriteDtype => opts.dtypes?.[name] ?? opts.dtype ?? 'F32';
  for (const d of [opts.dtype ?? 'F32', ...Object.values(opts.dtypes ?? {})]) {
    if (!(SAFETENSORS_WRITE_DTYPES as readonly string[]).includes(d)) {
      throw new Error(`safetensors dtype must be one of ${SAFETENSORS_WRITE_DTYPES.join(', ')}, got ${JSON.stringify(d)}`);
    }
  }
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new Error(`safetensors metadata '${k}' must be a string, got ${typeof v}`);
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  const names = [...tensors.keys()].sort();
  for (const name of names) {
    const t = tensors.get(name)!;
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== n) throw new Error(`tensor '${name}': ${t.data.length} values for shape [${t.shape.join(', ')}]`);
    const bytesPer = dtypeOf(name) === 'F16' ? 2 : 4;
    header[name] = { dtype: dtypeOf(name), shape: t.shape, data_offsets: [offset, offset + n * bytesPer] };
    offset += n * bytesPer;
  }
  let json = JSON.stringify(header);
  // Pad the header with spaces so the data starts 8-byte aligned (as the reference writer does).
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + headerBytes.length + offset);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  let pos = 8 + headerBytes.length;
  for (const name of names) {
    const d = tensors.get(name)!.data;
    if (dtypeOf(name) === 'F16') {
      const h = toHalfBits(d, `safetensors F16 tensor '${name}'`);
      for (let i = 0; i < h.length; i++) out.writeUInt16LE(h[i], pos + 2 * i);
      pos += 2 * h.length;
    } else {
      Buffer.from(d.buffer, d.byteOffset, d.byteLength).copy(out, pos);
      pos += d.byteLength;
    }
  }
  return out;
}

/** One tensor as the header describes it; `begin`/`end`: byte offsets within the data section. */
export interface SafetensorsEntry {
  dtype: 'F32' | 'F16' | 'BF16' | 'I64';
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Checks a parsed header against the data section's length: every entry well-formed, inside
 * the data, sized for its dtype and shape, the entries tiling the data exactly.
 */
function parseHeader(
  header: Record<string, unknown>,
  dataLen: number,
  source: string,
): { entries: Map<string, SafetensorsEntry>; metadata: Record<string, string> } {
  const entries = new Map<string, SafetensorsEntry>();
  const spans: [number, number, string][] = [];
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = entry as Record<string, string>;
      continue;
    }
    const e = entry as { dtype: string; shape: number[]; data_offsets: [number, number] };
    if (!e || !Array.isArray(e.shape) || !Array.isArray(e.data_offsets)) throw new Error(`${source}: malformed entry for '${name}'`);
    const [begin, end] = e.data_offsets;
    const count = e.shape.reduce((a, b) => a * b, 1);
    if (!(Number.isInteger(begin) && Number.isInteger(end) && begin >= 0 && end <= dataLen && begin <= end)) {
      throw new Error(`${source}: '${name}' data_offsets [${begin}, ${end}] outside the data (${dataLen} bytes); truncated file?`);
    }
    if (e.dtype === 'F32' || e.dtype === 'F16' || e.dtype === 'BF16' || e.dtype === 'I64') {
      const per = e.dtype === 'I64' ? 8 : e.dtype === 'F32' ? 4 : 2;
      if (end - begin !== count * per) throw new Error(`${source}: '${name}' has ${end - begin} bytes for ${e.dtype} shape [${e.shape.join(', ')}]`);
    } else {
      throw new Error(`${source}: '${name}' has dtype ${e.dtype}; supported: F32, F16, BF16, I64`);
    }
    entries.set(name, { dtype: e.dtype, shape: e.shape, begin, end });
    spans.push([begin, end, name]);
  }
  checkSpans(spans, dataLen, source);
  return { entries, metadata };
}

function headerLengthProblem(n: number, fileLen: number, source: string): string | undefined {
  return n > MAX_HEADER || 8 + n > fileLen ? `${source}: header length ${n} does not fit the file (${fileLen} bytes); truncated or not safetensors` : undefined;
}

function parseHeaderJson(bytes: Uint8Array, source: string): Record<string, unknown> {
  try {
    return JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (e) {
    throw new Error(`${source}: header is not valid JSON (${(e as Error).message})`);
  }
}

/** A tensor's little-endian bytes (F32, F16, BF16 or I64) as float32 values. */
function toFloats(bytes: Uint8Array, dtype: SafetensorsEntry['dtype']): Float32Array {
  if (dtype === 'F32') {
    const data = new Float32Array(bytes.length / 4);
    new Uint8Array(data.buffer).set(bytes);
    return data;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === 'I64') {
    // Integer buffers some checkpoints carry (transformers' CLIP `position_ids`), as floats.
    const data = new Float32Array(bytes.length / 8);
    for (let i = 0; i < data.length; i++) data[i] = Number(view.getBigInt64(8 * i, true));
    return data;
  }
  const data = new Float32Array(bytes.length / 2);
  for (let i = 0; i < data.length; i++) {
    const h = view.getUint16(2 * i, true);
    data[i] = dtype === 'BF16' ? bf16ToFloat(h) : f16ToFloat(h);
  }
  return data;
}

export function decodeSafetensors(buf: Buffer, source = 'safetensors file'): SafetensorsFile {
  if (buf.length < 8) throw new Error(`${source}: too short to be safetensors (${buf.length} bytes)`);
  const n = Number(buf.readBigUInt64LE(0));
  const problem = headerLengthProblem(n, buf.length, source);
  if (problem) throw new Error(problem);
  const dataStart = 8 + n;
  const { entries, metadata } = parseHeader(parseHeaderJson(buf.subarray(8, dataStart), source), buf.length - dataStart, source);
  const tensors = new Map<string, NamedArray>();
  for (const [name, e] of entries) tensors.set(name, { shape: e.shape, data: toFloats(buf.subarray(dataStart + e.begin, dataStart + e.end), e.dtype) });
  return { tensors, metadata };
}

/**
 * A safetensors file read one tensor at a time: `open` reads and checks the header (against the
 * file's size: a truncated file is refused before any tensor is read), `read(name)` reads that
 * tensor's bytes alone and returns them as float32. Call close() when done.
 */
export class SafetensorsReader {
  private fd: number | undefined;

  private constructor(
    fd: number,
    readonly source: string,
    /** Header entries by name, in the header's order. */
    readonly entries: ReadonlyMap<string, SafetensorsEntry>,
    readonly metadata: Record<string, string>,
    private readonly dataStart: number,
  ) {
    this.fd = fd;
  }

  static open(file: string, source = file): SafetensorsReader {
    const fd = openSync(file, 'r');
    try {
      const fileLen = fstatSync(fd).size;
      if (fileLen < 8) throw new Error(`${source}: too short to be safetensors (${fileLen} bytes)`);
      const n = Number(readExactly(fd, 0, 8, source).readBigUInt64LE(0));
      const problem = headerLengthProblem(n, fileLen, source);
      if (problem) throw new Error(problem);
      const { entries, metadata } = parseHeader(parseHeaderJson(readExactly(fd, 8, n, source), source), fileLen - 8 - n, source);
      return new SafetensorsReader(fd, source, entries, metadata, 8 + n);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** Name -> shape, for checking a model's parameters before any value is read. */
  shapes(): Map<string, number[]> {
    return new Map([...this.entries].map(([name, e]) => [name, e.shape]));
  }

  /** One tensor's values as float32 (F16 and BF16 converted); only its own bytes are read. */
  read(name: string): NamedArray {
    if (this.fd === undefined) throw new Error(`${this.source}: the reader has been closed`);
    const e = this.entries.get(name);
    if (!e) throw new Error(`${this.source}: no tensor '${name}'`);
    if (e.dtype === 'F32') {
      // Straight into the result's buffer: no second copy of the largest tensors.
      const data = new Float32Array((e.end - e.begin) / 4);
      readInto(this.fd, this.dataStart + e.begin, new Uint8Array(data.buffer), this.source);
      return { shape: e.shape, data };
    }
    return { shape: e.shape, data: toFloats(readExactly(this.fd, this.dataStart + e.begin, e.end - e.begin, this.source), e.dtype) };
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

function readExactly(fd: number, position: number, length: number, source: string): Buffer {
  const buf = Buffer.alloc(length);
  readInto(fd, position, buf, source);
  return buf;
}

/** Fills `out` from `position` (in pieces: one read moves at most 2 GiB); a short file is an error. */
function readInto(fd: number, position: number, out: Uint8Array, source: string): void {
  for (let done = 0; done < out.length; ) {
    const got = readSync(fd, out, done, Math.min(out.length - done, 1 << 30), position + done);
    if (got === 0) throw new Error(`${source}: file ends at byte ${position + done}, inside a tensor; truncated while reading?`);
    done += got;
  }
}

/**
 * The format's rule: the tensors' byte ranges tile the data exactly, with no overlap and no
 * hole (a file whose tensors share bytes, or hide extra bytes, is refused).
 */
function checkSpans(spans: [number, number, string][], dataLen: number, source: string): void {
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let at = 0;
  for (const [begin, end, name] of spans) {
    if (begin < at) throw new Error(`${source}: '${name}' data_offsets [${begin}, ${end}] overlap the previous tensor's (which ends at ${at})`);
    if (begin > at) throw new Error(`${source}: bytes ${at}..${begin} belong to no tensor (before '${name}'); not a valid safetensors file`);
    at = end;
  }
  if (at !== dataLen) throw new Error(`${source}: bytes ${at}..${dataLen} at the end belong to no tensor; not a valid safetensors file`);
}

function bf16ToFloat(h: number): number {
  const f = new Float32Array(1);
  new Uint32Array(f.buffer)[0] = h << 16;
  return f[0];
}

function f16ToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (m / 1024);
  if (e === 31) return m ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + m / 1024);
}
