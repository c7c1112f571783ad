/**
 * Our kernel pack for @tensorflow/tfjs-backend-wasm 4.22.0: training-critical kernels that the
 * wasm backend lacks or runs as scalar loops, rebuilt from its own XNNPACK kernels (Conv2D,
 * BatchMatMul's 2-D path, AvgPool) and its cheap data movers (Transpose, PadV2, Reverse).
 *
 *  - Conv2DBackpropFilter (not registered at all for wasm, so no conv net could train):
 *      dW[i,j,ci,co] = sum_{b,oh,ow} x[b, oh*s+i-pt, ow*s+j-pl, ci] * dy[b,oh,ow,co]
 *    is a conv2d with the channels as the batch: x^T [Ci,H,W,B] (padded as the forward was)
 *    convolved with dy^T [OH,OW,B,Co] as the filter, dilation = stride, giving [Ci,fh,fw,Co].
 *    That reads only B floats per filter tap, so for small batches (B <= 2) or many input
 *    channels it is im2col (JS copies of contiguous runs, in chunks) + GEMMs instead; with few
 *    input channels (fh*fw*Ci <= 100, an image's first layer) im2col by XNNPACK (a conv with
 *    one-hot filters) + GEMM; a 1x1 stride-1 filter's gradient is the GEMM x^T dy.
 *  - Conv2DBackpropInput (tfjs': a scalar loop): one stride-1 conv2d of dy with a filter that
 *    holds, for every output phase (rh, rw) of the stride, the taps that reach it, flipped and
 *    with the channels swapped ([T, Tw, Co, sh*sw*Ci], T = ceil(fh/sh)); the phases are then
 *    interleaved by one transpose (depth-to-space) and cropped. Unlike zero-stuffing dy, no
 *    multiplication by inserted zeros is done (4x fewer FLOPs at stride 2).
 *  - BatchMatMul / _FusedMatMul (tfjs' XNNPACK path is only for batch 1 without transposes; all
 *    else is a scalar loop): explicit (cache-blocked) transposes, the product computed
 *    transposed where that is cheaper, the batch folded into M when b is shared, else one
 *    XNNPACK GEMM per batch on zero-copy views into the heap. Also fixes tfjs' fused kernel
 *    reading N bias values from a broadcast bias such as [1], and broadcasting batch dims
 *    of both operands ([2,1,..] x [1,3,..]), which tfjs' kernels get wrong.
 *  - Slice / SplitV (tfjs' copy the whole input out of the heap for every slice): copy only the
 *    slice, in runs as long as the layout allows.
 *  - MaxPoolGrad (tfjs-wasm's drops the gradient of every window whose values are all negative
 *    and gives ties to the last maximum): each dy to its window's first maximum, as tfjs' cpu
 *    backend, TensorFlow and onnxruntime do.
 *  - Sum / Mean over axes that are not innermost (tfjs transposes them to the end first, with
 *    a naive transpose, generic and very slow above rank 4): innermost axes by tfjs' own
 *    kernel, every other reduced block by XNNPACK average pooling over a [N, R, 1, C] view.
 *
 * Every kernel calls other kernels' functions directly (not through the engine, so nothing is
 * recorded on a tape and no engine tensors are made), disposes each intermediate it made, and
 * falls back to tfjs' own kernel for what it does not handle (other data formats, dtypes,
 * degenerate paddings). Registered for 'wasm' only.
 */
import * as tf from '@tensorflow/tfjs';
import { getThreadsCount } from '@tensorflow/tfjs-backend-wasm';

type TensorInfo = tf.TensorInfo;
type DataId = tf.DataId;
type KernelConfig = tf.KernelConfig;
type Attrs = Record<string, unknown>;

const BACKEND = 'wasm';

// --- the slice of BackendWasm we use ------------------------------------------------------

interface TensorData {
  id: number;
  memoryOffset: number;
  shape: number[];
  dtype: tf.DataType;
  refCount: number;
}

type CFunc = (...args: unknown[]) => unknown;

interface WasmBackend {
  wasm: {
    cwrap(name: string, returnType: string | null, argTypes: string[]): CFunc;
    tfjs: { disposeData(id: number): void };
  };
  dataIdMap: { get(dataId: DataId): TensorData; delete(dataId: DataId): boolean };
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number): TensorInfo;
  typedArrayFromHeap(info: TensorInfo): Float32Array | Int32Array | Uint8Array;
  disposeData(dataId: DataId, force?: boolean): boolean;
  incRef(dataId: DataId): void;
}

type KernelArgs = { inputs: Record<string, TensorInfo | undefined>; attrs: Attrs; backend: unknown };
type OurKernelFunc = (args: KernelArgs) => TensorInfo | TensorInfo[];

// --- registration ---------------------------------------------------------------------------

/** Marks our configs; holds the config it replaced (null where tfjs had none). */
const REPLACED = Symbol.for('txt2img.wasmKernels.replaced');
type OurConfig = KernelConfig & { [REPLACED]?: KernelConfig | null };

const originals = new Map<string, KernelConfig | null>();

/** tfjs' own kernel function for `name` (the one we replaced, or the registered one). */
function tfjsKernel(name: string): (args: KernelArgs) => TensorInfo | TensorInfo[] {
  let config = originals.get(name);
  if (config === undefined) {
    const registered = tf.getKernel(name, BACKEND) as OurConfig | undefined;
    config = registered ? (registered[REPLACED] !== undefined ? registered[REPLACED] : registered) : null;
  }
  if (!config) throw new Error(`wasm kernel '${name}' is not registered (is @tensorflow/tfjs-backend-wasm loaded?)`);
  return config.kernelFunc as unknown as (args: KernelArgs) => TensorInfo | TensorInfo[];
}

const PACK: Array<[string, OurKernelFunc]> = [];

/**
 * Registers the pack for the 'wasm' backend (idempotent). Call after importing the wasm
 * package; before or after `tf.setBackend('wasm')` both work.
 */
export function registerWasmKernels(): void {
  for (const [name, kernelFunc] of PACK) {
    const current = tf.getKernel(name, BACKEND) as OurConfig | undefined;
    if (current && current[REPLACED] !== undefined) {
      if (!originals.has(name)) originals.set(name, current[REPLACED] ?? null);
      continue; // already ours (maybe from another instance of this module)
    }
    originals.set(name, current ?? null);
    if (current) tf.unregisterKernel(name, BACKEND);
    const config: OurConfig = {
      kernelName: name,
      backendName: BACKEND,
      kernelFunc: kernelFunc as unknown as tf.KernelFunc,
      // tfjs' kernel sets up its C function pointer at backend initialisation; we still call it
      // for fallbacks, so keep that set-up running.
      ...(current?.setupFunc ? { setupFunc: current.setupFunc } : {}),
      ...(current?.disposeFunc ? { disposeFunc: current.disposeFunc } : {}),
      [REPLACED]: current ?? null,
    };
    tf.registerKernel(config);
  }
}

