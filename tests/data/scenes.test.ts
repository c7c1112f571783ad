import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Generator } from '../../src/random/generator.js';
import {
  COLORS,
  EXPRESSIONS,
  HELD_OUT_COMBINATIONS,
  MIN_COLOR_DISTANCE,
  PALETTE,
  PHRASING_COUNT,
  POSITIONS,
  SHAPES,
  TOO_SIMILAR_COLORS,
  captionFor,
  captionsFor,
  colorDistance,
  colorsCompatible,
  defaultLayout,
  encodeRgbPng,
  featureColor,
  heldOutMatches,
  isHeldOut,
  mentionedAttributes,
  objectOf,
  parsePrompt,
  phrasingKeys,
  readSceneDatasetSummary,
  readSceneRecords,
  renderScene,
  sampleLayout,
  sampleScene,
  sampleSceneAttributes,
  validateSceneAttributes,
  writeSceneDataset,
  type Rgb,
  type SceneAttributes,
  type SceneRecord,
} from '../../src/data/scenes/index.js';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'scenes-test-'));
});
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

function listFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...listFiles(full).map((f) => path.join(e.name, f)));
    else out.push(e.name);
  }
  return out;
}

function pixel(img: Uint8Array, size: number, x: number, y: number): [number, number, number] {
  const o = (y * size + x) * 3;
  return [img[o], img[o + 1], img[o + 2]];
}

/** Per-pixel coverage estimate in [0, 1]: distance from the background relative to the foreground's. */
function foregroundWeights(img: Uint8Array, size: number, fg: Rgb, bg: Rgb): Float64Array {
  const full = Math.abs(fg[0] - bg[0]) + Math.abs(fg[1] - bg[1]) + Math.abs(fg[2] - bg[2]);
  const w = new Float64Array(size * size);
  for (let i = 0; i < size * size; i++) {
    const d = Math.abs(img[3 * i] - bg[0]) + Math.abs(img[3 * i + 1] - bg[1]) + Math.abs(img[3 * i + 2] - bg[2]);
    w[i] = Math.min(1, d / full);
  }
  return w;
}

