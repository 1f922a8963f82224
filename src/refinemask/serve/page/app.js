// The `refinemask serve` page's script (index.html), served as /static/app.js. It asks the server
// once per image (POST /api/predict) and redraws on every control change without asking again.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { info: null, result: null, image: null, masks: {}, outlines: {} };
const HALO = [20, 20, 20];  // the ring just outside each outline, as in `refinemask predict`'s overlays
// `refinemask serve --token T` prints the address with #token=T: the fragment never reaches the
// server or its logs; the page sends it as a bearer token with each API request
const TOKEN = new URLSearchParams(window.location.hash.slice(1)).get("token");
const AUTH = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};

function showError(message) {
  $("error").textContent = message;
  $("status").textContent = "";
  document.body.dataset.state = "error";
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("cannot decode"));
    image.src = url;
  });
}

async function decodeMasks(result, stage) {
  return Promise.all(result.detections.map(async (d) => {
    const mask = d.masks[stage];
    if (!mask || !mask.png) return null;
    return { x: mask.x, y: mask.y, image: await loadImage("data:image/png;base64," + mask.png) };
  }));
}

// max over a (2r+1) x (2r+1) square of a W x H 0/1 map, `beyond` for pixels past its edges
function dilate(map, W, H, r, beyond) {
  const rows = new Uint8Array(W * H), out = new Uint8Array(W * H);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    let v = 0;
    for (let d = -r; d <= r && !v; d++) v = (x + d < 0 || x + d >= W) ? beyond : map[y * W + x + d];
    rows[y * W + x] = v;
  }
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    let v = 0;
    for (let d = -r; d <= r && !v; d++) v = (y + d < 0 || y + d >= H) ? beyond : rows[(y + d) * W + x];
    out[y * W + x] = v;
  }
  return out;
}

// a mask's outline (its pixels within `width` of the outside, in its colour) and halo (the
// pixels outside it within max(1, width / 2)), the same pixels as
// refinemask.overlay.mask_edges
function outlineOf(mask, colour, width) {
  if (!mask) return null;
  const pad = Math.max(1, Math.floor(width / 2));
  const W = mask.image.width + 2 * pad, H = mask.image.height + 2 * pad;
  const canvas = document.createElement("canvas");
  canvas.width = W;
  canvas.height = H;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(mask.image, pad, pad);
  const pixels = ctx.getImageData(0, 0, W, H);
  const px = pixels.data;
  const inside = new Uint8Array(W * H), outside = new Uint8Array(W * H);
  for (let k = 0; k < W * H; k++) { inside[k] = px[4 * k + 3] > 0 ? 1 : 0; outside[k] = 1 - inside[k]; }
  const nearOutside = dilate(outside, W, H, width, 1), nearInside = dilate(inside, W, H, pad, 0);
  for (let k = 0; k < W * H; k++) {
    const rgb = inside[k] && nearOutside[k] ? colour : (!inside[k] && nearInside[k] ? HALO : null);
    px[4 * k] = rgb ? rgb[0] : 0;
    px[4 * k + 1] = rgb ? rgb[1] : 0;
    px[4 * k + 2] = rgb ? rgb[2] : 0;
    px[4 * k + 3] = rgb ? 255 : 0;
  }
  ctx.putImageData(pixels, 0, 0);
  return { x: mask.x - pad, y: mask.y - pad, image: canvas };
}

function lineWidth(result) {
  return Math.max(1, Math.round(Math.max(result.width, result.height) / 400));
}

function currentView() {
  const chosen = document.querySelector("input[name=stage]:checked").value;
  return state.result && (chosen === "final" || state.result.stages.includes("coarse")) ? chosen : "final";
}

function currentDraw() {
  return document.querySelector("input[name=draw]:checked").value;
}

