/**
 * The webgpu backend in Node: @tensorflow/tfjs-backend-webgpu on Dawn's Node bindings (npm
 * package `webgpu`, an optional dependency that ships dawn.node prebuilt for linux, mac and
 * windows). Dawn drives whatever Vulkan / Metal / D3D12 adapter the machine has: a GPU, or a
 * software rasterizer such as Mesa's llvmpipe (lavapipe), which computes on the CPU and is
 * useful only to test the GPU code path (scripts/setup-webgpu-cpu.sh installs it).
 *
 * tfjs-backend-webgpu is written for browsers: it registers itself only where `navigator.gpu`
 * exists when it is imported, and uses the WebGPU globals (GPUBufferUsage, ...). Here we pick
 * the adapter ourselves, put Dawn's globals in place, and register a factory that builds the
 * backend on our device, so the adapter we describe at start-up is the one that computes.
 * Our kernel pack (./webgpu-kernels.ts) is registered on top.
 */
import * as tf from '@tensorflow/tfjs';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

/** What the start-up line and tests say about an adapter. */
export interface WebGpuAdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A software rasterizer (llvmpipe, SwiftShader, WARP...): computes on the CPU. */
  software: boolean;
}

/** The slice of Dawn's GPUAdapterInfo we read (fields may be empty strings). */
interface RawAdapterInfo {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  isFallbackAdapter?: boolean;
}

type GpuAdapter = {
  info?: RawAdapterInfo;
  isFallbackAdapter?: boolean;
  features: ReadonlySet<string>;
  limits: Record<string, number>;
  requestDevice(descriptor?: object): Promise<GpuDevice>;
};
type GpuDevice = {
  queue: { onSubmittedWorkDone(): Promise<void> };
  lost: Promise<{ reason: string; message: string }>;
  addEventListener?(type: 'uncapturederror', listener: (e: { error: { message: string } }) => void): void;
};
type Gpu = { requestAdapter(options?: object): Promise<GpuAdapter | null> };
type DawnModule = { create(flags: string[]): Gpu; globals: Record<string, unknown> };

/** Names in an adapter's description that mark a CPU implementation of the graphics API. */
const SOFTWARE_NAMES = /llvmpipe|lavapipe|softpipe|swiftshader|microsoft basic render|\bwarp\b/i;

export function isSoftwareAdapter(info: RawAdapterInfo, adapterFallback?: boolean): boolean {
  if (info.isFallbackAdapter === true || adapterFallback === true) return true;
  if ((info.architecture ?? '').toLowerCase() === 'software') return true;
  return SOFTWARE_NAMES.test(`${info.device ?? ''} ${info.description ?? ''}`);
}

export function describeAdapter(info: WebGpuAdapterInfo): string {
  const field = (v: string) => v || '?';
  return `vendor ${field(info.vendor)}, architecture ${field(info.architecture)}, ${field(info.description || info.device)}`;
}

interface Probe {
  dawn: DawnModule;
  gpu: Gpu;
  adapter: GpuAdapter;
  info: WebGpuAdapterInfo;
}

let probed: Promise<Probe> | undefined;

/**
 * Mesa's Vulkan drivers (their Wayland/X11 code) want a private runtime directory, which a CI
 * job or container often lacks. Where none is set: one per user under the temp directory,
 * 0700 as the XDG spec asks, reused by every process (a fresh one where that name is taken
 * by another user).
 */
function ensureRuntimeDir(): void {
  if (process.env.XDG_RUNTIME_DIR) return;
  const uid = process.getuid?.();
  let dir = path.join(os.tmpdir(), `txt2img-runtime-${uid ?? 'user'}`);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = statSync(dir);
    if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o077) !== 0) throw new Error('not ours');
  } catch {
    dir = mkdtempSync(path.join(os.tmpdir(), 'txt2img-runtime-'));
  }
  process.env.XDG_RUNTIME_DIR = dir;
}

const NOT_INSTALLED = "backend 'webgpu' is not available: the npm package webgpu (Dawn) did not load";
const INSTALL_HINT = 'it is an optional dependency with prebuilt binaries for linux/mac/windows x64 and arm64';
const NO_ADAPTER =
  "backend 'webgpu': Dawn found no WebGPU adapter (no Vulkan/Metal/D3D12 driver it accepts; " +
  "without a GPU, scripts/setup-webgpu-cpu.sh installs Mesa's software Vulkan, llvmpipe)";