describe('dataset writer', () => {
  let a: string;
  let records: SceneRecord[];
  let heldRecords: SceneRecord[];

  beforeAll(() => {
    a = path.join(tmp, 'a');
    writeSceneDataset({ outDir: a, count: 40, heldoutCount: 12, size: 32, seed: 7, metadata: true });
    records = readSceneRecords(path.join(a, 'train'));
    heldRecords = readSceneRecords(path.join(a, 'heldout', 'attributes.jsonl'));
  });

  it('is deterministic: the same seed gives byte-identical files; another seed differs', () => {
    const b = path.join(tmp, 'b');
    writeSceneDataset({ outDir: b, count: 40, heldoutCount: 12, size: 32, seed: 7, metadata: true });
    const filesA = listFiles(a);
    expect(listFiles(b)).toEqual(filesA);
    expect(filesA.length).toBe(1 + 2 * (40 + 12) + 4);
    for (const f of filesA) expect(readFileSync(path.join(b, f)).equals(readFileSync(path.join(a, f))), f).toBe(true);

    const c = path.join(tmp, 'c');
    writeSceneDataset({ outDir: c, count: 40, heldoutCount: 12, size: 32, seed: 8 });
    expect(readFileSync(path.join(c, 'train', 'attributes.jsonl'), 'utf8')).not.toBe(readFileSync(path.join(a, 'train', 'attributes.jsonl'), 'utf8'));
  });

  it('image i does not depend on count (each split has its own stream)', () => {
    const d = path.join(tmp, 'd');
    writeSceneDataset({ outDir: d, count: 10, heldoutCount: 3, size: 32, seed: 7 });
    for (const f of ['train/00009.png', 'train/00009.txt', 'heldout/00002.png']) {
      expect(readFileSync(path.join(d, f)).equals(readFileSync(path.join(a, f))), f).toBe(true);
    }
  });

  it('writes the folder layout, dataset.json and metadata.jsonl', () => {
    expect(records).toHaveLength(40);
    expect(heldRecords).toHaveLength(12);
    expect(records[0].file_name).toBe('00000.png');
    expect(records.every((r) => r.split === 'train')).toBe(true);
    expect(heldRecords.every((r) => r.split === 'heldout')).toBe(true);
    const summary = readSceneDatasetSummary(a);
    expect(summary.seed).toBe(7);
    expect(summary.size).toBe(32);
    expect(summary.counts).toEqual({ train: 40, heldout: 12 });
    expect(summary.heldOutCombinations).toEqual(HELD_OUT_COMBINATIONS);
    expect(summary.vocabularies.colors).toEqual(COLORS);
    expect(summary.vocabularies.expressions).toEqual(EXPRESSIONS);
    expect(Object.values(summary.attributeCounts.train.kind).reduce((s, v) => s + v, 0)).toBe(40);
    const meta = readFileSync(path.join(a, 'train', 'metadata.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(meta).toHaveLength(40);
    expect(meta[3].file_name).toBe('00003.png');
    expect(meta[3].text).toEqual(
      readFileSync(path.join(a, 'train', '00003.txt'), 'utf8')
        .trim()
        .split('\n'),
    );
  });

  it('captions match the attributes, and parsePrompt recovers what each caption mentions', () => {
    for (const r of [...records, ...heldRecords]) {
      const dir = path.join(a, r.split === 'train' ? 'train' : 'heldout');
      const lines = readFileSync(path.join(dir, r.file_name.replace(/\.png$/, '.txt')), 'utf8')
        .trim()
        .split('\n');
      expect(lines).toHaveLength(PHRASING_COUNT);
      const { file_name: _f, split: _s, ...attrs } = r;
      validateSceneAttributes(attrs);
      lines.forEach((line, i) => {
        expect(line).toBe(captionFor(attrs, i));
        const parsed = parsePrompt(line);
        expect(parsed, line).toEqual(mentionedAttributes(attrs, i));
        // Every caption names the object's colour word only when it mentions colour, etc.
        if (phrasingKeys(attrs.kind, i).includes('color')) expect(line).toContain(attrs.color);
        if (attrs.kind === 'shape') expect(line).toContain(attrs.shape);
        else expect(line).toContain('face');
      });
    }
  });

  it('held-out combinations never appear in train; every held-out image has one', () => {
    const has = (r: SceneAttributes) =>
      HELD_OUT_COMBINATIONS.some((c) => c.object === objectOf(r) && (c.color ?? r.color) === r.color && (c.position ?? r.position) === r.position);
    for (const r of records) expect(has(r), JSON.stringify(r)).toBe(false);
    for (const r of heldRecords) expect(has(r), JSON.stringify(r)).toBe(true);
    // A larger sample without writing files.
    const gen = new Generator(11);
    const seen = new Set<string>();
    for (let i = 0; i < 5000; i++) {
      const t = sampleSceneAttributes(gen, 'train');
      expect(isHeldOut(t)).toBe(false);
      seen.add(`${objectOf(t)}|${t.color}`).add(`${objectOf(t)}|${t.position}`);
      const h = sampleSceneAttributes(gen, 'heldout');
      expect(heldOutMatches(h).length).toBeGreaterThan(0);
      validateSceneAttributes(h);
    }
    // Everything else is covered: 8 objects x 10 colours + 8 x 5 positions, minus held-out pairs.
    expect(seen.size).toBe(8 * COLORS.length + 8 * POSITIONS.length - HELD_OUT_COMBINATIONS.length);
  });

  it('foreground and background colours always differ clearly', () => {
    for (const r of [...records, ...heldRecords]) {
      expect(r.color).not.toBe(r.background);
      expect(colorsCompatible(r.color, r.background)).toBe(true);
      expect(colorDistance(r.color, r.background)).toBeGreaterThanOrEqual(MIN_COLOR_DISTANCE);
    }
    for (const [x, y] of TOO_SIMILAR_COLORS) expect(colorDistance(x, y)).toBeLessThan(MIN_COLOR_DISTANCE);
    expect(TOO_SIMILAR_COLORS.map((p) => p.join('-'))).toContain('blue-purple');
    expect(() => validateSceneAttributes({ kind: 'shape', shape: 'star', color: 'red', size: 'small', position: 'left', background: 'red' })).toThrow(
      /red.*too similar/,
    );
  });

  it('PNGs decode with sharp at the requested size (32 and 64)', async () => {
    const img = await sharp(path.join(a, 'train', '00000.png'))
      .raw()
      .toBuffer({ resolveWithObject: true });
    expect(img.info).toMatchObject({ width: 32, height: 32, channels: 3 });
    const e = path.join(tmp, 'e');
    writeSceneDataset({ outDir: e, count: 3, heldoutCount: 1, size: 64, seed: 1 });
    for (const f of ['train/00002.png', 'heldout/00000.png']) {
      const m = await sharp(path.join(e, f)).raw().toBuffer({ resolveWithObject: true });
      expect(m.info).toMatchObject({ width: 64, height: 64, channels: 3 });
    }
    // The decoded pixels are the rendered ones.
    const r = readSceneRecords(path.join(e, 'train'))[0];
    const { data } = await sharp(path.join(e, 'train', r.file_name))
      .raw()
      .toBuffer({ resolveWithObject: true });
    const pix = renderScene({ kind: 'shape', shape: 'circle', color: 'red', size: 'large', position: 'center', background: 'white' }, 32);
    const back = await sharp(encodeRgbPng(pix, 32, 32))
      .raw()
      .toBuffer();
    expect(Buffer.from(pix).equals(back)).toBe(true);
    expect(data.length).toBe(64 * 64 * 3);
  });

  it('refuses to mix with an earlier run unless overwrite is set', () => {
    expect(() => writeSceneDataset({ outDir: a, count: 5, seed: 7 })).toThrow(/already holds .*overwrite/);
    const f = path.join(tmp, 'f');
    writeSceneDataset({ outDir: f, count: 30, heldoutCount: 2, seed: 1 });
    writeFileSync(path.join(f, 'train', 'notes.md'), 'keep me');
    writeSceneDataset({ outDir: f, count: 5, heldoutCount: 1, seed: 1, overwrite: true });
    const names = readdirSync(path.join(f, 'train'));
    expect(names.filter((n) => n.endsWith('.png'))).toHaveLength(5);
    expect(names).toContain('notes.md');
  });

  it('validates options, naming the value and what is allowed', () => {
    const o = path.join(tmp, 'g');
    expect(() => writeSceneDataset({ outDir: o, count: 10, size: 48 })).toThrow(/size must be one of 32, 64, got 48/);
    expect(() => writeSceneDataset({ outDir: o, count: 0 })).toThrow(/count must be an integer in \[1, .*got 0/);
    expect(() => writeSceneDataset({ outDir: o, count: 2.5 })).toThrow(/got 2.5/);
    expect(() => writeSceneDataset({ outDir: o, count: 10, heldoutCount: -1 })).toThrow(/heldoutCount .*got -1/);
    expect(() => writeSceneDataset({ outDir: o, count: 10, seed: -3 })).toThrow(/seed .*got -3/);
    expect(() => writeSceneDataset({ outDir: '', count: 10 })).toThrow(/outDir/);
  });
});

describe('rendering', () => {
  const S = 32;

  it('a large red circle at the center: red centre pixels, background corners', () => {
    const attrs: SceneAttributes = { kind: 'shape', shape: 'circle', color: 'red', size: 'large', position: 'center', background: 'white' };
    const img = renderScene(attrs, S);
    for (const [x, y] of [
      [15, 15],
      [16, 16],
      [15, 16],
      [12, 18],
    ]) {
      expect(pixel(img, S, x, y)).toEqual([...PALETTE.red]);
    }
    for (const [x, y] of [
      [0, 0],
      [S - 1, 0],
      [0, S - 1],
      [S - 1, S - 1],
    ]) {
      expect(pixel(img, S, x, y)).toEqual([...PALETTE.white]);
    }
    // Anti-aliased: the rim has intermediate values.
    const row = Array.from({ length: S }, (_, x) => pixel(img, S, x, 16)[1]);
    expect(row.some((g) => g > PALETTE.red[1] && g < PALETTE.white[1])).toBe(true);
  });

  it('positions put the colour mass in the named half (jittered layouts, every object and size)', () => {
    const gen = new Generator(3);
    const objects: SceneAttributes[] = [
      ...SHAPES.map((shape) => ({ kind: 'shape' as const, shape })),
      ...EXPRESSIONS.map((expression) => ({ kind: 'face' as const, expression })),
    ].flatMap((o) =>
      (['small', 'large'] as const).map((size) => ({ ...o, color: 'green' as const, size, position: 'center' as const, background: 'black' as const })),
    );
    let checked = 0;
    for (const base of [...objects, ...objects, ...objects]) {
      for (const position of ['left', 'right', 'top', 'bottom'] as const) {
        const attrs = { ...base, position };
        const img = renderScene(attrs, S, sampleLayout(attrs, gen));
        const w = foregroundWeights(img, S, PALETTE.green, PALETTE.black);
        let total = 0;
        let inHalf = 0;
        let along = 0; // centroid along the position's axis, measured from its side (0 = that edge)
        for (let y = 0; y < S; y++) {
          for (let x = 0; x < S; x++) {
            const v = w[y * S + x];
            total += v;
            const ok = position === 'left' ? x < S / 2 : position === 'right' ? x >= S / 2 : position === 'top' ? y < S / 2 : y >= S / 2;
            if (ok) inHalf += v;
            const t = position === 'left' ? x : position === 'right' ? S - 1 - x : position === 'top' ? y : S - 1 - y;
            along += v * (t + 0.5);
          }
        }
        const what = `${objectOf(attrs)} ${attrs.size} ${position}`;
        expect(total, what).toBeGreaterThan(20);
        checked++;
        expect(inHalf / total, what).toBeGreaterThan(attrs.size === 'small' ? 0.97 : 0.65);
        expect(along / total / S, what).toBeLessThan(attrs.size === 'small' ? 0.33 : 0.42);
        // Nothing is cut by the frame: edge pixels are (almost) background.
        for (let i = 0; i < S; i++) {
          expect(Math.max(w[i], w[(S - 1) * S + i], w[i * S], w[i * S + S - 1]), what).toBeLessThan(0.25);
        }
      }
    }
    expect(checked).toBe(3 * 16 * 4);
  });

  it('faces: eyes and mouth in the feature colour; the four expressions have distinct mouths', () => {
    const S2 = 64;
    const mouths = new Map<string, { rows: number[]; cols: number[] }>();
    for (const expression of EXPRESSIONS) {
      const attrs: SceneAttributes = { kind: 'face', expression, color: 'yellow', size: 'large', position: 'center', background: 'blue' };
      const layout = defaultLayout(attrs);
      const img = renderScene(attrs, S2, layout);
      const dark = featureColor('yellow');
      expect(dark[0]).toBeLessThan(60);
      const isDark = (x: number, y: number) => pixel(img, S2, x, y).every((v, k) => Math.abs(v - dark[k]) < 40);
      const cx = layout.cx * S2;
      const cy = layout.cy * S2;
      const R = layout.radius * S2;
      // Two eyes above the centre.
      expect(isDark(Math.round(cx - 0.36 * R), Math.round(cy - 0.24 * R))).toBe(true);
      expect(isDark(Math.round(cx + 0.36 * R), Math.round(cy - 0.24 * R))).toBe(true);
      // Mouth: dark pixels below the centre; per column, the mean row of dark pixels.
      const rows: number[] = [];
      const cols: number[] = [];
      for (let y = Math.ceil(cy); y < cy + R; y++) {
        for (let x = Math.floor(cx - R); x < cx + R; x++) {
          if (isDark(x, y)) {
            rows.push(y);
            cols.push(x);
          }
        }
      }
      expect(rows.length, expression).toBeGreaterThan(10);
      mouths.set(expression, { rows, cols });
    }
    const profile = (e: string) => {
      const { rows, cols } = mouths.get(e)!;
      const xs = [...new Set(cols)].sort((p, q) => p - q);
      const meanRow = (x: number) => {
        const ys = rows.filter((_, i) => cols[i] === x);
        return ys.reduce((s, v) => s + v, 0) / ys.length;
      };
      const mid = meanRow(xs[Math.floor(xs.length / 2)]);
      const corners = (meanRow(xs[0]) + meanRow(xs[xs.length - 1])) / 2;
      const height = Math.max(...rows) - Math.min(...rows) + 1;
      const width = xs[xs.length - 1] - xs[0] + 1;
      return { bend: mid - corners, height, width };
    };
    const smile = profile('smiling');
    const sad = profile('sad');
    const neutral = profile('neutral');
    const surprised = profile('surprised');
    expect(smile.bend).toBeGreaterThan(3); // middle lower than the corners
    expect(sad.bend).toBeLessThan(-3); // middle higher than the corners
    expect(Math.abs(neutral.bend)).toBeLessThan(1);
    expect(neutral.height).toBeLessThanOrEqual(5);
    expect(surprised.height).toBeGreaterThan(surprised.width); // an 'O', taller than wide
    expect(surprised.width).toBeLessThan(neutral.width);
  });

  it('faces on dark colours get light features', () => {
    expect(featureColor('black')[0]).toBeGreaterThan(200);
    expect(featureColor('blue')[0]).toBeGreaterThan(200);
    expect(featureColor('white')[0]).toBeLessThan(60);
  });

  it('sampleScene is deterministic and draws valid scenes', () => {
    const g1 = new Generator(5);
    const g2 = new Generator(5);
    for (let i = 0; i < 50; i++) {
      const s1 = sampleScene(g1, 'train');
      const s2 = sampleScene(g2, 'train');
      expect(s1).toEqual(s2);
      validateSceneAttributes(s1.attrs);
      expect(Buffer.from(renderScene(s1.attrs, 32, s1.layout)).equals(Buffer.from(renderScene(s2.attrs, 32, s2.layout)))).toBe(true);
    }
  });
});

describe('captions and prompts', () => {
  it('captionFor phrasings', () => {
    const face: SceneAttributes = { kind: 'face', expression: 'smiling', color: 'yellow', size: 'large', position: 'left', background: 'blue' };
    expect(captionFor(face, 0)).toBe('a smiling face');
    expect(captionFor(face, 3)).toBe('a yellow smiling face on a blue background');
    const sq: SceneAttributes = { kind: 'shape', shape: 'square', color: 'orange', size: 'small', position: 'top', background: 'white' };
    expect(captionFor(sq, 1)).toBe('an orange square');
    expect(captionFor(sq, 2)).toBe('an orange square at the top');
    expect(captionsFor(sq)).toHaveLength(PHRASING_COUNT);
    expect(new Set(captionsFor(sq)).size).toBe(PHRASING_COUNT);
    expect(() => captionFor(sq, PHRASING_COUNT)).toThrow(/phrasing index must be an integer in \[0, 7\], got 8/);
    expect(() => captionFor({ ...sq, color: 'teal' as never }, 0)).toThrow(/object colour must be one of red, .*got "teal"/);
  });

  it('parsePrompt reads the attributes a prompt asks for', () => {
    expect(parsePrompt('a smiling face')).toEqual({ kind: 'face', expression: 'smiling' });
    expect(parsePrompt('a yellow smiling face on a blue background')).toEqual({ kind: 'face', expression: 'smiling', color: 'yellow', background: 'blue' });
    expect(parsePrompt('a red square on the left')).toEqual({ kind: 'shape', shape: 'square', color: 'red', position: 'left' });
    expect(parsePrompt('a small green star at the top')).toEqual({ kind: 'shape', shape: 'star', color: 'green', size: 'small', position: 'top' });
    expect(parsePrompt('a large purple circle in the center on a white background')).toEqual({
      kind: 'shape',
      shape: 'circle',
      color: 'purple',
      size: 'large',
      position: 'center',
      background: 'white',
    });
    expect(parsePrompt('A Happy face, in the middle!')).toEqual({ kind: 'face', expression: 'smiling', position: 'center' });
    expect(parsePrompt('frowning')).toEqual({ kind: 'face', expression: 'sad' });
    expect(parsePrompt('a big shocked black face on pink')).toEqual({
      kind: 'face',
      expression: 'surprised',
      color: 'black',
      size: 'large',
      background: 'pink',
    });
    expect(parsePrompt('a triangle, red background')).toEqual({ kind: 'shape', shape: 'triangle', background: 'red' });
    expect(parsePrompt('a cat')).toEqual({});
  });

  it('every phrasing round-trips through parsePrompt for every object and colour', () => {
    const gen = new Generator(2);
    for (let n = 0; n < 400; n++) {
      const { attrs } = sampleScene(gen, n % 2 ? 'train' : 'heldout');
      for (let i = 0; i < PHRASING_COUNT; i++) expect(parsePrompt(captionFor(attrs, i))).toEqual(mentionedAttributes(attrs, i));
    }
  });
});
