/**
 * 2-D toy diffusion: train a small MLP to generate a point cloud, sample it, measure it, draw it.
 *
 *   npx tsx scripts/toy2d.ts --dataset s-curve --out runs/toy2d
 *   npx tsx scripts/toy2d.ts --dataset image:my-drawing.png --steps 6000 --sampler ddim --sample-steps 25
 *
 * Everything happens in src/toy/run.ts; this file parses and validates flags.
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { initBackend } from '../src/backend/index.js';
import { BETA_SCHEDULES, PREDICTION_TYPES } from '../src/schedulers/index.js';
import { BUILTIN_DATASETS } from '../src/toy/datasets.js';
import { ANIMATION_FORMATS } from '../src/toy/render.js';
import { SAMPLERS, TOY2D_DEFAULTS, type Toy2dOptions, runToy2d, validateToy2dOptions } from '../src/toy/run.js';

async function main(): Promise<void> {
  const d = TOY2D_DEFAULTS;
  const argv = await yargs(hideBin(process.argv))
    .scriptName('toy2d')
    .usage('$0 [options]\n\nTrains a 2-D diffusion model on a point cloud and renders the forward and reverse processes.')
    .option('dataset', { type: 'string', default: 's-curve', describe: `${BUILTIN_DATASETS.join(' | ')} | image:<path> (dark pixels of a picture)` })
    .option('steps', { type: 'number', default: d.steps, describe: 'training steps' })
    .option('batch', { type: 'number', default: d.batch, describe: 'training batch size (points)' })
    .option('lr', { type: 'number', default: d.lr, describe: 'AdamW learning rate (warm-up, then cosine decay to lr/10)' })
    .option('timesteps', { type: 'number', default: d.timesteps, describe: 'diffusion T (betas are scaled by 1000/T)' })
    .option('schedule', { type: 'string', default: d.schedule, describe: `noise schedule: ${BETA_SCHEDULES.join(', ')}` })
    .option('prediction', { type: 'string', default: d.prediction, describe: `what the network predicts: ${PREDICTION_TYPES.join(', ')}` })
    .option('sampler', { type: 'string', default: d.sampler, describe: `${SAMPLERS.join(' | ')}` })
    .option('sample-steps', { type: 'number', describe: 'sampler steps (default: T for ddpm, min(50, T) for ddim)' })
    .option('eta', { type: 'number', describe: 'DDIM eta (ddim only; 0 = deterministic, 1 = DDPM-like noise)' })
    .option('samples', { type: 'number', default: d.samples, describe: 'points to generate (and compare with)' })
    .option('frames', { type: 'number', default: d.frames, describe: 'frames per strip (the animation has 4x as many)' })
    .option('anim', { type: 'string', default: d.anim, describe: `animation format: ${ANIMATION_FORMATS.join(', ')}` })
    .option('hidden', { type: 'number', default: d.hidden, describe: 'MLP width' })
    .option('blocks', { type: 'number', default: d.blocks, describe: 'MLP residual blocks' })
    .option('fourier-dim', { type: 'number', default: d.fourierDim, describe: 'sinusoidal features per input coordinate (0: raw x, y only)' })
    .option('ema-decay', { type: 'number', default: d.emaDecay, describe: 'EMA decay of the weights used for sampling' })
    .option('seed', { type: 'number', default: d.seed, describe: 'seed for everything (data, init, training, sampling)' })
    .option('out', { type: 'string', default: 'runs/toy2d', describe: 'output folder' })
    .option('backend', { type: 'string', describe: 'tfjs backend: node-gpu, node, webgpu, wasm, cpu (default: best available)' })
    .option('progress', { type: 'boolean', default: true, describe: 'progress bar on stderr (--no-progress to hide)' })
    .strict()
    .help()
    .parse();

  const options: Toy2dOptions = {
    dataset: argv.dataset,
    steps: argv.steps,
    batch: argv.batch,
    lr: argv.lr,
    timesteps: argv.timesteps,
    schedule: argv.schedule as Toy2dOptions['schedule'],
    prediction: argv.prediction as Toy2dOptions['prediction'],
    sampler: argv.sampler as Toy2dOptions['sampler'],
    sampleSteps: argv['sample-steps'],
    eta: argv.eta,
    samples: argv.samples,
    frames: argv.frames,
    anim: argv.anim as Toy2dOptions['anim'],
    hidden: argv.hidden,
    blocks: argv.blocks,
    fourierDim: argv['fourier-dim'],
    emaDecay: argv['ema-decay'],
    seed: argv.seed,
    out: argv.out,
    progress: argv.progress,
  };
  validateToy2dOptions(options); // fail on bad flags before loading a backend
  await initBackend({ backend: argv.backend });
  await runToy2d(options);
}

main().catch((e: unknown) => {
  console.error(`toy2d: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
