/**
 * The two training stages of a latent diffusion pipeline (Rombach et al. 2022, sec. 3):
 *   1. the KL autoencoder on images (reconstruction + beta * KL), then its latent scaling factor;
 *   2. the conditional U-Net on the frozen VAE's latents with the DDPM loss (Ho et al. 2020,
 *      Algorithm 1), with conditioning dropout so classifier-free guidance works
 *      (Ho & Salimans 2022, sec. 3.2) — and, for class labels, the label table trained alongside.
 *
 * Run folder layout:
 *   <run>/config.json           the resolved training config
 *   <run>/vae-stage/            trainer checkpoints + loss.jsonl of stage 1
 *   <run>/vae/                  the trained VAE component (with its measured scalingFactor)
 *   <run>/unet-stage/           trainer checkpoints + loss.jsonl + samples/ of stage 2
 *   <run>/cache/                latents and text embeddings of the frozen encoders
 *   <run>/pipeline/             the pipeline folder txt2img loads (EMA weights), updated at checkpoints
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { recoverDir } from '../checkpoint/files.js';
import { EncoderCache, fingerprint, hashArrays } from '../data/cache.js';
import { type ImageSet, type IndexBatch, IndexBatcher, gatherRows, imageBatch } from '../data/in-memory.js';
import { tensorToBatch, writePng } from '../image/convert.js';
import { makeGrid } from '../image/grid.js';
import { type NamedArray, ParamStore, type StagedLoss, stagedLossFn } from '../nn/params.js';
import type { EMA } from '../optim/ema.js';
import type { LrSchedule } from '../optim/lr.js';
import { Generator } from '../random/generator.js';
import { type LossWeighting, type SchedulerConfig, createScheduler, sampleTimesteps, trainingTargets, weightedMse } from '../schedulers/index.js';
import type { ClipTextEncoder } from '../text/clip.js';
import { LabelEncoder, type LabelEncoderConfig } from '../text/label.js';
import type { ConditionEncoder } from '../text/types.js';
import { UNet2DCondition } from '../unet/unet2d-condition.js';
import type { RuntimeChoice } from '../onnx/runtime.js';
import type { UNetConfig } from '../unet/config.js';
import { AutoencoderKL, measureScalingFactor } from '../vae/autoencoder-kl.js';
import type { VaeConfig } from '../vae/config.js';
import type { Replica, ReplicaSpec } from './data-parallel.js';
import { Txt2ImgPipeline } from '../pipeline/pipeline.js';
import { captionVocabulary } from '../pipeline/vocabulary.js';
import { type StepLog, type TrainResult, gradientSetup, train } from './trainer.js';

export interface StageTraining {
  steps: number;
  batchSize: number;
  lr: number;
  lrSchedule: LrSchedule['kind'];
  /** Linear warm-up: a number of steps (an integer >= 1, or 0), or a fraction of `steps` in (0, 1). */
  warmupSteps: number;
  weightDecay: number;
  /** 0 = off */
  clipGradNorm: number;
  /** 0 = off */
  emaDecay: number;
  accumulate: number;
  checkpointEvery: number;
  /**
   * Data-parallel shards per micro-batch (see data-parallel.ts; 1 = off). Default: one per core
   * with the onnx runtime (each shard onnxruntime on 1 thread), 1 with tfjs.
   */
  workers?: number;
  /** What computes the gradients (default auto: onnxruntime on a CPU backend where it loads). */
  runtime?: RuntimeChoice;
}

export interface StageCommon {
  runDir: string;
  seed: number;
  resume: boolean;
  onStep?: (s: StepLog) => void;
  log?: (line: string) => void;
  /** Stop after this many optimizer steps of this call (tests simulate an interruption). */
  stopAfter?: number;
}

function lrSchedule(t: StageTraining): LrSchedule {
  return { kind: t.lrSchedule, base: t.lr, warmupSteps: warmupStepsOf(t), totalSteps: t.steps };
}

