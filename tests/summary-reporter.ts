/**
 * Prints one plain closing line after vitest's own summary, counted the way vitest counts, so
 * CI tooling that reads only that line sees the same numbers:
 *   tests: P passed, F failed, S skipped; test files that failed to run: N; unhandled errors: E
 * (the last two parts only when not zero).
 */
import type { Reporter } from 'vitest/reporters';

interface TaskLike {
  type: string;
  mode?: string;
  result?: { state?: string };
  tasks?: TaskLike[];
}

function count(tasks: TaskLike[], acc: { passed: number; failed: number; skipped: number }): void {
  for (const t of tasks) {
    if (t.tasks) count(t.tasks, acc);
    if (t.type !== 'test') continue;
    const s = t.result?.state;
    if (s === 'pass') acc.passed++;
    else if (s === 'fail') acc.failed++;
    else acc.skipped++;
  }
}

/** The closing line for these files and unhandled errors. */
export function summaryLine(files: TaskLike[], errors: unknown[]): string {
  const acc = { passed: 0, failed: 0, skipped: 0 };
  count(files, acc);
  // A file that fails to load or in a hook has no failed test of its own: vitest counts it as a failed file.
  const failedTests = (t: TaskLike): number => {
    const c = { passed: 0, failed: 0, skipped: 0 };
    count([t], c);
    return c.failed;
  };
  const brokenFiles = files.filter((f) => f.result?.state === 'fail' && failedTests(f) === 0).length;
  const parts = [`tests: ${acc.passed} passed, ${acc.failed} failed${acc.skipped ? `, ${acc.skipped} skipped` : ''}`];
  if (brokenFiles) parts.push(`test files that failed to run: ${brokenFiles}`);
  if (errors.length) parts.push(`unhandled errors: ${errors.length}`);
  return parts.join('; ');
}

export default class SummaryReporter implements Reporter {
  onFinished(files: TaskLike[] = [], errors: unknown[] = []): void {
    process.stdout.write(`\n${summaryLine(files, errors)}\n`);
  }
}
