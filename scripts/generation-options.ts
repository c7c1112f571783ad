/**
 * The options `txt2img` and `txt2img img2img` share (prompt, model, sampler, seed, ...), and
 * their parsing into the Txt2ImgOptions fields. Light: no tfjs until there is work to do.
 */
import type { Argv } from 'yargs';
import { RUNTIME_CHOICES, parseRuntimeName } from '../src/onnx/runtime-choice.js';
import { SAMPLER_NAMES } from '../src/schedulers/names.js';
import { LOCAL_MODELS_ENV } from '../src/text/local-models.js';
import { finiteNumber, integer } from './cli.js';

export function generationOptions<T>(y: Argv<T>) {
  return y
    .positional('prompt', { type: 'string', array: true, describe: 'prompt(s); each gives --n images' })
    .option('model', { type: 'string', describe: 'pipeline folder, or a Hugging Face hub id org/name (default: the bundled models/default)' })
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
    .option('local-models', { type: 'string', describe: `folder of local transformers.js models (env ${LOCAL_MODELS_ENV})` })
    .option('runtime', {
      type: 'string',
      default: 'auto',
      describe: `what computes the U-Net: ${RUNTIME_CHOICES.join(' | ')} (onnx: onnxruntime-node on the CPU; auto: onnx unless the backend is on a GPU or onnxruntime-node is missing)`,
    })
    .option('quiet', { type: 'boolean', default: false, describe: 'no progress bar' });
}

type Parsed = { _: (string | number)[]; [key: string]: unknown };

/** The shared options as Txt2ImgOptions fields (without model and runtime), each checked. */
export function generationSettings(argv: Parsed) {
  const label = argv.label as string[] | undefined;
  return {
    prompts: argv._.map(String),
    labels: label?.map((l) => (/^\d+$/.test(l) ? Number(l) : l)),
    negative: argv.negative as string | undefined,
    cfg: finiteNumber(argv.cfg, '--cfg'),
    steps: integer(argv.steps, '--steps', 1),
    sampler: argv.sampler as string,
    eta: finiteNumber(argv.eta, '--eta'),
    seed: integer(argv.seed, '--seed', 0),
    n: integer(argv.n, '--n', 1),
    out: argv.out as string,
    separate: argv.separate as boolean,
    clip: argv['local-models'] ? { localModelPath: argv['local-models'] as string } : undefined,
    quiet: argv.quiet as boolean,
    runtimeChoice: parseRuntimeName(RUNTIME_CHOICES, String(argv.runtime), '--runtime', 'U-Net runtime'),
  };
}
