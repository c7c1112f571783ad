/**
 * The safetensors format (huggingface/safetensors): an 8-byte little-endian header length N,
 * N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {str: str}},
 * then the raw little-endian tensor bytes. Python's `safetensors.numpy.load_file` reads ours.
 */
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

export function decodeSafetensors(buf: Buffer, source = 'safetensors file'): SafetensorsFile {
  if (buf.length < 8) throw new Error(`${source}: too short to be safetensors (${buf.length} bytes)`);
  const n = Number(buf.readBigUInt64LE(0));
  if (n > MAX_HEADER || 8 + n > buf.length)
    throw new Error(`${source}: header length ${n} does not fit the file (${buf.length} bytes); truncated or not safetensors`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  } catch (e) {
    throw new Error(`${source}: header is not valid JSON (${(e as Error).message})`);
  }
  const dataStart = 8 + n;
  const dataLen = buf.length - dataStart;
  const tensors = new Map<string, NamedArray>();
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
    let data: Float32Array;
    if (e.dtype === 'F32') {
      if (end - begin !== count * 4) throw new Error(`${source}: '${name}' has ${end - begin} bytes for F32 shape [${e.shape.join(', ')}]`);
      data = new Float32Array(count);
      Buffer.from(data.buffer).set(buf.subarray(dataStart + begin, dataStart + end));
    } else if (e.dtype === 'F16' || e.dtype === 'BF16') {
      if (end - begin !== count * 2) throw new Error(`${source}: '${name}' has ${end - begin} bytes for ${e.dtype} shape [${e.shape.join(', ')}]`);
      data = new Float32Array(count);
      for (let i = 0; i < count; i++) {
        const h = buf.readUInt16LE(dataStart + begin + 2 * i);
        data[i] = e.dtype === 'BF16' ? bf16ToFloat(h) : f16ToFloat(h);
      }
    } else if (e.dtype === 'I64') {
      // Integer buffers some checkpoints carry (transformers' CLIP `position_ids`), as floats.
      if (end - begin !== count * 8) throw new Error(`${source}: '${name}' has ${end - begin} bytes for I64 shape [${e.shape.join(', ')}]`);
      data = new Float32Array(count);
      for (let i = 0; i < count; i++) data[i] = Number(buf.readBigInt64LE(dataStart + begin + 8 * i));
    } else {
      throw new Error(`${source}: '${name}' has dtype ${e.dtype}; supported: F32, F16, BF16, I64`);
    }
    tensors.set(name, { shape: e.shape, data });
    spans.push([begin, end, name]);
  }
  checkSpans(spans, dataLen, source);
  return { tensors, metadata };
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
