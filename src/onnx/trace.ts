/**
 * Records the tfjs kernels one call of a function runs, so that the project's one forward pass
 * (src/unet) can be exported to ONNX without a second description of the architecture.
 *
 * Every tfjs 4.22 op reaches the backend through `engine.runKernel(name, inputs, attrs)`; we wrap
 * that method for the duration of one call. A kernel called from inside another kernel (a backend
 * composing kernels) is not recorded: only what the ops asked for is, plus the engine's clones of
 * the tensors it saves for a backward pass, so that gradients (`tf.grads`, `tf.variableGrads`)
 * traced inside `fn` are recorded like the forward pass. Each recorded tensor is
 *   - a graph input (one of the tensors passed as `inputs`, matched by tensor id),
 *   - a node output (a kernel with at least one non-constant input), or
 *   - a constant: any other tensor (weights, scalars made by ops), values read when first seen.
 * Kernels whose inputs are all constants are folded (their outputs become constants), so weight
 * reshapes and sinusoid frequency tables never reach the graph.
 */
import * as tf from '@tensorflow/tfjs';

export type TracedArray = Float32Array | Int32Array | Uint8Array;

export interface TracedValue {
  shape: number[];
  dtype: tf.DataType;
}

export interface TracedConstant extends TracedValue {
  values: TracedArray;
}

export interface TracedNode {
  kernel: string;
  /** [input name, tensor id] in the kernel's order (Concat: '0', '1', ...). */
  inputs: [string, number][];
  attrs: Record<string, unknown>;
  outputs: number[];
}

export interface KernelTrace {
  /** Graph inputs by name: the tensor id and its shape at trace time. */
  inputs: Map<string, { id: number } & TracedValue>;
  constants: Map<number, TracedConstant>;
  /** In execution order. */
  nodes: TracedNode[];
  /** Shape and dtype of every node output. */
  values: Map<number, TracedValue>;
  /** Id of the function's result (the first one when it returns several). */
  output: number;
  /** Ids of every result, in the order returned. */
  outputs: number[];
}

type RunKernel = (name: string, inputs: tf.NamedTensorMap, attrs?: Record<string, unknown>) => tf.Tensor | tf.Tensor[];

function readValues(t: tf.Tensor): TracedArray {
  return tf.engine().readSync(t.dataId) as TracedArray;
}

/** The engine's record of which backend holds a tensor's data (tfjs 4.x internals). */
interface EngineInternals {
  state: { tensorInfo: WeakMap<object, { backend: tf.KernelBackend }> };
  moveData(backend: tf.KernelBackend, dataId: object): void;
}

/** Moves a tensor's data to another tfjs backend (it comes back on demand when a kernel reads it). */
export function moveTensorData(backend: tf.KernelBackend, t: tf.Tensor): void {
  const engine = tf.engine() as unknown as EngineInternals;
  if (engine.state.tensorInfo.get(t.dataId)?.backend !== backend) engine.moveData(backend, t.dataId);
}

export interface TraceOptions {
  /**
   * Move each constant of at least `offloadMinBytes` (default 1 MiB) to this backend (e.g. tfjs'
   * 'cpu', plain JavaScript memory) once the kernel that read it has run; the active backend
   * fetches it back on demand if it is used again. With the model's weights kept there too, the
   * active backend holds one weight at a time: how an SD-1.5-size U-Net (3.4 GB) is traced on
   * the wasm backend, whose heap stops at 4 GB.
   */
  offloadTo?: tf.KernelBackend;
  offloadMinBytes?: number;
}

/**
 * Runs `fn` once (inside tf.tidy; its results are disposed) and returns what it computed, as
 * kernels over `inputs`. `fn` must be synchronous and use `inputs` as given. It may return
 * several tensors (e.g. a loss and its gradients, whose kernels are recorded like any other).
 */
