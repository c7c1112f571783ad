/**
 * ONNX models on onnxruntime-node's native CPU execution provider (an optional dependency; its
 * CPU binaries ship in the npm package, .npmrc skips its CUDA download; no GPU). The native
 * module is loaded on first use, so importing this file costs nothing when the tfjs runtime is
 * chosen. Version 1.22 or later: earlier bindings share static state between the threads that
 * load them and corrupt the heap once data-parallel workers load their own copy (a test loads it
 * in workers repeatedly); transformers.js keeps its own nested 1.14 for CLIP.
 */
import os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import type Ort from 'onnxruntime-node';
import { currentBackend } from '../backend/index.js';
import { OnnxGraphBuilder } from './writer.js';
import type { Runtime, RuntimeChoice } from './runtime-choice.js';

type OrtModule = typeof Ort;
let ortModule: Promise<OrtModule> | undefined;
// A CommonJS package: depending on the loader (vitest, tsx) its exports come as `default` or flat.
const loadOrt = (): Promise<OrtModule> =>
  (ortModule ??= import('onnxruntime-node').then(
    (m) => (m as { default?: OrtModule }).default ?? (m as unknown as OrtModule),
    (e: Error) => {
      ortModule = undefined;
      throw new Error(`the ONNX runtime needs onnxruntime-node (an optional dependency), which did not load: ${e.message}; use the tfjs runtime instead`);
    },
  ));

/** The start-up line saying what computes the U-Net while sampling (onnxruntime here is CPU only). */
export function describeUNetRuntime(runtime: Runtime, threads = defaultOnnxThreads()): string {
  return runtime === 'onnx'
    ? `U-Net runtime: onnxruntime-node on the CPU (${threads} thread${threads === 1 ? '' : 's'}), traced from the tfjs U-Net`
    : 'U-Net runtime: tfjs (the backend above)';
}