// the image and the shown detections' masks of one stage on `canvas`; returns the number of
// mask pixels on it, read back from the canvas (what the user actually sees), or -1 when too big
function drawStage(canvas, stage, shown, draw) {
  const result = state.result;
  canvas.width = result.width;
  canvas.height = result.height;
  const ctx = canvas.getContext("2d");
  if (state.image) {
    ctx.drawImage(state.image, 0, 0, result.width, result.height);
  } else {
    ctx.fillStyle = "#888";
    ctx.fillRect(0, 0, result.width, result.height);
  }
  const overlay = document.createElement("canvas");
  overlay.width = result.width;
  overlay.height = result.height;
  const octx = overlay.getContext("2d");
  const layers = draw === "outline" ? state.outlines[stage] : state.masks[stage];
  for (const [, i] of shown) {
    const layer = layers[i];
    if (layer) octx.drawImage(layer.image, layer.x, layer.y);
  }
  // fills are see-through so the object stays visible; outlines are drawn solid
  ctx.globalAlpha = draw === "outline" ? 1 : 0.55;
  ctx.drawImage(overlay, 0, 0);
  ctx.globalAlpha = 1;
  const line = lineWidth(result);
  ctx.lineWidth = line;
  ctx.font = `${6 * line + 4}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  for (const [d] of shown) {
    const colour = `rgb(${d.color.join(",")})`;
    const [x0, y0, x1, y1] = d.box;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    // the label on a tag of the class colour, above the box (inside it at the image's top), as
    // in `refinemask predict`'s overlays: readable on any background
    const text = `${d.name} ${d.score.toFixed(2)}`;
    const tagHeight = 6 * line + 6;
    const tagY = y0 >= tagHeight ? y0 - tagHeight : y0;
    ctx.fillStyle = colour;
    ctx.fillRect(x0, tagY, ctx.measureText(text).width + 2 * line, tagHeight);
    const [r, g, b] = d.color;
    ctx.fillStyle = 0.299 * r + 0.587 * g + 0.114 * b > 140 ? "#000" : "#fff";
    ctx.fillText(text, x0 + line, tagY + tagHeight - 1);
  }
  if (result.width * result.height > 16e6) return -1;
  const alpha = octx.getImageData(0, 0, result.width, result.height).data;
  let painted = 0;
  for (let k = 3; k < alpha.length; k += 4) if (alpha[k] > 0) painted++;
  return painted;
}

function render() {
  const result = state.result;
  if (!result) return;
  const threshold = parseFloat($("threshold").value);
  const view = currentView();
  const draw = currentDraw();
  const stages = view === "compare" ? ["final", "coarse"] : [view];
  const shown = result.detections.map((d, i) => [d, i]).filter(([d]) => d.score >= threshold);
  // small images are shown enlarged, pixels kept sharp, so that mask edges can be compared
  const enlarged = result.width < 480;
  $("views").classList.toggle("compare", view === "compare");
  const painted = {};
  for (const stage of ["final", "coarse"]) {
    const visible = stages.includes(stage);
    $(`figure-${stage}`).hidden = !visible;
    const canvas = $(`view-${stage}`);
    if (!visible) { canvas.width = 0; canvas.height = 0; continue; }
    canvas.classList.toggle("enlarged", enlarged);
    canvas.style.width = enlarged && view !== "compare" ? "480px" : "";
    const size = state.info ? state.info.mask_sizes[stage] : "";
    const caption = $(`caption-${stage}`);
    caption.textContent = `${stage} ${size}x${size} masks`;
    caption.hidden = view !== "compare";
    painted[stage] = drawStage(canvas, stage, shown, draw);
  }
  const list = $("detections");
  list.replaceChildren();
  for (const [d] of shown) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${d.color.join(",")})`;
    item.append(swatch, `${d.name} ${d.score.toFixed(2)}`);
    list.append(item);
  }
  const sizes = stages.map((stage) => {
    const size = state.info ? state.info.mask_sizes[stage] : "";
    return `${stage} ${size}x${size}`;
  }).join(" beside ");
  const summary = $("summary");
  summary.textContent = `${shown.length} of ${result.detections.length} detections with score >= ` +
    `${threshold.toFixed(2)}; ${sizes} masks${draw === "outline" ? ", outlined" : ""}; ` +
    `${result.width}x${result.height} image, ${result.seconds.toFixed(2)} s`;
  Object.assign(summary.dataset, {
    shown: shown.length, total: result.detections.length, stage: view, draw: draw,
    threshold: threshold.toFixed(2), painted: stages.length === 1 ? painted[view] : "",
    paintedFinal: painted.final === undefined ? "" : painted.final,
    paintedCoarse: painted.coarse === undefined ? "" : painted.coarse,
  });
  document.body.dataset.state = "done";
}