/** Names of the kernels in the pack. */
export const WASM_KERNEL_NAMES: readonly string[] = [];

function addKernel(name: string, fn: OurKernelFunc): void {
  PACK.push([name, fn]);
  (WASM_KERNEL_NAMES as string[]).push(name);
}

// --- a scope for intermediates ----------------------------------------------------------------

const sizeOf = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

class Scope {
  private readonly temps: TensorInfo[] = [];
  private readonly views: TensorInfo[] = [];
  constructor(readonly backend: WasmBackend) {}

  /** Runs tfjs' kernel `name`; its output is disposed with the scope unless returned by `out`. */
  call(name: string, inputs: Record<string, TensorInfo | undefined>, attrs: Attrs = {}): TensorInfo {
    const r = tfjsKernel(name)({ inputs, attrs, backend: this.backend });
    if (Array.isArray(r)) {
      this.temps.push(...r);
      throw new Error(`wasm kernel '${name}' returned ${r.length} outputs where one was expected`);
    }
    this.temps.push(r);
    return r;
  }

  /** A metadata-only reshape: shares `x`'s buffer, valid while `x` lives, never disposed itself. */
  reshape(x: TensorInfo, shape: number[]): TensorInfo {
    if (sizeOf(shape) !== sizeOf(x.shape)) throw new Error(`internal: reshape [${x.shape}] -> [${shape}]`);
    return { dataId: x.dataId, shape, dtype: x.dtype };
  }

  /** `x` under another shape, counted: disposed with the scope unless returned by `out`. */
  alias(x: TensorInfo, shape: number[]): TensorInfo {
    this.backend.incRef(x.dataId);
    const a = { dataId: x.dataId, shape, dtype: x.dtype };
    this.temps.push(a);
    return a;
  }

  /** A fresh uninitialised float32 tensor owned by the scope. */
  alloc(shape: number[], dtype: tf.DataType = 'float32'): TensorInfo {
    const t = this.backend.makeOutput(shape, dtype);
    this.temps.push(t);
    return t;
  }

  /**
   * A tensor registered over part of another's memory (no copy), float32 elements from
   * `elemOffset`. Removed without freeing when the scope ends; the base must outlive the scope.
   */
  view(base: TensorInfo, elemOffset: number, shape: number[]): TensorInfo {
    const d = this.backend.dataIdMap.get(base.dataId);
    const v = this.backend.makeOutput(shape, 'float32', d.memoryOffset + 4 * elemOffset);
    this.views.push(v);
    return v;
  }

  /** Ends a view early (drops XNNPACK operators cached on it). */
  dropView(v: TensorInfo): void {
    const i = this.views.indexOf(v);
    if (i >= 0) this.views.splice(i, 1);
    this.unregisterView(v);
  }

  private unregisterView(v: TensorInfo): void {
    const d = this.backend.dataIdMap.get(v.dataId);
    this.backend.wasm.tfjs.disposeData(d.id);
    this.backend.dataIdMap.delete(v.dataId);
  }

  /** The kernel's result: `x` (a temp of this scope, an input, or a reshape of either) with `shape`. */
  out(x: TensorInfo, shape: number[] = x.shape): TensorInfo {
    const i = this.temps.findIndex((t) => t.dataId === x.dataId);
    if (i >= 0) this.temps.splice(i, 1);
    else this.backend.incRef(x.dataId);
    return { dataId: x.dataId, shape: [...shape], dtype: x.dtype };
  }

  dispose(): void {
    for (const v of this.views.splice(0)) this.unregisterView(v);
    for (const t of this.temps.splice(0)) this.backend.disposeData(t.dataId);
  }
}

function withScope(backend: unknown, f: (s: Scope) => TensorInfo): TensorInfo {
  const s = new Scope(backend as WasmBackend);
  try {
    return f(s);
  } finally {
    s.dispose();
  }
}

// --- transposes -------------------------------------------------------------------------------

/** Drops size-1 dims and merges dims that stay adjacent and in order under `perm`. */
function simplifyPerm(shape: readonly number[], perm: readonly number[]): { shape: number[]; perm: number[] } {
  const keep = shape.map((d) => d !== 1);
  const oldToNew: number[] = [];
  const sh: number[] = [];
  shape.forEach((d, i) => {
    oldToNew[i] = keep[i] ? sh.length : -1;
    if (keep[i]) sh.push(d);
  });
  const p = perm.filter((a) => keep[a]).map((a) => oldToNew[a]);
  // merge runs a, a+1 in p
  const groups: number[][] = [];
  for (const a of p) {
    const g = groups[groups.length - 1];
    if (g && g[g.length - 1] + 1 === a) g.push(a);
    else groups.push([a]);
  }
  const order = [...groups].sort((x, y) => x[0] - y[0]);
  const mergedShape = order.map((g) => g.reduce((acc, a) => acc * sh[a], 1));
  const mergedPerm = groups.map((g) => order.indexOf(g));
  return { shape: mergedShape, perm: mergedPerm };
}

/**
 * Transpose via tfjs' kernel, cache-blocked where its naive loop is slow: a swap of the last
 * two dims [P, R, C] -> [P, C, R] with many rows R writes with stride R; done instead as
 * [P, R/b, b, C] -> [P, R/b, C, b] -> [P, C, R/b, b] (two passes with short strides).
 * Returns a temp of `s` (or a counted alias of `x` for a no-op permutation).
 */
function transpose(s: Scope, x: TensorInfo, perm: number[]): TensorInfo {
  const outShape = perm.map((a) => x.shape[a]);
  const simple = simplifyPerm(x.shape, perm);
  const r = simple.perm.length;
  if (simple.perm.every((a, i) => a === i)) return s.alias(x, outShape);
  const lastTwoSwap = r >= 2 && simple.perm[r - 1] === r - 2 && simple.perm[r - 2] === r - 1 && simple.perm.slice(0, r - 2).every((a, i) => a === i);
  if (lastTwoSwap && x.dtype === 'float32') {
    const R = simple.shape[r - 2];
    const C = simple.shape[r - 1];
    const P = sizeOf(simple.shape.slice(0, r - 2));
    const b = R >= 256 && C >= 16 ? [32, 64, 16, 8].find((d) => R % d === 0 && R / d > 1) : undefined;
    if (b !== undefined) {
      const t1 = s.call('Transpose', { x: s.reshape(x, [P, R / b, b, C]) }, { perm: [0, 1, 3, 2] });
      const t2 = s.call('Transpose', { x: s.reshape(t1, [P, R / b, C, b]) }, { perm: [0, 2, 1, 3] });
      return s.reshape(t2, outShape);
    }
  }
  const t = s.call('Transpose', { x: s.reshape(x, simple.shape) }, { perm: simple.perm });
  return s.reshape(t, outShape);
}

