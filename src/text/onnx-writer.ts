/**
 * A minimal ONNX model writer: a protobuf encoder (varints, fixed32, length-delimited fields)
 * and a graph builder for the handful of ONNX messages a feed-forward graph needs.
 *
 * Field numbers follow onnx/onnx.proto (IR version 7, the one that goes with opset 12-14):
 *   ModelProto:        ir_version 1, producer_name 2, producer_version 3, domain 4,
 *                      model_version 5, doc_string 6, graph 7, opset_import 8, metadata_props 14
 *   OperatorSetIdProto: domain 1, version 2
 *   GraphProto:        node 1, name 2, initializer 5, doc_string 10, input 11, output 12
 *   NodeProto:         input 1, output 2, name 3, op_type 4, attribute 5, domain 7
 *   AttributeProto:    name 1, f 2, i 3, s 4, t 5, floats 7, ints 8, type 20
 *   TensorProto:       dims 1, data_type 2, name 8, raw_data 9
 *   ValueInfoProto:    name 1, type 2;  TypeProto: tensor_type 1;  TypeProto.Tensor: elem_type 1, shape 2
 *   TensorShapeProto:  dim 1;  Dimension: dim_value 1, dim_param 2
 *   StringStringEntryProto: key 1, value 2
 * onnx.proto is proto2, so repeated scalars are written unpacked (one tag per element).
 * Initializers are little-endian raw_data, as the spec requires for raw_data.
 */

/** TensorProto.DataType values. */
export const OnnxDataType = { FLOAT: 1, INT32: 6, INT64: 7 } as const;
export type OnnxDataTypeName = keyof typeof OnnxDataType;

/** AttributeProto.AttributeType values. */
const AttrType = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, FLOATS: 6, INTS: 7 } as const;

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

const utf8 = new TextEncoder();

/** Accumulates protobuf bytes. */
export class ProtoWriter {
  private chunks: Uint8Array[] = [];
  private length = 0;

  private push(bytes: Uint8Array): void {
    this.chunks.push(bytes);
    this.length += bytes.length;
  }

  private rawVarint(value: number | bigint): void {
    // Negative int64s are written as their 64-bit two's complement (10 bytes), as protobuf does.
    let v = BigInt.asUintN(64, BigInt(value));
    const out: number[] = [];
    while (v >= 0x80n) {
      out.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    out.push(Number(v));
    this.push(Uint8Array.from(out));
  }

  private tag(field: number, wire: number): void {
    this.rawVarint((field << 3) | wire);
  }

  /** int32 / int64 / enum / bool field. */
  varint(field: number, value: number | bigint): this {
    if (typeof value === 'number' && !Number.isSafeInteger(value)) {
      throw new Error(`protobuf varint field ${field}: ${value} is not a safe integer`);
    }
    this.tag(field, WIRE_VARINT);
    this.rawVarint(value);
    return this;
  }

  /** float field (fixed32, little-endian). */
  float(field: number, value: number): this {
    this.tag(field, WIRE_FIXED32);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    this.push(b);
    return this;
  }

  /** bytes / string / embedded message field. */
  bytes(field: number, value: Uint8Array): this {
    this.tag(field, WIRE_LEN);
    this.rawVarint(value.length);
    this.push(value);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, utf8.encode(value));
  }

  message(field: number, msg: ProtoWriter): this {
    return this.bytes(field, msg.finish());
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

/** An attribute value: number (int unless `float()`-wrapped), number[] (ints), or tagged forms. */
export type AttrValue =
  | number
  | number[]
  | string
  | { float: number }
  | { floats: number[] }
  | { tensor: OnnxTensor };

/** Marks a number as a FLOAT attribute (plain numbers are INT attributes). */
export function float(value: number): { float: number } {
  return { float: value };
}

export interface OnnxTensor {
  name: string;
  dataType: OnnxDataTypeName;
  dims: number[];
  data: Float32Array | Int32Array | BigInt64Array;
}

/** A graph input/output: element type plus dims (numbers are fixed, strings are symbolic). */
export interface OnnxValueInfo {
  name: string;
  dataType: OnnxDataTypeName;
  shape: (number | string)[];
}

interface OnnxNode {
  opType: string;
  inputs: string[];
  outputs: string[];
  name: string;
  attributes: Record<string, AttrValue>;
}

function checkDims(t: OnnxTensor): void {
  const n = t.dims.reduce((a, b) => a * b, 1);
  if (n !== t.data.length) {
    throw new Error(`ONNX tensor '${t.name}': dims [${t.dims.join(', ')}] hold ${n} values, data has ${t.data.length}`);
  }
  const want = t.dataType === 'FLOAT' ? Float32Array : t.dataType === 'INT32' ? Int32Array : BigInt64Array;
  if (!(t.data instanceof want)) throw new Error(`ONNX tensor '${t.name}': data type ${t.dataType} needs a ${want.name}`);
}

function tensorProto(t: OnnxTensor): ProtoWriter {
  checkDims(t);
  const w = new ProtoWriter();
  for (const d of t.dims) w.varint(1, d);
  w.varint(2, OnnxDataType[t.dataType]);
  w.string(8, t.name);
  // raw_data is little-endian; every platform Node runs on is little-endian, but be explicit.
  const bytes = new Uint8Array(t.data.byteLength);
  const view = new DataView(bytes.buffer);
  if (t.data instanceof Float32Array) t.data.forEach((v, i) => view.setFloat32(4 * i, v, true));
  else if (t.data instanceof Int32Array) t.data.forEach((v, i) => view.setInt32(4 * i, v, true));
  else t.data.forEach((v, i) => view.setBigInt64(8 * i, v, true));
  w.bytes(9, bytes);
  return w;
}

function valueInfoProto(v: OnnxValueInfo): ProtoWriter {
  const shape = new ProtoWriter();
  for (const d of v.shape) {
    const dim = new ProtoWriter();
    if (typeof d === 'number') dim.varint(1, d);
    else dim.string(2, d);
    shape.message(1, dim);
  }
  const tensorType = new ProtoWriter().varint(1, OnnxDataType[v.dataType]).message(2, shape);
  const type = new ProtoWriter().message(1, tensorType);
  return new ProtoWriter().string(1, v.name).message(2, type);
}

function attributeProto(name: string, value: AttrValue): ProtoWriter {
  const w = new ProtoWriter().string(1, name);
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new Error(`ONNX attribute '${name}': ${value} is not an integer; wrap floats with float()`);
    w.varint(3, value).varint(20, AttrType.INT);
  } else if (Array.isArray(value)) {
    for (const v of value) w.varint(8, v);
    w.varint(20, AttrType.INTS);
  } else if (typeof value === 'string') {
    w.string(4, value).varint(20, AttrType.STRING);
  } else if ('float' in value) {
    w.float(2, value.float).varint(20, AttrType.FLOAT);
  } else if ('floats' in value) {
    for (const v of value.floats) w.float(7, v);
    w.varint(20, AttrType.FLOATS);
  } else {
    w.message(5, tensorProto(value.tensor)).varint(20, AttrType.TENSOR);
  }
  return w;
}

function nodeProto(n: OnnxNode): ProtoWriter {
  const w = new ProtoWriter();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, n.name);
  w.string(4, n.opType);
  for (const [k, v] of Object.entries(n.attributes)) w.message(5, attributeProto(k, v));
  return w;
}

