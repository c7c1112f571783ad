/**
 * A kernel trace (./trace.ts) as an ONNX model (opset 13), written with the project's own
 * protobuf writer. Shapes are the trace's: a model is exported per input shape (batch included),
 * because tfjs ops bake sizes into Reshape targets.
 *
 * Layout. tfjs is NHWC, onnxruntime's convolutions are NCHW. Rather than wrapping each conv in
 * two activation transposes, a value may live *permuted*: stored as Transpose(logical, perm)
 * (a conv's output is NCHW, perm [0, 3, 1, 2]). Elementwise ops, reductions, reshapes that only
 * split or merge axes (GroupNorm's), slices, pads, concats and softmax work on the permuted data
 * with their axes remapped, so a chain conv -> GroupNorm -> SiLU -> conv, and its backward pass,
 * runs without transposes; a value is transposed back (once, cached) only where a kernel needs
 * the tfjs layout (a MatMul, a graph output). With ExportOptions.nchwcBlock a training graph's
 * convs run as onnxruntime's blocked (NCHWc) Conv, reordered from and to NCHW around each (`conv`).
 * A kernel with no translation is an error naming it.
 */
import type * as tf from '@tensorflow/tfjs';
import { type AttrValue, OnnxGraphBuilder, type OnnxDataTypeName } from './writer.js';
import type { KernelTrace, TracedNode, TracedValue } from './trace.js';
import { NCHWC_DOMAIN } from './runtime.js';

export const ONNX_OPSET = 13;

/** The graph being written: value names, shapes and small helpers for the translators. */
/** A value stored permuted: `name` holds Transpose(logical value, perm). */
interface Permuted {
  name: string;
  perm: number[];
}

/** A translator's result for one output: a name in tfjs layout, or a permuted value. */
type Out = string | Permuted;

const NCHW = [0, 3, 1, 2];
const isIdentity = (perm: readonly number[]): boolean => perm.every((p, i) => p === i);
const invert = (perm: readonly number[]): number[] => {
  const inv = new Array<number>(perm.length);
  perm.forEach((p, i) => {
    inv[p] = i;
  });
  return inv;
};
const sameList = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

class Emitter {
  readonly g: OnnxGraphBuilder;
  private readonly names = new Map<number, string>();
  private readonly permuted = new Map<number, Permuted>();
  /** Transposes made for a (value, layout) pair, reused by every consumer. */
  private readonly transposes = new Map<string, string>();
  /** NCHWc copies of NCHW values (ReorderInput), reused by every conv reading them. */
  readonly blocked = new Map<string, string>();
  private readonly uniforms = new Map<number, string | undefined>();
  private counter = 0;

  constructor(
    readonly trace: KernelTrace,
    name: string,
    /** false: every value is kept in tfjs layout (each conv transposes its input and output). */
    readonly propagate = true,
    /** onnxruntime's NCHWc block size, 0 for plain Convs only (ExportOptions.nchwcBlock). */
    readonly nchwcBlock = 0,
  ) {
    this.g = new OnnxGraphBuilder(name);
    for (const [inputName, v] of trace.inputs) {
      this.g.input({ name: inputName, dataType: onnxType(v.dtype, `input '${inputName}'`), shape: v.shape });
      this.names.set(v.id, inputName);
    }
  }

  /** The ONNX name of a traced tensor in tfjs layout; constants become initializers on first use. */
  name(id: number): string {
    const known = this.names.get(id);
    if (known !== undefined) return known;
    const p = this.permuted.get(id);
    if (p) {
      const back = this.g.op('Transpose', [p.name], { perm: invert(p.perm) });
      this.names.set(id, back);
      return back;
    }
    const c = this.trace.constants.get(id);
    if (!c) throw new Error(`ONNX export: tensor ${id} is used before it is computed`);
    const name = `const_${id}`;
    const dataType = onnxType(c.dtype, `constant ${id}`);
    // The trace's own array where it already has the type (no second copy of 3.4 GB of weights).
    const data =
      dataType === 'FLOAT'
        ? c.values instanceof Float32Array
          ? c.values
          : Float32Array.from(c.values)
        : c.values instanceof Int32Array
          ? c.values
          : Int32Array.from(c.values);
    if (data.length > 1 && data.every((v) => v === data[0])) {
      // Filled tensors (a gradient's ones, a mean's scale) are a scalar broadcast at run time:
      // a traced backward pass holds hundreds of them, at activation size.
      const one = data.slice(0, 1);
      this.g.initializer({ name: `${name}_value`, dataType, dims: [], data: one });
      this.g.op('Expand', [`${name}_value`, this.ints(c.shape)], {}, name);
    } else {
      this.g.initializer({ name, dataType, dims: c.shape, data });
    }
    this.names.set(id, name);
    return name;
  }

  /** Shape and dtype of a traced tensor (node output, constant or graph input). */
  info(id: number): TracedValue {
    const v = this.trace.values.get(id) ?? this.trace.constants.get(id) ?? [...this.trace.inputs.values()].find((i) => i.id === id);
    if (!v) throw new Error(`ONNX export: no shape for tensor ${id}`);
    return v;
  }

  shape(id: number): number[] {
    return this.info(id).shape;
  }

  /** An int64 initializer (shapes, axes, pads), named freshly. */
  ints(data: number[]): string {
    return this.g.int64s(`ints_${this.counter++}`, [data.length], data);
  }

  scalar(value: number): string {
    return this.g.floats(`scalar_${this.counter++}`, [], [value]);
  }

  /** The layout a value lives in when it is stored permuted (and layouts propagate). */
  layout(id: number): number[] | undefined {
    return this.propagate ? this.permuted.get(id)?.perm : undefined;
  }

