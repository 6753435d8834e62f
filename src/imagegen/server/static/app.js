// imagegen serve: the page. Plain JS, no dependencies; it talks only to this server's JSON API.
"use strict";

const state = { runs: [], caps: null };
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function setStatus(text, bad = false) {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("bad", bad);
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = { error: `HTTP ${r.status}` }; }
  if (!r.ok && !(r.status === 202)) {
    const err = new Error((data && data.error) || `HTTP ${r.status}`);
    err.status = r.status;
    throw err;
  }
  return data;
}

function runLabel(r) { return `${r.id}: ${r.name} (${r.family})`; }
function runById(id) { return state.runs.find((r) => r.id === Number(id)); }
function offers(r, op) {
  if (op === "any") return true;
  if (op === "restore") return restoreTasksFor(r).length > 0;
  if (op === "interpolate") return r.interpolate_modes.length > 0;
  return op in r.ops;
}
function restoreTasksFor(r) { return (state.caps ? state.caps.restore_tasks : []).filter((t) => t.runs.includes(r.id)); }
function fmtSeconds(s) { return s === null || s === undefined ? "" : s < 1 ? `${(s * 1000).toFixed(0)} ms` : `${s.toFixed(2)} s`; }

// ------------------------------------------------------------------ labels: "3", "0,1,2" or "balanced"
function parseLabels(text, n, run) {
  text = (text || "").trim();
  if (!text || !run.class_conditional) return null;
  if (text.toLowerCase() === "balanced") return Array.from({ length: n }, (_, i) => i % run.num_classes);
  const vals = text.split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  if (vals.some((v) => !Number.isInteger(v))) throw new Error(`labels: integers like 3 or 0,1,2, got '${text}'`);
  return vals;
}

// ------------------------------------------------------------------ family options, from the contract
// Each option comes from GET /api/runs (the family function's signature). An empty field means the
// family's default, so only the options the user set are sent.
function optionInput(o) {
  const name = o.name;
  if (o.choices) {
    const s = el("select", { name, "data-type": o.type }, el("option", { value: "", text: `default (${o.default})` }));
    for (const c of o.choices) s.append(el("option", { value: c, text: c }));
    return s;
  }
  if (o.type === "bool") {
    return el("select", { name, "data-type": "bool" }, el("option", { value: "", text: `default (${o.default})` }),
      el("option", { value: "true", text: "true" }), el("option", { value: "false", text: "false" }));
  }
  const attrs = { name, "data-type": o.type, placeholder: String(o.default) };
  if (o.type === "int") Object.assign(attrs, { type: "number", step: "1" });
  else if (o.type === "float") Object.assign(attrs, { type: "number", step: "any" });
  return el("input", attrs);
}

function fillOptions(fieldset, specs) {
  $$(":scope > :not(legend)", fieldset).forEach((e) => e.remove());
  if (!specs.length) { fieldset.append(el("span", { class: "hint", text: "none" })); return; }
  for (const o of specs) {
    const lab = el("label", { title: o.families ? `taken by: ${o.families.join(", ")}` : "" },
      o.name + (o.families ? ` (${o.families.join(", ")})` : ""), optionInput(o));
    fieldset.append(lab);
  }
}

function readOptions(fieldset) {
  const out = {};
  for (const inp of $$("input, select", fieldset)) {
    const v = inp.value.trim();
    if (v === "") continue;
    const t = inp.dataset.type;
    if (t === "bool") out[inp.name] = v === "true";
    else if (t === "int") out[inp.name] = parseInt(v, 10);
    else if (t === "float") out[inp.name] = parseFloat(v);
    else out[inp.name] = v;
  }
  return out;
}

function unionOptions(runs, op) {
  const byName = new Map();
  for (const r of runs) {
    const specs = op === "restore" ? [] : (r.ops[op] ? r.ops[op].options : []);
    for (const o of specs) {
      const cur = byName.get(o.name) || { ...o, families: [], choices: o.choices ? [...o.choices] : undefined };
      if (!cur.families.includes(r.family)) cur.families.push(r.family);
      if (o.choices && cur.choices) for (const c of o.choices) if (!cur.choices.includes(c)) cur.choices.push(c);
      if (cur.default !== o.default) cur.default = "family's";
      byName.set(o.name, cur);
    }
  }
  return Array.from(byName.values());
}

