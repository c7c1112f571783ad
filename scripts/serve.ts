/**
 * txt2img serve: AUTOMATIC1111's API and a web page for a pipeline folder (src/server). Runs as
 * `npx txt2img serve ...` (scripts/txt2img.ts dispatches here) or `npx tsx scripts/serve.ts ...`.
 *
 *   npx txt2img serve                           # the bundled model on http://127.0.0.1:7860
 *   npx txt2img serve --models runs --listen --api-auth me:secret
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { RUNTIME_CHOICES, parseRuntimeName } from '../src/onnx/runtime-choice.js';
import { LOCAL_MODELS_ENV } from '../src/text/local-models.js';
import { cliArgs, integer, parseStrict, runCli } from './cli.js';

await runCli(async () => {
  const argv = await parseStrict(
    cliArgs('txt2img serve', "$0 [options]\n\nServe AUTOMATIC1111's API (/sdapi/v1/...) and a web page (/) for a pipeline folder.")
      .option('model', { type: 'string', describe: 'pipeline folder, or a Hugging Face hub id org/name, loaded first (default: the bundled models/default)' })
      .option('models', { type: 'string', describe: 'a folder of pipeline folders, offered by /sdapi/v1/sd-models' })
      .option('port', { type: 'string', default: '7860', describe: 'port (0: any free one)' })
      .option('listen', { type: 'boolean', default: false, describe: 'bind all interfaces (0.0.0.0) instead of 127.0.0.1' })
      .option('api-auth', { type: 'string', describe: 'user:password[,user2:password2]: HTTP basic auth on every route' })
      .option('max-steps', { type: 'string', default: '150', describe: 'largest steps a request may ask for' })
      .option('max-images', { type: 'string', default: '64', describe: 'largest n_iter x batch_size of a request' })
      .option('max-size', { type: 'string', default: '2048', describe: 'largest width/height of a result, and of an input image' })
      .option('max-body-mb', { type: 'string', default: '32', describe: 'largest request body, MB' })
      .option('local-models', { type: 'string', describe: `folder of local transformers.js models (env ${LOCAL_MODELS_ENV})` })
      .option('runtime', { type: 'string', default: 'auto', describe: `what computes the U-Net: ${RUNTIME_CHOICES.join(' | ')}` }),
  );
  const limits = {
    maxSteps: integer(argv['max-steps'], '--max-steps', 1, 10000),
    maxImages: integer(argv['max-images'], '--max-images', 1, 100000),
    maxSize: integer(argv['max-size'], '--max-size', 8, 16384),
    maxBody: integer(argv['max-body-mb'], '--max-body-mb', 1, 4096) * 1024 * 1024,
  };
  const port = integer(argv.port, '--port', 0, 65535);
  const runtimeChoice = parseRuntimeName(RUNTIME_CHOICES, argv.runtime, '--runtime', 'U-Net runtime');
  const auth = argv['api-auth']?.split(',').map((s) => s.trim());
  if (auth?.some((p) => p.indexOf(':') <= 0)) throw new Error(`--api-auth must be user:password (comma-separated for several), got '${argv['api-auth']}'`);
  const [{ initBackend }, { resolveRuntime, describeUNetRuntime }, { startServer }, { modelFolder }] = await Promise.all([
    import('../src/backend/index.js'),
    import('../src/onnx/runtime.js'),
    import('../src/server/server.js'),
    import('../src/pipeline/text-to-image.js'),
  ]);
  const model = await modelFolder(argv.model);
  if (!existsSync(path.join(model, 'model_index.json')))
    throw new Error(`${model} is not a pipeline folder (no model_index.json); pass --model <pipeline folder>`);
  const backend = await initBackend({ backend: argv.backend });
  const { runtime, why } = await resolveRuntime(runtimeChoice, backend);
  console.error(`${describeUNetRuntime(runtime)} (${why})`);
  const running = await startServer({
    model,
    models: argv.models,
    host: argv.listen ? '0.0.0.0' : '127.0.0.1',
    port,
    auth,
    limits,
    runtime,
    clip: argv['local-models'] ? { localModelPath: argv['local-models'] } : undefined,
  });
  console.error(`listening on ${running.url}${argv.listen ? ` (all interfaces, port ${running.port})` : ''}${auth ? ' with HTTP basic auth' : ''}`);
  const stop = () => {
    console.error('stopping: the running job finishes first');
    running.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
});
