/**
 * Noise schedules against values derived independently of src/: numpy float64 runs of each
 * formula (the literals below), closed forms, and figures quoted in papers.
 */
import { describe, expect, it } from 'vitest';
import {
  BETA_SCHEDULES,
  SCHEDULE_ALIASES,
  cumprodAlphas,
  makeBetas,
  makeTimesteps,
  parseBetaScheduleName,
  rescaleZeroTerminalSnr,
  resolveScheduleAlias,
  roundHalfEven,
} from '../../src/schedulers/index.js';

const T = 1000;

function relClose(actual: number, expected: number, rel = 1e-9): void {
  expect(Math.abs(actual - expected)).toBeLessThanOrEqual(rel * Math.abs(expected) + 1e-15);
}

describe('beta schedules: alphaBar_t', () => {
  it('linear 1e-4..0.02 (DDPM) matches numpy', () => {
    const ab = cumprodAlphas(makeBetas('linear', T, 1e-4, 0.02));
    // numpy: np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    relClose(ab[0], 0.9999);
    relClose(ab[99], 0.89701814567496);
    relClose(ab[499], 0.07858724288177824);
    relClose(ab[999], 4.035829765375676e-5, 1e-8);
  });

  it('scaled-linear 0.00085..0.012 (Stable Diffusion) matches numpy and Lin et al. 2024', () => {
    const ab = cumprodAlphas(makeBetas('scaled-linear', T, 0.00085, 0.012));
    relClose(ab[0], 0.99915);
    relClose(ab[99], 0.8954627734950016);
    relClose(ab[499], 0.27766965045646763);
    relClose(ab[999], 0.004660098513077238, 1e-8);
    // Lin et al. 2024, sec. 3.1: SD's terminal sqrt(alphaBar_T) = 0.068265, SNR = 0.004682.
    expect(Math.sqrt(ab[999])).toBeCloseTo(0.068265, 6);
    expect(ab[999] / (1 - ab[999])).toBeCloseTo(0.004682, 6);
  });

  it('scaled-linear is linear in sqrt(beta)', () => {
    const b = makeBetas('scaled-linear', T, 0.00085, 0.012);
    const d0 = Math.sqrt(b[1]) - Math.sqrt(b[0]);
    for (const t of [10, 500, 999]) expect(Math.sqrt(b[t]) - Math.sqrt(b[t - 1])).toBeCloseTo(d0, 12);
    expect(Math.sqrt(b[0])).toBeCloseTo(Math.sqrt(0.00085), 14);
    expect(Math.sqrt(b[999])).toBeCloseTo(Math.sqrt(0.012), 14);
  });

  it("quadratic is Ho et al.'s `quad`: the scaled-linear formula", () => {
    const q = makeBetas('quadratic', T, 1e-4, 0.02);
    const s = makeBetas('scaled-linear', T, 1e-4, 0.02);
    for (let t = 0; t < T; t++) expect(q[t]).toBe(s[t]);
    expect(q[0]).toBeCloseTo(1e-4, 15);
    expect(q[999]).toBeCloseTo(0.02, 15);
  });

  it('cosine equals the closed form f(t+1)/f(0) of Nichol & Dhariwal eq. 17 until the 0.999 clip', () => {
    const ab = cumprodAlphas(makeBetas('cosine', T, 1e-4, 0.02));
    const f = (u: number) => Math.cos(((u + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
    for (const t of [0, 1, 100, 499, 900, 990]) relClose(ab[t], f((t + 1) / T) / f(0), 1e-10);
    relClose(ab[0], 0.999958715775178);
    relClose(ab[499], 0.4938435904406382);
    relClose(ab[900], 0.023616108794393863);
    // The last beta is clipped to 0.999 (f(1) = 0 would make it 1): alphaBar_999 = 0.001 * alphaBar_998.
    const b = makeBetas('cosine', T, 1e-4, 0.02);
    expect(b[999]).toBe(0.999);
    expect(Math.max(...b)).toBe(0.999);
    relClose(ab[999], 2.4287669070348567e-9, 1e-7);
  });

  it('sigmoid (GeoDiff) matches numpy', () => {
    const b = makeBetas('sigmoid', T, 1e-4, 0.02);
    relClose(b[0], 1e-4 + (0.02 - 1e-4) / (1 + Math.exp(6)));
    relClose(b[0], 0.00014920520081703202);
    relClose(b[999], 0.01995079479918297);
    const ab = cumprodAlphas(b);
    relClose(ab[499], 0.30193105660219516);
    relClose(ab[999], 3.968181990533219e-5, 1e-8);
  });

  it('every schedule gives decreasing alphaBar in (0, 1)', () => {
    for (const name of BETA_SCHEDULES) {
      const ab = cumprodAlphas(makeBetas(name, 50, 1e-4, 0.02));
      for (let t = 0; t < ab.length; t++) {
        expect(ab[t]).toBeGreaterThan(0);
        expect(ab[t]).toBeLessThan(1);
        if (t > 0) expect(ab[t]).toBeLessThan(ab[t - 1]);
      }
    }
  });

  it('zero terminal SNR rescale (Lin et al. 2024, Alg. 1) keeps alphaBar_0 and zeroes alphaBar_T', () => {
    const b = makeBetas('scaled-linear', T, 0.00085, 0.012);
    const ab0 = cumprodAlphas(b);
    const ab = cumprodAlphas(rescaleZeroTerminalSnr(b));
    relClose(ab[0], ab0[0], 1e-12);
    expect(ab[999]).toBeLessThan(1e-20);
  });

  it('bad names and ranges are errors naming the value and what is allowed', () => {
    expect(() => parseBetaScheduleName('scaled_linear')).toThrow(/'scaled_linear' is unknown; allowed: linear, scaled-linear, cosine, sigmoid, quadratic/);
    expect(() => makeBetas('linear', T, 0.02, 1e-4)).toThrow(/betaEnd \(0.0001\) must be >= betaStart \(0.02\)/);
    expect(() => makeBetas('linear', 0, 1e-4, 0.02)).toThrow(/got 0/);
  });
});

describe('schedule alias table', () => {
  it("CompVis' `linear` is our `scaled-linear`; diffusers' names map as documented", () => {
    expect(resolveScheduleAlias('compvis', 'linear')).toBe('scaled-linear');
    expect(resolveScheduleAlias('compvis', 'sqrt_linear')).toBe('linear');
    expect(resolveScheduleAlias('diffusers', 'scaled_linear')).toBe('scaled-linear');
    expect(resolveScheduleAlias('diffusers', 'squaredcos_cap_v2')).toBe('cosine');
    expect(resolveScheduleAlias('diffusers', 'linear')).toBe('linear');
    expect(resolveScheduleAlias('ddpm', 'quad')).toBe('quadratic');
    expect(() => resolveScheduleAlias('compvis', 'sqrt')).toThrow(
      /compvis schedule 'sqrt' has no equivalent here; allowed compvis names: linear, sqrt_linear, cosine/,
    );
    for (const a of SCHEDULE_ALIASES) expect(BETA_SCHEDULES).toContain(a.ours);
  });

  it("CompVis' linear(0.00085, 0.012) reproduces SD's terminal alphaBar", () => {
    const ours = resolveScheduleAlias('compvis', 'linear');
    const ab = cumprodAlphas(makeBetas(ours, T, 0.00085, 0.012));
    expect(Math.sqrt(ab[999])).toBeCloseTo(0.068265, 6);
  });
});

describe('timestep spacing (Lin et al. 2024, Table 2; diffusers timestep_spacing)', () => {
  it('10 of 1000', () => {
    expect(makeTimesteps(T, 10, 'leading')).toEqual([900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
    expect(makeTimesteps(T, 10, 'leading', 1)).toEqual([901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    expect(makeTimesteps(T, 10, 'trailing')).toEqual([999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
    expect(makeTimesteps(T, 10, 'linspace')).toEqual([999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
  });

  it('rounding is half-to-even as numpy (trailing 16 of 1000 has .5 cases)', () => {
    expect(roundHalfEven(937.5)).toBe(938);
    expect(roundHalfEven(812.5)).toBe(812);
    expect(roundHalfEven(2.5)).toBe(2);
    expect(roundHalfEven(-1.5)).toBe(-2);
    // numpy: np.round(np.arange(1000, 0, -62.5)).astype(int) - 1
    expect(makeTimesteps(T, 16, 'trailing')).toEqual([999, 937, 874, 811, 749, 687, 624, 561, 499, 437, 374, 311, 249, 187, 124, 61]);
  });

  it('any n from 1 to T gives n distinct descending timesteps in range', () => {
    for (const spacing of ['leading', 'trailing', 'linspace'] as const) {
      for (const n of [1, 3, 7, 50, 333, 999, 1000]) {
        const ts = makeTimesteps(T, n, spacing);
        expect(ts.length).toBe(n);
        for (let i = 1; i < n; i++) expect(ts[i]).toBeLessThan(ts[i - 1]);
        expect(ts[n - 1]).toBeGreaterThanOrEqual(0);
        expect(ts[0]).toBeLessThan(T);
      }
    }
    expect(() => makeTimesteps(T, 0, 'leading')).toThrow(/from 1 to numTrainTimesteps \(1000\), got 0/);
    expect(() => makeTimesteps(T, 1001, 'leading')).toThrow(/got 1001/);
  });
});
