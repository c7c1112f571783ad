import { describe, expect, it } from 'vitest';
import { formatInfotext, parseInfotext, quoteInfotextValue } from '../../src/image/infotext.js';

describe('A1111 infotext', () => {
  it('formats the documented layout', () => {
    const text = formatInfotext({
      prompt: 'a red square',
      negativePrompt: 'blurry, low quality',
      steps: 20,
      sampler: 'DDIM',
      cfgScale: 7,
      seed: 42,
      width: 32,
      height: 32,
      model: 'tiny-ldm',
    });
    expect(text).toBe('a red square\nNegative prompt: blurry, low quality\nSteps: 20, Sampler: DDIM, CFG scale: 7, Seed: 42, Size: 32x32, Model: tiny-ldm');
  });

  it('omits the negative prompt line when empty and quotes awkward values', () => {
    const text = formatInfotext({
      prompt: 'cat',
      negativePrompt: '',
      steps: 4,
      sampler: 'DDPM',
      cfgScale: 1.5,
      seed: 0,
      extra: { Eta: 0, Note: 'a, b: c', Skip: undefined },
    });
    expect(text).toBe('cat\nSteps: 4, Sampler: DDPM, CFG scale: 1.5, Seed: 0, Eta: 0, Note: "a, b: c"');
    expect(quoteInfotextValue('plain')).toBe('plain');
    expect(quoteInfotextValue('line\nbreak')).toBe('"line\\nbreak"');
    expect(quoteInfotextValue('ünï, "q"')).toBe('"ünï, \\"q\\""');
  });

  it('parses what it formats', () => {
    const info = {
      prompt: 'a photo of a cat, sitting\non two lines',
      negativePrompt: 'ugly, (bad:1.2)',
      steps: 25,
      sampler: 'DDIM',
      cfgScale: 7.5,
      seed: 123456789,
      width: 64,
      height: 32,
      modelHash: 'abc123',
      model: 'my model',
      extra: { 'Schedule type': 'Automatic', Quote: 'x: y, z' },
    };
    const p = parseInfotext(formatInfotext(info));
    expect(p.prompt).toBe(info.prompt);
    expect(p.negativePrompt).toBe(info.negativePrompt);
    expect([p.steps, p.sampler, p.cfgScale, p.seed, p.width, p.height, p.modelHash, p.model]).toEqual([
      25,
      'DDIM',
      7.5,
      123456789,
      64,
      32,
      'abc123',
      'my model',
    ]);
    expect(p.params).toEqual({
      Steps: '25',
      Sampler: 'DDIM',
      'CFG scale': '7.5',
      Seed: '123456789',
      Size: '64x32',
      'Model hash': 'abc123',
      Model: 'my model',
      'Schedule type': 'Automatic',
      Quote: 'x: y, z',
    });
  });

  it('parses real A1111 text and prompt-only text', () => {
    const a1111 =
      "girl with an artist's beret, determined\nNegative prompt: ugly, fat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b";
    const p = parseInfotext(a1111);
    expect(p.prompt).toBe("girl with an artist's beret, determined");
    expect(p.negativePrompt).toBe('ugly, fat');
    expect(p.sampler).toBe('Euler a');
    expect([p.width, p.height]).toEqual([512, 512]);
    // A last line with fewer than 3 parameters is prompt text.
    const q = parseInfotext('just a prompt\nwith: colon');
    expect(q.prompt).toBe('just a prompt\nwith: colon');
    expect(q.params).toEqual({});
    expect(formatInfotext({ prompt: 'only' })).toBe('only');
  });

  it('rejects inconsistent input', () => {
    expect(() => formatInfotext({ prompt: 'x', width: 32 })).toThrow(/width and height must be given together/);
    expect(() => formatInfotext({ prompt: 'x', extra: { 'bad,key': 1 } })).toThrow(/parameter name/);
  });
});
