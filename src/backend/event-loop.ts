/**
 * Lets the event loop run between the steps of a long computation. tfjs' CPU backends (wasm,
 * cpu) compute synchronously and their `data()` promises resolve at once, so an `await` between
 * steps continues as a microtask and timers, I/O and signal handlers wait for the whole loop: a
 * server could not answer, Ctrl-C could not stop a run, a worker could not reply. One macrotask
 * turn per step costs microseconds.
 */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