// the options a run takes, out of a union form's values (imagegen compare's rule for shared options)
function optionsForRun(values, run, op) {
  const specs = run.ops[op] ? run.ops[op].options : [];
  const out = {};
  for (const [k, v] of Object.entries(values)) {
    const o = specs.find((s) => s.name === k);
    if (!o) continue;
    if (o.choices && !o.choices.includes(v)) continue;
    if (o.type === "int" && !Number.isInteger(v)) continue;
    out[k] = v;
  }
  return out;
}

// ------------------------------------------------------------------ jobs: submit, poll, cancel, show
function jobCard(container, run, title) {
  const card = el("div", { class: "card" });
  const head = el("div", { class: "card-head" }, el("strong", { text: title || runLabel(run) }));
  const bar = el("progress", { max: "1" });
  const status = el("span", { class: "job-status", text: "sending" });
  const cancel = el("button", { type: "button", class: "cancel", text: "Cancel" });
  const body = el("div", { class: "card-body" });
  card.append(head, el("div", { class: "job-line" }, bar, status, cancel), body);
  container.append(card);
  return { card, bar, status, cancel, body };
}

async function runJob(container, run, path, request, show, title) {
  const ui = jobCard(container, run, title);
  let job;
  try {
    job = await api("POST", path, request);
  } catch (e) {
    ui.status.textContent = e.message;
    ui.card.classList.add(e.status === 429 ? "busy" : "failed");
    ui.bar.remove(); ui.cancel.remove();
    return null;
  }
  let cancelled = false;
  ui.cancel.addEventListener("click", async () => {
    cancelled = true;
    try { await api("DELETE", `/api/jobs/${job.id}`); } catch (e) { /* finished meanwhile */ }
  });
  const t0 = performance.now();
  while (job.status === "queued" || job.status === "running") {
    if (job.status === "queued") ui.status.textContent = `waiting (${job.queue_position || "?"} in line)`;
    else {
      const frac = job.progress;
      if (frac === null) ui.bar.removeAttribute("value"); else ui.bar.value = frac;
      ui.status.textContent = `running ${fmtSeconds((performance.now() - t0) / 1000)}, ${job.calls} network ops` +
        (job.expected_calls ? ` of ~${job.expected_calls}` : "");
    }
    try {
      job = await api("GET", `/api/jobs/${job.id}?wait=0.4`);
    } catch (e) {
      ui.status.textContent = e.message; ui.card.classList.add("failed"); return null;
    }
  }
  ui.cancel.remove();
  if (job.status !== "done") {
    ui.bar.remove();
    ui.status.textContent = job.status === "cancelled" || cancelled ? "cancelled" : job.error;
    ui.card.classList.add(job.status === "cancelled" ? "cancelled" : "failed");
    return job;
  }
  ui.bar.value = 1;
  ui.status.textContent = `done in ${fmtSeconds(job.seconds)}`;
  ui.status.title = `the model's own time: ${fmtSeconds(job.result.model_seconds)}; ${job.calls} network ops`;
  ui.card.classList.add("done");
  ui.card.dataset.job = job.id;
  show(ui.body, job);
  ui.body.append(el("div", { class: "downloads" },
    el("a", { href: `/api/jobs/${job.id}/grid.png`, download: `${job.kind}-${job.id}.png`, text: "PNG" }),
    el("a", { href: `/api/jobs/${job.id}/images.npz`, download: `${job.kind}-${job.id}.npz`, text: ".npz" })));
  return job;
}

function imageGrid(urls, nrow, cls = "grid") {
  const g = el("div", { class: cls });
  g.style.gridTemplateColumns = `repeat(${nrow}, auto)`;
  urls.forEach((u, i) => g.append(el("img", { src: u, alt: `image ${i}`, class: "px" })));
  return g;
}

