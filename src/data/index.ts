export * from './captioned.js';
export * from './transform.js';
export * from './sampler.js';
export * from './loader.js';
export * from './mnist.js';
export * from './cache.js';
export { batchToTensor, type ImageBatch } from '../image/convert.js';
