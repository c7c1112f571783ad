/**
 * Captioned image folders: list, validate and probe every image before training starts.
 *
 * Two caption conventions (both may be used in one tree):
 *   - sidecar: `cat.png` + `cat.txt`; one caption per non-empty line (several lines = several
 *     captions, one drawn per step).
 *   - Hugging Face imagefolder: a `metadata.jsonl` with one `{"file_name": "...", "text": "..."}`
 *     per line, `file_name` relative to the folder holding the metadata file; `text` may be an
 *     array of strings (several captions). A metadata entry wins over a sidecar file.
 * Folders are searched recursively (hidden names skipped); .png/.jpg/.jpeg/.webp in any case.
 *
 * Bad data never stops a run: every problem (unreadable / zero-byte / truncated image, image
 * too small, missing / empty / non-UTF-8 caption, bad metadata line, metadata entry for a
 * missing file) is recorded as `{ file, reason }` in the DatasetReport and the file is skipped.
 * Each image is decoded in full during the scan, so truncated files are found here, not at
 * step 40,000. A folder with no usable image is an error (DatasetError) that says what was found.
 */
import { existsSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp'] as const;
export const METADATA_FILE = 'metadata.jsonl';

export interface ScanOptions {
  /** Training size (square side). */
  size: number;
  /**
   * Smallest allowed shorter side. Images smaller than `size` but at least `minSize` are
   * upscaled when loaded; smaller ones are skipped. Default: `size` (never upscale).
   */
  minSize?: number;
  /** Caption column of metadata.jsonl; default 'text'. */
  captionField?: string;
  /** Keep images without a caption (caption '') instead of skipping them; default false. */
  allowEmptyCaptions?: boolean;
  /** Decode every image fully to find truncated files; default true. */
  fullDecode?: boolean;
  /** Images probed at once; default 4. */
  concurrency?: number;
  /** Called after each image is checked (e.g. to drive a ProgressBar on big folders). */
  onProgress?: (done: number, total: number) => void;
}

export interface DatasetItem {
  /** Absolute path. */
  file: string;
  /** Path relative to the dataset root, '/'-separated. */
  relPath: string;
  /** One or more captions (exactly [''] for an uncaptioned image when allowEmptyCaptions). */
  captions: string[];
  captionSource: 'sidecar' | 'metadata' | 'none';
  /** Size after EXIF orientation. */
  width: number;
  height: number;
  /** Decoder's format name (png, jpeg, webp). */
  format: string;
  bytes: number;
  mtimeMs: number;
}

export interface SkippedFile {
  /** Path relative to the dataset root (metadata lines as `metadata.jsonl:LINE`). */
  file: string;
  reason: string;
}

export interface DatasetReport {
  root: string;
  used: number;
  skipped: SkippedFile[];
}

export interface CaptionedDataset {
  root: string;
  items: DatasetItem[];
  report: DatasetReport;
}

/** Thrown when a dataset folder is missing or has no usable image; carries the report. */
export class DatasetError extends Error {
  readonly report: DatasetReport | undefined;
  constructor(message: string, report?: DatasetReport) {
    super(message);
    this.name = 'DatasetError';
    this.report = report;
  }
}

/** A printable summary: counts, then one line per skipped file. */
export function formatReport(report: DatasetReport, options: { maxLines?: number } = {}): string {
  const max = options.maxLines ?? 50;
  const lines = [`dataset ${report.root}: ${report.used} image${report.used === 1 ? '' : 's'} used, ${report.skipped.length} skipped`];
  for (const s of report.skipped.slice(0, max)) lines.push(`  skipped ${s.file}: ${s.reason}`);
  if (report.skipped.length > max) lines.push(`  ... and ${report.skipped.length - max} more`);
  return lines.join('\n');
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Decodes UTF-8 strictly (throws on invalid bytes) and drops a leading BOM. */
export function decodeUtf8Strict(bytes: Uint8Array): string {
  const s = utf8.decode(bytes);
  return s.charCodeAt(0) === 0xfeff ? s.slice(1) : s;
}

/** Non-empty trimmed lines of a caption file. */
export function splitCaptions(text: string): string[] {
  return text
    .split(/\r\n|\n|\r/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
}

export function isImageFile(name: string): boolean {
  const ext = path.extname(name).toLowerCase();
  return (IMAGE_EXTENSIONS as readonly string[]).includes(ext);
}

function toRel(root: string, file: string): string {
  return path.relative(root, file).split(path.sep).join('/');
}

interface Listing {
  images: string[];
  /** Caption files by path without extension (so `cat.TXT` serves `cat.png`). */
  texts: Map<string, string>;
  metadata: string[];
  others: string[];
  /** Symbolic links not followed: out of the folder, in a loop, or dangling. */
  skipped: SkippedFile[];
}

/** Whether `target` (a real path) is `root` or inside it. */
function inside(root: string, target: string): boolean {
  const rel = path.relative(root, target);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/**
 * Every file of the folder, recursively. A symbolic link is followed only when what it points at
 * (its real path) is inside the folder: a dataset never reads files from elsewhere on the disk
 * (as metadata.jsonl paths cannot either); links out of it, loops and dangling links are reported.
 */
function walk(root: string): Listing {
  const out: Listing = { images: [], texts: new Map(), metadata: [], others: [], skipped: [] };
  const realRoot = realpathSync(root);
  const seen = new Set<string>();
  const realImages = new Map<string, string>();
  const visit = (dir: string, real: string): void => {
    seen.add(real);
    const entries = readdirSync(dir, { withFileTypes: true })
      .filter((e) => !e.name.startsWith('.'))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const full = path.join(dir, e.name);
      let isDir = e.isDirectory();
      let isFile = e.isFile();
      let realFull = path.join(real, e.name);
      if (e.isSymbolicLink()) {
        const rel = toRel(root, full);
        try {
          realFull = realpathSync(full);
          const st = statSync(realFull);
          isDir = st.isDirectory();
          isFile = st.isFile();
        } catch (err) {
          const why = (err as NodeJS.ErrnoException).code === 'ELOOP' ? 'a loop of symbolic links' : 'a symbolic link to nothing (dangling)';
          out.skipped.push({ file: rel, reason: why });
          continue;
        }
        if (!inside(realRoot, realFull)) {
          out.skipped.push({ file: rel, reason: `a symbolic link to ${realFull}, outside the data folder (not followed)` });
          continue;
        }
        if (isDir && seen.has(realFull)) {
          out.skipped.push({ file: rel, reason: `a symbolic link back to ${toRel(realRoot, realFull) || '.'} (a loop, not followed)` });
          continue;
        }
      }
      if (isDir) visit(full, realFull);
      else if (!isFile) continue;
      else if (e.name === METADATA_FILE) out.metadata.push(full);
      else if (isImageFile(e.name)) {
        // One file reached twice (a link inside the folder to another part of it) counts once,
        // under its own path rather than the link's.
        const first = realImages.get(realFull);
        const direct = full === realFull || toRel(root, full) === toRel(realRoot, realFull);
        if (first === undefined) {
          realImages.set(realFull, full);
          out.images.push(full);
        } else {
          const [keep, drop] = direct ? [full, first] : [first, full];
          out.images[out.images.indexOf(first)] = keep;
          realImages.set(realFull, keep);
          out.skipped.push({ file: toRel(root, drop), reason: `the same file as ${toRel(root, keep)} (through a symbolic link), used once` });
        }
      } else if (path.extname(e.name).toLowerCase() === '.txt') out.texts.set(stem(full), full);
      else out.others.push(full);
    }
  };
  visit(root, realRoot);
  return out;
}

interface MetaEntry {
  captions: string[];
  source: string; // metadata.jsonl:LINE
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'string' ? 'a string' : `a ${typeof v}`;
}

/** Parses every metadata.jsonl; returns captions by absolute image path. */
async function readMetadata(
  root: string,
  files: string[],
  imageSet: Set<string>,
  field: string,
  allowEmpty: boolean,
  skipped: SkippedFile[],
): Promise<Map<string, MetaEntry>> {
  const byImage = new Map<string, MetaEntry>();
  for (const meta of files) {
    const dir = path.dirname(meta);
    const relMeta = toRel(root, meta);
    const buf = await readFile(meta);
    // Split on raw newline bytes so one bad line (including bad UTF-8) is reported alone.
    let start = 0;
    let lineNo = 0;
    while (start <= buf.length) {
      let end = buf.indexOf(0x0a, start);
      if (end < 0) end = buf.length;
      lineNo++;
      const lineBytes = buf.subarray(start, end);
      start = end + 1;
      const where = `${relMeta}:${lineNo}`;
      let line: string;
      try {
        line = decodeUtf8Strict(lineBytes).trim();
      } catch {
        skipped.push({ file: where, reason: 'line is not valid UTF-8' });
        continue;
      }
      if (line === '') continue;
      let obj: unknown;
      try {
        obj = JSON.parse(line);
      } catch (e) {
        skipped.push({ file: where, reason: `line is not valid JSON (${(e as Error).message})` });
        continue;
      }
      if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
        skipped.push({ file: where, reason: `line is ${describe(obj)}, expected a JSON object with "file_name" and "${field}"` });
        continue;
      }
      const rec = obj as Record<string, unknown>;
      const name = typeof rec.file_name === 'string' ? rec.file_name.replace(/\\/g, '/') : rec.file_name;
      if (typeof name !== 'string' || name.trim() === '') {
        skipped.push({ file: where, reason: `entry lacks "file_name" (a non-empty string)` });
        continue;
      }
      const target = path.resolve(dir, name);
      const relToMeta = path.relative(dir, target);
      if (relToMeta === '' || relToMeta === '..' || relToMeta.startsWith(`..${path.sep}`) || path.isAbsolute(relToMeta)) {
        skipped.push({ file: where, reason: `"file_name" ${JSON.stringify(name)} points outside the folder of ${relMeta}` });
        continue;
      }
      const relTarget = toRel(root, target);
      if (!isImageFile(target)) {
        skipped.push({ file: relTarget, reason: `listed in ${where} but is not a supported image type (${IMAGE_EXTENSIONS.join(', ')})` });
        continue;
      }
      if (!imageSet.has(target)) {
        const why = existsSync(target) ? 'is a symbolic link out of the folder or in a loop (not read)' : 'the file does not exist';
        skipped.push({ file: relTarget, reason: `listed in ${where} but ${why}` });
        continue;
      }
      const raw = rec[field];
      let captions: string[];
      if (raw === undefined || raw === null) {
        if (!allowEmpty) {
          skipped.push({ file: relTarget, reason: `missing caption: ${where} has no "${field}"` });
          byImage.set(target, { captions: [], source: where });
          continue;
        }
        captions = [];
      } else if (typeof raw === 'string') {
        captions = splitCaptions(raw).length > 0 ? [raw.trim()] : [];
      } else if (Array.isArray(raw) && raw.every((c) => typeof c === 'string')) {
        captions = (raw as string[]).map((c) => c.trim()).filter((c) => c.length > 0);
      } else {
        skipped.push({ file: relTarget, reason: `${where}: "${field}" is ${describe(raw)}, expected a string or an array of strings` });
        byImage.set(target, { captions: [], source: where });
        continue;
      }
      const prev = byImage.get(target);
      if (prev) prev.captions.push(...captions);
      else byImage.set(target, { captions, source: where });
    }
  }
  return byImage;
}

function stem(file: string): string {
  return file.slice(0, file.length - path.extname(file).length);
}

interface CaptionResult {
  captions?: string[];
  source: DatasetItem['captionSource'];
  reason?: string;
}

async function captionsFor(
  root: string,
  image: string,
  meta: Map<string, MetaEntry>,
  texts: Map<string, string>,
  allowEmpty: boolean,
): Promise<CaptionResult | null> {
  const m = meta.get(image);
  if (m) {
    if (m.captions.length > 0) return { captions: m.captions, source: 'metadata' };
    if (allowEmpty) return { captions: [''], source: 'none' };
    return { source: 'metadata', reason: `empty caption in ${m.source}` };
  }
  const side = texts.get(stem(image));
  if (side === undefined) {
    if (allowEmpty) return { captions: [''], source: 'none' };
    return { source: 'none', reason: `missing caption: no ${path.basename(stem(image))}.txt and no ${METADATA_FILE} entry` };
  }
  const relSide = toRel(root, side);
  let bytes: Buffer;
  try {
    bytes = await readFile(side);
  } catch (e) {
    return { source: 'sidecar', reason: `caption file ${relSide} is unreadable (${(e as Error).message})` };
  }
  let text: string;
  try {
    text = decodeUtf8Strict(bytes);
  } catch {
    return { source: 'sidecar', reason: `caption file ${relSide} is not valid UTF-8` };
  }
  const captions = splitCaptions(text);
  if (captions.length > 0) return { captions, source: 'sidecar' };
  if (allowEmpty) return { captions: [''], source: 'none' };
  return { source: 'sidecar', reason: `empty caption: ${relSide} has no text` };
}

/** Swaps width/height for EXIF orientations 5-8 (90/270 degree rotations). */
function oriented(md: sharp.Metadata): { width: number; height: number } {
  const w = md.width ?? 0;
  const h = md.height ?? 0;
  return (md.orientation ?? 1) >= 5 ? { width: h, height: w } : { width: w, height: h };
}

/** Reads and checks one image. Returns its facts or the reason it is unusable. */
export async function probeImage(
  file: string,
  options: { minSize: number; fullDecode?: boolean },
): Promise<{ ok: true; width: number; height: number; format: string; bytes: number; mtimeMs: number } | { ok: false; reason: string }> {
  let buf: Buffer;
  let mtimeMs: number;
  try {
    [buf, mtimeMs] = await Promise.all([readFile(file), stat(file).then((s) => s.mtimeMs)]);
  } catch (e) {
    return { ok: false, reason: `unreadable file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  }
  if (buf.length === 0) return { ok: false, reason: 'empty file (0 bytes)' };
  let md: sharp.Metadata;
  try {
    md = await sharp(buf).metadata();
  } catch (e) {
    const msg = (e as Error).message;
    const what = /premature end|end of stream|truncat|corrupt/i.test(msg) ? 'truncated or corrupt image' : 'not a readable image';
    return { ok: false, reason: `${what} (${msg})` };
  }
  const { width, height } = oriented(md);
  if (!width || !height) return { ok: false, reason: 'not a readable image (no dimensions)' };
  if (Math.min(width, height) < options.minSize) {
    return { ok: false, reason: `too small: ${width}x${height}, the shorter side must be at least ${options.minSize} (minSize)` };
  }
  if (options.fullDecode ?? true) {
    try {
      await sharp(buf, { failOn: 'truncated' }).raw().toBuffer();
    } catch (e) {
      return { ok: false, reason: `truncated or corrupt image (${(e as Error).message})` };
    }
  }
  return { ok: true, width, height, format: md.format ?? 'unknown', bytes: buf.length, mtimeMs };
}

async function pool<T>(n: number, count: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      out[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, count) }, worker));
  return out;
}

function checkRoot(root: string): string {
  const abs = path.resolve(root);
  if (!existsSync(abs)) throw new DatasetError(`dataset folder ${abs} does not exist`);
  if (!statSync(abs).isDirectory()) throw new DatasetError(`dataset path ${abs} is not a folder`);
  return abs;
}

/**
 * Lists, validates and probes a captioned image folder. Returns the usable items (sorted by
 * path) and the report. Throws DatasetError when the folder is missing or nothing is usable.
 */
export async function scanCaptionedFolder(root: string, options: ScanOptions): Promise<CaptionedDataset> {
  const { size } = options;
  if (!Number.isInteger(size) || size < 1) throw new Error(`scan: size must be a positive integer, got ${size}`);
  const minSize = options.minSize ?? size;
  if (!Number.isInteger(minSize) || minSize < 1) throw new Error(`scan: minSize must be a positive integer, got ${options.minSize}`);
  const field = options.captionField ?? 'text';
  const allowEmpty = options.allowEmptyCaptions ?? false;
  const abs = checkRoot(root);

  const listing = walk(abs);
  const skipped: SkippedFile[] = [...listing.skipped];
  const meta = await readMetadata(abs, listing.metadata, new Set(listing.images), field, allowEmpty, skipped);
  const metaReported = new Set(skipped.map((s) => s.file));

  let done = 0;
  const total = listing.images.length;
  const results = await pool(options.concurrency ?? 4, total, async (i) => {
    try {
      return await checkOne(i);
    } finally {
      options.onProgress?.(++done, total);
    }
  });

  async function checkOne(i: number): Promise<{ item: DatasetItem } | { skip: SkippedFile } | null> {
    const file = listing.images[i];
    const relPath = toRel(abs, file);
    const cap = await captionsFor(abs, file, meta, listing.texts, allowEmpty);
    if (!cap?.captions) {
      // A metadata problem for this image was already reported with its line.
      return metaReported.has(relPath) && cap?.source === 'metadata' ? null : { skip: { file: relPath, reason: cap?.reason ?? 'no caption' } };
    }
    const probe = await probeImage(file, { minSize, fullDecode: options.fullDecode });
    if (!probe.ok) return { skip: { file: relPath, reason: probe.reason } };
    const item: DatasetItem = {
      file,
      relPath,
      captions: cap.captions,
      captionSource: cap.source,
      width: probe.width,
      height: probe.height,
      format: probe.format,
      bytes: probe.bytes,
      mtimeMs: probe.mtimeMs,
    };
    return { item };
  }

  const items: DatasetItem[] = [];
  for (const r of results) {
    if (!r) continue;
    if ('item' in r && r.item) items.push(r.item);
    else if ('skip' in r && r.skip) skipped.push(r.skip);
  }
  const report: DatasetReport = { root: abs, used: items.length, skipped };
  if (items.length === 0) {
    const found =
      listing.images.length === 0
        ? `found no image files (${IMAGE_EXTENSIONS.join(', ')}, searched recursively)` +
          (listing.others.length > 0 || listing.texts.size > 0
            ? `; it holds ${listing.texts.size} .txt file(s), ${listing.metadata.length} ${METADATA_FILE} and ${listing.others.length} other file(s)` +
              (listing.others.length > 0
                ? ` (e.g. ${listing.others
                    .slice(0, 3)
                    .map((f) => toRel(abs, f))
                    .join(', ')})`
                : '')
            : '; it is empty')
        : `found ${listing.images.length} image file(s) and all were skipped`;
    throw new DatasetError(`no usable images in dataset folder ${abs}: ${found}\n${formatReport(report, { maxLines: 20 })}`, report);
  }
  return { root: abs, items, report };
}
