/**
 * txt2img img2img: edit an image with a pipeline: img2img (--strength) and inpainting (--mask,
 * white = repaint). Runs as `npx txt2img img2img ...` (scripts/txt2img.ts dispatches here) or
 * `npx tsx scripts/img2img.ts ...`.
 *
 *   npx txt2img img2img --init photo.png --strength 0.6 "a smiling face"
 *   npx txt2img img2img --init photo.png --mask mask.png --strength 1 "a red square" --out fixed.png
 */
import { existsSync } from 'node:fs';
import { INPAINTING_FILLS, RESIZE_MODES, parseInpaintingFill, parseResizeMode } from '../src/image/edit-names.js';
import { cliArgs, finiteNumber, integer, parseStrict, runCli } from './cli.js';
import { generationOptions, generationSettings } from './generation-options.js';

await runCli(async () => {
  const argv = await parseStrict(
    generationOptions(
      cliArgs(
        'txt2img img2img',
        '$0 --init FILE [--mask FILE] [prompt..] [options]\n\nimg2img and inpainting: redraw an image (or its masked part) with a pipeline folder.',
      ),
    )
      .option('init', { type: 'string', demandOption: true, describe: 'the image to start from (PNG, JPEG, WebP...; any size and mode)' })
      .option('strength', { type: 'string', default: '0.75', describe: 'denoising strength: 0 returns the input, 1 ignores it' })
      .option('mask', { type: 'string', describe: "inpainting: a mask the init image's size, white = repaint (or its alpha, when transparent)" })
      .option('mask-blur', { type: 'string', default: '4', describe: 'Gaussian blur of the mask edge, in pixels (A1111 mask_blur)' })
      .option('mask-invert', { type: 'boolean', default: false, describe: 'repaint the black part instead' })
      .option('only-masked', {
        type: 'boolean',
        default: false,
        describe: "inpaint only the masked area at the model's size, then paste it back (A1111 inpaint_full_res)",
      })
      .option('padding', { type: 'string', default: '32', describe: 'with --only-masked: pixels of context around the mask (A1111 inpaint_full_res_padding)' })
      .option('fill', { type: 'string', default: 'original', describe: `what the masked area starts from: ${INPAINTING_FILLS.join(' | ')}` })
      .option('resize-mode', {
        type: 'string',
        default: 'just-resize',
        describe: `how the image meets the model's size: ${RESIZE_MODES.map((m) => m.toLowerCase().replace(/ /g, '-')).join(' | ')}`,
      }),
  );
  const { runtimeChoice, ...opts } = generationSettings(argv);
  const edit = {
    init: argv.init,
    mask: argv.mask,
    strength: finiteNumber(argv.strength, '--strength'),
    maskBlur: integer(argv['mask-blur'], '--mask-blur', 0, 64),
    maskInvert: argv['mask-invert'],
    onlyMasked: argv['only-masked'],
    padding: integer(argv.padding, '--padding', 0, 1024),
    fill: parseInpaintingFill(argv.fill),
    resizeMode: parseResizeMode(argv['resize-mode']),
  };
  if (edit.strength < 0 || edit.strength > 1) throw new Error(`--strength must be a number from 0 to 1, got '${argv.strength}'`);
  for (const [flag, file] of [
    ['--init', edit.init],
    ['--mask', edit.mask],
  ] as const) {
    if (file !== undefined && !existsSync(file)) throw new Error(`${flag} ${file}: no such file`);
  }
  const [{ initBackend }, { resolveRuntime }, { runImg2Img }, { modelFolder }] = await Promise.all([
    import('../src/backend/index.js'),
    import('../src/onnx/runtime.js'),
    import('../src/pipeline/img2img.js'),
    import('../src/pipeline/text-to-image.js'),
  ]);
  const model = await modelFolder(argv.model);
  const backend = await initBackend({ backend: argv.backend });
  const { runtime, why } = await resolveRuntime(runtimeChoice, backend);
  const t0 = performance.now();
  const { files } = await runImg2Img({ ...opts, ...edit, model, runtime, runtimeWhy: why });
  console.error(`wrote ${files.join(', ')} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
});
