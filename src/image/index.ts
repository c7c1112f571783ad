export * from './convert.js';
export * from './grid.js';
export * from './png-text.js';
export * from './infotext.js';
export * from './animate.js';
export * from './progress.js';
