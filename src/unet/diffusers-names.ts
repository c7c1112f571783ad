/**
 * Our U-Net parameter names <-> diffusers' UNet2DConditionModel state-dict keys, with each
 * tensor's element layout (see src/checkpoint/layout.ts). Shared by the U-Net and (for the
 * ResBlock and transformer parts) the VAE.
 *
 *   ours                                 diffusers
 *   time_embed.linear_1                  time_embedding.linear_1
 *   down.{i}.res.{j}.time_proj           down_blocks.{i}.resnets.{j}.time_emb_proj
 *   down.{i}.res.{j}.shortcut            down_blocks.{i}.resnets.{j}.conv_shortcut
 *   down.{i}.attn.{j}.attn1.to_out       down_blocks.{i}.attentions.{j}.transformer_blocks.0.attn1.to_out.0
 *   down.{i}.attn.{j}.ff.proj / ff.out   ....transformer_blocks.0.ff.net.0.proj / ff.net.2
 *   down.{i}.downsample.conv             down_blocks.{i}.downsamplers.0.conv
 *   mid.res.{k} / mid.attn               mid_block.resnets.{k} / mid_block.attentions.0
 *   up.{i}.*                             up_blocks.{L-1-i}.* (diffusers numbers up blocks deepest first)
 *   up.{i}.upsample.conv                 up_blocks.{L-1-i}.upsamplers.0.conv
 *   norm_out                             conv_norm_out
 */
import { type WeightEntry, type WeightKind, WeightLayout } from '../checkpoint/layout.js';
import type { ParamStore } from '../nn/params.js';
import type { UNetConfig } from './config.js';

/** A ResBlock's parameter path below the block (`norm1.weight`, `time_proj.bias`, ...) in diffusers' names. */
export function resnetKey(rest: string): string {
  return rest.replace(/^time_proj\./, 'time_emb_proj.').replace(/^shortcut\./, 'conv_shortcut.');
}

/** A SpatialTransformer's parameter path below the block in diffusers' Transformer2DModel names. */
function transformerKey(rest: string): string {
  if (/^(norm|proj_in|proj_out)\./.test(rest)) return rest;
  const inner = rest
    .replace(/^(attn[12])\.to_out\./, '$1.to_out.0.')
    .replace(/^ff\.proj\./, 'ff.net.0.proj.')
    .replace(/^ff\.out\./, 'ff.net.2.');
  return `transformer_blocks.0.${inner}`;
}

/** The element layout of a parameter from its rank (and, for proj_in / proj_out, the projection kind). */
export function kindOf(shape: readonly number[], linearProjection = false, isProjection = false): WeightKind {
  if (shape.length === 4) return isProjection && linearProjection ? 'conv1x1-linear' : 'conv';
  if (shape.length === 2) return 'linear';
  return 'copy';
}

/** Rewrite rules, tried in order (L: levels). */
const RULES: [RegExp, (m: RegExpExecArray, levels: number) => string][] = [
  [/^time_embed\.(.*)$/, (m) => `time_embedding.${m[1]}`],
  [/^(conv_in|conv_out)\.(.*)$/, (m) => `${m[1]}.${m[2]}`],
  [/^norm_out\.(.*)$/, (m) => `conv_norm_out.${m[1]}`],
  [/^down\.(\d+)\.res\.(\d+)\.(.*)$/, (m) => `down_blocks.${m[1]}.resnets.${m[2]}.${resnetKey(m[3])}`],
  [/^down\.(\d+)\.attn\.(\d+)\.(.*)$/, (m) => `down_blocks.${m[1]}.attentions.${m[2]}.${transformerKey(m[3])}`],
  [/^down\.(\d+)\.downsample\.(.*)$/, (m) => `down_blocks.${m[1]}.downsamplers.0.${m[2]}`],
  [/^mid\.res\.(\d+)\.(.*)$/, (m) => `mid_block.resnets.${m[1]}.${resnetKey(m[2])}`],
  [/^mid\.attn\.(.*)$/, (m) => `mid_block.attentions.0.${transformerKey(m[1])}`],
  [/^up\.(\d+)\.res\.(\d+)\.(.*)$/, (m, levels) => `up_blocks.${levels - 1 - Number(m[1])}.resnets.${m[2]}.${resnetKey(m[3])}`],
  [/^up\.(\d+)\.attn\.(\d+)\.(.*)$/, (m, levels) => `up_blocks.${levels - 1 - Number(m[1])}.attentions.${m[2]}.${transformerKey(m[3])}`],
  [/^up\.(\d+)\.upsample\.(.*)$/, (m, levels) => `up_blocks.${levels - 1 - Number(m[1])}.upsamplers.0.${m[2]}`],
];

/** diffusers' key of one of our U-Net parameter names (levels: channels.length). */
export function unetDiffusersKey(name: string, levels: number): string {
  for (const [re, key] of RULES) {
    const m = re.exec(name);
    if (m) return key(m, levels);
  }
  throw new Error(`unet: no diffusers key for parameter '${name}'`);
}

/** The layout of a U-Net's weights in diffusers' files. */
export function unetDiffusersLayout(store: ParamStore, config: UNetConfig): WeightLayout {
  const levels = config.channels.length;
  const entries: WeightEntry[] = store.entries().map(([name, v]) => ({
    name,
    key: unetDiffusersKey(name, levels),
    kind: kindOf(v.shape, config.linearProjection, /\.attn\.(\d+\.)?proj_(in|out)\.weight$/.test(name)),
  }));
  return new WeightLayout('diffusers', entries);
}