/** Copies the window [top, top+h) x [left, left+w) of dims 1 and 2 of a rank-4 tensor. */
function cropHW(s: Scope, x: TensorInfo, top: number, h: number, left: number, w: number): TensorInfo {
  const [B, H, W, C] = x.shape;
  if (top === 0 && left === 0 && h === H && w === W) return x;
  const out = s.alloc([B, h, w, C], x.dtype);
  const src = s.backend.typedArrayFromHeap(x);
  const dst = s.backend.typedArrayFromHeap(out);
  const run = w * C;
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < h; i++) {
      const from = ((b * H + top + i) * W + left) * C;
      dst.set(src.subarray(from, from + run), (b * h + i) * run);
    }
  }
  return out;
}

// --- convolution gradients --------------------------------------------------------------------

type Pad = 'same' | 'valid' | number | number[][] | number[];

/** tfjs accepts explicit padding as [[0,0],[t,b],[l,r],[0,0]]; normalise the flat forms too. */
function normPad(pad: unknown): 'same' | 'valid' | number | [[number, number], [number, number], [number, number], [number, number]] {
  if (pad === 'same' || pad === 'valid' || typeof pad === 'number') return pad;
  if (Array.isArray(pad)) {
    if (pad.length === 4 && pad.every((p) => Array.isArray(p) && p.length === 2)) {
      return pad as [[number, number], [number, number], [number, number], [number, number]];
    }
    if (pad.length === 4 && pad.every((p) => typeof p === 'number')) {
      const [t, b, l, r] = pad as number[];
      return [
        [0, 0],
        [t, b],
        [l, r],
        [0, 0],
      ];
    }
  }
  throw new Error(
    `conv2d gradient on wasm: unsupported pad ${JSON.stringify(pad)}; allowed: 'same', 'valid', a number, or [[0,0],[top,bottom],[left,right],[0,0]]`,
  );
}

/** tfjs' conv gradients have no dilations (core refuses them); refuse any that come anyway. */
function assertNoDilation(kernel: string, dilations: unknown): void {
  if (dilations === undefined || dilations === null) return;
  const [dh, dw] = pair(dilations, 'dilations');
  if (dh !== 1 || dw !== 1) throw new Error(`${kernel} on wasm: dilations must be 1, got ${JSON.stringify(dilations)}`);
}

function isNHWC(dataFormat: unknown): boolean {
  return dataFormat === undefined || dataFormat === null || dataFormat === 'NHWC' || dataFormat === 'channelsLast';
}

function pair(v: unknown, what: string): [number, number] {
  if (typeof v === 'number') return [v, v];
  if (Array.isArray(v) && v.length === 2 && v.every((n) => typeof n === 'number')) return [v[0], v[1]];
  throw new Error(`conv2d gradient on wasm: ${what} must be a number or [h, w], got ${JSON.stringify(v)}`);
}

/** Filter gradients with at most this many taps x input channels go through im2col + GEMM. */
const IM2COL_MAX_PATCH = 100;
/**
 * The channels-as-batch trick reads only B floats per filter tap, so it is slow for small
 * batches and hardly gains from threads, where im2col + GEMM does: im2col wins for B <= 2 and
 * for most Ci >= 32; the trick stays for batches of 3+ with few channels (and 3x3+ filters: see
 * IM2COL_MAX_PATCH for the fewest).
 */
const useIm2col = (B: number, Ci: number): boolean => B <= 2 || Ci >= 32;
/** im2col is built in chunks of at most this many floats (32 MB). */
const IM2COL_CHUNK_FLOATS = 8 * 1024 * 1024;

/**
 * The transposed im2col matrix of images [b0, b1): [P, (b1-b0)*OH*OW], row p = (i, j, ci) like the
 * filter, column n = output pixel (b, oh, ow); zero where a tap falls in the padding. Read from
 * xT = x as [Ci, B, H, W], so every output row is built from runs of one input row: the filter
 * gradient is then one plain GEMM colsT @ dy, with no transpose of the (large) im2col matrix.
 */
function im2colT(s: Scope, xT: TensorInfo, info: tf.backend_util.Conv2DInfo, b0: number, b1: number): TensorInfo {
  const {
    batchSize: B,
    inHeight: H,
    inWidth: W,
    inChannels: Ci,
    outHeight: OH,
    outWidth: OW,
    filterHeight: fh,
    filterWidth: fw,
    strideHeight: sh,
    strideWidth: sw,
  } = info;
  const pt = info.padInfo.top;
  const pl = info.padInfo.left;
  const Nc = (b1 - b0) * OH * OW;
  const out = s.alloc([fh * fw * Ci, Nc]);
  const src = s.backend.typedArrayFromHeap(xT);
  const dst = s.backend.typedArrayFromHeap(out);
  dst.fill(0);
  for (let i = 0; i < fh; i++) {
    for (let j = 0; j < fw; j++) {
      // output columns whose tap (i, j) reads inside the row: 0 <= ow*sw + j - pl < W
      const ow0 = Math.max(0, Math.ceil((pl - j) / sw));
      const ow1 = Math.min(OW, Math.floor((W - 1 - j + pl) / sw) + 1);
      if (ow1 <= ow0) continue;
      for (let ci = 0; ci < Ci; ci++) {
        const rowBase = ((i * fw + j) * Ci + ci) * Nc;
        for (let b = b0; b < b1; b++) {
          const plane = (ci * B + b) * H * W;
          for (let oh = 0; oh < OH; oh++) {
            const h = oh * sh + i - pt;
            if (h < 0 || h >= H) continue;
            const from = plane + h * W + j - pl; // + ow*sw
            const to = rowBase + ((b - b0) * OH + oh) * OW;
            if (sw === 1) for (let ow = ow0; ow < ow1; ow++) dst[to + ow] = src[from + ow];
            else for (let ow = ow0; ow < ow1; ow++) dst[to + ow] = src[from + ow * sw];
          }
        }
      }
    }
  }
  return out;
}

