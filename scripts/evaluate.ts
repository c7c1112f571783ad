/**
 * Measured quality of a label-conditioned MNIST pipeline: conditional accuracy, classifier-feature
 * FID, diversity and speed over guidance scales x samplers, next to VAE-only baselines.
 * See src/eval/evaluate.ts.
 *
 *   npx tsx scripts/train-classifier.ts --out runs/classifier
 *   npx tsx scripts/evaluate.ts --model runs/mnist/pipeline --classifier runs/classifier
 *   npx tsx scripts/evaluate.ts --model runs/mnist/pipeline --classifier runs/classifier \
 *     --per-class 100 --cfg 1,2,4,7 --samplers ddpm:1000,ddim:10,ddim:25,ddim:50,ddim:100 --json > eval.json
 */
import path from 'node:path';
import { initBackend } from '../src/backend/index.js';
import { mnistSet } from '../src/data/in-memory.js';
import { AttributeClassifier } from '../src/classifier/classifier.js';
import { evaluatePipeline, formatEvaluation, parseCfgList, parseSamplers } from '../src/eval/evaluate.js';
import { tensorToBatch, writePng } from '../src/image/convert.js';
import { makeGrid } from '../src/image/grid.js';
import { Txt2ImgPipeline } from '../src/pipeline/pipeline.js';
import { cliArgs, describeRun, emitReport, integer, parseStrict, runCli } from './cli.js';

await runCli(async () => {
  const argv = await parseStrict(
    cliArgs(
      'evaluate',
      '$0 --model PIPELINE --classifier DIR [options]\n\nGenerates N images per digit for every cfg x sampler and measures them with the MNIST classifier.',
    )
      .option('model', { type: 'string', demandOption: true, describe: 'a label-conditioned pipeline folder (e.g. runs/mnist/pipeline)' })
      .option('classifier', { type: 'string', demandOption: true, describe: 'classifier folder from scripts/train-classifier.ts' })
      .option('per-class', { type: 'string', default: '20', describe: 'images per digit per row' })
      .option('cfg', { type: 'string', default: '1,2,4,7', describe: 'comma-separated guidance scales' })
      .option('samplers', {
        type: 'string',
        default: 'ddim:25,ddim:50',
        describe: 'comma-separated SAMPLER:STEPS, e.g. ddpm:1000,ddim:10,ddim:25,ddim:50,ddim:100',
      })
      .option('real', { type: 'string', describe: 'use only the first N MNIST test images as the reference (default all 10000)' })
      .option('batch-size', { type: 'string', default: '100', describe: 'images per generation call' })
      .option('seed', { type: 'string', default: '0', describe: 'seed of the generation noise' })
      .option('vae', { type: 'boolean', default: true, describe: 'VAE baselines (reconstruction, prior samples); --no-vae skips them' })
      .option('grids', { type: 'string', describe: 'write a sample grid per row into this folder (one column per digit)' })
      .option('out', { type: 'string', describe: 'also write the Markdown report to this file' })
      .option('json', { type: 'boolean', default: false, describe: 'stdout is one JSON object; progress goes to stderr' }),
  );

  const perClass = integer(argv['per-class'], '--per-class', 1);
  const cfgs = parseCfgList(argv.cfg);
  const samplers = parseSamplers(argv.samplers);
  const backend = await initBackend({ backend: argv.backend });
  const pipeline = await Txt2ImgPipeline.load(argv.model);
  const classifier = AttributeClassifier.load(argv.classifier);
  const metrics = AttributeClassifier.metrics(argv.classifier);
  try {
    const T = pipeline.schedulerConfig.numTrainTimesteps;
    for (const s of samplers) if (s.steps > T) throw new Error(`--samplers: ${s.sampler}:${s.steps} has more steps than the model's ${T} training steps`);
    const real = mnistSet('test', argv.real === undefined ? undefined : integer(argv.real, '--real', 20));
    const grids = argv.grids;
    const report = await evaluatePipeline({
      pipeline,
      classifier,
      real,
      perClass,
      cfgs,
      samplers,
      batchSize: integer(argv['batch-size'], '--batch-size', 1),
      seed: integer(argv.seed, '--seed', 0),
      vaeBaselines: argv.vae,
      onImages: grids
        ? async (name, images) => {
            // At most 10 rows: image i asks for digit i % 10, so each column is one digit.
            const shown = images.slice(0, Math.min(images.shape[0], 100));
            await writePng(path.join(grids, `${name}.png`), makeGrid(await tensorToBatch(shown), { cols: 10 }));
            shown.dispose();
          }
        : undefined,
    });
    const header = [
      `# MNIST evaluation: ${argv.model}`,
      '',
      `classifier ${argv.classifier}${typeof metrics?.testAccuracy === 'number' ? ` (test accuracy ${(100 * metrics.testAccuracy).toFixed(2)}%)` : ''}; ${describeRun(pipeline, backend)}`,
      '',
    ];
    emitReport(argv, formatEvaluation(report, header), () => ({
      model: argv.model,
      classifier: argv.classifier,
      classifierMetrics: metrics,
      backend: backend.name,
      ...report,
    }));
  } finally {
    pipeline.dispose();
    classifier.dispose();
  }
});
