/**
 * A minimal, deterministic PNG encoder for 8-bit RGB images (written from the PNG specification:
 * signature, IHDR, one IDAT of zlib-compressed scanlines, IEND; chunks from src/image/png-text).
 * Same pixels => same bytes on
 * every run, without depending on an image library's version or threading.
 */
import { deflateSync } from 'node:zlib';
import { makePngChunk as chunk } from '../../image/png-text.js';

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Encodes row-major RGB bytes (`width * height * 3`) as a PNG. */
export function encodeRgbPng(rgb: Uint8Array, width: number, height: number): Buffer {
  if (!Number.isInteger(width) || width <= 0 || !Number.isInteger(height) || height <= 0) {
    throw new Error(`encodeRgbPng: width and height must be positive integers, got ${width}x${height}`);
  }
  if (rgb.length !== width * height * 3) {
    throw new Error(`encodeRgbPng: ${rgb.length} bytes for ${width}x${height} RGB (needs ${width * height * 3})`);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB
  ihdr[10] = 0; // deflate
  ihdr[11] = 0; // adaptive filtering
  ihdr[12] = 0; // no interlace
  // Every scanline uses the Sub filter: plain backgrounds become runs of zeros.
  const stride = width * 3;
  const raw = Buffer.alloc((stride + 1) * height);
  for (let y = 0; y < height; y++) {
    const o = y * (stride + 1);
    raw[o] = 1;
    for (let i = 0; i < stride; i++) {
      const cur = rgb[y * stride + i];
      const left = i >= 3 ? rgb[y * stride + i - 3] : 0;
      raw[o + 1 + i] = (cur - left) & 0xff;
    }
  }
  return Buffer.concat([SIGNATURE, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw, { level: 9 })), chunk('IEND', new Uint8Array(0))]);
}
