// txt2img serve's web page: a plain client of the server's AUTOMATIC1111 API (/sdapi/v1/...),
// with live progress from /internal/progress, a mask painted on a canvas for inpainting, and PNG
// info for dropped images. No build step: the browser runs this file as it is.

const $ = (id) => document.getElementById(id);
const state = { tab: 'txt2img', init: null, running: false, parsed: null };

/** Fetches JSON from the API; a non-2xx answer throws its detail as text. */
async function api(path, body) {
  const res = await fetch(path, body === undefined ? {} : { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const detail = data?.detail;
    const text = Array.isArray(detail) ? detail.map((d) => `${d.loc.slice(1).join('.')}: ${d.msg}`).join('\n') : detail || data?.errors || res.statusText;
    throw new Error(`${res.status}: ${text}`);
  }
  return data;
}

function showError(e) {
  const el = $('error');
  el.hidden = !e;
  el.textContent = e ? e.message || String(e) : '';
}

async function loadLists() {
  const [samplers, models, options] = await Promise.all([api('/sdapi/v1/samplers'), api('/sdapi/v1/sd-models'), api('/sdapi/v1/options')]);
  $('sampler').replaceChildren(...samplers.map((s) => new Option(s.name, s.name, s.name === 'DPM++ 2M Karras', s.name === 'DPM++ 2M Karras')));
  $('model').replaceChildren(...models.map((m) => new Option(m.title, m.title, false, m.title === options.sd_model_checkpoint)));
}

$('model').addEventListener('change', async (ev) => {
  const select = ev.target;
  select.disabled = true;
  try {
    await api('/sdapi/v1/options', { sd_model_checkpoint: select.value });
    showError(null);
  } catch (e) {
    showError(e);
  } finally {
    select.disabled = false;
  }
});

function setTab(tab) {
  state.tab = tab;
  $('tab-txt2img').setAttribute('aria-selected', String(tab === 'txt2img'));
  $('tab-img2img').setAttribute('aria-selected', String(tab === 'img2img'));
  $('img2img').hidden = tab !== 'img2img';
}
$('tab-txt2img').addEventListener('click', () => setTab('txt2img'));
$('tab-img2img').addEventListener('click', () => setTab('img2img'));

// ---- img2img: the init image and the mask painted over it ----

/** The mask at the init image's own size (white = repaint), painted through the display canvas. */
const maskFull = document.createElement('canvas');

async function setInit(blob) {
  const bitmap = await createImageBitmap(blob);
  state.init = { blob, width: bitmap.width, height: bitmap.height };
  // Small images are shown magnified by a whole factor (crisp pixels), large ones shrunk to 320 px.
  const side = Math.max(bitmap.width, bitmap.height);
  const shown = side <= 320 ? Math.floor(320 / side) : 320 / side;
  const w = Math.round(bitmap.width * shown);
  const h = Math.round(bitmap.height * shown);
  for (const c of [$('image-canvas'), $('mask-canvas')]) {
    c.width = w;
    c.height = h;
  }
  const ctx = $('image-canvas').getContext('2d');
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(bitmap, 0, 0, w, h);
  maskFull.width = bitmap.width;
  maskFull.height = bitmap.height;
  clearMask();
  $('canvas-box').hidden = false;
}

function clearMask() {
  $('mask-canvas').getContext('2d').clearRect(0, 0, $('mask-canvas').width, $('mask-canvas').height);
  const m = maskFull.getContext('2d');
  m.fillStyle = '#000';
  m.fillRect(0, 0, maskFull.width, maskFull.height);
  state.masked = false;
}
$('clear-mask').addEventListener('click', clearMask);

function paint(ev) {
  const c = $('mask-canvas');
  const r = c.getBoundingClientRect();
  const x = ((ev.clientX - r.left) / r.width) * c.width;
  const y = ((ev.clientY - r.top) / r.height) * c.height;
  const radius = Number($('brush').value) / 2;
  const show = c.getContext('2d');
  show.fillStyle = 'rgba(255, 40, 40, 0.55)';
  show.beginPath();
  show.arc(x, y, radius, 0, 2 * Math.PI);
  show.fill();
  const k = maskFull.width / c.width;
  const full = maskFull.getContext('2d');
  full.fillStyle = '#fff';
  full.beginPath();
  full.arc(x * k, y * k, radius * k, 0, 2 * Math.PI);
  full.fill();
  state.masked = true;
}
$('mask-canvas').addEventListener('pointerdown', (ev) => {
  ev.target.setPointerCapture(ev.pointerId);
  state.painting = true;
  paint(ev);
});
$('mask-canvas').addEventListener('pointermove', (ev) => state.painting && paint(ev));
$('mask-canvas').addEventListener('pointerup', () => {
  state.painting = false;
});
$('init-file').addEventListener('change', (ev) => ev.target.files[0] && setInit(ev.target.files[0]));

function blobToBase64(blob) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).replace(/^data:[^,]*,/, ''));
    r.onerror = () => reject(r.error);
    r.readAsDataURL(blob);
  });
}

