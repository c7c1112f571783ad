/**
 * Bundles a trained pipeline folder into a small, self-contained folder (see src/pipeline/bundle.ts):
 *
 *   npx tsx scripts/bundle-model.ts --pipeline runs/scenes/pipeline --out models/default --fp16 \
 *     --recipe "npx tsx scripts/train.ts --config configs/default-model.json --data data/scenes/train --out runs/scenes"
 *
 * The text encoder (text_encoder/) and the CLIP tokenizer (tokenizer/) come along, so the bundle
 * loads offline wherever it is put.
 */
import path from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { bundlePipeline } from '../src/pipeline/bundle.js';
import { DEFAULT_CLIP_MODEL_ID, LOCAL_MODELS_ENV } from '../src/text/clip.js';
import { parseStrict, runCli } from './cli.js';

await runCli(async () => {
  const argv = await parseStrict(
    yargs(hideBin(process.argv))
      .scriptName('bundle-model')
      .usage('$0 --pipeline DIR --out DIR [--fp16] [options]\n\nWrites a self-contained copy of a pipeline folder with its text model and tokenizer.')
      .option('pipeline', { type: 'string', demandOption: true, describe: 'trained pipeline folder (e.g. runs/scenes/pipeline)' })
      .option('out', { type: 'string', demandOption: true, describe: 'bundle folder to write (e.g. models/default); replaced atomically' })
      .option('fp16', { type: 'boolean', default: false, describe: 'store weights as float16 (about half the size)' })
      .option('clip', { type: 'string', describe: "text model folder (default: the pipeline's text_encoder modelId)" })
      .option('tokenizer-id', {
        type: 'string',
        default: DEFAULT_CLIP_MODEL_ID,
        describe: "the tokenizer's hub id (for the README and the --local-models check)",
      })
      .option('recipe', { type: 'string', describe: 'the commands that produced the pipeline, quoted in the README' })
      .option('run-config', { type: 'string', describe: "the training run's config.json to quote (default <pipeline>/../config.json if present)" })
      .option('local-models', {
        type: 'string',
        describe: `transformers.js models folder holding <tokenizer-id>/tokenizer.json: the bundled tokenizer is checked against it, and taken from it when the pipeline has none (env ${LOCAL_MODELS_ENV})`,
      })
      .option('quiet', { type: 'boolean', default: false, describe: 'only the final line' }),
  );
  const rel = (p: string) => path.relative(process.cwd(), path.resolve(p)) || '.';
  const command = [
    'npx tsx scripts/bundle-model.ts',
    `--pipeline ${rel(argv.pipeline)}`,
    `--out ${rel(argv.out)}`,
    ...(argv.fp16 ? ['--fp16'] : []),
    ...(argv.clip ? [`--clip ${rel(argv.clip)}`] : []),
    ...(argv['tokenizer-id'] !== DEFAULT_CLIP_MODEL_ID ? [`--tokenizer-id ${argv['tokenizer-id']}`] : []),
    ...(argv.recipe ? ['--recipe "..."'] : []),
  ].join(' ');
  const envLocal = process.env[LOCAL_MODELS_ENV];
  const checkDir = argv['local-models'] ?? (envLocal && envLocal.trim() !== '' ? envLocal : undefined);
  const r = await bundlePipeline({
    pipelineDir: argv.pipeline,
    outDir: argv.out,
    fp16: argv.fp16,
    clipDir: argv.clip,
    tokenizerId: argv['tokenizer-id'],
    tokenizerCheckDir: checkDir,
    recipe: argv.recipe,
    runConfigFile: argv['run-config'],
    command,
    log: argv.quiet ? undefined : (l) => console.log(l),
  });
  if (!argv.quiet) {
    for (const f of r.files) console.log(`  ${f.path.padEnd(48)} ${String(f.bytes).padStart(10)}`);
    if (r.tokenizerChecked === false) console.log(`note: the tokenizer was not checked (pass --local-models DIR holding ${argv['tokenizer-id']}/ to check it)`);
  }
  console.log(
    `bundled ${rel(argv.pipeline)} -> ${rel(r.outDir)}: ${r.files.length} files, ${(r.totalBytes / 1e6).toFixed(2)} MB (source ${(r.sourceBytes / 1e6).toFixed(2)} MB)`,
  );
});