function conv2dBackpropFilter(args: KernelArgs): TensorInfo {
  const { inputs, attrs, backend } = args;
  const x = inputs.x!;
  const dy = inputs.dy!;
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as {
    strides: number | [number, number];
    pad: Pad;
    dataFormat?: string;
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
    filterShape: [number, number, number, number];
  };
  if (!isNHWC(dataFormat)) {
    throw new Error(`Conv2DBackpropFilter on wasm supports dataFormat 'NHWC' only, got '${String(dataFormat)}'`);
  }
  assertNoDilation('Conv2DBackpropFilter', attrs.dilations);
  if (x.dtype !== 'float32' || dy.dtype !== 'float32') {
    throw new Error(`Conv2DBackpropFilter on wasm supports float32 only, got ${x.dtype} and ${dy.dtype}`);
  }
  const [sh, sw] = pair(strides, 'strides');
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    filterShape,
    [sh, sw],
    1,
    normPad(pad),
    dimRoundingMode,
    false,
    'channelsLast',
  );
  const [B, H, W, Ci] = x.shape;
  const [, OH, OW, Co] = dy.shape;
  const { filterHeight: fh, filterWidth: fw } = info;
  if (OH !== info.outHeight || OW !== info.outWidth || Co !== info.outChannels || dy.shape[0] !== B) {
    throw new Error(`Conv2DBackpropFilter: dy shape [${dy.shape}] does not match x [${x.shape}] and filter [${filterShape}]`);
  }
  const pt = info.padInfo.top;
  const pl = info.padInfo.left;
  // Bottom/right padding that makes the output exactly fh x fw; negative means the forward
  // never read the last rows: pad 0 instead and crop the (filter-sized) output.
  const pb = fh + (OH - 1) * sh - H - pt;
  const pr = fw + (OW - 1) * sw - W - pl;
  return withScope(backend, (s) => {
    if (B * OH * OW === 0 || Ci * Co * fh * fw === 0) {
      const z = s.alloc([fh, fw, Ci, Co]);
      s.backend.typedArrayFromHeap(z).fill(0);
      return s.out(z);
    }
    const P = fh * fw * Ci;
    if (fh === 1 && fw === 1 && sh === 1 && sw === 1 && OH === H && OW === W) {
      // a 1x1 conv is a GEMM: dW = x^T dy
      const dw = gemm2d(s, s.reshape(x, [B * H * W, Ci]), s.reshape(dy, [B * H * W, Co]), true, false);
      return s.out(dw, [fh, fw, Ci, Co]);
    }
    if (P <= IM2COL_MAX_PATCH) {
      // Few input channels (an image's first layer): the trick below would read only B floats
      // per filter tap. Instead: im2col by XNNPACK (a conv with one-hot filters), then one GEMM.
      const eye = s.alloc([fh, fw, Ci, P]);
      const e = s.backend.typedArrayFromHeap(eye);
      e.fill(0);
      for (let p = 0; p < P; p++) e[p * P + p] = 1;
      const cols = s.call(
        'Conv2D',
        { x, filter: eye },
        {
          strides: [sh, sw],
          pad: [
            [0, 0],
            [pt, info.padInfo.bottom],
            [pl, info.padInfo.right],
            [0, 0],
          ],
          dataFormat: 'NHWC',
          dilations: [1, 1],
          dimRoundingMode: undefined,
        },
      ); // [B, OH, OW, P]
      const N = B * OH * OW;
      const dw = gemm2d(s, s.reshape(cols, [N, P]), s.reshape(dy, [N, Co]), true, false); // cols^T dy
      return s.out(dw, [fh, fw, Ci, Co]);
    }
    if (useIm2col(B, Ci)) {
      // im2col^T (runs of channel-major x) and plain GEMMs, in chunks of images to bound memory.
      const xT = transpose(s, x, [3, 0, 1, 2]); // [Ci, B, H, W]
      const perImage = P * OH * OW;
      const images = Math.max(1, Math.min(B, Math.floor(IM2COL_CHUNK_FLOATS / perImage)));
      let acc: TensorInfo | null = null;
      for (let b0 = 0; b0 < B; b0 += images) {
        const b1 = Math.min(B, b0 + images);
        const colsT = im2colT(s, xT, info, b0, b1); // [P, (b1-b0)*OH*OW]
        const dyRows = s.view(dy, b0 * OH * OW * Co, [(b1 - b0) * OH * OW, Co]);
        const part = gemm2d(s, colsT, dyRows, false, false); // [P, Co]
        acc = acc === null ? part : s.call('Add', { a: acc, b: part });
      }
      return s.out(acc!, [fh, fw, Ci, Co]);
    }
    // x [B,H,W,Ci] -> [Ci,H,W,B]: as [B, HW, Ci] -> [B, Ci, HW] -> [Ci*HW, B] (two cheap passes)
    const x1 = transpose(s, s.reshape(x, [B, H * W, Ci]), [0, 2, 1]);
    const xT = s.reshape(B === 1 ? x1 : transpose(s, s.reshape(x1, [B, Ci * H * W]), [1, 0]), [Ci, H, W, B]);
    // dy [B,OH,OW,Co] -> [OH,OW,B,Co]
    const dyT = s.reshape(transpose(s, s.reshape(dy, [B, OH * OW, Co]), [1, 0, 2]), [OH, OW, B, Co]);
    const g = s.call(
      'Conv2D',
      { x: xT, filter: dyT },
      {
        strides: [1, 1],
        pad: [
          [0, 0],
          [pt, Math.max(0, pb)],
          [pl, Math.max(0, pr)],
          [0, 0],
        ],
        dataFormat: 'NHWC',
        dilations: [sh, sw],
        dimRoundingMode: undefined,
      },
    ); // [Ci, fh', fw', Co]
    const gc = cropHW(s, g, 0, fh, 0, fw); // [Ci, fh, fw, Co]
    const dw = transpose(s, gc, [1, 2, 0, 3]); // [fh, fw, Ci, Co]
    return s.out(dw, [fh, fw, Ci, Co]);
  });
}
addKernel('Conv2DBackpropFilter', conv2dBackpropFilter);

/**
 * The phase filter of the transposed convolution: Wc[u, uw, co, (rh*sw + rw)*Ci + ci] =
 * W[(T-1-u)*sh + rh, (Tw-1-uw)*sw + rw, ci, co] (zero past the filter's edge). One pass over the
 * filter in JS, where tfjs-wasm's Reverse and Transpose would take longer than the convolution.
 */
function phaseFilter(s: Scope, filter: TensorInfo, sh: number, sw: number): TensorInfo {
  const [fh, fw, Ci, Co] = filter.shape;
  const T = Math.ceil(fh / sh);
  const Tw = Math.ceil(fw / sw);
  const row = sh * sw * Ci; // the last dim of Wc
  const out = s.alloc([T, Tw, Co, row]);
  const src = s.backend.typedArrayFromHeap(filter);
  const dst = s.backend.typedArrayFromHeap(out);
  dst.fill(0);
  for (let u = 0; u < T; u++) {
    for (let uw = 0; uw < Tw; uw++) {
      const base = (u * Tw + uw) * Co * row;
      for (let rh = 0; rh < sh; rh++) {
        const fr = (T - 1 - u) * sh + rh;
        if (fr >= fh) continue;
        for (let rw = 0; rw < sw; rw++) {
          const fc = (Tw - 1 - uw) * sw + rw;
          if (fc >= fw) continue;
          // the [Ci, Co] block of tap (fr, fc), transposed into Co rows of stride `row`
          const from = (fr * fw + fc) * Ci * Co;
          const to = base + (rh * sw + rw) * Ci;
          for (let ci = 0; ci < Ci; ci++) {
            const f = from + ci * Co;
            let d = to + ci;
            for (let co = 0; co < Co; co++, d += row) dst[d] = src[f + co];
          }
        }
      }
    }
  }
  return out;
}

