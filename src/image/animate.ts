/**
 * Animated WebP / GIF from a list of frames (e.g. the denoising trajectory of a sample).
 *
 * sharp 0.33 cannot mark raw input as multi-page (its raw input has no `pageHeight`, and the
 * `pages` option is only read by decoders), so `.webp({ loop, delay })` on a stacked raw buffer
 * writes one tall still image. Instead each frame is encoded by sharp as a still WebP and the
 * frames are put into an animated WebP container here (RIFF `WEBP` with `VP8X` + `ANIM` + one
 * `ANMF` per frame, per the WebP container specification, RFC 9649). sharp / libwebp read the
 * result as an animation, and GIF output is made by having sharp convert that animation.
 */
import sharp from 'sharp';
import { checkUint8Image, type Uint8Image } from './convert.js';

export interface AnimationOptions {
  /** Milliseconds per frame: one value for all, or one per frame; default 100. */
  delay?: number | number[];
  /** Number of loops, 0 = forever (default). */
  loop?: number;
  /** WebP only: lossless frames (default true); false uses lossy with `quality`. */
  lossless?: boolean;
  /** WebP only: lossy quality 1-100; default 90. */
  quality?: number;
}

interface RiffChunk {
  fourcc: string;
  data: Buffer;
}

function readRiffChunks(webp: Buffer): RiffChunk[] {
  if (webp.length < 12 || webp.toString('latin1', 0, 4) !== 'RIFF' || webp.toString('latin1', 8, 12) !== 'WEBP') {
    throw new Error('not a WebP file (RIFF/WEBP header missing)');
  }
  const end = Math.min(webp.length, 8 + webp.readUInt32LE(4));
  const chunks: RiffChunk[] = [];
  let off = 12;
  while (off + 8 <= end) {
    const fourcc = webp.toString('latin1', off, off + 4);
    const size = webp.readUInt32LE(off + 4);
    if (off + 8 + size > end) throw new Error(`WebP chunk ${fourcc} at byte ${off} runs past the end`);
    chunks.push({ fourcc, data: webp.subarray(off + 8, off + 8 + size) });
    off += 8 + size + (size & 1);
  }
  return chunks;
}

function riffChunk(fourcc: string, data: Buffer): Buffer {
  const pad = data.length & 1;
  const out = Buffer.alloc(8 + data.length + pad);
  out.write(fourcc, 0, 'latin1');
  out.writeUInt32LE(data.length, 4);
  data.copy(out, 8);
  return out;
}

function u24(buf: Buffer, off: number, v: number): void {
  buf.writeUIntLE(v, off, 3);
}

function checkFrames(frames: Uint8Image[]): { width: number; height: number; channels: number } {
  if (frames.length === 0) throw new Error('animation: no frames');
  frames.forEach((f, i) => {
    checkUint8Image(f, `animation frame ${i}`);
  });
  const { width, height, channels } = frames[0];
  frames.forEach((f, i) => {
    if (f.width !== width || f.height !== height || f.channels !== channels) {
      throw new Error(`animation: frame ${i} is ${f.width}x${f.height}x${f.channels}, expected ${width}x${height}x${channels} like frame 0`);
    }
  });
  if (width > 16383 || height > 16383) throw new Error(`animation: WebP frames are at most 16383x16383, got ${width}x${height}`);
  return { width, height, channels };
}

function delays(n: number, delay: number | number[] | undefined): number[] {
  const d = delay ?? 100;
  const list = Array.isArray(d) ? d : new Array<number>(n).fill(d);
  if (list.length !== n) throw new Error(`animation: ${list.length} delays for ${n} frames`);
  for (const v of list) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffff) throw new Error(`animation: delay must be an integer number of ms in [0, 16777215], got ${v}`);
  }
  return list;
}

/** Encodes frames (all the same size) as an animated WebP. */
export async function encodeAnimatedWebp(frames: Uint8Image[], options: AnimationOptions = {}): Promise<Buffer> {
  const { width, height, channels } = checkFrames(frames);
  const ms = delays(frames.length, options.delay);
  const loop = options.loop ?? 0;
  if (!Number.isInteger(loop) || loop < 0 || loop > 65535) throw new Error(`animation: loop must be an integer in [0, 65535], got ${loop}`);
  const lossless = options.lossless ?? true;
  const quality = options.quality ?? 90;
  const hasAlpha = channels === 4;

  const parts: Buffer[] = [];
  const vp8x = Buffer.alloc(10);
  vp8x[0] = 0x02 | (hasAlpha ? 0x10 : 0); // animation flag, alpha flag
  u24(vp8x, 4, width - 1);
  u24(vp8x, 7, height - 1);
  parts.push(riffChunk('VP8X', vp8x));
  const anim = Buffer.alloc(6);
  anim.writeUInt32LE(0xffffffff, 0); // background colour (BGRA), a hint only
  anim.writeUInt16LE(loop, 4);
  parts.push(riffChunk('ANIM', anim));

  for (let i = 0; i < frames.length; i++) {
    const f = frames[i];
    const still = await sharp(Buffer.from(f.data.buffer, f.data.byteOffset, f.data.byteLength), {
      raw: { width: f.width, height: f.height, channels: f.channels },
    })
      .webp(lossless ? { lossless: true } : { quality })
      .toBuffer();
    const bitstream = readRiffChunks(still).filter((c) => c.fourcc === 'ALPH' || c.fourcc === 'VP8 ' || c.fourcc === 'VP8L');
    if (!bitstream.some((c) => c.fourcc === 'VP8 ' || c.fourcc === 'VP8L')) throw new Error(`animation: sharp's WebP for frame ${i} has no image data`);
    const header = Buffer.alloc(16);
    u24(header, 0, 0); // x / 2
    u24(header, 3, 0); // y / 2
    u24(header, 6, width - 1);
    u24(header, 9, height - 1);
    u24(header, 12, ms[i]);
    header[15] = 0x02; // do not blend with the previous frame; no disposal
    parts.push(riffChunk('ANMF', Buffer.concat([header, ...bitstream.map((c) => riffChunk(c.fourcc, c.data))])));
  }
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(12);
  head.write('RIFF', 0, 'latin1');
  head.writeUInt32LE(4 + body.length, 4);
  head.write('WEBP', 8, 'latin1');
  return Buffer.concat([head, body]);
}

/** Encodes frames as an animated GIF (256-colour palette per sharp's quantiser). */
export async function encodeAnimatedGif(frames: Uint8Image[], options: Omit<AnimationOptions, 'lossless' | 'quality'> = {}): Promise<Buffer> {
  const webp = await encodeAnimatedWebp(frames, { ...options, lossless: true });
  const ms = delays(frames.length, options.delay);
  return sharp(webp, { animated: true })
    .gif({ loop: options.loop ?? 0, delay: ms })
    .toBuffer();
}

/** Animated WebP or GIF by name. */
export async function encodeAnimation(frames: Uint8Image[], format: 'webp' | 'gif', options: AnimationOptions = {}): Promise<Buffer> {
  if (format === 'webp') return encodeAnimatedWebp(frames, options);
  if (format === 'gif') return encodeAnimatedGif(frames, options);
  throw new Error(`animation format must be 'webp' or 'gif', got ${JSON.stringify(format)}`);
}