/** Undefined when onnxruntime-node loads here, else why not (one line). */
export async function onnxRuntimeProblem(): Promise<string | undefined> {
  try {
    await loadOrt();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/** onnxruntime's domain of its blocked-layout (NCHWc) kernels: ReorderInput, Conv, ReorderOutput. */
export const NCHWC_DOMAIN = 'com.microsoft.nchwc';

export { RUNTIMES, RUNTIME_CHOICES, type Runtime, type RuntimeChoice, parseRuntimeName } from './runtime-choice.js';

/**
 * `auto`: onnxruntime-node where the tfjs backend computes on the CPU and onnxruntime-node loads
 * (faster than tfjs-wasm for sampling and training here, docs/measurements.md), tfjs otherwise (a GPU
 * backend, webgpu on any adapter, or no onnxruntime). Returns the runtime and, for `auto`, why.
 */
export async function resolveRuntime(choice: RuntimeChoice, backend: { gpu: boolean; name: string }): Promise<{ runtime: Runtime; why?: string }> {
  if (choice === 'onnx' && backend.name === 'webgpu') {
    // onnxruntime's inputs and the traced weights are read from tfjs synchronously, which the
    // webgpu backend cannot do in Node (src/backend/webgpu.ts).
    throw new Error(
      "runtime 'onnx' cannot run beside the webgpu backend (its tensors cannot be read synchronously); use --runtime tfjs, or onnx with --backend wasm",
    );
  }
  if (choice !== 'auto') return { runtime: choice };
  if (backend.gpu) return { runtime: 'tfjs', why: `auto: the ${backend.name} backend computes on the GPU` };
  // webgpu on a software adapter (llvmpipe) runs only when asked for by name, to exercise the
  // GPU code path: running the U-Net on onnxruntime instead would defeat that.
  if (backend.name === 'webgpu')
    return { runtime: 'tfjs', why: 'auto: the webgpu backend was asked for (on a software adapter: --runtime onnx is faster here)' };
  const problem = await onnxRuntimeProblem();
  if (problem) return { runtime: 'tfjs', why: `auto: onnxruntime-node is unavailable (${problem})` };
  return { runtime: 'onnx', why: `auto: faster than the ${backend.name} backend on a CPU; --runtime tfjs for tfjs` };
}

export interface OnnxSessionOptions {
  /** Intra-op threads; default: the tfjs backend's thread count, else the number of cores. */
  threads?: number;
  /** Let onnxruntime log fatal errors only (a probe that is allowed to fail). */
  quiet?: boolean;
}

export function defaultOnnxThreads(): number {
  return currentBackend()?.threads ?? Math.max(1, os.cpus().length);
}

let nchwcBlock: Promise<number> | undefined;

/**
 * The channel block of onnxruntime's NCHWc kernels on this CPU (16 with AVX-512, 8 with AVX2),
 * or 0 where this onnxruntime build has none: ReorderInput pads 4 channels (its least) up to a block.
 */
export function nchwcBlockSize(): Promise<number> {
  nchwcBlock ??= probeNchwcBlock();
  return nchwcBlock;
}

async function probeNchwcBlock(): Promise<number> {
  const g = new OnnxGraphBuilder('nchwc_block');
  g.input({ name: 'x', dataType: 'FLOAT', shape: [1, 4, 1, 1] });
  g.output({ name: 'y', dataType: 'FLOAT', shape: [1, 'C', 1, 1] });
  const y = g.opIn(NCHWC_DOMAIN, 1, 'ReorderInput', ['x']);
  g.op('Identity', [y], {}, 'y');
  let session: OnnxSession | undefined;
  try {
    session = await OnnxSession.create(g.toModel({ opsetVersion: 13 }), { threads: 1, quiet: true });
    const out = await session.runHost({ x: { data: new Float32Array(4), dims: [1, 4, 1, 1] } });
    return out.y.dims[1] > 4 ? out.y.dims[1] : 0;
  } catch {
    return 0;
  } finally {
    session?.dispose();
  }
}

/** A tensor's values on the host, as onnxruntime takes them. */
export interface HostArray {
  data: Float32Array | Int32Array;
  dims: number[];
}

export function toHostArray(t: tf.Tensor): HostArray {
  if (t.dtype !== 'float32' && t.dtype !== 'int32') throw new Error(`onnxruntime inputs must be float32 or int32, got ${t.dtype}`);
  return { data: t.dataSync() as Float32Array | Int32Array, dims: [...t.shape] };
}

/** One loaded ONNX model: float32 / int32 inputs, float32 outputs. */
export class OnnxSession {
  private session: Ort.InferenceSession | undefined;

  private constructor(
    private readonly ort: OrtModule,
    session: Ort.InferenceSession,
    readonly threads: number,
  ) {
    this.session = session;
  }

  /** `model`: the model's bytes, or the path of a model file (one whose weights lie in a file beside it). */
  static async create(model: Uint8Array | string, opts: OnnxSessionOptions = {}): Promise<OnnxSession> {
    const threads = opts.threads ?? defaultOnnxThreads();
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`onnxruntime threads must be a positive integer, got ${threads}`);
    const ort = await loadOrt();
    const options: Ort.InferenceSession.SessionOptions = {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      ...(opts.quiet ? { logSeverityLevel: 4 as const } : {}),
    };
    const session = typeof model === 'string' ? await ort.InferenceSession.create(model, options) : await ort.InferenceSession.create(model, options);
    return new OnnxSession(ort, session, threads);
  }

  /**
   * Runs the model. Inputs are tf tensors (read synchronously) or host arrays already read (to
   * reuse across calls); each output comes back as a tf tensor.
   */
  async run(feeds: Record<string, tf.Tensor | HostArray>): Promise<Record<string, tf.Tensor>> {
    const out: Record<string, tf.Tensor> = {};
    for (const [name, r] of Object.entries(await this.runHost(feeds))) out[name] = tf.tensor(r.data, r.dims, 'float32');
    return out;
  }

  /** As run, with the outputs left on the host (float32). */
  async runHost(feeds: Record<string, tf.Tensor | HostArray>): Promise<Record<string, { data: Float32Array; dims: number[] }>> {
    if (!this.session) throw new Error('OnnxSession: the session has been disposed');
    const ortFeeds: Record<string, Ort.Tensor> = {};
    for (const [name, f] of Object.entries(feeds)) {
      const { data, dims } = f instanceof tf.Tensor ? toHostArray(f) : f;
      ortFeeds[name] = data instanceof Float32Array ? new this.ort.Tensor('float32', data, dims) : new this.ort.Tensor('int32', data, dims);
    }
    const results = await this.session.run(ortFeeds);
    const out: Record<string, { data: Float32Array; dims: number[] }> = {};
    for (const [name, r] of Object.entries(results)) {
      if (r.type !== 'float32') throw new Error(`OnnxSession: output '${name}' is ${r.type}; only float32 outputs are read`);
      out[name] = { data: r.data as Float32Array, dims: r.dims as number[] };
    }
    return out;
  }

  /** Releases the native session (its weights and memory arena). */
  dispose(): void {
    const s = this.session;
    this.session = undefined;
    void s?.release();
  }
}
