/**
 * Measured prompt adherence of a text-conditioned scene pipeline: per prompt set (seen / held-out
 * combinations) x cfg x sampler, how often the scene attribute classifier reads what the prompt
 * asks for, next to the classifier's ceiling on real images. See src/eval/adherence.ts.
 *
 *   npx tsx scripts/make-scenes.ts --out data/scenes-clf --count 10000 --heldout 3000 --size 32 --seed 1
 *   npx tsx scripts/train-classifier.ts --data scenes --scenes data/scenes-clf --test data/scenes/heldout --out runs/scene-classifier
 *   npx tsx scripts/adherence.ts --model models/default --classifier runs/scene-classifier --scenes data/scenes
 *   npx tsx scripts/adherence.ts --model runs/scenes/pipeline --per-set 280 --cfg 1,3,7 --samplers ddim:10,ddim:25,ddim:50 --json > adherence.json
 */
import path from 'node:path';
import { initBackend } from '../src/backend/index.js';
import { type SceneAttributeSet, loadSceneAttributeSet } from '../src/data/scenes/attribute-set.js';
import { HELDOUT_DIR, TRAIN_DIR } from '../src/data/scenes/generate.js';
import { MAX_ADHERENCE_BATCH, PROMPT_SETS, type PromptSetName, evaluateAdherence, formatAdherence } from '../src/eval/adherence.js';
import { AttributeClassifier, formatHeadAccuracies } from '../src/classifier/classifier.js';
import { parseCfgList, parseSamplers } from '../src/eval/evaluate.js';
import { type Uint8Image, batchToImages, tensorToBatch, writePng } from '../src/image/convert.js';
import { makeGrid } from '../src/image/grid.js';
import { Txt2ImgPipeline } from '../src/pipeline/pipeline.js';
import { LOCAL_MODELS_ENV } from '../src/text/clip.js';
import { cliArgs, describeRun, emitReport, integer, parseStrict, runCli } from './cli.js';

