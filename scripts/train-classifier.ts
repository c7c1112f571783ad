/**
 * Trains the LeNet-style classifier that measures generated images: one 'digit' head on MNIST
 * (scripts/evaluate.ts), or the five scene attribute heads (object, color, position, size,
 * background) on a scene dataset (scripts/adherence.ts).
 *
 *   npx tsx scripts/train-classifier.ts --out runs/classifier
 *   npx tsx scripts/train-classifier.ts --out runs/classifier --resume
 *   npx tsx scripts/make-scenes.ts --out data/scenes-clf --count 10000 --heldout 3000 --size 32 --seed 1
 *   npx tsx scripts/train-classifier.ts --data scenes --scenes data/scenes-clf --test data/scenes/heldout --out runs/scene-classifier
 *
 * The scene classifier trains on a dataset drawn with another seed than the diffusion model's,
 * on both its splits (--splits): `--heldout 3000` gives held-out combinations about the share
 * they would have among all scenes. Its test set, the model's held-out split, is images it never saw.
 * Times and accuracies: docs/measurements.md.
 */
import path from 'node:path';
import { THREADS_ENV, initBackend } from '../src/backend/index.js';
import { MAX_WORKERS } from '../src/train/data-parallel.js';
import { RUNTIME_CHOICES, parseRuntimeName } from '../src/onnx/runtime.js';
import { type ImageSet, mnistSet } from '../src/data/in-memory.js';
import { SCENE_HEADS, loadSceneAttributeSet } from '../src/data/scenes/attribute-set.js';
import { HELDOUT_DIR, TRAIN_DIR } from '../src/data/scenes/generate.js';
import { type ClassifierConfig, DEFAULT_CLASSIFIER_CONFIG, formatHeadAccuracies } from '../src/classifier/classifier.js';
import { trainClassifier } from '../src/classifier/train.js';
import { ProgressBar, trainingProgress } from '../src/image/progress.js';
import { cliArgs, finiteNumber, integer, parseStrict, runCli, workerThreads } from './cli.js';

const DATA = ['mnist', 'scenes'] as const;
type DataName = (typeof DATA)[number];
/**
 * A measuring classifier sees every combination: trained on the train split alone it learns that a
 * blue object is never a circle (circle + blue is held out) and misreads exactly the held-out
 * scenes (the object head then fails almost every held-out scene while reading seen ones well).
 */
const SCENE_SPLITS = [TRAIN_DIR, HELDOUT_DIR];

interface Preset {
  config: Partial<ClassifierConfig>;
  steps: number;
  batchSize: number;
  lr: number;
  /** Translation augmentation; 0 where a label depends on where things are. */
  maxShift: number;
}

const PRESETS: Record<DataName, Preset> = {
  mnist: { config: DEFAULT_CLASSIFIER_CONFIG, steps: 3000, batchSize: 128, lr: 0.002, maxShift: 2 },
  // Position is a label, so no translation (and no flip: left/right). Max pooling keeps the
  // few pixels of a small face's mouth (avg pooling: object head 71% on seen scenes after 1500 steps).
  scenes: {
    config: { ...DEFAULT_CLASSIFIER_CONFIG, imageChannels: 3, pool: 'max', heads: [...SCENE_HEADS] },
    steps: 1500,
    batchSize: 64,
    lr: 0.002,
    maxShift: 0,
  },
};

