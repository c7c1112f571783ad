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
import { ConfigChecker } from '../checkpoint/config.js';

export type DataConfig = { source: 'folder'; path: string; imageSize: number; channels: 1 | 3; flip: boolean } | { source: 'mnist'; limit?: number };

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

const STAGE_KEYS: (keyof StageTraining)[] = [
  'steps',
  'batchSize',
  'lr',
  'lrSchedule',
  'warmupSteps',
  'weightDecay',
  'clipGradNorm',
  'emaDecay',
  'accumulate',
  'checkpointEvery',
  'workers',
  'runtime',
];

const check = new ConfigChecker('training config');
const BIG = Number.MAX_SAFE_INTEGER;

export function validateStageTraining(v: unknown, where: string): StageTraining {
  const o = check.object(v, where);
  check.known(o, STAGE_KEYS, where);
  const int = (k: string, min: number) => check.int(o[k], `${where}.${k}`, min, BIG);
  const num = (k: string, ok: (x: number) => boolean, allowed: string) => check.num(o[k], `${where}.${k}`, ok, allowed);
  return {
    steps: int('steps', 1),
    batchSize: int('batchSize', 1),
    lr: num('lr', (x) => x > 0, 'a number > 0'),
    lrSchedule: check.oneOf(['constant', 'cosine'] as const, o.lrSchedule, `${where}.lrSchedule`),
    warmupSteps: num('warmupSteps', (x) => (x >= 0 && x < 1) || Number.isInteger(x), 'an integer >= 0 (steps) or a fraction of the steps in (0, 1)'),
    weightDecay: num('weightDecay', (x) => x >= 0, 'a number >= 0'),
    clipGradNorm: num('clipGradNorm', (x) => x >= 0, 'a number >= 0 (0 = off)'),
    emaDecay: num('emaDecay', (x) => x >= 0 && x < 1, 'a number in [0, 1) (0 = off)'),
    accumulate: int('accumulate', 1),
    checkpointEvery: int('checkpointEvery', 1),
    ...(o.workers === undefined ? {} : { workers: checkWorkers(o.workers, `${where}.workers`) }),
    ...(o.runtime === undefined ? {} : { runtime: parseRuntimeName(RUNTIME_CHOICES, String(o.runtime), `${where}.runtime`) }),
  };
}

export function validateTrainConfig(v: unknown): TrainConfig {
  const o = check.object(v, 'config');
  check.known(o, [
    '$comment',
    'seed',
    'data',
    'conditioning',
    'vae',
    'vaeTraining',
    'unet',
    'unetTraining',
    'scheduler',
    'lossWeighting',
    'minSnrGamma',
    'validation',
    'notes',
  ]);
  const seed = check.int(o.seed, 'seed', 0, BIG);

  const d = check.object(o.data, 'data');
  let data: DataConfig;
  const source = check.oneOf(['folder', 'mnist'] as const, d.source, 'data.source');
  if (source === 'mnist') {
    check.known(d, ['source', 'limit'], 'data');
    data = { source: 'mnist', limit: d.limit === undefined ? undefined : check.int(d.limit, 'data.limit', 1, BIG) };
  } else {
    check.known(d, ['source', 'path', 'imageSize', 'channels', 'flip'], 'data');
    data = {
      source: 'folder',
      path: check.str(d.path, 'data.path', 'a folder path (or pass --data)'),
      imageSize: check.int(d.imageSize, 'data.imageSize', 8, BIG),
      channels: check.oneOf([1, 3] as const, d.channels, 'data.channels'),
      flip: d.flip === undefined ? false : check.bool(d.flip, 'data.flip'),
    };
  }

  const c = check.object(o.conditioning, 'conditioning');
  const kind = check.oneOf(['clip', 'label'] as const, c.kind, 'conditioning.kind');
  const dropout = check.num(c.dropout, 'conditioning.dropout', (x) => x >= 0 && x <= 1, 'a probability in [0, 1]');
  let conditioning: ConditioningConfig;
  if (kind === 'label') {
    check.known(c, ['kind', 'numClasses', 'contextDim', 'classNames', 'dropout'], 'conditioning');
    conditioning = {
      kind: 'label',
      numClasses: check.int(c.numClasses, 'conditioning.numClasses', 1, BIG),
      contextDim: check.int(c.contextDim, 'conditioning.contextDim', 1, BIG),
      classNames: c.classNames as string[] | undefined,
      dropout,
    };
    const { kind: _k, dropout: _d, ...encoder } = conditioning;
    validateLabelEncoderConfig({ kind: 'label', ...encoder });
  } else {
    check.known(c, ['kind', 'modelId', 'localModelPath', 'dropout'], 'conditioning');
    conditioning = {
      kind: 'clip',
      modelId: check.str(c.modelId, 'conditioning.modelId', 'a model id or folder'),
      localModelPath: c.localModelPath === undefined ? undefined : check.str(c.localModelPath, 'conditioning.localModelPath', 'a folder'),
      dropout,
    };
  }

  // Models and schedule: their own validators give the detailed messages.
  parseVaeConfig(o.vae);
  const unet = parseUNetConfig(o.unet);
  if (unet.outChannels !== unet.inChannels) {
    check.fail('unet.outChannels', unet.outChannels, `equal to unet.inChannels (${unet.inChannels}): training inpainting U-Nets is not supported`);
  }
  parseSchedulerConfig(o.scheduler ?? {});
  const lossWeighting = check.oneOf(['mse', 'min-snr'] as const, o.lossWeighting, 'lossWeighting');
  const minSnrGamma = o.minSnrGamma === undefined ? 5 : check.num(o.minSnrGamma, 'minSnrGamma', (x) => x > 0, 'a number > 0');

  let validation: TrainConfig['validation'];
  if (o.validation !== undefined) {
    const val = check.object(o.validation, 'validation');
    check.known(val, ['inputs', 'every', 'steps', 'guidanceScale'], 'validation');
    if (!Array.isArray(val.inputs) || val.inputs.length === 0) check.fail('validation.inputs', val.inputs, 'a non-empty list of prompts or labels');
    validation = {
      inputs: val.inputs as (string | number)[],
      every: check.int(val.every, 'validation.every', 1, BIG),
      steps: check.int(val.steps, 'validation.steps', 1, BIG),
      guidanceScale: check.num(val.guidanceScale, 'validation.guidanceScale', (x) => x >= 0, 'a number >= 0'),
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
    lossWeighting,
    minSnrGamma,
    validation,
    notes: o.notes as string[] | undefined,
  };
}

/** Keys an override may never name: they reach the object's prototype, not a config field. */
const NOT_KEYS = new Set(['__proto__', 'prototype', 'constructor']);

/** `a.b.c=value` overrides; the value is parsed as JSON when it parses, else kept as a string. */
export function applyOverrides(config: unknown, sets: string[]): unknown {
  const root = structuredClone(config) as Record<string, unknown>;
  for (const s of sets) {
    const eq = s.indexOf('=');
    if (eq <= 0) throw new Error(`--set takes key.path=value, got '${s}'`);
    const keys = s.slice(0, eq).split('.');
    const bad = keys.find((k) => k === '' || NOT_KEYS.has(k));
    if (bad !== undefined) throw new Error(`--set ${s}: '${bad}' is not a config key (keys are field names like unetTraining.steps)`);
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
