import sharp from 'sharp';
import { deflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { encodePng } from '../../src/image/convert.js';
import { formatInfotext, parseInfotext } from '../../src/image/infotext.js';
import { crc32, getPngText, insertPngText, makePngChunk, readPngChunks, readPngText } from '../../src/image/png-text.js';

async function smallPng(channels: 1 | 3 = 3): Promise<Buffer> {
  const px = new Uint8Array(6 * 4 * channels);
  for (let i = 0; i < px.length; i++) px[i] = (i * 29) & 0xff;
  return encodePng({ data: px, width: 6, height: 4, channels });
}

describe('crc32', () => {
  it('matches the standard check values', () => {
    expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
    expect(crc32(Buffer.alloc(0))).toBe(0);
    expect(crc32(Buffer.from('IEND'))).toBe(0xae426082);
    // Incremental use.
    expect(crc32(Buffer.from('6789'), crc32(Buffer.from('12345')))).toBe(0xcbf43926);
  });
});

describe('PNG text chunks', () => {
  it('round-trips a Latin-1 parameters chunk as tEXt after IHDR; sharp still decodes the file', async () => {
    const png = await smallPng();
    const text = formatInfotext({
      prompt: 'a café, süß',
      negativePrompt: 'blurry',
      steps: 20,
      sampler: 'DDIM',
      cfgScale: 7,
      seed: 42,
      width: 32,
      height: 32,
      model: 'tiny',
    });
    const out = insertPngText(png, 'parameters', text);
    const chunks = readPngChunks(out);
    expect(chunks.map((c) => c.type).slice(0, 2)).toEqual(['IHDR', 'tEXt']);
    expect(chunks[chunks.length - 1].type).toBe('IEND');
    expect(readPngText(out)).toEqual([{ type: 'tEXt', keyword: 'parameters', text }]);
    // The raw bytes are Latin-1 (one byte per character).
    expect(chunks[1].data.length).toBe('parameters'.length + 1 + text.length);
    const md = await sharp(out).metadata();
    expect([md.format, md.width, md.height]).toEqual(['png', 6, 4]);
    const pixels = await sharp(out).raw().toBuffer();
    expect(pixels.equals(await sharp(png).raw().toBuffer())).toBe(true);
    expect(parseInfotext(getPngText(out, 'parameters')!).seed).toBe(42);
  });

  it('uses iTXt (UTF-8) for non-Latin-1 text and replaces an existing keyword', async () => {
    const png = await smallPng(1);
    const first = insertPngText(png, 'parameters', 'old value');
    const out = insertPngText(first, 'parameters', '猫の絵 🐱\nSteps: 5, Sampler: DDIM, Seed: 1');
    const texts = readPngText(out);
    expect(texts).toHaveLength(1);
    expect(texts[0]).toEqual({
      type: 'iTXt',
      keyword: 'parameters',
      text: '猫の絵 🐱\nSteps: 5, Sampler: DDIM, Seed: 1',
      languageTag: '',
      translatedKeyword: '',
    });
    const kept = insertPngText(first, 'comment', 'x', { replace: true });
    expect(
      readPngText(kept)
        .map((t) => t.keyword)
        .sort(),
    ).toEqual(['comment', 'parameters']);
    expect((await sharp(out).metadata()).channels).toBe(1);
    await sharp(out).raw().toBuffer();
  });

  it('reads zTXt and compressed iTXt written by others', async () => {
    const png = await smallPng();
    const z = makePngChunk('zTXt', Buffer.concat([Buffer.from('Comment\0\0', 'latin1'), deflateSync(Buffer.from('zipped text', 'latin1'))]));
    const it2 = makePngChunk('iTXt', Buffer.concat([Buffer.from('Title\0\x01\0en\0Titel\0', 'latin1'), deflateSync(Buffer.from('Überschrift ✓', 'utf8'))]));
    const ihdrEnd = 8 + 12 + 13;
    const out = Buffer.concat([png.subarray(0, ihdrEnd), z, it2, png.subarray(ihdrEnd)]);
    expect(readPngText(out)).toEqual([
      { type: 'zTXt', keyword: 'Comment', text: 'zipped text' },
      { type: 'iTXt', keyword: 'Title', text: 'Überschrift ✓', languageTag: 'en', translatedKeyword: 'Titel' },
    ]);
  });

  it('rejects bad input clearly', async () => {
    const png = await smallPng();
    expect(() => readPngText(Buffer.from('not a png at all'))).toThrow(/signature/);
    expect(() => readPngText(png.subarray(0, png.length - 6))).toThrow(/truncated/);
    const bad = Buffer.from(insertPngText(png, 'parameters', 'x'));
    bad[8 + 25 + 8 + 2] ^= 0xff; // flip a byte inside the tEXt data
    expect(() => readPngText(bad)).toThrow(/tEXt .* CRC/);
    expect(() => insertPngText(png, '', 'x')).toThrow(/keyword/);
    expect(() => insertPngText(png, ' lead', 'x')).toThrow(/keyword/);
    expect(() => insertPngText(png, 'k'.repeat(80), 'x')).toThrow(/keyword/);
  });
});
