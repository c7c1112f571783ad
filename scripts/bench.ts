/**
 * Speed benchmark of the ldm-small shapes (../shared/bench/ldm-small.json): VAE and U-Net training
 * steps, the guided U-Net forward, and sampling throughput. See src/bench/bench.ts.
 *
 *   npm run bench
 *   npm run bench -- --repeat 3 --json
 *   npx tsx scripts/bench.ts --backend wasm --train-batch 128 --only unet_train_step_ms
 *   npm run bench -- --only vae_train_step_ms,unet_train_step_ms --workers 1
 *   npm run bench -- --runtime tfjs      (default auto: onnxruntime-node on a CPU backend)
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend } from '../src/backend/index.js';
import { FIGURE_NAMES, type FigureName, formatBench, loadBenchSpec, runBench } from '../src/bench/bench.js';
import { RUNTIME_CHOICES, parseRuntimeName, resolveRuntime } from '../src/onnx/runtime.js';
import { MAX_WORKERS, defaultWorkers } from '../src/train/data-parallel.js';
import { cliArgs, integer, parseStrict, runCli, workerThreads } from './cli.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

await runCli(async () => {
  const argv = await parseStrict(
    cliArgs('bench', '$0 [options]\n\nTimes the figures of ldm-small.json (median of --repeat runs after warm-up).')
      .option('config', { type: 'string', default: '../shared/bench/ldm-small.json', describe: 'benchmark file (relative paths: to the repository root)' })
      .option('threads', { type: 'string', describe: 'wasm threads (env TXT2IMG_THREADS; default: the number of cores)' })
      .option('repeat', { type: 'string', default: '5', describe: 'timed runs per figure' })
      .option('sample-repeat', { type: 'string', describe: 'timed runs of the sampling figure (default min(repeat, 3))' })
      .option('warmup', { type: 'string', default: '2', describe: 'untimed runs before each figure' })
      .option('train-batch', { type: 'string', describe: 'override measure.trainBatch (heap probe)' })
      .option('sample-batch', { type: 'string', describe: 'override measure.sampleBatch' })
      .option('only', { type: 'string', describe: `comma-separated figures: ${FIGURE_NAMES.join(', ')}` })
      .option('runtime', {
        type: 'string',
        default: 'auto',
        describe: `what computes the training gradients and the sampling U-Net: ${RUNTIME_CHOICES.join(' | ')} (onnx: onnxruntime-node; auto: as train and txt2img choose)`,
      })
      .option('workers', {
        type: 'string',
        describe:
          'data-parallel shards of the training figures, 1 thread each (default as train: one per thread with the onnx runtime, else 1; N > 1 with tfjs: the main thread uses 1 wasm thread unless --threads or TXT2IMG_THREADS says otherwise)',
      })
      .option('json', { type: 'boolean', default: false, describe: 'stdout is one JSON object; progress goes to stderr' }),
  );

  // The flags first: a bad one is named whatever the benchmark file (which may be missing).
  const only = argv.only
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const f of only ?? [])
    if (!(FIGURE_NAMES as readonly string[]).includes(f)) throw new Error(`--only: unknown figure '${f}'; allowed: ${FIGURE_NAMES.join(', ')}`);
  const opt = (v: string | undefined, flag: string, min: number) => (v === undefined ? undefined : integer(v, flag, min));
  const asked = argv.workers === undefined ? undefined : integer(argv.workers, '--workers', 1, MAX_WORKERS);
  const choice = parseRuntimeName(RUNTIME_CHOICES, argv.runtime, '--runtime');
  const file = path.resolve(repoRoot, argv.config);
  const spec = loadBenchSpec(file);
  const backend = await initBackend({ backend: argv.backend, threads: opt(argv.threads, '--threads', 1) ?? workerThreads(asked ?? 1), quiet: true });
  const { runtime, why } = await resolveRuntime(choice, backend);
  if (why) console.error(`runtime ${runtime} (${why})`);
  const workers = asked ?? defaultWorkers(runtime); // as train chooses
  const result = await runBench({
    spec,
    backend,
    repeat: integer(argv.repeat, '--repeat', 1),
    sampleRepeat: opt(argv['sample-repeat'], '--sample-repeat', 1),
    warmup: integer(argv.warmup, '--warmup', 0),
    trainBatch: opt(argv['train-batch'], '--train-batch', 1),
    sampleBatch: opt(argv['sample-batch'], '--sample-batch', 1),
    only: only as FigureName[] | undefined,
    runtime,
    workers,
  });
  if (argv.json) console.log(JSON.stringify(result));
  else console.log(formatBench(result));
  if (Object.values(result.figures).some((f) => f?.error)) process.exitCode = 1;
});
