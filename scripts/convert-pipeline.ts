/**
 * Converts a pipeline folder to diffusers' format (StableDiffusionPipeline's model_index.json,
 * diffusers' scheduler keys, transformers' CLIPTextModel + tokenizer; the U-Net and VAE are loaded
 * and saved through their component classes), once:
 *
 *   npx tsx scripts/convert-pipeline.ts --in models/default            (in place)
 *   npx tsx scripts/convert-pipeline.ts --in runs/old/pipeline --out runs/old/pipeline-diffusers
 *
 * Folders in the earlier txt2img format keep loading without it; see docs/diffusers.md.
 */
import { cliArgs, parseStrict, runCli } from './cli.js';

await runCli(async () => {
  const argv = await parseStrict(
    cliArgs('convert-pipeline', "$0 --in DIR [--out DIR]\n\nRewrites a pipeline folder in diffusers' format.")
      .option('in', { type: 'string', demandOption: true, describe: 'the pipeline folder to convert' })
      .option('out', { type: 'string', describe: 'where to write it (default: replace --in, atomically)' })
      .option('dtype', { type: 'string', choices: ['F32', 'F16'], describe: "weights' element type (default: the source U-Net's)" })
      .option('local-models', { type: 'string', describe: 'folder of local transformers.js models (for a text encoder not inside the folder)' }),
  );
  const [{ initBackend }, { convertPipelineFolder }] = await Promise.all([import('../src/backend/index.js'), import('../src/pipeline/convert.js')]);
  await initBackend({ backend: argv.backend, quiet: true });
  const t0 = performance.now();
  const r = await convertPipelineFolder(argv.in, argv.out ?? argv.in, {
    clip: argv['local-models'] ? { localModelPath: argv['local-models'] } : undefined,
    dtype: argv.dtype as 'F32' | 'F16' | undefined,
  });
  console.error(
    `converted ${argv.in} (${r.from === 'diffusers' ? 'already diffusers format; rewritten' : 'txt2img format 1'}) to diffusers' format in ${r.out} (${r.dtype} weights)` +
      `${r.kept.length ? `, keeping ${r.kept.join(', ')}` : ''} (${((performance.now() - t0) / 1000).toFixed(1)} s)`,
  );
});
