/**
 * SD-1.5-size speed and peak memory, ours against diffusers on PyTorch CPU, alternated round by
 * round (the host drifts and is shared): per round and part (unet, vae, text), our child process
 * (src/bench/sd15.ts) then the peer's (scripts/bench/sd15_peer.py), each under /usr/bin/time for
 * its peak RSS. Prints every round, the medians, and what a 512x512, 25-step image costs
 * (text encode + 25 guided steps + VAE decode), with `uptime` and the CPU model.
 *
 *   npm run bench:sd15
 *   npm run bench:sd15 -- --rounds 2 --steps 2 --warmup 1 --python /work/dvenv/bin/python
 *   npm run bench:sd15 -- --parts unet --scale tiny        (toy sizes: checks the plumbing)
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend } from '../src/backend/index.js';
import { SD15_PARTS, SD15_SCALES, type Sd15Part, benchSd15Part } from '../src/bench/sd15.js';
import { median } from '../src/bench/bench.js';
import { RUNTIME_CHOICES, parseRuntimeName, resolveRuntime } from '../src/onnx/runtime.js';
import { cliArgs, integer, parseStrict, runCli } from './cli.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TIME = '/usr/bin/time';

interface Measured {
  result: Record<string, unknown>;
  peakRssBytes: number;
  wallS: number;
  load: number[];
}

/** Runs a child under /usr/bin/time (its peak RSS); stdout collected, stderr passed through. */
function measure(cmd: string, args: string[]): Promise<Measured> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-sd15-'));
  const rssFile = path.join(dir, 'rss');
  const load = os.loadavg();
  const t0 = performance.now();
  return new Promise<Measured>((resolve, reject) => {
    const child = spawn(TIME, ['-f', '%M', '-o', rssFile, cmd, ...args], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.on('error', reject);
    child.on('close', (status) => {
      try {
        const wallS = (performance.now() - t0) / 1000;
        if (status !== 0) throw new Error(`${path.basename(cmd)} ${args.join(' ')} exited with ${status}`);
        const line = stdout
          .trim()
          .split('\n')
          .reverse()
          .find((l) => l.startsWith('{'));
        if (!line) throw new Error(`${path.basename(cmd)} ${args.join(' ')} printed no JSON result`);
        const kib = Number(readFileSync(rssFile, 'utf8').trim().split('\n').pop());
        resolve({ result: JSON.parse(line), peakRssBytes: kib * 1024, wallS, load });
      } catch (e) {
        reject(e);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}

const fmt = (x: number | undefined, digits = 1): string => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits));
const gib = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(2)} GiB`;
const loadText = (l: number[]): string => l.map((x) => x.toFixed(2)).join(' ');

/** The part's headline seconds: median U-Net step / the decode / median text encode. */
function headline(r: Record<string, unknown>, side: 'ours' | 'peer'): number {
  const list = (side === 'ours' ? r.timesS : (r.step_s ?? r.encode_s ?? [r.decode_s])) as number[];
  return median(list);
}

await runCli(async () => {
  const argv = await parseStrict(
    cliArgs('bench-sd15', '$0 [options]\n\nSD-1.5-size U-Net step, VAE decode at 512 and CLIP-L encode: ours against diffusers (PyTorch CPU), alternated.')
      .option('python', { type: 'string', default: '/work/dvenv/bin/python', describe: 'a python with torch, diffusers and transformers' })
      .option('rounds', { type: 'string', default: '2', describe: 'ours then diffusers, this many times (each round printed)' })
      .option('steps', { type: 'string', default: '2', describe: 'timed U-Net steps (and text encodes) per round' })
      .option('warmup', { type: 'string', default: '1', describe: 'untimed U-Net steps first (ours: the first includes tracing and the ONNX session)' })
      .option('parts', { type: 'string', default: SD15_PARTS.join(','), describe: `which parts: ${SD15_PARTS.join(', ')}` })
      .option('threads', { type: 'string', describe: 'threads, both sides (default: the number of cores)' })
      .option('runtime', { type: 'string', default: 'auto', describe: `ours: the sampling runtime, ${RUNTIME_CHOICES.join(' | ')}` })
      .option('scale', { type: 'string', default: 'sd15', describe: `${SD15_SCALES.join(' | ')} (tiny: toy sizes, ours only)` })
      .option('tokenizer', {
        type: 'string',
        default: 'models/default/tokenizer',
        describe: "CLIP tokenizer folder (ours' text part; relative: to the repository root)",
      })
      .option('seed', { type: 'string', default: '0' })
      .option('child', { type: 'string', hidden: true, describe: 'internal: run our side of one part and print its JSON' })
      .option('json', { type: 'boolean', default: false, describe: 'stdout: one JSON object with every round' }),
  );
  const steps = integer(argv.steps, '--steps', 1);
  const warmup = integer(argv.warmup, '--warmup', 1);
  const seed = integer(argv.seed, '--seed', 0);
  const threads = argv.threads === undefined ? os.cpus().length : integer(argv.threads, '--threads', 1, 256);
  const scale = parseRuntimeName(SD15_SCALES, argv.scale, '--scale', 'scale');
  const runtimeChoice = parseRuntimeName(RUNTIME_CHOICES, argv.runtime, '--runtime');
  const parts = argv.parts.split(',').map((p) => parseRuntimeName(SD15_PARTS, p, '--parts', 'part'));

  if (argv.child) {
    const part = parseRuntimeName(SD15_PARTS, argv.child, '--child', 'part');
    const backend = await initBackend({ threads });
    const { runtime, why } = await resolveRuntime(runtimeChoice, backend);
    console.error(`${backend.description}; U-Net runtime ${runtime}${why ? ` (${why})` : ''}`);
    const tokenizerDir = path.resolve(repoRoot, argv.tokenizer);
    const r = await benchSd15Part(part, { steps, warmup, seed, scale, runtime, tokenizerDir });
    console.log(JSON.stringify({ ...r, backend: backend.description }));
    return;
  }

  const cpu = (/^Model name:\s*(.+)$/m.exec(execFileSync('lscpu', { encoding: 'utf8' }))?.[1] ?? 'unknown').trim();
  const uptime = (): string => execFileSync('uptime', { encoding: 'utf8' }).trim();
  const rounds = integer(argv.rounds, '--rounds', 1);
  const common = ['--steps', String(steps), '--warmup', String(warmup), '--seed', String(seed), '--threads', String(threads)];
  const oursArgs = (part: Sd15Part) => [
    '--import',
    'tsx',
    path.join(repoRoot, 'scripts', 'bench-sd15.ts'),
    '--child',
    part,
    '--scale',
    scale,
    '--runtime',
    runtimeChoice,
    '--tokenizer',
    argv.tokenizer,
    ...common,
  ];
  const peerArgs = (part: Sd15Part) => [path.join(repoRoot, 'scripts', 'bench', 'sd15_peer.py'), '--part', part, ...common];
  const started = new Date().toISOString();
  console.error(`bench:sd15 ${started}; CPU ${cpu}, ${os.cpus().length} cores; ${uptime()}`);

  type Row = { round: number; part: Sd15Part; ours?: Measured; peer?: Measured; oursError?: string; peerError?: string };
  const rows: Row[] = [];
  for (let round = 1; round <= rounds; round++) {
    for (const part of parts) {
      const row: Row = { round, part };
      // A side that fails is reported in its row; the other side and the next parts still run.
      console.error(`== round ${round}/${rounds} ${part}: ours (${uptime()})`);
      try {
        row.ours = await measure(process.execPath, oursArgs(part));
        console.error(`   ours ${part}: ${JSON.stringify(row.ours.result)} peak RSS ${gib(row.ours.peakRssBytes)}`);
      } catch (e) {
        row.oursError = (e as Error).message;
        console.error(`   ours ${part} FAILED: ${row.oursError}`);
      }
      if (scale === 'sd15') {
        console.error(`== round ${round}/${rounds} ${part}: diffusers (${uptime()})`);
        try {
          row.peer = await measure(argv.python, peerArgs(part));
          console.error(`   diffusers ${part}: ${JSON.stringify(row.peer.result)} peak RSS ${gib(row.peer.peakRssBytes)}`);
        } catch (e) {
          row.peerError = (e as Error).message;
          console.error(`   diffusers ${part} FAILED: ${row.peerError}`);
        }
      }
      rows.push(row);
    }
  }
  const finished = new Date().toISOString();

  const lines: string[] = [];
  const command = `npm run bench:sd15 -- --rounds ${rounds} --steps ${steps} --warmup ${warmup} --threads ${threads} --parts ${parts.join(',')} --python ${argv.python}${runtimeChoice !== 'auto' ? ` --runtime ${runtimeChoice}` : ''}${scale !== 'sd15' ? ` --scale ${scale}` : ''}`;
  lines.push(`command: ${command}`);
  lines.push(`date: ${started} .. ${finished}; CPU: ${cpu}, ${os.cpus().length} cores; ${uptime()}`);
  const first = rows.find((r) => r.ours)?.ours?.result;
  if (first?.backend) lines.push(`ours: ${first.backend}; U-Net runtime ${rows.find((r) => r.part === 'unet')?.ours?.result.runtime ?? '-'}`);
  const peerInfo = rows.find((r) => r.peer)?.peer?.result;
  if (peerInfo) lines.push(`diffusers ${peerInfo.diffusers}, torch ${peerInfo.torch} (BLAS ${peerInfo.blas}), ${peerInfo.threads} threads`);
  lines.push('');
  lines.push(
    '| round | part | load before ours | ours s | ours first call s | ours init s | ours peak RSS | load before diffusers | diffusers s | diffusers init s | diffusers peak RSS | ours / diffusers |',
  );
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const o = r.ours;
    const p = r.peer;
    if (!o) {
      lines.push(
        `| ${r.round} | ${r.part} | ours failed: ${r.oursError} | | | | | ${p ? loadText(p.load) : '-'} | ${p ? fmt(headline(p.result, 'peer'), 2) : '-'} | ${p ? fmt(p.result.init_s as number, 1) : '-'} | ${p ? gib(p.peakRssBytes) : '-'} | - |`,
      );
      continue;
    }
    const os_ = headline(o.result, 'ours');
    const ps = p ? headline(p.result, 'peer') : Number.NaN;
    lines.push(
      `| ${r.round} | ${r.part} | ${loadText(o.load)} | ${fmt(os_, 2)} (${(o.result.timesS as number[]).map((x) => fmt(x, 2)).join(', ')}) | ${fmt(o.result.firstS as number | undefined)} | ${fmt(o.result.initS as number, 1)} | ${gib(o.peakRssBytes)} | ${p ? loadText(p.load) : '-'} | ${p ? fmt(ps, 2) : '-'} | ${p ? fmt(p.result.init_s as number, 1) : '-'} | ${p ? gib(p.peakRssBytes) : '-'} | ${p ? fmt(os_ / ps, 2) : '-'} |`,
    );
  }
  // A 512x512, 25-step image: text encode + 25 guided steps + one decode, from the medians over rounds.
  const med = (part: Sd15Part, side: 'ours' | 'peer'): number => {
    const xs = rows.filter((r) => r.part === part && r[side]).map((r) => headline(r[side]!.result, side));
    return xs.length ? median(xs) : Number.NaN;
  };
  if (parts.length === 3 && scale === 'sd15') {
    const image = (side: 'ours' | 'peer') => med('text', side) + 25 * med('unet', side) + med('vae', side);
    const peak = (side: 'ours' | 'peer') => Math.max(...rows.filter((r) => r[side]).map((r) => r[side]!.peakRssBytes));
    lines.push('');
    lines.push(
      `512x512, 25 steps (text + 25 x step + decode, medians): ours ${fmt(image('ours'), 0)} s, diffusers ${fmt(image('peer'), 0)} s (ratio ${fmt(image('ours') / image('peer'), 2)}); largest peak RSS of a part: ours ${gib(peak('ours'))}, diffusers ${gib(peak('peer'))}`,
    );
  }
  const table = lines.join('\n');
  if (argv.json) console.log(JSON.stringify({ command, started, finished, cpu, rows, table }));
  else console.log(table);
});
