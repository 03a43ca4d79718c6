// The page of `cvae serve` (src/serve.rs): the training view and the latent explorer.
// Plain canvas drawing; every number comes from the server's JSON endpoints.
"use strict";

const $ = (id) => document.getElementById(id);
// Matplotlib's tab10, one colour per digit (as `cvae scatter`).
const TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

async function getJSON(url, options) {
  const r = await fetch(url, options);
  const body = await r.json().catch(() => ({ error: r.statusText }));
  // A 503 (busy, or the model not loaded yet) says in Retry-After when to ask again.
  if (!r.ok) throw Object.assign(new Error(body.error || r.statusText), { status: r.status, retryAfter: Number(r.headers.get("Retry-After")) || 0 });
  return body;
}

// ---- Training view --------------------------------------------------------------

let rows = [];
let epochs = 0;

function drawCurve() {
  const c = $("curve"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const pad = { l: 60, r: 16, t: 30, b: 36 };
  const pts = rows.filter((r) => Number.isFinite(r.test_elbo));
  g.fillStyle = "#333"; g.font = "13px system-ui";
  g.fillText("test-set ELBO (nats) per epoch", pad.l, 12);
  if (pts.length === 0) { g.fillText("no complete epoch yet", pad.l, c.height / 2); return; }
  const x0 = 1, x1 = Math.max(epochs, pts[pts.length - 1].epoch, 2);
  let y0 = Math.min(...pts.map((p) => p.test_elbo)), y1 = Math.max(...pts.map((p) => p.test_elbo));
  if (y1 - y0 < 1) { y0 -= 0.5; y1 += 0.5; }
  const X = (e) => pad.l + (e - x0) / (x1 - x0) * (c.width - pad.l - pad.r);
  const Y = (v) => c.height - pad.b - (v - y0) / (y1 - y0) * (c.height - pad.t - pad.b);
  g.strokeStyle = "#ccc"; g.beginPath();
  g.moveTo(pad.l, pad.t); g.lineTo(pad.l, c.height - pad.b); g.lineTo(c.width - pad.r, c.height - pad.b); g.stroke();
  g.fillStyle = "#555";
  for (const v of [y0, (y0 + y1) / 2, y1]) g.fillText(v.toFixed(1), 4, Y(v) + 4);
  for (const e of [x0, Math.round((x0 + x1) / 2), x1]) g.fillText(String(e), X(e) - 6, c.height - pad.b + 18);
  g.strokeStyle = "#1f77b4"; g.lineWidth = 2; g.beginPath();
  pts.forEach((p, i) => (i ? g.lineTo(X(p.epoch), Y(p.test_elbo)) : g.moveTo(X(p.epoch), Y(p.test_elbo))));
  g.stroke(); g.lineWidth = 1; g.fillStyle = "#1f77b4";
  for (const p of pts) { g.beginPath(); g.arc(X(p.epoch), Y(p.test_elbo), 3, 0, 7); g.fill(); }
}

function showMetrics(m) {
  rows = m.rows; epochs = m.epochs;
  drawCurve();
  const last = rows[rows.length - 1];
  $("grid").src = "/api/grid.png?epoch=" + (last ? last.epoch : 0);
  $("grid-caption").textContent = last ? `after epoch ${last.epoch}: test ELBO ${last.test_elbo.toFixed(2)}` : "before training";
  const head = "<tr><th>epoch</th><th>train loss</th><th>test ELBO</th><th>seconds</th><th>images/s</th></tr>";
  $("metrics").innerHTML = head + rows.map((r) =>
    `<tr><td>${r.epoch}</td><td>${r.train_loss.toFixed(4)}</td><td>${r.test_elbo.toFixed(4)}</td><td>${r.seconds.toFixed(1)}</td><td>${r.images_per_second.toFixed(1)}</td></tr>`).join("");
  if (!live && last) {
    // Trained by another process: no live figures, but the pace of the epochs so far.
    const left = epochs - rows.length, per = rows.reduce((a, r) => a + r.seconds, 0) / rows.length;
    $("progress").textContent = `${rows.length} of ${epochs} epochs done; ${last.images_per_second.toFixed(0)} images/s in the last` +
      (left > 0 ? `; at this pace the remaining ${left} take about ${clock(left * per)}` : "");
  }
}

// Seconds as h:mm:ss.
function clock(seconds) {
  const t = Math.round(seconds), h = Math.floor(t / 3600), m = Math.floor(t % 3600 / 60), s = t % 60;
  return `${h}:${String(m).padStart(2, "0")}:${String(s).padStart(2, "0")}`;
}

let live = null;
function showProgress(p) {
  live = p;
  $("progress").textContent = p.running
    ? `epoch ${p.epoch} of ${p.epochs}: ${p.images} of ${p.epoch_images} images, ${p.images_per_second.toFixed(0)} images/s, ETA ${clock(p.eta_seconds)}`
    : `training stopped after epoch ${rows.length ? rows[rows.length - 1].epoch : 0}`;
}

// ---- Latent explorer --------------------------------------------------------------

let points = null;   // {mean, dirs, scales, xy, labels}
let view = null;     // plane bounds
let sliders = [];    // extra directions' values, in standard deviations
let selected = [];   // clicked dots (indices)

function planeBounds(xy) {
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const [x, y] of xy) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  const m = 0.08 * Math.max(x1 - x0, y1 - y0, 1e-3);
  return { x0: x0 - m, x1: x1 + m, y0: y0 - m, y1: y1 + m };
}
const toCanvas = (c, [x, y]) => [(x - view.x0) / (view.x1 - view.x0) * c.width, (1 - (y - view.y0) / (view.y1 - view.y0)) * c.height];
const toPlane = (c, px, py) => [view.x0 + px / c.width * (view.x1 - view.x0), view.y0 + (1 - py / c.height) * (view.y1 - view.y0)];

