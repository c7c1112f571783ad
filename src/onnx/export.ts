/**
 * A kernel trace (./trace.ts) as an ONNX model (opset 13), written with the project's own
 * protobuf writer. Shapes are the trace's: a model is exported per input shape (batch included),
 * because tfjs ops bake sizes into Reshape targets.
 *
 * Layout stays NHWC as in tfjs; each Conv2D becomes Transpose -> Conv (NCHW, weights OIHW) ->
 * Transpose. The weight transposes act on initializers, so onnxruntime constant-folds them when
 * the session is created; the activation transposes stay wherever a GroupNorm's reshape separates
 * two convolutions. A kernel with no translation is an error naming it.
 */
import type * as tf from '@tensorflow/tfjs';
import { type AttrValue, OnnxGraphBuilder, type OnnxDataTypeName } from '../text/onnx-writer.js';
import type { KernelTrace, TracedNode, TracedValue } from './trace.js';

export const ONNX_OPSET = 13;

/** The graph being written: value names, shapes and small helpers for the translators. */
class Emitter {
  readonly g: OnnxGraphBuilder;
  private readonly names = new Map<number, string>();
  private counter = 0;

  constructor(readonly trace: KernelTrace, name: string) {
    this.g = new OnnxGraphBuilder(name);
    for (const [inputName, v] of trace.inputs) {
      this.g.input({ name: inputName, dataType: onnxType(v.dtype, `input '${inputName}'`), shape: v.shape });
      this.names.set(v.id, inputName);
    }
  }

