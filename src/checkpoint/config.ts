/**
 * Validation shared by every component config (`config.json` next to the weights): each error
 * names the config, the field, the value and what is allowed.
 */

export class ConfigChecker {
  constructor(readonly what: string) {}

  fail(key: string, value: unknown, allowed: string): never {
    const shown = typeof value === 'number' && !Number.isFinite(value) ? String(value) : JSON.stringify(value);
    throw new Error(`${this.what}: ${key} must be ${allowed}, got ${shown}`);
  }

  int(v: unknown, key: string, min: number, max = 1 << 20): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) this.fail(key, v, `an integer from ${min} to ${max}`);
    return v;
  }

  num(v: unknown, key: string, ok: (x: number) => boolean, allowed: string): number {
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) this.fail(key, v, allowed);
    return v;
  }

  bool(v: unknown, key: string): boolean {
    if (typeof v !== 'boolean') this.fail(key, v, 'true or false');
    return v;
  }

  oneOf<T extends string | number>(allowed: readonly T[], v: unknown, key: string): T {
    if ((allowed as readonly unknown[]).includes(v)) return v as T;
    return this.fail(key, v, `one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`);
  }

  /**
   * The common prelude of a versioned component config: an object with only known keys, every
   * key without a default present, defaults filled in, the right `_class_name`, and a `_version`
   * this library can read.
   */
  fields(input: unknown, keys: readonly string[], defaults: Record<string, unknown>, className: string, version: number): Record<string, unknown> {
    if (input === null || typeof input !== 'object' || Array.isArray(input)) this.fail('the config', input, 'an object');
    const raw = input as Record<string, unknown>;
    const unknown = Object.keys(raw).filter((k) => !keys.includes(k));
    if (unknown.length > 0) {
      throw new Error(`${this.what}: unknown key(s) ${unknown.map((k) => `'${k}'`).join(', ')}; allowed: ${keys.join(', ')}`);
    }
    const missing = keys.filter((k) => !(k in defaults) && raw[k] === undefined);
    if (missing.length > 0) throw new Error(`${this.what}: missing key(s) ${missing.map((k) => `'${k}'`).join(', ')}`);
    const c = { ...defaults, ...raw };
    if (c._class_name !== className) this.fail('_class_name', c._class_name, `'${className}'`);
    const v = this.int(c._version, '_version', 1);
    if (v > version) this.fail('_version', v, `at most ${version} (this library's version; the config is newer)`);
    return c;
  }
}
