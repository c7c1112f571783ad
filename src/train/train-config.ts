/**
 * The training config: one JSON file (see configs/) describing data, conditioning, both models,
 * the noise schedule and both training stages. CLI overrides are applied as `--set a.b=value`;
 * the resolved config is written to `<run>/config.json`.
 */
import { RUNTIME_CHOICES, parseRuntimeName } from '../onnx/runtime.js';
import { readFileSync } from 'node:fs';
import type { SchedulerConfig } from '../schedulers/index.js';
import { parseSchedulerConfig } from '../schedulers/index.js';
import type { UNetConfigInput } from '../unet/config.js';
import { parseUNetConfig } from '../unet/config.js';
import type { VaeConfigInput } from '../vae/config.js';
import { parseVaeConfig } from '../vae/config.js';
import type { StageTraining } from './stages.js';
import { validateLabelEncoderConfig } from '../text/label.js';
import { checkWorkers } from './data-parallel.js';

export type DataConfig =
  | { source: 'folder'; path: string; imageSize: number; channels: 1 | 3; flip: boolean }
  | { source: 'mnist'; limit?: number };

export type ConditioningConfig =
  | { kind: 'clip'; modelId: string; localModelPath?: string; dropout: number }
  | { kind: 'label'; numClasses: number; contextDim: number; classNames?: string[]; dropout: number };

export interface TrainConfig {
  seed: number;
  data: DataConfig;
  conditioning: ConditioningConfig;
  vae: VaeConfigInput;
  vaeTraining: StageTraining;
  unet: UNetConfigInput;
  unetTraining: StageTraining;
  scheduler: Partial<SchedulerConfig>;
  lossWeighting: 'mse' | 'min-snr';
  minSnrGamma: number;
  validation?: { inputs: (string | number)[]; every: number; steps: number; guidanceScale: number };
  notes?: string[];
}

const STAGE_KEYS: (keyof StageTraining)[] = ['steps', 'batchSize', 'lr', 'lrSchedule', 'warmupSteps', 'weightDecay', 'clipGradNorm', 'emaDecay', 'accumulate', 'checkpointEvery', 'workers', 'runtime'];

function fail(key: string, value: unknown, allowed: string): never {
  throw new Error(`training config: ${key} must be ${allowed}, got ${JSON.stringify(value)}`);
}

function num(o: Record<string, unknown>, key: string, where: string, check: (v: number) => boolean, allowed: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || !check(v)) fail(`${where}.${key}`, v, allowed);
  return v;
}

function onlyKeys(o: Record<string, unknown>, keys: string[], where: string): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) throw new Error(`training config: unknown field ${where}.${k}; allowed: ${keys.join(', ')}`);
}

function obj(v: unknown, where: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(where, v, 'an object');
  return v as Record<string, unknown>;
}

export function validateStageTraining(v: unknown, where: string): StageTraining {
  const o = obj(v, where);
  onlyKeys(o, STAGE_KEYS, where);
  const int = (k: string, min: number) => num(o, k, where, (x) => Number.isInteger(x) && x >= min, `an integer >= ${min}`);
  if (o.lrSchedule !== 'constant' && o.lrSchedule !== 'cosine') fail(`${where}.lrSchedule`, o.lrSchedule, "'constant' or 'cosine'");
  return {
    steps: int('steps', 1),
    batchSize: int('batchSize', 1),
    lr: num(o, 'lr', where, (x) => x > 0, 'a number > 0'),
    lrSchedule: o.lrSchedule,
    warmupSteps: int('warmupSteps', 0),
    weightDecay: num(o, 'weightDecay', where, (x) => x >= 0, 'a number >= 0'),
    clipGradNorm: num(o, 'clipGradNorm', where, (x) => x >= 0, 'a number >= 0 (0 = off)'),
    emaDecay: num(o, 'emaDecay', where, (x) => x >= 0 && x < 1, 'a number in [0, 1) (0 = off)'),
    accumulate: int('accumulate', 1),
    checkpointEvery: int('checkpointEvery', 1),
    ...(o.workers === undefined ? {} : { workers: checkWorkers(o.workers, `${where}.workers`) }),
    ...(o.runtime === undefined ? {} : { runtime: parseRuntimeName(RUNTIME_CHOICES, String(o.runtime), `${where}.runtime`) }),
  };
}

