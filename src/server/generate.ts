/**
 * What /sdapi/v1/txt2img and /sdapi/v1/img2img do once a request is checked and its turn has
 * come, following AUTOMATIC1111's process_images: n_iter batches of batch_size images, image i
 * seeded with all_seeds[i] = seed + i (its noise from that seed alone), each image's infotext in
 * its PNG, a grid in front when there is more than one image (the return_grid option), and the
 * `info` JSON of Processed.js(). An interrupt stops the current batch between steps (its images
 * are the x0 estimates at that point) and skips the batches after it; a skip only the current one.
 */
import * as tf from '@tensorflow/tfjs';
import { type Uint8Image, batchImage, encodePngWithText, tensorToBatch } from '../image/convert.js';
import { type EditPixels, resizeImage } from '../image/edit.js';
import { makeGrid } from '../image/grid.js';
import { type InfotextValue, formatInfotext } from '../image/infotext.js';
import type { Runtime } from '../onnx/runtime.js';
import { type EditPlan, planEdit } from '../pipeline/img2img.js';
import type { Txt2ImgPipeline } from '../pipeline/pipeline.js';
import type { A1111Sampler } from '../schedulers/index.js';
import { LabelEncoder } from '../text/label.js';
import type { ModelEntry } from './models.js';
import type { Job } from './queue.js';
import { invalid } from './schema.js';

/** A checked request, resolved: what to make and how. */
export interface GenerationPlan {
  kind: 'txt2img' | 'img2img';
  prompt: string;
  negativePrompt: string;
  styles: string[];
  sampler: A1111Sampler;
  steps: number;
  cfgScale: number;
  eta: number;
  width: number;
  height: number;
  batchSize: number;
  nIter: number;
  /** n_iter x batch_size seeds: seed, seed + 1, ... */
  seeds: number[];
  subseeds: number[];
  denoisingStrength: number;
  /** img2img: the prepared pixels (src/image/edit.ts) and the latent-side settings. */
  edit?: { pixels: EditPixels; fill: 0 | 1 | 2 | 3; extra: Record<string, InfotextValue> };
}

/** Options (GET/POST /sdapi/v1/options) that change how images are made. */
export interface RenderOptions {
  returnGrid: boolean;
  enablePngInfo: boolean;
  livePreviews: boolean;
  previewEvery: number;
  addModelHash: boolean;
  addModelName: boolean;
  addVersion: boolean;
}

export interface GenerationResult {
  /** PNG bytes, the grid first when there is one. */
  images: Buffer[];
  /** A1111's Processed.js() fields. */
  info: Record<string, unknown>;
}

/** The model's inputs for a prompt: the text, or for a label model the class number or name it spells. */
function inputsFor(pipe: Txt2ImgPipeline, prompt: string, n: number): string[] | number[] {
  if (pipe.encoder instanceof LabelEncoder) {
    const label = /^\s*\d+\s*$/.test(prompt) ? Number(prompt) : prompt.trim();
    const [id] = pipe.encoder.labelsToIndices([label]);
    return new Array(n).fill(id);
  }
  return new Array(n).fill(prompt);
}

