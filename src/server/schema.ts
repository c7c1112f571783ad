/**
 * Request bodies checked the way AUTOMATIC1111's API (FastAPI + pydantic 1) checks them, so a bad
 * request gets the same 422 answer: {"detail": [{"loc": ["body", "steps"], "msg": "value is not a
 * valid integer", "type": "type_error.integer"}, ...]}, every problem listed at once. Values are
 * coerced as pydantic 1 does (a number for a string field, "5" for an integer, "true" for a
 * boolean); null means the default (every A1111 field is Optional). Unknown fields are ignored,
 * as pydantic's default `extra = ignore`. The same field tables give the OpenAPI schemas.
 */

export type FieldType = 'integer' | 'number' | 'string' | 'boolean' | 'array' | 'object' | 'any';

export interface Field {
  type: FieldType;
  /** Used when the field is absent or null. */
  default?: unknown;
  /** Inclusive bounds; a function reads the server's configured cap when the request is checked. */
  ge?: number;
  le?: number | (() => number);
  /** The server flag behind `le`, named in the message when the cap is exceeded. */
  capFlag?: string;
  /** Element type of an array. */
  items?: FieldType;
  description?: string;
}

export type Fields = Record<string, Field>;

/** One problem, in pydantic 1's error shape. */
export interface ValidationIssue {
  loc: (string | number)[];
  msg: string;
  type: string;
  ctx?: Record<string, unknown>;
}

/** A request that does not fit its model: answered 422 with `{ detail }`. */
export class ValidationError extends Error {
  constructor(readonly detail: ValidationIssue[]) {
    super(detail.map((d) => `${d.loc.join('.')}: ${d.msg}`).join('; '));
  }
}

/** The 422 of one problem (for checks that span fields, or that need the model). */
export function invalid(loc: (string | number)[], msg: string, type = 'value_error', ctx?: Record<string, unknown>): ValidationError {
  return new ValidationError([{ loc, msg, type, ...(ctx ? { ctx } : {}) }]);
}

const TRUE = new Set(['1', 'on', 't', 'true', 'y', 'yes']);
const FALSE = new Set(['0', 'off', 'f', 'false', 'n', 'no']);

type Coerced = { ok: true; value: unknown } | { ok: false; msg: string; type: string };

/** pydantic 1's validators for one value. */
function coerce(type: FieldType, v: unknown): Coerced {
  switch (type) {
    case 'integer': {
      const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*[+-]?\d+\s*$/.test(v) ? Number(v) : NaN;
      return Number.isSafeInteger(n) ? { ok: true, value: n } : { ok: false, msg: 'value is not a valid integer', type: 'type_error.integer' };
    }
    case 'number': {
      const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
      return Number.isFinite(n) ? { ok: true, value: n } : { ok: false, msg: 'value is not a valid float', type: 'type_error.float' };
    }
    case 'string':
      if (typeof v === 'string') return { ok: true, value: v };
      if (typeof v === 'number' && Number.isFinite(v)) return { ok: true, value: String(v) };
      return { ok: false, msg: 'str type expected', type: 'type_error.str' };
    case 'boolean': {
      if (typeof v === 'boolean') return { ok: true, value: v };
      const key = typeof v === 'number' ? String(v) : typeof v === 'string' ? v.trim().toLowerCase() : undefined;
      if (key !== undefined && TRUE.has(key)) return { ok: true, value: true };
      if (key !== undefined && FALSE.has(key)) return { ok: true, value: false };
      return { ok: false, msg: 'value could not be parsed to a boolean', type: 'type_error.bool' };
    }
    case 'array':
      return Array.isArray(v) ? { ok: true, value: v } : { ok: false, msg: 'value is not a valid list', type: 'type_error.list' };
    case 'object':
      return v !== null && typeof v === 'object' && !Array.isArray(v)
        ? { ok: true, value: v }
        : { ok: false, msg: 'value is not a valid dict', type: 'type_error.dict' };
    case 'any':
      return { ok: true, value: v };
  }
}

