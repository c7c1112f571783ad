/**
 * Runs our ldm-small benchmark (scripts/bench.ts), then the PyTorch CPU peer
 * (../shared/bench/peer_torch.py), one after the other (`--rounds N`: N times, alternated), and
 * prints both with the ratios.
 *
 *   npm run bench:compare
 *   npm run bench:compare -- --repeat 3 --threads 2
 *   npm run bench:compare -- --repeat 3 --threads 2 --rounds 3   (alternated; medians and per-round ratios)
 *   npm run bench:compare -- --runtime tfjs          (everything in tfjs)
 *   npm run bench:compare -- --workers 2 --runtime tfjs   (tfjs, data-parallel)
 */
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BenchResult, FIGURE_NAMES, type FigureName } from '../src/bench/bench.js';
import { PYTHON, type PeerResult, checkPython, formatComparison, medianOfPeerRounds, medianOfRounds, mergeBenchResults } from '../src/bench/compare.js';
import { RUNTIME_CHOICES, parseRuntimeName } from '../src/onnx/runtime.js';
import { MAX_WORKERS } from '../src/train/data-parallel.js';
import { cliArgs, integer, parseStrict, runCli } from './cli.js';

const TRAIN_FIGURES: FigureName[] = ['vae_train_step_ms', 'unet_train_step_ms'];

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Runs a command; stdout is collected, stderr is passed through live (and collected). */
function run(cmd: string, args: string[], cwd: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      process.stderr.write(d);
    });
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** Runs the peer script as __main__ and reports its peak RSS (KiB) on stderr; the peer itself is unchanged. */
const PEER_WRAPPER = [
  'import resource, runpy, sys',
  'sys.argv = sys.argv[1:]',
  'try:',
  '    runpy.run_path(sys.argv[0], run_name="__main__")',
  'finally:',
  '    print("peer_peak_rss_kib=%d" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)',
].join('\n');

function lastJsonLine(stdout: string, who: string): unknown {
  const line = stdout
    .trim()
    .split('\n')
    .reverse()
    .find((l) => l.trim().startsWith('{'));
  if (!line) throw new Error(`${who} printed no JSON result`);
  return JSON.parse(line);
}

