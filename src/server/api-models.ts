/**
 * The request models of AUTOMATIC1111's API (modules/api/models.py: the fields of
 * StableDiffusionProcessingTxt2Img / Img2Img plus the API's own; modules/progress.py), with their
 * A1111 defaults, and what this server caps. Fields that would change A1111's output in ways this
 * server cannot reproduce (hires fix, face restoration, scripts, variation seeds...) are accepted
 * at their defaults and refused otherwise (unsupportedFields), never silently ignored.
 */
import type { Field, Fields } from './schema.js';

/** The caps a request is held to (serve's flags). */
export interface Limits {
  /** Largest `steps`. */
  maxSteps: number;
  /** Largest n_iter x batch_size. */
  maxImages: number;
  /** Largest width or height of a result, and of an input image's sides. */
  maxSize: number;
  /** Largest request body, bytes. */
  maxBody: number;
}

export const DEFAULT_LIMITS: Limits = { maxSteps: 150, maxImages: 64, maxSize: 2048, maxBody: 32 * 1024 * 1024 };

const str = (d: string | null = null, description?: string): Field => ({ type: 'string', default: d, description });
const int = (d: number | null, more: Partial<Field> = {}): Field => ({ type: 'integer', default: d, ...more });
const num = (d: number | null, more: Partial<Field> = {}): Field => ({ type: 'number', default: d, ...more });
const bool = (d: boolean | null, description?: string): Field => ({ type: 'boolean', default: d, description });

/**
 * StableDiffusionProcessing's fields that the API takes, with A1111's defaults, except width and
 * height: absent, they are the model's size (filled in once the request's model is known).
 */
function processingFields(limits: Limits, strength: number): Fields {
  const size = (what: string): Field =>
    int(null, {
      ge: 1,
      le: () => limits.maxSize,
      capFlag: '--max-size',
      description: `${what} of the images returned (default: the model's size; images are sampled at the model's size and resized)`,
    });
  return {
    prompt: str('', 'what to draw'),
    negative_prompt: str('', 'what to steer away from (replaces the unconditional context)'),
    styles: { type: 'array', items: 'string', default: [], description: 'A1111 prompt styles (none are defined here)' },
    seed: int(-1, { ge: -1, le: Number.MAX_SAFE_INTEGER - 1_000_000, description: '-1: random; image i of the request uses seed + i' }),
    subseed: int(-1, { ge: -1, le: Number.MAX_SAFE_INTEGER - 1_000_000 }),
    subseed_strength: num(0, { ge: 0, le: 1, description: 'variation seeds: only 0 is supported' }),
    seed_resize_from_h: int(-1),
    seed_resize_from_w: int(-1),
    sampler_name: str(null, 'an A1111 sampler name (GET /sdapi/v1/samplers)'),
    scheduler: str(null, "A1111 1.9's schedule type: 'Automatic' or 'Karras'"),
    batch_size: int(1, { ge: 1, description: 'images per batch (seeds seed, seed + 1, ...)' }),
    n_iter: int(1, { ge: 1, description: 'batches' }),
    steps: int(50, { ge: 1, le: () => limits.maxSteps, capFlag: '--max-steps' }),
    cfg_scale: num(7, { ge: 0, le: 100 }),
    width: size('width'),
    height: size('height'),
    restore_faces: bool(null, 'not supported (true is refused)'),
    tiling: bool(null, 'not supported (true is refused)'),
    do_not_save_samples: bool(false),
    do_not_save_grid: bool(false),
    eta: num(null, { ge: 0, le: 1, description: "DDIM's eta (default: the eta_ddim option, 0)" }),
    denoising_strength: num(strength, { ge: 0, le: 1 }),
    s_min_uncond: num(null),
    s_churn: num(null),
    s_tmax: num(null),
    s_tmin: num(null),
    s_noise: num(null),
    override_settings: { type: 'object', default: {}, description: 'options for this request only (sd_model_checkpoint switches the model)' },
    override_settings_restore_afterwards: bool(true),
    refiner_checkpoint: str(null, 'not supported'),
    refiner_switch_at: num(null),
    disable_extra_networks: bool(false),
    comments: { type: 'object', default: null },
  };
}

/** The API's own fields of both requests. */
function apiFields(): Fields {
  return {
    sampler_index: str('Euler', 'the sampler when sampler_name is not given'),
    script_name: str(null, 'not supported'),
    script_args: { type: 'array', items: 'any', default: [] },
    send_images: bool(true),
    save_images: bool(false, 'this server saves nothing'),
    alwayson_scripts: { type: 'object', default: {}, description: 'not supported (must be empty)' },
    force_task_id: str(null, 'the job id /internal/progress reports on'),
    infotext: str(null, 'not supported'),
  };
}

