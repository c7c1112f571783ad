/**
 * Vocabularies of the synthetic scene dataset: what one scene can be, the colour palette, which
 * foreground/background pairs are allowed, and the attribute combinations held out of training.
 *
 * A scene holds exactly one object on a plain background: either a face (with an expression) or a
 * shape, in one colour, one size and one position, so every caption is unambiguous.
 */

export const KINDS = ['face', 'shape'] as const;
export const EXPRESSIONS = ['smiling', 'sad', 'surprised', 'neutral'] as const;
export const SHAPES = ['circle', 'square', 'triangle', 'star'] as const;
export const COLORS = ['red', 'orange', 'yellow', 'green', 'cyan', 'blue', 'purple', 'pink', 'white', 'black'] as const;
/** Object sizes (not image sizes). */
export const OBJECT_SIZES = ['small', 'large'] as const;
export const POSITIONS = ['left', 'right', 'top', 'bottom', 'center'] as const;
export const SPLITS = ['train', 'heldout'] as const;
/** Image sides the generator writes. */
export const SCENE_IMAGE_SIZES = [32, 64] as const;

export type Kind = (typeof KINDS)[number];
export type Expression = (typeof EXPRESSIONS)[number];
export type Shape = (typeof SHAPES)[number];
export type Color = (typeof COLORS)[number];
export type ObjectSize = (typeof OBJECT_SIZES)[number];
export type Position = (typeof POSITIONS)[number];
export type Split = (typeof SPLITS)[number];
export type SceneImageSize = (typeof SCENE_IMAGE_SIZES)[number];

/** The object of a scene as one token: `'smiling face'`, ..., `'circle'`, ... */
export type SceneObject = `${Expression} face` | Shape;
export const OBJECTS: readonly SceneObject[] = [...EXPRESSIONS.map((e) => `${e} face` as const), ...SHAPES];

/** The true attributes of one scene. `expression` is set for faces only, `shape` for shapes only. */
export interface SceneAttributes {
  kind: Kind;
  expression?: Expression;
  shape?: Shape;
  color: Color;
  size: ObjectSize;
  position: Position;
  background: Color;
}

/** One line of attributes.jsonl. */
export interface SceneRecord extends SceneAttributes {
  file_name: string;
  split: Split;
}

/** All vocabularies in one object (also written to dataset.json). */
export const SCENE_VOCABULARY = {
  kinds: KINDS,
  expressions: EXPRESSIONS,
  shapes: SHAPES,
  colors: COLORS,
  sizes: OBJECT_SIZES,
  positions: POSITIONS,
  backgrounds: COLORS,
} as const;

export type Rgb = readonly [number, number, number];

/** sRGB values of the palette (8-bit). */
export const PALETTE: Readonly<Record<Color, Rgb>> = {
  red: [220, 40, 40],
  orange: [250, 140, 20],
  yellow: [250, 220, 40],
  green: [40, 170, 70],
  cyan: [40, 200, 220],
  blue: [40, 80, 220],
  purple: [150, 55, 190],
  pink: [250, 140, 200],
  white: [245, 245, 245],
  black: [25, 25, 25],
};

/** Eye and mouth colours of a face: dark on light faces, light on dark faces. */
export const FEATURE_DARK: Rgb = [25, 25, 25];
export const FEATURE_LIGHT: Rgb = [250, 250, 250];

function srgbToLinear(c: number): number {
  const v = c / 255;
  return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
}

/** Relative luminance (WCAG) of an sRGB colour, in [0, 1]. */
export function luminance(rgb: Rgb): number {
  return 0.2126 * srgbToLinear(rgb[0]) + 0.7152 * srgbToLinear(rgb[1]) + 0.0722 * srgbToLinear(rgb[2]);
}

function toLab(rgb: Rgb): [number, number, number] {
  const r = srgbToLinear(rgb[0]);
  const g = srgbToLinear(rgb[1]);
  const b = srgbToLinear(rgb[2]);
  const x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
  const y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  const z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
  const f = (t: number): number => (t > 216 / 24389 ? Math.cbrt(t) : ((24389 / 27) * t + 16) / 116);
  return [116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))];
}

/** Perceptual distance (CIE76 delta E in CIELAB) between two palette colours. */
export function colorDistance(a: Color, b: Color): number {
  const p = toLab(PALETTE[a]);
  const q = toLab(PALETTE[b]);
  return Math.hypot(p[0] - q[0], p[1] - q[1], p[2] - q[2]);
}

/** Foreground and background must be at least this far apart (delta E). */
export const MIN_COLOR_DISTANCE = 50;

/** True when `fg` may be drawn on `bg`: different colours, not a near-identical pair. */
export function colorsCompatible(fg: Color, bg: Color): boolean {
  return fg !== bg && colorDistance(fg, bg) >= MIN_COLOR_DISTANCE;
}

