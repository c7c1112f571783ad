/**
 * What the network predicts, and the conversions between the three parametrisations.
 *
 * With a = sqrt(alphaBar_t) and s = sqrt(1 - alphaBar_t) (so a^2 + s^2 = 1):
 *   x_t = a x0 + s eps                                  (DDPM eq. 4, reparametrised)
 *   v   = a eps - s x0                                  (Salimans & Ho 2022, "Progressive
 *                                                        Distillation", sec. 4 and appendix D)
 * and therefore
 *   from eps: x0 = (x_t - s eps) / a                    (DDPM eq. 15)
 *   from v:   x0 = a x_t - s v,   eps = s x_t + a v
 *   from x0:  eps = (x_t - a x0) / s
 *
 * The functions take a and s as numbers (one timestep, the sampler) or as tensors that broadcast
 * against x (per-sample timesteps, training). They do not dispose their inputs.
 */
import * as tf from '@tensorflow/tfjs';
import type { PredictionType } from './config.js';

type Coef = number | tf.Tensor;

/** Both x0 and eps implied by a model output of the given type at noisy sample x_t. */
export function toX0AndEps(type: PredictionType, modelOutput: tf.Tensor, xt: tf.Tensor, a: Coef, s: Coef): { x0: tf.Tensor; eps: tf.Tensor } {
  return tf.tidy(() => {
    switch (type) {
      case 'epsilon': {
        const eps = modelOutput.clone();
        return { x0: tf.div(tf.sub(xt, tf.mul(modelOutput, s)), a), eps };
      }
      case 'v':
        return {
          x0: tf.sub(tf.mul(xt, a), tf.mul(modelOutput, s)),
          eps: tf.add(tf.mul(xt, s), tf.mul(modelOutput, a)),
        };
      case 'x0': {
        const x0 = modelOutput.clone();
        return { x0, eps: tf.div(tf.sub(xt, tf.mul(modelOutput, a)), s) };
      }
    }
  });
}

/** eps implied by x0 at x_t (used after clipping x0, so the update stays consistent). */
export function epsFromX0(x0: tf.Tensor, xt: tf.Tensor, a: Coef, s: Coef): tf.Tensor {
  return tf.tidy(() => tf.div(tf.sub(xt, tf.mul(x0, a)), s));
}

/** The velocity v = a eps - s x0 (Salimans & Ho 2022, appendix D). */
export function velocity(x0: tf.Tensor, eps: tf.Tensor, a: Coef, s: Coef): tf.Tensor {
  return tf.tidy(() => tf.sub(tf.mul(eps, a), tf.mul(x0, s)));
}

/** What a network of the given type should output, given the clean sample and the noise. */
export function predictionTarget(type: PredictionType, x0: tf.Tensor, eps: tf.Tensor, a: Coef, s: Coef): tf.Tensor {
  switch (type) {
    case 'epsilon':
      return eps.clone();
    case 'v':
      return velocity(x0, eps, a, s);
    case 'x0':
      return x0.clone();
  }
}
