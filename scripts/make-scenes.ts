/**
 * Writes the synthetic captioned scene dataset (faces with expressions and coloured shapes).
 *
 *   npx tsx scripts/make-scenes.ts --out data/scenes --count 20000 --size 32 --seed 0
 *
 * Train on `<out>/train`; `<out>/heldout` holds the attribute combinations kept out of training
 * (listed in `<out>/dataset.json`). See src/data/scenes/generate.ts.
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { MAX_SCENE_COUNT, SCENE_IMAGE_SIZES, validateSceneDatasetOptions, writeSceneDataset, type SceneDatasetOptions } from '../src/data/scenes/index.js';

async function main(): Promise<void> {
  const argv = await yargs(hideBin(process.argv))
    .scriptName('make-scenes')
    .usage('$0 --out <dir> [options]\n\nWrites captioned synthetic scenes: <out>/train, <out>/heldout and <out>/dataset.json.')
    .option('out', { type: 'string', demandOption: true, describe: 'output folder' })
    .option('count', { type: 'string', default: '20000', describe: `train images (1..${MAX_SCENE_COUNT})` })
    .option('heldout', { type: 'string', describe: 'held-out images (default ceil(count / 20))' })
    .option('size', { type: 'string', default: '32', describe: `image side (${SCENE_IMAGE_SIZES.join(' or ')})` })
    .option('seed', { type: 'string', default: '0', describe: 'random seed (non-negative integer)' })
    .option('metadata', { type: 'boolean', default: false, describe: 'also write metadata.jsonl (Hugging Face imagefolder style)' })
    .option('overwrite', { type: 'boolean', default: false, describe: 'replace the files of an earlier run in <out>' })
    .option('quiet', { type: 'boolean', default: false, describe: 'no progress lines' })
    .strict()
    .help()
    .parseAsync();

  const fail = (message: string): never => {
    console.error(`make-scenes: ${message}`);
    process.exit(2);
  };
  /** Strings as given on the command line, so an error can quote them. */
  const num = (name: string, raw: string | undefined): number | undefined => {
    if (raw === undefined) return undefined;
    const v = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(v)) fail(`--${name} must be a number, got ${JSON.stringify(raw)}`);
    return v;
  };
  const options: SceneDatasetOptions = {
    outDir: argv.out,
    count: num('count', argv.count)!,
    heldoutCount: num('heldout', argv.heldout),
    size: num('size', argv.size),
    seed: num('seed', argv.seed),
    metadata: argv.metadata,
    overwrite: argv.overwrite,
    onProgress: argv.quiet
      ? undefined
      : (split, done, total) => {
          if (done % 5000 === 0 || done === total) console.log(`  ${split}: ${done}/${total}`);
        },
  };
  try {
    validateSceneDatasetOptions(options);
  } catch (e) {
    const flags: Record<string, string> = { outDir: '--out', count: '--count', heldoutCount: '--heldout', size: '--size', seed: '--seed' };
    fail((e as Error).message.replace(/^(outDir|count|heldoutCount|size|seed)\b/, (m) => flags[m]));
  }
  const r = writeSceneDataset(options);
  const { counts, size, seed } = r.summary;
  console.log(`wrote ${counts.train} train + ${counts.heldout} held-out scenes (${size}x${size}, seed ${seed}) to ${r.outDir} in ${r.seconds.toFixed(1)} s`);
  console.log(`  train on ${r.dirs.train}; held-out combinations (${r.summary.heldOutCombinations.length}) in ${r.dirs.heldout}; summary in dataset.json`);
}

main().catch((e) => {
  console.error(`make-scenes: ${(e as Error).message}`);
  process.exit(1);
});
