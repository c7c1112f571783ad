/**
 * The names of img2img's modes as AUTOMATIC1111's API and UI give them (resize_mode,
 * inpainting_fill), in a module light enough for `--help` (no tfjs, no sharp).
 */

/** A1111's resize modes, by their API number: 0, 1, 2. */
export const RESIZE_MODES = ['Just resize', 'Crop and resize', 'Resize and fill'] as const;
export type ResizeMode = 0 | 1 | 2;

/** A resize mode as a number (0-2), A1111's name ('Crop and resize') or a flag spelling ('crop-and-resize'). */
export function parseResizeMode(value: unknown): ResizeMode {
  if (value === 0 || value === 1 || value === 2) return value;
  const key =
    typeof value === 'string'
      ? value
          .trim()
          .toLowerCase()
          .replace(/[-_\s]+/g, ' ')
      : undefined;
  const i = RESIZE_MODES.findIndex((m) => m.toLowerCase() === key);
  if (i >= 0) return i as ResizeMode;
  if (key !== undefined && /^[0-2]$/.test(key)) return Number(key) as ResizeMode;
  throw new Error(`resize mode must be 0, 1 or 2 (${RESIZE_MODES.map((m, j) => `${j} = '${m}'`).join(', ')}), got ${JSON.stringify(value)}`);
}

/** A1111's "masked content" (inpainting_fill): what the masked area starts from. */
export const INPAINTING_FILLS = ['fill', 'original', 'latent noise', 'latent nothing'] as const;
export type InpaintingFill = 0 | 1 | 2 | 3;

export function parseInpaintingFill(value: unknown): InpaintingFill {
  if (value === 0 || value === 1 || value === 2 || value === 3) return value;
  const key =
    typeof value === 'string'
      ? value
          .trim()
          .toLowerCase()
          .replace(/[-_\s]+/g, ' ')
      : undefined;
  const i = (INPAINTING_FILLS as readonly string[]).indexOf(key ?? '');
  if (i >= 0) return i as InpaintingFill;
  if (key !== undefined && /^[0-3]$/.test(key)) return Number(key) as InpaintingFill;
  throw new Error(`inpainting fill must be 0, 1, 2 or 3 (${INPAINTING_FILLS.map((m, j) => `${j} = '${m}'`).join(', ')}), got ${JSON.stringify(value)}`);
}
