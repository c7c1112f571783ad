import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { warmupStepsOf } from '../../src/train/stages.js';
import { applyOverrides, readTrainConfig, validateTrainConfig } from '../../src/train/train-config.js';

const configs = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../configs');

describe('training configs', () => {
  it.each(readdirSync(configs).filter((f) => f.endsWith('.json')))('shipped config %s validates', (f) => {
    expect(() => validateTrainConfig(readTrainConfig(path.join(configs, f)))).not.toThrow();
  });

  it('applies --set overrides as JSON values or strings', () => {
    const c = applyOverrides({ a: { b: 1 } }, ['a.b=2', 'a.c.d="x"', 'e=plain text', 'f=[1,2]']) as Record<string, unknown>;
    expect(c).toEqual({ a: { b: 2, c: { d: 'x' } }, e: 'plain text', f: [1, 2] });
    expect(() => applyOverrides({}, ['novalue'])).toThrow(/--set takes key.path=value, got 'novalue'/);
    // Keys that reach an object's prototype are refused, and nothing is polluted.
    for (const set of ['__proto__.polluted=1', 'a.constructor.prototype.polluted=1', 'a..b=1']) {
      expect(() => applyOverrides({ a: {} }, [set])).toThrow(/is not a config key/);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('names the bad field, its value and what is allowed', () => {
    const base = readTrainConfig(path.join(configs, 'mnist.json'));
    const bad = (sets: string[]) => () => validateTrainConfig(applyOverrides(base, sets));
    expect(bad(['unetTraining.steps=0'])).toThrow(/unetTraining.steps must be an integer >= 1, got 0/);
    expect(bad(['vaeTraining.lrSchedule="step"'])).toThrow(/vaeTraining.lrSchedule 'step' is unknown; allowed: constant, cosine/);
    expect(bad(['data.source="s3"'])).toThrow(/data.source 's3' is unknown; allowed: folder, mnist/);
    expect(bad(['unetTraining.lrr=1'])).toThrow(/unknown key\(s\) 'unetTraining.lrr'; allowed: steps, batchSize/);
    expect(bad(['unet.channels=[]'])).toThrow(/unet config: channels/);
    expect(bad(['conditioning.classNames=["0","1"]'])).toThrow(/classNames/);
    expect(bad(['unetTraining.workers=0'])).toThrow(/unetTraining.workers must be an integer from 1 to 64 \(1 = no data parallelism\), got 0/);
    expect(validateTrainConfig(applyOverrides(base, ['vaeTraining.workers=2'])).vaeTraining.workers).toBe(2);
    expect(bad(['unetTraining.runtime=gpu'])).toThrow("unetTraining.runtime: unknown runtime 'gpu'; allowed: auto, tfjs, onnx");
    expect(validateTrainConfig(applyOverrides(base, ['vaeTraining.runtime=onnx'])).vaeTraining.runtime).toBe('onnx');
    expect(bad(['lossWeighting="l2"'])).toThrow(/lossWeighting 'l2' is unknown; allowed: mse, min-snr/);
    expect(bad(['unetTraining.warmupSteps=1.5'])).toThrow(
      /unetTraining.warmupSteps must be an integer >= 0 \(steps\) or a fraction of the steps in \(0, 1\), got 1.5/,
    );
  });

  it('takes the warm-up as steps or as a fraction of the run, which scales with a shortened run', () => {
    const base = readTrainConfig(path.join(configs, 'default-model.json'));
    const full = validateTrainConfig(base).unetTraining;
    expect(warmupStepsOf(full)).toBe(200); // 0.0125 of 16000, the recipe's 200 steps
    expect(warmupStepsOf(validateTrainConfig(applyOverrides(base, ['unetTraining.steps=40'])).unetTraining)).toBe(1);
    expect(warmupStepsOf(validateTrainConfig(applyOverrides(base, ['unetTraining.steps=400', 'unetTraining.warmupSteps=0.1'])).unetTraining)).toBe(40);
    expect(warmupStepsOf(validateTrainConfig(applyOverrides(base, ['unetTraining.warmupSteps=30'])).unetTraining)).toBe(30);
  });
});
