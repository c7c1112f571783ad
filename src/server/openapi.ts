/**
 * The server's OpenAPI 3 document (GET /openapi.json), built from the same field tables that check
 * the requests, and a page that lists it (GET /docs; self-contained, no CDN).
 */
import { INTERNAL_PROGRESS_FIELDS, type Limits, PNG_INFO_FIELDS, PROGRESS_QUERY_FIELDS, img2imgFields, txt2imgFields } from './api-models.js';
import { type Fields, openApiSchema } from './schema.js';

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: unknown, description = 'Successful Response') => ({ description, content: { 'application/json': { schema } } });
const VALIDATION = { 422: json(ref('HTTPValidationError'), 'Validation Error') };

function objectOf(title: string, props: Record<string, unknown>, required: string[] = []): Record<string, unknown> {
  return { title, type: 'object', properties: props, ...(required.length ? { required } : {}) };
}

const STRING = { type: 'string' };
const NUMBER = { type: 'number' };
const BOOLEAN = { type: 'boolean' };
const OBJECT = { type: 'object' };
const STRINGS = { type: 'array', items: STRING };

export function openApiDocument(limits: Limits, modelSize: number, version: string): Record<string, unknown> {
  const body = (name: string) => ({ required: true, content: { 'application/json': { schema: ref(name) } } });
  const query = (fields: Fields) =>
    Object.entries(fields).map(([name, f]) => ({
      name,
      in: 'query',
      required: false,
      schema: { type: f.type, default: f.default },
      description: f.description,
    }));
  const imageResponse = (title: string) =>
    objectOf(
      title,
      {
        images: { ...STRINGS, title: 'Image', description: 'The generated images in base64 format.' },
        parameters: { ...OBJECT, title: 'Parameters' },
        info: { ...STRING, title: 'Info' },
      },
      ['parameters', 'info'],
    );
  return {
    openapi: '3.0.2',
    info: {
      title: 'txt2img',
      version,
      description:
        "AUTOMATIC1111 stable-diffusion-webui's API (the /sdapi/v1 routes below, same request and response shapes) served by txt2img. Images are sampled at the model's size; width and height set the size they are returned at.",
    },
    paths: {
      '/sdapi/v1/txt2img': {
        post: {
          summary: 'Text2Imgapi',
          requestBody: body('StableDiffusionProcessingTxt2Img'),
          responses: { 200: json(ref('TextToImageResponse')), ...VALIDATION },
        },
      },
      '/sdapi/v1/img2img': {
        post: {
          summary: 'Img2Imgapi',
          requestBody: body('StableDiffusionProcessingImg2Img'),
          responses: { 200: json(ref('ImageToImageResponse')), ...VALIDATION },
        },
      },
      '/sdapi/v1/png-info': {
        post: { summary: 'Pnginfoapi', requestBody: body('PNGInfoRequest'), responses: { 200: json(ref('PNGInfoResponse')), ...VALIDATION } },
      },
      '/sdapi/v1/progress': {
        get: { summary: 'Progressapi', parameters: query(PROGRESS_QUERY_FIELDS), responses: { 200: json(ref('ProgressResponse')), ...VALIDATION } },
      },
      '/sdapi/v1/interrupt': { post: { summary: 'Interruptapi: stops the running job between steps', responses: { 200: json(OBJECT) } } },
      '/sdapi/v1/skip': { post: { summary: 'Skip: stops the running batch; the next batch goes on', responses: { 200: json(OBJECT) } } },
      '/sdapi/v1/options': {
        get: { summary: 'Get Config', responses: { 200: json(ref('Options')) } },
        post: { summary: 'Set Config (sd_model_checkpoint switches the model)', requestBody: body('Options'), responses: { 200: json({}), ...VALIDATION } },
      },
      '/sdapi/v1/samplers': { get: { summary: 'Get Samplers', responses: { 200: json({ type: 'array', items: ref('SamplerItem') }) } } },
      '/sdapi/v1/schedulers': { get: { summary: 'Get Schedulers', responses: { 200: json({ type: 'array', items: ref('SchedulerItem') }) } } },
      '/sdapi/v1/sd-models': { get: { summary: 'Get Sd Models', responses: { 200: json({ type: 'array', items: ref('SDModelItem') }) } } },
      '/sdapi/v1/refresh-checkpoints': { post: { summary: 'Refresh Checkpoints', responses: { 200: json({}) } } },
      '/sdapi/v1/memory': { get: { summary: 'Get Memory', responses: { 200: json(ref('MemoryResponse')) } } },
      '/internal/progress': {
        post: {
          summary: "Progress of one job (a request's force_task_id)",
          requestBody: body('ProgressRequest'),
          responses: { 200: json(ref('InternalProgressResponse')) },
        },
      },
    },
    components: {
      schemas: {
        StableDiffusionProcessingTxt2Img: openApiSchema('StableDiffusionProcessingTxt2Img', withSize(txt2imgFields(limits), modelSize)),
        StableDiffusionProcessingImg2Img: openApiSchema('StableDiffusionProcessingImg2Img', withSize(img2imgFields(limits), modelSize)),
        TextToImageResponse: imageResponse('TextToImageResponse'),
        ImageToImageResponse: imageResponse('ImageToImageResponse'),
        PNGInfoRequest: openApiSchema('PNGInfoRequest', PNG_INFO_FIELDS),
        PNGInfoResponse: objectOf('PNGInfoResponse', { info: STRING, items: OBJECT, parameters: OBJECT }, ['info', 'items', 'parameters']),
        ProgressResponse: objectOf(
          'ProgressResponse',
          { progress: NUMBER, eta_relative: NUMBER, state: OBJECT, current_image: { ...STRING, nullable: true }, textinfo: { ...STRING, nullable: true } },
          ['progress', 'eta_relative', 'state'],
        ),
        ProgressRequest: openApiSchema('ProgressRequest', INTERNAL_PROGRESS_FIELDS),
        InternalProgressResponse: objectOf(
          'InternalProgressResponse',
          {
            active: BOOLEAN,
            queued: BOOLEAN,
            completed: BOOLEAN,
            progress: NUMBER,
            eta: NUMBER,
            live_preview: { ...STRING, description: 'a data: URL' },
            id_live_preview: { type: 'integer' },
            textinfo: STRING,
            queue_position: { type: 'integer', description: 'jobs ahead of this one (0 when running)' },
          },
          ['active', 'queued', 'completed'],
        ),
        Options: { title: 'Options', type: 'object', additionalProperties: true },
        SamplerItem: objectOf('SamplerItem', { name: STRING, aliases: STRINGS, options: OBJECT }, ['name', 'aliases', 'options']),
        SchedulerItem: objectOf('SchedulerItem', { name: STRING, label: STRING, aliases: STRINGS, default_rho: NUMBER, need_inner_model: BOOLEAN }, [
          'name',
          'label',
        ]),
        SDModelItem: objectOf(
          'SDModelItem',
          { title: STRING, model_name: STRING, hash: STRING, sha256: STRING, filename: STRING, config: { ...STRING, nullable: true } },
          ['title', 'model_name', 'filename'],
        ),
        MemoryResponse: objectOf('MemoryResponse', { ram: OBJECT, cuda: OBJECT }, ['ram', 'cuda']),
        HTTPValidationError: objectOf('HTTPValidationError', { detail: { type: 'array', items: ref('ValidationError') } }),
        ValidationError: objectOf('ValidationError', { loc: { type: 'array', items: { anyOf: [STRING, { type: 'integer' }] } }, msg: STRING, type: STRING }, [
          'loc',
          'msg',
          'type',
        ]),
      },
    },
  };
}