await runCli(async () => {
  const argv = await parseStrict(
    cliArgs('bench-compare', '$0 [options]\n\nOur benchmark, then the PyTorch peer, on this machine; a table of both and the ratios ours / PyTorch.')
      .option('config', { type: 'string', default: '../shared/bench/ldm-small.json', describe: 'benchmark file (relative paths: to the repository root)' })
      .option('peer', { type: 'string', default: '../shared/bench/peer_torch.py', describe: 'the PyTorch peer script' })
      .option('repeat', { type: 'string', default: '5', describe: 'timed runs per figure, both sides' })
      .option('threads', { type: 'string', describe: 'threads, both sides (default: the number of cores)' })
      .option('workers', {
        type: 'string',
        describe:
          'ours: data-parallel shards of the training figures, 1 thread each (default as train: one per thread with the onnx runtime, else 1; with --runtime tfjs and N > 1: a separate training run at 1 wasm thread per worker, sampling keeps --threads)',
      })
      .option('runtime', {
        type: 'string',
        default: 'auto',
        describe: `ours: what computes the training gradients and the sampling U-Net: ${RUNTIME_CHOICES.join(' | ')} (auto: onnxruntime-node on a CPU backend where it loads)`,
      })
      .option('rounds', {
        type: 'string',
        default: '1',
        describe:
          "ours then PyTorch, this many times alternated; the table shows the medians and each round's ratios (the host's drift then falls on both sides)",
      })
      .option('json', {
        type: 'boolean',
        default: false,
        describe: 'stdout is one JSON object { ours, peer, table } (with rounds: the medians, and oursRounds, peerRounds)',
      }),
  );

  const repeat = integer(argv.repeat, '--repeat', 1);
  const threads = argv.threads === undefined ? os.cpus().length : integer(argv.threads, '--threads', 1);
  const config = path.resolve(repoRoot, argv.config);
  const peerScript = path.resolve(repoRoot, argv.peer);
  const missing = checkPython();
  if (missing) throw new Error(missing);

  // 1. ours, in a child process so that nothing of it (wasm threads, heap) overlaps the peer; with
  // tfjs workers the training figures come from a second run at 1 wasm thread per worker.
  const workers = argv.workers === undefined ? undefined : integer(argv.workers, '--workers', 1, MAX_WORKERS);
  const runtime = parseRuntimeName(RUNTIME_CHOICES, argv.runtime, '--runtime');
  const base = ['--import', 'tsx', path.join(repoRoot, 'scripts', 'bench.ts'), '--json', '--config', config, '--repeat', String(repeat)];
  if (argv.backend) base.push('--backend', argv.backend);
  const runs: string[][] =
    workers !== undefined && workers > 1 && runtime === 'tfjs'
      ? [
          [...base, '--threads', '1', '--runtime', runtime, '--workers', String(workers), '--only', TRAIN_FIGURES.join(',')],
          [...base, '--threads', String(threads), '--runtime', runtime, '--only', FIGURE_NAMES.filter((f) => !TRAIN_FIGURES.includes(f)).join(',')],
        ]
      : [[...base, '--threads', String(threads), '--runtime', runtime, ...(workers === undefined ? [] : ['--workers', String(workers)])]];
  const rounds = integer(argv.rounds, '--rounds', 1);
  const peerArgs = [peerScript, '--json', '--config', config, '--repeat', String(repeat), '--threads', String(threads)];
  const oursRounds: BenchResult[] = [];
  const peerRounds: PeerResult[] = [];
  let loadBeforeOurs: number[] = [];
  let loadBeforePeer: number[] = [];
  let oursFailed = false;
  for (let round = 0; round < rounds; round++) {
    const tag = rounds > 1 ? ` round ${round + 1}/${rounds}` : '';
    if (round === 0) loadBeforeOurs = os.loadavg();
    const results: BenchResult[] = [];
    for (const args of runs) {
      console.error(
        `== ours${tag} (load ${os
          .loadavg()
          .map((x) => x.toFixed(2))
          .join(' ')}): node ${args.slice(2).join(' ')}`,
      );
      const o = await run(process.execPath, args, repoRoot);
      results.push(lastJsonLine(o.stdout, 'our benchmark') as BenchResult);
      if (o.status !== 0) oursFailed = true;
    }
    oursRounds.push(results.length === 2 ? mergeBenchResults(results[0], results[1]) : results[0]);

    // 2. the PyTorch peer.
    if (round === 0) loadBeforePeer = os.loadavg();
    console.error(
      `== PyTorch${tag} (load ${os
        .loadavg()
        .map((x) => x.toFixed(2))
        .join(' ')}): ${PYTHON} ${peerArgs.join(' ')}`,
    );
    const p = await run(PYTHON, ['-c', PEER_WRAPPER, ...peerArgs], repoRoot);
    if (p.status !== 0) throw new Error(`${PYTHON} ${path.basename(peerScript)} exited with ${p.status}\n${checkPython() ?? ''}`);
    const peer = lastJsonLine(p.stdout, 'peer_torch.py') as PeerResult;
    const rss = /peer_peak_rss_kib=(\d+)/.exec(p.stderr);
    if (rss) peer.peakRssBytes = Number(rss[1]) * 1024;
    peerRounds.push(peer);
  }
  const ours = medianOfRounds(oursRounds);
  const peer = medianOfPeerRounds(peerRounds);

  const command = `npm run bench:compare -- --repeat ${repeat} --threads ${threads}${rounds > 1 ? ` --rounds ${rounds}` : ''}${workers !== undefined ? ` --workers ${workers}` : ''}${runtime !== 'auto' ? ` --runtime ${runtime}` : ''}${argv.backend ? ` --backend ${argv.backend}` : ''}`;
  const table = formatComparison(ours, peer, { loadBeforeOurs, loadBeforePeer, command, rounds: { ours: oursRounds, peer: peerRounds } });
  if (argv.json) console.log(JSON.stringify({ ours, peer, loadBeforeOurs, loadBeforePeer, table, ...(rounds > 1 ? { oursRounds, peerRounds } : {}) }));
  else console.log(table);
  if (oursFailed) process.exitCode = 1;
});
