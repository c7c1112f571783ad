import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DatasetError, formatReport, scanCaptionedFolder } from '../../src/data/captioned.js';
import { BAD_FIXTURE_SIZE, makeCaptionedFixtures, tempDir, writePatternImage } from '../fixtures/captioned.js';

let fx: Awaited<ReturnType<typeof makeCaptionedFixtures>>;

beforeAll(async () => {
  fx = await makeCaptionedFixtures();
});

afterAll(() => {
  rmSync(fx.base, { recursive: true, force: true });
});

describe('scanCaptionedFolder', () => {
  it('reads sidecar captions in nested folders, mixed formats and extension case', async () => {
    const ds = await scanCaptionedFolder(fx.sidecar.root, { size: 16 });
    expect(ds.items.map((i) => i.relPath)).toEqual(fx.sidecar.good.map((g) => g.relPath));
    for (const g of fx.sidecar.good) {
      const it = ds.items.find((i) => i.relPath === g.relPath)!;
      expect(it.captions).toEqual(g.captions);
      expect([it.width, it.height]).toEqual([g.width, g.height]);
      expect(it.captionSource).toBe('sidecar');
      expect(path.isAbsolute(it.file)).toBe(true);
      expect(it.bytes).toBeGreaterThan(0);
    }
    expect(ds.report).toEqual({ root: path.resolve(fx.sidecar.root), used: fx.sidecar.good.length, skipped: [] });
  });

  it('reads metadata.jsonl (root and nested) with array captions', async () => {
    const ds = await scanCaptionedFolder(fx.metadata.root, { size: 16 });
    const byPath = Object.fromEntries(ds.items.map((i) => [i.relPath, i]));
    expect(Object.keys(byPath).sort()).toEqual(fx.metadata.good.map((g) => g.relPath).sort());
    for (const g of fx.metadata.good) {
      expect(byPath[g.relPath].captions).toEqual(g.captions);
      expect(byPath[g.relPath].captionSource).toBe('metadata');
    }
    expect(ds.report.skipped).toEqual([]);
  });

  it('keeps exactly the good files of the bad-data folder and reports each bad one with its reason', async () => {
    const ds = await scanCaptionedFolder(fx.bad.root, { size: BAD_FIXTURE_SIZE });
    expect(ds.items.map((i) => i.relPath)).toEqual(fx.bad.good.map((g) => g.relPath));
    for (const g of fx.bad.good) expect(ds.items.find((i) => i.relPath === g.relPath)!.captions).toEqual(g.captions);
    const skipped = ds.report.skipped;
    expect(ds.report.used).toBe(fx.bad.good.length);
    expect(skipped.map((s) => s.file).sort()).toEqual(fx.bad.bad.map((b) => b.file).sort());
    for (const b of fx.bad.bad) {
      const s = skipped.find((x) => x.file === b.file)!;
      expect(s.reason, b.file).toMatch(b.reason);
    }
    const text = formatReport(ds.report);
    expect(text).toContain(`${fx.bad.good.length} images used, ${fx.bad.bad.length} skipped`);
    expect(text).toContain('skipped zero.png: empty file (0 bytes)');
  });

  it('upscales small images only down to minSize', async () => {
    const ds = await scanCaptionedFolder(fx.bad.root, { size: BAD_FIXTURE_SIZE, minSize: 16 });
    expect(ds.items.map((i) => i.relPath)).toContain('small.png');
  });

  it('keeps uncaptioned images with allowEmptyCaptions', async () => {
    const ds = await scanCaptionedFolder(fx.bad.root, { size: BAD_FIXTURE_SIZE, allowEmptyCaptions: true });
    const nocap = ds.items.find((i) => i.relPath === 'nocaption.png')!;
    expect(nocap.captions).toEqual(['']);
    expect(ds.items.find((i) => i.relPath === 'emptycaption.png')!.captions).toEqual(['']);
    // Non-UTF-8 captions are still an error: they are corrupt, not absent.
    expect(ds.items.find((i) => i.relPath === 'badutf8.png')).toBeUndefined();
  });

  it('follows symbolic links only inside the folder; links out of it, loops and dangling links are reported', async () => {
    const base = tempDir('links');
    const root = path.join(base, 'data');
    const outside = path.join(base, 'elsewhere');
    mkdirSync(path.join(root, 'sub'), { recursive: true });
    mkdirSync(outside);
    for (const [dir, name] of [
      [root, 'a'],
      [path.join(root, 'sub'), 'b'],
      [outside, 'secret'],
    ] as const) {
      await writePatternImage(path.join(dir, `${name}.png`), 16, 16, name.length);
      writeFileSync(path.join(dir, `${name}.txt`), `a ${name}`);
    }
    symlinkSync(path.join(outside, 'secret.png'), path.join(root, 'leak.png')); // a file out of the folder
    writeFileSync(path.join(root, 'leak.txt'), 'a leak');
    symlinkSync(outside, path.join(root, 'outdir')); // a folder out of it
    symlinkSync(root, path.join(root, 'sub', 'loop')); // back up the tree
    symlinkSync(path.join(root, 'sub'), path.join(root, 'inside')); // a folder inside: followed
    symlinkSync(path.join(base, 'nothing.png'), path.join(root, 'dangling.png'));
    writeFileSync(path.join(root, 'metadata.jsonl'), `${JSON.stringify({ file_name: 'leak.png', text: 'via metadata' })}\n`);
    try {
      const ds = await scanCaptionedFolder(root, { size: 16 });
      expect(ds.items.map((i) => i.relPath)).toEqual(['a.png', 'sub/b.png']);
      expect(ds.items.every((i) => !i.file.includes('secret'))).toBe(true);
      const reasons = new Map(ds.report.skipped.map((s) => [s.file, s.reason]));
      expect(reasons.get('leak.png')).toMatch(/listed in metadata.jsonl:1 but is a symbolic link out of the folder/);
      expect(reasons.get('outdir')).toBe(`a symbolic link to ${outside}, outside the data folder (not followed)`);
      expect(reasons.get('sub/loop')).toBe('a symbolic link back to . (a loop, not followed)');
      expect(reasons.get('dangling.png')).toBe('a symbolic link to nothing (dangling)');
      expect(reasons.get('inside/b.png')).toBe('the same file as sub/b.png (through a symbolic link), used once');
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });

  it('fails clearly on a missing folder, a file, and a folder with nothing usable', async () => {
    const dir = tempDir('scan-empty');
    try {
      await expect(scanCaptionedFolder(path.join(dir, 'nope'), { size: 16 })).rejects.toThrow(/dataset folder .*nope does not exist/);
      writeFileSync(path.join(dir, 'file.txt'), 'x');
      await expect(scanCaptionedFolder(path.join(dir, 'file.txt'), { size: 16 })).rejects.toThrow(/is not a folder/);

      mkdirSync(path.join(dir, 'empty'));
      await expect(scanCaptionedFolder(path.join(dir, 'empty'), { size: 16 })).rejects.toThrow(
        /no usable images in dataset folder .*empty: found no image files.*it is empty/,
      );

      mkdirSync(path.join(dir, 'only-bad'));
      writeFileSync(path.join(dir, 'only-bad', 'a.bmp'), 'x');
      await writePatternImage(path.join(dir, 'only-bad', 'b.png'), 16, 16, 1);
      const err = await scanCaptionedFolder(path.join(dir, 'only-bad'), { size: 16 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DatasetError);
      expect((err as DatasetError).message).toMatch(/found 1 image file\(s\) and all were skipped/);
      expect((err as DatasetError).message).toMatch(/b\.png: missing caption/);
      expect((err as DatasetError).report!.skipped).toHaveLength(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