// ---- generating ----

function numberOf(id) {
  const v = $(id).value.trim();
  return v === '' ? undefined : Number(v);
}

async function request() {
  const body = {
    prompt: $('prompt').value,
    negative_prompt: $('negative').value,
    sampler_name: $('sampler').value,
    steps: numberOf('steps'),
    cfg_scale: numberOf('cfg'),
    seed: $('random-seed').checked ? -1 : numberOf('seed'),
    width: numberOf('width'),
    height: numberOf('height'),
    batch_size: numberOf('batch-size'),
    n_iter: numberOf('batch-count'),
    force_task_id: `task(page-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)})`,
  };
  if (state.tab !== 'img2img') return { path: '/sdapi/v1/txt2img', body };
  if (!state.init) throw new Error('img2img: drop or choose an image first');
  Object.assign(body, {
    init_images: [await blobToBase64(state.init.blob)],
    denoising_strength: numberOf('strength'),
    resize_mode: Number($('resize-mode').value),
  });
  if (state.masked) {
    Object.assign(body, {
      mask: maskFull.toDataURL('image/png'),
      mask_blur: numberOf('mask-blur'),
      inpaint_full_res: $('inpaint-area').value === 'masked',
      inpaint_full_res_padding: numberOf('padding'),
      inpainting_fill: Number($('masked-content').value),
    });
  }
  return { path: '/sdapi/v1/img2img', body };
}

