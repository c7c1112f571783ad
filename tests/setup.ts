// Production mode for every test file: no debug checks, no "install tfjs-node" banner in logs.
import * as tf from '@tensorflow/tfjs';

tf.enableProdMode();
