/**
 * Captions of scenes in several phrasings, and the inverse: `parsePrompt` reads which attributes
 * a prompt asks for (used to score generated images against their prompts).
 *
 * Every phrasing declares the attributes it mentions (`phrasingKeys`), so
 * `parsePrompt(captionFor(a, i))` equals `a` restricted to `['kind', ...phrasingKeys(a.kind, i)]`.
 */
import {
  COLORS,
  validateSceneAttributes,
  type Color,
  type Expression,
  type Kind,
  type ObjectSize,
  type Position,
  type SceneAttributes,
  type Shape,
} from './vocab.js';

/** Attributes a caption can mention (besides the kind, which every caption names). */
export type CaptionKey = 'expression' | 'shape' | 'color' | 'size' | 'position' | 'background';

/** What a prompt asks for; fields it does not mention are absent. */
export type PromptAttributes = Partial<SceneAttributes>;

/** Main word and an alternative for each expression (both appear in captions). */
export const EXPRESSION_WORDS: Readonly<Record<Expression, readonly [string, string]>> = {
  smiling: ['smiling', 'happy'],
  sad: ['sad', 'frowning'],
  surprised: ['surprised', 'shocked'],
  neutral: ['neutral', 'expressionless'],
};

/** Main phrase and an alternative for each position. */
export const POSITION_PHRASES: Readonly<Record<Position, readonly [string, string]>> = {
  left: ['on the left', 'on the left side'],
  right: ['on the right', 'on the right side'],
  top: ['at the top', 'at the top of the image'],
  bottom: ['at the bottom', 'at the bottom of the image'],
  center: ['in the center', 'in the middle'],
};

interface Phrasing {
  keys: readonly CaptionKey[];
  text: (a: Words) => string;
}

interface Words {
  e: string; // expression, main word
  e2: string; // expression, alternative
  s: string; // shape
  c: string; // colour
  z: string; // size
  p: string; // position, main phrase
  p2: string; // position, alternative
  b: string; // background colour
}

const FACE_PHRASINGS: readonly Phrasing[] = [
  { keys: ['expression'], text: (w) => `a ${w.e} face` },
  { keys: ['color', 'expression'], text: (w) => `a ${w.c} ${w.e} face` },
  { keys: ['expression', 'background'], text: (w) => `a ${w.e} face on a ${w.b} background` },
  { keys: ['color', 'expression', 'background'], text: (w) => `a ${w.c} ${w.e} face on a ${w.b} background` },
  { keys: ['size', 'expression', 'position'], text: (w) => `a ${w.z} ${w.e} face ${w.p}` },
  { keys: ['size', 'color', 'expression', 'position', 'background'], text: (w) => `a ${w.z} ${w.c} ${w.e} face ${w.p} on a ${w.b} background` },
  { keys: ['expression', 'color', 'position'], text: (w) => `a ${w.e2} ${w.c} face ${w.p2}` },
  { keys: ['size', 'expression', 'color'], text: (w) => `a ${w.z} ${w.e2} ${w.c} face` },
];

const SHAPE_PHRASINGS: readonly Phrasing[] = [
  { keys: ['shape'], text: (w) => `a ${w.s}` },
  { keys: ['color', 'shape'], text: (w) => `a ${w.c} ${w.s}` },
  { keys: ['color', 'shape', 'position'], text: (w) => `a ${w.c} ${w.s} ${w.p}` },
  { keys: ['size', 'color', 'shape'], text: (w) => `a ${w.z} ${w.c} ${w.s}` },
  { keys: ['shape', 'background'], text: (w) => `a ${w.s} on a ${w.b} background` },
  { keys: ['size', 'color', 'shape', 'position', 'background'], text: (w) => `a ${w.z} ${w.c} ${w.s} ${w.p} on a ${w.b} background` },
  { keys: ['color', 'shape', 'background'], text: (w) => `a ${w.c} ${w.s} on a ${w.b} background` },
  { keys: ['size', 'shape', 'position'], text: (w) => `a ${w.z} ${w.s} ${w.p2}` },
];

