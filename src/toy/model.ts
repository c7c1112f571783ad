/**
 * The toy denoiser: an MLP on 2-D points with a sinusoidal timestep embedding.
 *
 *   e   = silu(Linear(timestepEmbedding(t * 1000 / T)))          // [B, H] time features
 *   h   = Linear_in([x, e_raw])                                   // [B, H]
 *   h  += Linear_k(silu(h + e)) for each residual block           // pre-activation residual MLP
 *   out = Linear_out(silu(h))                                      // [B, 2]
 *
 * The timestep is rescaled to [0, 1000) so the embedding sees the same range whatever T is.
 */
import * as tf from '@tensorflow/tfjs';
import { Linear, silu, timestepEmbedding } from '../nn/layers.js';
import { ParamStore } from '../nn/params.js';
import type { Generator } from '../random/generator.js';

export interface ToyMlpConfig {
  /** Width of the hidden layers. */
  hidden: number;
  /** Number of residual blocks. */
  blocks: number;
  /** Size of the sinusoidal timestep embedding (even). */
  timeEmbedDim: number;
  /** Diffusion T the model is trained for (used to rescale t). */
  numTrainTimesteps: number;
  /**
   * Sinusoidal features of each input coordinate (0 = raw coordinates only): x * inputScale through
   * the same embedding as t, `inputEmbedDim` values per coordinate. Fourier features let a small
   * MLP represent the sharp score of a thin curve (Tancik et al. 2020).
   */
  inputEmbedDim?: number;
  inputScale?: number;
}

export const DEFAULT_TOY_MLP: Omit<ToyMlpConfig, 'numTrainTimesteps'> = { hidden: 128, blocks: 3, timeEmbedDim: 32, inputEmbedDim: 0, inputScale: 25 };

export class ToyMLP {
  readonly store = new ParamStore();
  private readonly timeProj: Linear;
  private readonly input: Linear;
  private readonly blocks: Linear[] = [];
  private readonly output: Linear;

  constructor(
    readonly config: ToyMlpConfig,
    rng: Generator,
  ) {
    const { hidden, blocks, timeEmbedDim } = config;
    if (!Number.isInteger(hidden) || hidden < 1) throw new Error(`toy MLP hidden width must be an integer >= 1, got ${hidden}`);
    if (!Number.isInteger(blocks) || blocks < 0) throw new Error(`toy MLP blocks must be an integer >= 0, got ${blocks}`);
    if (!Number.isInteger(timeEmbedDim) || timeEmbedDim < 2 || timeEmbedDim % 2) {
      throw new Error(`toy MLP timeEmbedDim must be an even integer >= 2, got ${timeEmbedDim}`);
    }
    this.timeProj = new Linear(this.store, 'time_proj', timeEmbedDim, hidden, rng);
    const inEmb = config.inputEmbedDim ?? 0;
    if (!Number.isInteger(inEmb) || inEmb < 0 || inEmb % 2) throw new Error(`toy MLP inputEmbedDim must be an even integer >= 0, got ${inEmb}`);
    this.input = new Linear(this.store, 'input', 2 + 2 * inEmb + timeEmbedDim, hidden, rng);
    for (let i = 0; i < blocks; i++) this.blocks.push(new Linear(this.store, `blocks.${i}`, hidden, hidden, rng));
    this.output = new Linear(this.store, 'output', hidden, 2, rng);
  }

  /** x: [B, 2] noisy points, t: [B] timesteps (int or float) -> [B, 2] prediction. */
  apply(x: tf.Tensor, t: tf.Tensor1D): tf.Tensor2D {
    return tf.tidy(() => {
      const scaled = tf.mul(t.toFloat(), 1000 / this.config.numTrainTimesteps) as tf.Tensor1D;
      const emb = timestepEmbedding(scaled, this.config.timeEmbedDim); // [B, E]
      const e = silu(this.timeProj.apply(emb)); // [B, H]
      const parts: tf.Tensor[] = [x, emb];
      const inEmb = this.config.inputEmbedDim ?? 0;
      if (inEmb > 0) {
        const scale = this.config.inputScale ?? 25;
        const [cx, cy] = tf.split(tf.mul(x, scale), 2, 1); // [B, 1] each
        parts.push(timestepEmbedding(cx.reshape([-1]) as tf.Tensor1D, inEmb), timestepEmbedding(cy.reshape([-1]) as tf.Tensor1D, inEmb));
      }
      let h = this.input.apply(tf.concat(parts, 1)); // [B, H]
      for (const block of this.blocks) h = tf.add(h, block.apply(silu(tf.add(h, e))));
      return this.output.apply(silu(h)) as tf.Tensor2D;
    });
  }

  numParams(): number {
    return this.store.numParams();
  }

  dispose(): void {
    this.store.dispose();
  }
}
