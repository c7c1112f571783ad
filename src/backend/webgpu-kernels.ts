/**
 * Our kernel pack for @tensorflow/tfjs-backend-webgpu 4.22.0: what its kernels get wrong for
 * this project's models, found by running every model, sampler and training stage on it
 * (tests/backend/webgpu-kernels.test.ts checks each against the cpu backend).
 *
 *  - AddN: tfjs binds every input as its own storage buffer in one shader, so more inputs than
 *    the device's maxStorageBuffersPerShaderStage minus one (the output) make an invalid
 *    pipeline, and Dawn drops the whole batch of work submitted with it (the gradient norm of
 *    a VAE's 73 parameters; llvmpipe allows 8). Summed in chunks that fit, then the partial
 *    sums.
 *  - BatchMatMul whose batch dims both broadcast ([2,1,M,K] x [1,3,K,N]): tfjs reshapes each
 *    operand to its own batch and fails ("Size(768) must match the product of shape
 *    2,3,16,16"). The operands are tiled to the common batch first. (tfjs' fused matMul op
 *    flattens both batches before its kernel, so it never gets here.)
 *  - MaxPoolGrad: tfjs' positions shader keeps the last of tied maxima (`value >= max`), so a
 *    window of equal values (a ReLU's zeros, a flat image region) sends its gradient to another
 *    element than the cpu backend, TensorFlow and onnxruntime do. One shader (ours, WGSL) sends
 *    each dy to its window's first maximum, as they do.
 *  - Sin / Cos: WGSL bounds their error only on [-pi, pi]; the U-Net's timestep embedding takes
 *    them of arguments up to ~1000. The argument is reduced to [-pi, pi] first (Cody-Waite, 2 pi
 *    split in two so that k * C1 is exact), in the same shader.
 *
 * Our shaders run through tfjs' runWebGPUProgram (tfjs writes their preamble); the other kernels
 * call tfjs' kernel functions directly (nothing is recorded on a tape). Each disposes every
 * intermediate it made and falls back to tfjs' kernel for what it does not handle (other
 * dtypes). Registered for 'webgpu' only.
 */
import * as tf from '@tensorflow/tfjs';
import { webgpu_util } from '@tensorflow/tfjs-backend-webgpu';

type TensorInfo = tf.TensorInfo;
type KernelConfig = tf.KernelConfig;
type Attrs = Record<string, unknown>;

const BACKEND = 'webgpu';

/** The slice of tfjs' WebGPUBackend we use. */
interface WebGpuBackend {
  device: { limits: { maxStorageBuffersPerShaderStage: number } };
  disposeData(dataId: tf.DataId, force?: boolean): boolean;
  runWebGPUProgram(program: Program, inputs: TensorInfo[], outputDtype: tf.DataType, uniforms?: Uniform[]): TensorInfo;
}

/**
 * A shader program as tfjs' runWebGPUProgram takes it (tfjs-backend-webgpu 4.22's
 * WebGPUProgram): tfjs writes the WGSL preamble (bindings; a `get<Name>(coords)` reader per
 * variable; `uniforms.<name>Shape`; `getCoordsFromIndex`, `setOutputAtIndex`; the entry point
 * calling `main(index)` with the flat output index); getUserCode supplies `fn main`.
 */
interface Program {
  variableNames: string[];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  /** Declares uniforms.size (the output's element count). */
  size: boolean;
  /** WGSL struct fields of our own uniforms, filled in order by runWebGPUProgram's `uniforms`. */
  uniforms?: string;
  getUserCode(): string;
}
type Uniform = { type: 'int32' | 'float32'; data: number[] };

/** A program over the output's elements, one invocation each (tfjs' flat dispatch layout). */
function flatProgram(outputShape: number[], key: string, variableNames: string[], uniforms: string | undefined, body: string): Program {
  const workgroupSize: [number, number, number] = [64, 1, 1];
  const layout = webgpu_util.flatDispatchLayout(outputShape);
  return {
    variableNames,
    outputShape,
    shaderKey: `txt2img_${key}`,
    dispatchLayout: layout,
    dispatch: webgpu_util.computeDispatch(layout, outputShape, workgroupSize),
    workgroupSize,
    size: true,
    ...(uniforms ? { uniforms } : {}),
    getUserCode: () => `
      fn main(index : i32) {
        if (index < uniforms.size) {
          ${body}
        }
      }`,
  };
}

type KernelArgs = { inputs: Record<string, TensorInfo | undefined> | TensorInfo[]; attrs: Attrs; backend: unknown };
type OurKernelFunc = (args: KernelArgs) => TensorInfo | TensorInfo[];

// --- registration ---------------------------------------------------------------------------

/** Marks our configs; holds the config it replaced (null where tfjs had none). */
const REPLACED = Symbol.for('txt2img.webgpuKernels.replaced');
type OurConfig = KernelConfig & { [REPLACED]?: KernelConfig | null };

