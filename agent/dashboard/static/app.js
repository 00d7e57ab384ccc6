// Shoal dashboard: one server-sent-event stream, DOM built with textContent only (every
// name may come from another device), SVG plots drawn here. No library, no build step.
"use strict";
const CSRF = document.querySelector('meta[name="csrf"]').content;
const state = {};
const SVGNS = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
}
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text != null) e.textContent = String(text);
  return e;
}
function rows(id, list, make) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...list.map((x) => { const tr = el("tr"); for (const c of make(x)) tr.append(el("td", {}, c)); return tr; }));
}
function size(n) {
  if (n == null) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}
function say(text, error) {
  const m = document.getElementById("message");
  m.textContent = text; m.className = error ? "error" : "";
}
async function post(path, body, headers) {
  const r = await fetch(path, { method: "POST", credentials: "same-origin",
    headers: Object.assign({ "X-Shoal-CSRF": CSRF }, headers || { "Content-Type": "application/json" }),
    body: body });
  let ans;
  try { ans = await r.json(); } catch (e) { ans = { ok: false, error: `${r.status} ${await r.text()}` }; }
  if (!r.ok && ans.ok === undefined) ans = { ok: false, error: String(r.status) };
  return ans;
}
async function act(name, args) {
  say(`${name}…`);
  const ans = await post(`/api/action/${name}`, JSON.stringify(args || {}));
  if (ans.ok) say(`${name}: done`); else say(`${name}: ${ans.error}`, true);
  return ans;
}

// ---------------------------------------------------------------- pages
function show() {
  const page = (location.hash || "#mesh").slice(1);
  for (const s of document.querySelectorAll(".page")) s.classList.toggle("shown", s.id === `page-${page}`);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
}
window.addEventListener("hashchange", show);

const render = {
  status(s) { document.getElementById("me").textContent = `${s.name} · ${s.display_id}`; },
  mesh(m) {
    const live = new Map((m.links || []).map((l) => [l.peer_id, l]));
    rows("peers", m.peers || [], (p) => {
      const l = live.get(p.peer_id) || {};
      const b = p.trusted ? el("button", { onclick: () => act("unpair", { device: p.name || p.short_id }) }, "Unpair") : "";
      return [`${p.name || "?"} (${p.short_id})`, l.kind || p.transport || (p.connected ? "?" : "offline"),
        (p.rtt_ms == null ? "–" : `${p.rtt_ms} ms`) + (p.rssi == null ? "" : ` · ${p.rssi} dBm`), l.rate_in == null ? "–" : `${size(l.rate_in)}/s`,
        p.trusted ? "yes" : "no", b];
    });
    drawMesh(m, live);
    rows("paired", (m.peers || []).filter((p) => p.trusted), (p) => [p.name || "?", p.display_id || p.short_id,
      el("button", { onclick: () => act("unpair", { device: p.name || p.short_id }) }, "Unpair")]);
  },
  pairing(p) {
    document.getElementById("window").textContent = p.window_open ? "open" : "closed";
    const box = document.getElementById("pending");
    box.replaceChildren(...(p.pending || []).map((x) => el("div", { class: "pending" },
      el("p", {}, `Pairing with ${x.peer_name || x.name || "a device"} — check that both screens show:`),
      el("p", { class: "code", "data-pairing": x.pairing_id || "" }, x.code_display || x.code),
      x.local_confirmed ? el("p", { class: "waiting" }, "confirmed here; waiting for the other device") : "",
      el("button", { onclick: () => act("pair_confirm", { code: x.code }) }, "Codes match: confirm"),
      " ",
      el("button", { onclick: () => act("pair_decline", { pairing_id: x.pairing_id }) }, "Decline"))));
  },
  transfers(t) {
    document.getElementById("running").textContent = t.running;
    rows("transfers", t.page || [], (x) => {
      const frac = x.total ? x.done / x.total : (x.state === "done" ? 1 : 0);
      const fill = el("i");
      fill.style.width = `${Math.round(frac * 100)}%`;  // CSSOM, not a style attribute (CSP)
      const bar = el("span", { class: "bar" }, fill);
      return [x.name || x.resource, x.state, el("span", {}, bar, ` ${Math.round(frac * 100)} %`),
        `${size(x.rate)}/s`, x.eta_s == null ? "–" : `${x.eta_s} s`];
    });
  },
  resources(r) { state.resources = r; resourceTable(); },
  raft(a) {
    state.raft = a; resourceTable();
    const dl = document.getElementById("raft");
    const items = a.unavailable ? [["state", a.unavailable]] :
      [["role", a.role], ["term", a.term], ["leader", a.leader], ["voters", (a.voters || []).join(", ")],
       ["commit", a.commit], ["applied", a.applied]];
    dl.replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v == null ? "–" : v)]));
  },
  mirrors(m) { state.mirrors = m; resourceTable(); },
  prefetch(p) {
    state.prefetch = p; resourceTable();
    if (p.unavailable) { document.getElementById("prefetch-summary").textContent = p.unavailable; return; }
    const s = p.stats || {};
    document.getElementById("prefetch-summary").textContent =
      `predictor: ${p.predictor || "–"} · prefetched ${s.prefetched ?? 0}, used ${s.used ?? 0}, wasted ${size(s.wasted_bytes || 0)}`;
    rows("predictions", p.predictions || [], (x) => [x.resource, x.score, x.temperature, x.held ? "yes" : "no"]);
  },
  history(h) {
    const t = h.map((x) => x.t);
    plot("plot-hits", t, { "hit ratio": h.map((x) => x.hit_ratio) });
    plot("plot-waste", t, { "wasted bytes": h.map((x) => x.wasted) });
    const classes = new Set(h.flatMap((x) => Object.keys(x.bytes_by_class || {})));
    const series = {};
    for (const c of classes) {
      series[c] = h.map((x, i) => i === 0 ? null :
        Math.max(0, ((x.bytes_by_class[c] || 0) - (h[i - 1].bytes_by_class[c] || 0)) / Math.max(x.t - h[i - 1].t, 1e-3)));
    }
    plot("plot-bandwidth", t, series);
  },
  doctor(d) {
    const t = document.getElementById("doctor");
    t.dataset.state = d.findings ? "done" : "waiting";
    if (!d.findings) { rows("doctor", [d], () => ["…", "doctor", d.unavailable || "checking this machine"]); return; }
    rows("doctor", d.findings, (f) => [el("span", { class: `status-${f.status}` }, f.status), f.check,
      f.what + (f.fix ? ` — fix: ${f.fix}` : "")]);
  },
  follows() {},
};

