/** The 2-D toy diffusion: datasets, model, training/sampling, distances, rendering, the whole run. */
export * from './datasets.js';
export * from './metrics.js';
export * from './model.js';
export * from './render.js';
export * from './run.js';
export * from './train.js';
