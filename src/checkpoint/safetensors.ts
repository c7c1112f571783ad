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

export function encodeSafetensors(tensors: Map<string, NamedArray>, metadata: Record<string, string> = {}): Buffer {
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
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + n * 4] };
    offset += n * 4;
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
    Buffer.from(d.buffer, d.byteOffset, d.byteLength).copy(out, pos);
    pos += d.byteLength;
  }
  return out;
}

export function decodeSafetensors(buf: Buffer, source = 'safetensors file'): SafetensorsFile {
  if (buf.length < 8) throw new Error(`${source}: too short to be safetensors (${buf.length} bytes)`);
  const n = Number(buf.readBigUInt64LE(0));
  if (n > MAX_HEADER || 8 + n > buf.length) throw new Error(`${source}: header length ${n} does not fit the file (${buf.length} bytes); truncated or not safetensors`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  } catch (e) {
    throw new Error(`${source}: header is not valid JSON (${(e as Error).message})`);
  }
  const dataStart = 8 + n;
  const dataLen = buf.length - dataStart;
  const tensors = new Map<string, NamedArray>();
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
    } else {
      throw new Error(`${source}: '${name}' has dtype ${e.dtype}; supported: F32, F16, BF16`);
    }
    tensors.set(name, { shape: e.shape, data });
  }
  return { tensors, metadata };
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