/** tfjs' own kernel function for `name` (the one we replaced, or the registered one). */
function tfjsKernel(name: string): (args: KernelArgs) => TensorInfo | TensorInfo[] {
  const registered = tf.getKernel(name, BACKEND) as OurConfig | undefined;
  const config = registered ? (registered[REPLACED] !== undefined ? registered[REPLACED] : registered) : null;
  if (!config) throw new Error(`webgpu kernel '${name}' is not registered (is @tensorflow/tfjs-backend-webgpu loaded?)`);
  return config.kernelFunc as unknown as (args: KernelArgs) => TensorInfo | TensorInfo[];
}

const PACK: Array<[string, OurKernelFunc]> = [];

/** Names of the kernels in the pack. */
export const WEBGPU_KERNEL_NAMES: readonly string[] = [];

function addKernel(name: string, fn: OurKernelFunc): void {
  PACK.push([name, fn]);
  (WEBGPU_KERNEL_NAMES as string[]).push(name);
}

/**
 * Registers the pack for the 'webgpu' backend (idempotent). Call after importing
 * @tensorflow/tfjs-backend-webgpu (whose import registers its kernels).
 */
export function registerWebGpuKernels(): void {
  for (const [name, kernelFunc] of PACK) {
    const current = tf.getKernel(name, BACKEND) as OurConfig | undefined;
    if (current && current[REPLACED] !== undefined) continue; // already ours
    if (current) tf.unregisterKernel(name, BACKEND);
    const config: OurConfig = {
      kernelName: name,
      backendName: BACKEND,
      kernelFunc: kernelFunc as unknown as tf.KernelFunc,
      ...(current?.setupFunc ? { setupFunc: current.setupFunc } : {}),
      ...(current?.disposeFunc ? { disposeFunc: current.disposeFunc } : {}),
      [REPLACED]: current ?? null,
    };
    tf.registerKernel(config);
  }
}

/** Runs tfjs' kernel `name` and expects one output. */
function call(name: string, backend: unknown, inputs: KernelArgs['inputs'], attrs: Attrs = {}): TensorInfo {
  const r = tfjsKernel(name)({ inputs, attrs, backend });
  if (Array.isArray(r)) throw new Error(`webgpu kernel '${name}' returned ${r.length} outputs where one was expected`);
  return r;
}

// --- AddN -------------------------------------------------------------------------------------

addKernel('AddN', ({ inputs, backend }) => {
  const xs = (Array.isArray(inputs) ? inputs : Object.values(inputs)) as TensorInfo[];
  const b = backend as WebGpuBackend;
  // One binding is the output; tfjs' uniforms are a uniform buffer, not a storage one.
  const most = Math.max(2, b.device.limits.maxStorageBuffersPerShaderStage - 1);
  if (xs.length <= most) return call('AddN', backend, xs);
  const partial: TensorInfo[] = [];
  try {
    for (let i = 0; i < xs.length; i += most) {
      const chunk = xs.slice(i, i + most);
      // A chunk of one is added as it is (AddN of one input would be an Identity copy).
      partial.push(chunk.length === 1 ? chunk[0] : call('AddN', backend, chunk));
    }
    // The partial sums may themselves be too many: the same kernel again (a tree of sums).
    const kernel = tf.getKernel('AddN', BACKEND)!.kernelFunc as unknown as OurKernelFunc;
    return kernel({ inputs: partial, attrs: {}, backend }) as TensorInfo;
  } finally {
    for (const p of partial) if (!xs.includes(p)) b.disposeData(p.dataId);
  }
});

// --- BatchMatMul with batch dims broadcast on both sides ------------------------------------------

/** The Tile of `x` to `batch` (x's batch dims broadcast to it), or null where none is needed. */
function tileToBatch(backend: unknown, x: TensorInfo, batch: number[]): TensorInfo | null {
  const own = x.shape.slice(0, -2);
  // tfjs handles an operand whose batch is all ones (it is read once per output batch).
  if (own.every((d) => d === 1)) return null;
  const lead = batch.length - own.length;
  const full = [...new Array<number>(lead).fill(1), ...own];
  if (full.every((d, i) => d === batch[i])) return null;
  const reshaped = { dataId: x.dataId, shape: [...full, ...x.shape.slice(-2)], dtype: x.dtype };
  const reps = [...batch.map((d, i) => (full[i] === d ? 1 : d)), 1, 1];
  return call('Tile', backend, { x: reshaped }, { reps });
}

addKernel('BatchMatMul', ({ inputs, attrs, backend }) => {
  const { a, b } = inputs as Record<string, TensorInfo>;
  const batch = tf.broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const ta = tileToBatch(backend, a, batch);
  const tb = ta && tileToBatch(backend, b, batch);
  // Where at most one side broadcasts, tfjs' kernel is right as it is.
  if (!ta || !tb) {
    if (ta) (backend as WebGpuBackend).disposeData(ta.dataId);
    return call('BatchMatMul', backend, inputs, attrs);
  }
  try {
    return call('BatchMatMul', backend, { a: ta, b: tb }, attrs);
  } finally {
    (backend as WebGpuBackend).disposeData(ta.dataId);
    (backend as WebGpuBackend).disposeData(tb.dataId);
  }
});

