/**
 * Rasteriser of scenes into 8-bit RGB buffers, anti-aliased by 4x4 supersampling per pixel and a
 * box filter (the mean of the 16 samples).
 *
 * Geometry is resolution-independent: a `SceneLayout` gives the object's centre and radius as
 * fractions of the image side; stroke widths have a floor in pixels so that faces stay legible
 * at 32x32.
 */
import type { Generator } from '../../random/generator.js';
import { PALETTE, featureColor, type Expression, type Rgb, type SceneAttributes, type Shape } from './vocab.js';

/** Where and how large the object is drawn. Fractions of the image side; rotation in radians. */
export interface SceneLayout {
  cx: number;
  cy: number;
  radius: number;
  rotation: number;
}

/** Nominal radius (fraction of the image side) per kind and size; faces are larger to show the expression. */
export const OBJECT_RADIUS = {
  face: { small: 0.21, large: 0.32 },
  shape: { small: 0.17, large: 0.27 },
} as const;

/** Gap between the object and the image edge for off-centre positions (fraction of the side). */
const EDGE_MARGIN = 0.035;
/** Jitter ranges used by `sampleLayout`. */
const RADIUS_JITTER = 0.08; // radius * U(1 - j, 1 + j)
const INWARD_JITTER = { small: 0.03, large: 0.015 }; // towards the centre, along the position's axis
const CROSS_JITTER = 0.04; // across the position's axis (and both axes for 'center')
const MAX_ROTATION = (12 * Math.PI) / 180; // shapes other than circles

/** Number of supersamples per pixel side (4 -> 16 samples per pixel). */
export const SUPERSAMPLE = 4;

/**
 * Exact half-extents of the drawn object around its centre (fractions of the image side), for
 * a radius and rotation: the largest |x| and |y| of its outline.
 */
export function objectExtent(attrs: SceneAttributes, radius: number, rotation: number): { ex: number; ey: number } {
  if (attrs.kind === 'face' || attrs.shape === 'circle' || attrs.shape === undefined) return { ex: radius, ey: radius };
  const v = shapeVertices(attrs.shape);
  const c = Math.cos(rotation);
  const s = Math.sin(rotation);
  let ex = 0;
  let ey = 0;
  for (let i = 0; i < v.length; i += 2) {
    ex = Math.max(ex, Math.abs(v[i] * c - v[i + 1] * s));
    ey = Math.max(ey, Math.abs(v[i] * s + v[i + 1] * c));
  }
  return { ex: ex * radius, ey: ey * radius };
}

function placeCenter(position: SceneAttributes['position'], ex: number, ey: number): { cx: number; cy: number } {
  switch (position) {
    case 'left':
      return { cx: ex + EDGE_MARGIN, cy: 0.5 };
    case 'right':
      return { cx: 1 - ex - EDGE_MARGIN, cy: 0.5 };
    case 'top':
      return { cx: 0.5, cy: ey + EDGE_MARGIN };
    case 'bottom':
      return { cx: 0.5, cy: 1 - ey - EDGE_MARGIN };
    case 'center':
      return { cx: 0.5, cy: 0.5 };
  }
}

/** The layout without jitter: nominal radius, exact position (touching the edge margin), upright. */
export function defaultLayout(attrs: SceneAttributes): SceneLayout {
  const radius = OBJECT_RADIUS[attrs.kind][attrs.size];
  const { ex, ey } = objectExtent(attrs, radius, 0);
  return { ...placeCenter(attrs.position, ex, ey), radius, rotation: 0 };
}

/**
 * A jittered layout: radius within +-8%, shapes other than circles rotated up to +-12 deg, the
 * object placed at the edge margin of its position and nudged towards the centre along that axis
 * (up to 0.03 of the side for small objects, 0.015 for large) and across it (+-0.04), always fully
 * inside the frame. Draws a fixed number of values from `gen` (5), so streams stay aligned.
 */
export function sampleLayout(attrs: SceneAttributes, gen: Generator): SceneLayout {
  const u = [gen.uniform(), gen.uniform(), gen.uniform(), gen.uniform(), gen.uniform()];
  const radius = OBJECT_RADIUS[attrs.kind][attrs.size] * (1 - RADIUS_JITTER + 2 * RADIUS_JITTER * u[0]);
  const rotatable = attrs.kind === 'shape' && attrs.shape !== 'circle';
  const rotation = rotatable ? MAX_ROTATION * (2 * u[4] - 1) : 0;
  const { ex, ey } = objectExtent(attrs, radius, rotation);
  let { cx, cy } = placeCenter(attrs.position, ex, ey);
  const inward = INWARD_JITTER[attrs.size] * u[1];
  const across = CROSS_JITTER * (2 * u[2] - 1);
  switch (attrs.position) {
    case 'left':
      cx += inward;
      cy += across;
      break;
    case 'right':
      cx -= inward;
      cy += across;
      break;
    case 'top':
      cy += inward;
      cx += across;
      break;
    case 'bottom':
      cy -= inward;
      cx += across;
      break;
    case 'center':
      cx += across;
      cy += CROSS_JITTER * (2 * u[3] - 1);
      break;
  }
  // Keep the whole object inside the frame whatever the jitter did.
  const m = EDGE_MARGIN;
  cx = Math.min(1 - ex - m, Math.max(ex + m, cx));
  cy = Math.min(1 - ey - m, Math.max(ey + m, cy));
  return { cx, cy, radius, rotation };
}

