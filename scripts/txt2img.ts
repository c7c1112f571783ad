/**
 * txt2img: generate images from a text prompt (or a class label) with a trained pipeline.
 *
 *   npx txt2img "a smiling face" --cfg 7
 *   npx txt2img --model runs/mnist/pipeline --label 3 --n 8 --out threes.png
 *   npx txt2img img2img --init photo.png --strength 0.6 "a smiling face"     (scripts/img2img.ts)
 *   npx txt2img serve                                                        (scripts/serve.ts)
 *
 * Only light modules load before the arguments are parsed (`--help` loads no tfjs); the rest
 * loads once there is work to do.
 */
import { cliArgs, finiteNumber, parseStrict, runCli } from './cli.js';
import { generationOptions, generationSettings } from './generation-options.js';

/** Subcommands, recognised as the first argument only (`txt2img -- serve` draws the word). */
const SUBCOMMANDS: Record<string, string> = { img2img: './img2img.js', serve: './serve.js' };

const sub = process.argv[2];
if (sub !== undefined && Object.hasOwn(SUBCOMMANDS, sub)) {
  process.argv.splice(2, 1);
  await import(SUBCOMMANDS[sub]);
} else {
  await runCli(async () => {
    const argv = await parseStrict(
      generationOptions(
        cliArgs(
          'txt2img',
          '$0 [prompt..] [options]\n\nGenerate images with a txt2img pipeline folder.\n\n' +
            '  $0 img2img --init FILE [--mask FILE] [prompt..]   edit an image (see $0 img2img --help)\n' +
            '  $0 serve [--port N]                                the AUTOMATIC1111-compatible API and web page',
        ),
      )
        .option('save-steps', { type: 'boolean', default: false, describe: 'write the x0 estimate of every step as <out>-steps.png and .webp' })
        .option('width', { type: 'string', describe: "image width in pixels (default: the model's size, or the --latents file's)" })
        .option('height', { type: 'string', describe: "image height in pixels (default: the model's size, or the --latents file's)" })
        .option('latents', {
          type: 'string',
          describe: "initial latents (.npy or .safetensors, NCHW [B, 4, h, w] standard normals, as diffusers' latents=) instead of the seed's",
        }),
    );
    const { runtimeChoice, ...opts } = generationSettings(argv);
    // Numbers here; the range and the model's multiple are checked where the request is (txt2img.ts, pipeline.ts).
    const width = argv.width === undefined ? undefined : finiteNumber(argv.width, '--width');
    const height = argv.height === undefined ? undefined : finiteNumber(argv.height, '--height');
    const [{ initBackend }, { resolveRuntime }, { runTxt2Img }, { modelFolder }] = await Promise.all([
      import('../src/backend/index.js'),
      import('../src/onnx/runtime.js'),
      import('../src/pipeline/txt2img.js'),
      import('../src/pipeline/text-to-image.js'),
    ]);
    const model = await modelFolder(argv.model);
    const backend = await initBackend({ backend: argv.backend });
    const { runtime, why } = await resolveRuntime(runtimeChoice, backend);
    const t0 = performance.now();
    const { files } = await runTxt2Img({ ...opts, width, height, saveSteps: argv['save-steps'], latents: argv.latents, model, runtime, runtimeWhy: why });
    console.error(`wrote ${files.join(', ')} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  });
}
