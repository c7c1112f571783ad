/** Shared helpers of the thin CLI entry points: argument parsing, strict numbers, one-line errors. */
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { BACKEND_ENV, BACKEND_NAMES, THREADS_ENV } from '../src/backend/names.js';
import { writeFileAtomic } from '../src/checkpoint/files.js';

/** A yargs parser for this process's arguments with the options every CLI shares (--backend). */
export function cliArgs(name: string, usage: string) {
  return yargs(hideBin(process.argv))
    .scriptName(name)
    .usage(usage)
    .option('backend', {
      type: 'string',
      describe: `${BACKEND_NAMES.join(' | ')} (env ${BACKEND_ENV}; default: the best that loads; webgpu by default only on a GPU adapter, on a software one such as llvmpipe only when asked for)`,
    });
}

/** Unknown options and yargs' own failures become errors (one line through runCli), then parse. */
export function parseStrict<T>(y: Argv<T>) {
  return y
    .strictOptions()
    .showHelpOnFail(false)
    .fail((msg, err) => {
      throw err ?? new Error(`${msg} (see --help)`);
    })
    .help()
    .parse();
}

/** Runs a CLI body; any error becomes one line on stderr and exit code 1. */
export async function runCli(body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    console.error(`error: ${msg}`);
    if (process.env.TXT2IMG_DEBUG && e instanceof Error) console.error(e.stack);
    process.exitCode = 1;
  }
}

/** A plain decimal number ('7', '-0.5', '1e-3'); not hex, binary or octal ('0x10'), not Infinity. */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

export function finiteNumber(value: unknown, flag: string): number {
  const text = String(value).trim();
  const n = typeof value === 'number' ? value : DECIMAL.test(text) ? Number(text) : NaN;
  if (!Number.isFinite(n)) throw new Error(`${flag} must be a finite decimal number, got '${value}'`);
  return n;
}

export function integer(value: unknown, flag: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = finiteNumber(value, flag);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${flag} must be an integer from ${min} to ${max}, got '${value}'`);
  return n;
}

/** "pipeline trained N U-Net steps, conditioning dropout p; backend ...": the facts a report header states. */
export function describeRun(pipeline: { info: { trainedSteps?: number; conditioningDropout: number } }, backend: { description: string }): string {
  return `pipeline trained ${pipeline.info.trainedSteps ?? '?'} U-Net steps, conditioning dropout ${pipeline.info.conditioningDropout}; ${backend.description.replace(/^backend: /, 'backend ')}`;
}

/** A report's output: the Markdown to --out (if given), and to stdout unless --json asks for one JSON object there. */
export function emitReport(argv: { out?: string; json: boolean }, markdown: string, json: () => object): void {
  if (argv.out) writeFileAtomic(argv.out, `${markdown}\n`);
  if (argv.json) console.log(JSON.stringify(json()));
  else console.log(markdown);
}

/**
 * wasm threads of a training process's main thread: with data-parallel workers (each 1 thread)
 * the main thread computes one shard, so 1 thread unless TXT2IMG_THREADS says otherwise.
 */
export function workerThreads(workers: number): number | undefined {
  return workers > 1 && !process.env[THREADS_ENV] ? 1 : undefined;
}