/** The warm-up in steps: a fraction below 1 scales with the run, so a shortened run still warms up briefly. */
export function warmupStepsOf(t: Pick<StageTraining, 'warmupSteps' | 'steps'>): number {
  return t.warmupSteps > 0 && t.warmupSteps < 1 ? Math.max(1, Math.round(t.warmupSteps * t.steps)) : t.warmupSteps;
}

/** The trainer settings of a stage; `key` names its config section (vaeTraining, unetTraining). */
function trainerSettings(t: StageTraining, key: 'vaeTraining' | 'unetTraining') {
  return {
    nonFiniteAdvice: `Lower the learning rate (now ${t.lr}: --set ${key}.lr=${t.lr / 4})${t.clipGradNorm ? '' : ` or clip the gradient norm (--set ${key}.clipGradNorm=1)`}, then --resume.`,
    totalSteps: t.steps,
    lr: lrSchedule(t),
    adamw: { weightDecay: t.weightDecay },
    accumulate: t.accumulate,
    clipGradNorm: t.clipGradNorm || undefined,
    emaDecay: t.emaDecay || undefined,
    checkpointEvery: t.checkpointEvery,
  };
}

/** Runs `fn` with the EMA weights swapped into `store`, restoring the live weights afterwards. */
export async function withEmaWeights<T>(store: ParamStore, ema: EMA | undefined, fn: () => Promise<T>): Promise<T> {
  if (!ema) return fn();
  const live = ParamStore.copyOf(store);
  ema.copyTo(store);
  try {
    return await fn();
  } finally {
    store.copyFrom(live);
    live.dispose();
  }
}

function throwIfStopped(r: TrainResult): void {
  if (r.stopped === 'non-finite') throw new Error(r.message);
}

// ----------------------------------------------------------------------------- stage 1: VAE

/** What the VAE stage's loss needs, serialisable: a data-parallel worker rebuilds it from this. */
export interface VaeShardTask {
  vae: VaeConfig;
  /** The training images [N, H, W, C]. */
  data: Pick<ImageSet, 'images' | 'shape'>;
}

/** Reconstruction + beta * KL of a batch of training images (indices and flips). */
export function vaeStagedLoss(task: VaeShardTask, vae: AutoencoderKL): StagedLoss<IndexBatch> {
  return {
    inputs: (b, rng) => {
      const images = imageBatch(task.data, b); // [B, H, W, C]
      return { images, eps: rng.randn(vae.latentShape(images.shape)) }; // eps: [B, h, w, zc]
    },
    graph: (i) => vae.lossFromNoise(i.images as tf.Tensor4D, i.eps as tf.Tensor4D).loss,
  };
}

export function vaeShardLoss(task: VaeShardTask, vae: AutoencoderKL): (b: IndexBatch, rng: Generator) => tf.Scalar {
  return stagedLossFn(vaeStagedLoss(task, vae));
}

export function vaeReplica(task: VaeShardTask): Replica<IndexBatch> {
  const vae = new AutoencoderKL(task.vae, Generator.forLoadedWeights()); // the weights come from the main thread
  const staged = vaeStagedLoss(task, vae);
  return { store: vae.store, loss: stagedLossFn(staged), staged, dispose: () => vae.dispose() };
}

/** How a data-parallel worker builds the VAE stage's replica (vaeReplica of this module). */
export function vaeReplicaSpec(task: VaeShardTask): ReplicaSpec<VaeShardTask> {
  return { module: import.meta.url, exportName: 'vaeReplica', args: task, kind: 'vae' };
}

export interface VaeStageOptions extends StageCommon {
  data: ImageSet;
  vae: VaeConfig;
  training: StageTraining;
  flip: boolean;
}