function showGrid(body, job) {
  const r = job.result;
  body.append(imageGrid(r.images, r.nrow));
  if (r.labels) body.append(el("p", { class: "hint", text: `labels: ${r.labels.join(", ")}` }));
}

function figure(url, caption) {
  return el("figure", {}, el("img", { src: url, class: "px big", alt: caption }), el("figcaption", { text: caption }));
}

// ------------------------------------------------------------------ an image source: test image or upload
function imageSource(root, title, onChange, startIndex = 0) {
  const src = { dataURL: null, desc: "" };
  const runSel = el("select", {});
  const idx = el("input", { type: "number", min: "0", value: String(startIndex) });
  let seq = 0;  // only the latest pick is shown, whichever answer comes back first
  const preview = el("img", { class: "px big preview", alt: `${title} preview` });
  const info = el("span", { class: "hint" });
  const upload = el("input", { type: "file", accept: "image/png,image/jpeg,image/webp,image/bmp,image/gif" });
  const withTests = state.runs.filter((r) => r.test_images && r.test_images.available);
  for (const r of withTests) runSel.append(el("option", { value: r.id, text: `${r.name} test set (${r.test_images.count})` }));
  async function loadTest() {
    const r = runById(runSel.value);
    if (!r) return;
    const i = Math.max(0, Math.min(Number(idx.value) || 0, r.test_images.count - 1));
    idx.value = i;
    const token = ++seq;
    const resp = await fetch(`/api/runs/${r.id}/test-images/${i}`);
    if (!resp.ok) { info.textContent = (await resp.json()).error; return; }
    const label = resp.headers.get("X-Label");
    const url = await blobToDataURL(await resp.blob());
    if (token !== seq) return;
    src.dataURL = url;
    src.desc = `${r.name} test #${i}` + (label !== null ? ` (label ${label})` : "");
    finish();
  }
  function finish() { preview.src = src.dataURL; info.textContent = src.desc; if (onChange) onChange(src); }
  idx.addEventListener("change", loadTest);
  runSel.addEventListener("change", loadTest);
  const rnd = el("button", { type: "button", text: "Random", onclick: () => {
    const r = runById(runSel.value); if (!r) return;
    idx.value = Math.floor(Math.random() * r.test_images.count); loadTest();
  } });
  upload.addEventListener("change", () => {
    const f = upload.files[0];
    seq++;  // an upload wins over a test image still on its way
    if (!f) return;
    const lim = state.caps.limits.max_upload_bytes;
    if (f.size > lim) { info.textContent = `${f.name} is ${f.size} bytes, over the server's limit of ${lim}`; return; }
    const rd = new FileReader();
    rd.onload = () => { src.dataURL = rd.result; src.desc = f.name; finish(); };
    rd.readAsDataURL(f);
  });
  const rows = [el("h3", { text: title })];
  if (withTests.length) rows.push(el("div", { class: "line" }, runSel, el("label", {}, "#", idx), rnd));
  else rows.push(el("p", { class: "hint", text: "no run's test images are on disk: upload an image" }));
  rows.push(el("label", { class: "line" }, "or upload ", upload), preview, info);
  root.replaceChildren(...rows);
  src.reload = loadTest;
  if (withTests.length) loadTest();
  return src;
}

function blobToDataURL(blob) {
  return new Promise((res, rej) => { const r = new FileReader(); r.onload = () => res(r.result); r.onerror = rej; r.readAsDataURL(blob); });
}

function loadImage(url) {
  return new Promise((res, rej) => { const im = new Image(); im.onload = () => res(im); im.onerror = rej; im.src = url; });
}

// ------------------------------------------------------------------ the mask editor (2D canvas)
// The erase mask is held at the display canvas's resolution (an alpha channel: 255 = erased); for each model
// it is averaged down to the model's size, a pixel erased when at least half its area is.
const editor = { canvas: null, mask: null, image: null, undo: [], drawing: false, last: null };