/** Different colours that are still too similar to be drawn on each other (sorted pairs). */
export const TOO_SIMILAR_COLORS: ReadonlyArray<readonly [Color, Color]> = (() => {
  const out: Array<[Color, Color]> = [];
  for (let i = 0; i < COLORS.length; i++) {
    for (let j = i + 1; j < COLORS.length; j++) {
      if (!colorsCompatible(COLORS[i], COLORS[j])) out.push([COLORS[i], COLORS[j]]);
    }
  }
  return out;
})();

/** Background colours allowed behind a foreground colour. */
export function backgroundsFor(fg: Color): Color[] {
  return COLORS.filter((bg) => colorsCompatible(fg, bg));
}

/** Eye/mouth colour for a face of colour `face`. */
export function featureColor(face: Color): Rgb {
  return luminance(PALETTE[face]) < 0.15 ? FEATURE_LIGHT : FEATURE_DARK;
}

/** The object token of a scene. */
export function objectOf(attrs: Pick<SceneAttributes, 'kind' | 'expression' | 'shape'>): SceneObject {
  if (attrs.kind === 'face') {
    if (attrs.expression === undefined) throw new Error('a face scene needs an expression');
    return `${attrs.expression} face`;
  }
  if (attrs.shape === undefined) throw new Error('a shape scene needs a shape');
  return attrs.shape;
}

/**
 * A combination never drawn in the train split: an object with a colour, or an object at a
 * position. Exactly one of `color` / `position` is set.
 */
export interface HeldOutCombination {
  object: SceneObject;
  color?: Color;
  position?: Position;
}

/**
 * The held-out combinations. Every object, colour and position still appears in training (in
 * other combinations), so the held-out split tests composition. The examples used in docs
 * ("a yellow smiling face", "a red square on the left", "a small green star at the top",
 * "a large purple circle in the center") stay in training on purpose.
 */
export const HELD_OUT_COMBINATIONS: readonly HeldOutCombination[] = [
  { object: 'smiling face', color: 'green' },
  { object: 'sad face', color: 'yellow' },
  { object: 'surprised face', color: 'pink' },
  { object: 'neutral face', color: 'orange' },
  { object: 'circle', color: 'blue' },
  { object: 'square', color: 'purple' },
  { object: 'triangle', color: 'yellow' },
  { object: 'star', color: 'red' },
  { object: 'smiling face', position: 'top' },
  { object: 'sad face', position: 'right' },
  { object: 'circle', position: 'left' },
  { object: 'square', position: 'bottom' },
  { object: 'triangle', position: 'right' },
  { object: 'star', position: 'bottom' },
];

/** The held-out combinations that `attrs` contains (empty for a train-able scene). */
export function heldOutMatches(attrs: SceneAttributes): HeldOutCombination[] {
  const obj = objectOf(attrs);
  return HELD_OUT_COMBINATIONS.filter(
    (c) => c.object === obj && (c.color === undefined || c.color === attrs.color) && (c.position === undefined || c.position === attrs.position),
  );
}

export function isHeldOut(attrs: SceneAttributes): boolean {
  return heldOutMatches(attrs).length > 0;
}

function checkOneOf<T extends string>(value: unknown, allowed: readonly T[], what: string): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new Error(`${what} must be one of ${allowed.join(', ')}; got ${JSON.stringify(value)}`);
  }
  return value as T;
}

/** Throws (naming the bad value and what is allowed) unless `attrs` is a valid, drawable scene. */
export function validateSceneAttributes(attrs: SceneAttributes): void {
  const kind = checkOneOf(attrs.kind, KINDS, 'scene kind');
  if (kind === 'face') {
    checkOneOf(attrs.expression, EXPRESSIONS, 'face expression');
    if (attrs.shape !== undefined) throw new Error(`a face scene has no shape; got shape ${JSON.stringify(attrs.shape)}`);
  } else {
    checkOneOf(attrs.shape, SHAPES, 'shape');
    if (attrs.expression !== undefined) throw new Error(`a shape scene has no expression; got expression ${JSON.stringify(attrs.expression)}`);
  }
  const color = checkOneOf(attrs.color, COLORS, 'object colour');
  checkOneOf(attrs.size, OBJECT_SIZES, 'object size');
  checkOneOf(attrs.position, POSITIONS, 'position');
  const bg = checkOneOf(attrs.background, COLORS, 'background colour');
  if (!colorsCompatible(color, bg)) {
    throw new Error(
      `object colour ${color} and background ${bg} are the same or too similar; backgrounds allowed for ${color}: ${backgroundsFor(color).join(', ')}`,
    );
  }
}