export function validateTrainConfig(v: unknown): TrainConfig {
  const o = obj(v, 'config');
  onlyKeys(o, ['$comment', 'seed', 'data', 'conditioning', 'vae', 'vaeTraining', 'unet', 'unetTraining', 'scheduler', 'lossWeighting', 'minSnrGamma', 'validation', 'notes'], 'config');
  const seed = num(o, 'seed', 'config', (x) => Number.isInteger(x) && x >= 0, 'an integer >= 0');

  const d = obj(o.data, 'data');
  let data: DataConfig;
  if (d.source === 'mnist') {
    onlyKeys(d, ['source', 'limit'], 'data');
    if (d.limit !== undefined) num(d, 'limit', 'data', (x) => Number.isInteger(x) && x >= 1, 'an integer >= 1');
    data = { source: 'mnist', limit: d.limit as number | undefined };
  } else if (d.source === 'folder') {
    onlyKeys(d, ['source', 'path', 'imageSize', 'channels', 'flip'], 'data');
    if (typeof d.path !== 'string' || !d.path) fail('data.path', d.path, 'a folder path (or pass --data)');
    num(d, 'imageSize', 'data', (x) => Number.isInteger(x) && x >= 8, 'an integer >= 8');
    if (d.channels !== 1 && d.channels !== 3) fail('data.channels', d.channels, '1 or 3');
    data = { source: 'folder', path: d.path, imageSize: d.imageSize as number, channels: d.channels, flip: d.flip === true };
  } else fail('data.source', d.source, "'folder' or 'mnist'");

  const c = obj(o.conditioning, 'conditioning');
  const dropout = num(c, 'dropout', 'conditioning', (x) => x >= 0 && x <= 1, 'a probability in [0, 1]');
  let conditioning: ConditioningConfig;
  if (c.kind === 'label') {
    onlyKeys(c, ['kind', 'numClasses', 'contextDim', 'classNames', 'dropout'], 'conditioning');
    conditioning = {
      kind: 'label',
      numClasses: num(c, 'numClasses', 'conditioning', (x) => Number.isInteger(x) && x >= 1, 'an integer >= 1'),
      contextDim: num(c, 'contextDim', 'conditioning', (x) => Number.isInteger(x) && x >= 1, 'an integer >= 1'),
      classNames: c.classNames as string[] | undefined,
      dropout,
    };
    const { kind: _k, dropout: _d, ...encoder } = conditioning;
    validateLabelEncoderConfig({ kind: 'label', ...encoder });
  } else if (c.kind === 'clip') {
    onlyKeys(c, ['kind', 'modelId', 'localModelPath', 'dropout'], 'conditioning');
    if (typeof c.modelId !== 'string' || !c.modelId) fail('conditioning.modelId', c.modelId, 'a model id or folder');
    conditioning = { kind: 'clip', modelId: c.modelId, localModelPath: c.localModelPath as string | undefined, dropout };
  } else fail('conditioning.kind', c.kind, "'clip' or 'label'");

  // Models and schedule: their own validators give the detailed messages.
  parseVaeConfig(o.vae);
  parseUNetConfig(o.unet);
  parseSchedulerConfig(o.scheduler ?? {});
  if (o.lossWeighting !== 'mse' && o.lossWeighting !== 'min-snr') fail('lossWeighting', o.lossWeighting, "'mse' or 'min-snr'");
  const minSnrGamma = o.minSnrGamma === undefined ? 5 : num(o, 'minSnrGamma', 'config', (x) => x > 0, 'a number > 0');

  let validation: TrainConfig['validation'];
  if (o.validation !== undefined) {
    const val = obj(o.validation, 'validation');
    onlyKeys(val, ['inputs', 'every', 'steps', 'guidanceScale'], 'validation');
    if (!Array.isArray(val.inputs) || val.inputs.length === 0) fail('validation.inputs', val.inputs, 'a non-empty list of prompts or labels');
    validation = {
      inputs: val.inputs as (string | number)[],
      every: num(val, 'every', 'validation', (x) => Number.isInteger(x) && x >= 1, 'an integer >= 1'),
      steps: num(val, 'steps', 'validation', (x) => Number.isInteger(x) && x >= 1, 'an integer >= 1'),
      guidanceScale: num(val, 'guidanceScale', 'validation', (x) => x >= 0, 'a number >= 0'),
    };
  }
  return {
    seed,
    data,
    conditioning,
    vae: o.vae as VaeConfigInput,
    vaeTraining: validateStageTraining(o.vaeTraining, 'vaeTraining'),
    unet: o.unet as UNetConfigInput,
    unetTraining: validateStageTraining(o.unetTraining, 'unetTraining'),
    scheduler: (o.scheduler ?? {}) as Partial<SchedulerConfig>,
    lossWeighting: o.lossWeighting,
    minSnrGamma,
    validation,
    notes: o.notes as string[] | undefined,
  };
}

/** `a.b.c=value` overrides; the value is parsed as JSON when it parses, else kept as a string. */
export function applyOverrides(config: unknown, sets: string[]): unknown {
  const root = structuredClone(config) as Record<string, unknown>;
  for (const s of sets) {
    const eq = s.indexOf('=');
    if (eq <= 0) throw new Error(`--set takes key.path=value, got '${s}'`);
    const keys = s.slice(0, eq).split('.');
    const raw = s.slice(eq + 1);
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      value = raw;
    }
    let node = root;
    for (const k of keys.slice(0, -1)) {
      if (typeof node[k] !== 'object' || node[k] === null) node[k] = {};
      node = node[k] as Record<string, unknown>;
    }
    node[keys[keys.length - 1]] = value;
  }
  return root;
}

export function readTrainConfig(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`cannot read training config ${file}: ${(e as Error).message}`);
  }
}