async function loadDawn(): Promise<DawnModule> {
  try {
    const m = (await import('webgpu')) as unknown as DawnModule & { default?: DawnModule };
    return typeof m.create === 'function' ? m : m.default!;
  } catch (e) {
    throw new Error(`${NOT_INSTALLED} (${(e as Error).message.split('\n')[0]}); ${INSTALL_HINT}`);
  }
}

function adapterInfo(raw: RawAdapterInfo, adapterFallback?: boolean): WebGpuAdapterInfo {
  return {
    vendor: raw.vendor ?? '',
    architecture: raw.architecture ?? '',
    device: raw.device ?? '',
    description: raw.description ?? '',
    software: isSoftwareAdapter(raw, adapterFallback),
  };
}

/**
 * Loads Dawn in this process and asks it for its high-performance adapter (once per process).
 * Rejects with a one-line reason where there is none: no Vulkan driver, or one Dawn refuses.
 */
export function probeWebGpu(): Promise<Probe> {
  probed ??= (async () => {
    ensureRuntimeDir();
    const dawn = await loadDawn();
    const gpu = dawn.create([]);
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) throw new Error(NO_ADAPTER);
    return { dawn, gpu, adapter, info: adapterInfo(adapter.info ?? {}, adapter.isFallbackAdapter) };
  })();
  // A failed probe may be retried (e.g. after installing a driver in the same process: tests).
  probed.catch(() => (probed = undefined));
  return probed;
}

/**
 * The adapter Dawn would give, asked in a child process: what the automatic backend order
 * uses, so that a machine whose only adapter is a software one (or whose driver crashes while
 * it is enumerated) neither loads Dawn into this process nor prints the driver's warnings on
 * every start. About 0.15 s.
 */
export function probeWebGpuIsolated(timeoutMs = 20_000): Promise<WebGpuAdapterInfo> {
  let entry: string;
  try {
    entry = createRequire(import.meta.url).resolve('webgpu');
  } catch (e) {
    return Promise.reject(new Error(`${NOT_INSTALLED} (${(e as Error).message.split('\n')[0]}); ${INSTALL_HINT}`));
  }
  ensureRuntimeDir();
  const script = `
    const { create } = await import(${JSON.stringify(pathToFileURL(entry).href)});
    const a = await create([]).requestAdapter({ powerPreference: 'high-performance' });
    const i = a?.info;
    process.stdout.write(JSON.stringify(a ? { raw: { vendor: i?.vendor, architecture: i?.architecture, device: i?.device,
      description: i?.description, isFallbackAdapter: i?.isFallbackAdapter }, fallback: a.isFallbackAdapter } : null));
    process.exit(0);`;
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', script],
      { timeout: timeoutMs, env: { ...process.env, NODE_OPTIONS: '' } },
      (err, stdout, stderr) => {
        if (err) {
          const why = err.killed
            ? `timed out after ${timeoutMs / 1000} s`
            : err.signal
              ? `crashed (${err.signal})`
              : String(stderr).trim().split('\n').pop() || err.message;
          reject(new Error(`backend 'webgpu': asking Dawn for an adapter failed: ${why}`));
          return;
        }
        const found = JSON.parse(stdout) as { raw: RawAdapterInfo; fallback?: boolean } | null;
        if (!found) reject(new Error(NO_ADAPTER));
        else resolve(adapterInfo(found.raw, found.fallback));
      },
    );
  });
}

/** The adapter the webgpu backend runs on, or undefined where it did not start. */
let active: WebGpuAdapterInfo | undefined;
/** The device tfjs computes on, once started. */
let activeDevice: GpuDevice | undefined;
/** The previous step's "submitted work done" promise (webgpuStep). */
let previousStep: Promise<void> | undefined;

export interface WebGpuStart {
  info: WebGpuAdapterInfo;
}

/**
 * Starts tfjs' webgpu backend on the probed adapter and makes it the current backend.
 * `allowSoftware` false (the automatic order): a software adapter is refused with a reason, so
 * that the order moves on to wasm, which is faster on a CPU than llvmpipe.
 */
