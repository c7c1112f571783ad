/**
 * Converting a legacy U-Net (UNetConfig.legacy: saved before the diffusers format) to diffusers'
 * numerics: the same weights with the exact GELU in the transformers' feed-forward instead of
 * the tanh approximation (|difference| < 5e-4 per activation), so that diffusers computes what we
 * compute. models/default: 62 of 9216 pixel values of three 32x32 images change, each by 1/255
 * (with the VAE converted by vaeFromLegacy), measured 2026-12-07.
 */
import { Generator } from '../random/generator.js';
import { UNET_CONFIG_VERSION } from './config.js';
import { UNet2DCondition } from './unet2d-condition.js';

/** A new U-Net with a legacy U-Net's weights and diffusers' numerics; the input is left as it is. */
export function unetFromLegacy(legacy: UNet2DCondition): UNet2DCondition {
  if (!legacy.config.legacy) throw new Error("unetFromLegacy: the U-Net is not legacy (it already has diffusers' numerics)");
  const unet = new UNet2DCondition({ ...legacy.config, _version: UNET_CONFIG_VERSION, legacy: false }, Generator.forLoadedWeights());
  unet.store.copyFrom(legacy.store);
  return unet;
}
