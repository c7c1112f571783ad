/**
 * U-Net forward ms, tfjs vs onnxruntime (src/bench/onnx.ts), on ldm-small.json's U-Net or the
 * U-Net of a saved config.json (random weights either way).
 *
 *   TXT2IMG_THREADS=1 npx tsx scripts/bench-onnx.ts --backend wasm --batch 128 --threads 1
 *   TXT2IMG_THREADS=1 npx tsx scripts/bench-onnx.ts --backend wasm --unet-config runs/x/pipeline/unet/config.json --batch 8
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend } from '../src/backend/index.js';
import { benchUNetRuntimes } from '../src/bench/onnx.js';
import { parseUNetConfig, unetConfigFromLdmSmall } from '../src/unet/config.js';
import { cliArgs, integer, parseStrict, runCli } from './cli.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

await runCli(async () => {
  const argv = await parseStrict(
    cliArgs('bench-onnx', '$0 [options]\n\nU-Net forward time: tfjs backend vs onnxruntime-node (CPU).')
      .option('unet-config', { type: 'string', describe: "a saved unet/config.json (default: ldm-small.json's U-Net)" })
      .option('batch', { type: 'string', default: '128', describe: "U-Net batch (ldm-small's figure: 2 x sampleBatch = 128)" })
      .option('threads', { type: 'string', default: '1', describe: 'onnxruntime intra-op threads (wasm: TXT2IMG_THREADS)' })
      .option('repeat', { type: 'string', default: '3', describe: 'timed runs' })
      .option('warmup', { type: 'string', default: '1', describe: 'untimed runs' }),
  );
  const file = argv['unet-config'] ?? path.resolve(repoRoot, '../shared/bench/ldm-small.json');
  const json = JSON.parse(readFileSync(file, 'utf8'));
  const config = argv['unet-config'] ? parseUNetConfig(json) : unetConfigFromLdmSmall(json);
  const name = argv['unet-config'] ?? 'ldm-small';
  const backend = await initBackend({ backend: argv.backend });
  const r = await benchUNetRuntimes({
    config,
    batch: integer(argv.batch, '--batch', 1),
    threads: integer(argv.threads, '--threads', 1),
    repeat: integer(argv.repeat, '--repeat', 1),
    warmup: integer(argv.warmup, '--warmup', 0),
  });
  console.log(
    `${name} U-Net forward, batch ${argv.batch}: tfjs ${backend.name} ${r.tfjsMs.toFixed(1)} ms, onnxruntime (${argv.threads} thread(s)) ${r.onnxMs.toFixed(1)} ms, ratio ${(r.tfjsMs / r.onnxMs).toFixed(2)}x; export ${r.onnxExportMs.toFixed(0)} ms; max |diff| ${r.maxAbsDiff.toExponential(2)}`,
  );
});
