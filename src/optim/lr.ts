/** Learning-rate schedules: linear warm-up, then constant or cosine decay (Loshchilov & Hutter 2017, eq. 5). */

export interface LrSchedule {
  kind: 'constant' | 'cosine';
  base: number;
  warmupSteps: number;
  /** Total optimizer steps (cosine reaches `min` there). */
  totalSteps: number;
  min?: number;
}

export const LR_KINDS = ['constant', 'cosine'] as const;

export function validateLrSchedule(s: LrSchedule): LrSchedule {
  if (!(LR_KINDS as readonly string[]).includes(s.kind)) throw new Error(`lr schedule '${s.kind}' is unknown; allowed: ${LR_KINDS.join(', ')}`);
  if (!(Number.isFinite(s.base) && s.base > 0)) throw new Error(`learning rate must be a finite number > 0, got ${s.base}`);
  if (!(Number.isInteger(s.warmupSteps) && s.warmupSteps >= 0)) throw new Error(`warm-up steps must be an integer >= 0, got ${s.warmupSteps}`);
  if (!(Number.isInteger(s.totalSteps) && s.totalSteps >= 1)) throw new Error(`total steps must be an integer >= 1, got ${s.totalSteps}`);
  return s;
}

/** Learning rate for optimizer step `step` (0-based). */
export function learningRateAt(step: number, s: LrSchedule): number {
  const min = s.min ?? 0;
  if (s.warmupSteps > 0 && step < s.warmupSteps) return (s.base * (step + 1)) / s.warmupSteps;
  if (s.kind === 'constant') return s.base;
  const span = Math.max(1, s.totalSteps - s.warmupSteps);
  const progress = Math.min(1, (step - s.warmupSteps) / span);
  return min + 0.5 * (s.base - min) * (1 + Math.cos(Math.PI * progress));
}