/** Trains the VAE, measures its latent scaling factor, saves `<run>/vae`. Returns the trained VAE. */
export async function trainVaeStage(o: VaeStageOptions): Promise<AutoencoderKL | undefined> {
  if (o.data.shape[3] !== o.vae.imageChannels) {
    throw new Error(`the data has ${o.data.shape[3]} channel(s), the VAE config imageChannels is ${o.vae.imageChannels}`);
  }
  const vae = new AutoencoderKL(o.vae, new Generator(o.seed));
  const batcher = new IndexBatcher(o.data, o.training.batchSize, o.seed + 1, o.flip);
  const stageDir = path.join(o.runDir, 'vae-stage');
  const task: VaeShardTask = { vae: vae.config, data: { images: o.data.images, shape: o.data.shape } };
  const staged = vaeStagedLoss(task, vae);
  let result: TrainResult;
  try {
    result = await train<IndexBatch>({
      runDir: stageDir,
      store: vae.store,
      data: { next: () => batcher.next(), position: () => batcher.position(), restore: (p) => batcher.restore(p) },
      loss: stagedLossFn(staged),
      ...(await gradientSetup('vae', o.training, staged, vaeReplicaSpec(task), o.log ?? ((l) => console.error(l)))),
      log: o.log,
      seed: o.seed + 2,
      resume: o.resume,
      onStep: o.onStep,
      stopAfter: o.stopAfter,
      ...trainerSettings(o.training, 'vaeTraining'),
    });
  } catch (e) {
    vae.dispose();
    throw e;
  }
  try {
    throwIfStopped(result);
    if (result.stopped === 'stopAfter') return undefined;
    if (result.ema) result.ema.copyTo(vae.store); // the EMA weights are the final VAE
    // Scaling factor (SD's 0.18215 idea): 1 / std of the latents of up to 2048 training images.
    const n = Math.min(o.data.shape[0], 2048);
    const idx = Array.from({ length: n }, (_, i) => i);
    const batches = function* () {
      for (let i = 0; i < n; i += 64) yield gatherRows(o.data.images, o.data.shape, idx.slice(i, i + 64)) as tf.Tensor4D;
    };
    vae.setScalingFactor(await measureScalingFactor(vae, batches(), { disposeBatches: true }));
    await vae.save(path.join(o.runDir, 'vae'));
    (o.log ?? console.error)(`vae: saved ${path.join(o.runDir, 'vae')} (scalingFactor ${vae.config.scalingFactor.toFixed(5)})`);
    return vae;
  } catch (e) {
    vae.dispose();
    throw e;
  } finally {
    result.ema?.dispose();
    result.optimizer.dispose();
  }
}

// ----------------------------------------------------------------------------- stage 2: U-Net

export interface UnetStageOptions extends StageCommon {
  data: ImageSet;
  vae: AutoencoderKL;
  /** A CLIP text encoder (frozen), or a label encoder (trained with the U-Net). */
  encoder: ConditionEncoder;
  unet: UNetConfig;
  scheduler: SchedulerConfig;
  training: StageTraining;
  /** Probability of replacing the condition by the unconditional one. */
  conditioningDropout: number;
  lossWeighting: LossWeighting;
  /** Validation prompts (clip) or labels (label) rendered every `sampleEvery` steps. */
  validation?: { inputs: string[] | number[]; every: number; steps: number; guidanceScale: number };
  /** Extra notes for model_index.json (e.g. "text encoder not pretrained"). */
  notes?: string[];
}

/** What the U-Net stage's loss needs, serialisable: a data-parallel worker rebuilds it from this. */
export interface UnetShardTask {
  unet: UNetConfig;
  /** Label conditioning: the label table trained with the U-Net. */
  labelEncoder?: LabelEncoderConfig;
  scheduler: SchedulerConfig;
  lossWeighting: LossWeighting;
  conditioningDropout: number;
  /** VAE latents of every image [N, h, w, c], times scalingFactor. */
  latents: NamedArray;
  /** CLIP conditioning: embeddings [U, T, D] of the distinct captions; the unconditional context [T, D]. */
  captions?: { table: NamedArray; uncond: Float32Array };
}

/** Dataset rows and, per sample, its class label (label conditioning) or caption embedding row (CLIP). */
export interface UnetShardBatch {
  indices: number[];
  labels?: number[];
  rows?: number[];
}

/** The U-Net and, for label conditioning, the label table: trained together. */
function unetTrainedStore(unet: UNet2DCondition, labelEncoder: LabelEncoder | undefined): ParamStore {
  return labelEncoder ? ParamStore.union({ unet: unet.store, label_encoder: labelEncoder.params }) : unet.store;
}