function setupEditor() {
  const c = $("#mask-canvas");
  editor.canvas = c;
  editor.mask = document.createElement("canvas");
  editor.mask.getContext("2d", { willReadFrequently: true });
  editor.mask.width = c.width; editor.mask.height = c.height;
  const pos = (ev) => { const b = c.getBoundingClientRect(); return [(ev.clientX - b.left) * c.width / b.width, (ev.clientY - b.top) * c.height / b.height]; };
  c.addEventListener("pointerdown", (ev) => {
    ev.preventDefault();
    c.setPointerCapture && c.setPointerCapture(ev.pointerId);
    pushUndo();
    editor.drawing = true; editor.last = pos(ev); stroke(editor.last, editor.last);
  });
  c.addEventListener("pointermove", (ev) => { if (!editor.drawing) return; const p = pos(ev); stroke(editor.last, p); editor.last = p; });
  const end = () => { editor.drawing = false; };
  c.addEventListener("pointerup", end); c.addEventListener("pointercancel", end); c.addEventListener("pointerleave", end);
  $("#undo").addEventListener("click", () => {
    const prev = editor.undo.pop();
    if (prev) { editor.mask.getContext("2d").putImageData(prev, 0, 0); redraw(); }
  });
  $("#clear").addEventListener("click", () => { pushUndo(); clearMask(); redraw(); });
  const presets = [["keep-top-half", "Erase bottom half"], ["keep-bottom-half", "Erase top half"], ["erase-centre-square", "Erase centre square"]];
  for (const [name, text] of presets) {
    $("#presets").append(el("button", { type: "button", "data-preset": name, text, onclick: () => { pushUndo(); presetMask(name); redraw(); } }));
  }
}

function pushUndo() {
  const m = editor.mask;
  editor.undo.push(m.getContext("2d").getImageData(0, 0, m.width, m.height));
  if (editor.undo.length > 50) editor.undo.shift();
}
function clearMask() { editor.mask.getContext("2d").clearRect(0, 0, editor.mask.width, editor.mask.height); }

function stroke(a, b) {
  const g = editor.mask.getContext("2d");
  g.strokeStyle = "rgba(255,0,0,1)"; g.fillStyle = "rgba(255,0,0,1)";
  g.lineWidth = Number($("#brush").value); g.lineCap = "round"; g.lineJoin = "round";
  g.beginPath(); g.moveTo(a[0], a[1]); g.lineTo(b[0], b[1]); g.stroke();
  redraw();
}

function presetMask(name) {
  const m = editor.mask, g = m.getContext("2d"), w = m.width, h = m.height;
  clearMask(); g.fillStyle = "rgba(255,0,0,1)";
  if (name === "keep-top-half") g.fillRect(0, h / 2, w, h / 2);
  else if (name === "keep-bottom-half") g.fillRect(0, 0, w, h / 2);
  else if (name === "erase-centre-square") g.fillRect(w / 4, h / 4, w / 2, h / 2);
}

function redraw() {
  const c = editor.canvas, g = c.getContext("2d");
  g.imageSmoothingEnabled = false;
  g.fillStyle = "#000"; g.fillRect(0, 0, c.width, c.height);
  if (editor.image) {
    const im = editor.image, s = Math.min(im.width, im.height);  // centre crop, as the server's resize
    g.drawImage(im, (im.width - s) / 2, (im.height - s) / 2, s, s, 0, 0, c.width, c.height);
  }
  g.globalAlpha = 0.65; g.drawImage(editor.mask, 0, 0); g.globalAlpha = 1;
}