  /** The value stored as Transpose(logical, perm): free when it lives so, else one cached transpose. */
  as(id: number, perm: number[]): string {
    const p = this.permuted.get(id);
    if (p && sameList(p.perm, perm)) return p.name;
    if (isIdentity(perm)) return this.name(id);
    const key = `${id}:${perm.join(',')}`;
    const cached = this.transposes.get(key);
    if (cached) return cached;
    // From whichever form exists (the permuted one first: the logical may not be made yet).
    const src = p && !this.names.has(id) ? p : { name: this.name(id), perm: perm.map((_, i) => i) };
    const inv = invert(src.perm);
    const t = this.g.op('Transpose', [src.name], { perm: perm.map((a) => inv[a]) });
    this.transposes.set(key, t);
    return t;
  }

  /** A filled constant's single value as a scalar initializer, else undefined. */
  uniform(id: number): string | undefined {
    if (this.uniforms.has(id)) return this.uniforms.get(id);
    const name = this.makeUniform(id);
    this.uniforms.set(id, name);
    return name;
  }

  private makeUniform(id: number): string | undefined {
    const c = this.trace.constants.get(id);
    if (!c || (c.dtype !== 'float32' && c.dtype !== 'int32') || c.values.length === 0) return undefined;
    const v0 = c.values[0];
    for (let i = 1; i < c.values.length; i++) if (c.values[i] !== v0) return undefined;
    const name = `uniform_${id}`;
    if (c.dtype === 'float32') this.g.floats(name, [], [v0]);
    else this.g.initializer({ name, dataType: 'INT32', dims: [], data: Int32Array.of(v0) });
    return name;
  }

  bind(id: number, out: Out): void {
    if (typeof out === 'string') this.names.set(id, out);
    else if (isIdentity(out.perm)) this.names.set(id, out.name);
    else this.permuted.set(id, out);
  }
}

function onnxType(dtype: tf.DataType, what: string): OnnxDataTypeName {
  if (dtype === 'float32') return 'FLOAT';
  if (dtype === 'int32') return 'INT32';
  throw new Error(`ONNX export: ${what} has dtype ${dtype}; only float32 and int32 are exported`);
}

const CAST_TO: Partial<Record<tf.DataType, number>> = { float32: 1, int32: 6, bool: 9 };

function input(n: TracedNode, key: string): number {
  const e = n.inputs.find(([k]) => k === key);
  if (!e) throw new Error(`ONNX export: ${n.kernel} has no input '${key}'`);
  return e[1];
}

function axes(value: unknown, rank: number): number[] {
  const list = Array.isArray(value) ? (value as number[]) : [value as number];
  return list.map((a) => (a < 0 ? a + rank : a));
}

/** Explicit [top, left, bottom, right] pads of a tfjs conv2d `pad` attribute. */
function convPads(pad: unknown, inHW: number[], outHW: number[], kernel: number[], strides: number[], dilations: number[], kernelName = 'Conv2D'): number[] {
  if (typeof pad === 'number') return [pad, pad, pad, pad];
  if (pad === 'valid') return [0, 0, 0, 0];
  if (pad === 'same') {
    const before: number[] = [];
    const after: number[] = [];
    for (let i = 0; i < 2; i++) {
      const k = (kernel[i] - 1) * dilations[i] + 1;
      const total = Math.max((outHW[i] - 1) * strides[i] + k - inHW[i], 0);
      before.push(Math.floor(total / 2));
      after.push(total - Math.floor(total / 2));
    }
    return [...before, ...after];
  }
  throw new Error(`ONNX export: ${kernelName} pad ${JSON.stringify(pad)} is not supported (allowed: a number, 'same', 'valid')`);
}

/**
 * output_padding of the ConvTranspose that maps an [oh, ow] gradient back onto the [ih, iw] input
 * of a conv or pool (its size s * (o - 1) + k - pads + output_padding must be the input's).
 */
function transposedOutputPadding([ih, iw]: number[], [oh, ow]: number[], [kh, kw]: number[], strides: number[], pads: number[]): number[] {
  return [0, 1].map((i) => [ih, iw][i] - (strides[i] * ([oh, ow][i] - 1) + [kh, kw][i] - pads[i] - pads[i + 2]));
}

/** Window, strides and explicit [top, left, bottom, right] pads of a tfjs 2-D pool from input x to output y (both NHWC). */
function poolGeometry(e: Emitter, n: TracedNode, x: number, y: number): { kernel: number[]; strides: number[]; pads: number[] } {
  if (n.attrs.dimRoundingMode != null) throw new Error(`ONNX export: ${n.kernel} dimRoundingMode is not supported`);
  const kernel = pair(n.attrs.filterSize);
  const strides = pair(n.attrs.strides);
  const [, ih, iw] = e.shape(x);
  const [, oh, ow] = e.shape(y);
  return { kernel, strides, pads: convPads(n.attrs.pad, [ih, iw], [oh, ow], kernel, strides, [1, 1], n.kernel) };
}

const pair = (v: unknown): number[] => (Array.isArray(v) ? (v as number[]) : [v as number, v as number]);

type Translate = (e: Emitter, n: TracedNode) => Out[];

/**
 * An elementwise op over `ids` (numpy broadcasting). When one operand of the output's rank lives
 * permuted, the op runs in that layout (the other operands brought to it; lower-rank ones padded
 * with leading 1s first) and so does its output. A filled constant that does not set the output
 * shape is passed as its scalar.
 */