export function txt2imgFields(limits: Limits): Fields {
  return {
    ...processingFields(limits, 0),
    enable_hr: bool(false, 'hires fix: not supported'),
    firstphase_width: int(0),
    firstphase_height: int(0),
    hr_scale: num(2),
    hr_upscaler: str(null),
    hr_second_pass_steps: int(0),
    hr_resize_x: int(0),
    hr_resize_y: int(0),
    hr_checkpoint_name: str(null),
    hr_sampler_name: str(null),
    hr_scheduler: str(null),
    hr_prompt: str(''),
    hr_negative_prompt: str(''),
    ...apiFields(),
  };
}

export function img2imgFields(limits: Limits): Fields {
  return {
    ...processingFields(limits, 0.75),
    init_images: { type: 'array', items: 'string', default: null, description: 'base64 images (a data: URL prefix is allowed)' },
    resize_mode: int(0, { ge: 0, le: 3, description: "0 'Just resize', 1 'Crop and resize', 2 'Resize and fill'" }),
    image_cfg_scale: num(null, { description: 'instruct-pix2pix models only; ignored as A1111 does for other models' }),
    mask: str(null, 'base64 mask, white = repaint (or its alpha, when transparent); the init images must have its size'),
    mask_blur_x: int(4, { ge: 0, le: 64 }),
    mask_blur_y: int(4, { ge: 0, le: 64 }),
    mask_blur: int(null, { ge: 0, le: 64, description: 'sets mask_blur_x and mask_blur_y' }),
    inpainting_fill: int(0, { ge: 0, le: 3, description: "masked content: 0 'fill', 1 'original', 2 'latent noise', 3 'latent nothing'" }),
    inpaint_full_res: bool(true, 'inpaint only the masked area (and the padding) at the processing size'),
    inpaint_full_res_padding: int(0, { ge: 0, le: () => limits.maxSize, capFlag: '--max-size' }),
    inpainting_mask_invert: int(0, { ge: 0, le: 1 }),
    initial_noise_multiplier: num(null, { description: 'only 1 is supported' }),
    latent_mask: str(null, 'not supported'),
    include_init_images: bool(false),
    ...apiFields(),
  };
}

export const PNG_INFO_FIELDS: Fields = { image: { type: 'string', default: '', description: 'a base64 PNG (a data: URL prefix is allowed)' } };

export const PROGRESS_QUERY_FIELDS: Fields = { skip_current_image: bool(false, 'leave current_image out') };

export const INTERNAL_PROGRESS_FIELDS: Fields = {
  id_task: str(null, 'the force_task_id of a request'),
  id_live_preview: int(-1, { description: 'the last preview received: the same one is not sent again' }),
  live_preview: bool(true),
};

/**
 * The fields whose non-default values this server refuses, with why: a 422 naming the field beats
 * images that silently differ from what A1111 would make.
 */
export function unsupportedFields(r: Record<string, unknown>): [string, string][] {
  const out: [string, string][] = [];
  const set = (v: unknown) => v !== null && v !== undefined && v !== '' && v !== 'None';
  if (r.enable_hr === true) out.push(['enable_hr', 'the hires fix is not supported']);
  if (r.restore_faces === true) out.push(['restore_faces', 'face restoration is not supported']);
  if (r.tiling === true) out.push(['tiling', 'tiling is not supported']);
  if ((r.subseed_strength as number) > 0) out.push(['subseed_strength', 'variation seeds are not supported (subseed_strength must be 0)']);
  if ((r.seed_resize_from_w as number) > 0 || (r.seed_resize_from_h as number) > 0)
    out.push(['seed_resize_from_w', 'seed resize is not supported (seed_resize_from_w/h must be -1 or 0)']);
  if (set(r.refiner_checkpoint)) out.push(['refiner_checkpoint', 'refiner models are not supported']);
  if (set(r.script_name)) out.push(['script_name', 'scripts are not supported']);
  if (r.alwayson_scripts && Object.keys(r.alwayson_scripts as object).length) out.push(['alwayson_scripts', 'always-on scripts are not supported']);
  if (set(r.infotext)) out.push(['infotext', 'requests from infotext are not supported']);
  if (set(r.latent_mask)) out.push(['latent_mask', 'a separate latent mask is not supported']);
  if (r.initial_noise_multiplier !== null && r.initial_noise_multiplier !== undefined && r.initial_noise_multiplier !== 1)
    out.push(['initial_noise_multiplier', 'only 1 is supported']);
  if (r.resize_mode === 3) out.push(['resize_mode', "3 ('Just resize (latent upscale)') is not supported; use 0, 1 or 2"]);
  return out;
}