await runCli(async () => {
  const argv = await parseStrict(
    cliArgs(
      'adherence',
      '$0 [--model PIPELINE] [--classifier DIR] [options]\n\nGenerates one image per prompt of a seen and a held-out prompt set for every cfg x sampler and scores what the scene classifier reads against what each prompt asks for.',
    )
      .option('model', { type: 'string', default: 'models/default', describe: 'a text-conditioned scene pipeline folder' })
      .option('classifier', {
        type: 'string',
        default: 'runs/scene-classifier',
        describe: 'scene classifier folder (scripts/train-classifier.ts --data scenes)',
      })
      .option('scenes', {
        type: 'string',
        default: 'data/scenes',
        describe: `scene dataset of the ceiling rows: real images of <scenes>/${TRAIN_DIR} (seen) and <scenes>/${HELDOUT_DIR} (held-out)`,
      })
      .option('real', { type: 'string', default: '1000', describe: 'real images per ceiling row (the first N of each split; 0 = no ceiling rows)' })
      .option('per-set', { type: 'string', default: '140', describe: 'prompts (= images per row) of each prompt set; 140 = 10 per held-out combination' })
      .option('cfg', { type: 'string', default: '1,3,7', describe: 'comma-separated guidance scales' })
      .option('samplers', {
        type: 'string',
        default: 'ddim:10,ddim:25,ddim:50',
        describe: 'comma-separated SAMPLER:STEPS, SAMPLER a type or an A1111 name (ddim:25, DPM++ 2M Karras:20)',
      })
      .option('batch-size', { type: 'string', default: String(MAX_ADHERENCE_BATCH), describe: `prompts per generation call (1..${MAX_ADHERENCE_BATCH})` })
      .option('seed', { type: 'string', default: '0', describe: 'seed of the prompts, the ceiling captions and the generation noise' })
      .option('grid', {
        type: 'string',
        describe: 'write a sample grid PNG here: one row per cfg x sampler, the first 8 seen then the first 8 held-out prompts',
      })
      .option('out', { type: 'string', describe: 'also write the Markdown report to this file' })
      .option('json', { type: 'boolean', default: false, describe: 'stdout is one JSON object; progress goes to stderr' })
      .option('local-models', { type: 'string', describe: `folder of local transformers.js models, for the tokenizer (env ${LOCAL_MODELS_ENV})` }),
  );

  const perSet = integer(argv['per-set'], '--per-set', 1);
  const realCount = integer(argv.real, '--real', 0);
  const batchSize = integer(argv['batch-size'], '--batch-size', 1, MAX_ADHERENCE_BATCH);
  const seed = integer(argv.seed, '--seed', 0);
  const cfgs = parseCfgList(argv.cfg);
  const samplers = parseSamplers(argv.samplers);
  const backend = await initBackend({ backend: argv.backend });
  const classifier = AttributeClassifier.load(argv.classifier);
  const metrics = AttributeClassifier.metrics(argv.classifier);
  let pipeline: Txt2ImgPipeline | undefined;
  try {
    pipeline = await Txt2ImgPipeline.load(argv.model, { clip: argv['local-models'] ? { localModelPath: argv['local-models'] } : undefined });
    const T = pipeline.schedulerConfig.numTrainTimesteps;
    for (const s of samplers) if (s.steps > T) throw new Error(`--samplers: ${s.sampler}:${s.steps} has more steps than the model's ${T} training steps`);
    const real: Partial<Record<PromptSetName, SceneAttributeSet>> = {};
    if (realCount > 0) {
      const size = classifier.config.imageSize;
      real.seen = await loadSceneAttributeSet(path.join(argv.scenes, TRAIN_DIR), { size, limit: realCount });
      real['held-out'] = await loadSceneAttributeSet(path.join(argv.scenes, HELDOUT_DIR), { size, limit: realCount });
    }
    const GRID_COLS = 8;
    const gridRows = new Map<string, Uint8Image[]>();
    const report = await evaluateAdherence({
      pipeline,
      classifier,
      perSet,
      cfgs,
      samplers,
      real,
      batchSize,
      seed,
      onImages: argv.grid
        ? async ({ name }, images) => {
            // Sets come in PROMPT_SETS order within a cell: seen columns first, then held-out.
            const shown = images.slice(0, Math.min(GRID_COLS, images.shape[0]));
            gridRows.set(name, [...(gridRows.get(name) ?? []), ...batchToImages(await tensorToBatch(shown))]);
            shown.dispose();
          }
        : undefined,
    });
    if (argv.grid) {
      const columns = PROMPT_SETS.flatMap((s) => report.prompts[s].slice(0, GRID_COLS).map((p) => `${s}: ${p}`));
      const rows = [...gridRows.keys()];
      await writePng(argv.grid, makeGrid([...gridRows.values()].flat(), { cols: columns.length }), {
        text: { Description: `rows: ${rows.join('; ')}\ncolumns:\n${columns.join('\n')}` },
      });
      console.error(`grid: ${argv.grid} (rows: ${rows.join('; ')}; columns: the first ${Math.min(GRID_COLS, perSet)} prompts of each set)`);
    }
    const clfAcc =
      typeof metrics?.testAccuracy === 'number' && metrics.testHeadAccuracy
        ? ` (test ${formatHeadAccuracies({ all: metrics.testAccuracy, perHead: metrics.testHeadAccuracy as Record<string, number> })} on ${metrics.testSet})`
        : '';
    const header = [`# Prompt adherence: ${argv.model}`, '', `classifier ${argv.classifier}${clfAcc}; ${describeRun(pipeline, backend)}`, ''];
    emitReport(argv, formatAdherence(report, header), () => ({
      model: argv.model,
      classifier: argv.classifier,
      classifierMetrics: metrics,
      backend: backend.name,
      ...report,
    }));
  } finally {
    pipeline?.dispose();
    classifier.dispose();
  }
});
