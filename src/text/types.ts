/**
 * Conditioning: the one interface between whatever conditions the U-Net (a CLIP text encoder,
 * a learned class-label table) and the diffusion pipeline.
 */
import * as tf from '@tensorflow/tfjs';

/**
 * What the U-Net's cross-attention attends to. The caller owns the tensors (dispose them, or
 * use `disposeConditioning`).
 */
export interface Conditioning {
  /** [B, T, D] context tokens. */
  context: tf.Tensor3D;
  /** [B, T], 1 = attend, 0 = ignore. Absent means attend to all T tokens (what CLIP in Stable Diffusion does). */
  mask?: tf.Tensor2D;
}

export type ConditionEncoderKind = 'clip' | 'label';

/**
 * Every conditioning source implements this.
 * - `clip` takes prompts (strings); `label` takes class indices (numbers) or class names.
 * - `unconditional(batch)` is what classifier-free guidance pairs with `encode`: the empty
 *   prompt "" for CLIP, the reserved null class for labels. Same [B, T, D] shape as `encode`.
 */
export interface ConditionEncoder {
  readonly kind: ConditionEncoderKind;
  /** D: the width of each context token (the U-Net's cross-attention context dim). */
  readonly contextDim: number;
  /** T: tokens per example (77 for CLIP, 1 for labels). */
  readonly contextLength: number;
  encode(inputs: string[] | number[]): Promise<Conditioning>;
  unconditional(batch: number): Promise<Conditioning>;
  dispose(): void;
}

export function disposeConditioning(c: Conditioning | undefined): void {
  if (!c) return;
  c.context.dispose();
  c.mask?.dispose();
}

/**
 * Stacks conditionings along the batch axis (e.g. [unconditional, conditional] for one
 * classifier-free-guidance U-Net call). A part without a mask counts as all ones when another
 * part has one. The inputs are not disposed.
 */
export function concatConditioning(parts: Conditioning[]): Conditioning {
  if (parts.length === 0) throw new Error('concatConditioning: needs at least one conditioning');
  const [, t, d] = parts[0].context.shape;
  parts.forEach((p, i) => {
    if (p.context.shape[1] !== t || p.context.shape[2] !== d) {
      throw new Error(`concatConditioning: part ${i} has context [${p.context.shape.join(', ')}], part 0 has [B, ${t}, ${d}]`);
    }
  });
  return tf.tidy(() => {
    const context = tf.concat(
      parts.map((p) => p.context),
      0,
    ) as tf.Tensor3D;
    if (!parts.some((p) => p.mask)) return { context };
    const mask = tf.concat(
      parts.map((p) => (p.mask ? p.mask.toFloat() : tf.ones([p.context.shape[0], t]))),
      0,
    ) as tf.Tensor2D;
    return { context, mask };
  });
}

/** Checks a batch size argument (unconditional(batch)). */
export function checkBatch(batch: unknown, who: string): number {
  if (typeof batch !== 'number' || !Number.isInteger(batch) || batch < 1) {
    throw new Error(`${who}: batch must be a positive integer, got ${JSON.stringify(batch)}`);
  }
  return batch;
}
