/** Shared helpers of the thin CLI entry points: strict number parsing and one-line errors. */

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

export function finiteNumber(value: unknown, flag: string): number {
  const n = typeof value === 'number' ? value : Number(String(value).trim());
  if (String(value).trim() === '' || !Number.isFinite(n)) throw new Error(`${flag} must be a finite number, got '${value}'`);
  return n;
}

export function integer(value: unknown, flag: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = finiteNumber(value, flag);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${flag} must be an integer from ${min} to ${max}, got '${value}'`);
  return n;
}
