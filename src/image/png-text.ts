/**
 * PNG text chunks (PNG spec, 3rd ed., sections 11.3.3.2-4).
 *
 * A PNG is an 8-byte signature then chunks: u32 BE length, 4-byte type, data, u32 BE CRC-32 of
 * type + data. IHDR is first. `tEXt` is `keyword \0 text` in Latin-1; `iTXt` is
 * `keyword \0 compression-flag compression-method language \0 translated-keyword \0 text` in
 * UTF-8; `zTXt` is `keyword \0 method deflated-Latin-1-text`.
 *
 * AUTOMATIC1111 stores its infotext as a `tEXt` chunk keyed `parameters` (iTXt when the text
 * is not Latin-1), which is what `insertPngText` writes.
 */
import { inflateSync } from 'node:zlib';

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

let crcTable: Uint32Array | null = null;

function table(): Uint32Array {
  if (crcTable) return crcTable;
  crcTable = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    crcTable[n] = c >>> 0;
  }
  return crcTable;
}

/** CRC-32 (ISO 3309 / ITU-T V.42, reflected polynomial 0xEDB88320), as used by PNG and zlib. */
export function crc32(data: Uint8Array, crc = 0): number {
  const t = table();
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < data.length; i++) c = t[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

export interface PngChunk {
  type: string;
  /** Offset of the chunk's length field in the file. */
  offset: number;
  data: Buffer;
  crc: number;
}

/** Splits a PNG into chunks, checking signature, bounds and (by default) every CRC. */
export function readPngChunks(png: Buffer, options: { verifyCrc?: boolean } = {}): PngChunk[] {
  const verify = options.verifyCrc ?? true;
  if (png.length < 8 || !png.subarray(0, 8).equals(SIGNATURE)) throw new Error('not a PNG: the 8-byte signature is missing');
  const chunks: PngChunk[] = [];
  let off = 8;
  while (off < png.length) {
    if (off + 12 > png.length) throw new Error(`PNG truncated: chunk header at byte ${off} runs past the end (${png.length} bytes)`);
    const len = png.readUInt32BE(off);
    const type = png.toString('latin1', off + 4, off + 8);
    if (!/^[A-Za-z]{4}$/.test(type)) throw new Error(`PNG corrupt: bad chunk type ${JSON.stringify(type)} at byte ${off}`);
    if (off + 12 + len > png.length) throw new Error(`PNG truncated: chunk ${type} at byte ${off} declares ${len} bytes, only ${png.length - off - 12} left`);
    const data = png.subarray(off + 8, off + 8 + len);
    const crc = png.readUInt32BE(off + 8 + len);
    if (verify) {
      const actual = crc32(png.subarray(off + 4, off + 8 + len));
      if (actual !== crc) throw new Error(`PNG chunk ${type} at byte ${off}: CRC 0x${crc.toString(16)} does not match the data (0x${actual.toString(16)})`);
    }
    chunks.push({ type, offset: off, data, crc });
    off += 12 + len;
    if (type === 'IEND') break;
  }
  if (chunks.length === 0 || chunks[0].type !== 'IHDR') throw new Error('PNG corrupt: the first chunk is not IHDR');
  return chunks;
}

/** Serialises one chunk (length, type, data, CRC). */
export function makePngChunk(type: string, data: Uint8Array): Buffer {
  if (!/^[A-Za-z]{4}$/.test(type)) throw new Error(`PNG chunk type must be 4 ASCII letters, got ${JSON.stringify(type)}`);
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** True when every character is Latin-1 (U+0001..U+00FF), so the text fits a tEXt chunk. */
export function isLatin1(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0 || c > 0xff) return false;
  }
  return true;
}

function checkKeyword(keyword: string): void {
  // Spec: 1-79 Latin-1 printable characters (32-126, 161-255), no leading/trailing/double spaces.
  const ok =
    keyword.length >= 1 &&
    keyword.length <= 79 &&
    [...keyword].every((ch) => {
      const c = ch.charCodeAt(0);
      return ch.length === 1 && ((c >= 32 && c <= 126) || (c >= 161 && c <= 255));
    }) &&
    !keyword.startsWith(' ') &&
    !keyword.endsWith(' ') &&
    !keyword.includes('  ');
  if (!ok) {
    throw new Error(
      `PNG text keyword ${JSON.stringify(keyword)} is invalid: it must be 1-79 printable Latin-1 characters without leading, trailing or double spaces`,
    );
  }
}

