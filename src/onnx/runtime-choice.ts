/**
 * The runtime names users choose from (`--runtime`), apart from the runtime itself (./runtime.ts),
 * so a command line can list and check them without loading tfjs or onnxruntime.
 */

/** What computes a model: the tfjs backend, or onnxruntime-node on the CPU (graphs traced from tfjs). */
export const RUNTIMES = ['tfjs', 'onnx'] as const;
export type Runtime = (typeof RUNTIMES)[number];
/** What a user may ask for: a runtime, or `auto` (resolveRuntime in ./runtime.ts). */
export const RUNTIME_CHOICES = ['auto', ...RUNTIMES] as const;
export type RuntimeChoice = (typeof RUNTIME_CHOICES)[number];

/** `value` (trimmed, any case) as one of `allowed`, else an error naming it and the allowed ones. */
export function parseRuntimeName<T extends string>(allowed: readonly T[], value: string, source: string, what = 'runtime'): T {
  const v = value.trim().toLowerCase();
  if ((allowed as readonly string[]).includes(v)) return v as T;
  throw new Error(`${source}: unknown ${what} '${value}'; allowed: ${allowed.join(', ')}`);
}
