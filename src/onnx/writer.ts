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
 *   TensorProto:       dims 1, data_type 2, name 8, raw_data 9, external_data 13, data_location 14
 *   ValueInfoProto:    name 1, type 2;  TypeProto: tensor_type 1;  TypeProto.Tensor: elem_type 1, shape 2
 *   TensorShapeProto:  dim 1;  Dimension: dim_value 1, dim_param 2
 *   StringStringEntryProto: key 1, value 2
 * onnx.proto is proto2, so repeated scalars are written unpacked (one tag per element).
 * Initializers are little-endian raw_data, as the spec requires for raw_data; FLOAT16 data is
 * the raw half-float bits (a Uint16Array). With `externalData` the large initializers go to a
 * side file instead (data_location EXTERNAL; location/offset/length entries), as ONNX does past
 * protobuf's 2 GB message limit (an SD-1.5-size U-Net holds 3.4 GB of float32 weights).
 *
 * `readProtoFields` is the matching minimal reader, and `convertOnnxInitializersToFloat16`
 * rewrites an existing model so that chosen float initializers are stored as float16 and cast
 * back to float in the graph (half the bytes; values rounded to the nearest half, ties to even).
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { halfBitsToFloat, toHalfBits } from '../checkpoint/safetensors.js';

/** TensorProto.DataType values. */
export const OnnxDataType = { FLOAT: 1, INT32: 6, INT64: 7, FLOAT16: 10 } as const;
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
export type AttrValue = number | number[] | string | { float: number } | { floats: number[] } | { tensor: OnnxTensor };

/** Marks a number as a FLOAT attribute (plain numbers are INT attributes). */
export function float(value: number): { float: number } {
  return { float: value };
}

export interface OnnxTensor {
  name: string;
  dataType: OnnxDataTypeName;
  dims: number[];
  /** FLOAT16: the IEEE half bits. */
  data: Float32Array | Int32Array | BigInt64Array | Uint16Array;
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
  /** Operator set domain; absent: the default ONNX domain. */
  domain?: string;
}

function checkDims(t: OnnxTensor): void {
  const n = t.dims.reduce((a, b) => a * b, 1);
  if (n !== t.data.length) {
    throw new Error(`ONNX tensor '${t.name}': dims [${t.dims.join(', ')}] hold ${n} values, data has ${t.data.length}`);
  }
  const want = { FLOAT: Float32Array, INT32: Int32Array, INT64: BigInt64Array, FLOAT16: Uint16Array }[t.dataType];
  if (!(t.data instanceof want)) throw new Error(`ONNX tensor '${t.name}': data type ${t.dataType} needs a ${want.name}`);
}

/** A typed array's bytes, little-endian (raw_data's order): a view where the platform is little-endian. */
function littleEndianBytes(data: OnnxTensor['data']): Uint8Array {
  if (os.endianness() === 'LE') return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const bytes = new Uint8Array(data.byteLength);
  const view = new DataView(bytes.buffer);
  if (data instanceof Float32Array)
    data.forEach((v, i) => {
      view.setFloat32(4 * i, v, true);
    });
  else if (data instanceof Int32Array)
    data.forEach((v, i) => {
      view.setInt32(4 * i, v, true);
    });
  else if (data instanceof Uint16Array)
    data.forEach((v, i) => {
      view.setUint16(2 * i, v, true);
    });
  else
    data.forEach((v, i) => {
      view.setBigInt64(8 * i, v, true);
    });
  return bytes;
}

/** Where tensorProto puts an initializer's data that is stored outside the model (see toModel). */
interface ExternalSink {
  fd: number;
  location: string;
  minBytes: number;
  offset: number;
}

/** Offsets of external tensors are page-aligned, so that onnxruntime can map them in place. */
const EXTERNAL_ALIGN = 4096;