// the keep-mask for a model of size x size as a PNG data URL: white keeps, black fills
function maskFor(size) {
  const m = editor.mask, W = m.width, H = m.height;
  const a = m.getContext("2d").getImageData(0, 0, W, H).data;
  const out = document.createElement("canvas"); out.width = size; out.height = size;
  const g = out.getContext("2d"), img = g.createImageData(size, size);
  let erased = 0;
  for (let i = 0; i < size; i++) {
    const y0 = Math.floor(i * H / size), y1 = Math.max(y0 + 1, Math.floor((i + 1) * H / size));
    for (let j = 0; j < size; j++) {
      const x0 = Math.floor(j * W / size), x1 = Math.max(x0 + 1, Math.floor((j + 1) * W / size));
      let sum = 0;
      for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) sum += a[(y * W + x) * 4 + 3];
      const keep = sum / ((y1 - y0) * (x1 - x0)) < 128;
      const v = keep ? 255 : 0; if (!keep) erased++;
      const k = (i * size + j) * 4; img.data[k] = img.data[k + 1] = img.data[k + 2] = v; img.data[k + 3] = 255;
    }
  }
  g.putImageData(img, 0, 0);
  return { url: out.toDataURL("image/png"), erased };
}

// ------------------------------------------------------------------ panels
function runChecks(fieldset, op, onChange) {
  $$(":scope > :not(legend)", fieldset).forEach((e) => e.remove());
  for (const r of state.runs.filter((r) => offers(r, op))) {
    const cb = el("input", { type: "checkbox", value: r.id, checked: true });
    cb.addEventListener("change", onChange);
    fieldset.append(el("label", { class: "check" }, cb, ` ${runLabel(r)}`));
  }
}
function checkedRuns(fieldset) { return $$("input:checked", fieldset).map((c) => runById(c.value)); }

function setupSample() {
  const form = $("#sample-form"), sel = $("select[name=run]", form);
  const update = () => {
    const r = runById(sel.value);
    fillOptions($("fieldset.options", form), r.ops.sample.options);
    $(".labels-field", form).hidden = !r.class_conditional;
    const lab = $("input[name=labels]", form);
    lab.placeholder = r.class_conditional ? `0..${r.num_classes - 1}: 3, 0,1,2 or balanced` : "";
    if (r.class_conditional && !lab.value) lab.value = "balanced";
  };
  sel.addEventListener("change", update); update();
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const r = runById(sel.value), n = Number(form.n.value);
    let labels;
    try { labels = parseLabels(form.labels.value, n, r); } catch (e) { setStatus(e.message, true); return; }
    const req = { run: r.id, n, seed: Number(form.seed.value), labels, options: readOptions($("fieldset.options", form)) };
    const box = $("#sample-results"); box.replaceChildren();
    await runJob(box, r, "/api/sample", req, showGrid, `${runLabel(r)} · seed ${req.seed}`);
  });
}

function setupComplete() {
  const form = $("#complete-form");
  const refreshOptions = () => fillOptions($("fieldset.options", form), unionOptions(checkedRuns($(".run-checks", form)), "complete"));
  runChecks($(".run-checks", form), "complete", refreshOptions); refreshOptions();
  setupEditor();
  const src = imageSource($("#complete-source"), "Image", async (s) => { editor.image = await loadImage(s.dataURL); redraw(); });
  state.completeSource = src;
  redraw();
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!src.dataURL) { setStatus("pick a test image or upload one first", true); return; }
    const box = $("#complete-results"); box.replaceChildren();
    const values = readOptions($("fieldset.options", form));
    const runs = checkedRuns($(".run-checks", form));
    if (!runs.length) { setStatus("tick at least one model", true); return; }
    await Promise.all(runs.map((r) => {
      const m = maskFor(r.size);
      let labels = null;
      try { labels = parseLabels(form.labels.value, 1, r); } catch (e) { setStatus(e.message, true); }
      const req = { run: r.id, image: { data: src.dataURL }, mask: m.url, resize: true, n: Number(form.n.value),
        seed: Number(form.seed.value), labels, options: optionsForRun(values, r, "complete") };
      return runJob(box, r, "/api/complete", req, (body, job) => {
        const res = job.result;
        body.append(el("div", { class: "row" }, figure(res.inputs.image, "given"), figure(res.inputs.masked, "erased"),
          ...res.images.map((u, i) => figure(u, `filled${res.images.length > 1 ? " " + (i + 1) : ""}`))));
      });
    }));
  });
}