/** The DDPM loss of a batch of latents, with conditioning dropout. */
export function unetStagedLoss(task: UnetShardTask, unet: UNet2DCondition, labelEncoder: LabelEncoder | undefined): StagedLoss<UnetShardBatch> {
  const scheduler = createScheduler({ ...task.scheduler, type: 'ddpm' });
  const T = scheduler.numTrainTimesteps;
  const { latents, captions } = task;
  return {
    inputs: (b, rng) =>
      tf.tidy(() => {
        const B = b.indices.length;
        // Draw every random number first, in a fixed order: timesteps, noise, dropout.
        const ts = sampleTimesteps(rng, B, T);
        const noise = rng.randn([B, ...latents.shape.slice(1)]);
        const drop = Array.from({ length: B }, () => rng.uniform() < task.conditioningDropout);
        const lat = gatherRows(latents.data, latents.shape, b.indices); // [B, h, w, c]
        const { noisy, target, weights } = trainingTargets(scheduler, lat, noise, ts, task.lossWeighting);
        const out: Record<string, tf.Tensor> = { noisy, target, weights, timesteps: tf.tensor1d(Array.from(ts), 'float32') }; // weights, timesteps: [B]
        if (labelEncoder) {
          out.labels = tf.tensor1d(
            b.labels!.map((l, i) => (drop[i] ? labelEncoder.nullClass : l)),
            'int32',
          );
        } else {
          const [, tl, d] = captions!.table.shape;
          const keep = tf.tensor3d(
            drop.map((x) => (x ? 0 : 1)),
            [B, 1, 1],
          );
          const uncond = tf.tensor3d(captions!.uncond, [1, tl, d]);
          const cond = gatherRows(captions!.table.data, captions!.table.shape, b.rows!); // [B, T, D]
          out.context = tf.add(tf.mul(cond, keep), tf.mul(uncond, tf.sub(1, keep)));
        }
        return out;
      }),
    graph: (i) => {
      // The label table trains with the U-Net, so its lookup is part of the graph.
      const context = labelEncoder ? labelEncoder.embed(i.labels as tf.Tensor1D) : (i.context as tf.Tensor3D);
      const pred = unet.apply(i.noisy as tf.Tensor4D, i.timesteps as tf.Tensor1D, context);
      return weightedMse(pred, i.target, i.weights as tf.Tensor1D);
    },
  };
}

export function unetReplica(task: UnetShardTask): Replica<UnetShardBatch> {
  // The weights come from the main thread.
  const unet = new UNet2DCondition(task.unet, Generator.forLoadedWeights());
  const labelEncoder = task.labelEncoder ? new LabelEncoder(task.labelEncoder, Generator.forLoadedWeights()) : undefined;
  const store = unetTrainedStore(unet, labelEncoder);
  const staged = unetStagedLoss(task, unet, labelEncoder);
  return {
    store,
    loss: stagedLossFn(staged),
    staged,
    dispose: () => {
      if (store !== unet.store) store.dispose(); // the union view owns nothing
      unet.dispose();
      labelEncoder?.dispose();
    },
  };
}

/** How a data-parallel worker builds the U-Net stage's replica (unetReplica of this module). */
export function unetReplicaSpec(task: UnetShardTask): ReplicaSpec<UnetShardTask> {
  return { module: import.meta.url, exportName: 'unetReplica', args: task, kind: 'unet' };
}

