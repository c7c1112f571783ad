/**
 * Writes a tiny CLIP-architecture text model with RANDOM, NOT PRETRAINED weights (ONNX, in the
 * Hugging Face / transformers.js folder layout) for tests and offline runs. See src/text/tiny-clip.ts.
 *
 *   npx tsx scripts/make-tiny-clip.ts --out <dir> [--tokenizer <dir>] --seed 0 [--hidden 64 --layers 2 --heads 2]
 *
 * The tokenizer defaults to the real CLIP tokenizer the bundled model carries (models/default/tokenizer).
 *
 * Load it with `TXT2IMG_LOCAL_MODELS=<parent of out>` and model id `<basename of out>`, or with
 * the folder itself as the model id.
 */
import path from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { packageRoot } from '../src/pipeline/text-to-image.js';
import { TINY_CLIP_NOTE, writeTinyClipModel } from '../src/text/tiny-clip.js';

async function main(): Promise<void> {
  const argv = await yargs(hideBin(process.argv))
    .scriptName('make-tiny-clip')
    .usage('$0 --out <dir> [--tokenizer <dir>] [options]\n\nWrites a tiny CLIP-architecture text model with random weights (not pretrained).')
    .option('out', { type: 'string', demandOption: true, describe: 'model folder to write (e.g. <models>/tiny-random-clip)' })
    .option('tokenizer', {
      type: 'string',
      describe: "folder with a CLIP tokenizer (tokenizer.json, tokenizer_config.json, ...); default: the bundled model's, models/default/tokenizer",
    })
    .option('seed', { type: 'number', default: 0, describe: 'seed of the weights' })
    .option('hidden', { type: 'number', default: 64, describe: 'hidden size (= context dim)' })
    .option('layers', { type: 'number', default: 2, describe: 'transformer layers' })
    .option('heads', { type: 'number', default: 2, describe: 'attention heads (must divide hidden)' })
    .option('intermediate', { type: 'number', describe: 'MLP width (default 4 * hidden)' })
    .option('projection-dim', { type: 'number', describe: 'text_embeds width (default hidden)' })
    .option('vocab', { type: 'number', default: 49408, describe: 'vocabulary rows' })
    .option('max-positions', { type: 'number', default: 77, describe: 'position rows (longest sequence)' })
    .option('quantized-copy', { type: 'boolean', default: true, describe: 'also write onnx/text_model_quantized.onnx (identical float32 copy)' })
    .strict()
    .help()
    .parseAsync();

  const t0 = Date.now();
  const r = writeTinyClipModel({
    outDir: argv.out,
    tokenizerDir: argv.tokenizer ?? path.join(packageRoot(), 'models', 'default', 'tokenizer'),
    seed: argv.seed,
    hidden: argv.hidden,
    layers: argv.layers,
    heads: argv.heads,
    intermediate: argv.intermediate,
    projectionDim: argv['projection-dim'],
    vocabSize: argv.vocab,
    maxPositions: argv['max-positions'],
    quantizedCopy: argv['quantized-copy'],
  });
  const c = r.config;
  console.log(`wrote a tiny CLIP-architecture text model -- ${TINY_CLIP_NOTE.toUpperCase()} -- to ${r.outDir}`);
  console.log(
    `  hidden ${c.hidden}, layers ${c.layers}, heads ${c.heads}, mlp ${c.intermediate}, projection ${c.projectionDim}, ` +
      `vocab ${c.vocabSize}, positions ${c.maxPositions}, seed ${c.seed}: ${r.numParams.toLocaleString('en-US')} parameters, ` +
      `${(r.onnxBytes / 1e6).toFixed(1)} MB ONNX (${Date.now() - t0} ms)`,
  );
  console.log(`  files: ${r.files.join(', ')}`);
  console.log(
    `  load it with TXT2IMG_LOCAL_MODELS=${path.dirname(r.outDir)} and model id '${path.basename(r.outDir)}' ` +
      `(or the folder path as model id). Its embeddings carry no meaning: ${TINY_CLIP_NOTE}.`,
  );
}

main().catch((e: unknown) => {
  console.error(`make-tiny-clip: ${(e as Error).message ?? String(e)}`);
  process.exit(1);
});