/** The data of a text chunk: `tEXt` when the text is Latin-1, else uncompressed `iTXt` (UTF-8). */
export function makeTextChunk(keyword: string, text: string): Buffer {
  checkKeyword(keyword);
  if (isLatin1(text)) {
    return makePngChunk('tEXt', Buffer.concat([Buffer.from(keyword, 'latin1'), Buffer.from([0]), Buffer.from(text, 'latin1')]));
  }
  if (text.includes('\0')) throw new Error('PNG text must not contain NUL characters');
  return makePngChunk(
    'iTXt',
    Buffer.concat([
      Buffer.from(keyword, 'latin1'),
      Buffer.from([0, 0, 0]), // keyword terminator, compression flag 0, method 0
      Buffer.from([0]), // empty language tag
      Buffer.from([0]), // empty translated keyword
      Buffer.from(text, 'utf8'),
    ]),
  );
}

const TEXT_TYPES = new Set(['tEXt', 'iTXt', 'zTXt']);

/**
 * Returns a copy of `png` with a text chunk inserted right after IHDR. By default existing
 * text chunks with the same keyword are removed, so the file holds one value per keyword.
 */
export function insertPngText(png: Buffer, keyword: string, text: string, options: { replace?: boolean } = {}): Buffer {
  const replace = options.replace ?? true;
  const chunks = readPngChunks(png, { verifyCrc: false });
  const ihdr = chunks[0];
  const parts: Buffer[] = [SIGNATURE, png.subarray(ihdr.offset, ihdr.offset + 12 + ihdr.data.length), makeTextChunk(keyword, text)];
  for (const c of chunks.slice(1)) {
    if (replace && TEXT_TYPES.has(c.type) && chunkKeyword(c.data) === keyword) continue;
    parts.push(png.subarray(c.offset, c.offset + 12 + c.data.length));
  }
  return Buffer.concat(parts);
}

function chunkKeyword(data: Buffer): string {
  const z = data.indexOf(0);
  return data.toString('latin1', 0, z < 0 ? data.length : z);
}

export interface PngTextChunk {
  type: 'tEXt' | 'iTXt' | 'zTXt';
  keyword: string;
  text: string;
  /** iTXt only. */
  languageTag?: string;
  /** iTXt only. */
  translatedKeyword?: string;
}

/** Lists the text chunks of a PNG in file order (CRCs verified). */
export function readPngText(png: Buffer): PngTextChunk[] {
  const out: PngTextChunk[] = [];
  for (const c of readPngChunks(png)) {
    if (!TEXT_TYPES.has(c.type)) continue;
    const d = c.data;
    const z = d.indexOf(0);
    if (z < 0) throw new Error(`PNG ${c.type} chunk at byte ${c.offset} has no keyword terminator`);
    const keyword = d.toString('latin1', 0, z);
    if (c.type === 'tEXt') {
      out.push({ type: 'tEXt', keyword, text: d.toString('latin1', z + 1) });
    } else if (c.type === 'zTXt') {
      if (d[z + 1] !== 0) throw new Error(`PNG zTXt '${keyword}': unknown compression method ${d[z + 1]}`);
      out.push({ type: 'zTXt', keyword, text: inflateSync(d.subarray(z + 2)).toString('latin1') });
    } else {
      const flag = d[z + 1];
      const method = d[z + 2];
      const langEnd = d.indexOf(0, z + 3);
      const transEnd = langEnd < 0 ? -1 : d.indexOf(0, langEnd + 1);
      if (langEnd < 0 || transEnd < 0) throw new Error(`PNG iTXt '${keyword}' at byte ${c.offset} is malformed`);
      let body = d.subarray(transEnd + 1);
      if (flag === 1) {
        if (method !== 0) throw new Error(`PNG iTXt '${keyword}': unknown compression method ${method}`);
        body = inflateSync(body);
      }
      out.push({
        type: 'iTXt',
        keyword,
        text: body.toString('utf8'),
        languageTag: d.toString('latin1', z + 3, langEnd),
        translatedKeyword: d.toString('utf8', langEnd + 1, transEnd),
      });
    }
  }
  return out;
}

/** The text of the first chunk with `keyword`, or undefined. */
export function getPngText(png: Buffer, keyword: string): string | undefined {
  return readPngText(png).find((c) => c.keyword === keyword)?.text;
}