function elementwise(e: Emitter, n: TracedNode, ids: number[], build: (names: string[]) => string): Out {
  const outShape = e.shape(n.outputs[0]);
  const R = outShape.length;
  const perm = ids.map((id) => (e.shape(id).length === R ? e.layout(id) : undefined)).find((p) => p !== undefined);
  const names = ids.map((id) => {
    const u = ids.some((o) => o !== id && sameList(e.shape(o), outShape)) ? e.uniform(id) : undefined;
    if (u !== undefined) return u;
    if (!perm) return e.name(id);
    const shape = e.shape(id);
    if (shape.length === R) return e.as(id, perm);
    if (shape.every((d) => d === 1)) return e.name(id); // broadcasts along any axis
    const padded = e.g.op('Reshape', [e.name(id), e.ints([...new Array<number>(R - shape.length).fill(1), ...shape])]);
    return e.g.op('Transpose', [padded], { perm });
  });
  const y = build(names);
  return perm ? { name: y, perm } : y;
}

const unary =
  (op: string, attrs: Record<string, AttrValue> = {}): Translate =>
  (e, n) => [elementwise(e, n, [input(n, 'x')], ([x]) => e.g.op(op, [x], attrs))];
const binary =
  (op: string): Translate =>
  (e, n) => [elementwise(e, n, [input(n, 'a'), input(n, 'b')], ([a, b]) => e.g.op(op, [a, b]))];

/**
 * A reshape of a value stored permuted by `perm`, done on the stored data: possible when each
 * group of input axes that merges or splits into output axes is contiguous and in order in the
 * stored layout (GroupNorm's [B, H, W, C] -> [B, HW, G, C/G] on NCHW data is). Returns the
 * output's layout and stored shape, or undefined.
 */
function reshapePermuted(from: number[], to: number[], perm: number[]): { perm: number[]; stored: number[] } | undefined {
  const groups: [number[], number[]][] = [];
  let i = 0;
  let j = 0;
  while (i < from.length && j < to.length) {
    const gi = [i];
    const gj = [j];
    let a = from[i++];
    let b = to[j++];
    while (a !== b) {
      if (a < b) {
        if (i >= from.length) return undefined;
        a *= from[i];
        gi.push(i++);
      } else {
        if (j >= to.length) return undefined;
        b *= to[j];
        gj.push(j++);
      }
    }
    groups.push([gi, gj]);
  }
  if (i !== from.length || j !== to.length) return undefined;
  const groupOf = new Map<number, number>();
  groups.forEach(([gi], k) => {
    gi.forEach((ax) => {
      groupOf.set(ax, k);
    });
  });
  const out: number[] = [];
  for (let pos = 0; pos < perm.length; ) {
    const [gi, gj] = groups[groupOf.get(perm[pos])!];
    if (gi.some((ax, q) => perm[pos + q] !== ax)) return undefined;
    out.push(...gj);
    pos += gi.length;
  }
  return { perm: out, stored: out.map((ax) => to[ax]) };
}

/** Kernels that only change the shape: a Reshape to the traced output shape. */
const reshape: Translate = (e, n) => {
  const x = n.inputs[0][1]; // 'x' or 'input'
  const to = e.shape(n.outputs[0]);
  const perm = e.layout(x);
  const mapped = perm && reshapePermuted(e.shape(x), to, perm);
  if (mapped) return [{ name: e.g.op('Reshape', [e.as(x, perm!), e.ints(mapped.stored)]), perm: mapped.perm }];
  return [e.g.op('Reshape', [e.name(x), e.ints(to)])];
};

const reduce =
  (op: string): Translate =>
  (e, n) => {
    const x = input(n, 'x');
    // Mean/Sum name the axes `axis`, Max/Min `reductionIndices`.
    const rank = e.shape(x).length;
    const given = n.attrs.axis ?? n.attrs.reductionIndices;
    const logical = given == null ? [...Array(rank).keys()] : axes(given, rank); // no axis: every axis
    const keep = Boolean(n.attrs.keepDims);
    const perm = e.layout(x);
    const axesHere = perm ? logical.map((a) => perm.indexOf(a)).sort((p, q) => p - q) : logical;
    const src = perm ? e.as(x, perm) : e.name(x);
    // Opset 13 moved ReduceSum's axes to an input; the other reductions keep the attribute.
    const y =
      op === 'ReduceSum' ? e.g.op(op, [src, e.ints(axesHere)], { keepdims: keep ? 1 : 0 }) : e.g.op(op, [src], { axes: axesHere, keepdims: keep ? 1 : 0 });
    if (!perm) return [y];
    if (keep) return [{ name: y, perm }];
    // The kept axes stay in stored order; renumber them as the output's logical axes.
    const left = perm.filter((a) => !logical.includes(a));
    const sorted = [...left].sort((p, q) => p - q);
    return [{ name: y, perm: left.map((a) => sorted.indexOf(a)) }];
  };

function checkConvAttrs(n: TracedNode): void {
  if (n.attrs.dataFormat !== 'NHWC') throw new Error(`ONNX export: ${n.kernel} dataFormat ${String(n.attrs.dataFormat)} is not supported (NHWC only)`);
  if (n.attrs.dimRoundingMode != null) throw new Error(`ONNX export: ${n.kernel} dimRoundingMode is not supported`);
  const d = pair(n.attrs.dilations ?? 1);
  if (d[0] !== 1 || d[1] !== 1) throw new Error(`ONNX export: ${n.kernel} with dilations ${d.join('x')} is not supported (1 only)`);
}

/**
 * Convs whose output has at most this many pixels and whose filter is a graph input (a training
 * graph) run as one im2col product over the whole batch in tfjs layout: onnxruntime's Conv runs
 * one GEMM per image, [Cout, kh*kw*Cin] x [kh*kw*Cin, P], and with P = 16 columns (the U-Net's
 * 4x4 level) that GEMM runs far below the batched product's rate. A constant filter is prepacked
 * by onnxruntime (NCHWc), and there its Conv stays faster.
 */
