/**
 * img2img's strength: how much of the schedule a run denoises, as diffusers'
 * StableDiffusionImg2ImgPipeline.get_timesteps picks it. The run starts at schedule entry
 * `startIndex` from the input's latents noised to that entry's level (Scheduler.noiseToStep).
 */
import type { Scheduler } from './types.js';

export interface StrengthStart {
  /** The first entry of `timesteps` to run (timesteps.length: nothing to run, strength 0). */
  startIndex: number;
  /** Denoising steps run, int(n * strength): the rest of the n steps are skipped. */
  steps: number;
}

/**
 * For a scheduler configured with setTimesteps(n): init = min(int(n * strength), n) steps are run,
 * starting after the first n - init steps; the index is in model evaluations (diffusers multiplies
 * by `scheduler.order`, 2 for Heun, whose timesteps list every step but the first twice, so entry
 * 2k begins step k). Strength 1 starts at entry 0, strength 0 runs nothing.
 */
export function strengthStart(scheduler: Scheduler, strength: number): StrengthStart {
  if (typeof strength !== 'number' || !Number.isFinite(strength) || strength < 0 || strength > 1) {
    throw new Error(`strength (denoising strength) must be a number from 0 to 1, got ${strength}`);
  }
  const n = scheduler.numInferenceSteps;
  if (!(n >= 1)) throw new Error(`${scheduler.config.type}: call setTimesteps(n) before strengthStart`);
  const order = scheduler.config.type === 'heun' ? 2 : 1;
  // Python's int() of a positive float truncates, as Math.floor does.
  const init = Math.min(Math.floor(n * strength), n);
  const tStart = Math.max(n - init, 0);
  return { startIndex: Math.min(tStart * order, scheduler.timesteps.length), steps: n - tStart };
}
