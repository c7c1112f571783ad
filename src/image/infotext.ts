/**
 * AUTOMATIC1111's "infotext": the generation parameters its web UI stores in a PNG `parameters`
 * text chunk and pastes back into the UI.
 *
 *   <prompt>
 *   Negative prompt: <negative prompt>
 *   Steps: 20, Sampler: DDIM, CFG scale: 7, Seed: 42, Size: 32x32, Model: <name>
 *
 * As in A1111 (modules/processing.py `create_infotext`, modules/infotext_utils.py
 * `parse_generation_parameters`): parameters are `Key: value` joined with ", "; a value holding
 * ',', ':' or a newline is written as a JSON string; a parameter whose value equals its key is
 * written bare; the negative-prompt line is left out when the negative prompt is empty; the whole
 * text is trimmed. When parsing, the last line holds the parameters only if it has at least 3
 * `Key: value` pairs; every line is trimmed; `Negative prompt:` starts the negative prompt, which
 * runs to the parameter line.
 */

export type InfotextValue = string | number | boolean;

export interface Infotext {
  prompt: string;
  negativePrompt?: string;
  steps?: number;
  sampler?: string;
  cfgScale?: number;
  seed?: number;
  width?: number;
  height?: number;
  modelHash?: string;
  model?: string;
  /** Further parameters, written after the known ones in insertion order (e.g. `{ Eta: 0 }`). */
  extra?: Record<string, InfotextValue | null | undefined>;
}

/** A1111's `quote`: JSON-encode values that would break the `Key: value, ...` line. */
export function quoteInfotextValue(value: InfotextValue): string {
  const s = String(value);
  if (!s.includes(',') && !s.includes('\n') && !s.includes(':')) return s;
  return JSON.stringify(s);
}

function unquote(v: string): string {
  if (v.length === 0 || v[0] !== '"' || v[v.length - 1] !== '"') return v;
  try {
    const parsed = JSON.parse(v);
    return typeof parsed === 'string' ? parsed : v;
  } catch {
    return v;
  }
}

/** The ordered `Key: value` pairs of an Infotext (known keys in A1111's order, then `extra`). */
export function infotextParams(info: Infotext): [string, InfotextValue][] {
  const out: [string, InfotextValue | null | undefined][] = [
    ['Steps', info.steps],
    ['Sampler', info.sampler],
    ['CFG scale', info.cfgScale],
    ['Seed', info.seed],
    ['Size', info.width !== undefined && info.height !== undefined ? `${info.width}x${info.height}` : undefined],
    ['Model hash', info.modelHash],
    ['Model', info.model],
  ];
  if ((info.width === undefined) !== (info.height === undefined)) {
    throw new Error(`infotext: width and height must be given together, got width=${info.width} height=${info.height}`);
  }
  for (const [k, v] of Object.entries(info.extra ?? {})) {
    if (!/^[\p{L}\p{N}_][\p{L}\p{N}_ \-/]+$/u.test(k))
      throw new Error(`infotext: parameter name ${JSON.stringify(k)} must be a word character then word characters, spaces, '-' or '/'`);
    out.push([k, v]);
  }
  return out.filter((p): p is [string, InfotextValue] => p[1] !== undefined && p[1] !== null);
}

/** Formats parameters the way A1111 writes them into PNGs. */
export function formatInfotext(info: Infotext): string {
  const params = infotextParams(info)
    .map(([k, v]) => (k === v ? k : `${k}: ${quoteInfotextValue(v)}`))
    .join(', ');
  const neg = info.negativePrompt ? `\nNegative prompt: ${info.negativePrompt}` : '';
  return `${info.prompt}${neg}\n${params}`.trim();
}

/** The known fields typed as in Infotext, plus every parameter as written. */
export interface ParsedInfotext extends Omit<Infotext, 'negativePrompt' | 'extra'> {
  negativePrompt: string;
  /** Every parameter as written (unquoted), e.g. `{ Steps: '20', Size: '32x32' }`. */
  params: Record<string, string>;
}

// A1111's re_param, with Python's Unicode \w.
const PARAM_RE = /\s*([\p{L}\p{N}_][\p{L}\p{N}_ \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)/gu;
const SIZE_RE = /^(\d+)x(\d+)$/;

function findParams(line: string): [string, string][] {
  return [...line.matchAll(PARAM_RE)].map((m) => [m[1], m[2]]);
}

function num(v: string | undefined): number | undefined {
  if (v === undefined || v.trim() === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

/** Parses A1111 infotext (the inverse of formatInfotext for what it writes). */
export function parseInfotext(text: string): ParsedInfotext {
  const lines = text.trim().split('\n');
  let last = lines.pop() ?? '';
  if (findParams(last).length < 3) {
    lines.push(last);
    last = '';
  }
  let prompt = '';
  let negativePrompt = '';
  let inNegative = false;
  for (let line of lines) {
    line = line.trim();
    if (line.startsWith('Negative prompt:')) {
      inNegative = true;
      line = line.slice('Negative prompt:'.length).trim();
    }
    if (inNegative) negativePrompt += (negativePrompt === '' ? '' : '\n') + line;
    else prompt += (prompt === '' ? '' : '\n') + line;
  }
  const params: Record<string, string> = {};
  for (const [k, raw] of findParams(last)) {
    params[k] = raw.length >= 2 && raw[0] === '"' && raw[raw.length - 1] === '"' ? unquote(raw) : raw;
  }
  const out: ParsedInfotext = { prompt, negativePrompt, params };
  const size = params.Size !== undefined ? SIZE_RE.exec(params.Size) : null;
  if (size) {
    out.width = Number(size[1]);
    out.height = Number(size[2]);
  }
  const steps = num(params.Steps);
  if (steps !== undefined) out.steps = steps;
  const cfg = num(params['CFG scale']);
  if (cfg !== undefined) out.cfgScale = cfg;
  const seed = num(params.Seed);
  if (seed !== undefined) out.seed = seed;
  if (params.Sampler !== undefined) out.sampler = params.Sampler;
  if (params['Model hash'] !== undefined) out.modelHash = params['Model hash'];
  if (params.Model !== undefined) out.model = params.Model;
  return out;
}
