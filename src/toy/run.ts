/**
 * The 2-D toy diffusion end to end (what scripts/toy2d.ts runs): train a ToyMLP on a point cloud,
 * sample it with DDPM or DDIM, measure how close the samples are to the data, and render the
 * forward and reverse processes, the samples and the loss curve.
 *
 * Outputs in `out/`: forward.png, reverse.png (frame strips), samples.png (data | generated | noise),
 * diffusion.gif or .webp (forward then reverse), loss.png, scheduler_config.json, report.json.
 */
import { join } from 'node:path';
import { writeFileAtomic, writeJsonAtomic } from '../checkpoint/files.js';
import { encodeAnimation } from '../image/animate.js';
import { writePng } from '../image/convert.js';
import { ProgressBar } from '../image/progress.js';
import { Generator } from '../random/generator.js';
import {
  BETA_SCHEDULES,
  type BetaScheduleName,
  PREDICTION_TYPES,
  type PredictionType,
  type SchedulerConfig,
  createScheduler,
  schedulerConfigToJSON,
} from '../schedulers/index.js';
import { type DatasetSpec, loadDataset, parseDatasetSpec } from './datasets.js';
import { type DistanceReport, RunningAverage, distances } from './metrics.js';
import { ANIMATION_FORMATS, type AnimationFormat, type Canvas, type RGB, renderFrame, renderLossCurve, stack, strip, viewFor } from './render.js';
import { type ToyFrame, forwardFrames, frameSchedule, sampleToy, trainToy } from './train.js';

export const SAMPLERS = ['ddpm', 'ddim'] as const;
export type SamplerName = (typeof SAMPLERS)[number];

export interface Toy2dOptions {
  dataset: string;
  /** Training steps. */
  steps: number;
  batch: number;
  lr: number;
  /** Diffusion T. */
  timesteps: number;
  schedule: BetaScheduleName;
  sampler: SamplerName;
  /** Sampler steps; default T for DDPM, min(50, T) for DDIM. */
  sampleSteps?: number;
  /** DDIM eta (DDIM only); default 0. */
  eta?: number;
  seed: number;
  out: string;
  prediction: PredictionType;
  /** Points generated (and compared with as many real ones). */
  samples: number;
  /** Frames in each strip (the animation has 4x as many). */
  frames: number;
  anim: AnimationFormat;
  hidden: number;
  blocks: number;
  /** Sinusoidal features per input coordinate (0: raw coordinates only). */
  fourierDim: number;
  emaDecay: number;
  /** Show a progress bar on stderr. */
  progress: boolean;
  /** Where to print the report (default console.log). */
  log?: (line: string) => void;
}

export const TOY2D_DEFAULTS: Omit<Toy2dOptions, 'dataset' | 'out'> = {
  steps: 2000,
  batch: 256,
  lr: 1e-2,
  timesteps: 50,
  schedule: 'linear',
  sampler: 'ddpm',
  seed: 0,
  prediction: 'epsilon',
  samples: 2000,
  frames: 9,
  anim: 'gif',
  hidden: 64,
  blocks: 3,
  fourierDim: 16,
  emaDecay: 0.995,
  progress: true,
};

/** Beta range per schedule at T = 1000 (DDPM's, and Stable Diffusion's for scaled-linear). */
const BETA_RANGE_AT_1000: Record<BetaScheduleName, [number, number]> = {
  linear: [1e-4, 0.02],
  quadratic: [1e-4, 0.02],
  sigmoid: [1e-4, 0.02],
  'scaled-linear': [0.00085, 0.012],
  cosine: [1e-4, 0.02], // unused by cosine
};

/**
 * The scheduler config for a toy run. Betas are scaled by 1000 / T (as improved-diffusion does
 * for its linear schedule) so that a short chain still ends in noise; capped at 0.9. Timesteps are
 * `leading` (diffusers' default): with these betas alphaBar is already ~1e-3 at the first leading
 * timestep, and on the S-curve DDIM with 10-20 steps measured closer to the data than with
 * `trailing` (which starts at t = T-1, where eps-prediction errors are amplified most).
 */