function conv2dBackpropInput(args: KernelArgs): TensorInfo {
  const { inputs, attrs, backend } = args;
  const dy = inputs.dy!;
  const filter = inputs.filter!;
  const { strides, pad, dataFormat, dimRoundingMode, inputShape } = attrs as {
    strides: number | [number, number];
    pad: Pad;
    dataFormat?: string;
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
    inputShape: [number, number, number, number];
  };
  assertNoDilation('Conv2DBackpropInput', attrs.dilations);
  const fallback = () => tfjsKernel('Conv2DBackpropInput')(args) as TensorInfo;
  if (!isNHWC(dataFormat) || dy.dtype !== 'float32' || filter.dtype !== 'float32') return fallback();
  const [sh, sw] = pair(strides, 'strides');
  const info = tf.backend_util.computeConv2DInfo(
    inputShape,
    filter.shape as [number, number, number, number],
    [sh, sw],
    1,
    normPad(pad),
    dimRoundingMode,
    false,
    'channelsLast',
  );
  const [B, H, W, Ci] = inputShape;
  const [, OH, OW, Co] = dy.shape;
  const [fh, fw] = filter.shape;
  if (OH !== info.outHeight || OW !== info.outWidth || filter.shape[2] !== Ci || filter.shape[3] !== Co) {
    throw new Error(`Conv2DBackpropInput: dy [${dy.shape}] and filter [${filter.shape}] do not match inputShape [${inputShape}]`);
  }
  if (sizeOf(inputShape) === 0 || sizeOf(dy.shape) === 0 || sizeOf(filter.shape) === 0) return fallback();
  const pt = info.padInfo.top;
  const pl = info.padInfo.left;
  // dx row h = q*sh + rh - pt takes dy rows q - t with taps t*sh + rh (t < T).
  const T = Math.ceil(fh / sh);
  const Tw = Math.ceil(fw / sw);
  const q0 = Math.floor(pt / sh);
  const Q = Math.floor((H - 1 + pt) / sh) - q0 + 1;
  const qw0 = Math.floor(pl / sw);
  const Qw = Math.floor((W - 1 + pl) / sw) - qw0 + 1;
  const padTop = T - 1 - q0;
  const padBottom = Q - OH + q0;
  const padLeft = Tw - 1 - qw0;
  const padRight = Qw - OW + qw0;
  // Degenerate explicit paddings (padding wider than the filter) would need negative pads.
  if (padTop < 0 || padBottom < 0 || padLeft < 0 || padRight < 0) return fallback();
  return withScope(backend, (s) => {
    const wc = phaseFilter(s, filter, sh, sw); // [T, Tw, Co, sh*sw*Ci]
    const y = s.call(
      'Conv2D',
      { x: dy, filter: wc },
      {
        strides: [1, 1],
        pad: [
          [0, 0],
          [padTop, padBottom],
          [padLeft, padRight],
          [0, 0],
        ],
        dataFormat: 'NHWC',
        dilations: [1, 1],
        dimRoundingMode: undefined,
      },
    ); // [B, Q, Qw, sh*sw*Ci]
    // interleave the phases: [B*Q, Qw, sh, sw*Ci] -> [B*Q, sh, Qw, sw*Ci] = [B, Q*sh, Qw*sw, Ci]
    const z = sh > 1 ? transpose(s, s.reshape(y, [B * Q, Qw, sh, sw * Ci]), [0, 2, 1, 3]) : y;
    const full = s.reshape(z, [B, Q * sh, Qw * sw, Ci]);
    const dx = cropHW(s, full, pt - q0 * sh, H, pl - qw0 * sw, W);
    return s.out(dx, [B, H, W, Ci]);
  });
}
addKernel('Conv2DBackpropInput', conv2dBackpropInput);

// --- matrix multiplication --------------------------------------------------------------------

const rawMatMul = new WeakMap<object, CFunc>();

/** tfjs' C BatchMatMul: XNNPACK's GEMM for 3-D [1,M,K] x [1,K,N] without transposes. */
function cMatMul(backend: WasmBackend): CFunc {
  let f = rawMatMul.get(backend);
  if (!f) {
    f = backend.wasm.cwrap('BatchMatMul', null, ['number', 'array', 'number', 'number', 'array', 'number', 'number', 'number', 'number']);
    rawMatMul.set(backend, f);
  }
  return f;
}

const shapeBytes = (shape: number[]): Uint8Array => new Uint8Array(new Int32Array(shape).buffer);

/**
 * op(a) @ op(b) for 2-D a, b (op = transpose where asked), by XNNPACK's GEMM. That GEMM packs
 * its right operand (a strided copy, 3-10 ns an element) and runs faster when its output is
 * taller than wide, so where a transpose is needed anyway it may be cheaper to compute
 * C^T = op(b)^T op(a)^T and transpose the (small) result: chosen by a rough cost model fitted
 * to this build (ns per element moved, FLOP per ns of the GEMM in each shape).
 */
function gemm2d(s: Scope, a: TensorInfo, b: TensorInfo, transposeA: boolean, transposeB: boolean): TensorInfo {
  const M = transposeA ? a.shape[1] : a.shape[0];
  const K = transposeA ? a.shape[0] : a.shape[1];
  const N = transposeB ? b.shape[0] : b.shape[1];
  const tr = (n: number) => 2.5 * n;
  const pack = (k: number, n: number) => 4 * k * n;
  const gemm = (m: number, k: number, n: number) => (2 * m * k * n) / (n <= m ? 40 : 27);
  const direct = (transposeA ? tr(M * K) : 0) + (transposeB ? tr(K * N) : 0) + pack(K, N) + gemm(M, K, N);
  const swapped = (transposeB ? 0 : tr(K * N)) + (transposeA ? 0 : tr(M * K)) + pack(K, M) + gemm(N, K, M) + tr(M * N);
  const mm = (l: TensorInfo, r: TensorInfo, m: number, n: number) =>
    s.reshape(s.call('BatchMatMul', { a: s.reshape(l, [1, m, K]), b: s.reshape(r, [1, K, n]) }, { transposeA: false, transposeB: false }), [m, n]);
  if (swapped < direct) {
    const left = transposeB ? b : transpose(s, b, [1, 0]); // [N, K]
    const right = transposeA ? a : transpose(s, a, [1, 0]); // [K, M]
    return transpose(s, mm(left, right, N, M), [1, 0]);
  }
  const left = transposeA ? transpose(s, a, [1, 0]) : a; // [M, K]
  const right = transposeB ? transpose(s, b, [1, 0]) : b; // [K, N]
  return mm(left, right, M, N);
}

