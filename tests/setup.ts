// Production mode for every test file: no debug checks, no "install tfjs-node" banner in logs.
import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeEach } from 'vitest';

tf.enableProdMode();

// One turn of the event loop around every test. A test worker waits at most 60 s for the main
// vitest process to acknowledge each progress report (its RPC timeout, not configurable), and
// reads the acknowledgement only when its event loop turns; a file of synchronous tests (tfjs on
// wasm computes synchronously) never turns it between tests, so under load a whole file ran
// 46-55 s in one piece here, and past 60 s vitest fails the run with "Timeout calling
// onTaskUpdate" although every test passed. With a turn per test, only a single test running
// synchronously for over 60 s could still trip it.
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
beforeEach(turn);
afterEach(turn);