export async function runGeneration(
  pipe: Txt2ImgPipeline,
  model: ModelEntry,
  plan: GenerationPlan,
  job: Job,
  o: { options: RenderOptions; runtime: Runtime; version: string; log: (line: string) => void },
): Promise<GenerationResult> {
  const total = plan.batchSize * plan.nIter;
  let inputs: string[] | number[];
  try {
    // What only the model can check (a label it knows, a negative prompt it can take, steps): a 422.
    inputs = inputsFor(pipe, plan.prompt, total);
    pipe.checkOptions({
      inputs: inputs.slice(0, 1) as string[] | number[],
      negative: plan.negativePrompt === '' ? undefined : plan.negativePrompt,
      guidanceScale: plan.cfgScale,
      steps: plan.steps,
      sampler: plan.sampler.name,
      eta: plan.eta,
      seed: plan.seeds[0],
    });
  } catch (e) {
    throw invalid(
      ['body', /negative/.test((e as Error).message) ? 'negative_prompt' : /steps/.test((e as Error).message) ? 'steps' : 'prompt'],
      (e as Error).message,
    );
  }
  const extra: Record<string, InfotextValue> = {
    ...(plan.sampler.type === 'ddim' && plan.eta ? { Eta: plan.eta } : {}),
    ...plan.edit?.extra,
    ...(o.runtime !== 'tfjs' ? { 'U-Net runtime': o.runtime } : {}),
  };
  const infotext = (i: number) =>
    formatInfotext({
      prompt: plan.prompt,
      negativePrompt: plan.negativePrompt,
      steps: plan.steps,
      sampler: plan.sampler.name,
      cfgScale: plan.cfgScale,
      seed: plan.seeds[i],
      width: plan.width,
      height: plan.height,
      modelHash: o.options.addModelHash ? model.hash : undefined,
      model: o.options.addModelName ? model.name : undefined,
      extra: { ...extra, Version: o.options.addVersion ? o.version : undefined },
    });

  let edit: EditPlan | undefined;
  const results: Uint8Image[] = [];
  const infotexts: string[] = [];
  job.jobCount = plan.nIter;
  job.decodePreview = async (latents) => {
    const image = tf.tidy(() => tf.clipByValue(pipe.vae.decodeLatents(latents), -1, 1) as tf.Tensor4D);
    try {
      return await encodePngWithText(batchImage(await tensorToBatch(image), 0));
    } finally {
      image.dispose();
    }
  };
  try {
    if (plan.edit) edit = await planEdit(pipe, plan.edit.pixels, { strength: plan.denoisingStrength, fill: plan.edit.fill });
    for (let k = 0; k < plan.nIter && !job.interrupted; k++) {
      job.jobNo = k;
      job.skipped = false;
      job.samplingStep = 0;
      job.samplingSteps = 0;
      job.textinfo = plan.nIter > 1 ? `Batch ${k + 1} out of ${plan.nIter}` : null;
      const from = k * plan.batchSize;
      const idx = Array.from({ length: plan.batchSize }, (_, j) => from + j);
      let batch: Uint8Image[];
      if (edit?.identity) {
        batch = idx.map((i) => edit!.input(i));
      } else {
        let first: number | undefined;
        const out = await pipe.generate({
          inputs: (inputs as (string | number)[]).slice(from, from + plan.batchSize) as string[] | number[],
          negative: plan.negativePrompt === '' ? undefined : plan.negativePrompt,
          guidanceScale: plan.cfgScale,
          steps: plan.steps,
          sampler: plan.sampler.name,
          eta: plan.sampler.type === 'ddim' ? plan.eta : 0,
          seed: plan.seeds[from],
          seeds: plan.seeds.slice(from, from + plan.batchSize),
          runtime: o.runtime,
          warn: o.log,
          interrupted: () => job.interrupted || job.skipped,
          edit: edit?.hook(from, plan.batchSize),
          onStep: (s) => {
            first ??= s.index;
            job.samplingSteps = s.total - first;
            job.samplingStep = s.index - first + 1;
            if (o.options.livePreviews && (job.samplingStep % o.options.previewEvery === 0 || job.samplingStep === job.samplingSteps)) job.setPreview(s.predX0);
          },
        });
        const pixels = await tensorToBatch(out);
        out.dispose();
        batch = await Promise.all(
          idx.map(async (i, j) => {
            const im = batchImage(pixels, j);
            return edit ? edit.finish(im, i) : resizeImage(im, plan.width, plan.height, 0);
          }),
        );
      }
      results.push(...batch);
      infotexts.push(...idx.map(infotext));
    }
  } finally {
    edit?.dispose();
  }

  const made = results.length;
  const pngs = await Promise.all(results.map((im, i) => encodePngWithText(im, o.options.enablePngInfo ? { text: { parameters: infotexts[i] } } : {})));
  let indexOfFirst = 0;
  // A1111 puts a grid of the images in front (return_grid), with the first image's parameters.
  if (made > 1 && o.options.returnGrid && results.every((r) => r.width === results[0].width && r.height === results[0].height)) {
    const grid = makeGrid(results, { rows: Math.ceil(made / Math.ceil(Math.sqrt(made))), padding: 0 });
    pngs.unshift(await encodePngWithText(grid, o.options.enablePngInfo ? { text: { parameters: infotexts[0] } } : {}));
    infotexts.unshift(infotexts[0]);
    indexOfFirst = 1;
  }
  const allPrompts = new Array(total).fill(plan.prompt);
  return {
    images: pngs,
    info: {
      prompt: plan.prompt,
      all_prompts: allPrompts,
      negative_prompt: plan.negativePrompt,
      all_negative_prompts: new Array(total).fill(plan.negativePrompt),
      seed: plan.seeds[0],
      all_seeds: plan.seeds,
      subseed: plan.subseeds[0],
      all_subseeds: plan.subseeds,
      subseed_strength: 0,
      width: plan.width,
      height: plan.height,
      sampler_name: plan.sampler.name,
      cfg_scale: plan.cfgScale,
      steps: plan.steps,
      batch_size: plan.batchSize,
      restore_faces: false,
      face_restoration_model: null,
      sd_model_name: model.name,
      sd_model_hash: model.hash,
      sd_vae_name: null,
      sd_vae_hash: null,
      seed_resize_from_w: -1,
      seed_resize_from_h: -1,
      denoising_strength: plan.denoisingStrength,
      extra_generation_params: extra,
      index_of_first_image: indexOfFirst,
      infotexts,
      styles: plan.styles,
      job_timestamp: job.timestamp,
      clip_skip: 1,
      is_using_inpainting_conditioning: plan.kind === 'img2img' && pipe.inpainting,
      version: o.version,
    },
  };
}
