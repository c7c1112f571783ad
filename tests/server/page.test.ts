/**
 * The web page of `txt2img serve` driven in a real headless Chromium (Debian's `chromium` package
 * through playwright-core): generate with live progress and a preview, the gallery with each
 * image's parameters, PNG info from a dropped PNG, img2img with a mask painted on the canvas, and
 * interrupt. Skips, saying so in its name, where /usr/bin/chromium is missing (.ci/run installs it
 * where apt works).
 */
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { type Browser, type Page, chromium } from 'playwright-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../fixtures/captioned.js';
import { type ServeProcess, startServe } from './serve-process.js';

const CHROMIUM = '/usr/bin/chromium';
const HAVE_CHROMIUM = existsSync(CHROMIUM);
const SKIP = HAVE_CHROMIUM ? '' : ` (skipped: no Chromium at ${CHROMIUM}; apt-get install chromium)`;

let serve: ServeProcess;
let browser: Browser;
let page: Page;
const dir = tempDir('page-test');

beforeAll(async () => {
  if (!HAVE_CHROMIUM) return;
  serve = await startServe(['--runtime', 'tfjs']);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(serve.url);
  await page.waitForFunction(() => document.querySelectorAll('#sampler option').length > 0 && document.querySelectorAll('#model option').length > 0);
  expect(errors).toEqual([]);
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await serve?.stop();
});

/** Clicks Generate and waits until the page is ready again; returns what the progress bar showed meanwhile. */
async function generate(): Promise<{ values: number[]; previews: number }> {
  await page.click('#generate');
  const seen = await page.evaluate(async () => {
    const values: number[] = [];
    let previews = 0;
    let src = '';
    const bar = document.getElementById('progress') as HTMLProgressElement;
    const preview = document.getElementById('preview') as HTMLImageElement;
    const button = document.getElementById('generate') as HTMLButtonElement;
    await new Promise((r) => setTimeout(r, 50));
    while (button.disabled) {
      values.push(bar.value);
      if (preview.src && preview.src !== src && !preview.hidden) {
        src = preview.src;
        previews++;
      }
      await new Promise((r) => setTimeout(r, 40));
    }
    return { values, previews };
  });
  return seen;
}

describe(`the web page in Chromium${SKIP}`, () => {
  it.skipIf(!HAVE_CHROMIUM)(`generates with a live progress bar and preview, and shows each image with its parameters${SKIP}`, async () => {
    await page.fill('#prompt', 'a red square on a blue background');
    await page.fill('#steps', '24');
    await page.fill('#batch-size', '2');
    await page.uncheck('#random-seed');
    await page.fill('#seed', '7');
    await page.selectOption('#sampler', 'Euler a');
    const { values, previews } = await generate();
    expect(await page.textContent('#error')).toBe('');
    expect(values.some((v) => v > 0.05 && v < 0.95)).toBe(true); // the bar moved while it ran
    expect(previews).toBeGreaterThan(0);
    expect(await page.textContent('#progress-text')).toMatch(/^done: 2 image\(s\), seed 7$/);
    const params = await page.$$eval('.result .params', (els) => els.map((e) => e.textContent));
    expect(params).toHaveLength(2);
    expect(params[0]).toMatch(/^a red square on a blue background\nSteps: 24, Sampler: Euler a, CFG scale: 7, Seed: 7, Size: 32x32/);
    expect(params[1]).toContain('Seed: 8,');
    const size = await page.$eval('.result img', (img) => [(img as HTMLImageElement).naturalWidth, (img as HTMLImageElement).naturalHeight]);
    expect(size).toEqual([32, 32]);
  });

  it.skipIf(!HAVE_CHROMIUM)(`reads the parameters of a dropped PNG back into the form${SKIP}`, async () => {
    const src = await page.$eval('.result img', (img) => (img as HTMLImageElement).src);
    await page.fill('#seed', '1');
    await page.fill('#steps', '3');
    // a real drop event carrying the PNG as a file, onto the page (not the img2img zone)
    await page.evaluate(async (dataUrl) => {
      const blob = await (await fetch(dataUrl)).blob();
      const dt = new DataTransfer();
      dt.items.add(new File([blob], 'result.png', { type: 'image/png' }));
      document.getElementById('gallery')!.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }, src);
    await page.waitForFunction(() => (document.getElementById('pnginfo-text')!.textContent ?? '').includes('Seed:'));
    expect(await page.textContent('#pnginfo-text')).toMatch(/^a red square on a blue background\nSteps: 24, Sampler: Euler a, CFG scale: 7, Seed: 7,/);
    await page.click('#pnginfo-apply');
    expect(await page.inputValue('#seed')).toBe('7');
    expect(await page.inputValue('#steps')).toBe('24');
    expect(await page.inputValue('#prompt')).toBe('a red square on a blue background');
  });

  it.skipIf(!HAVE_CHROMIUM)(`inpaints an uploaded image through a mask painted on the canvas${SKIP}`, async () => {
    const photo = path.join(dir, 'photo.png');
    const w = 48;
    const h = 40;
    const rgb = Buffer.alloc(w * h * 3);
    for (let i = 0; i < w * h; i++) rgb.set([40, 120, 200], i * 3);
    writeFileSync(
      photo,
      await sharp(rgb, { raw: { width: w, height: h, channels: 3 } })
        .png()
        .toBuffer(),
    );
    await page.click('#tab-img2img');
    await page.setInputFiles('#init-file', photo);
    await page.waitForSelector('#canvas-box:not([hidden])');
    const box = (await page.locator('#mask-canvas').boundingBox())!;
    // paint a stroke over the lower right quarter
    await page.mouse.move(box.x + box.width * 0.6, box.y + box.height * 0.6);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.9, box.y + box.height * 0.9, { steps: 8 });
    await page.mouse.up();
    await page.fill('#prompt', 'a yellow star');
    await page.fill('#steps', '12');
    await page.fill('#batch-size', '1');
    await page.fill('#strength', '0.9');
    await page.selectOption('#inpaint-area', 'masked');
    await page.fill('#padding', '4');
    await generate();
    expect(await page.textContent('#error')).toBe('');
    const first = page.locator('.result').first();
    const text = await first.locator('.params').textContent();
    expect(text).toContain('Denoising strength: 0.9');
    expect(text).toContain('Inpaint area: Only masked');
    // "only masked" returns the original's size, its unmasked corner untouched
    const src = await first.locator('img').getAttribute('src');
    const out = Buffer.from(src!.split(',')[1], 'base64');
    const { data, info } = await sharp(out).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height]).toEqual([w, h]);
    expect(Array.from(data.subarray(0, 3))).toEqual([40, 120, 200]);
    const far = ((h - 3) * w + (w - 3)) * info.channels;
    expect(Array.from(data.subarray(far, far + 3))).not.toEqual([40, 120, 200]); // repainted
  });

  it.skipIf(!HAVE_CHROMIUM)(`interrupts a long job from the page${SKIP}`, async () => {
    await page.click('#tab-txt2img');
    const before = await page.locator('.result').count();
    await page.fill('#steps', '150');
    await page.fill('#batch-count', '3');
    await page.fill('#batch-size', '1');
    await page.click('#generate');
    await page.waitForFunction(() => (document.getElementById('progress') as HTMLProgressElement).value > 0.02);
    await page.click('#interrupt');
    await page.waitForFunction(() => !(document.getElementById('generate') as HTMLButtonElement).disabled, undefined, { timeout: 60_000 });
    expect(await page.textContent('#progress-text')).toMatch(/^done: 1 image\(s\)/);
    expect(await page.locator('.result').count()).toBe(before + 1);
  });
});
