/**
 * Synthetic captioned scenes (one face or shape on a plain background) for training and
 * evaluating the bundled text-to-image model. See generate.ts for the folder layout.
 */
export * from './vocab.js';
export * from './raster.js';
export * from './captions.js';
export * from './png.js';
export * from './generate.js';
