/**
 * OnnxUNet: a UNet2DCondition's forward pass run by onnxruntime. The graph is traced from the
 * tfjs forward pass (src/unet stays the only description of the architecture) with the current
 * weights, once per input shape (batch, latent size, context length, mask or not), and cached.
 *
 * It takes the tfjs U-Net's own ContextCache: the cross-attention K/V (computed once by tfjs) are
 * graph inputs, read to the host once per cache, so no step recomputes them (that projection
 * is a large part of a forward at long contexts).
 *
 * Past EXTERNAL_WEIGHTS_BYTES of weights (protobuf caps a model at 2 GB; SD-1.5's U-Net holds 3.4 GB)
 * the model is written to a temporary folder with its weights in a file beside it, loaded from
 * there by onnxruntime, and the folder removed.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { UNetConfig } from '../unet/config.js';
import type { ContextCache, UNet2DCondition } from '../unet/unet2d-condition.js';
import { traceToOnnx } from './export.js';
import { type HostArray, OnnxSession, type OnnxSessionOptions, toHostArray } from './runtime.js';
import { moveTensorData, traceKernels } from './trace.js';

/** Weight bytes from which the traced graph keeps its weights in a side file (see the file comment). */
export const EXTERNAL_WEIGHTS_BYTES = 1 << 30;

export class OnnxUNet {
  private readonly sessions = new Map<string, Promise<OnnxSession>>();
  /** Host copies of each cache's K/V and mask, read at its first use. */
  private readonly contextFeeds = new WeakMap<ContextCache, Record<string, HostArray>>();

  constructor(
    /** The tfjs U-Net traced; its weights are read when a shape is first seen (not owned). */
    readonly unet: UNet2DCondition,
    readonly options: OnnxSessionOptions = {},
    /** Weight bytes from which the graph's weights go to a side file (default EXTERNAL_WEIGHTS_BYTES). */
    readonly externalWeightsBytes = EXTERNAL_WEIGHTS_BYTES,
  ) {}

  get config(): UNetConfig {
    return this.unet.config;
  }

  /** The tfjs U-Net's ContextCache (K/V by tfjs, once); the caller disposes it. */
  precomputeContext(context: tf.Tensor3D, mask?: tf.Tensor2D): ContextCache {
    return this.unet.precomputeContext(context, mask);
  }

  /**
   * Predicts the noise of sample [B, h, w, C] at timesteps [B] or [1]; returns eps [B, h, w, C].
   * The context is a ContextCache (K/V precomputed: what sampling runs) or a raw context
   * [B, T, D] (the K/V projections then run in the graph, as a plain forward pass does).
   * The first call for a shape exports the graph (one tfjs forward pass) and loads it.
   */
  async apply(sample: tf.Tensor4D, timesteps: tf.Tensor1D, context: ContextCache | tf.Tensor3D): Promise<tf.Tensor4D> {
    const [b, h, w] = sample.shape;
    const raw = context instanceof tf.Tensor;
    if (raw) {
      if (context.rank !== 3 || context.shape[0] !== b || context.shape[2] !== this.config.contextDim) {
        throw new Error(`OnnxUNet: context must be [${b}, T, ${this.config.contextDim}], got [${context.shape.join(', ')}]`);
      }
    } else {
      if (context.owner !== this.unet) throw new Error('OnnxUNet: the ContextCache was made by another U-Net');
      if (context.isDisposed) throw new Error('OnnxUNet: the ContextCache has been disposed');
      if (context.batch !== b) throw new Error(`OnnxUNet: the ContextCache has batch ${context.batch}, the sample has ${b}`);
    }
    if (timesteps.rank !== 1 || (timesteps.shape[0] !== b && timesteps.shape[0] !== 1)) {
      throw new Error(`OnnxUNet: timesteps must be [${b}] or [1], got [${timesteps.shape.join(', ')}]`);
    }
    const x = tf.cast(sample, 'float32'); // [B, h, w, C]
    const t = tf.tidy(() => tf.broadcastTo(tf.cast(timesteps, 'float32'), [b])) as tf.Tensor1D; // [B]
    const c = raw ? tf.cast(context, 'float32') : undefined; // [B, T, D]
    try {
      const key = raw ? `${b}x${h}x${w}xraw${context.shape[1]}` : `${b}x${h}x${w}x${context.length}${context.mask ? 'm' : ''}`;
      let session = this.sessions.get(key);
      if (!session) {
        session = this.load(x, t, c ?? (context as ContextCache));
        this.sessions.set(key, session);
        session.catch(() => this.sessions.delete(key));
      }
      let ctx: Record<string, HostArray | tf.Tensor> | undefined = c ? { context: c } : this.contextFeeds.get(context as ContextCache);
      if (!ctx) {
        const feeds = Object.fromEntries(Object.entries(contextInputs(context as ContextCache)).map(([k, v]) => [k, toHostArray(v)]));
        this.contextFeeds.set(context as ContextCache, feeds);
        ctx = feeds;
      }
      const out = await (await session).run({ sample: x, timesteps: t, ...ctx });
      return out.eps as tf.Tensor4D;
    } finally {
      x.dispose();
      t.dispose();
      c?.dispose();
    }
  }

  private load(sample: tf.Tensor4D, timesteps: tf.Tensor1D, context: ContextCache | tf.Tensor3D): Promise<OnnxSession> {
    const inputs = context instanceof tf.Tensor ? { context } : contextInputs(context);
    const big = 4 * this.unet.store.numParams() >= this.externalWeightsBytes;
    // A big U-Net's weights wait in tfjs' plain-JavaScript 'cpu' backend and visit the active
    // backend one at a time while tracing (TraceOptions.offloadTo): the wasm heap stops at 4 GB.
    const offloadTo = big && tf.getBackend() !== 'cpu' ? tf.engine().findBackend('cpu') : undefined;
    if (offloadTo) for (const [, v] of this.unet.store.entries()) moveTensorData(offloadTo, v);
    const trace = traceKernels(() => this.unet.apply(sample, timesteps, context), { sample, timesteps, ...inputs }, offloadTo ? { offloadTo } : {});
    const exportOptions = { name: 'unet', outputName: 'eps', docString: 'UNet2DCondition traced from tfjs' };
    if (!big) return OnnxSession.create(traceToOnnx(trace, exportOptions), this.options);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'txt2img-unet-'));
    const file = path.join(dir, 'unet.onnx');
    try {
      writeFileSync(file, traceToOnnx(trace, { ...exportOptions, externalDataFile: path.join(dir, 'unet.weights') }));
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    // onnxruntime has read (or mapped) the weights once the session exists; unlinking a mapped file is safe.
    const session = OnnxSession.create(file, this.options);
    return session.finally(() => rmSync(dir, { recursive: true, force: true }));
  }

  /** Drops the loaded sessions (the tfjs U-Net stays with its owner). */
  dispose(): void {
    for (const s of this.sessions.values())
      s.then(
        (x) => x.dispose(),
        () => undefined,
      );
    this.sessions.clear();
  }
}

/** The graph inputs a ContextCache supplies: per transformer `<name>.k` / `<name>.v` [B*heads, T, d], and `mask` [B, T]. */
function contextInputs(cache: ContextCache): Record<string, tf.Tensor> {
  const inputs: Record<string, tf.Tensor> = {};
  for (const [name, { k, v }] of cache.kv) {
    inputs[`${name}.k`] = k;
    inputs[`${name}.v`] = v;
  }
  if (cache.mask) inputs.mask = cache.mask;
  return inputs;
}
