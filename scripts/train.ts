/**
 * Trains a pipeline (VAE, then U-Net) from a config file plus overrides.
 *
 *   npx tsx scripts/train.ts --config configs/mnist.json --out runs/mnist
 *   npx tsx scripts/train.ts --config configs/default-model.json --data data/scenes/train --out runs/scenes --resume
 */
import { THREADS_ENV, initBackend } from '../src/backend/index.js';
import { STAGES, type Stage, runTraining } from '../src/train/run-training.js';
import { applyOverrides, readTrainConfig, validateTrainConfig } from '../src/train/train-config.js';
import { LOCAL_MODELS_ENV } from '../src/text/clip.js';
import { MAX_WORKERS } from '../src/train/data-parallel.js';
import { RUNTIME_CHOICES, parseRuntimeName } from '../src/onnx/runtime.js';
import { cliArgs, integer, parseStrict, runCli, workerThreads } from './cli.js';

await runCli(async () => {
  const argv = await parseStrict(
    cliArgs('train', '$0 --config FILE --out RUN_DIR [options]\n\nTrains the VAE and the U-Net of a pipeline; the result is RUN_DIR/pipeline.')
      .option('config', { type: 'string', demandOption: true, describe: 'training config JSON (see configs/)' })
      .option('out', { type: 'string', demandOption: true, describe: 'run folder (checkpoints, logs, pipeline/)' })
      .option('data', { type: 'string', describe: 'captioned image folder (overrides data.path)' })
      .option('stage', { type: 'string', default: 'all', describe: `which stage(s): ${STAGES.join(' | ')}` })
      .option('resume', { type: 'boolean', default: false, describe: 'continue from the latest checkpoint in --out' })
      .option('overwrite', { type: 'boolean', default: false, describe: 'replace a previous run in --out (its latent cache is kept)' })
      .option('set', { type: 'string', array: true, default: [] as string[], describe: 'override a config field: --set unetTraining.steps=2000' })
      .option('local-models', { type: 'string', describe: `folder of local transformers.js models (env ${LOCAL_MODELS_ENV})` })
      .option('quiet', { type: 'boolean', default: false, describe: 'no progress bars' })
      .option('runtime', {
        type: 'string',
        describe: `what computes the gradients, both stages: ${RUNTIME_CHOICES.join(' | ')} (default auto: onnxruntime-node on a CPU backend where it loads, tfjs otherwise; sets vaeTraining.runtime and unetTraining.runtime)`,
      })
      .option('workers', {
        type: 'string',
        describe: `data-parallel shards per step for both stages, 1 thread each (default: one per core with the onnx runtime, 1 with tfjs; sets vaeTraining.workers and unetTraining.workers; with N > 1 the main thread's wasm backend uses 1 thread unless ${THREADS_ENV} says otherwise)`,
      }),
  );

  if (!(STAGES as readonly string[]).includes(argv.stage)) throw new Error(`--stage must be one of ${STAGES.join(', ')}, got '${argv.stage}'`);
  const sets = [...argv.set];
  if (argv.data) sets.push(`data.path=${JSON.stringify(argv.data)}`);
  const workers = argv.workers === undefined ? undefined : integer(argv.workers, '--workers', 1, MAX_WORKERS);
  if (workers !== undefined) sets.push(`vaeTraining.workers=${workers}`, `unetTraining.workers=${workers}`);
  if (argv.runtime !== undefined) {
    const runtime = parseRuntimeName(RUNTIME_CHOICES, argv.runtime, '--runtime');
    sets.push(`vaeTraining.runtime=${runtime}`, `unetTraining.runtime=${runtime}`);
  }
  const config = validateTrainConfig(applyOverrides(readTrainConfig(argv.config), sets));
  const maxWorkers = Math.max(config.vaeTraining.workers ?? 1, config.unetTraining.workers ?? 1);
  await initBackend({ backend: argv.backend, threads: workerThreads(maxWorkers) });
  const t0 = performance.now();
  const out = await runTraining({
    config,
    runDir: argv.out,
    stage: argv.stage as Stage,
    resume: argv.resume,
    overwrite: argv.overwrite,
    clip: argv['local-models'] ? { localModelPath: argv['local-models'] } : undefined,
    quiet: argv.quiet,
  });
  const mins = ((performance.now() - t0) / 60000).toFixed(1);
  console.error(out ? `done in ${mins} min: npx txt2img --model ${out} ...` : `stage '${argv.stage}' done in ${mins} min`);
});