// --- MaxPoolGrad: each dy to its window's first maximum -----------------------------------------

addKernel('MaxPoolGrad', ({ inputs, attrs, backend }) => {
  const { dy, input } = inputs as Record<string, TensorInfo>;
  const { filterSize, strides, pad, dimRoundingMode } = attrs as {
    filterSize: number | [number, number];
    strides: number | [number, number];
    pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
  };
  if (input.dtype !== 'float32' || dy.shape.length !== 4) return call('MaxPoolGrad', backend, inputs, attrs);
  const info = tf.backend_util.computePool2DInfo(input.shape as [number, number, number, number], filterSize, strides, 1, pad, dimRoundingMode);
  // dx[b, r, c, d] = sum of dy[b, i, j, d] over the windows (i, j) that hold (r, c) and whose
  // first maximum in row-major order (strictly greater than every earlier value, as the cpu
  // backend scans) is (r, c). Windows of a 2x2 pool: at most 4, each scanned in 4 reads.
  const program = flatProgram(
    input.shape,
    'maxPoolGradFirstMax',
    ['dy', 'x'],
    'strides : vec2<i32>, pads : vec2<i32>, filterDims : vec2<i32>, outDims : vec2<i32>,',
    `
          let coords = getCoordsFromIndex(index);
          let b = coords[0];
          let r = coords[1];
          let c = coords[2];
          let d = coords[3];
          var acc = 0.0;
          for (var wr = 0; wr < uniforms.filterDims.x; wr++) {
            let nr = r + uniforms.pads.x - wr;
            if (nr < 0 || nr % uniforms.strides.x != 0) { continue; }
            let i = nr / uniforms.strides.x;
            if (i >= uniforms.outDims.x) { continue; }
            for (var wc = 0; wc < uniforms.filterDims.y; wc++) {
              let nc = c + uniforms.pads.y - wc;
              if (nc < 0 || nc % uniforms.strides.y != 0) { continue; }
              let j = nc / uniforms.strides.y;
              if (j >= uniforms.outDims.y) { continue; }
              // The first maximum of window (i, j).
              let r0 = i * uniforms.strides.x - uniforms.pads.x;
              let c0 = j * uniforms.strides.y - uniforms.pads.y;
              var best = -uniforms.INFINITY;
              var bestR = -1;
              var bestC = -1;
              for (var u = 0; u < uniforms.filterDims.x; u++) {
                let xr = r0 + u;
                if (xr < 0 || xr >= uniforms.xShape[1]) { continue; }
                for (var v = 0; v < uniforms.filterDims.y; v++) {
                  let xc = c0 + v;
                  if (xc < 0 || xc >= uniforms.xShape[2]) { continue; }
                  let value = getX(b, xr, xc, d);
                  if (value > best) {
                    best = value;
                    bestR = xr;
                    bestC = xc;
                  }
                }
              }
              if (bestR == r && bestC == c) {
                acc = acc + getDy(b, i, j, d);
              }
            }
          }
          setOutputAtIndex(index, acc);`,
  );
  const uniforms: Uniform[] = [
    { type: 'int32', data: [info.strideHeight, info.strideWidth] },
    { type: 'int32', data: [info.padInfo.top, info.padInfo.left] },
    { type: 'int32', data: [info.filterHeight, info.filterWidth] },
    { type: 'int32', data: [info.outHeight, info.outWidth] },
  ];
  return (backend as WebGpuBackend).runWebGPUProgram(program, [dy, input], 'float32', uniforms);
});

// --- Sin / Cos with the argument reduced to [-pi, pi] ---------------------------------------------

// 2 pi = C1 + C2: C1 has 9 significant bits, so k * C1 is exact in float32 for |k| < 2^15
// (|x| < ~2e5); C2 is the float32 nearest the rest.
const TWO_PI_C1 = 6.28125;
const TWO_PI_C2 = 2 * Math.PI - TWO_PI_C1;

for (const [name, fn] of [
  ['Sin', 'sin'],
  ['Cos', 'cos'],
] as const) {
  addKernel(name, ({ inputs, attrs, backend }) => {
    const { x } = inputs as Record<string, TensorInfo>;
    if (x.dtype !== 'float32') return call(name, backend, inputs, attrs);
    const program = flatProgram(
      x.shape,
      `reduced_${fn}`,
      ['x'],
      undefined,
      `
          let a = getXByOutputIndex(index);
          let k = round(a * ${(1 / (2 * Math.PI)).toPrecision(9)});
          let reduced = (a - k * ${TWO_PI_C1.toFixed(5)}) - k * ${Math.fround(TWO_PI_C2).toPrecision(9)};
          setOutputAtIndex(index, select(${fn}(reduced), a, isnan(a)));`,
    );
    return (backend as WebGpuBackend).runWebGPUProgram(program, [x], 'float32');
  });
}