/**
 * The body as the model's fields, defaults filled in, or a ValidationError listing every
 * problem. `loc` prefixes the locations ('body' for a request body, 'query' for a query string).
 */
export function parseFields(input: unknown, fields: Fields, loc: string = 'body'): Record<string, unknown> {
  const coerced = coerce('object', input);
  if (!coerced.ok) throw new ValidationError([{ loc: [loc], msg: coerced.msg, type: coerced.type }]);
  const body = coerced.value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  const issues: ValidationIssue[] = [];
  for (const [name, f] of Object.entries(fields)) {
    const raw = body[name];
    if (raw === undefined || raw === null) {
      out[name] = structuredClone(f.default ?? null);
      continue;
    }
    const c = coerce(f.type, raw);
    if (!c.ok) {
      issues.push({ loc: [loc, name], msg: c.msg, type: c.type });
      continue;
    }
    let value = c.value;
    if (f.type === 'array' && f.items && f.items !== 'any') {
      const items: unknown[] = [];
      (value as unknown[]).forEach((item, i) => {
        const ci = coerce(f.items!, item);
        if (ci.ok) items.push(ci.value);
        else issues.push({ loc: [loc, name, i], msg: ci.msg, type: ci.type });
      });
      value = items;
    }
    if (typeof value === 'number') {
      if (f.ge !== undefined && value < f.ge) {
        issues.push({
          loc: [loc, name],
          msg: `ensure this value is greater than or equal to ${f.ge}`,
          type: 'value_error.number.not_ge',
          ctx: { limit_value: f.ge },
        });
        continue;
      }
      const le = typeof f.le === 'function' ? f.le() : f.le;
      if (le !== undefined && value > le) {
        issues.push({
          loc: [loc, name],
          msg: `ensure this value is less than or equal to ${le}${f.capFlag ? ` (this server's ${f.capFlag})` : ''}`,
          type: 'value_error.number.not_le',
          ctx: { limit_value: le },
        });
        continue;
      }
    }
    out[name] = value;
  }
  if (issues.length) throw new ValidationError(issues);
  return out;
}

/** A JSON body's text parsed, or FastAPI's 422 for malformed JSON (loc ["body", position]). */
export function parseJsonBody(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    const msg = (e as Error).message;
    const m = /position (\d+)/.exec(msg);
    const pos = m ? Number(m[1]) : text.length;
    const before = text.slice(0, pos);
    const lineno = before.split('\n').length;
    const colno = pos - before.lastIndexOf('\n');
    throw new ValidationError([
      {
        loc: ['body', pos],
        msg: `${msg.replace(/\s+in JSON at position \d+.*$/, '')}: line ${lineno} column ${colno} (char ${pos})`,
        type: 'value_error.jsondecode',
        ctx: { msg, pos, lineno, colno },
      },
    ]);
  }
}

/** The OpenAPI 3 schema of a field table (`title` as FastAPI writes it: the name in Title Case). */
export function openApiSchema(title: string, fields: Fields): Record<string, unknown> {
  const properties: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(fields)) {
    const p: Record<string, unknown> = { title: name.replace(/(^|_)(\w)/g, (_, s: string, c: string) => (s ? ' ' : '') + c.toUpperCase()) };
    if (f.type !== 'any') p.type = f.type;
    if (f.type === 'array' && f.items) p.items = f.items === 'any' ? {} : { type: f.items };
    if (f.default !== undefined && f.default !== null) p.default = f.default;
    if (f.ge !== undefined) p.minimum = f.ge;
    const le = typeof f.le === 'function' ? f.le() : f.le;
    if (le !== undefined) p.maximum = le;
    if (f.description) p.description = f.description;
    properties[name] = p;
  }
  return { title, type: 'object', properties };
}
