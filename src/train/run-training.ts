/**
 * A whole training run from a TrainConfig: data, conditioning encoder, stage 1 (VAE) and
 * stage 2 (U-Net), with progress display and exact resume (`resume: true`). The run folder is
 * locked for the run (./run-folder.ts) and nothing in it is written before the inputs are checked.
 */
import { existsSync, mkdirSync, readdirSync, rmdirSync } from 'node:fs';
import path from 'node:path';
import { writeJsonAtomic } from '../checkpoint/files.js';
import { type ImageSet, loadFolderSet, mnistSet } from '../data/in-memory.js';
import { ProgressBar, trainingProgress } from '../image/progress.js';
import { Generator } from '../random/generator.js';
import { parseLossWeighting, parseSchedulerConfig } from '../schedulers/index.js';
import { type ClipLoadOptions, ClipTextEncoder, loadClipTextEncoder } from '../text/clip.js';
import { LabelEncoder } from '../text/label.js';
import type { ConditionEncoder } from '../text/types.js';
import { parseUNetConfig } from '../unet/config.js';
import { AutoencoderKL } from '../vae/autoencoder-kl.js';
import { parseVaeConfig } from '../vae/config.js';
import { type StageTraining, trainUnetStage, trainVaeStage, warmupStepsOf } from './stages.js';
import type { TrainConfig } from './train-config.js';
import type { StepLog } from './trainer.js';
import { RunLock, checkRunFolder, clearPreviousRun, removePartials } from './run-folder.js';
import { readJson } from '../checkpoint/files.js';

export const STAGES = ['vae', 'unet', 'all'] as const;
export type Stage = (typeof STAGES)[number];

export interface RunTrainingOptions {
  config: TrainConfig;
  runDir: string;
  stage: Stage;
  resume: boolean;
  /** Replace a previous run in `runDir` (without it, one is refused unless `resume`). */
  overwrite?: boolean;
  clip?: ClipLoadOptions;
  quiet?: boolean;
  log?: (line: string) => void;
  /** Tests: stop each stage after this many steps of this call. */
  stopAfter?: number;
}

export async function loadTrainingData(c: TrainConfig, log: (l: string) => void): Promise<ImageSet> {
  if (c.data.source === 'mnist') return mnistSet('train', c.data.limit);
  const d = c.data;
  if (!existsSync(d.path)) throw new Error(`data folder ${d.path} does not exist`);
  log(`data: loading ${d.path} at ${d.imageSize}x${d.imageSize}, ${d.channels} channel(s)`);
  return loadFolderSet(d.path, { size: d.imageSize, channels: d.channels, log });
}

function progress(total: number, label: string, quiet?: boolean): { onStep: (s: StepLog) => void; bar: ProgressBar } {
  const bar = new ProgressBar({ total, label, silent: quiet });
  return { bar, onStep: (s) => trainingProgress(bar, s) };
}

/**
 * What model_index.json says about how the model was made, written from the run itself (what
 * it was trained on, whether its text encoder means anything), then the config's own notes.
 */
function runNotes(c: TrainConfig, data: ImageSet, encoder: ConditionEncoder): string[] {
  const notes = [`trained ${c.unetTraining.steps} U-Net steps on ${data.source}`];
  if (encoder instanceof ClipTextEncoder && encoder.notPretrained) {
    notes.push('text encoder: a tiny CLIP-architecture model with random weights, NOT pretrained: prompts work only in the words of the training captions');
  }
  return [...notes, ...(c.notes ?? [])];
}

/** Top-level fields of two configs that differ (for the resume warning). */
function changedFields(a: unknown, b: unknown): string[] {
  const x = (a ?? {}) as Record<string, unknown>;
  const y = (b ?? {}) as Record<string, unknown>;
  return [...new Set([...Object.keys(x), ...Object.keys(y)])].filter((k) => JSON.stringify(x[k]) !== JSON.stringify(y[k]));
}

/** Runs the requested stages. Returns the pipeline folder once stage 2 has finished. */
export async function runTraining(o: RunTrainingOptions): Promise<string | undefined> {
  const log = o.log ?? ((l: string) => console.error(l));
  const created = !existsSync(o.runDir);
  mkdirSync(o.runDir, { recursive: true });
  const lock = RunLock.acquire(o.runDir, log);
  try {
    return await runLocked(o, log);
  } finally {
    lock.release();
    // A start that failed before writing anything leaves no empty folder behind.
    if (created && existsSync(o.runDir) && readdirSync(o.runDir).length === 0) rmdirSync(o.runDir);
  }
}