export function toySchedulerConfig(o: Pick<Toy2dOptions, 'timesteps' | 'schedule' | 'sampler' | 'eta' | 'prediction'>): SchedulerConfig {
  const [b0, b1] = BETA_RANGE_AT_1000[o.schedule];
  const k = 1000 / o.timesteps;
  return createScheduler({
    type: o.sampler,
    numTrainTimesteps: o.timesteps,
    betaSchedule: o.schedule,
    betaStart: Math.min(0.9, b0 * k),
    betaEnd: Math.min(0.9, b1 * k),
    predictionType: o.prediction,
    timestepSpacing: 'leading',
    eta: o.eta ?? 0,
  }).config as SchedulerConfig;
}

function oneOf<T extends string>(flag: string, v: unknown, allowed: readonly T[]): T {
  if (typeof v === 'string' && (allowed as readonly string[]).includes(v)) return v as T;
  throw new Error(`--${flag} '${String(v)}' is not allowed; allowed: ${allowed.join(', ')}`);
}

function intIn(flag: string, v: unknown, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw new Error(`--${flag} must be an integer from ${lo} to ${hi}, got ${String(v)}`);
  }
  return v;
}

function numIn(flag: string, v: unknown, lo: number, hi: number, loOpen = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || (loOpen ? v <= lo : v < lo) || v > hi) {
    throw new Error(`--${flag} must be a number in ${loOpen ? '(' : '['}${lo}, ${hi}], got ${String(v)}`);
  }
  return v;
}

/** Validates every option; errors name the flag, the bad value and what is allowed. */
export function validateToy2dOptions(o: Toy2dOptions): Toy2dOptions & { sampleSteps: number; eta: number; spec: DatasetSpec } {
  const spec = parseDatasetSpec(String(o.dataset));
  intIn('steps', o.steps, 1, 10_000_000);
  intIn('batch', o.batch, 1, 65536);
  numIn('lr', o.lr, 0, 1, true);
  const T = intIn('timesteps', o.timesteps, 2, 100_000);
  oneOf('schedule', o.schedule, BETA_SCHEDULES);
  const sampler = oneOf('sampler', o.sampler, SAMPLERS);
  const sampleSteps = o.sampleSteps ?? (sampler === 'ddpm' ? T : Math.min(50, T));
  intIn('sample-steps', sampleSteps, 1, T);
  if (o.eta !== undefined && sampler !== 'ddim') {
    throw new Error(`--eta ${o.eta} applies to --sampler ddim only (got --sampler ${sampler}; DDPM's noise is fixed by its posterior)`);
  }
  const eta = o.eta ?? 0;
  numIn('eta', eta, 0, 10);
  intIn('seed', o.seed, 0, Number.MAX_SAFE_INTEGER);
  if (typeof o.out !== 'string' || o.out.length === 0) throw new Error(`--out must be a folder path, got '${String(o.out)}'`);
  oneOf('prediction', o.prediction, PREDICTION_TYPES);
  intIn('samples', o.samples, 10, 100_000);
  intIn('frames', o.frames, 2, 100);
  oneOf('anim', o.anim, ANIMATION_FORMATS);
  intIn('hidden', o.hidden, 1, 4096);
  intIn('blocks', o.blocks, 0, 64);
  intIn('fourier-dim', o.fourierDim, 0, 512);
  if (o.fourierDim % 2) throw new Error(`--fourier-dim must be even, got ${o.fourierDim}`);
  numIn('ema-decay', o.emaDecay, 0, 0.99999);
  return { ...o, sampleSteps, eta, spec };
}

export interface Toy2dReport {
  dataset: string;
  scheduler: SchedulerConfig;
  sampleSteps: number;
  /** alphaBar at t = T-1: how close x_T is to pure noise. */
  terminalAlphaBar: number;
  numParams: number;
  trainSeconds: number;
  sampleSeconds: number;
  finalLoss: number;
  /** Distances to a held-out real sample of the same size. */
  generated: DistanceReport;
  noise: DistanceReport;
  secondReal: DistanceReport;
  files: string[];
}

