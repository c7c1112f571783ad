/**
 * Conditioning encoders for the U-Net: CLIP text (transformers.js) and learned class labels,
 * behind one interface (`ConditionEncoder`), plus the tiny random (NOT pretrained)
 * CLIP-architecture model generator used offline.
 */
export { type Conditioning, type ConditionEncoder, type ConditionEncoderKind, concatConditioning, disposeConditioning } from './types.js';
export {
  CLIP_MAX_LENGTH,
  ClipTextEncoder,
  DEFAULT_CLIP_MODEL_ID,
  LOCAL_MODELS_ENV,
  defaultClipTextEncoderConfig,
  loadClipTextEncoder,
  readClipHiddenSize,
  resolveClipModelLocation,
  validateClipTextEncoderConfig,
  type ClipEncoderStats,
  type ClipLoadOptions,
  type ClipModelLocation,
  type ClipTextEncoderConfig,
  type TokenizedPrompts,
} from './clip.js';
export { LabelEncoder, validateLabelEncoderConfig, type LabelEncoderConfig } from './label.js';
export {
  TINY_CLIP_NOTE,
  buildTinyClipOnnx,
  generateTinyClipWeights,
  resolveTinyClipConfig,
  tinyClipForward,
  writeTinyClipModel,
  type TinyClipConfig,
  type TinyClipOptions,
  type WriteTinyClipOptions,
  type WriteTinyClipResult,
} from './tiny-clip.js';

import { validateClipTextEncoderConfig, type ClipTextEncoderConfig } from './clip.js';
import { validateLabelEncoderConfig, type LabelEncoderConfig } from './label.js';

/** What text_encoder/config.json holds: either kind. */
export type ConditionEncoderConfig = ClipTextEncoderConfig | LabelEncoderConfig;

/** Validates either kind of config, dispatching on its `kind` ('clip' or 'label'). */
export function validateConditionEncoderConfig(obj: unknown): ConditionEncoderConfig {
  const kind = typeof obj === 'object' && obj !== null ? (obj as { kind?: unknown }).kind : undefined;
  if (kind === 'clip') return validateClipTextEncoderConfig(obj);
  if (kind === 'label') return validateLabelEncoderConfig(obj);
  throw new Error(`text encoder config: 'kind' must be 'clip' or 'label', got ${JSON.stringify(kind)}`);
}