function drawPlane(cursor) {
  const c = $("plane"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  points.xy.forEach((p, i) => {
    const [x, y] = toCanvas(c, p);
    g.fillStyle = TAB10[points.labels[i] % 10];
    g.fillRect(x - 1.5, y - 1.5, 3, 3);
  });
  for (const i of selected) {
    const [x, y] = toCanvas(c, points.xy[i]);
    g.strokeStyle = "#000"; g.lineWidth = 2; g.beginPath(); g.arc(x, y, 7, 0, 7); g.stroke(); g.lineWidth = 1;
  }
  if (cursor) {
    g.strokeStyle = "rgba(0,0,0,0.5)"; g.beginPath();
    g.moveTo(cursor[0] - 8, cursor[1]); g.lineTo(cursor[0] + 8, cursor[1]);
    g.moveTo(cursor[0], cursor[1] - 8); g.lineTo(cursor[0], cursor[1] + 8); g.stroke();
  }
  g.fillStyle = "#333"; g.font = "12px system-ui";
  TAB10.forEach((col, d) => { g.fillStyle = col; g.fillRect(8 + d * 28, c.height - 18, 10, 10); g.fillStyle = "#333"; g.fillText(String(d), 21 + d * 28, c.height - 9); });
}

// z = mean + u dirs[0] + v dirs[1] + sum over the sliders of s_k scales[k] dirs[k].
function latentAt(u, v) {
  const z = points.mean.slice();
  const add = (d, a) => d.forEach((w, j) => (z[j] += a * w));
  add(points.dirs[0], u); add(points.dirs[1], v);
  sliders.forEach((s, k) => add(points.dirs[k + 2], s * points.scales[k + 2]));
  return z;
}

function drawImages(canvas, images, count, width, height) {
  const g = canvas.getContext("2d"), per = width * height;
  const cell = Math.min(canvas.width / count, canvas.height);
  const off = document.createElement("canvas"); off.width = width; off.height = height;
  const og = off.getContext("2d"), data = og.createImageData(width, height);
  g.fillStyle = "#000"; g.fillRect(0, 0, canvas.width, canvas.height);
  g.imageSmoothingEnabled = false;
  for (let k = 0; k < count; k++) {
    for (let i = 0; i < per; i++) {
      const v = Math.round(255 * Math.min(1, Math.max(0, images[k * per + i])));
      data.data.set([v, v, v, 255], 4 * i);
    }
    og.putImageData(data, 0, 0);
    g.drawImage(off, k * cell, 0, cell, cell);
  }
}

// One decode in flight at a time; a newer point replaces any that waits (the
// server's queue is bounded too), so a fast pointer never piles up work.
// A 503 (the server is busy, or still loading) pauses decoding for its Retry-After;
// then the pointer's latest point is decoded.
let inFlight = false, waiting = null, decoded = 0, pausedUntil = 0;
async function decodeAt(u, v) {
  if (inFlight || performance.now() < pausedUntil) { waiting = [u, v]; return; }
  inFlight = true;
  try {
    const r = await getJSON("/api/decode", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ z: [latentAt(u, v)] }) });
    drawImages($("digit"), r.images, 1, model.width, model.height);
    $("digit").dataset.decoded = String(++decoded);
    $("coords").textContent = `plane (${u.toFixed(2)}, ${v.toFixed(2)})`;
  } catch (e) {
    if (e.status !== 503) $("coords").textContent = e.message;
    else {
      const wait = 1000 * (e.retryAfter || 1);
      pausedUntil = performance.now() + wait;
      setTimeout(() => { if (waiting) { const w = waiting; waiting = null; decodeAt(...w); } }, wait);
    }
  } finally {
    inFlight = false;
    if (waiting) { const w = waiting; waiting = null; decodeAt(...w); }
  }
}