  /** The ONNX name of a traced tensor; constants become initializers on first use. */
  name(id: number): string {
    const known = this.names.get(id);
    if (known !== undefined) return known;
    const c = this.trace.constants.get(id);
    if (!c) throw new Error(`ONNX export: tensor ${id} is used before it is computed`);
    const name = `const_${id}`;
    const dataType = onnxType(c.dtype, `constant ${id}`);
    const data = dataType === 'FLOAT' ? Float32Array.from(c.values) : Int32Array.from(c.values);
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

  bind(id: number, name: string): void {
    this.names.set(id, name);
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
function convPads(pad: unknown, inHW: number[], outHW: number[], kernel: number[], strides: number[], dilations: number[]): number[] {
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
  throw new Error(`ONNX export: Conv2D pad ${JSON.stringify(pad)} is not supported (allowed: a number, 'same', 'valid')`);
}

const pair = (v: unknown): number[] => (Array.isArray(v) ? (v as number[]) : [v as number, v as number]);

type Translate = (e: Emitter, n: TracedNode) => string[];

const unary = (op: string): Translate => (e, n) => [e.g.op(op, [e.name(input(n, 'x'))])];
const binary = (op: string): Translate => (e, n) => [e.g.op(op, [e.name(input(n, 'a')), e.name(input(n, 'b'))])];
/** Kernels that only change the shape: a Reshape to the traced output shape. */
const reshape: Translate = (e, n) => [e.g.op('Reshape', [e.name(n.inputs[0][1]), e.ints(e.shape(n.outputs[0]))])]; // 'x' or 'input'
const reduce = (op: string): Translate => (e, n) => {
  const x = input(n, 'x');
  // Mean/Sum name the axes `axis`, Max/Min `reductionIndices`.
  const rank = e.shape(x).length;
  const given = n.attrs.axis ?? n.attrs.reductionIndices;
  const all = [...Array(rank).keys()]; // no axis: reduce over every axis
  const attrs: Record<string, AttrValue> = { axes: given == null ? all : axes(given, rank), keepdims: n.attrs.keepDims ? 1 : 0 };
  // Opset 13 moved ReduceSum's axes to an input; the other reductions keep the attribute.
  if (op === 'ReduceSum') {
    const { axes: ax, ...rest } = attrs;
    return [e.g.op(op, [e.name(x), e.ints(ax as number[])], rest)];
  }
  return [e.g.op(op, [e.name(x)], attrs)];
};

function checkConvAttrs(n: TracedNode): void {
  if (n.attrs.dataFormat !== 'NHWC') throw new Error(`ONNX export: ${n.kernel} dataFormat ${String(n.attrs.dataFormat)} is not supported (NHWC only)`);
  if (n.attrs.dimRoundingMode != null) throw new Error(`ONNX export: ${n.kernel} dimRoundingMode is not supported`);
  const d = pair(n.attrs.dilations ?? 1);
  if (d[0] !== 1 || d[1] !== 1) throw new Error(`ONNX export: ${n.kernel} with dilations ${d.join('x')} is not supported (1 only)`);
}

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
  Rsqrt: (e, n) => [e.g.op('Reciprocal', [e.g.op('Sqrt', [e.name(input(n, 'x'))])])],
  Square: (e, n) => {
    const x = e.name(input(n, 'x'));
    return [e.g.op('Mul', [x, x])];
  },
  Add: binary('Add'),
  Sub: binary('Sub'),
  Multiply: binary('Mul'),
  RealDiv: binary('Div'),
  Maximum: binary('Max'),
  Minimum: binary('Min'),
  Pow: binary('Pow'),
  SquaredDifference: (e, n) => {
    const d = e.g.op('Sub', [e.name(input(n, 'a')), e.name(input(n, 'b'))]);
    return [e.g.op('Mul', [d, d])];
  },
  AddN: (e, n) => [e.g.op('Sum', n.inputs.map(([, id]) => e.name(id)))],
  Cast: (e, n) => {
    const to = CAST_TO[n.attrs.dtype as tf.DataType];
    if (to === undefined) throw new Error(`ONNX export: Cast to ${String(n.attrs.dtype)} is not supported`);
    return [e.g.op('Cast', [e.name(input(n, 'x'))], { to })];
  },
  Reshape: reshape,
  ExpandDims: reshape,
  Squeeze: reshape,
  Transpose: (e, n) => [e.g.op('Transpose', [e.name(input(n, 'x'))], { perm: n.attrs.perm as number[] })],
  Concat: (e, n) => {
    const first = n.inputs[0][1];
    return [e.g.op('Concat', n.inputs.map(([, id]) => e.name(id)), { axis: axes(n.attrs.axis, e.shape(first).length)[0] })];
  },
  SplitV: (e, n) => {
    // One Slice per part (the graph builder makes single-output nodes); bounds from traced shapes.
    const x = input(n, 'x');
    const axis = axes(n.attrs.axis, e.shape(x).length)[0];
    let start = 0;
    return n.outputs.map((id) => {
      const size = e.shape(id)[axis];
      const out = e.g.op('Slice', [e.name(x), e.ints([start]), e.ints([start + size]), e.ints([axis])]);
      start += size;
      return out;
    });
  },
  Slice: (e, n) => {
    const begin = n.attrs.begin as number[];
    const size = e.shape(n.outputs[0]);
    const dims = begin.map((_, i) => i);
    return [e.g.op('Slice', [e.name(input(n, 'x')), e.ints(begin), e.ints(begin.map((b, i) => b + size[i])), e.ints(dims)])];
  },
  Tile: (e, n) => [e.g.op('Tile', [e.name(input(n, 'x')), e.ints(n.attrs.reps as number[])])],
  BroadcastTo: (e, n) => [e.g.op('Expand', [e.name(input(n, 'x')), e.ints(e.shape(n.outputs[0]))])],
  PadV2: (e, n) => {
    const p = n.attrs.paddings as [number, number][];
    const pads = [...p.map((q) => q[0]), ...p.map((q) => q[1])];
    return [e.g.op('Pad', [e.name(input(n, 'x')), e.ints(pads), e.scalar(n.attrs.constantValue as number)], { mode: 'constant' })];
  },
  Mean: reduce('ReduceMean'),
  Sum: reduce('ReduceSum'),
  Max: reduce('ReduceMax'),
  Min: reduce('ReduceMin'),
  Softmax: (e, n) => {
    const x = input(n, 'logits');
    return [e.g.op('Softmax', [e.name(x)], { axis: axes(n.attrs.dim, e.shape(x).length)[0] })];
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
  Step: (e, n) => {
    // x > 0 ? 1 : alpha (NaN stays NaN in tfjs; here it gives alpha).
    const x = e.name(input(n, 'x'));
    return [e.g.op('Where', [e.g.op('Greater', [x, e.scalar(0)]), e.scalar(1), e.scalar(n.attrs.alpha as number)])];
  },
  ClipByValue: (e, n) => [e.g.op('Clip', [e.name(input(n, 'x')), e.scalar(n.attrs.clipValueMin as number), e.scalar(n.attrs.clipValueMax as number)])],
  GreaterEqual: binary('GreaterOrEqual'),
  LessEqual: binary('LessOrEqual'),
  LogicalAnd: binary('And'),
  Select: (e, n) => [e.g.op('Where', [e.name(input(n, 'condition')), e.name(input(n, 't')), e.name(input(n, 'e'))])],
  ZerosLike: (e, n) => [e.g.op('Expand', [e.scalar(0), e.ints(e.shape(n.outputs[0]))])],
  OneHot: (e, n) => {
    const id = n.outputs[0];
    const values = e.g.floats(`onehot_values_${id}`, [2], [n.attrs.offValue as number, n.attrs.onValue as number]);
    // onnxruntime's CPU OneHot has int64 indices with float values (not int32).
    const indices = e.g.op('Cast', [e.name(input(n, 'indices'))], { to: 7 });
    const y = e.g.op('OneHot', [indices, e.g.int64s(`onehot_depth_${id}`, [], [n.attrs.depth as number]), values], { axis: -1 });
    return [n.attrs.dtype === 'float32' ? y : e.g.op('Cast', [y], { to: CAST_TO[n.attrs.dtype as tf.DataType] ?? 1 })];
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
    // ConvTranspose size: s * (o - 1) + k - pads + output_padding must give the forward input size.
    const outputPadding = [0, 1].map((i) => [ih, iw][i] - (strides[i] * ([oh, ow][i] - 1) + [kh, kw][i] - pads[i] - pads[i + 2]));
    const dyNchw = e.g.op('Transpose', [e.name(dy)], { perm: [0, 3, 1, 2] });
    const wOihw = e.g.op('Transpose', [e.name(w)], { perm: [3, 2, 0, 1] });
    const dx = e.g.op('ConvTranspose', [dyNchw, wOihw], { kernel_shape: [kh, kw], strides, pads, output_padding: outputPadding });
    return [e.g.op('Transpose', [dx], { perm: [0, 2, 3, 1] })];
  },
  Conv2DBackpropFilter: (e, n) => {
    // dW[i, j, :, :] = sum over b, y, x of xpad[b, s*y + i, s*x + j, :]^T dy[b, y, x, :]: the
    // kh*kw shifted (strided) windows of x side by side on the channel axis form the im2col
    // matrix [B*oh*ow, kh*kw*Cin], and one GEMM with dy [B*oh*ow, Cout] gives the filter in
    // tfjs's [kh, kw, Cin, Cout] order.
    checkConvAttrs(n);
    const x = input(n, 'x');
    const dy = input(n, 'dy');
    const [B, ih, iw, cin] = e.shape(x);
    const [, oh, ow, cout] = e.shape(dy);
    const [kh, kw] = n.attrs.filterShape as number[];
    const strides = pair(n.attrs.strides);
    const pads = convPads(n.attrs.pad, [ih, iw], [oh, ow], [kh, kw], strides, [1, 1]);
    let xp = e.name(x);
    if (pads.some((p) => p !== 0)) xp = e.g.op('Pad', [xp, e.ints([0, pads[0], pads[1], 0, 0, pads[2], pads[3], 0]), e.scalar(0)], { mode: 'constant' });
    const windows: string[] = [];
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        const start = [i, j];
        const end = [i + strides[0] * (oh - 1) + 1, j + strides[1] * (ow - 1) + 1];
        windows.push(e.g.op('Slice', [xp, e.ints(start), e.ints(end), e.ints([1, 2]), e.ints(strides)])); // [B, oh, ow, Cin]
      }
    }
    const cols = windows.length === 1 ? windows[0] : e.g.op('Concat', windows, { axis: 3 }); // [B, oh, ow, kh*kw*Cin]
    const a = e.g.op('Reshape', [cols, e.ints([B * oh * ow, kh * kw * cin])]);
    const b = e.g.op('Reshape', [e.name(dy), e.ints([B * oh * ow, cout])]);
    const dw = e.g.op('Gemm', [a, b], { transA: 1 }); // [kh*kw*Cin, Cout]
    return [e.g.op('Reshape', [dw, e.ints([kh, kw, cin, cout])])];
  },
  Conv2D: (e, n) => {
    if (n.attrs.dataFormat !== 'NHWC') throw new Error(`ONNX export: Conv2D dataFormat ${String(n.attrs.dataFormat)} is not supported (NHWC only)`);
    if (n.attrs.dimRoundingMode != null) throw new Error('ONNX export: Conv2D dimRoundingMode is not supported');
    const x = input(n, 'x');
    const w = input(n, 'filter');
    const [, ih, iw] = e.shape(x); // [B, H, W, Cin]
    const [kh, kw] = e.shape(w); // [kh, kw, Cin, Cout]
    const [, oh, ow] = e.shape(n.outputs[0]);
    const strides = pair(n.attrs.strides);
    const dilations = pair(n.attrs.dilations ?? 1);
    const pads = convPads(n.attrs.pad, [ih, iw], [oh, ow], [kh, kw], strides, dilations);
    const xNchw = e.g.op('Transpose', [e.name(x)], { perm: [0, 3, 1, 2] });
    const wOihw = e.g.op('Transpose', [e.name(w)], { perm: [3, 2, 0, 1] });
    const y = e.g.op('Conv', [xNchw, wOihw], { kernel_shape: [kh, kw], strides, dilations, pads });
    return [e.g.op('Transpose', [y], { perm: [0, 2, 3, 1] })];
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
}

/** Serialises a trace as an ONNX model (opset 13, IR 7); the inputs keep their trace names. */
export function traceToOnnx(trace: KernelTrace, opts: ExportOptions = {}): Uint8Array {
  const unsupported = [...new Set(trace.nodes.map((n) => n.kernel).filter((k) => !(k in TRANSLATIONS)))];
  if (unsupported.length > 0) {
    throw new Error(`ONNX export: no translation for tfjs kernel(s) ${unsupported.map((k) => `'${k}'`).join(', ')}; supported: ${SUPPORTED_KERNELS.join(', ')}`);
  }
  const e = new Emitter(trace, opts.name ?? 'traced');
  for (const n of trace.nodes) {
    const outs = TRANSLATIONS[n.kernel](e, n);
    n.outputs.forEach((id, i) => e.bind(id, outs[i]));
  }
  const outputNames = opts.outputNames ?? [opts.outputName ?? 'output'];
  if (outputNames.length !== trace.outputs.length) throw new Error(`ONNX export: ${outputNames.length} output names for ${trace.outputs.length} outputs`);
  trace.outputs.forEach((id, i) => {
    const out = e.info(id);
    e.g.op('Identity', [e.name(id)], {}, outputNames[i]);
    e.g.output({ name: outputNames[i], dataType: onnxType(out.dtype, `output '${outputNames[i]}'`), shape: out.shape });
  });
  return e.g.toModel({ opsetVersion: ONNX_OPSET, docString: opts.docString });
}
