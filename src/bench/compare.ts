/**
 * Side-by-side report of our ldm-small benchmark (src/bench/bench.ts) and the PyTorch CPU peer
 * (../shared/bench/peer_torch.py), run one after the other on the same machine.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { type BenchResult, type FigureName, type FigureResult, median } from './bench.js';

export const PYTHON = '/usr/bin/python3';

export const TORCH_INSTALL_HELP = [
  "the PyTorch peer needs Debian's python3 with torch and OpenBLAS (OpenMP build):",
  '  apt-get install -y python3-torch libopenblas0-openmp',
  '  for a in libblas.so.3 liblapack.so.3 libopenblas.so.0; do',
  '    update-alternatives --set $a-x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/openblas-openmp/$a; done',
].join('\n');

/** The peer's --json output (the fields we read). */
export interface PeerResult {
  device: string;
  threads: number;
  torch: string;
  blas: string;
  repeat: number;
  vae_params: number;
  unet_params: number;
  times_s: Record<string, number[]>;
  /** Added by bench-compare (resource.getrusage around the peer). */
  peakRssBytes?: number;
  [figure: string]: unknown;
}

/** Undefined when python3 and torch are usable; otherwise why not, with the install commands. */
export function checkPython(python = PYTHON): string | undefined {
  if (!existsSync(python)) return `${python} does not exist.\n${TORCH_INSTALL_HELP}`;
  const r = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
  if (r.status !== 0) return `${python} cannot import torch (${(r.stderr || r.error?.message || '').trim().split('\n').pop()}).\n${TORCH_INSTALL_HELP}`;
  return undefined;
}

export interface ComparisonRow {
  figure: FigureName;
  unit: 'ms' | 'images/s';
  ours?: number;
  peer?: number;
  /** ours / PyTorch. */
  ratio?: number;
  /** How many times slower we are (>1) or faster (<1): time ratio for ms, inverse for images/s. */
  slowdown?: number;
  oursError?: string;
}

export function compareRows(ours: BenchResult, peer: PeerResult): ComparisonRow[] {
  const rows: ComparisonRow[] = [];
  for (const [name, f] of Object.entries(ours.figures) as [FigureName, NonNullable<BenchResult['figures'][FigureName]>][]) {
    const p = typeof peer[name] === 'number' ? (peer[name] as number) : undefined;
    const row: ComparisonRow = { figure: name, unit: f.unit, ours: f.value, peer: p, oursError: f.error };
    if (f.value !== undefined && p !== undefined && p > 0 && f.value > 0) {
      row.ratio = f.value / p;
      row.slowdown = f.unit === 'ms' ? row.ratio : 1 / row.ratio;
    }
    rows.push(row);
  }
  return rows;
}

function fmt(x: number | undefined, digits = 1): string {
  if (x === undefined) return 'n/a';
  return x >= 100 ? x.toFixed(0) : x.toFixed(digits);
}

export interface CompareContext {
  loadBeforeOurs?: number[];
  loadBeforePeer?: number[];
  command?: string;
  /** Each round's results when ours and PyTorch were alternated (the table then shows the medians). */
  rounds?: { ours: BenchResult[]; peer: PeerResult[] };
}

/**
 * One result from rounds of our benchmark: each figure the median over the rounds it succeeded
 * in (its times: every round's), the peak memory the largest. Alternating rounds with the peer
 * spreads the host's drift over both sides instead of letting it fall on one.
 */
export function medianOfRounds(results: BenchResult[]): BenchResult {
  if (results.length === 0) throw new Error('medianOfRounds: no results');
  const figures: BenchResult['figures'] = {};
  for (const name of Object.keys(results[0].figures) as FigureName[]) {
    const all = results.map((r) => r.figures[name]).filter((f): f is FigureResult => f !== undefined);
    const ok = all.filter((f) => f.value !== undefined);
    figures[name] = ok.length ? { ...ok[0], value: median(ok.map((f) => f.value!)), times: ok.flatMap((f) => f.times) } : all[0];
  }
  const cached = results.map((r) => r.extra.unet_forward_cached_ms).filter((x): x is number => x !== undefined);
  const heaps = results.map((r) => r.wasmHeap).filter((h) => h !== undefined);
  return {
    ...results[0],
    figures,
    extra: cached.length ? { unet_forward_cached_ms: median(cached) } : {},
    peakRssBytes: Math.max(...results.map((r) => r.peakRssBytes)),
    wasmHeap: heaps.length ? heaps.reduce((a, b) => (b.peakBytes > a.peakBytes ? b : a)) : undefined,
    notes: [...new Set(results.flatMap((r) => r.notes))],
  };
}

/** The peer's rounds as one result: each figure the median, the peak memory the largest. */
export function medianOfPeerRounds(results: PeerResult[]): PeerResult {
  if (results.length === 0) throw new Error('medianOfPeerRounds: no results');
  const out: PeerResult = { ...results[0] };
  for (const [k, v] of Object.entries(results[0])) {
    if (k.endsWith('_ms') || k.endsWith('_per_s')) {
      if (typeof v === 'number') out[k] = median(results.map((r) => r[k]).filter((x): x is number => typeof x === 'number'));
    }
  }
  const rss = results.map((r) => r.peakRssBytes).filter((x): x is number => x !== undefined);
  if (rss.length) out.peakRssBytes = Math.max(...rss);
  return out;
}