async function upload(blob, name) {
  $("error").textContent = "";
  if (state.info && blob.size > state.info.max_upload_bytes) {
    showError(`${name} is ${(blob.size / 2 ** 20).toFixed(1)} MB, more than the limit of ` +
      `${state.info.max_upload_bytes / 2 ** 20} MB; shrink it first`);
    return;
  }
  document.body.dataset.state = "busy";
  $("status").textContent = `segmenting ${name}...`;
  let response;
  try {
    response = await fetch("/api/predict", {
      method: "POST",
      headers: { ...AUTH, "Content-Type": blob.type || "application/octet-stream" },
      body: blob,
    });
  } catch (err) {
    showError(`the upload failed: ${err.message}`);
    return;
  }
  const answer = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
  if (!response.ok) {
    showError(answer.error || `the server answered ${response.status}`);
    return;
  }
  const url = URL.createObjectURL(blob);
  try {
    state.image = await loadImage(url);
  } catch (err) {
    state.image = null;  // e.g. TIFF: the server reads it, the browser cannot show it
  }
  state.masks = {};
  state.outlines = {};
  const width = lineWidth(answer);
  for (const stage of answer.stages) {
    state.masks[stage] = await decodeMasks(answer, stage);
    state.outlines[stage] = state.masks[stage].map((mask, i) => outlineOf(mask, answer.detections[i].color, width));
  }
  state.result = answer;
  $("status").textContent = state.image ? name : `${name} (the browser cannot show this format; masks on grey)`;
  render();
}

async function start() {
  const params = new URLSearchParams(window.location.search);
  if (params.has("threshold")) $("threshold").value = params.get("threshold");
  $("threshold-value").textContent = parseFloat($("threshold").value).toFixed(2);
  const mode = params.get("mode");
  if (mode === "coarse" || mode === "compare") document.querySelector(`input[name=stage][value=${mode}]`).checked = true;
  if (params.get("draw") === "outline") document.querySelector("input[name=draw][value=outline]").checked = true;
  $("threshold").addEventListener("input", () => {
    $("threshold-value").textContent = parseFloat($("threshold").value).toFixed(2);
    render();
  });
  for (const radio of document.querySelectorAll("input[name=stage], input[name=draw]")) radio.addEventListener("change", render);
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) upload(file, file.name);
  });
  const loadExample = async () => {
    const response = await fetch("/example", { headers: AUTH });
    if (!response.ok) { showError("the server has no example image"); return; }
    await upload(await response.blob(), "the example image");
  };
  $("example").addEventListener("click", loadExample);
  try {
    const response = await fetch("/api/info", { headers: AUTH });
    state.info = await response.json();
    if (!response.ok) { showError(state.info.error || `the server answered ${response.status}`); return; }
  } catch (err) {
    showError(`cannot reach the server: ${err.message}`);
    return;
  }
  const m = state.info.model;
  const headNames = {refinemask: "RefineMask", simple_refinemask: "RefineMask faster-better", maskrcnn: "Mask R-CNN"};
  $("model").textContent = `${headNames[m.mask_head] || m.mask_head}, ${m.backbone}, ` +
    `${m.num_classes} classes; test size ${m.test_size[0]} (long side <= ${m.test_size[1]}); ` +
    `uploads up to ${state.info.max_upload_bytes / 2 ** 20} MB and ${state.info.max_pixels / 1e6} megapixels`;
  $("final-size").textContent = `${state.info.mask_sizes.final}x${state.info.mask_sizes.final}`;
  if (state.info.mask_sizes.coarse) {
    $("coarse-size").textContent = `${state.info.mask_sizes.coarse}x${state.info.mask_sizes.coarse}`;
  } else {
    document.querySelector("input[value=coarse]").disabled = true;
    document.querySelector("input[value=compare]").disabled = true;
    $("coarse-size").textContent = "(RefineMask models only)";
  }
  $("example").hidden = !state.info.example;
  if (params.has("example")) await loadExample();
}

start();
