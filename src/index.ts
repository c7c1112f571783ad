/**
 * txt2img as a library: `import { pipeline } from 'txt2img'`. The public API is what this file
 * exports (README, "Using from code"); everything else is internal and may change.
 */
export { BACKEND_NAMES, type BackendInfo, type BackendName, currentBackend, initBackend } from './backend/index.js';
export { RUNTIME_CHOICES, type Runtime, type RuntimeChoice } from './onnx/runtime.js';
export { type GenerateOptions, type LoadPipelineOptions, type PipelineInfo, Txt2ImgPipeline } from './pipeline/pipeline.js';
export { type GeneratedImage, type ImageOptions, type TextToImage, type TextToImageOptions, defaultModelDir, pipeline } from './pipeline/text-to-image.js';
export { type Txt2ImgOptions, type Txt2ImgResult, runTxt2Img } from './pipeline/txt2img.js';
export { type EditPlan, type Img2ImgOptions, planEdit, runImg2Img } from './pipeline/img2img.js';
export { type EditPixels, type EditPixelsOptions, RESIZE_MODES, INPAINTING_FILLS, loadMask, loadRgb, prepareEdit } from './image/edit.js';
export { type RunningServer, type ServeOptions, startServer } from './server/server.js';
export { bundlePipeline, type BundleOptions } from './pipeline/bundle.js';
export { Generator } from './random/generator.js';
export {
  A1111_SAMPLERS,
  type AnyScheduler,
  SAMPLER_NAMES,
  type Scheduler,
  type SchedulerConfig,
  createScheduler,
  parseSamplerName,
  parseSchedulerConfig,
  schedulerConfigFromDiffusers,
  schedulerConfigToDiffusers,
  withA1111Sampler,
} from './schedulers/index.js';
export { STAGES, type Stage, runTraining, type RunTrainingOptions } from './train/run-training.js';
export { type TrainConfig, applyOverrides, readTrainConfig, validateTrainConfig } from './train/train-config.js';
export { getPngText } from './image/png-text.js';
export { parseInfotext } from './image/infotext.js';
