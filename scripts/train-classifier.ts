/**
 * Trains the LeNet-style MNIST classifier that scripts/evaluate.ts measures generated digits with.
 *
 *   npx tsx scripts/train-classifier.ts --out runs/classifier
 *   npx tsx scripts/train-classifier.ts --out runs/classifier --resume
 */
import { initBackend } from '../src/backend/index.js';
import { mnistSet } from '../src/data/in-memory.js';
import { trainClassifier } from '../src/eval/classifier.js';
import { ProgressBar } from '../src/image/progress.js';
import { cliArgs, finiteNumber, integer, parseStrict, runCli } from './cli.js';

await runCli(async () => {
  const argv = await parseStrict(
    cliArgs('train-classifier', '$0 --out DIR [options]\n\nTrains the MNIST classifier (conv-pool-conv-pool-dense-dense) and reports its test accuracy.')
    .option('out', { type: 'string', demandOption: true, describe: 'output folder (config.json, model.safetensors, metrics.json; train/ holds checkpoints)' })
    .option('steps', { type: 'string', default: '3000', describe: 'optimizer steps' })
    .option('batch-size', { type: 'string', default: '128', describe: 'images per step' })
    .option('lr', { type: 'string', default: '0.002', describe: 'peak AdamW learning rate (cosine schedule, linear warm-up)' })
    .option('max-shift', { type: 'string', default: '2', describe: 'random translation augmentation in pixels (0 = off)' })
    .option('limit', { type: 'string', describe: 'use only the first N training images' })
    .option('seed', { type: 'string', default: '0', describe: 'seed' })
    .option('checkpoint-every', { type: 'string', default: '500', describe: 'steps between checkpoints' })
    .option('resume', { type: 'boolean', default: false, describe: 'continue from the latest checkpoint in --out/train' })
    .option('quiet', { type: 'boolean', default: false, describe: 'no progress bar' })
  );

  const steps = integer(argv.steps, '--steps', 1);
  const lr = finiteNumber(argv.lr, '--lr');
  if (!(lr > 0)) throw new Error(`--lr must be > 0, got '${argv.lr}'`);
  await initBackend({ backend: argv.backend });
  const trainSet = mnistSet('train', argv.limit === undefined ? undefined : integer(argv.limit, '--limit', 1));
  const testSet = mnistSet('test');
  console.error(`data: ${trainSet.source}; test: ${testSet.source}`);
  const bar = new ProgressBar({ total: steps, label: 'classifier', silent: argv.quiet });
  const r = await trainClassifier({
    outDir: argv.out,
    train: trainSet,
    test: testSet,
    steps,
    batchSize: integer(argv['batch-size'], '--batch-size', 1),
    lr,
    maxShift: integer(argv['max-shift'], '--max-shift', 0, 8),
    seed: integer(argv.seed, '--seed', 0),
    checkpointEvery: integer(argv['checkpoint-every'], '--checkpoint-every', 1),
    resume: argv.resume,
    onStep: (s) => bar.update(s.step, { loss: s.loss.toFixed(4), lr: s.lr.toExponential(2) }),
  });
  bar.finish();
  r.classifier?.dispose();
  console.log(`test accuracy ${(100 * r.testAccuracy!).toFixed(2)}% after ${r.steps} steps (${(r.seconds / 60).toFixed(1)} min this run): ${argv.out}`);
});