/**
 * Below this many multiply-adds per matrix, tfjs' scalar loop beats a GEMM call, whose fixed
 * cost grows with a thread pool (waking the pthreads for each XNNPACK call).
 */
const minGemmMacs = (): number => (getThreadsCount() > 1 ? 256 * 1024 : 8 * 1024);

/**
 * a [...batchA, M, K] (or [..., K, M] when transposeA), b likewise; returns null where tfjs' own
 * kernel is already fast (batch 1, no transposes) or not applicable.
 */
function fastMatMul(s: Scope, a: TensorInfo, b: TensorInfo, transposeA: boolean, transposeB: boolean): TensorInfo | null {
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) return null;
  const ra = a.shape.length;
  const rb = b.shape.length;
  const M = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
  const K = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
  const K2 = transposeB ? b.shape[rb - 1] : b.shape[rb - 2];
  const N = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
  if (K !== K2) return null; // let tfjs report it
  const outerA = a.shape.slice(0, -2);
  const outerB = b.shape.slice(0, -2);
  const batchA = sizeOf(outerA);
  const batchB = sizeOf(outerB);
  let outer: number[];
  try {
    outer = tf.broadcast_util.assertAndGetBroadcastShape(outerA, outerB);
  } catch {
    return null;
  }
  const batch = sizeOf(outer);
  if (!transposeA && !transposeB && batchA === 1 && batchB === 1) return null;
  // tfjs' kernels get batch dims broadcast from both sides wrong ([2,1,..] x [1,3,..]): always ours
  const twoSided = batchA !== batch && batchB !== batch;
  if (M * N * K * batch === 0) return null;
  if (!twoSided && (M * N * K * batch < 8 * 1024 || (batchB > 1 && M * N * K < minGemmMacs()))) return null;
  const outShape = [...outer, M, N];
  if (batchA === 1 && batchB === 1)
    return s.reshape(gemm2d(s, s.reshape(a, transposeA ? [K, M] : [M, K]), s.reshape(b, transposeB ? [N, K] : [K, N]), transposeA, transposeB), outShape);
  const a3 = transposeA ? transpose(s, s.reshape(a, [batchA, K, M]), [0, 2, 1]) : s.reshape(a, [batchA, M, K]);
  const b3 = transposeB ? transpose(s, s.reshape(b, [batchB, N, K]), [0, 2, 1]) : s.reshape(b, [batchB, K, N]);
  if (batchB === 1) {
    // b is shared: one GEMM over all of a's rows
    const y = s.call('BatchMatMul', { a: s.reshape(a3, [1, batchA * M, K]), b: s.reshape(b3, [1, K, N]) }, { transposeA: false, transposeB: false });
    return s.reshape(y, outShape);
  }
  // One GEMM per output batch, on views (no copies); b views are kept while reused, since
  // XNNPACK packs b once per tensor.
  const out = s.alloc(outShape);
  const gemm = cMatMul(s.backend);
  const aShape = shapeBytes([1, M, K]);
  const bShape = shapeBytes([1, K, N]);
  const idx = (full: number[], part: number[], flat: number): number => {
    // index into `part` (broadcast to `full`) of the batch element `flat` of `full`
    let rem = flat;
    let off = 0;
    let stride = 1;
    const coords: number[] = new Array(full.length);
    for (let d = full.length - 1; d >= 0; d--) {
      coords[d] = rem % full[d];
      rem = Math.floor(rem / full[d]);
    }
    const shift = full.length - part.length;
    for (let d = part.length - 1; d >= 0; d--) {
      const c = part[d] === 1 ? 0 : coords[d + shift];
      off += c * stride;
      stride *= part[d];
    }
    return off;
  };
  const bViews = new Map<number, TensorInfo>();
  for (let i = 0; i < batch; i++) {
    const ia = batchA === 1 ? 0 : idx(outer, outerA, i);
    const ib = idx(outer, outerB, i);
    let bv = bViews.get(ib);
    if (!bv) {
      bv = s.view(b3, ib * K * N, [1, K, N]);
      bViews.set(ib, bv);
    }
    const av = s.view(a3, ia * M * K, [1, M, K]);
    const ov = s.view(out, i * M * N, [1, M, N]);
    const id = (t: TensorInfo) => s.backend.dataIdMap.get(t.dataId).id;
    gemm(id(av), aShape, 3, id(bv), bShape, 3, false, false, id(ov));
    s.dropView(av);
    s.dropView(ov);
    if (batchB === batch) {
      // every output batch has its own b: no reuse, free XNNPACK's packed copy now
      s.dropView(bv);
      bViews.delete(ib);
    }
  }
  return out;
}

function batchMatMul(args: KernelArgs): TensorInfo {
  const { inputs, attrs, backend } = args;
  const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
  return withScope(backend, (s) => {
    const r = fastMatMul(s, inputs.a!, inputs.b!, !!transposeA, !!transposeB);
    if (r) return s.out(r);
    return tfjsKernel('BatchMatMul')(args) as TensorInfo;
  });
}
addKernel('BatchMatMul', batchMatMul);

const ACTIVATION_KERNELS: Record<string, string> = { relu: 'Relu', relu6: 'Relu6', elu: 'Elu', sigmoid: 'Sigmoid' };

function fusedMatMul(args: KernelArgs): TensorInfo {
  const { inputs, attrs, backend } = args;
  const { transposeA, transposeB, activation, leakyreluAlpha } = attrs as {
    transposeA: boolean;
    transposeB: boolean;
    activation?: string;
    leakyreluAlpha?: number;
  };
  const act = activation ?? 'linear';
  const supported = act === 'linear' || act === 'leakyrelu' || act === 'prelu' || act in ACTIVATION_KERNELS;
  const a = inputs.a!;
  const b = inputs.b!;
  const bias = inputs.bias;
  // tfjs' XNNPACK path reads N bias values whatever the bias' size (wrong for a broadcast
  // bias such as [1]), so only a [N] bias may go there.
  const N = transposeB ? b.shape[b.shape.length - 2] : b.shape[b.shape.length - 1];
  const tfjsBiasOk = !bias || (bias.shape.length === 1 && bias.shape[0] === N);
  return withScope(backend, (s) => {
    let mm = supported ? fastMatMul(s, a, b, !!transposeA, !!transposeB) : null;
    if (!mm && supported && (!tfjsBiasOk || act === 'prelu') && a.dtype === 'float32' && b.dtype === 'float32') {
      mm = s.call('BatchMatMul', { a, b }, { transposeA: !!transposeA, transposeB: !!transposeB });
    }
    if (!mm) return tfjsKernel('_FusedMatMul')(args) as TensorInfo;
    let y = mm;
    if (bias) y = s.call('Add', { a: y, b: bias });
    if (act === 'leakyrelu') y = s.call('LeakyRelu', { x: y }, { alpha: leakyreluAlpha ?? 0.2 });
    else if (act === 'prelu') y = s.call('Prelu', { x: y, alpha: inputs.preluActivationWeights });
    else if (act !== 'linear') y = s.call(ACTIVATION_KERNELS[act], { x: y });
    return s.out(y);
  });
}
addKernel('_FusedMatMul', fusedMatMul);

