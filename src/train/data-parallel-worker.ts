/**
 * A data-parallel training worker (started by data-parallel.ts): initialises its own backend,
 * rebuilds the model and the loss from the ReplicaSpec's builder, then answers shard requests with the shard's
 * loss and gradients (through shared memory), computed by tfjs or, for an onnx runtime, by
 * onnxruntime with 1 thread (the graph traced here, on this worker's backend, at the shard's
 * batch). An error ends the worker; the main thread reports it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { initBackend } from '../backend/index.js';
import { computeHostGradients } from '../nn/params.js';
import { OnnxGradients } from '../onnx/gradients.js';
import { Generator } from '../random/generator.js';
import {
  type Replica,
  type ReplicaSpec,
  type ShardRequest,
  type WorkerInit,
  type WorkerMessage,
  layoutProblems,
  readParamArrays,
  readParams,
  writeGrads,
} from './data-parallel.js';

async function buildReplica(spec: ReplicaSpec): Promise<Replica<never>> {
  const build = ((await import(spec.module)) as Record<string, unknown>)[spec.exportName];
  if (typeof build !== 'function') throw new Error(`data-parallel: ${spec.module} exports no function '${spec.exportName}' to build the ${spec.kind} replica`);
  return (await build(spec.args)) as Replica<never>;
}

const init = workerData as WorkerInit;
const port = parentPort!;
const backend = await initBackend({ backend: init.backend, threads: init.threads, quiet: true });
const replica = await buildReplica(init.replica);
const problems = layoutProblems(replica.store, init.layout);
if (problems.length > 0) {
  throw new Error(
    `the ${init.replica.kind} replica does not match the main thread's model (${problems.length} problem(s)): ${problems.slice(0, 5).join('; ')}`,
  );
}

let onnx: OnnxGradients<never> | undefined;
if (init.runtime.kind === 'onnx') {
  if (!replica.staged) throw new Error(`the ${init.replica.kind} loss has no staged form, so onnxruntime cannot compute its gradients`);
  const onFallback = init.runtime.fallback ? (why: string) => port.postMessage({ type: 'fallback', why } satisfies WorkerMessage) : undefined;
  onnx = new OnnxGradients(replica.store, replica.staged, { threads: 1, onFallback });
}

let loadedWeights = 0;
// One request at a time (the main thread waits for each reply), so the async handler never overlaps itself.
port.on('message', async (req: ShardRequest) => {
  if (req.weights !== loadedWeights) {
    // onnxruntime takes the weights as host arrays: the tfjs replica is only updated if it computes.
    if (onnx) onnx.setWeights(readParamArrays(init.layout, init.weights, req.weights));
    else readParams(replica.store, init.layout, init.weights, req.weights);
    loadedWeights = req.weights;
  }
  const rng = Generator.fromState(req.rng);
  const { loss, grads } = onnx
    ? await onnx.hostGradients(req.batch as never, rng)
    : computeHostGradients(replica.store, () => replica.loss(req.batch as never, rng));
  const written = writeGrads(grads, init.layout, init.grads, req.id);
  port.postMessage({ type: 'grads', id: req.id, loss, written } satisfies WorkerMessage);
});
port.postMessage({ type: 'ready', backend: backend.name, threads: backend.threads } satisfies WorkerMessage);