/**
 * One result from two runs of our benchmark: the training figures of `train` (e.g. data-parallel
 * over 1-thread workers) and the sampling figures of `sample` (e.g. 2 threads, ONNX).
 */
export function mergeBenchResults(train: BenchResult, sample: BenchResult): BenchResult {
  const heaps = [train.wasmHeap, sample.wasmHeap].filter((h) => h !== undefined);
  return {
    ...sample,
    trainWorkers: train.trainWorkers,
    trainRuntime: train.trainRuntime,
    trainThreads: train.threads,
    figures: { ...train.figures, ...sample.figures },
    peakRssBytes: Math.max(train.peakRssBytes, sample.peakRssBytes),
    wasmHeap: heaps.length ? heaps.reduce((a, b) => (b.peakBytes > a.peakBytes ? b : a)) : undefined,
    notes: [...train.notes.map((n) => `training run: ${n}`), ...sample.notes.map((n) => `sampling run: ${n}`)],
  };
}

/** "backend wasm (2 threads), training figures data-parallel over 2 x 1-thread workers, sampling U-Net onnx". */
export function describeOurSetup(r: BenchResult): string {
  const parts = [
    `backend ${r.backend} (${r.threads} thread${r.threads === 1 ? '' : 's'}${r.trainThreads !== undefined && r.trainThreads !== r.threads ? `; training figures ${r.trainThreads}` : ''})`,
  ];
  if ((r.trainWorkers ?? 1) > 1) parts.push(`training figures data-parallel over ${r.trainWorkers} x 1-thread shards`);
  if (r.trainRuntime === 'onnx' && r.unetRuntime === 'onnx') parts.push('training gradients, U-Net forward and sampling on onnxruntime-node');
  else if (r.unetRuntime === 'onnx') parts.push('U-Net forward and sampling on onnxruntime-node');
  return parts.join(', ');
}

/** A Markdown table of both benchmarks and the ratios. */
export function formatComparison(ours: BenchResult, peer: PeerResult, ctx: CompareContext = {}): string {
  const rows = compareRows(ours, peer);
  const lines: string[] = [];
  const n = ctx.rounds?.ours.length ?? 1;
  const of = n > 1 ? `; the median of ${n} rounds, ours and PyTorch alternated` : '';
  lines.push(`ours: txt2img on tfjs ${ours.tfjs}, ${describeOurSetup(ours)}, median of ${ours.repeat} (sampling ${ours.sampleRepeat})${of}`);
  lines.push(`PyTorch: torch ${peer.torch}, ${peer.device} (${peer.threads} threads), blas ${peer.blas}, median of ${peer.repeat}${of}`);
  if (ours.vaeParams !== peer.vae_params || ours.unetParams !== peer.unet_params) {
    lines.push(
      `WARNING: parameter counts differ: ours vae ${ours.vaeParams} / unet ${ours.unetParams}, PyTorch vae ${peer.vae_params} / unet ${peer.unet_params}`,
    );
  }
  lines.push('');
  lines.push('| figure | unit | ours | PyTorch | ours / PyTorch | we are |');
  lines.push('|---|---|---:|---:|---:|---|');
  for (const r of rows) {
    const verdict =
      r.slowdown === undefined
        ? r.oursError
          ? `failed: ${r.oursError}`
          : ''
        : r.slowdown >= 1
          ? `${r.slowdown.toFixed(2)}x slower`
          : `${(1 / r.slowdown).toFixed(2)}x faster`;
    lines.push(`| ${r.figure} | ${r.unit} | ${fmt(r.ours)} | ${fmt(r.peer)} | ${r.ratio === undefined ? 'n/a' : r.ratio.toFixed(2)} | ${verdict} |`);
  }
  lines.push('');
  lines.push('ms figures: lower is better (ratio > 1 = we are slower); images/s: higher is better (ratio < 1 = we are slower).');
  if (ctx.rounds && n > 1) {
    const per = ctx.rounds.ours.map((o, i) => compareRows(o, ctx.rounds!.peer[i]));
    lines.push(
      `ratio ours / PyTorch in each round: ${rows.map((r) => `${r.figure} ${per.map((p) => p.find((x) => x.figure === r.figure)?.ratio?.toFixed(2) ?? 'n/a').join(' ')}`).join('; ')}`,
    );
  }
  if (ours.extra.unet_forward_cached_ms !== undefined)
    lines.push(`ours, U-Net forward with cross-attention K/V precomputed (what each sampling step runs): ${fmt(ours.extra.unet_forward_cached_ms)} ms`);
  const mem = [
    `peak RSS: ours ${(ours.peakRssBytes / 1024 ** 3).toFixed(2)} GiB${peer.peakRssBytes ? `, PyTorch ${(peer.peakRssBytes / 1024 ** 3).toFixed(2)} GiB` : ''}`,
  ];
  if (ours.wasmHeap) mem.push(`wasm heap ${ours.wasmHeap.risk}`);
  lines.push(mem.join('; '));
  if (ctx.loadBeforeOurs || ctx.loadBeforePeer) {
    const l = (x?: number[]) => (x ? x.map((v) => v.toFixed(2)).join(' / ') : 'n/a');
    lines.push(`load average (1 / 5 / 15 min) before ours: ${l(ctx.loadBeforeOurs)}; before PyTorch: ${l(ctx.loadBeforePeer)}`);
  }
  if (ctx.command) lines.push(`command: ${ctx.command}`);
  return lines.join('\n');
}