/** width / height default to the model's size (the tables leave them to the server). */
function withSize(fields: Fields, size: number): Fields {
  return { ...fields, width: { ...fields.width, default: size }, height: { ...fields.height, default: size } };
}

/** GET /docs: the document's routes and request fields, read from /openapi.json by the browser. */
export const DOCS_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>txt2img API</title>
<style>body{font:14px system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}code,td{font-family:ui-monospace,monospace}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}td,th{border-bottom:1px solid #ddd;padding:.2rem .4rem;text-align:left;vertical-align:top}
h2{margin-top:2rem}.m{display:inline-block;width:4rem;font-weight:bold}</style></head>
<body><h1>txt2img API</h1><p id="about"></p><p><a href="/openapi.json">openapi.json</a> · <a href="/">the web page</a></p><div id="api"></div>
<script>
fetch('/openapi.json').then((r) => r.json()).then((doc) => {
  document.getElementById('about').textContent = doc.info.description;
  const root = document.getElementById('api');
  const el = (tag, text) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; return e; };
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const h = el('h2'); const m = el('span', method.toUpperCase()); m.className = 'm'; h.append(m, el('code', path)); root.append(h, el('p', op.summary));
      const schemaRef = op.requestBody && op.requestBody.content['application/json'].schema.$ref;
      if (!schemaRef) continue;
      const schema = doc.components.schemas[schemaRef.split('/').pop()];
      if (!schema.properties) continue;
      const t = el('table'); const head = el('tr'); ['field', 'type', 'default', 'limits', 'about'].forEach((c) => head.append(el('th', c))); t.append(head);
      for (const [name, p] of Object.entries(schema.properties)) {
        const row = el('tr');
        const lim = [p.minimum !== undefined ? '>= ' + p.minimum : '', p.maximum !== undefined ? '<= ' + p.maximum : ''].filter(Boolean).join(', ');
        [name, p.type || 'any', p.default === undefined ? '' : JSON.stringify(p.default), lim, p.description || ''].forEach((c) => row.append(el('td', c)));
        t.append(row);
      }
      root.append(t);
    }
  }
});
</script></body></html>
`;