const IM2COL_MAX_PIXELS = 16;
const useIm2col = (e: Emitter, filter: number, outPixels: number): boolean => outPixels <= IM2COL_MAX_PIXELS && !e.trace.constants.has(filter);

/** onnxruntime's contrib domain of its blocked-layout CPU kernels. */

/**
 * A 2-D conv of NCHW `x` (name), output NCHW. `w` is the filter in tfjs order [kh, kw, A, B]
 * (already flipped where the caller needs it), whose output channels are axis `outAxis` (3 for a
 * forward conv; 2 for the input gradient, which convolves with the filter's channel axes swapped).
 *
 * With an NCHWc block size b (ExportOptions.nchwcBlock) and both channel counts multiples of b,
 * a filter that is a graph input runs as onnxruntime's NCHWc Conv: the activations are reordered
 * to [N, C/b, H, W, b] and back (ReorderInput/Output), the filter to [O/b, I/b, kh, kw, b_I, b_O]
 * in the graph (onnxruntime prepacks only constant filters so). Its direct kernel skips the
 * im2col copy of the plain Conv and outweighs the reorders (docs/measurements.md). Filter gradients stay
 * products: as an NCHWc Conv with the batch as channels (output 3x3) they were slower.
 */
function conv(
  e: Emitter,
  x: string,
  w: string,
  [kh, kw, a, b]: number[],
  outAxis: 2 | 3,
  constant: boolean,
  attrs: { strides: number[]; pads: number[] },
): string {
  const [cin, cout] = outAxis === 3 ? [a, b] : [b, a];
  const block = e.nchwcBlock;
  if (constant || block === 0 || cin % block !== 0 || cout % block !== 0) {
    const wOihw = e.g.op('Transpose', [w], { perm: outAxis === 3 ? [3, 2, 0, 1] : [2, 3, 0, 1] });
    return e.g.op('Conv', [x, wOihw], { kernel_shape: [kh, kw], ...attrs });
  }
  // [kh, kw, A/b, b, B/b, b] -> [O/b, I/b, kh, kw, b_I, b_O] in one transpose.
  const w6 = e.g.op('Reshape', [w, e.ints([kh, kw, a / block, block, b / block, block])]);
  const wBlocked = e.g.op('Transpose', [w6], { perm: outAxis === 3 ? [4, 2, 0, 1, 3, 5] : [2, 4, 0, 1, 5, 3] });
  const wNchwc = e.g.op('Reshape', [wBlocked, e.ints([cout, cin, kh, kw])]);
  let xb = e.blocked.get(x);
  if (!xb) {
    xb = e.g.opIn(NCHWC_DOMAIN, 1, 'ReorderInput', [x]);
    e.blocked.set(x, xb);
  }
  const y = e.g.opIn(NCHWC_DOMAIN, 1, 'Conv', [xb, wNchwc], { kernel_shape: [kh, kw], dilations: [1, 1], group: 1, ...attrs });
  return e.g.opIn(NCHWC_DOMAIN, 1, 'ReorderOutput', [y], { channels: cout });
}

/** x zero-padded by [top, left, bottom, right] on its spatial axes (hAxis, hAxis + 1). */
function padSpatial(e: Emitter, x: string, pads: number[], hAxis: number, rank: number): string {
  if (pads.every((p) => p === 0)) return x;
  const at = (top: number, left: number) => Array.from({ length: rank }, (_, a) => (a === hAxis ? top : a === hAxis + 1 ? left : 0));
  return e.g.op('Pad', [x, e.ints([...at(pads[0], pads[1]), ...at(pads[2], pads[3])]), e.scalar(0)], { mode: 'constant' });
}

/** The kh*kw (strided) windows of padded x that a conv's [oh, ow] outputs read, in (i, j) order. */
function convWindows(e: Emitter, xp: string, hAxis: number, [kh, kw]: number[], strides: number[], [oh, ow]: number[]): string[] {
  const windows: string[] = [];
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      const end = [i + strides[0] * (oh - 1) + 1, j + strides[1] * (ow - 1) + 1];
      windows.push(e.g.op('Slice', [xp, e.ints([i, j]), e.ints(end), e.ints([hAxis, hAxis + 1]), e.ints(strides)]));
    }
  }
  return windows;
}

/**
 * The im2col matrix [B*oh*ow, kh*kw*C] of x: [B, H, W, C] (tfjs layout): the windows side by side
 * on the channel axis, rows in the tfjs filter's [kh, kw, C] order.
 */
function im2col(e: Emitter, x: string, c: number, kernel: number[], strides: number[], pads: number[], [B, oh, ow]: number[]): string {
  const windows = convWindows(e, padSpatial(e, x, pads, 1, 4), 1, kernel, strides, [oh, ow]);
  const cols = windows.length === 1 ? windows[0] : e.g.op('Concat', windows, { axis: 3 }); // [B, oh, ow, kh*kw*C]
  return e.g.op('Reshape', [cols, e.ints([B * oh * ow, kernel[0] * kernel[1] * c])]);
}

/** x: [B, H, W, C] (tfjs layout) convolved with a [kh*kw*C, Cout] filter matrix as im2col and one MatMul -> [B, oh, ow, Cout]. */
function im2colConv(e: Emitter, x: string, c: number, kernel: number[], strides: number[], pads: number[], out: number[], wMatrix: string): string {
  const y = e.g.op('MatMul', [im2col(e, x, c, kernel, strides, pads, out), wMatrix]); // [B*oh*ow, Cout]
  return e.g.op('Reshape', [y, e.ints(out)]);
}

