/** The closing summary line counts as vitest does: tests by state, broken files and errors apart. */
import { describe, expect, it } from 'vitest';
import { summaryLine } from './summary-reporter.js';

const test = (state?: string) => ({ type: 'test', result: state ? { state } : undefined });

describe('summaryLine', () => {
  it('counts tests by state, and names files that failed to run and unhandled errors separately', () => {
    const files = [
      { type: 'suite', result: { state: 'pass' }, tasks: [test('pass'), test('pass'), test()] },
      { type: 'suite', result: { state: 'fail' }, tasks: [{ type: 'suite', tasks: [test('fail'), test('pass')] }] },
      { type: 'suite', result: { state: 'fail' }, tasks: [test(), test()] }, // a failing beforeAll: its tests never ran
      { type: 'suite', result: { state: 'fail' }, tasks: [] }, // failed to load
    ];
    expect(summaryLine(files as never, [new Error('x')])).toBe('tests: 3 passed, 1 failed, 3 skipped; test files that failed to run: 2; unhandled errors: 1');
    expect(summaryLine([files[0]] as never, [])).toBe('tests: 2 passed, 0 failed, 1 skipped');
  });
});
