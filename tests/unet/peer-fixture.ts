/**
 * Shared by tests/unet and tests/vae and by make-peer-fixture.ts, which made peer-fixture.json:
 * tiny configs, deterministic non-trivial weights and inputs.
 *
 * peer-fixture.json holds the outputs of ../shared/bench/peer_torch.py's UNet and VAE
 * (Debian's python3-torch 1.13, float32 on CPU) for exactly these weights and inputs, the
 * weights transposed to PyTorch's layout (conv [out, in, kh, kw], linear [out, in]) and the
 * parameters matched by registration order (ours and the peer's list them in the same order).
 * F.gelu was switched to its tanh form in the peer for that run, as ours was then: the configs
 * below are `legacy` (tanh GELU; the VAE without mid blocks, quant convs or the extra decoder
 * ResBlock, padded symmetrically, GroupNorm eps 1e-5), peer_torch.py's architecture.
 * Regenerate (npx tsx tests/unet/make-peer-fixture.ts) only if the architecture changes on purpose.
 */
import * as tf from '@tensorflow/tfjs';
import type { ParamStore } from '../../src/nn/params.js';
import { Generator } from '../../src/random/generator.js';
import type { UNetConfigInput } from '../../src/unet/config.js';
import type { VaeConfigInput } from '../../src/vae/config.js';

export const PEER_UNET_CONFIG: UNetConfigInput = {
  inChannels: 4,
  sampleSize: 8,
  channels: [8, 16],
  resBlocksPerLevel: 1,
  attentionLevels: [false, true],
  attentionHeads: 2,
  contextDim: 12,
  contextLength: 5,
  timeEmbedDim: 16,
  groupNormGroups: 4,
  legacy: true,
};

export const PEER_VAE_CONFIG: VaeConfigInput = {
  imageChannels: 3,
  channels: [8, 16, 16],
  resBlocksPerLevel: 1,
  latentChannels: 4,
  downsampleFactor: 4,
  groupNormGroups: 4,
  legacy: true,
};

/**
 * Overwrites every parameter with seeded values, so that zero-initialised layers and unit
 * norms do not hide mistakes: weights ~ N(0, 1/fan_in), norm gains ~ 1 + N(0, 0.1^2), other
 * vectors ~ N(0, 0.1^2). Our layouts: linear [in, out], conv [kh, kw, in, out].
 */
export function perturbParams(store: ParamStore, seed: number): void {
  const rng = new Generator(seed);
  for (const [name, v] of store.entries()) {
    const n = v.size;
    const d = rng.normalArray(n);
    if (v.rank >= 2) {
      const fanIn = v.shape.slice(0, -1).reduce((a, b) => a * b, 1);
      const s = 1 / Math.sqrt(fanIn);
      for (let i = 0; i < n; i++) d[i] *= s;
    } else {
      const gain = /norm[^.]*\.weight$/.test(name);
      for (let i = 0; i < n; i++) d[i] = (gain ? 1 : 0) + 0.1 * d[i];
    }
    tf.tidy(() => v.assign(tf.tensor(d, v.shape, 'float32')));
  }
}

export function peerUNetInputs(): { sample: tf.Tensor4D; timesteps: tf.Tensor1D; context: tf.Tensor3D } {
  const rng = new Generator(1234);
  return {
    sample: rng.randn([2, 8, 8, 4]) as tf.Tensor4D,
    timesteps: tf.tensor1d([17, 803], 'int32'),
    context: rng.randn([2, 5, 12]) as tf.Tensor3D,
  };
}

export function peerVaeInputs(): { images: tf.Tensor4D } {
  const rng = new Generator(4321);
  return { images: rng.rand([2, 16, 16, 3], -1, 1) as tf.Tensor4D };
}