function setupRestore() {
  const form = $("#restore-form"), sel = $("select[name=run]", form), taskSel = $("#restore-task");
  const src = imageSource($("#restore-source"), "Image");
  const updateTask = () => {
    const r = runById(sel.value), t = restoreTasksFor(r).find((t) => t.name === taskSel.value);
    if (!t) return;
    $("#restore-help").textContent = t.help;
    const fs = $("#restore-params");
    $$(":scope > :not(legend)", fs).forEach((e) => e.remove());
    for (const p of t.params) {
      const out = el("output", { text: String(p.default) });
      const inp = el("input", { type: "range", name: p.name, min: p.min, max: p.max, step: p.step, value: p.default,
        oninput: (e) => { out.textContent = e.target.value; } });
      fs.append(el("label", { title: p.help }, `${p.name} `, inp, out));
    }
    fillOptions($("fieldset.options", form), t.options[String(r.id)] || []);
  };
  const updateRun = () => {
    const r = runById(sel.value);
    taskSel.replaceChildren(...restoreTasksFor(r).map((t) => el("option", { value: t.name, text: t.label })));
    updateTask();
  };
  sel.addEventListener("change", updateRun); taskSel.addEventListener("change", updateTask);
  if (sel.value !== "") updateRun();
  else form.replaceChildren(el("p", { class: "hint", text: "no model here offers a restoration task" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!src.dataURL) { setStatus("pick a test image or upload one first", true); return; }
    const r = runById(sel.value), params = {};
    for (const inp of $$("#restore-params input")) params[inp.name] = Number(inp.value);
    const req = { run: r.id, task: taskSel.value, image: { data: src.dataURL }, resize: true, params,
      seed: Number(form.seed.value), options: readOptions($("fieldset.options", form)) };
    const box = $("#restore-results"); box.replaceChildren();
    await runJob(box, r, "/api/restore", req, (body, job) => {
      const res = job.result;
      body.append(el("div", { class: "row" }, figure(res.inputs.original, "original"), figure(res.inputs.degraded, "before"),
        ...res.images.map((u) => figure(u, "after"))));
    });
  });
}

function setupInterpolate() {
  const form = $("#interpolate-form"), sel = $("select[name=run]", form), mode = $("#interp-mode");
  const a = imageSource($("#interp-a"), "Image A"), b = imageSource($("#interp-b"), "Image B", null, 1);
  const updateMode = () => {
    const seeds = mode.value === "seeds";
    $(".seeds", form).hidden = !seeds; $("#interp-a").hidden = seeds; $("#interp-b").hidden = seeds;
  };
  const update = () => {
    const r = runById(sel.value);
    if (!r) return;
    mode.replaceChildren(...r.interpolate_modes.map((m) => el("option", { value: m, text: m === "seeds" ? "two seeds" : "two images" })));
    $(".labels-field", form).hidden = !r.class_conditional;
    fillOptions($("fieldset.options", form), r.ops.interpolate.options);
    updateMode();
  };
  sel.addEventListener("change", update); mode.addEventListener("change", updateMode); update();
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const r = runById(sel.value);
    let labels;
    try { labels = parseLabels(form.labels.value, 1, r); } catch (e) { setStatus(e.message, true); return; }
    const req = { run: r.id, mode: mode.value, frames: Number(form.frames.value), labels,
      options: readOptions($("fieldset.options", form)) };
    if (mode.value === "seeds") req.seeds = [Number(form.seed_a.value), Number(form.seed_b.value)];
    else {
      if (!a.dataURL || !b.dataURL) { setStatus("pick two images first", true); return; }
      req.a = { data: a.dataURL }; req.b = { data: b.dataURL }; req.resize = true;
    }
    const box = $("#interpolate-results"); box.replaceChildren();
    await runJob(box, r, "/api/interpolate", req, (body, job) => body.append(imageGrid(job.result.images, job.result.nrow, "grid strip")));
  });
}

