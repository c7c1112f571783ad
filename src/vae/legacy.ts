/**
 * Converting a legacy VAE (VaeConfig.legacy: models saved before the diffusers format) to
 * diffusers' AutoencoderKL architecture, so that it can be written in diffusers' format. The parts
 * the legacy VAE lacks are added as identities: the mid blocks' ResBlocks (when it had no mid
 * attention) and the decoder's extra ResBlock per level get zero conv2 weights and biases, so
 * each returns its input; the quant convs are left out (use_quant_conv / use_post_quant_conv
 * false). Two conventions cannot be carried over exactly:
 *   - GroupNorm eps becomes 1e-6 (was 1e-5): a relative change of about 4.5e-6 / variance of
 *     each normalised group;
 *   - the encoder's stride-2 convs pad the bottom and right (was: every side), which shifts what
 *     they see by one pixel: encoding (img2img, inpainting, training) changes, decoding does not.
 */
import * as tf from '@tensorflow/tfjs';
import { Generator } from '../random/generator.js';
import { AutoencoderKL } from './autoencoder-kl.js';
import { VAE_CONFIG_VERSION } from './config.js';

/** A new diffusers-architecture VAE with a legacy VAE's weights (see the file comment); the input is left as it is. */
export function vaeFromLegacy(legacy: AutoencoderKL): AutoencoderKL {
  if (!legacy.config.legacy) throw new Error("vaeFromLegacy: the VAE is not legacy (it is already in diffusers' architecture)");
  const vae = new AutoencoderKL(
    { ...legacy.config, _version: VAE_CONFIG_VERSION, legacy: false, quantConv: false, postQuantConv: false },
    Generator.forLoadedWeights(),
  );
  for (const [name, v] of vae.store.entries()) {
    if (legacy.store.has(name)) v.assign(legacy.store.get(name));
    // A ResBlock the legacy VAE lacks: zero conv2, so it adds nothing to its shortcut (the identity).
    else if (/\.res\.\d+\.conv2\.(weight|bias)$/.test(name)) tf.tidy(() => v.assign(tf.zerosLike(v)));
  }
  return vae;
}