// --- reductions ---------------------------------------------------------------------------------

/** Below this many elements tfjs' transpose-and-reduce is as fast as anything. */
const MIN_REDUCE_SIZE = 2048;

/**
 * Sum or mean of float32 `x` over `axis` without transposing; null where tfjs' kernel does
 * not need a transpose (all reduced axes innermost) or the input is tiny.
 */
function fastReduce(s: Scope, kind: 'Sum' | 'Mean', x: TensorInfo, axis: unknown, keepDims: boolean): TensorInfo | null {
  if (x.dtype !== 'float32' || sizeOf(x.shape) < MIN_REDUCE_SIZE) return null;
  const rank = x.shape.length;
  const axes = tf.util.parseAxisParam(axis as number | number[], x.shape);
  if (tf.backend_util.getAxesPermutation(axes, rank) === null) return null;
  const reduced = new Set(axes);
  // merged blocks of kept / reduced dims, size-1 dims dropped
  const blocks: Array<{ size: number; reduced: boolean }> = [];
  x.shape.forEach((d, i) => {
    if (d === 1) return;
    const r = reduced.has(i);
    const last = blocks[blocks.length - 1];
    if (last && last.reduced === r) last.size *= d;
    else blocks.push({ size: d, reduced: r });
  });
  const outShape = x.shape.filter((_, i) => !reduced.has(i));
  const finalShape = keepDims ? tf.backend_util.expandShapeToKeepDim(outShape, axes) : outShape;
  let cur = s.reshape(
    x,
    blocks.map((b) => b.size),
  );
  let scale = 1;
  if (blocks.length > 0 && blocks[blocks.length - 1].reduced) {
    // innermost block: tfjs' kernel reduces it without a transpose
    cur = s.call(
      kind,
      { x: s.reshape(cur, [sizeOf(cur.shape) / blocks[blocks.length - 1].size, blocks[blocks.length - 1].size]) },
      { axis: [1], keepDims: false },
    );
    blocks.pop();
  }
  for (;;) {
    let best = -1;
    blocks.forEach((b, i) => {
      if (b.reduced && (best < 0 || b.size > blocks[best].size)) best = i;
    });
    if (best < 0) break;
    const R = blocks[best].size;
    const N = sizeOf(blocks.slice(0, best).map((b) => b.size));
    const C = sizeOf(blocks.slice(best + 1).map((b) => b.size));
    // Average pooling over a window of R rows of C channels. Large R in two levels (about
    // sqrt(R) each): faster, and pairwise-like rounding.
    const r1 = R >= 4096 ? [...Array(Math.floor(Math.sqrt(R)) + 1).keys()].reverse().find((d) => d > 1 && R % d === 0 && d * 4 >= Math.sqrt(R)) : undefined;
    if (r1 !== undefined) {
      const p1 = s.call(
        'AvgPool',
        { x: s.reshape(cur, [N, R / r1, r1, C]) },
        { filterSize: [1, r1], strides: [1, r1], pad: 'valid', dimRoundingMode: undefined },
      );
      cur = s.call(
        'AvgPool',
        { x: s.reshape(p1, [N, R / r1, 1, C]) },
        { filterSize: [R / r1, 1], strides: [R / r1, 1], pad: 'valid', dimRoundingMode: undefined },
      );
    } else {
      cur = s.call('AvgPool', { x: s.reshape(cur, [N, R, 1, C]) }, { filterSize: [R, 1], strides: [R, 1], pad: 'valid', dimRoundingMode: undefined });
    }
    scale *= R;
    blocks.splice(best, 1);
  }
  if (kind === 'Sum' && scale !== 1) {
    const v = s.backend.typedArrayFromHeap(cur) as Float32Array;
    for (let i = 0; i < v.length; i++) v[i] *= scale;
  }
  return s.reshape(cur, finalShape);
}

function reduceKernel(kind: 'Sum' | 'Mean'): OurKernelFunc {
  return (args: KernelArgs) => {
    const { inputs, attrs, backend } = args;
    const { axis, keepDims } = attrs as { axis: number | number[]; keepDims: boolean };
    return withScope(backend, (s) => {
      const r = fastReduce(s, kind, inputs.x!, axis, !!keepDims);
      if (r) return s.out(r);
      return tfjsKernel(kind)(args) as TensorInfo;
    });
  };
}
addKernel('Sum', reduceKernel('Sum'));
addKernel('Mean', reduceKernel('Mean'));

// --- slicing ---------------------------------------------------------------------------------