function runFacts(r) {
  const dl = el("dl", { class: "facts" });
  const add = (k, v) => dl.append(el("dt", { text: k }), el("dd", { text: v }));
  add("family", r.family); add("data", `${r.dataset} ${r.channels}x${r.size}x${r.size}`);
  add("step", String(r.step)); add("images seen", `${r.images_seen} (${(r.images_seen / 1000).toFixed(1)} kimg)`);
  add("training time", fmtSeconds(r.train_seconds));
  for (const [file, nums] of Object.entries(r.metrics || {})) {
    add(file, Object.entries(nums).map(([k, v]) => `${k} ${Number(v).toPrecision(4)}`).join(", "));
  }
  if (!Object.keys(r.metrics || {}).length) add("metrics", "none saved in the run");
  return dl;
}

function setupCompare() {
  const form = $("#compare-form");
  const refresh = () => fillOptions($("fieldset.options", form), unionOptions(checkedRuns($(".run-checks", form)), "sample"));
  runChecks($(".run-checks", form), "sample", refresh); refresh();
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const box = $("#compare-results"); box.replaceChildren();
    const values = readOptions($("fieldset.options", form)), n = Number(form.n.value);
    await Promise.all(checkedRuns($(".run-checks", form)).map((r) => {
      let labels = null;
      try { labels = parseLabels(form.labels.value, n, r); } catch (e) { setStatus(e.message, true); }
      const req = { run: r.id, n, seed: Number(form.seed.value), labels, options: optionsForRun(values, r, "sample") };
      return runJob(box, r, "/api/sample", req, (body, job) => { body.append(runFacts(r)); showGrid(body, job); });
    }));
  });
}

function setupInfo() {
  const sel = $("#info-run");
  const show = async () => {
    const d = await api("GET", `/api/runs/${sel.value}`);
    const grids = el("div", { class: "row" });
    for (const g of d.sample_grids.slice(-6).reverse()) {
      grids.append(el("figure", {}, el("img", { src: `/api/runs/${d.id}/samples/${g}`, class: "px training-grid", alt: g }),
        el("figcaption", { text: g })));
    }
    const t = d.test_images;
    $("#info-body").replaceChildren(
      el("div", { class: "row" }, el("div", {}, el("h3", { text: d.name }), runFacts(d),
        el("p", { class: "hint", text: `checkpoint ${d.checkpoint}; test images: ${t.available ? t.count : "not on disk (" + t.reason + ")"}` })),
      el("div", {}, el("h3", { text: "Sample grids from training" }), d.sample_grids.length ? grids : el("p", { class: "hint", text: "none saved" }))),
      el("h3", { text: "Config" }), el("pre", { text: JSON.stringify(d.config, null, 2) }));
  };
  sel.addEventListener("change", show); show();
}

function setupTabs() {
  for (const b of $$("#tabs button")) {
    b.addEventListener("click", () => {
      $$("#tabs button").forEach((x) => x.classList.toggle("active", x === b));
      $$(".panel").forEach((p) => p.classList.toggle("active", p.id === `panel-${b.dataset.tab}`));
      history.replaceState(null, "", `#${b.dataset.tab}`);
    });
  }
  const want = location.hash.slice(1);
  const b = $(`#tabs button[data-tab="${want}"]`);
  if (b) b.click();
}

async function main() {
  try {
    [state.runs, state.caps] = await Promise.all([api("GET", "/api/runs"), api("GET", "/api/capabilities")]);
    const details = await Promise.all(state.runs.map((r) => api("GET", `/api/runs/${r.id}`)));
    details.forEach((d, i) => { state.runs[i].test_images = d.test_images; });
  } catch (e) { setStatus(`cannot reach the server: ${e.message}`, true); return; }
  for (const sel of $$("select.run-select")) {
    const op = sel.dataset.op;
    sel.replaceChildren(...state.runs.filter((r) => offers(r, op)).map((r) => el("option", { value: r.id, text: runLabel(r) })));
  }
  setupTabs();
  setupSample(); setupComplete(); setupRestore(); setupInterpolate(); setupCompare(); setupInfo();
  setStatus(`${state.runs.length} model${state.runs.length === 1 ? "" : "s"} loaded`);
  document.body.dataset.ready = "1";
}

main();