export interface OnnxModelOptions {
  opsetVersion?: number;
  irVersion?: number;
  producerName?: string;
  producerVersion?: string;
  docString?: string;
  metadata?: Record<string, string>;
}

/**
 * Builds one ONNX graph. `op()` appends a node and returns its (single) output name, so a
 * graph reads like straight-line code: `const y = g.op('Add', [a, b])`.
 */
export class OnnxGraphBuilder {
  private readonly nodes: OnnxNode[] = [];
  private readonly initializers = new Map<string, OnnxTensor>();
  private readonly inputs: OnnxValueInfo[] = [];
  private readonly outputs: OnnxValueInfo[] = [];
  private counter = 0;

  constructor(readonly name: string) {}

  input(v: OnnxValueInfo): string {
    this.inputs.push(v);
    return v.name;
  }

  output(v: OnnxValueInfo): void {
    this.outputs.push(v);
  }

  initializer(t: OnnxTensor): string {
    if (this.initializers.has(t.name)) throw new Error(`ONNX initializer '${t.name}' is defined twice`);
    checkDims(t);
    this.initializers.set(t.name, t);
    return t.name;
  }

  /** A float32 initializer. */
  floats(name: string, dims: number[], data: Float32Array | number[]): string {
    return this.initializer({ name, dataType: 'FLOAT', dims, data: data instanceof Float32Array ? data : Float32Array.from(data) });
  }

  /** An int64 initializer (shapes, indices, slice bounds). */
  int64s(name: string, dims: number[], data: number[]): string {
    return this.initializer({ name, dataType: 'INT64', dims, data: BigInt64Array.from(data.map((v) => BigInt(v))) });
  }

  /** Appends a node; `out` names its output (default: a fresh name). Returns the first output. */
  op(opType: string, inputs: string[], attributes: Record<string, AttrValue> = {}, out?: string): string {
    const id = this.counter++;
    const output = out ?? `${opType.toLowerCase()}_${id}`;
    this.nodes.push({ opType, inputs, outputs: [output], name: `${opType}_${id}`, attributes });
    return output;
  }

  /** Serialises a ModelProto around this graph. */
  toModel(opts: OnnxModelOptions = {}): Uint8Array {
    for (const o of this.outputs) {
      if (!this.nodes.some((n) => n.outputs.includes(o.name))) throw new Error(`ONNX graph output '${o.name}' is produced by no node`);
    }
    const graph = new ProtoWriter();
    for (const n of this.nodes) graph.message(1, nodeProto(n));
    graph.string(2, this.name);
    for (const t of this.initializers.values()) graph.message(5, tensorProto(t));
    for (const i of this.inputs) graph.message(11, valueInfoProto(i));
    for (const o of this.outputs) graph.message(12, valueInfoProto(o));

    const model = new ProtoWriter();
    model.varint(1, opts.irVersion ?? 7);
    model.string(2, opts.producerName ?? 'txt2img');
    if (opts.producerVersion) model.string(3, opts.producerVersion);
    if (opts.docString) model.string(6, opts.docString);
    model.message(7, graph);
    model.message(8, new ProtoWriter().string(1, '').varint(2, opts.opsetVersion ?? 14));
    for (const [k, v] of Object.entries(opts.metadata ?? {})) model.message(14, new ProtoWriter().string(1, k).string(2, v));
    return model.finish();
  }
}