function resourceTable() {
  const r = state.resources; if (!r || r.unavailable) return;
  const auth = new Map(((state.raft || {}).assignments || []).map((a) => [a.resource_id, a]));
  const temps = new Map(((state.prefetch || {}).hottest || []).map((h) => [h.resource, h.temperature]));
  const mirrors = (state.mirrors || {}).mirrors || [];
  rows("resources", r.local || [], (x) => {
    const a = auth.get(x.resource_id) || {};
    const m = mirrors.filter((y) => y.resource === x.resource_id || y.resource_id === x.resource_id);
    const dl = x.files == null ? el("a", { href: `/api/download?resource=${encodeURIComponent(x.resource_id)}`, download: x.name }, x.name) : x.name;
    return [dl, x.version, size(x.size), a.holder || "–", a.term ?? "–",
      temps.get(x.resource_id) ?? temps.get(x.name) ?? "–", m.length ? m.map((y) => `${y.role} ${y.host || y.name || ""}`).join(", ") : "–"];
  });
}

// ---------------------------------------------------------------- drawing
function drawMesh(m, live) {
  const g = document.getElementById("mesh-graph");
  const peers = (m.peers || []);
  const W = 600, H = 320, cx = W / 2, cy = H / 2, R = Math.min(W, H) / 2 - 50;
  const kids = [];
  peers.forEach((p, i) => {
    const a = (2 * Math.PI * i) / Math.max(peers.length, 1) - Math.PI / 2;
    const x = cx + R * Math.cos(a), y = cy + R * Math.sin(a);
    const l = live.get(p.peer_id);
    if (l) {
      kids.push(svg("line", { x1: cx, y1: cy, x2: x, y2: y, class: `link-${l.kind}`, "stroke-width": 2 }));
      kids.push(svg("text", { x: (cx + x) / 2 + 4, y: (cy + y) / 2 - 4 },
        `${l.kind}${p.rtt_ms != null ? ` ${p.rtt_ms} ms` : ""} ${size(l.rate_in)}/s`));
    }
    kids.push(svg("circle", { cx: x, cy: y, r: 14, class: l ? "node-peer" : "node-off" }));
    kids.push(svg("text", { x: x, y: y + 28, "text-anchor": "middle" }, p.name || p.short_id));
  });
  kids.push(svg("circle", { cx: cx, cy: cy, r: 18, class: "node-me" }));
  kids.push(svg("text", { x: cx, y: cy + 34, "text-anchor": "middle" }, "this device"));
  g.replaceChildren(...kids);
}