/** A filled region in pixel coordinates: a bounding box and an inside test. */
interface Primitive {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
  inside: (x: number, y: number) => boolean;
  color: Rgb;
}

function circle(cx: number, cy: number, r: number, color: Rgb): Primitive {
  const r2 = r * r;
  return { x0: cx - r, y0: cy - r, x1: cx + r, y1: cy + r, color, inside: (x, y) => (x - cx) ** 2 + (y - cy) ** 2 <= r2 };
}

function ellipse(cx: number, cy: number, rx: number, ry: number, color: Rgb): Primitive {
  return { x0: cx - rx, y0: cy - ry, x1: cx + rx, y1: cy + ry, color, inside: (x, y) => ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1 };
}

/** Even-odd crossing test against a closed polygon (flat [x0, y0, x1, y1, ...]). */
function insidePolygon(px: number, py: number, v: number[]): boolean {
  let inside = false;
  const n = v.length / 2;
  for (let i = 0, j = n - 1; i < n; j = i++) {
    const xi = v[2 * i];
    const yi = v[2 * i + 1];
    const xj = v[2 * j];
    const yj = v[2 * j + 1];
    if (yi > py !== yj > py && px < ((xj - xi) * (py - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

function polygon(vertices: number[], color: Rgb): Primitive {
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (let i = 0; i < vertices.length; i += 2) {
    x0 = Math.min(x0, vertices[i]);
    x1 = Math.max(x1, vertices[i]);
    y0 = Math.min(y0, vertices[i + 1]);
    y1 = Math.max(y1, vertices[i + 1]);
  }
  return { x0, y0, x1, y1, color, inside: (x, y) => insidePolygon(x, y, vertices) };
}

function distToSegment(px: number, py: number, ax: number, ay: number, bx: number, by: number): number {
  const dx = bx - ax;
  const dy = by - ay;
  const len2 = dx * dx + dy * dy;
  let t = len2 > 0 ? ((px - ax) * dx + (py - ay) * dy) / len2 : 0;
  t = Math.max(0, Math.min(1, t));
  return Math.hypot(px - (ax + t * dx), py - (ay + t * dy));
}

/** A stroke of width `w` (round caps) along a polyline (flat [x0, y0, ...]). */
function stroke(points: number[], w: number, color: Rgb): Primitive {
  const h = w / 2;
  const box = polygon(points, color);
  return {
    x0: box.x0 - h,
    y0: box.y0 - h,
    x1: box.x1 + h,
    y1: box.y1 + h,
    color,
    inside: (x, y) => {
      for (let i = 0; i + 3 < points.length; i += 2) {
        if (distToSegment(x, y, points[i], points[i + 1], points[i + 2], points[i + 3]) <= h) return true;
      }
      return false;
    },
  };
}

/** Canonical shape outline (unit radius, centred, upright) as flat vertices. */
function shapeVertices(shape: Exclude<Shape, 'circle'>): number[] {
  const v: number[] = [];
  if (shape === 'square') {
    const h = 0.88;
    v.push(-h, -h, h, -h, h, h, -h, h);
  } else if (shape === 'triangle') {
    const rt = 1.25;
    const shift = rt / 4; // centre the bounding box vertically
    for (let k = 0; k < 3; k++) {
      const a = -Math.PI / 2 + (k * 2 * Math.PI) / 3;
      v.push(rt * Math.cos(a), rt * Math.sin(a) + shift);
    }
  } else {
    const ro = 1.2;
    const ri = 0.5 * ro;
    const shift = (ro * (1 - Math.cos(Math.PI / 5))) / 2;
    for (let k = 0; k < 10; k++) {
      const a = -Math.PI / 2 + (k * Math.PI) / 5;
      const r = k % 2 === 0 ? ro : ri;
      v.push(r * Math.cos(a), r * Math.sin(a) + shift);
    }
  }
  return v;
}

function shapePrimitive(shape: Shape, cx: number, cy: number, r: number, rotation: number, color: Rgb): Primitive {
  if (shape === 'circle') return circle(cx, cy, r, color);
  const c = Math.cos(rotation);
  const s = Math.sin(rotation);
  const unit = shapeVertices(shape);
  const v: number[] = [];
  for (let i = 0; i < unit.length; i += 2) {
    const x = unit[i] * r;
    const y = unit[i + 1] * r;
    v.push(cx + x * c - y * s, cy + x * s + y * c);
  }
  return polygon(v, color);
}

/** Points of the mouth curve: corners at (+-hw, yc), middle displaced by `bend` (down = positive). */
function mouthCurve(cx: number, yc: number, hw: number, bend: number, segments = 12): number[] {
  const pts: number[] = [];
  for (let k = 0; k <= segments; k++) {
    const t = -1 + (2 * k) / segments;
    pts.push(cx + t * hw, yc + bend * (1 - t * t));
  }
  return pts;
}

/** Eyes and mouth of a face of radius R (pixels) centred at (cx, cy). */
function facePrimitives(expression: Expression, cx: number, cy: number, R: number, faceColor: Rgb, feature: Rgb): Primitive[] {
  const prims: Primitive[] = [circle(cx, cy, R, faceColor)];
  const eyeR = Math.max(0.13 * R, 1.1) * (expression === 'surprised' ? 1.15 : 1);
  const eyeDx = 0.36 * R;
  const eyeY = cy - 0.24 * R;
  prims.push(circle(cx - eyeDx, eyeY, eyeR, feature), circle(cx + eyeDx, eyeY, eyeR, feature));
  const w = Math.max(0.15 * R, 1.4);
  switch (expression) {
    case 'smiling':
      // Corners up, middle down: a U.
      prims.push(stroke(mouthCurve(cx, cy + 0.2 * R, 0.5 * R, 0.32 * R), w, feature));
      break;
    case 'sad':
      // Corners down, middle up: an upside-down U.
      prims.push(stroke(mouthCurve(cx, cy + 0.58 * R, 0.46 * R, -0.3 * R), w, feature));
      break;
    case 'neutral':
      prims.push(stroke([cx - 0.4 * R, cy + 0.4 * R, cx + 0.4 * R, cy + 0.4 * R], w, feature));
      break;
    case 'surprised':
      // An open mouth: a filled 'O', taller than wide.
      prims.push(ellipse(cx, cy + 0.42 * R, Math.max(0.18 * R, 1.5), Math.max(0.24 * R, 2.0), feature));
      break;
  }
  return prims;
}

/**
 * Renders one scene as 8-bit RGB, row-major `[size, size, 3]`. Without a layout the object is
 * drawn at its nominal place and size (no jitter).
 */
export function renderScene(attrs: SceneAttributes, size: number, layout: SceneLayout = defaultLayout(attrs)): Uint8Array {
  if (!Number.isInteger(size) || size < 8 || size > 1024) throw new Error(`renderScene: size must be an integer in [8, 1024], got ${size}`);
  const fg = PALETTE[attrs.color];
  const bg = PALETTE[attrs.background];
  const cx = layout.cx * size;
  const cy = layout.cy * size;
  const r = layout.radius * size;
  let prims: Primitive[];
  if (attrs.kind === 'face') {
    if (attrs.expression === undefined) throw new Error('renderScene: a face needs an expression');
    prims = facePrimitives(attrs.expression, cx, cy, r, fg, featureColor(attrs.color));
  } else {
    if (attrs.shape === undefined) throw new Error('renderScene: a shape scene needs a shape');
    prims = [shapePrimitive(attrs.shape, cx, cy, r, layout.rotation, fg)];
  }
  const out = new Uint8Array(size * size * 3);
  const ss = SUPERSAMPLE;
  const n = ss * ss;
  for (let py = 0; py < size; py++) {
    for (let px = 0; px < size; px++) {
      // Primitives whose box touches this pixel.
      const active = prims.filter((p) => p.x1 >= px && p.x0 <= px + 1 && p.y1 >= py && p.y0 <= py + 1);
      const o = (py * size + px) * 3;
      if (active.length === 0) {
        out[o] = bg[0];
        out[o + 1] = bg[1];
        out[o + 2] = bg[2];
        continue;
      }
      let sr = 0;
      let sg = 0;
      let sb = 0;
      for (let j = 0; j < ss; j++) {
        const y = py + (j + 0.5) / ss;
        for (let i = 0; i < ss; i++) {
          const x = px + (i + 0.5) / ss;
          let c = bg;
          for (const p of active) if (p.inside(x, y)) c = p.color;
          sr += c[0];
          sg += c[1];
          sb += c[2];
        }
      }
      out[o] = Math.round(sr / n);
      out[o + 1] = Math.round(sg / n);
      out[o + 2] = Math.round(sb / n);
    }
  }
  return out;
}