/** Phrasings per scene (the same number for faces and shapes). */
export const PHRASING_COUNT = FACE_PHRASINGS.length;

function phrasings(kind: Kind): readonly Phrasing[] {
  return kind === 'face' ? FACE_PHRASINGS : SHAPE_PHRASINGS;
}

function checkPhrasingIndex(i: number): void {
  if (!Number.isInteger(i) || i < 0 || i >= PHRASING_COUNT) {
    throw new Error(`phrasing index must be an integer in [0, ${PHRASING_COUNT - 1}], got ${i}`);
  }
}

/** The attributes phrasing `i` of a `kind` scene mentions (the kind itself is always named). */
export function phrasingKeys(kind: Kind, i: number): readonly CaptionKey[] {
  checkPhrasingIndex(i);
  return phrasings(kind)[i].keys;
}

/** 'a' -> 'an' before a vowel sound, wherever the article appears. */
function fixArticles(s: string): string {
  return s.replace(/\ba ([aeiou])/g, 'an $1');
}

/** Caption number `phrasingIndex` (0 .. PHRASING_COUNT - 1) of a scene. */
export function captionFor(attrs: SceneAttributes, phrasingIndex: number): string {
  validateSceneAttributes(attrs);
  checkPhrasingIndex(phrasingIndex);
  const e = attrs.expression ?? 'neutral';
  const words: Words = {
    e: EXPRESSION_WORDS[e][0],
    e2: EXPRESSION_WORDS[e][1],
    s: attrs.shape ?? '',
    c: attrs.color,
    z: attrs.size,
    p: POSITION_PHRASES[attrs.position][0],
    p2: POSITION_PHRASES[attrs.position][1],
    b: attrs.background,
  };
  return fixArticles(phrasings(attrs.kind)[phrasingIndex].text(words));
}

/** All captions of a scene, one per phrasing (the lines of its sidecar .txt). */
export function captionsFor(attrs: SceneAttributes): string[] {
  return Array.from({ length: PHRASING_COUNT }, (_, i) => captionFor(attrs, i));
}

// ---------------------------------------------------------------------------------------------
// Prompt parsing

const COLOR_SYNONYMS: Record<string, Color> = {
  ...Object.fromEntries(COLORS.map((c) => [c, c])),
  violet: 'purple',
  turquoise: 'cyan',
  aqua: 'cyan',
};
const SHAPE_SYNONYMS: Record<string, Shape> = {
  circle: 'circle',
  circles: 'circle',
  disc: 'circle',
  disk: 'circle',
  square: 'square',
  squares: 'square',
  triangle: 'triangle',
  triangles: 'triangle',
  star: 'star',
  stars: 'star',
};
const EXPRESSION_SYNONYMS: Record<string, Expression> = {
  smiling: 'smiling',
  smile: 'smiling',
  smiles: 'smiling',
  smiley: 'smiling',
  happy: 'smiling',
  grinning: 'smiling',
  sad: 'sad',
  frowning: 'sad',
  frown: 'sad',
  frowns: 'sad',
  unhappy: 'sad',
  surprised: 'surprised',
  surprise: 'surprised',
  shocked: 'surprised',
  amazed: 'surprised',
  astonished: 'surprised',
  neutral: 'neutral',
  expressionless: 'neutral',
  blank: 'neutral',
};
const FACE_NOUNS = new Set(['face', 'faces', 'smiley', 'emoji']);
const SIZE_SYNONYMS: Record<string, ObjectSize> = { small: 'small', little: 'small', tiny: 'small', large: 'large', big: 'large', huge: 'large' };
const POSITION_SYNONYMS: Record<string, Position> = {
  left: 'left',
  right: 'right',
  top: 'top',
  bottom: 'bottom',
  center: 'center',
  centre: 'center',
  middle: 'center',
  centered: 'center',
  centred: 'center',
};
const BACKGROUND_NOUNS = new Set(['background', 'backdrop']);
/** Words skipped when looking for the noun a colour belongs to. */
const FILLERS = new Set(['a', 'an', 'the', 'plain', 'solid', 'coloured', 'colored', 'color', 'colour', 'is', 'of']);