/** Copies the box [begin, begin+size) of `x` into a new tensor, in runs as long as possible. */
function sliceBox(backend: WasmBackend, x: TensorInfo, begin: number[], size: number[]): TensorInfo {
  const out = backend.makeOutput(size, x.dtype);
  const total = sizeOf(size);
  if (total === 0) return out;
  const src = backend.typedArrayFromHeap(x);
  const dst = backend.typedArrayFromHeap(out);
  const rank = x.shape.length;
  const strides = tf.util.computeStrides(x.shape);
  const stride = (d: number) => (d === rank - 1 ? 1 : strides[d]);
  // dims from `inner` on are copied as one run: all after it are taken whole
  let inner = rank - 1;
  while (inner > 0 && begin[inner] === 0 && size[inner] === x.shape[inner]) inner--;
  const run = inner < 0 ? total : size[inner] * (inner === rank - 1 ? 1 : strides[inner]);
  const outer = total / run;
  const idx = new Array<number>(Math.max(inner, 0)).fill(0);
  let base = 0;
  for (let d = 0; d < rank; d++) base += begin[d] * stride(d);
  for (let i = 0; i < outer; i++) {
    let off = base;
    for (let d = 0; d < inner; d++) off += idx[d] * stride(d);
    dst.set(src.subarray(off, off + run), i * run);
    for (let d = inner - 1; d >= 0; d--) {
      if (++idx[d] < size[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

function slice(args: KernelArgs): TensorInfo {
  const { inputs, attrs, backend } = args;
  const x = inputs.x!;
  if (x.dtype === 'string' || x.dtype === 'complex64') return tfjsKernel('Slice')(args) as TensorInfo;
  const { begin, size } = attrs as { begin: number | number[]; size?: number | number[] };
  const [b, sz] = tf.slice_util.parseSliceParams(x as unknown as tf.Tensor, begin, size);
  return sliceBox(backend as WasmBackend, x, b, sz);
}
addKernel('Slice', slice);

function splitV(args: KernelArgs): TensorInfo[] {
  const { inputs, attrs, backend } = args;
  const x = inputs.x!;
  if (x.dtype === 'string' || x.dtype === 'complex64') return tfjsKernel('SplitV')(args) as TensorInfo[];
  const { numOrSizeSplits, axis } = attrs as { numOrSizeSplits: number | number[]; axis: number };
  const ax = tf.util.parseAxisParam(axis, x.shape)[0];
  const sizes = tf.backend_util.prepareSplitSize(x as unknown as tf.Tensor, numOrSizeSplits, ax);
  const begin = new Array<number>(x.shape.length).fill(0);
  return sizes.map((n) => {
    const size = [...x.shape];
    size[ax] = n;
    const piece = sliceBox(backend as WasmBackend, x, [...begin], size);
    begin[ax] += n;
    return piece;
  });
}
addKernel('SplitV', splitV);

// --- MaxPoolGrad ---------------------------------------------------------------------------------
// tfjs-wasm 4.22's kernel starts each window's running maximum at 0, so a window of negative
// values sends its dy nowhere (half the windows of a N(0, 1) input), and it takes the last of tied
// maxima. After a ReLU (the classifier's conv -> ReLU -> pool) both rarely matter; anywhere else
// the gradient is wrong. One pass over the windows, in the pool's own geometry.

function maxPoolGrad(args: KernelArgs): TensorInfo {
  const backend = args.backend as WasmBackend;
  const { dy, input } = args.inputs as Record<string, TensorInfo>;
  if (input.dtype !== 'float32' || dy.dtype !== 'float32') return tfjsKernel('MaxPoolGrad')(args) as TensorInfo;
  const { filterSize, strides, pad, dimRoundingMode } = args.attrs as {
    filterSize: number | [number, number];
    strides: number | [number, number];
    pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
  };
  const info = tf.backend_util.computePool2DInfo(input.shape as [number, number, number, number], filterSize, strides, 1, pad, dimRoundingMode);
  const { batchSize: B, inHeight: H, inWidth: W, inChannels: C, outHeight: OH, outWidth: OW, strideHeight: sh, strideWidth: sw } = info;
  const { effectiveFilterHeight: fh, effectiveFilterWidth: fw } = info;
  const dx = backend.makeOutput([...input.shape], 'float32');
  // Views only now: an allocation that grows the heap detaches views taken before it.
  const [X, DY, DX] = [input, dy, dx].map((t) => backend.typedArrayFromHeap(t) as Float32Array);
  DX.fill(0);
  for (let b = 0; b < B; b++) {
    for (let oy = 0; oy < OH; oy++) {
      const y0 = oy * sh - info.padInfo.top;
      const [ya, yb] = [Math.max(y0, 0), Math.min(y0 + fh, H)];
      for (let ox = 0; ox < OW; ox++) {
        const x0 = ox * sw - info.padInfo.left;
        const [xa, xb] = [Math.max(x0, 0), Math.min(x0 + fw, W)];
        const dyRow = ((b * OH + oy) * OW + ox) * C;
        for (let c = 0; c < C; c++) {
          let at = -1;
          let best = 0;
          for (let y = ya; y < yb; y++) {
            for (let x = xa; x < xb; x++) {
              const i = ((b * H + y) * W + x) * C + c;
              if (at < 0 || X[i] > best) {
                at = i;
                best = X[i];
              }
            }
          }
          if (at >= 0) DX[at] += DY[dyRow + c];
        }
      }
    }
  }
  return dx;
}
addKernel('MaxPoolGrad', maxPoolGrad);

// --- Identity ------------------------------------------------------------------------------------
// tfjs saves every tensor a gradient needs with a clone (the Identity kernel). The wasm backend's
// Identity copies the memory; the cpu backend shares it by reference count. Sharing is safe because
// no kernel writes into an input and Variable.assign swaps buffers rather than writing into them;
// it cut the peak wasm heap of an ldm-small U-Net training step at batch 64 from 3.97 to 2.71 GiB
// (`npm run bench -- --only unet_train_step_ms`).

function identity(args: KernelArgs): TensorInfo {
  const { inputs, backend } = args;
  const x = inputs.x!;
  if (x.dtype === 'string') return tfjsKernel('Identity')(args) as TensorInfo;
  (backend as WasmBackend).incRef(x.dataId);
  return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
}
addKernel('Identity', identity);

// --- AdamW ---------------------------------------------------------------------------------------
// The optimizer update op by op is ~12 wasm kernels, each a pass over the parameters; this is one
// pass.
// It writes new buffers for p, m and v rather than into them: Variable.assign swaps buffers, and
// the wasm backend caches XNNPACK operators (with packed weights) by tensor id.

/** Our fused AdamW kernel (src/optim/adamw.ts uses it where the active backend has it). */
export const ADAMW_KERNEL = 'Txt2ImgAdamW';

function adamw(args: KernelArgs): TensorInfo[] {
  const backend = args.backend as WasmBackend;
  const { p, g, m, v } = args.inputs as Record<string, TensorInfo>;
  const { beta1, beta2, bc1, bc2, eps, lr, decay } = args.attrs as Record<string, number>;
  for (const t of [g, m, v]) {
    if (t.dtype !== 'float32' || sizeOf(t.shape) !== sizeOf(p.shape))
      throw new Error(`${ADAMW_KERNEL}: inputs must be float32 of p's size [${p.shape.join(', ')}]`);
  }
  const outs = [p, m, v].map((t) => backend.makeOutput([...t.shape], 'float32'));
  // Views only now: an allocation that grows the heap detaches views taken before it.
  const [P, G, M, V, OP, OM, OV] = [p, g, m, v, ...outs].map((t) => backend.typedArrayFromHeap(t) as Float32Array);
  const c1 = 1 - beta1;
  const c2 = 1 - beta2;
  // One division per element (not three): the update is memory- and divide-bound.
  const stepSize = lr / bc1;
  const invBc2 = 1 / bc2;
  const n = P.length;
  for (let i = 0; i < n; i++) {
    const gi = G[i];
    const mi = Math.fround(beta1 * M[i] + c1 * gi);
    const vi = Math.fround(beta2 * V[i] + c2 * gi * gi);
    OM[i] = mi;
    OV[i] = vi;
    // p <- p * (1 - lr * wd) - lr * m_hat / (sqrt(v_hat) + eps)
    OP[i] = P[i] * decay - (stepSize * mi) / (Math.sqrt(vi * invBc2) + eps);
  }
  return outs;
}
addKernel(ADAMW_KERNEL, adamw);