function tensorProto(t: OnnxTensor, external?: ExternalSink): ProtoWriter {
  checkDims(t);
  const w = new ProtoWriter();
  for (const d of t.dims) w.varint(1, d);
  w.varint(2, OnnxDataType[t.dataType]);
  w.string(8, t.name);
  const bytes = littleEndianBytes(t.data);
  if (external && bytes.length >= external.minBytes) {
    const offset = Math.ceil(external.offset / EXTERNAL_ALIGN) * EXTERNAL_ALIGN;
    // Written in pieces: one write call moves at most 2 GiB.
    for (let done = 0; done < bytes.length; ) done += writeSync(external.fd, bytes, done, Math.min(bytes.length - done, 1 << 30), offset + done);
    external.offset = offset + bytes.length;
    const entry = (k: string, v: string) => new ProtoWriter().string(1, k).string(2, v);
    w.message(13, entry('location', external.location));
    w.message(13, entry('offset', String(offset)));
    w.message(13, entry('length', String(bytes.length)));
    w.varint(14, 1); // data_location: EXTERNAL
  } else {
    // raw_data is little-endian; a copy, so the message never aliases the caller's array.
    w.bytes(9, bytes.slice());
  }
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
    for (const v of value) {
      if (!Number.isInteger(v)) throw new Error(`ONNX attribute '${name}': ${JSON.stringify(value)} is not a list of integers`);
      w.varint(8, v);
    }
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
  if (n.domain) w.string(7, n.domain);
  return w;
}

export interface OnnxModelOptions {
  opsetVersion?: number;
  irVersion?: number;
  producerName?: string;
  producerVersion?: string;
  docString?: string;
  metadata?: Record<string, string>;
  /**
   * Store initializers of at least `minBytes` bytes (default 1 KiB) in the file `file` (created
   * or truncated) instead of in the model; the model names it by its base name, so it must stay
   * in the model file's folder. Needed past 2 GB of weights (protobuf's message limit).
   */
  externalData?: { file: string; minBytes?: number };
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
  /** Operator set domains other than the default one, by name: their version. */
  private readonly domains = new Map<string, number>();
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

  /** A float16 initializer from float values (rounded to the nearest half, ties to even). */
  halfs(name: string, dims: number[], data: Float32Array | number[]): string {
    return this.initializer({ name, dataType: 'FLOAT16', dims, data: toHalfBits(data, `ONNX float16 initializer '${name}'`) });
  }

  /** An int64 initializer (shapes, indices, slice bounds). */
  int64s(name: string, dims: number[], data: number[]): string {
    return this.initializer({ name, dataType: 'INT64', dims, data: BigInt64Array.from(data.map((v) => BigInt(v))) });
  }

  /** Appends a node; `out` names its output (default: a fresh name). Returns the first output. */
  op(opType: string, inputs: string[], attributes: Record<string, AttrValue> = {}, out?: string): string {
    return this.node(opType, inputs, attributes, 1, out)[0];
  }

  /**
   * As op, for an operator of another domain (e.g. onnxruntime's contrib 'com.microsoft.nchwc');
   * the model then imports that domain at `version`.
   */
  opIn(domain: string, version: number, opType: string, inputs: string[], attributes: Record<string, AttrValue> = {}): string {
    const known = this.domains.get(domain);
    if (known !== undefined && known !== version) throw new Error(`ONNX domain '${domain}' imported at versions ${known} and ${version}`);
    this.domains.set(domain, version);
    return this.node(opType, inputs, attributes, 1, undefined, domain)[0];
  }

  /** As op, for a node with `count` outputs (fresh names, returned in order). */
  opOutputs(opType: string, inputs: string[], attributes: Record<string, AttrValue>, count: number): string[] {
    return this.node(opType, inputs, attributes, count);
  }

  /** `count` outputs named `out` (one output) or freshly: `<op>_<id>`, with `_<k>` when several. */
  private node(opType: string, inputs: string[], attributes: Record<string, AttrValue>, count: number, out?: string, domain?: string): string[] {
    const id = this.counter++;
    const fresh = `${opType.toLowerCase()}_${id}`;
    const outputs = count === 1 ? [out ?? fresh] : Array.from({ length: count }, (_, k) => `${fresh}_${k}`);
    this.nodes.push({ opType, inputs, outputs, name: `${opType}_${id}`, attributes, ...(domain ? { domain } : {}) });
    return outputs;
  }