await runCli(async () => {
  const argv = await parseStrict(
    cliArgs(
      'train-classifier',
      '$0 --out DIR [options]\n\nTrains the classifier (conv-pool-conv-pool-dense-dense; one softmax head per attribute) and reports its test accuracy.',
    )
      .option('out', { type: 'string', demandOption: true, describe: 'output folder (config.json, model.safetensors, metrics.json; train/ holds checkpoints)' })
      .option('data', { type: 'string', default: 'mnist', describe: `${DATA.join(' | ')}: MNIST digits, or the scene attributes of --scenes` })
      .option('scenes', { type: 'string', describe: 'scenes: a scene dataset root (scripts/make-scenes.ts); trains on its --splits' })
      .option('splits', {
        type: 'string',
        describe: `scenes: comma-separated split folders of --scenes to train on (default ${SCENE_SPLITS.join(',')}: every combination, held-out ones included)`,
      })
      .option('test', { type: 'string', describe: 'scenes: the split folder to test on (default <scenes>/heldout)' })
      .option('steps', { type: 'string', describe: `optimizer steps (default ${DATA.map((d) => `${d} ${PRESETS[d].steps}`).join(', ')})` })
      .option('batch-size', { type: 'string', describe: `images per step (default ${DATA.map((d) => `${d} ${PRESETS[d].batchSize}`).join(', ')})` })
      .option('lr', { type: 'string', describe: `peak AdamW learning rate, cosine schedule, linear warm-up (default ${PRESETS.mnist.lr})` })
      .option('max-shift', { type: 'string', describe: 'random translation augmentation in pixels (mnist: default 2; scenes: 0 only, position is a label)' })
      .option('limit', { type: 'string', describe: 'use only the first N training images' })
      .option('seed', { type: 'string', default: '0', describe: 'seed' })
      .option('checkpoint-every', { type: 'string', default: '500', describe: 'steps between checkpoints' })
      .option('resume', { type: 'boolean', default: false, describe: 'continue from the latest checkpoint in --out/train' })
      .option('quiet', { type: 'boolean', default: false, describe: 'no progress bar' })
      .option('runtime', {
        type: 'string',
        default: 'auto',
        describe: `what computes the gradients: ${RUNTIME_CHOICES.join(' | ')} (auto: onnxruntime-node on a CPU backend where it loads, tfjs otherwise)`,
      })
      .option('workers', {
        type: 'string',
        describe: `data-parallel shards per step, 1 thread each (default: one per core with the onnx runtime, 1 with tfjs; N > 1: the main thread's wasm backend uses 1 thread unless ${THREADS_ENV} says otherwise)`,
      }),
  );

  if (!(DATA as readonly string[]).includes(argv.data)) throw new Error(`--data must be one of ${DATA.join(', ')}, got '${argv.data}'`);
  const data = argv.data as DataName;
  const preset = PRESETS[data];
  if (data === 'mnist' && (argv.scenes !== undefined || argv.test !== undefined || argv.splits !== undefined)) {
    throw new Error('--scenes, --splits and --test are for --data scenes (MNIST trains on its train split and tests on its test split)');
  }
  if (data === 'scenes' && argv.scenes === undefined)
    throw new Error('--data scenes needs --scenes DIR, a scene dataset root (e.g. data/scenes-clf from scripts/make-scenes.ts)');
  const steps = argv.steps === undefined ? preset.steps : integer(argv.steps, '--steps', 1);
  const lr = argv.lr === undefined ? preset.lr : finiteNumber(argv.lr, '--lr');
  if (!(lr > 0)) throw new Error(`--lr must be > 0, got '${argv.lr}'`);
  const maxShift = argv['max-shift'] === undefined ? preset.maxShift : integer(argv['max-shift'], '--max-shift', 0, 8);
  if (data === 'scenes' && maxShift !== 0)
    throw new Error(`--max-shift must be 0 for --data scenes (position is a label: a shifted scene can change position), got '${argv['max-shift']}'`);
  const limit = argv.limit === undefined ? undefined : integer(argv.limit, '--limit', 1);
  const runtime = parseRuntimeName(RUNTIME_CHOICES, argv.runtime, '--runtime');
  const workers = argv.workers === undefined ? undefined : integer(argv.workers, '--workers', 1, MAX_WORKERS);
  await initBackend({ backend: argv.backend, threads: workerThreads(workers ?? 1) });

  let trainSet: ImageSet;
  let testSet: ImageSet;
  if (data === 'mnist') {
    trainSet = mnistSet('train', limit);
    testSet = mnistSet('test');
  } else {
    const size = preset.config.imageSize!;
    const splits =
      argv.splits === undefined
        ? SCENE_SPLITS
        : argv.splits
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean);
    if (splits.length === 0) throw new Error(`--splits: no split folder named in '${argv.splits}'`);
    trainSet = await loadSceneAttributeSet(
      splits.map((s) => path.join(argv.scenes!, s)),
      { size, limit },
    );
    testSet = await loadSceneAttributeSet(argv.test ?? path.join(argv.scenes!, 'heldout'), { size });
  }
  console.error(`data: ${trainSet.source}; test: ${testSet.source}`);
  const bar = new ProgressBar({ total: steps, label: 'classifier', silent: argv.quiet });
  const r = await trainClassifier({
    outDir: argv.out,
    train: trainSet,
    test: testSet,
    config: preset.config,
    steps,
    batchSize: argv['batch-size'] === undefined ? preset.batchSize : integer(argv['batch-size'], '--batch-size', 1),
    lr,
    maxShift,
    seed: integer(argv.seed, '--seed', 0),
    checkpointEvery: integer(argv['checkpoint-every'], '--checkpoint-every', 1),
    resume: argv.resume,
    runtime,
    workers,
    onStep: (s) => trainingProgress(bar, s),
  });
  bar.finish();
  r.classifier?.dispose();
  const acc = formatHeadAccuracies({ all: r.testAccuracy!, perHead: r.testHeadAccuracy! });
  console.log(`test accuracy ${acc} after ${r.steps} steps (${(r.seconds / 60).toFixed(1)} min this run): ${argv.out}`);
});
