/**
 * The one checker of every config the project reads (component configs next to their weights,
 * scheduler, training and benchmark configs): each error is one line naming the config, the
 * field, the value and what is allowed.
 */

/**
 * The diffusers version the component configs we write claim to come from (`_diffusers_version`):
 * the one whose format and numerics the tests check against (commit 58eb52c0, 0.40.0.dev0).
 */
export const DIFFUSERS_VERSION = '0.40.0.dev0';

/** A value as an error message shows it (non-finite numbers by name, the rest as JSON). */
function shown(value: unknown): string {
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  return JSON.stringify(value) ?? String(value);
}

export class ConfigChecker {
  constructor(readonly what: string) {}

  fail(key: string, value: unknown, allowed: string): never {
    if (value === undefined) throw new Error(`${this.what}: ${key} is missing; it must be ${allowed}`);
    throw new Error(`${this.what}: ${key} must be ${allowed}, got ${shown(value)}`);
  }

  /** A plain object (not null, not an array): what every config and nested section is. */
  object(v: unknown, key = 'the config'): Record<string, unknown> {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) this.fail(key, v, 'an object');
    return v as Record<string, unknown>;
  }

  /**
   * No keys but `keys` (a typo would otherwise be silently ignored); `where` names a nested
   * section ('data'). With `comments`, keys starting with '_' or '$' are notes and allowed.
   */
  known(o: Record<string, unknown>, keys: readonly string[], where?: string, opts: { comments?: boolean } = {}): void {
    const unknown = Object.keys(o).filter((k) => !keys.includes(k) && !(opts.comments && /^[_$]/.test(k)));
    if (unknown.length === 0) return;
    const names = unknown.map((k) => `'${where ? `${where}.` : ''}${k}'`).join(', ');
    throw new Error(`${this.what}: unknown key(s) ${names}; allowed: ${keys.join(', ')}`);
  }

  int(v: unknown, key: string, min: number, max = 1 << 20): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      this.fail(key, v, max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer from ${min} to ${max}`);
    }
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

  /** A non-empty string (after trimming). */
  str(v: unknown, key: string, allowed = 'a non-empty string'): string {
    if (typeof v !== 'string' || v.trim() === '') this.fail(key, v, allowed);
    return v;
  }

  /** One of `allowed`; a wrong name reads "key 'x' is unknown; allowed: a, b", as names do everywhere. */
  oneOf<T extends string | number>(allowed: readonly T[], v: unknown, key: string): T {
    if ((allowed as readonly unknown[]).includes(v)) return v as T;
    if (typeof v === 'string' && allowed.every((a) => typeof a === 'string'))
      throw new Error(`${this.what}: ${key} '${v}' is unknown; allowed: ${allowed.join(', ')}`);
    const names = allowed.map((a) => JSON.stringify(a));
    return this.fail(key, v, names.length === 1 ? names[0] : `one of ${names.join(', ')}`);
  }

  /**
   * The common prelude of a versioned component config: an object with only known keys, every
   * key without a default present, defaults filled in, the right `_class_name`, and a `_version`
   * this library can read.
   */
  fields(input: unknown, keys: readonly string[], defaults: Record<string, unknown>, className: string, version: number): Record<string, unknown> {
    const raw = this.object(input);
    this.known(raw, keys);
    const missing = keys.filter((k) => !(k in defaults) && raw[k] === undefined);
    if (missing.length > 0) throw new Error(`${this.what}: missing key(s) ${missing.map((k) => `'${k}'`).join(', ')}`);
    const c = { ...defaults, ...raw };
    if (c._class_name !== className) this.fail('_class_name', c._class_name, `'${className}'`);
    const v = this.int(c._version, '_version', 1);
    if (v > version) this.fail('_version', v, `at most ${version} (this library's version; the config is newer)`);
    return c;
  }
}