export async function startWebGpu(allowSoftware: boolean): Promise<WebGpuStart> {
  if (!allowSoftware && !active) {
    const seen = await probeWebGpuIsolated();
    if (seen.software) {
      throw new Error(`backend 'webgpu': the only adapter is a software rasterizer (${describeAdapter(seen)}); use it with --backend webgpu`);
    }
  }
  const { dawn, gpu, adapter, info } = await probeWebGpu();
  if (info.software && !allowSoftware) {
    throw new Error(`backend 'webgpu': the only adapter is a software rasterizer (${describeAdapter(info)}); use it with --backend webgpu`);
  }
  if (active && tf.getBackend() === 'webgpu') return { info: active };

  // tfjs-backend-webgpu's code reads the WebGPU globals (GPUBufferUsage, GPUMapMode, ...) and
  // checks `navigator.gpu`; Node 20 has neither (Node 21+ has a navigator without gpu).
  const g = globalThis as Record<string, unknown>;
  for (const [k, v] of Object.entries(dawn.globals)) if (!(k in g)) g[k] = v;
  // Imported before navigator.gpu is set, so that it does not register a factory of its own
  // that would pick an adapter by itself.
  const webgpu = await import('@tensorflow/tfjs-backend-webgpu');
  g.navigator ??= {};
  const nav = g.navigator as Record<string, unknown>;
  if (!('gpu' in nav)) Object.defineProperty(nav, 'gpu', { value: gpu, configurable: true, enumerable: true });

  // The limits tfjs' own factory asks for: the adapter's, not WebGPU's defaults (128 MiB
  // buffers, 16 KiB of workgroup storage), which a GPU usually exceeds.
  const L = adapter.limits;
  const requiredLimits: Record<string, number> = {};
  for (const k of [
    'maxComputeWorkgroupStorageSize',
    'maxComputeWorkgroupsPerDimension',
    'maxStorageBufferBindingSize',
    'maxBufferSize',
    'maxComputeWorkgroupSizeX',
    'maxComputeInvocationsPerWorkgroup',
  ]) {
    if (typeof L[k] === 'number') requiredLimits[k] = L[k];
  }
  const requiredFeatures = adapter.features.has('timestamp-query') ? ['timestamp-query'] : [];
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  // A GPU error inside tfjs' pipelines would otherwise only show as wrong numbers.
  device.addEventListener?.('uncapturederror', (e) => console.error(`webgpu: uncaptured GPU error: ${e.error.message}`));
  void device.lost.then((l) => {
    if (l.reason !== 'destroyed') console.error(`webgpu: the GPU device was lost (${l.reason}): ${l.message}`);
  });

  // tfjs reads a tensor synchronously (dataSync) through an OffscreenCanvas, which Node lacks,
  // and Dawn maps GPU buffers only asynchronously (the map completes in the event loop that a
  // synchronous read blocks), so no synchronous read of GPU data can work here. Values already
  // on the host (uploaded from it, or read before) are returned; anything else is refused with
  // what to do, instead of tfjs' "OffscreenCanvas is not defined".
  class NodeWebGPUBackend extends webgpu.WebGPUBackend {
    override readSync(dataId: object): tf.backend_util.BackendValues {
      const d = this.tensorMap.get(dataId) as { values?: tf.backend_util.BackendValues | null; dtype: string } | undefined;
      if (d && (d.values != null || d.dtype === 'string')) return super.readSync(dataId);
      throw new Error(
        'webgpu: a tensor on the GPU was read synchronously (dataSync, arraySync or bufferSync), which Dawn cannot do in Node ' +
          '(GPU buffers map asynchronously); read it with `await tensor.data()`, or use another backend',
      );
    }
  }
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => new NodeWebGPUBackend(device as never, adapter.info as never), 3);
  const { registerWebGpuKernels } = await import('./webgpu-kernels.js');
  registerWebGpuKernels();
  if (!(await tf.setBackend('webgpu'))) throw new Error("backend 'webgpu' failed to initialise on its adapter");
  await tf.ready();
  active = info;
  activeDevice = device;
  return { info };
}

/** The slice of tfjs' WebGPUBackend that webgpuStep drives. */
interface Submitting {
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
}

/**
 * One step's worth of catching up (yieldToBackend in ./index.ts): submits what tfjs has
 * recorded, then waits for the previous step's work to finish and for one turn of the event
 * loop. Dawn processes finished work (and recycles the descriptor sets of released bind
 * groups) while a promise of its own is pending, and Node runs the finalizers that release
 * Dawn's JS objects only between macrotasks; waiting one step behind keeps a GPU fed with the
 * current step instead of idling while the next one is recorded.
 */
export async function webgpuStep(): Promise<void> {
  if (!activeDevice || tf.getBackend() !== 'webgpu') return;
  const b = tf.backend() as unknown as Submitting;
  b.ensureCommandEncoderReady();
  b.endComputePassEncoder();
  b.submitQueue();
  const previous = previousStep;
  previousStep = activeDevice.queue.onSubmittedWorkDone();
  await Promise.all([previous, new Promise<void>((resolve) => setImmediate(resolve))]);
}