  /** Serialises a ModelProto around this graph. */
  toModel(opts: OnnxModelOptions = {}): Uint8Array {
    for (const o of this.outputs) {
      if (!this.nodes.some((n) => n.outputs.includes(o.name))) throw new Error(`ONNX graph output '${o.name}' is produced by no node`);
    }
    const graph = new ProtoWriter();
    for (const n of this.nodes) graph.message(1, nodeProto(n));
    graph.string(2, this.name);
    const ext = opts.externalData;
    const sink: ExternalSink | undefined = ext
      ? { fd: openSync(ext.file, 'w'), location: path.basename(ext.file), minBytes: ext.minBytes ?? 1024, offset: 0 }
      : undefined;
    try {
      for (const t of this.initializers.values()) graph.message(5, tensorProto(t, sink));
    } finally {
      if (sink) closeSync(sink.fd);
    }
    for (const i of this.inputs) graph.message(11, valueInfoProto(i));
    for (const o of this.outputs) graph.message(12, valueInfoProto(o));

    const model = new ProtoWriter();
    model.varint(1, opts.irVersion ?? 7);
    model.string(2, opts.producerName ?? 'txt2img');
    if (opts.producerVersion) model.string(3, opts.producerVersion);
    if (opts.docString) model.string(6, opts.docString);
    model.message(7, graph);
    model.message(8, new ProtoWriter().string(1, '').varint(2, opts.opsetVersion ?? 14));
    for (const [domain, version] of this.domains) model.message(8, new ProtoWriter().string(1, domain).varint(2, version));
    for (const [k, v] of Object.entries(opts.metadata ?? {})) model.message(14, new ProtoWriter().string(1, k).string(2, v));
    return model.finish();
  }
}

// ---------------------------------------------------------------------------------------------
// Reading and rewriting existing models.

/** One field of a protobuf message as read: its number, wire type, value and its exact bytes. */
export interface ProtoField {
  field: number;
  wire: number;
  /** Varint fields: the value (unsigned 64-bit). */
  varint?: bigint;
  /** Length-delimited fields: the payload. Fixed32/64 fields: their bytes. */
  bytes?: Uint8Array;
  /** The whole field as encoded (tag included), for writing it back unchanged. */
  raw: Uint8Array;
}

function readVarint(buf: Uint8Array, pos: number): [bigint, number] {
  let v = 0n;
  let shift = 0n;
  for (;;) {
    if (pos >= buf.length) throw new Error('protobuf: truncated varint');
    const b = buf[pos++];
    v |= BigInt(b & 0x7f) << shift;
    if ((b & 0x80) === 0) return [v, pos];
    shift += 7n;
    if (shift > 63n) throw new Error('protobuf: varint longer than 10 bytes');
  }
}

/** Splits a protobuf message into its fields, in order (groups are not supported). */
export function readProtoFields(buf: Uint8Array): ProtoField[] {
  const out: ProtoField[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const start = pos;
    const [tag, p1] = readVarint(buf, pos);
    pos = p1;
    const field = Number(tag >> 3n);
    const wire = Number(tag & 7n);
    const f: ProtoField = { field, wire, raw: buf.subarray(0, 0) };
    if (wire === WIRE_VARINT) {
      [f.varint, pos] = readVarint(buf, pos);
    } else if (wire === WIRE_LEN) {
      const [len, p2] = readVarint(buf, pos);
      const end = p2 + Number(len);
      if (end > buf.length) throw new Error(`protobuf: field ${field} length ${len} runs past the end of the message`);
      f.bytes = buf.subarray(p2, end);
      pos = end;
    } else if (wire === WIRE_FIXED32 || wire === 1) {
      const n = wire === WIRE_FIXED32 ? 4 : 8;
      if (pos + n > buf.length) throw new Error(`protobuf: field ${field} truncated`);
      f.bytes = buf.subarray(pos, pos + n);
      pos += n;
    } else {
      throw new Error(`protobuf: unsupported wire type ${wire} (field ${field}); not an ONNX model?`);
    }
    f.raw = buf.subarray(start, pos);
    out.push(f);
  }
  return out;
}

function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const utf8Decoder = new TextDecoder();

/** What `listOnnxInitializers` reports about one initializer. */
export interface OnnxInitializerInfo {
  name: string;
  /** TensorProto.DataType number (1 FLOAT, 10 FLOAT16, 7 INT64, ...). */
  dataType: number;
  dims: number[];
  /** Bytes of its data (raw_data, or the packed/unpacked typed fields). */
  dataBytes: number;
}

interface ParsedTensor extends OnnxInitializerInfo {
  fields: ProtoField[];
}