async function runLocked(o: RunTrainingOptions, log: (line: string) => void): Promise<string | undefined> {
  const c = o.config;
  // Refuse before anything is read or written; replace only once the inputs are known good.
  const previous = checkRunFolder(o.runDir, { resume: o.resume, overwrite: o.overwrite, stage: o.stage });
  const data = await loadTrainingData(c, log);
  log(`data: ${data.source}`);
  const vaeCfg = parseVaeConfig(c.vae);
  if (data.shape[3] !== vaeCfg.imageChannels) throw new Error(`the data has ${data.shape[3]} channel(s) but vae.imageChannels is ${vaeCfg.imageChannels}`);
  const sampleSize = parseUNetConfig(c.unet).sampleSize;
  if (o.stage !== 'vae' && data.shape[1] !== sampleSize * vaeCfg.downsampleFactor) {
    throw new Error(
      `the images are ${data.shape[1]}x${data.shape[2]}, but unet.sampleSize ${sampleSize} x vae downsampleFactor ${vaeCfg.downsampleFactor} makes ${sampleSize * vaeCfg.downsampleFactor}; set unet.sampleSize to ${data.shape[1] / vaeCfg.downsampleFactor}`,
    );
  }
  for (const [key, t] of [
    ['vaeTraining', c.vaeTraining],
    ['unetTraining', c.unetTraining],
  ] as const) {
    if (warmupStepsOf(t) >= t.steps) {
      log(
        `warning: ${key}: the warm-up (${warmupStepsOf(t)} steps) is the whole run (${t.steps} steps), so the learning rate never leaves it; give warmupSteps as a fraction, e.g. --set ${key}.warmupSteps=0.05`,
      );
    }
  }
  clearPreviousRun(o.runDir, previous, log);
  const saved = path.join(o.runDir, 'config.json');
  if (o.resume && existsSync(saved)) {
    const changed = changedFields(readJson(saved, 'training run config'), JSON.parse(JSON.stringify(c)));
    if (changed.length) log(`resume: the config differs from the run's in ${changed.join(', ')}; continuing with the new values`);
  }
  for (const dir of [o.runDir, path.join(o.runDir, 'vae-stage', 'checkpoints'), path.join(o.runDir, 'unet-stage', 'checkpoints')]) removePartials(dir, log);
  writeJsonAtomic(saved, c);

  let vae: AutoencoderKL | undefined;
  if (o.stage === 'vae' || o.stage === 'all') {
    const p = progress(c.vaeTraining.steps, 'vae', o.quiet);
    vae = await trainVaeStage({
      runDir: o.runDir,
      seed: c.seed,
      resume: o.resume,
      data,
      vae: vaeCfg,
      training: c.vaeTraining,
      flip: c.data.source === 'folder' && c.data.flip,
      onStep: p.onStep,
      log,
      stopAfter: o.stopAfter,
    });
    p.bar.finish();
    if (!vae) return undefined;
    if (o.stage === 'vae') {
      vae.dispose();
      return undefined;
    }
  } else {
    const vaeDir = path.join(o.runDir, 'vae');
    if (!existsSync(path.join(vaeDir, 'config.json'))) throw new Error(`stage 'unet' needs a trained VAE at ${vaeDir}: run --stage vae (or all) first`);
    vae = AutoencoderKL.load(vaeDir);
  }

  let encoder: ConditionEncoder | undefined;
  try {
    if (c.conditioning.kind === 'label') {
      const { kind: _k, dropout: _d, ...cfg } = c.conditioning;
      encoder = new LabelEncoder({ kind: 'label', ...cfg }, new Generator(c.seed + 6));
    } else {
      // A model id that names an existing folder (e.g. data/tiny-clip) is that folder, not a hub id.
      const id = c.conditioning.modelId;
      const modelId = existsSync(path.join(id, 'config.json')) ? path.resolve(id) : id;
      encoder = await loadClipTextEncoder({ modelId, localModelPath: c.conditioning.localModelPath }, o.clip);
    }
    const unetCfg = parseUNetConfig(c.unet);
    if (unetCfg.contextDim !== encoder.contextDim) {
      throw new Error(
        `unet.contextDim is ${unetCfg.contextDim} but the ${encoder.kind} encoder gives ${encoder.contextDim}-wide contexts; set unet.contextDim to ${encoder.contextDim}`,
      );
    }
    const p = progress(c.unetTraining.steps, 'unet', o.quiet);
    const out = await trainUnetStage({
      runDir: o.runDir,
      seed: c.seed,
      resume: o.resume,
      data,
      vae,
      encoder,
      unet: unetCfg,
      scheduler: parseSchedulerConfig(c.scheduler),
      training: c.unetTraining as StageTraining,
      conditioningDropout: c.conditioning.dropout,
      lossWeighting: parseLossWeighting(c.lossWeighting, c.minSnrGamma),
      validation: c.validation ? { ...c.validation, inputs: c.validation.inputs as string[] | number[] } : undefined,
      notes: runNotes(c, data, encoder),
      onStep: p.onStep,
      log,
      stopAfter: o.stopAfter,
    });
    p.bar.finish();
    return out;
  } finally {
    encoder?.dispose();
    vae.dispose();
  }
}
