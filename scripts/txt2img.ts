/**
 * txt2img: generate images from a text prompt (or a class label) with a trained pipeline.
 *
 *   npx txt2img "a smiling face" --cfg 7
 *   npx txt2img --model runs/mnist/pipeline --label 3 --n 8 --out threes.png
 *
 * Only light modules load before the arguments are parsed (`--help` loads no tfjs); the rest
 * loads once there is work to do.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { RUNTIME_CHOICES, parseRuntimeName } from '../src/onnx/runtime-choice.js';
import { SAMPLER_NAMES } from '../src/schedulers/names.js';
import { LOCAL_MODELS_ENV } from '../src/text/local-models.js';
import { cliArgs, finiteNumber, integer, parseStrict, runCli } from './cli.js';

await runCli(async () => {
  const argv = await parseStrict(
    cliArgs('txt2img', '$0 [prompt..] [options]\n\nGenerate images with a txt2img pipeline folder.')
      .positional('prompt', { type: 'string', array: true, describe: 'prompt(s); each gives --n images' })
      .option('model', { type: 'string', describe: 'pipeline folder (default: the bundled models/default)' })
      .option('negative', { type: 'string', describe: 'negative prompt (replaces the unconditional context)' })
      .option('cfg', { type: 'string', default: '7', describe: 'classifier-free guidance scale (1 = no guidance)' })
      .option('steps', { type: 'string', default: '25', describe: 'denoising steps' })
      .option('sampler', {
        type: 'string',
        default: 'ddim',
        describe: `sampler: a type (${SAMPLER_NAMES.filter((n) => /^[a-z]/.test(n)).join(' | ')}) or an AUTOMATIC1111 name ('Euler a', 'DPM++ 2M Karras', ...)`,
      })
      .option('eta', { type: 'string', default: '0', describe: 'DDIM eta (0 = deterministic)' })
      .option('seed', { type: 'string', default: '0', describe: 'seed of all noise' })
      .option('n', { type: 'string', default: '1', describe: 'images per prompt (saved as a grid)' })
      .option('out', { type: 'string', default: 'txt2img.png', describe: 'output PNG' })
      .option('separate', { type: 'boolean', default: false, describe: 'also write each image of a grid as its own file' })
      .option('label', { type: 'string', array: true, describe: 'class label(s) or class name(s), for label-conditioned models' })
      .option('save-steps', { type: 'boolean', default: false, describe: 'write the x0 estimate of every step as <out>-steps.png and .webp' })
      .option('local-models', { type: 'string', describe: `folder of local transformers.js models (env ${LOCAL_MODELS_ENV})` })
      .option('runtime', {
        type: 'string',
        default: 'auto',
        describe: `what computes the U-Net: ${RUNTIME_CHOICES.join(' | ')} (onnx: onnxruntime-node on the CPU; auto: onnx unless the backend is on a GPU or onnxruntime-node is missing)`,
      })
      .option('quiet', { type: 'boolean', default: false, describe: 'no progress bar' }),
  );

  const opts = {
    prompts: (argv._ as (string | number)[]).map(String),
    labels: argv.label?.map((l) => (/^\d+$/.test(l) ? Number(l) : l)),
    negative: argv.negative,
    cfg: finiteNumber(argv.cfg, '--cfg'),
    steps: integer(argv.steps, '--steps', 1),
    sampler: argv.sampler,
    eta: finiteNumber(argv.eta, '--eta'),
    seed: integer(argv.seed, '--seed', 0),
    n: integer(argv.n, '--n', 1),
    out: argv.out,
    separate: argv.separate,
    saveSteps: argv['save-steps'],
    clip: argv['local-models'] ? { localModelPath: argv['local-models'] } : undefined,
    quiet: argv.quiet,
  };
  const runtimeChoice = parseRuntimeName(RUNTIME_CHOICES, argv.runtime, '--runtime', 'U-Net runtime');
  const [{ initBackend }, { resolveRuntime }, { runTxt2Img }, { defaultModelDir }] = await Promise.all([
    import('../src/backend/index.js'),
    import('../src/onnx/runtime.js'),
    import('../src/pipeline/txt2img.js'),
    import('../src/pipeline/text-to-image.js'),
  ]);
  const model = argv.model ?? defaultModelDir();
  if (argv.model === undefined && !existsSync(path.join(model, 'model_index.json'))) {
    throw new Error(`no bundled default model at ${model}; pass --model <pipeline folder> (train one with scripts/train.ts)`);
  }
  const backend = await initBackend({ backend: argv.backend });
  const { runtime, why } = await resolveRuntime(runtimeChoice, backend);
  const t0 = performance.now();
  const { files } = await runTxt2Img({ ...opts, model, runtime, runtimeWhy: why });
  console.error(`wrote ${files.join(', ')} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
});
