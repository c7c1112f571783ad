import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    setupFiles: ['tests/setup.ts'],
    // Timeouts only catch hangs: a 2-core machine under load (another training job) runs these
    // several times slower than an idle one, so no test sets a tighter limit of its own.
    testTimeout: 600_000,
    hookTimeout: 600_000,
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    reporters: ['default', './tests/summary-reporter.ts'],
  },
});