function parseTensor(bytes: Uint8Array): ParsedTensor {
  const fields = readProtoFields(bytes);
  const t: ParsedTensor = { name: '', dataType: 0, dims: [], dataBytes: 0, fields };
  for (const f of fields) {
    if (f.field === 1 && f.varint !== undefined) t.dims.push(Number(f.varint));
    else if (f.field === 1 && f.bytes) {
      // packed dims
      let p = 0;
      while (p < f.bytes.length) {
        const [v, np] = readVarint(f.bytes, p);
        t.dims.push(Number(v));
        p = np;
      }
    } else if (f.field === 2 && f.varint !== undefined) t.dataType = Number(f.varint);
    else if (f.field === 8 && f.bytes) t.name = utf8Decoder.decode(f.bytes);
    else if (f.bytes && [4, 5, 6, 7, 9, 10, 11].includes(f.field)) t.dataBytes += f.bytes.length;
  }
  return t;
}

function graphOf(model: Uint8Array): { top: ProtoField[]; graphIndex: number; graph: ProtoField[] } {
  const top = readProtoFields(model);
  const idx = top.map((f, i) => (f.field === 7 && f.bytes ? i : -1)).filter((i) => i >= 0);
  if (idx.length !== 1) throw new Error(`ONNX model: expected one graph, found ${idx.length}; not an ONNX model?`);
  return { top, graphIndex: idx[0], graph: readProtoFields(top[idx[0]].bytes!) };
}

/** The initializers of an ONNX model (name, type, dims, data size). */
export function listOnnxInitializers(model: Uint8Array): OnnxInitializerInfo[] {
  return graphOf(model)
    .graph.filter((f) => f.field === 5 && f.bytes)
    .map((f) => {
      const { fields: _f, ...info } = parseTensor(f.bytes!);
      return info;
    });
}

/** The float values of a FLOAT initializer (raw_data or float_data). */
export function readOnnxFloatInitializer(model: Uint8Array, name: string): { dims: number[]; data: Float32Array } {
  const f = graphOf(model).graph.find((g) => g.field === 5 && g.bytes && parseTensor(g.bytes).name === name);
  if (!f) throw new Error(`ONNX model has no initializer '${name}'`);
  const t = parseTensor(f.bytes!);
  return { dims: t.dims, data: tensorFloats(t) };
}

function tensorFloats(t: ParsedTensor): Float32Array {
  if (t.dataType !== OnnxDataType.FLOAT) throw new Error(`ONNX initializer '${t.name}' has data type ${t.dataType}, not FLOAT (1)`);
  if (t.fields.some((f) => f.field === 14 && f.varint === 1n) || t.fields.some((f) => f.field === 13)) {
    throw new Error(`ONNX initializer '${t.name}' keeps its data in an external file; not supported`);
  }
  const n = t.dims.reduce((a, b) => a * b, 1);
  const raw = t.fields.find((f) => f.field === 9 && f.bytes);
  let data: Float32Array;
  if (raw) {
    if (raw.bytes!.length !== 4 * n) throw new Error(`ONNX initializer '${t.name}': ${raw.bytes!.length} raw bytes for ${n} floats`);
    data = new Float32Array(n);
    const view = new DataView(raw.bytes!.buffer, raw.bytes!.byteOffset, raw.bytes!.byteLength);
    for (let i = 0; i < n; i++) data[i] = view.getFloat32(4 * i, true);
  } else {
    // float_data (field 4): packed (one length-delimited field) or one fixed32 per value.
    const vals: number[] = [];
    for (const f of t.fields) {
      if (f.field !== 4 || !f.bytes) continue;
      const view = new DataView(f.bytes.buffer, f.bytes.byteOffset, f.bytes.byteLength);
      for (let i = 0; i + 4 <= f.bytes.length; i += 4) vals.push(view.getFloat32(i, true));
    }
    if (vals.length !== n) throw new Error(`ONNX initializer '${t.name}': ${vals.length} floats for dims [${t.dims.join(', ')}]`);
    data = Float32Array.from(vals);
  }
  return data;
}

/** Suffix of the float16 copy of an initializer that convertOnnxInitializersToFloat16 stores. */
export const FLOAT16_SUFFIX = '.float16';

/**
 * Rewrites a model so that each named FLOAT initializer is stored as FLOAT16 (values rounded to
 * the nearest half, ties to even; a finite value beyond the half range is an error) under the
 * name `<name>.float16`, followed by a `Cast(to=FLOAT)` node, put first in the graph, whose output
 * has the original name: every consumer sees float32 values as before (the Cast's input is a
 * constant, so graph optimizers may fold it at load). Everything else is kept byte for byte; a
 * metadata entry `txt2img_float16_initializers` lists the converted names.
 */