const BLUE: RGB = [30, 90, 200];
const ORANGE: RGB = [220, 100, 20];
const GREY: RGB = [90, 90, 90];

export async function runToy2d(options: Toy2dOptions): Promise<Toy2dReport> {
  const o = validateToy2dOptions(options);
  const log = o.log ?? ((l: string) => console.log(l));
  const rng = new Generator(o.seed);
  // Independent streams, so e.g. changing --samples does not change the training run.
  const dataRng = rng.spawn();
  const trainRng = rng.spawn();
  const sampleRng = rng.spawn();
  const evalRng = rng.spawn();
  const renderRng = rng.spawn();

  const schedConfig = toySchedulerConfig(o);
  const trainSched = createScheduler({ ...schedConfig, type: 'ddpm' });
  const sampler = createScheduler(schedConfig);
  const T = o.timesteps;
  const terminalAlphaBar = trainSched.alphasCumprod[T - 1];
  if (terminalAlphaBar > 0.01) {
    log(
      `warning: alphaBar at t=T-1 is ${terminalAlphaBar.toPrecision(3)}: x_T is not close to pure noise, so sampling from N(0, I) ` +
        `starts off-distribution (raise --timesteps or use another --schedule)`,
    );
  }

  const data = await loadDataset(o.spec, dataRng);
  // The bar shows the step's loss and a running average over ~100 steps.
  const bar = new ProgressBar({ total: o.steps, label: 'train', silent: !o.progress });
  const avgLoss = new RunningAverage(0.99);
  let trained: ReturnType<typeof trainToy>;
  try {
    trained = trainToy(data, trainSched, trainRng, {
      steps: o.steps,
      batch: o.batch,
      lr: o.lr,
      hidden: o.hidden,
      blocks: o.blocks,
      inputEmbedDim: o.fourierDim,
      emaDecay: o.emaDecay,
      onStep: (step, loss) => bar.update(step, { loss: loss.toFixed(4), avg: avgLoss.add(loss).toFixed(4) }),
    });
  } finally {
    bar.finish();
  }
  const { model, ema, losses } = trained;
  try {
    // Sample with the EMA weights.
    ema.copyTo(model.store);
    const animFrames = 4 * (o.frames - 1) + 1;
    const t0 = performance.now();
    const result = sampleToy(model, sampler, o.samples, sampleRng, { steps: o.sampleSteps, frames: animFrames });
    const sampleSeconds = (performance.now() - t0) / 1000;

    const real = data.sample(o.samples, evalRng);
    const real2 = data.sample(o.samples, evalRng);
    const noise = evalRng.normalArray(2 * o.samples);
    const generated = distances(result.points, real);
    const noiseD = distances(noise, real);
    const secondReal = distances(real2, real);

    // ---- rendering
    const files: string[] = [];
    const size = 240;
    const view = viewFor(real);
    const fwd = forwardFrames(trainSched, real, frameSchedule(T, animFrames), renderRng);
    const fwdCanvases = fwd.map((f) => renderFrame(f.points, view, { size, color: BLUE, radius: 1.2, alpha: 0.45, label: `T=${f.level}` }));
    const revCanvases = result.frames.map((f: ToyFrame) =>
      renderFrame(f.points, view, { size, color: ORANGE, radius: 1.2, alpha: 0.45, ghost: real, label: `T=${f.level}` }),
    );
    const every = (c: Canvas[]) => c.filter((_, i) => i % 4 === 0);
    const fwdStrip = strip(every(fwdCanvases), 6, `FORWARD PROCESS Q(X_T | X_0): DATA TO NOISE (${o.spec.kind.toUpperCase()}, T=${T})`);
    const revStrip = strip(
      every(revCanvases),
      6,
      `REVERSE PROCESS: NOISE TO DATA (${o.sampler.toUpperCase()}, ${o.sampleSteps} STEPS${o.sampler === 'ddim' ? `, ETA=${o.eta}` : ''})`,
    );
    const save = async (c: Canvas, name: string) => {
      const p = join(o.out, name);
      await writePng(p, c.toImage());
      files.push(p);
    };
    await save(fwdStrip, 'forward.png');
    await save(revStrip, 'reverse.png');
    const fmt = (d: DistanceReport) => `SW2 ${d.slicedW2.toFixed(3)} CH ${d.chamfer.toFixed(3)}`;
    const big = 360;
    const panels = strip(
      [
        renderFrame(real, view, { size: big, color: BLUE, radius: 1.3, alpha: 0.45, label: 'DATA (HELD OUT)' }),
        renderFrame(result.points, view, { size: big, color: ORANGE, radius: 1.3, alpha: 0.45, label: `GENERATED: ${fmt(generated)}` }),
        renderFrame(real2, view, { size: big, color: BLUE, radius: 1.3, alpha: 0.45, label: `2ND REAL: ${fmt(secondReal)}` }),
        renderFrame(noise, view, { size: big, color: GREY, radius: 1.3, alpha: 0.45, label: `NOISE: ${fmt(noiseD)}` }),
      ],
      6,
      'SAMPLES VS DATA (DISTANCES TO THE HELD-OUT DATA)',
    );
    await save(panels, 'samples.png');
    await save(renderLossCurve(losses), 'loss.png');
    const delays = [
      ...fwdCanvases.map((_, i) => (i === 0 ? 900 : i === fwdCanvases.length - 1 ? 500 : 90)),
      ...revCanvases.map((_, i) => (i === revCanvases.length - 1 ? 1500 : 90)),
    ];
    const animPath = join(o.out, `diffusion.${o.anim}`);
    writeFileAtomic(
      animPath,
      await encodeAnimation(
        [...fwdCanvases, ...revCanvases].map((c) => c.toImage()),
        o.anim,
        { delay: delays, loop: 0 },
      ),
    );
    files.push(animPath);
    await save(stack([fwdStrip, revStrip]), 'process.png');

    const report: Toy2dReport = {
      dataset: data.name,
      scheduler: schedConfig,
      sampleSteps: o.sampleSteps,
      terminalAlphaBar,
      numParams: model.numParams(),
      trainSeconds: trained.seconds,
      sampleSeconds,
      finalLoss: mean(losses.subarray(Math.max(0, losses.length - 100))),
      generated,
      noise: noiseD,
      secondReal,
      files,
    };
    const cfgPath = join(o.out, 'scheduler_config.json');
    writeJsonAtomic(cfgPath, schedulerConfigToJSON(schedConfig));
    files.push(cfgPath);
    const reportPath = join(o.out, 'report.json');
    files.push(reportPath);
    writeJsonAtomic(reportPath, report);

    log(formatReport(report, o.samples, o.sampler));
    return report;
  } finally {
    model.dispose();
    ema.dispose();
  }
}

function mean(a: Float32Array): number {
  let s = 0;
  for (const v of a) s += v;
  return a.length ? s / a.length : NaN;
}

export function formatReport(r: Toy2dReport, n: number, sampler: string): string {
  const row = (name: string, d: DistanceReport) => `  ${name.padEnd(40)} ${d.slicedW2.toFixed(4).padStart(10)} ${d.chamfer.toFixed(4).padStart(10)}`;
  return [
    `dataset ${r.dataset}: ${r.numParams} parameters, trained ${r.trainSeconds.toFixed(1)} s (final loss ${r.finalLoss.toFixed(4)}), ` +
      `sampled ${n} points in ${r.sampleSeconds.toFixed(1)} s`,
    `distance to ${n} held-out real points       sliced-W2    chamfer`,
    row(`generated (${sampler}, ${r.sampleSteps} steps)`, r.generated),
    row('pure noise N(0, I)  [scale: bad]', r.noise),
    row('second real sample  [scale: perfect]', r.secondReal),
    `wrote ${r.files.join(', ')}`,
  ].join('\n');
}