const COLORS = ["#2a7ab8", "#d9822b", "#8a4fbf", "#2e8b57", "#c0392b"];
function plot(id, t, series) {
  const g = document.getElementById(id);
  const W = 600, H = 160, L = 60, B = 20;
  const vals = Object.values(series).flat().filter((v) => v != null);
  const max = Math.max(1e-9, ...vals), t0 = t[0] || 0, t1 = Math.max(t[t.length - 1] || 1, t0 + 1);
  const X = (v) => L + ((v - t0) / (t1 - t0)) * (W - L - 10), Y = (v) => H - B - (v / max) * (H - B - 10);
  const kids = [svg("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#999" }),
    svg("text", { x: 4, y: 16 }, max >= 1000 ? size(max) : +max.toFixed(3)), svg("text", { x: 4, y: H - B }, "0")];
  if (!vals.length) kids.push(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data yet"));
  Object.entries(series).forEach(([name, ys], k) => {
    const pts = ys.map((v, i) => (v == null ? null : `${X(t[i]).toFixed(1)},${Y(v).toFixed(1)}`)).filter(Boolean);
    if (pts.length) kids.push(svg("polyline", { points: pts.join(" "), fill: "none", stroke: COLORS[k % COLORS.length], "stroke-width": 2 }));
    kids.push(svg("text", { x: L + 10 + k * 110, y: 14, fill: COLORS[k % COLORS.length] }, name));
  });
  g.replaceChildren(...kids);
}

// ---------------------------------------------------------------- live stream
function connect() {
  const es = new EventSource("/api/events");
  const badge = document.getElementById("live");
  es.onopen = () => { badge.textContent = "live"; badge.className = ""; };
  es.onerror = () => { badge.textContent = "reconnecting"; badge.className = "off"; };
  for (const name of Object.keys(render)) {
    es.addEventListener(name, (ev) => {
      try { render[name](JSON.parse(ev.data)); document.body.dataset[`seen${name}`] = String(Date.now()); }
      catch (e) { console.error(name, e); }
    });
  }
}

// ---------------------------------------------------------------- actions
function wire() {
  const on = (id, ev, f) => document.getElementById(id).addEventListener(ev, f);
  on("publish-upload", "submit", async (e) => {
    e.preventDefault();
    const f = document.getElementById("upload-file").files[0]; if (!f) return;
    const pub = document.getElementById("upload-public").checked ? "1" : "0";
    say(`uploading ${f.name}…`);
    const ans = await post(`/api/upload?name=${encodeURIComponent(f.name)}&public=${pub}`, f,
      { "Content-Type": "application/octet-stream" });
    if (ans.ok) say(`published ${ans.result.name} (version ${ans.result.version})`); else say(`publish: ${ans.error}`, true);
  });
  on("publish-path", "submit", (e) => { e.preventDefault(); act("publish", { path: document.getElementById("publish-path-input").value }); });
  on("fetch-form", "submit", (e) => { e.preventDefault(); act("fetch", { resource: document.getElementById("fetch-resource").value }); });
  on("follow-button", "click", () => act("follow", { resource: document.getElementById("fetch-resource").value }));
  on("list-remote", "click", async () => {
    const ans = await act("resources", {});
    if (ans.ok) rows("remote", ans.result.remote || [], (x) => [x.name, x.version, size(x.size), x.holder || x.source || "",
      el("button", { onclick: () => act("fetch", { resource: x.resource_id }) }, "Fetch")]);
  });
  on("open-window", "click", () => act("pair_open", {}));
  on("close-window", "click", () => act("pair_close", {}));
  on("pair-form", "submit", async (e) => {
    e.preventDefault();
    const ans = await act("pair_start", { address: document.getElementById("pair-address").value });
    if (ans.ok) say(`compare this code with the other screen: ${ans.result.code_display || ans.result.code}`);
  });
  on("doctor-rerun", "click", () => post("/api/doctor", "{}"));
}

show(); wire(); connect();
