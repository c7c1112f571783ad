/**
 * Makes docs/server.png, the README's picture of `txt2img serve`'s page: starts a server on the
 * bundled model, has headless Chromium (Debian's /usr/bin/chromium, through playwright-core) make
 * a batch of images, and photographs the page.
 *
 *   npx tsx scripts/page-screenshot.ts [--out docs/server.png]
 */
import { cliArgs, parseStrict, runCli } from './cli.js';

await runCli(async () => {
  const argv = await parseStrict(
    cliArgs('page-screenshot', '$0 [options]\n\nPhotograph the web page of txt2img serve.').option('out', {
      type: 'string',
      default: 'docs/server.png',
      describe: 'PNG to write',
    }),
  );
  const [{ chromium }, { initBackend }, { startServer }, { defaultModelDir }] = await Promise.all([
    import('playwright-core'),
    import('../src/backend/index.js'),
    import('../src/server/server.js'),
    import('../src/pipeline/text-to-image.js'),
  ]);
  await initBackend({ backend: argv.backend });
  const server = await startServer({ model: defaultModelDir(), port: 0, runtime: 'tfjs', log: () => {} });
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1180, height: 760 } });
    await page.goto(server.url);
    await page.waitForFunction(() => document.querySelectorAll('#sampler option').length > 0);
    await page.fill('#prompt', 'a smiling face on a yellow background');
    await page.fill('#steps', '25');
    await page.fill('#batch-size', '4');
    await page.uncheck('#random-seed');
    await page.fill('#seed', '11');
    await page.click('#generate');
    await page.waitForFunction(() => !(document.getElementById('generate') as HTMLButtonElement).disabled, undefined, { timeout: 300_000 });
    await page.screenshot({ path: argv.out });
    console.error(`wrote ${argv.out}`);
  } finally {
    await browser.close();
    await server.close();
  }
});
