/**
 * A data-parallel training worker (started by data-parallel.ts): initialises its own backend,
 * rebuilds the model and the loss from the task, then answers shard requests with the shard's
 * loss and gradients (through shared memory). An error ends the worker; the main thread reports it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { initBackend } from '../backend/index.js';
import { computeGradients, disposeGrads } from '../nn/params.js';
import { Generator } from '../random/generator.js';
import { type Replica, type ShardRequest, type ShardTask, type WorkerInit, type WorkerMessage, layoutProblems, readParams, writeGrads } from './data-parallel.js';

async function buildReplica(task: ShardTask): Promise<Replica<never>> {
  switch (task.kind) {
    case 'vae':
      return (await import('./stages.js')).vaeReplica(task) as Replica<never>;
    case 'unet':
      return (await import('./stages.js')).unetReplica(task) as Replica<never>;
    case 'classifier':
      return (await import('../eval/classifier.js')).classifierReplica(task) as Replica<never>;
    default:
      throw new Error(`unknown data-parallel task kind '${(task as { kind: unknown }).kind}'`);
  }
}

const init = workerData as WorkerInit;
const port = parentPort!;
const backend = await initBackend({ backend: init.backend, threads: init.threads, quiet: true });
const replica = await buildReplica(init.task);
const problems = layoutProblems(replica.store, init.layout);
if (problems.length > 0) {
  throw new Error(`the ${init.task.kind} replica does not match the main thread's model (${problems.length} problem(s)): ${problems.slice(0, 5).join('; ')}`);
}

let loadedWeights = 0;
port.on('message', (req: ShardRequest) => {
  if (req.weights !== loadedWeights) {
    readParams(replica.store, init.layout, init.weights, req.weights);
    loadedWeights = req.weights;
  }
  const { loss, grads } = computeGradients(replica.store, () => replica.loss(req.batch as never, Generator.fromState(req.rng)));
  const value = loss.dataSync()[0];
  loss.dispose();
  const written = writeGrads(grads, init.layout, init.grads, req.id);
  disposeGrads(grads);
  port.postMessage({ type: 'grads', id: req.id, loss: value, written } satisfies WorkerMessage);
});
port.postMessage({ type: 'ready', backend: backend.name, threads: backend.threads } satisfies WorkerMessage);