/** A tfjs 2-D pool as the ONNX one, on NCHW data (as the convs around it leave it). */
const pool =
  (op: string, attrs: Record<string, AttrValue> = {}): Translate =>
  (e, n) => {
    const x = input(n, 'x');
    const { kernel, strides, pads } = poolGeometry(e, n, x, n.outputs[0]);
    return [{ name: e.g.op(op, [e.as(x, NCHW)], { kernel_shape: kernel, strides, pads, ...attrs }), perm: NCHW }];
  };

/** tfjs kernel name -> ONNX nodes. */
const TRANSLATIONS: Record<string, Translate> = {
  Identity: unary('Identity'),
  Sigmoid: unary('Sigmoid'),
  Exp: unary('Exp'),
  Log: unary('Log'),
  Sqrt: unary('Sqrt'),
  Tanh: unary('Tanh'),
  Erf: unary('Erf'),
  Sin: unary('Sin'),
  Cos: unary('Cos'),
  Neg: unary('Neg'),
  Abs: unary('Abs'),
  Relu: unary('Relu'),
  Reciprocal: unary('Reciprocal'),
  Rsqrt: (e, n) => [elementwise(e, n, [input(n, 'x')], ([x]) => e.g.op('Reciprocal', [e.g.op('Sqrt', [x])]))],
  Square: (e, n) => [elementwise(e, n, [input(n, 'x')], ([x]) => e.g.op('Mul', [x, x]))],
  Add: binary('Add'),
  Sub: binary('Sub'),
  Multiply: binary('Mul'),
  RealDiv: binary('Div'),
  Maximum: binary('Max'),
  Minimum: binary('Min'),
  Pow: binary('Pow'),
  SquaredDifference: (e, n) => [
    elementwise(e, n, [input(n, 'a'), input(n, 'b')], ([a, b]) => {
      const d = e.g.op('Sub', [a, b]);
      return e.g.op('Mul', [d, d]);
    }),
  ],
  AddN: (e, n) => [
    elementwise(
      e,
      n,
      n.inputs.map(([, id]) => id),
      (xs) => e.g.op('Sum', xs),
    ),
  ],
  Cast: (e, n) => {
    const to = CAST_TO[n.attrs.dtype as tf.DataType];
    if (to === undefined) throw new Error(`ONNX export: Cast to ${String(n.attrs.dtype)} is not supported`);
    return unary('Cast', { to })(e, n);
  },
  Reshape: reshape,
  ExpandDims: reshape,
  Squeeze: reshape,
  Transpose: (e, n) => {
    const x = input(n, 'x');
    const q = n.attrs.perm as number[];
    const perm = e.layout(x);
    // Stored data unchanged: output axis k is input axis q[k], so the stored layout is renamed.
    if (perm) {
      const qInv = invert(q);
      return [{ name: e.as(x, perm), perm: perm.map((a) => qInv[a]) }];
    }
    return [e.g.op('Transpose', [e.name(x)], { perm: q })];
  },
  Concat: (e, n) => {
    const ids = n.inputs.map(([, id]) => id);
    const axis = axes(n.attrs.axis, e.shape(ids[0]).length)[0];
    const perm = ids.map((id) => e.layout(id)).find((p) => p !== undefined);
    if (perm)
      return [
        {
          name: e.g.op(
            'Concat',
            ids.map((id) => e.as(id, perm)),
            { axis: perm.indexOf(axis) },
          ),
          perm,
        },
      ];
    return [
      e.g.op(
        'Concat',
        ids.map((id) => e.name(id)),
        { axis },
      ),
    ];
  },
  SplitV: (e, n) => {
    // One Slice per part (the graph builder makes single-output nodes); bounds from traced shapes.
    const x = input(n, 'x');
    const axis = axes(n.attrs.axis, e.shape(x).length)[0];
    const perm = e.layout(x);
    const src = perm ? e.as(x, perm) : e.name(x);
    let start = 0;
    return n.outputs.map((id) => {
      const size = e.shape(id)[axis];
      const out = e.g.op('Slice', [src, e.ints([start]), e.ints([start + size]), e.ints([perm ? perm.indexOf(axis) : axis])]);
      start += size;
      return perm ? { name: out, perm } : out;
    });
  },
  Slice: (e, n) => {
    const x = input(n, 'x');
    const begin = n.attrs.begin as number[];
    const size = e.shape(n.outputs[0]);
    const perm = e.layout(x) ?? begin.map((_, i) => i);
    const b = perm.map((a) => begin[a]);
    const y = e.g.op('Slice', [e.as(x, perm), e.ints(b), e.ints(perm.map((a, i) => b[i] + size[a])), e.ints(perm.map((_, i) => i))]);
    return [{ name: y, perm }];
  },
  Tile: (e, n) => [e.g.op('Tile', [e.name(input(n, 'x')), e.ints(n.attrs.reps as number[])])],
  BroadcastTo: (e, n) => [e.g.op('Expand', [e.name(input(n, 'x')), e.ints(e.shape(n.outputs[0]))])],
  PadV2: (e, n) => {
    const x = input(n, 'x');
    const p = n.attrs.paddings as [number, number][];
    const perm = e.layout(x) ?? p.map((_, i) => i);
    const pads = [...perm.map((a) => p[a][0]), ...perm.map((a) => p[a][1])];
    return [{ name: e.g.op('Pad', [e.as(x, perm), e.ints(pads), e.scalar(n.attrs.constantValue as number)], { mode: 'constant' }), perm }];
  },
  Mean: reduce('ReduceMean'),
  Sum: reduce('ReduceSum'),
  Max: reduce('ReduceMax'),
  Min: reduce('ReduceMin'),
  Softmax: (e, n) => {
    const x = input(n, 'logits');
    const axis = axes(n.attrs.dim, e.shape(x).length)[0];
    const perm = e.layout(x);
    if (perm) return [{ name: e.g.op('Softmax', [e.as(x, perm)], { axis: perm.indexOf(axis) }), perm }];
    return [e.g.op('Softmax', [e.name(x)], { axis })];
  },
  BatchMatMul: (e, n) => {
    // tfjs transposes the last two axes of a and/or b; ONNX MatMul broadcasts batch axes alike.
    const operand = (key: string, transpose: unknown): string => {
      const id = input(n, key);
      const name = e.name(id);
      if (!transpose) return name;
      const rank = e.shape(id).length;
      const perm = [...Array(rank - 2).keys(), rank - 1, rank - 2];
      return e.g.op('Transpose', [name], { perm });
    };
    return [e.g.op('MatMul', [operand('a', n.attrs.transposeA), operand('b', n.attrs.transposeB)])];
  },
  Step: (e, n) =>
    // x > 0 ? 1 : alpha (NaN stays NaN in tfjs; here it gives alpha).
    [elementwise(e, n, [input(n, 'x')], ([x]) => e.g.op('Where', [e.g.op('Greater', [x, e.scalar(0)]), e.scalar(1), e.scalar(n.attrs.alpha as number)]))],
  ClipByValue: (e, n) => [
    elementwise(e, n, [input(n, 'x')], ([x]) => e.g.op('Clip', [x, e.scalar(n.attrs.clipValueMin as number), e.scalar(n.attrs.clipValueMax as number)])),
  ],
  GreaterEqual: binary('GreaterOrEqual'),
  LessEqual: binary('LessOrEqual'),
  LogicalAnd: binary('And'),
  Select: (e, n) => [elementwise(e, n, [input(n, 'condition'), input(n, 't'), input(n, 'e')], (xs) => e.g.op('Where', xs))],
  ZerosLike: (e, n) => [e.g.op('Expand', [e.scalar(0), e.ints(e.shape(n.outputs[0]))])],
  OneHot: (e, n) => {
    const id = n.outputs[0];
    const values = e.g.floats(`onehot_values_${id}`, [2], [n.attrs.offValue as number, n.attrs.onValue as number]);
    // onnxruntime's CPU OneHot has int64 indices with float values (not int32).
    const indices = e.g.op('Cast', [e.name(input(n, 'indices'))], { to: 7 });
    const y = e.g.op('OneHot', [indices, e.g.int64s(`onehot_depth_${id}`, [], [n.attrs.depth as number]), values], { axis: -1 });
    return [n.attrs.dtype === 'float32' ? y : e.g.op('Cast', [y], { to: CAST_TO[n.attrs.dtype as tf.DataType] ?? 1 })];
  },
  Unpack: (e, n) => {
    const x = input(n, 'value');
    const axis = axes(n.attrs.axis, e.shape(x).length)[0];
    const src = e.name(x);
    return n.outputs.map((id, i) => e.g.op('Reshape', [e.g.op('Slice', [src, e.ints([i]), e.ints([i + 1]), e.ints([axis])]), e.ints(e.shape(id))]));
  },
  // Both exclude the padding: tfjs' average divides by the window's in-image taps, its max ignores pads.
  AvgPool: pool('AveragePool', { count_include_pad: 0 }),
  MaxPool: pool('MaxPool'),
  AvgPoolGrad: (e, n) => {
    // tfjs' AvgPoolGrad spreads each dy evenly over its whole window, padding included (1 / kh*kw
    // per tap; its forward divides by the in-image taps): a per-channel ConvTranspose of dy with
    // that constant filter.
    const dy = input(n, 'dy');
    const x = input(n, 'input');
    const { kernel, strides, pads } = poolGeometry(e, n, x, dy);
    const [, ih, iw, c] = e.shape(x);
    const [, oh, ow] = e.shape(dy);
    const [kh, kw] = kernel;
    const w = e.g.floats(`avgpool_grad_filter_${n.outputs[0]}`, [c, 1, kh, kw], new Float32Array(c * kh * kw).fill(1 / (kh * kw)));
    const outputPadding = transposedOutputPadding([ih, iw], [oh, ow], kernel, strides, pads);
    return [
      { name: e.g.op('ConvTranspose', [e.as(dy, NCHW), w], { kernel_shape: kernel, strides, pads, output_padding: outputPadding, group: c }), perm: NCHW },
    ];
  },
  MaxPoolGrad: (e, n) => {
    // Each dy goes to the first maximum of its window (tfjs' tie rule, and MaxPool's indices':
    // flat positions in the NCHW input), scattered into zeros. Overlapping windows can send two
    // dys to one position, which opset 13's ScatterElements would overwrite rather than add: the
    // windows are split into m_h x m_w interleaved classes (m = ceil(k / s)) of disjoint
    // windows, each scattered on its own, and the results summed.
    const dy = input(n, 'dy');
    const x = input(n, 'input');
    const { kernel, strides, pads } = poolGeometry(e, n, x, dy);
    const [B, ih, iw, c] = e.shape(x);
    const [, oh, ow] = e.shape(dy);
    const [, indices] = e.g.opOutputs('MaxPool', [e.as(x, NCHW)], { kernel_shape: kernel, strides, pads }, 2); // [B, C, oh, ow] int64
    const dyNchw = e.as(dy, NCHW);
    const zeros = e.g.op('Expand', [e.scalar(0), e.ints([B * c * ih * iw])]);
    const [mh, mw] = [0, 1].map((i) => Math.ceil(kernel[i] / strides[i]));
    const flat = (t: string) => e.g.op('Reshape', [t, e.ints([-1])]);
    const parts: string[] = [];
    for (let a = 0; a < Math.min(mh, oh); a++) {
      for (let b = 0; b < Math.min(mw, ow); b++) {
        const pick = (t: string) => (mh * mw === 1 ? t : e.g.op('Slice', [t, e.ints([a, b]), e.ints([oh, ow]), e.ints([2, 3]), e.ints([mh, mw])]));
        parts.push(e.g.op('ScatterElements', [zeros, flat(pick(indices)), flat(pick(dyNchw))], { axis: 0 }));
      }
    }
    const dx = parts.length === 1 ? parts[0] : e.g.op('Sum', parts);
    return [{ name: e.g.op('Reshape', [dx, e.ints([B, c, ih, iw])]), perm: NCHW }];
  },
  Conv2DBackpropInput: (e, n) => {
    // The input gradient of a conv is the transposed conv of dy with the same filter (OIHW for
    // Conv is IOHW for ConvTranspose: the same transpose of the tfjs [kh, kw, Cin, Cout] filter).
    checkConvAttrs(n);
    const dy = input(n, 'dy');
    const w = input(n, 'filter');
    const [, oh, ow] = e.shape(dy); // [B, oh, ow, Cout]
    const [kh, kw] = e.shape(w);
    const [, ih, iw] = e.shape(n.outputs[0]); // [B, H, W, Cin]
    const strides = pair(n.attrs.strides);
    const pads = convPads(n.attrs.pad, [ih, iw], [oh, ow], [kh, kw], strides, [1, 1]);
    const outputPadding = transposedOutputPadding([ih, iw], [oh, ow], [kh, kw], strides, pads);
    // Stride 1: the same gradient as a plain Conv of dy with the filter flipped in space and its
    // channel axes swapped, padded k - 1 - p: onnxruntime's Conv runs it faster than its
    // ConvTranspose (GEMM, then a col2im scatter).
    const flippedPads = [kh - 1 - pads[0], kw - 1 - pads[1], kh - 1 - pads[2], kw - 1 - pads[3]];
    if (strides[0] === 1 && strides[1] === 1 && flippedPads.every((p) => p >= 0) && outputPadding.every((p) => p === 0)) {
      const flip = (t: string, hAxis: number) =>
        e.g.op('Slice', [t, e.ints([kh - 1, kw - 1]), e.ints([-(kh + 1), -(kw + 1)]), e.ints([hAxis, hAxis + 1]), e.ints([-1, -1])]);
      if (useIm2col(e, w, ih * iw)) {
        const [, , cin, cout] = e.shape(w);
        const wFlipped = flip(e.g.op('Transpose', [e.name(w)], { perm: [0, 1, 3, 2] }), 0); // [kh, kw, Cout, Cin]
        const wMatrix = e.g.op('Reshape', [wFlipped, e.ints([kh * kw * cout, cin])]);
        return [im2colConv(e, e.name(dy), cout, [kh, kw], strides, flippedPads, e.shape(n.outputs[0]), wMatrix)];
      }
      return [{ name: conv(e, e.as(dy, NCHW), flip(e.name(w), 0), e.shape(w), 2, e.trace.constants.has(w), { strides, pads: flippedPads }), perm: NCHW }];
    }
    const wOihw = e.g.op('Transpose', [e.name(w)], { perm: [3, 2, 0, 1] });
    const dx = e.g.op('ConvTranspose', [e.as(dy, NCHW), wOihw], { kernel_shape: [kh, kw], strides, pads, output_padding: outputPadding });
    return [{ name: dx, perm: NCHW }];
  },
  Conv2DBackpropFilter: (e, n) => {
    // dW[i, j, c, o] = sum over b, y, x of xpad[b, s*y + i, s*x + j, c] dy[b, y, x, o]: the
    // kh*kw shifted (strided) windows of x side by side on the channel axis form the im2col
    // matrix, whose product with dy gives the filter in tfjs's [kh, kw, Cin, Cout] order.
    checkConvAttrs(n);
    const x = input(n, 'x');
    const dy = input(n, 'dy');
    const [B, ih, iw, cin] = e.shape(x);
    const [, oh, ow, cout] = e.shape(dy);
    const [kh, kw] = n.attrs.filterShape as number[];
    const strides = pair(n.attrs.strides);
    const pads = convPads(n.attrs.pad, [ih, iw], [oh, ow], [kh, kw], strides, [1, 1]);
    const P = oh * ow;
    // Large images: on NCHW data (as the convs leave it), one product per image, summed over the
    // batch. Small ones (the U-Net's 8x8): one GEMM over K = B*oh*ow in tfjs layout, whose long K
    // beats B short products.
    const nchw = e.propagate && P >= 256;
    let dw: string;
    if (nchw) {
      // One product per window ([B, Cin, L] x [B, L, Cout]) and a Concat of the small results:
      // concatenating the windows themselves (the im2col matrix) cost more than the products.
      let windows: string[];
      let dyNchw = e.as(dy, NCHW);
      let L = P;
      if (strides[0] === 1 && strides[1] === 1) {
        // Stride 1: with the padded image flattened row by row (one spare row at the bottom),
        // window (i, j) is the contiguous run of oh*Wp values from i*Wp + j, and dy padded to Wp
        // columns with zeros cancels the wrapped columns. One long copy per (b, c) plane instead
        // of oh rows of ow: fewer, longer Slices, for Wp / ow more product work and a Pad of dy.
        const wp = iw + pads[1] + pads[3]; // ow + kw - 1
        const spare = kw > 1 ? 1 : 0;
        const hp = ih + pads[0] + pads[2] + spare;
        const flat = e.g.op('Reshape', [padSpatial(e, e.as(x, NCHW), [pads[0], pads[1], pads[2] + spare, pads[3]], 2, 4), e.ints([B, cin, hp * wp])]); // [B, Cin, hp*Wp]
        L = oh * wp;
        windows = [];
        for (let i = 0; i < kh; i++) {
          for (let j = 0; j < kw; j++) {
            const off = i * wp + j;
            windows.push(off === 0 && L === hp * wp ? flat : e.g.op('Slice', [flat, e.ints([off]), e.ints([off + L]), e.ints([2])]));
          }
        }
        if (wp > ow) dyNchw = e.g.op('Pad', [dyNchw, e.ints([0, 0, 0, 0, 0, 0, 0, wp - ow]), e.scalar(0)], { mode: 'constant' });
      } else {
        const xp = padSpatial(e, e.as(x, NCHW), pads, 2, 4);
        windows = convWindows(e, xp, 2, [kh, kw], strides, [oh, ow]).map((win) => e.g.op('Reshape', [win, e.ints([B, cin, P])]));
      }
      const dyT = e.g.op('Transpose', [e.g.op('Reshape', [dyNchw, e.ints([B, cout, L])])], { perm: [0, 2, 1] }); // [B, L, Cout]
      const parts = windows.map((win) => e.g.op('MatMul', [win, dyT])); // kh*kw x [B, Cin, Cout]
      const perImage = parts.length === 1 ? parts[0] : e.g.op('Concat', parts, { axis: 1 }); // [B, kh*kw*Cin, Cout]
      dw = e.g.op('ReduceSum', [perImage, e.ints([0])], { keepdims: 0 }); // [kh*kw*Cin, Cout]
    } else {
      const a = im2col(e, e.name(x), cin, [kh, kw], strides, pads, [B, oh, ow]);
      const b = e.g.op('Reshape', [e.name(dy), e.ints([B * P, cout])]);
      dw = e.g.op('Gemm', [a, b], { transA: 1 }); // [kh*kw*Cin, Cout]
    }
    return [e.g.op('Reshape', [dw, e.ints([kh, kw, cin, cout])])];
  },
  Conv2D: (e, n) => {
    checkConvAttrs(n);
    const x = input(n, 'x');
    const w = input(n, 'filter');
    const [, ih, iw] = e.shape(x); // [B, H, W, Cin]
    const [kh, kw] = e.shape(w); // [kh, kw, Cin, Cout]
    const [, oh, ow] = e.shape(n.outputs[0]);
    const strides = pair(n.attrs.strides);
    const pads = convPads(n.attrs.pad, [ih, iw], [oh, ow], [kh, kw], strides, [1, 1]);
    if (useIm2col(e, w, oh * ow)) {
      const [, , cin, cout] = e.shape(w);
      const wMatrix = e.g.op('Reshape', [e.name(w), e.ints([kh * kw * cin, cout])]);
      return [im2colConv(e, e.name(x), cin, [kh, kw], strides, pads, e.shape(n.outputs[0]), wMatrix)];
    }
    return [{ name: conv(e, e.as(x, NCHW), e.name(w), e.shape(w), 3, e.trace.constants.has(w), { strides, pads }), perm: NCHW }];
  },
};

