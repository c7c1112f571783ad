/**
 * Whether this machine has a WebGPU adapter, asked once per test file in a child process (as
 * the automatic backend order asks), and how webgpu tests name themselves or say why they skip.
 * TXT2IMG_REQUIRE_WEBGPU=1 (set by .ci/run once scripts/setup-webgpu-cpu.sh succeeded) turns a
 * missing adapter into a failure, so that CI cannot pass by skipping them.
 */
import { type WebGpuAdapterInfo, describeAdapter, probeWebGpuIsolated } from '../../src/backend/webgpu.js';

export const REQUIRE_ENV = 'TXT2IMG_REQUIRE_WEBGPU';

async function probe(): Promise<{ adapter?: WebGpuAdapterInfo; why: string }> {
  try {
    const adapter = await probeWebGpuIsolated();
    return { adapter, why: '' };
  } catch (e) {
    const why = (e as Error).message;
    if (process.env[REQUIRE_ENV] === '1') throw new Error(`${REQUIRE_ENV}=1 but there is no WebGPU adapter: ${why}`);
    return { why };
  }
}

export const webgpu = await probe();
// The default reporter lists a skipped file without its titles: say why here too.
if (!webgpu.adapter) console.warn(`webgpu tests skipped: ${webgpu.why}`);

/** `title` with the adapter it runs on, or with why it is skipped. */
export function webgpuTitle(title: string): string {
  return webgpu.adapter ? `${title} (webgpu on ${describeAdapter(webgpu.adapter)})` : `${title} -- SKIPPED: ${webgpu.why}`;
}

/** Skips a describe block where there is no adapter, saying why (see webgpuTitle). */
export const noAdapter = webgpu.adapter === undefined;