export function traceKernels(fn: () => tf.Tensor | tf.Tensor[], inputs: Record<string, tf.Tensor>, opts: TraceOptions = {}): KernelTrace {
  const engine = tf.engine() as unknown as { runKernel: RunKernel };
  const internals = tf.engine() as unknown as EngineInternals;
  const offloadTo = opts.offloadTo;
  const offloadMinBytes = opts.offloadMinBytes ?? 1 << 20;
  const original = engine.runKernel;
  const trace: KernelTrace = { inputs: new Map(), constants: new Map(), nodes: [], values: new Map(), output: -1, outputs: [] };
  const dynamic = new Set<number>();
  for (const [name, t] of Object.entries(inputs)) {
    trace.inputs.set(name, { id: t.id, shape: [...t.shape], dtype: t.dtype });
    dynamic.add(t.id);
  }
  const keepConstant = (t: tf.Tensor): void => {
    if (trace.constants.has(t.id)) return;
    // The wasm backend's readSync returns a fresh copy; other backends may return their own
    // array (never written in place by tfjs, but copied to be safe), except the offload backend,
    // whose arrays hold the model's weights: copying those would double 3.4 GB.
    const held = internals.state.tensorInfo.get(t.dataId)?.backend;
    const fresh = held === offloadTo || (tf.getBackend() === 'wasm' && held === tf.engine().backend);
    const values = readValues(t);
    trace.constants.set(t.id, { shape: [...t.shape], dtype: t.dtype, values: fresh ? values : values.slice() });
  };
  const offload = (named: [string, tf.Tensor][]): void => {
    if (!offloadTo) return;
    for (const [, t] of named) {
      if (dynamic.has(t.id) || t.isDisposed || t.size * 4 < offloadMinBytes) continue;
      const info = internals.state.tensorInfo.get(t.dataId);
      if (!info || info.backend === offloadTo) continue;
      const kept = trace.constants.get(t.id)?.values;
      if (kept && (t.dtype === 'float32' || t.dtype === 'int32')) {
        // Hand the trace's own copy back instead of reading the values out again (engine.moveData):
        // otherwise the trace and the offload backend each hold a copy of every weight.
        const src = info.backend;
        const refCount = src.refCount(t.dataId);
        src.disposeData(t.dataId, true);
        info.backend = offloadTo;
        offloadTo.move(t.dataId, kept as Float32Array | Int32Array, t.shape, t.dtype, refCount);
      } else internals.moveData(offloadTo, t.dataId);
    }
  };

  const record = (name: string, named: [string, tf.Tensor][], attrs: Record<string, unknown> | undefined, outs: tf.Tensor[]): void => {
    for (const t of outs) {
      dynamic.add(t.id);
      trace.values.set(t.id, { shape: [...t.shape], dtype: t.dtype });
    }
    trace.nodes.push({ kernel: name, inputs: named.map(([k, t]) => [k, t.id]), attrs: structuredClone(attrs ?? {}), outputs: outs.map((t) => t.id) });
  };

  let depth = 0;
  // Identity calls made inside a kernel: the engine's clones of the tensors it saves for the
  // backward pass (inputs and outputs), which the gradient kernels later read. Whether a clone
  // is dynamic is known once the kernel has returned (its outputs are then dynamic).
  let clones: [tf.Tensor, tf.Tensor][] = [];
  engine.runKernel = function (this: unknown, name, kernelInputs, attrs) {
    if (depth > 0) {
      const result = original.call(this, name, kernelInputs, attrs);
      if (name === 'Identity') clones.push([kernelInputs.x as tf.Tensor, result as tf.Tensor]);
      return result;
    }
    const named = Object.entries(kernelInputs).filter((e): e is [string, tf.Tensor] => e[1] != null);
    const isDynamic = named.some(([, t]) => dynamic.has(t.id));
    if (isDynamic) for (const [, t] of named) if (!dynamic.has(t.id)) keepConstant(t);
    depth++;
    let result: tf.Tensor | tf.Tensor[];
    try {
      result = original.call(this, name, kernelInputs, attrs);
    } finally {
      depth--;
    }
    const outs = Array.isArray(result) ? result : [result];
    if (isDynamic) {
      record(name, named, attrs, outs);
      offload(named);
    } else for (const t of outs) keepConstant(t);
    for (const [x, y] of clones) if (dynamic.has(x.id)) record('Identity', [['x', x]], {}, [y]);
    clones = [];
    return result;
  };

  try {
    tf.tidy(() => {
      const ys = fn();
      trace.outputs = (Array.isArray(ys) ? ys : [ys]).map((y, i) => {
        if (!dynamic.has(y.id)) throw new Error(`traceKernels: result ${i} does not depend on the inputs (nothing to export)`);
        return y.id;
      });
      trace.output = trace.outputs[0];
      return undefined;
    });
  } finally {
    engine.runKernel = original;
  }
  return trace;
}