async function watch(task) {
  let previewId = -1;
  while (state.running) {
    try {
      const p = await api('/internal/progress', { id_task: task, id_live_preview: previewId });
      if (p.live_preview) {
        $('preview').src = p.live_preview;
        $('preview').hidden = false;
      }
      if (p.id_live_preview !== undefined && p.id_live_preview !== -1) previewId = p.id_live_preview;
      if (p.queued) $('progress-text').textContent = p.textinfo;
      else if (p.active) {
        $('progress').value = p.progress ?? 0;
        const eta = p.eta === undefined || p.eta === null ? '' : `, ETA ${p.eta.toFixed(1)} s`;
        $('progress-text').textContent = `${Math.round((p.progress ?? 0) * 100)}%${eta}${p.textinfo ? ` (${p.textinfo})` : ''}`;
      }
    } catch {
      // the next poll tries again
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** A result card: the image, its parameters, and buttons to reuse them or edit the image. */
function resultCard(png, infotext) {
  const card = document.createElement('figure');
  card.className = 'result';
  const img = document.createElement('img');
  img.src = `data:image/png;base64,${png}`;
  img.alt = infotext.split('\n')[0];
  const params = document.createElement('figcaption');
  params.className = 'params';
  params.textContent = infotext;
  const reuse = document.createElement('button');
  reuse.textContent = 'use parameters';
  reuse.addEventListener('click', () => applyParameters(parseInfo(infotext)));
  const toImg2img = document.createElement('button');
  toImg2img.textContent = 'to img2img';
  toImg2img.addEventListener('click', async () => {
    await setInit(await (await fetch(img.src)).blob());
    setTab('img2img');
  });
  card.append(img, params, reuse, toImg2img);
  return card;
}

$('generate').addEventListener('click', async () => {
  if (state.running) return;
  showError(null);
  let req;
  try {
    req = await request();
  } catch (e) {
    showError(e);
    return;
  }
  state.running = true;
  $('generate').disabled = true;
  $('interrupt').disabled = false;
  $('skip').disabled = false;
  $('progress').value = 0;
  $('progress-text').textContent = 'starting';
  const watching = watch(req.body.force_task_id);
  let message = 'failed';
  try {
    const r = await api(req.path, req.body);
    const info = JSON.parse(r.info);
    const first = info.index_of_first_image;
    // The newest request's images first, each request's in order.
    $('gallery').prepend(...r.images.slice(first).map((png, i) => resultCard(png, info.infotexts[first + i])));
    if ($('random-seed').checked) $('seed').value = String(info.seed);
    message = `done: ${r.images.length - first} image(s), seed ${info.seed}`;
  } catch (e) {
    showError(e);
  } finally {
    state.running = false;
    await watching; // its last poll may land after the answer: the final word is said after it
    $('progress').value = message === 'failed' ? 0 : 1;
    $('progress-text').textContent = message;
    $('generate').disabled = false;
    $('interrupt').disabled = true;
    $('skip').disabled = true;
  }
});
$('interrupt').addEventListener('click', () => api('/sdapi/v1/interrupt', {}).catch(showError));
$('skip').addEventListener('click', () => api('/sdapi/v1/skip', {}).catch(showError));

// ---- PNG info: parameters back from a dropped PNG ----

function parseInfo(text) {
  const lines = text.trim().split('\n');
  const last = lines[lines.length - 1];
  const params = {};
  for (const m of last.matchAll(/\s*([\w][\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)/g)) params[m[1]] = m[2];
  const negAt = lines.findIndex((l) => l.startsWith('Negative prompt:'));
  const end = Object.keys(params).length >= 3 ? lines.length - 1 : lines.length;
  const prompt = lines.slice(0, negAt >= 0 ? negAt : end).join('\n');
  const negative = negAt >= 0 ? lines.slice(negAt, end).join('\n').slice('Negative prompt:'.length).trim() : '';
  return { Prompt: prompt, 'Negative prompt': negative, ...params };
}

function applyParameters(p) {
  if (p.Prompt !== undefined) $('prompt').value = p.Prompt;
  if (p['Negative prompt'] !== undefined) $('negative').value = p['Negative prompt'];
  if (p.Steps) $('steps').value = p.Steps;
  if (p['CFG scale']) $('cfg').value = p['CFG scale'];
  if (p.Seed) {
    $('seed').value = p.Seed;
    $('random-seed').checked = false;
  }
  if (p.Sampler && [...$('sampler').options].some((o) => o.value === p.Sampler)) $('sampler').value = p.Sampler;
  const size = p.Size ? p.Size.split('x') : [p['Size-1'], p['Size-2']];
  if (size[0]) $('width').value = size[0];
  if (size[1]) $('height').value = size[1];
  if (p['Denoising strength']) $('strength').value = p['Denoising strength'];
}

async function readPngInfo(file) {
  try {
    const r = await api('/sdapi/v1/png-info', { image: await blobToBase64(file) });
    state.parsed = r.parameters;
    $('pnginfo-text').textContent = r.info || '(no parameters in this image)';
    $('pnginfo-apply').hidden = !r.info;
    showError(null);
  } catch (e) {
    showError(e);
  }
}
$('png-file').addEventListener('change', (ev) => ev.target.files[0] && readPngInfo(ev.target.files[0]));
$('pnginfo-apply').addEventListener('click', () => state.parsed && applyParameters(state.parsed));

// Dropping: on the img2img zone it is the init image, anywhere else a PNG to read.
document.addEventListener('dragover', (ev) => {
  ev.preventDefault();
  const zone = ev.target.closest?.('.drop');
  for (const z of document.querySelectorAll('.drop')) z.classList.toggle('over', z === zone);
});
document.addEventListener('drop', (ev) => {
  ev.preventDefault();
  for (const z of document.querySelectorAll('.drop')) z.classList.remove('over');
  const file = ev.dataTransfer?.files[0];
  if (!file) return;
  if (ev.target.closest?.('#init-zone')) setInit(file);
  else readPngInfo(file);
});

loadLists().catch(showError);