export function convertOnnxInitializersToFloat16(model: Uint8Array, names: string[]): Uint8Array {
  if (names.length === 0) throw new Error('convertOnnxInitializersToFloat16: no initializer names given');
  const { top, graphIndex, graph } = graphOf(model);
  const wanted = new Set(names);
  const existing = new Set<string>();
  for (const f of graph) if (f.field === 5 && f.bytes) existing.add(parseTensor(f.bytes).name);
  const inputs = new Set(
    graph
      .filter((f) => f.field === 11 && f.bytes)
      .map((f) => utf8Decoder.decode(readProtoFields(f.bytes!).find((g) => g.field === 1)?.bytes ?? new Uint8Array())),
  );
  const missing = names.filter((n) => !existing.has(n));
  if (missing.length > 0) throw new Error(`ONNX model has no initializer ${missing.map((n) => `'${n}'`).join(', ')}`);
  for (const n of names) {
    if (existing.has(n + FLOAT16_SUFFIX)) throw new Error(`ONNX initializer '${n + FLOAT16_SUFFIX}' already exists (converted before?)`);
    if (inputs.has(n)) throw new Error(`ONNX initializer '${n}' is also a graph input (an overridable default); not converted`);
  }
  // First the converted initializers and their Cast nodes, then the graph with the Casts put
  // before the first node (nodes must be in topological order) and the initializers swapped.
  const converted = new Map<ProtoField, Uint8Array>();
  const casts: Uint8Array[] = [];
  for (const f of graph) {
    if (f.field !== 5 || !f.bytes) continue;
    const t = parseTensor(f.bytes);
    if (!wanted.has(t.name)) continue;
    const halves = toHalfBits(tensorFloats(t), `ONNX initializer '${t.name}'`);
    const tensor = tensorProto({ name: t.name + FLOAT16_SUFFIX, dataType: 'FLOAT16', dims: t.dims, data: halves });
    converted.set(f, new ProtoWriter().message(5, tensor).finish());
    const cast = nodeProto({
      opType: 'Cast',
      inputs: [t.name + FLOAT16_SUFFIX],
      outputs: [t.name],
      name: `Cast_${t.name}_to_float`,
      attributes: { to: OnnxDataType.FLOAT },
    });
    casts.push(new ProtoWriter().message(1, cast).finish());
  }
  const newGraph: Uint8Array[] = [];
  let castsPlaced = false;
  for (const f of graph) {
    if (f.field === 1 && !castsPlaced) {
      newGraph.push(...casts);
      castsPlaced = true;
    }
    newGraph.push(converted.get(f) ?? f.raw);
  }
  if (!castsPlaced) newGraph.unshift(...casts);
  const graphBytes = concatBytes(newGraph);
  const out: Uint8Array[] = top.map((f, i) => (i === graphIndex ? new ProtoWriter().bytes(7, graphBytes).finish() : f.raw));
  out.push(new ProtoWriter().message(14, new ProtoWriter().string(1, 'txt2img_float16_initializers').string(2, names.join(','))).finish());
  return concatBytes(out);
}

/**
 * The values of an initializer as float32: a FLOAT one, or one that convertOnnxInitializersToFloat16
 * stored as `<name>.float16` (FLOAT16 raw_data, widened exactly).
 */
export function readOnnxInitializerAsFloat32(model: Uint8Array, name: string): { dims: number[]; data: Float32Array } {
  const graph = graphOf(model).graph;
  const find = (n: string) => graph.find((g) => g.field === 5 && g.bytes && parseTensor(g.bytes).name === n);
  const f = find(name);
  if (f) return readOnnxFloatInitializer(model, name);
  const h = find(name + FLOAT16_SUFFIX);
  if (!h) throw new Error(`ONNX model has no initializer '${name}' (nor '${name + FLOAT16_SUFFIX}')`);
  const t = parseTensor(h.bytes!);
  const raw = t.fields.find((x) => x.field === 9 && x.bytes);
  const n = t.dims.reduce((a, b) => a * b, 1);
  if (t.dataType !== OnnxDataType.FLOAT16 || !raw || raw.bytes!.length !== 2 * n) {
    throw new Error(`ONNX initializer '${t.name}' is not FLOAT16 raw data of ${n} values`);
  }
  const view = new DataView(raw.bytes!.buffer, raw.bytes!.byteOffset, raw.bytes!.byteLength);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = halfBitsToFloat(view.getUint16(2 * i, true));
  return { dims: t.dims, data };
}
