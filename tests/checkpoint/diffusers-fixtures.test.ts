/**
 * The diffusers reference pipelines (tests/fixtures/diffusers/pipelines, written by
 * scripts/fixtures/diffusers_pipelines.py) are present, parse, and have the layout and shapes their
 * README promises. The comparisons of our U-Net / VAE / text encoder / pipeline against them live
 * beside those components' own tests; this file only guards the fixtures themselves.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { decodeSafetensors } from '../../src/checkpoint/safetensors.js';
import { parseDiffusersJSON } from '../../src/schedulers/index.js';

const ROOT = fileURLToPath(new URL('../fixtures/diffusers/pipelines/', import.meta.url));
const COMMIT = '58eb52c0803ea9af3abec60841c2a093bdf1f951';

interface CaseRef {
  diffusersCommit: string;
  case: string;
  vaeScaleFactor: number;
  unetArgs: { in_channels: number; block_out_channels: number[]; attention_head_dim: number | number[]; use_linear_projection: boolean };
  vaeArgs: { block_out_channels: number[]; mid_block_add_attention: boolean };
  unet: { timesteps: number[] };
  imageRun?: { pipeline?: string; height: number; width: number; num_inference_steps: number; guidance_scale: number };
  images?: Record<string, { scheduler: string; timesteps: number[] }>;
  tensors: Record<string, number[]>;
}

const CASES = ['l2_int_conv', 'l2_list_linear', 'l3_int_linear', 'l3_list_conv', 'sd_vae_l4', 'inpaint_l2'];

const json = (rel: string) => JSON.parse(readFileSync(path.join(ROOT, rel), 'utf8'));
const tensors = (rel: string) => decodeSafetensors(readFileSync(path.join(ROOT, rel)), rel).tensors;

function sizeOf(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    total += e.isDirectory() ? sizeOf(p) : statSync(p).size;
  }
  return total;
}

describe('diffusers reference pipelines', () => {
  it('stay under the 10 MB budget', () => {
    expect(sizeOf(ROOT)).toBeLessThan(10e6);
  });

  it('_text: CLIP text encoder (fp16), tokenizer files and 3 prompts of hidden states', () => {
    const cfg = json('_text/text_encoder/config.json');
    expect(cfg.architectures).toEqual(['CLIPTextModel']);
    expect([cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.max_position_embeddings]).toEqual([49408, 32, 2, 77]);
    const w = tensors('_text/text_encoder/model.safetensors');
    expect(w.get('embeddings.token_embedding.weight')?.shape).toEqual([49408, 32]);
    expect(w.get('final_layer_norm.weight')?.shape).toEqual([32]);
    const vocab = json('_text/tokenizer/vocab.json');
    expect(Object.keys(vocab).length).toBe(49408);
    expect(vocab['<|endoftext|>']).toBe(49407);
    expect(readFileSync(path.join(ROOT, '_text/tokenizer/merges.txt'), 'utf8').split('\n').length).toBeGreaterThan(48000);
    expect(json('_text/tokenizer/tokenizer_config.json').model_max_length).toBe(77);
    expect(json('_text/tokenizer/special_tokens_map.json').pad_token).toBe('<|endoftext|>');
    const ref = json('_text/reference.json');
    expect(ref.diffusersCommit).toBe(COMMIT);
    expect(ref.inputIds).toHaveLength(ref.prompts.length);
    for (const ids of ref.inputIds) {
      expect(ids).toHaveLength(77);
      expect(ids[0]).toBe(49406);
    }
    // The empty prompt is <|startoftext|> then <|endoftext|> padding.
    expect(ref.inputIds[ref.prompts.indexOf('')].slice(0, 3)).toEqual([49406, 49407, 49407]);
    const out = tensors('_text/reference.safetensors').get('last_hidden_state');
    expect(out?.shape).toEqual([ref.prompts.length, 77, 32]);
    expect(out?.data.every(Number.isFinite)).toBe(true);
  });

  for (const name of CASES) {
    it(`${name}: diffusers' folder layout, configs and reference shapes`, () => {
      const index = json(`${name}/model_index.json`);
      expect(index._class_name).toBe('StableDiffusionPipeline');
      expect(index.unet).toEqual(['diffusers', 'UNet2DConditionModel']);
      expect(index.vae).toEqual(['diffusers', 'AutoencoderKL']);
      expect(index.text_encoder).toEqual(['transformers', 'CLIPTextModel']);
      expect(index.tokenizer).toEqual(['transformers', 'CLIPTokenizer']);
      const unetCfg = json(`${name}/unet/config.json`);
      const vaeCfg = json(`${name}/vae/config.json`);
      expect(unetCfg._class_name).toBe('UNet2DConditionModel');
      expect(vaeCfg._class_name).toBe('AutoencoderKL');
      // Python's json writes -Infinity (DPMSolverMultistepScheduler's lambda_min_clipped).
      const sched = parseDiffusersJSON(readFileSync(path.join(ROOT, `${name}/scheduler/scheduler_config.json`), 'utf8'));
      if (sched._class_name === 'DPMSolverMultistepScheduler') expect(sched.lambda_min_clipped).toBe(-Infinity);
      expect(['DDIMScheduler', 'DPMSolverMultistepScheduler']).toContain(sched._class_name);
      expect(index.scheduler).toEqual(['diffusers', sched._class_name]);

      const ref = json(`${name}/reference.json`) as CaseRef;
      expect(ref.diffusersCommit).toBe(COMMIT);
      expect(ref.case).toBe(name);
      expect(unetCfg.block_out_channels).toEqual(ref.unetArgs.block_out_channels);
      expect(unetCfg.attention_head_dim).toEqual(ref.unetArgs.attention_head_dim);
      expect(unetCfg.use_linear_projection).toBe(ref.unetArgs.use_linear_projection);
      expect(vaeCfg.mid_block_add_attention).toBe(ref.vaeArgs.mid_block_add_attention);
      expect(ref.vaeScaleFactor).toBe(2 ** (vaeCfg.block_out_channels.length - 1));

      // Weights: float16 under diffusers' names.
      const unetW = tensors(`${name}/unet/diffusion_pytorch_model.safetensors`);
      expect(unetW.get('conv_in.weight')?.shape).toEqual([unetCfg.block_out_channels[0], unetCfg.in_channels, 3, 3]);
      expect(unetW.get('conv_out.weight')?.shape).toEqual([4, unetCfg.block_out_channels[0], 3, 3]);
      const vaeW = tensors(`${name}/vae/diffusion_pytorch_model.safetensors`);
      expect(vaeW.get('quant_conv.weight')?.shape).toEqual([8, 8, 1, 1]);
      expect(vaeW.has('encoder.mid_block.attentions.0.to_q.weight')).toBe(vaeCfg.mid_block_add_attention);

      const t = tensors(`${name}/reference.safetensors`);
      for (const [k, shape] of Object.entries(ref.tensors)) expect(t.get(k)?.shape, k).toEqual(shape);
      const [, , h, w] = ref.tensors['unet.out'];
      expect(ref.tensors['unet.sample']).toEqual([2, unetCfg.in_channels, h, w]);
      expect(ref.tensors['unet.encoder_hidden_states']).toEqual([2, 77, 32]);
      expect(ref.unet.timesteps).toHaveLength(2);
      const f = ref.vaeScaleFactor;
      expect(ref.tensors['vae.encode.image']).toEqual([1, 3, h * f, w * f]);
      expect(ref.tensors['vae.encode.mean']).toEqual([1, 4, h, w]);
      expect(ref.tensors['vae.decode.out']).toEqual([1, 3, h * f, w * f]);
      // Intermediate taps: the last up block returns to the first level's channels and size.
      const levels = unetCfg.block_out_channels.length;
      expect(ref.tensors['unet.debug.conv_in']).toEqual([2, unetCfg.block_out_channels[0], h, w]);
      expect(ref.tensors[`unet.debug.up.${levels - 1}`]).toEqual([2, unetCfg.block_out_channels[0], h, w]);
      expect(ref.tensors['unet.debug.time_emb']).toEqual([2, 4 * unetCfg.block_out_channels[0]]);
      for (const v of t.values()) expect(v.data.every(Number.isFinite)).toBe(true);

      if (unetCfg.in_channels !== 4) {
        // The inpainting run: image [-1, 1] and a 0/1 mask at the image's size.
        expect(ref.tensors['inpaint.image']).toEqual([1, 3, h * f, w * f]);
        expect(ref.tensors['inpaint.mask']).toEqual([1, 1, h * f, w * f]);
        expect(t.get('inpaint.mask')?.data.every((v) => v === 0 || v === 1)).toBe(true);
      }
      const run = ref.imageRun as NonNullable<CaseRef['imageRun']>;
      expect([run.num_inference_steps, run.guidance_scale]).toEqual([10, 7.5]);
      expect(ref.tensors['image.latents']).toEqual([1, 4, run.height / f, run.width / f]);
      expect(ref.images?.ddim.scheduler).toBe('DDIMScheduler');
      expect(ref.images?.ddim.timesteps).toHaveLength(10);
      // A second image where the folder's own scheduler is not the SD-1.5 DDIM.
      const extra = Object.keys(ref.images ?? {}).filter((k) => k !== 'ddim');
      for (const k of extra) expect(ref.images?.[k].scheduler).toBe(sched._class_name);
      for (const key of Object.keys(ref.images ?? {})) {
        const img = t.get(`image.${key}.float`);
        const u8 = t.get(`image.${key}.uint8`);
        expect(img?.shape).toEqual([1, run.height, run.width, 3]);
        expect(u8?.shape).toEqual([1, run.height, run.width, 3]);
        if (!img || !u8) continue;
        expect(img.data.every((v) => v >= 0 && v <= 1)).toBe(true);
        // numpy rounds halves to even: allow exactly 0.5 either way.
        expect(u8.data.every((v, i) => Number.isInteger(v) && Math.abs(v - img.data[i] * 255) <= 0.5)).toBe(true);
      }
    });
  }
});
