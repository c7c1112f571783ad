/**
 * The environment variable naming a folder of local transformers.js models, apart from the text
 * encoder (./clip.ts) so a command line can mention it without loading transformers.js.
 */
export const LOCAL_MODELS_ENV = 'TXT2IMG_LOCAL_MODELS';
