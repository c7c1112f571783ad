/**
 * Training gradients computed by onnxruntime: the loss *and its backward pass* are traced from
 * tfjs (the engine runs the gradient kernels through the same `runKernel` the tracer wraps), so
 * the models keep one description (src/vae, src/unet) and tfjs' own gradient definitions; the
 * traced graph (weights and the loss's per-batch tensors as inputs, the loss and one gradient
 * per parameter as outputs) then runs on onnxruntime-node's CPU kernels, ~3x the speed of
 * tfjs-wasm for a training step here (docs/measurements.md).
 *
 * One graph per input signature (names, shapes, dtypes), traced on first use by one tfjs
 * forward + backward pass of that batch. Optimizer, clipping, EMA and checkpoints stay in tfjs:
 * this only replaces `computeGradients`.
 */
import * as tf from '@tensorflow/tfjs';
import { type ParamStore, type StagedLoss, computeGradients, computeHostGradients } from '../nn/params.js';
import type { Generator } from '../random/generator.js';
import { traceToOnnx } from './export.js';
import { type HostArray, nchwcBlockSize, OnnxSession, type OnnxSessionOptions, toHostArray } from './runtime.js';
import { traceKernels } from './trace.js';

const PARAM = 'param:';
const GRAD = 'grad:';

export interface OnnxGradientsOptions extends OnnxSessionOptions {
  /**
   * When given, a loss that cannot be exported (a tfjs kernel without an ONNX translation) is
   * computed by tfjs instead, and this is called once with the reason; else that is an error.
   */
  onFallback?: (why: string) => void;
}

type Loaded = { session: OnnxSession; params: string[] } | { fallback: string };

export class OnnxGradients<B> {
  private readonly sessions = new Map<string, Promise<Loaded>>();
  private weights: Record<string, HostArray> | undefined;
  /** Weights given by setWeights that the store does not hold yet. */
  private storeBehind: Map<string, Float32Array> | undefined;
  private closed = false;

  constructor(
    /** The trained parameters (read, never written). */
    readonly store: ParamStore,
    readonly loss: StagedLoss<B>,
    readonly options: OnnxGradientsOptions = {},
  ) {}

  /** Reads the store's current weights to the host; call after every optimizer update. */
  syncWeights(): void {
    this.weights = Object.fromEntries(this.store.entries().map(([name, v]) => [PARAM + name, toHostArray(v)]));
    this.storeBehind = undefined;
  }

  /**
   * Takes the current weights as host arrays (every parameter of the store, by name, its size)
   * instead of reading the store, e.g. from a data-parallel worker's shared buffer. The store
   * itself is brought up to date only if tfjs has to compute (a loss that did not export).
   */
  setWeights(arrays: Map<string, Float32Array>): void {
    const weights: Record<string, HostArray> = {};
    for (const [name, v] of this.store.entries()) {
      const data = arrays.get(name);
      if (!data) throw new Error(`OnnxGradients.setWeights: no values for parameter '${name}'`);
      if (data.length !== v.size)
        throw new Error(`OnnxGradients.setWeights: '${name}' has ${data.length} values, its shape [${v.shape.join(', ')}] needs ${v.size}`);
      weights[PARAM + name] = { data, dims: [...v.shape] };
    }
    this.weights = weights;
    this.storeBehind = arrays;
  }

  /** Mean loss and gradients (tf tensors the caller owns, by parameter name) of one batch. */
  async gradients(batch: B, rng: Generator): Promise<{ loss: number; grads: Map<string, tf.Tensor> }> {
    const r = await this.hostGradients(batch, rng);
    return { loss: r.loss, grads: new Map([...r.grads].map(([name, g]) => [name, tf.tensor(g, this.store.get(name).shape, 'float32')])) };
  }

  /** As gradients, with the gradients as host arrays (by parameter name). */
  async hostGradients(batch: B, rng: Generator): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
    if (this.closed) throw new Error('OnnxGradients: closed');
    const inputs = this.loss.inputs(batch, rng);
    try {
      const key = Object.entries(inputs)
        .map(([k, t]) => `${k}:${t.dtype}[${t.shape.join(',')}]`)
        .sort()
        .join(' ');
      let entry = this.sessions.get(key);
      if (!entry) {
        entry = this.load(inputs);
        this.sessions.set(key, entry);
        entry.catch(() => this.sessions.delete(key));
      }
      const loaded = await entry;
      if ('fallback' in loaded) {
        if (this.storeBehind) {
          for (const [name, v] of this.store.entries()) tf.tidy(() => v.assign(tf.tensor(this.storeBehind!.get(name)!, v.shape, 'float32')));
          this.storeBehind = undefined;
        }
        return computeHostGradients(this.store, () => this.loss.graph(inputs));
      }
      const { session, params } = loaded;
      if (!this.weights) this.syncWeights();
      const out = await session.runHost({ ...this.weights!, ...inputs });
      return { loss: out.loss.data[0], grads: new Map(params.map((name) => [name, out[GRAD + name].data])) };
    } finally {
      tf.dispose(Object.values(inputs));
    }
  }

  /** Traces loss + gradients for this input signature and loads the graph. */
  private async load(inputs: Record<string, tf.Tensor>): Promise<Loaded> {
    for (const name of Object.keys(inputs)) {
      if (name.startsWith(PARAM) || name.startsWith(GRAD) || name === 'loss') throw new Error(`OnnxGradients: a loss input may not be named '${name}'`);
    }
    const nchwcBlock = await nchwcBlockSize();
    const traced: Record<string, tf.Tensor> = { ...inputs };
    for (const [name, v] of this.store.entries()) traced[PARAM + name] = v;
    let params: string[] = [];
    const trace = traceKernels(() => {
      const r = computeGradients(this.store, () => this.loss.graph(inputs));
      params = [...r.grads.keys()];
      return [r.loss, ...r.grads.values()];
    }, traced);
    let model: Uint8Array;
    try {
      model = traceToOnnx(trace, {
        name: 'loss_and_gradients',
        outputNames: ['loss', ...params.map((p) => GRAD + p)],
        docString: 'a training loss and its gradients, traced from tfjs',
        nchwcBlock,
      });
    } catch (e) {
      if (!this.options.onFallback) throw e;
      const why = (e as Error).message;
      this.options.onFallback(why);
      return { fallback: why };
    }
    return { session: await OnnxSession.create(model, this.options), params };
  }

  /** Drops the sessions and the host copy of the weights. */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.sessions.values()];
    this.sessions.clear();
    this.weights = undefined;
    this.storeBehind = undefined;
    for (const s of all) {
      const loaded = await s.catch(() => undefined);
      if (loaded && 'session' in loaded) loaded.session.dispose();
    }
  }
}

/** The log line for a loss computed by tfjs because it did not export (`who`: which shard). */
export function fallbackLine(why: string, who?: string): string {
  return `gradients${who ? ` (${who})` : ''}: tfjs instead of onnxruntime: ${why.split('; supported:')[0]}`;
}