/** VAE latents (posterior means, times scalingFactor) of every image, cached under <run>/cache. */
async function encodeLatents(o: UnetStageOptions, cache: EncoderCache): Promise<NamedArray> {
  const vaeHash = hashArrays(await o.vae.store.toArrays());
  const fp = fingerprint(o.data.fingerprint, vaeHash, o.vae.config);
  const { arrays, hit } = await cache.getOrCompute('latents', fp, async () => {
    const [n] = o.data.shape;
    const chunks: Float32Array[] = [];
    let shape: number[] = [];
    for (let i = 0; i < n; i += 64) {
      const idx = Array.from({ length: Math.min(64, n - i) }, (_, k) => i + k);
      const x = gatherRows(o.data.images, o.data.shape, idx) as tf.Tensor4D;
      const z = o.vae.encodeLatents(x);
      shape = z.shape.slice(1);
      chunks.push((await z.data()) as Float32Array);
      tf.dispose([x, z]);
    }
    const data = new Float32Array(chunks.reduce((a, c) => a + c.length, 0));
    let off = 0;
    for (const c of chunks) {
      data.set(c, off);
      off += c.length;
    }
    return new Map([['latents', { shape: [n, ...shape], data }]]);
  });
  (o.log ?? console.error)(`latents: ${hit ? 'reused cache' : 'encoded'} (${o.data.shape[0]} images)`);
  return arrays.get('latents')!;
}

/** Text embeddings of every distinct caption, cached; returns [U, T, D] plus caption -> row. */
async function encodeCaptions(o: UnetStageOptions, enc: ClipTextEncoder, cache: EncoderCache): Promise<{ table: NamedArray; row: Map<string, number> }> {
  const unique = [...new Set(o.data.captions!.flat())].sort();
  const row = new Map(unique.map((c, i) => [c, i]));
  const fp = fingerprint(unique, enc.config, enc.location);
  const { arrays, hit } = await cache.getOrCompute('text-embeddings', fp, async () => {
    const parts: Float32Array[] = [];
    let shape: number[] = [];
    for (let i = 0; i < unique.length; i += 64) {
      const c = await enc.encode(unique.slice(i, i + 64));
      shape = c.context.shape.slice(1);
      parts.push((await c.context.data()) as Float32Array);
      c.context.dispose();
      c.mask?.dispose();
      enc.clearCache();
    }
    const data = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    let off = 0;
    for (const p of parts) {
      data.set(p, off);
      off += p.length;
    }
    return new Map([['embeddings', { shape: [unique.length, ...shape], data }]]);
  });
  (o.log ?? console.error)(`text embeddings: ${hit ? 'reused cache' : 'encoded'} (${unique.length} distinct captions)`);
  return { table: arrays.get('embeddings')!, row };
}

/** The U-Net steps of the pipeline folder's export (undefined when there is none, or it is unreadable). */
function exportedSteps(pipelineDir: string): number | undefined {
  try {
    return (JSON.parse(readFileSync(path.join(pipelineDir, 'model_index.json'), 'utf8')) as { trainedSteps?: number }).trainedSteps;
  } catch {
    return undefined;
  }
}