/**
 * The attributes a prompt asks for. Rules:
 * - kind: 'face' if a face noun is present (face, smiley, emoji), else 'shape' if a shape noun is
 *   present, else 'face' if only an expression word is; `expression` is set for faces only and
 *   `shape` for shapes only.
 * - a colour is the background when followed by "background"/"backdrop" ("a red background",
 *   "on a plain red background"), preceded by "background" ("background of red"), or when it
 *   follows "on" with no object after it ("a star on red"); the first other colour is the object's.
 * - the first size and position words win ("centre", "middle" = center; "big" = large).
 */
export function parsePrompt(prompt: string): PromptAttributes {
  if (typeof prompt !== 'string') throw new Error(`parsePrompt: prompt must be a string, got ${typeof prompt}`);
  const tokens = prompt.toLowerCase().match(/[a-z]+/g) ?? [];
  const out: PromptAttributes = {};
  let expression: Expression | undefined;
  let shape: Shape | undefined;
  let faceNoun = false;
  const isObjectWord = (t: string | undefined): boolean =>
    t !== undefined && (t in SHAPE_SYNONYMS || FACE_NOUNS.has(t) || t in EXPRESSION_SYNONYMS || t in COLOR_SYNONYMS);
  const nextMeaningful = (i: number): string | undefined => {
    let j = i + 1;
    while (j < tokens.length && FILLERS.has(tokens[j])) j++;
    return tokens[j];
  };
  const prevMeaningful = (i: number): string | undefined => {
    let j = i - 1;
    while (j >= 0 && FILLERS.has(tokens[j])) j--;
    return tokens[j];
  };
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t in COLOR_SYNONYMS) {
      const color = COLOR_SYNONYMS[t];
      const next = nextMeaningful(i);
      const prev = prevMeaningful(i);
      const isBackground =
        (next !== undefined && BACKGROUND_NOUNS.has(next)) || (prev !== undefined && BACKGROUND_NOUNS.has(prev)) || (prev === 'on' && !isObjectWord(next));
      if (isBackground) out.background ??= color;
      else out.color ??= color;
      continue;
    }
    if (t in SHAPE_SYNONYMS) shape ??= SHAPE_SYNONYMS[t];
    if (FACE_NOUNS.has(t)) faceNoun = true;
    if (t in EXPRESSION_SYNONYMS) expression ??= EXPRESSION_SYNONYMS[t];
    if (t in SIZE_SYNONYMS) out.size ??= SIZE_SYNONYMS[t];
    if (t in POSITION_SYNONYMS) out.position ??= POSITION_SYNONYMS[t];
  }
  if (faceNoun || (shape === undefined && expression !== undefined)) {
    out.kind = 'face';
    if (expression !== undefined) out.expression = expression;
  } else if (shape !== undefined) {
    out.kind = 'shape';
    out.shape = shape;
  }
  // Stable key order: kind first, then the attribute order of SceneAttributes.
  const ordered: PromptAttributes = {};
  for (const k of ['kind', 'expression', 'shape', 'color', 'size', 'position', 'background'] as const) {
    if (out[k] !== undefined) (ordered as Record<string, unknown>)[k] = out[k];
  }
  return ordered;
}

/** `attrs` restricted to what caption `phrasingIndex` mentions (kind included). */
export function mentionedAttributes(attrs: SceneAttributes, phrasingIndex: number): PromptAttributes {
  const keys = new Set<string>(['kind', ...phrasingKeys(attrs.kind, phrasingIndex)]);
  const ordered: PromptAttributes = {};
  for (const k of ['kind', 'expression', 'shape', 'color', 'size', 'position', 'background'] as const) {
    if (keys.has(k) && attrs[k] !== undefined) (ordered as Record<string, unknown>)[k] = attrs[k];
  }
  return ordered;
}
