/**
 * Load measurement of `txt2img serve`: N requests from C concurrent clients against a server in
 * its own process; prints whether all completed in order, the throughput, the tensor count and
 * the server's memory (RSS over the run and its peak). src/server/load-test.ts does the work.
 *
 *   npx tsx scripts/load-test.ts --requests 50 --clients 10 --steps 10
 */
import { cliArgs, emitReport, integer, parseStrict, runCli } from './cli.js';

await runCli(async () => {
  const argv = await parseStrict(
    cliArgs('load-test', '$0 [options]\n\nQueue N txt2img requests from C concurrent clients on a txt2img server and measure it.')
      .option('requests', { type: 'string', default: '50', describe: 'requests in all' })
      .option('clients', { type: 'string', default: '10', describe: 'concurrent clients, each sending its requests one after another' })
      .option('steps', { type: 'string', default: '10', describe: 'steps per request' })
      .option('batch-size', { type: 'string', default: '1', describe: 'images per request' })
      .option('model', { type: 'string', describe: 'pipeline folder (default: the bundled model)' })
      .option('runtime', { type: 'string', describe: "the server's --runtime (default: its own default, auto)" })
      .option('out', { type: 'string', describe: 'also write the Markdown report here' })
      .option('json', { type: 'boolean', default: false, describe: 'print one JSON object instead of Markdown' }),
  );
  const { runLoadTest } = await import('../src/server/load-test.js');
  const r = await runLoadTest({
    requests: integer(argv.requests, '--requests', 1, 100000),
    clients: integer(argv.clients, '--clients', 1, 1000),
    steps: integer(argv.steps, '--steps', 1, 1000),
    batchSize: integer(argv['batch-size'], '--batch-size', 1, 64),
    model: argv.model,
    runtime: argv.runtime,
    backend: argv.backend,
    log: argv.json ? undefined : (l) => console.error(l),
  });
  const mb = (v: number) => `${v.toFixed(0)} MB`;
  const markdown = [
    `| requests | clients | steps | completed | in order | nothing lost | time | images/s | RSS after warm-up | after the first tenth | at the end | peak (VmHWM) | tensors start / end |`,
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    `| ${r.requests} | ${r.clients} | ${r.steps} | ${r.completed} | ${r.inOrder ? 'yes' : 'NO'} | ${r.nothingLost ? 'yes' : 'NO'} | ${r.seconds.toFixed(1)} s | ${r.imagesPerSecond.toFixed(2)} | ${mb(r.rssMb.start)} | ${mb(r.rssMb.afterFirstTenth)} | ${mb(r.rssMb.end)} | ${mb(r.rssMb.peak)} | ${r.tensors.start} / ${r.tensors.end} |`,
    ...(r.failed.length ? ['', `failed: ${r.failed.map((f) => `${f.status} ${f.detail}`).join('; ')}`] : []),
  ].join('\n');
  emitReport(argv, markdown, () => r);
  if (r.completed !== r.requests || !r.inOrder || !r.nothingLost || r.tensors.end !== r.tensors.start) process.exitCode = 1;
});