/** Trains the U-Net (and a label table); writes `<run>/pipeline`. Returns the final pipeline folder. */
export async function trainUnetStage(o: UnetStageOptions): Promise<string | undefined> {
  const log = o.log ?? ((l: string) => console.error(l));
  if (!(o.conditioningDropout >= 0 && o.conditioningDropout <= 1)) {
    throw new Error(`conditioning dropout must be in [0, 1], got ${o.conditioningDropout}`);
  }
  const isLabel = o.encoder instanceof LabelEncoder;
  if (isLabel && !o.data.labels) throw new Error('a label-conditioned model needs a dataset with class labels (e.g. --data mnist)');
  if (!isLabel && !o.data.captions) throw new Error('a text-conditioned model needs a captioned dataset');

  const cache = new EncoderCache(path.join(o.runDir, 'cache'));
  const latents = await encodeLatents(o, cache);
  const captions = isLabel ? undefined : await encodeCaptions(o, o.encoder as ClipTextEncoder, cache);
  const uncondRow = isLabel
    ? undefined
    : await (async () => {
        const u = await o.encoder.unconditional(1);
        const d = (await u.context.data()) as Float32Array;
        u.context.dispose();
        u.mask?.dispose();
        return d;
      })();

  const unet = new UNet2DCondition(o.unet, new Generator(o.seed + 3));
  const labelEncoder = isLabel ? (o.encoder as LabelEncoder) : undefined;
  const store = unetTrainedStore(unet, labelEncoder);
  const task: UnetShardTask = {
    unet: unet.config,
    labelEncoder: labelEncoder?.config,
    scheduler: o.scheduler,
    lossWeighting: o.lossWeighting,
    conditioningDropout: o.conditioningDropout,
    latents,
    captions: captions && { table: captions.table, uncond: uncondRow! },
  };
  const staged = unetStagedLoss(task, unet, labelEncoder);
  const batcher = new IndexBatcher(o.data, o.training.batchSize, o.seed + 4, false);
  const stageDir = path.join(o.runDir, 'unet-stage');
  const pipelineDir = path.join(o.runDir, 'pipeline');
  recoverDir(pipelineDir);

  const trainingWords = o.data.captions && !isLabel ? new Set(captionVocabulary(o.data.captions)) : undefined;
  const info = {
    conditioning: (isLabel ? 'label' : 'clip') as 'label' | 'clip',
    conditioningDropout: o.conditioningDropout,
    imageSize: o.data.shape[1],
    notes: o.notes,
  };

  const exportPipeline = async (step: number, ema: EMA | undefined) => {
    await withEmaWeights(store, ema, async () => {
      const p = new Txt2ImgPipeline(o.vae, unet, o.encoder, o.scheduler, { ...info, trainedSteps: step });
      p.trainingWords = trainingWords;
      await p.save(pipelineDir);
    });
  };

  const renderSamples = async (step: number, ema: EMA | undefined) => {
    if (!o.validation) return;
    await withEmaWeights(store, ema, async () => {
      const p = new Txt2ImgPipeline(o.vae, unet, o.encoder, o.scheduler, info);
      const images = await p.generate({
        inputs: o.validation!.inputs,
        guidanceScale: o.validation!.guidanceScale,
        steps: o.validation!.steps,
        sampler: 'ddim',
        seed: 0,
        warn: () => {},
      });
      const dir = path.join(stageDir, 'samples');
      mkdirSync(dir, { recursive: true });
      const file = path.join(dir, `step-${String(step).padStart(6, '0')}.png`);
      await writePng(file, makeGrid(await tensorToBatch(images)));
      images.dispose();
      log(`samples: ${file}`);
    });
  };

  let result: TrainResult;
  try {
    result = await train<UnetShardBatch>({
      runDir: stageDir,
      store,
      data: {
        next: () => {
          const { indices, captionChoice } = batcher.next();
          if (isLabel) return { indices, labels: indices.map((i) => o.data.labels![i]) };
          return { indices, rows: indices.map((i, k) => captions!.row.get(o.data.captions![i][captionChoice[k]])!) };
        },
        position: () => batcher.position(),
        restore: (p) => batcher.restore(p),
      },
      loss: stagedLossFn(staged),
      ...(await gradientSetup('unet', o.training, staged, unetReplicaSpec(task), log)),
      log,
      seed: o.seed + 5,
      resume: o.resume,
      onStep: o.onStep,
      stopAfter: o.stopAfter,
      onCheckpoint: (c) => exportPipeline(c.step, c.ema),
      onSample: o.validation ? renderSamples : undefined,
      sampleEvery: o.validation?.every,
      ...trainerSettings(o.training, 'unetTraining'),
    });
    try {
      // The pipeline must be the final checkpoint's: a run killed during its last export (or a
      // resume of a finished run) left an older one, which is written again from the checkpoint.
      if (result.stopped === 'done' && exportedSteps(pipelineDir) !== result.step) {
        log(`pipeline: ${pipelineDir} was of step ${exportedSteps(pipelineDir) ?? 'none'}, the last checkpoint is step ${result.step}: exporting it again`);
        await exportPipeline(result.step, result.ema);
      }
    } finally {
      result.ema?.dispose();
      result.optimizer.dispose();
    }
  } finally {
    if (store !== unet.store) store.dispose(); // the union view owns nothing
    unet.dispose();
  }
  throwIfStopped(result);
  if (result.stopped === 'stopAfter') return undefined;
  if (!existsSync(path.join(pipelineDir, 'model_index.json'))) throw new Error(`internal: ${pipelineDir} was not written`);
  log(`pipeline: saved ${pipelineDir}`);
  return pipelineDir;
}