/** The tfjs kernels the exporter translates. */
export const SUPPORTED_KERNELS: readonly string[] = Object.keys(TRANSLATIONS);

export interface ExportOptions {
  /** Graph name. */
  name?: string;
  /** Name of the graph output (default 'output'); with several outputs, one name per trace output. */
  outputName?: string;
  outputNames?: string[];
  docString?: string;
  /** Let values live permuted (see the file comment); false keeps tfjs layout everywhere. Default true. */
  propagateLayout?: boolean;
  /**
   * onnxruntime's NCHWc block size on this CPU (`nchwcBlockSize()` in ./runtime.ts); when given,
   * convs whose filter is a graph input (training graphs) and whose channel counts are multiples
   * of it run as onnxruntime's NCHWc Conv (see `conv`). The model then needs onnxruntime's CPU
   * provider with those kernels. Default 0: plain ONNX Convs.
   */
  nchwcBlock?: number;
  /** Large initializers go to this file beside the model (OnnxModelOptions.externalData); needed past 2 GB. */
  externalDataFile?: string;
}

/** Serialises a trace as an ONNX model (opset 13, IR 7); the inputs keep their trace names. */
export function traceToOnnx(trace: KernelTrace, opts: ExportOptions = {}): Uint8Array {
  const unsupported = [...new Set(trace.nodes.map((n) => n.kernel).filter((k) => !(k in TRANSLATIONS)))];
  if (unsupported.length > 0) {
    throw new Error(
      `ONNX export: no translation for tfjs kernel(s) ${unsupported.map((k) => `'${k}'`).join(', ')}; supported: ${SUPPORTED_KERNELS.join(', ')}`,
    );
  }
  const block = opts.nchwcBlock ?? 0;
  if (!Number.isInteger(block) || block < 0) throw new Error(`ONNX export: nchwcBlock must be a non-negative integer, got ${block}`);
  const e = new Emitter(trace, opts.name ?? 'traced', opts.propagateLayout ?? true, block);
  for (const n of trace.nodes) {
    const outs = TRANSLATIONS[n.kernel](e, n);
    n.outputs.forEach((id, i) => {
      e.bind(id, outs[i]);
    });
  }
  const outputNames = opts.outputNames ?? [opts.outputName ?? 'output'];
  if (outputNames.length !== trace.outputs.length) throw new Error(`ONNX export: ${outputNames.length} output names for ${trace.outputs.length} outputs`);
  trace.outputs.forEach((id, i) => {
    const out = e.info(id);
    e.g.op('Identity', [e.name(id)], {}, outputNames[i]);
    e.g.output({ name: outputNames[i], dataType: onnxType(out.dtype, `output '${outputNames[i]}'`), shape: out.shape });
  });
  return e.g.toModel({
    opsetVersion: ONNX_OPSET,
    docString: opts.docString,
    ...(opts.externalDataFile ? { externalData: { file: opts.externalDataFile } } : {}),
  });
}
