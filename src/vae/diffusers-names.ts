/**
 * Our VAE parameter names <-> diffusers' AutoencoderKL state-dict keys, with each tensor's
 * element layout (see src/checkpoint/layout.ts).
 *
 *   ours                                 diffusers
 *   encoder.down.{i}.res.{j}.*           encoder.down_blocks.{i}.resnets.{j}.* (time_proj, shortcut renamed)
 *   encoder.down.{i}.downsample.conv     encoder.down_blocks.{i}.downsamplers.0.conv
 *   {en,de}coder.mid.res.{k}             {en,de}coder.mid_block.resnets.{k}
 *   {en,de}coder.mid.attn.norm           {en,de}coder.mid_block.attentions.0.group_norm
 *   {en,de}coder.mid.attn.to_{q,k,v}     {en,de}coder.mid_block.attentions.0.to_{q,k,v}
 *   {en,de}coder.mid.attn.to_out         {en,de}coder.mid_block.attentions.0.to_out.0
 *   {en,de}coder.norm_out                {en,de}coder.conv_norm_out
 *   decoder.up.{i}.*                     decoder.up_blocks.{L-1-i}.* (deepest first)
 *   decoder.up.{i}.upsample.conv         decoder.up_blocks.{L-1-i}.upsamplers.0.conv
 *   quant_conv, post_quant_conv, conv_in, conv_out: the same
 */
import { type WeightEntry, WeightLayout } from '../checkpoint/layout.js';
import type { ParamStore } from '../nn/params.js';
import { kindOf, resnetKey } from '../unet/diffusers-names.js';

/** Rewrite rules for the path below `encoder.` / `decoder.`, tried in order (L: levels). */
const RULES: [RegExp, (m: RegExpExecArray, levels: number) => string][] = [
  [/^(conv_in|conv_out)\.(.*)$/, (m) => `${m[1]}.${m[2]}`],
  [/^norm_out\.(.*)$/, (m) => `conv_norm_out.${m[1]}`],
  [/^down\.(\d+)\.res\.(\d+)\.(.*)$/, (m) => `down_blocks.${m[1]}.resnets.${m[2]}.${resnetKey(m[3])}`],
  [/^up\.(\d+)\.res\.(\d+)\.(.*)$/, (m, levels) => `up_blocks.${levels - 1 - Number(m[1])}.resnets.${m[2]}.${resnetKey(m[3])}`],
  [/^down\.(\d+)\.downsample\.(.*)$/, (m) => `down_blocks.${m[1]}.downsamplers.0.${m[2]}`],
  [/^up\.(\d+)\.upsample\.(.*)$/, (m, levels) => `up_blocks.${levels - 1 - Number(m[1])}.upsamplers.0.${m[2]}`],
  [/^mid\.res\.(\d+)\.(.*)$/, (m) => `mid_block.resnets.${m[1]}.${resnetKey(m[2])}`],
  [/^mid\.attn\.(.*)$/, (m) => `mid_block.attentions.0.${m[1].replace(/^norm\./, 'group_norm.').replace(/^to_out\./, 'to_out.0.')}`],
];

/** diffusers' key of one of our VAE parameter names (levels: channels.length). */
export function vaeDiffusersKey(name: string, levels: number): string {
  if (/^(quant_conv|post_quant_conv)\./.test(name)) return name;
  const part = /^(encoder|decoder)\.(.*)$/.exec(name);
  for (const [re, key] of part ? RULES : []) {
    const m = re.exec(part![2]);
    if (m) return `${part![1]}.${key(m, levels)}`;
  }
  throw new Error(`vae: no diffusers key for parameter '${name}'`);
}

/** The layout of a (non-legacy) VAE's weights in diffusers' files. */
export function vaeDiffusersLayout(store: ParamStore): WeightLayout {
  // Levels = encoder levels: count the distinct encoder.down.{i}.
  const levels = new Set(store.names().flatMap((n) => /^encoder\.down\.(\d+)\./.exec(n)?.[1] ?? [])).size;
  const entries: WeightEntry[] = store.entries().map(([name, v]) => ({ name, key: vaeDiffusersKey(name, levels), kind: kindOf(v.shape) }));
  return new WeightLayout('diffusers', entries);
}