async function interpolate() {
  const [from, to] = selected;
  try {
    const r = await getJSON("/api/interpolate", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ from, to, steps: 10, slerp: $("slerp").checked }) });
    drawImages($("path"), r.images, 10, model.width, model.height);
    $("path").dataset.drawn = String(Number($("path").dataset.drawn || 0) + 1);
  } catch (e) { $("explorer-status").textContent = e.message; }
}

function nearest(c, px, py) {
  let best = -1, dist = 64;
  points.xy.forEach((p, i) => {
    const [x, y] = toCanvas(c, p), d = (x - px) ** 2 + (y - py) ** 2;
    if (d < dist) { dist = d; best = i; }
  });
  return best;
}

function buildSliders() {
  const box = $("sliders"); box.innerHTML = "";
  sliders = points.dirs.slice(2).map(() => 0);
  if (sliders.length) box.insertAdjacentHTML("beforeend", `<p class="muted">The plane spans the first two principal directions of the test set's latent means; these move along the next ones (in standard deviations):</p>`);
  sliders.forEach((_, k) => {
    const id = `dir${k + 3}`;
    box.insertAdjacentHTML("beforeend", `<label>direction ${k + 3} <input type="range" id="${id}" min="-3" max="3" step="0.1" value="0"> <span id="${id}v">0.0</span></label>`);
    $(id).addEventListener("input", (e) => { sliders[k] = Number(e.target.value); $(`${id}v`).textContent = sliders[k].toFixed(1); if (last) decodeAt(...last); });
  });
}

let model = null, last = null;
async function loadPoints() {
  try {
    points = await getJSON("/api/points");
  } catch (e) {
    // "loading the model", "no checkpoint yet", or why it does not load; ask again.
    $("explorer-status").textContent = e.message;
    setTimeout(loadPoints, 1000 * (e.retryAfter || 2));
    return;
  }
  view = planeBounds(points.xy);
  const info = await getJSON("/api/info");
  model = info.model;
  $("model").textContent = `${model.preset}, latent ${model.latent}, after ${model.epoch} epoch${model.epoch === 1 ? "" : "s"} (${model.source})`;
  $("explorer-status").textContent = model.latent === 2
    ? `The 2-D latent space: the means of ${points.xy.length} test images, coloured by digit.`
    : `A ${model.latent}-D latent space, seen along its first two principal directions: the means of ${points.xy.length} test images, coloured by digit.`;
  buildSliders();
  drawPlane();
  // Start with the centre of the plane decoded (or, after a reload, the last point),
  // and say what the strip is for.
  if (!last) last = [(view.x0 + view.x1) / 2, (view.y0 + view.y1) / 2];
  selected = [];
  decodeAt(...last);
  const g = $("path").getContext("2d");
  g.clearRect(0, 0, $("path").width, $("path").height);
  g.fillStyle = "#777"; g.font = "14px system-ui";
  g.fillText("click two dots on the plane: the decodings between them appear here", 16, 60);
  document.body.dataset.ready = "1";
}

function wireExplorer() {
  const c = $("plane");
  c.addEventListener("pointermove", (e) => {
    if (!points) return;
    const r = c.getBoundingClientRect(), px = (e.clientX - r.left) * c.width / r.width, py = (e.clientY - r.top) * c.height / r.height;
    last = toPlane(c, px, py);
    drawPlane([px, py]);
    decodeAt(...last);
  });
  c.addEventListener("click", (e) => {
    if (!points) return;
    const r = c.getBoundingClientRect(), i = nearest(c, (e.clientX - r.left) * c.width / r.width, (e.clientY - r.top) * c.height / r.height);
    if (i < 0) return;
    selected = selected.length >= 2 ? [i] : selected.concat([i]);
    drawPlane();
    if (selected.length === 2) interpolate();
  });
  $("slerp").addEventListener("change", () => selected.length === 2 && interpolate());
}

async function main() {
  wireExplorer();
  const info = await getJSON("/api/info").catch((e) => ({ status: e.message }));
  if (info.training) {
    $("training").hidden = false;
    getJSON("/api/metrics").then(showMetrics).catch(() => {});
    const events = new EventSource("/api/events");
    events.addEventListener("metrics", (e) => showMetrics(JSON.parse(e.data)));
    events.addEventListener("progress", (e) => showProgress(JSON.parse(e.data)));
    events.addEventListener("model", () => loadPoints());
  }
  loadPoints();
}
main();
