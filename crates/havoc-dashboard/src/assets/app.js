// Havoc dashboard (host mode). Plain JavaScript, no dependencies. Every state-changing request
// carries the page's token in X-Havoc-CSRF; the server refuses those that do not.
"use strict";
const TOKEN = document.querySelector('meta[name="havoc-csrf"]').content;
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c ?? ""));
  return e;
}

async function post(url, body, method) {
  const r = await fetch(url, {
    method: method || "POST",
    headers: { "X-Havoc-CSRF": TOKEN, "Content-Type": "application/yaml" },
    body: body ?? "",
  });
  let json = {};
  try { json = await r.json(); } catch (_) { /* an empty body */ }
  return { ok: r.ok, status: r.status, json };
}

const when = (ms) => (ms ? new Date(ms).toLocaleString() : "—");
const secs = (s) => (s == null ? "—" : s < 60 ? s.toFixed(1) + " s" : (s / 60).toFixed(1) + " min");

// --- Runs ---------------------------------------------------------------------------------
async function loadRuns() {
  const verdict = $("verdict").value;
  const t0 = performance.now();
  const r = await fetch("/api/runs" + (verdict ? "?verdict=" + encodeURIComponent(verdict) : ""));
  const data = await r.json();
  const body = $("runs-body");
  body.replaceChildren();
  if (!r.ok) { $("runs-status").textContent = data.error; return; }
  for (const run of data.runs) {
    body.append(el("tr", {},
      el("td", {}, when(run.startedAtUnixMs)),
      el("td", {}, el("a", { href: "/runs/" + encodeURIComponent(run.key) }, run.experiment || run.key)),
      el("td", { class: "v-" + run.verdict }, run.verdict || "unknown"),
      el("td", {}, secs(run.durationSeconds)),
      el("td", {}, run.faults), el("td", {}, run.targets),
      el("td", {}, run.allRecovered === false ? "NO: run havoc recover" : run.allRecovered ? "yes" : "—")));
  }
  let s = `${data.runs.length} of ${data.total} runs` + (verdict ? ` (verdict ${verdict})` : "");
  s += ` · listed in ${Math.round(performance.now() - t0)} ms`;
  if (data.unreadable.length) s += ` · ${data.unreadable.length} unreadable: ${data.unreadable.join("; ")}`;
  $("runs-status").textContent = s;
}

// --- Live ---------------------------------------------------------------------------------
// A run that writes a live stream (every `havoc run` does) comes with `live`: its plan, phase,
// each fault's window as measured (seconds from the start of the run, as in its report), and
// per probe a sample count; the samples themselves arrive as `samples` events, appended here.
// A run without one shows what its journal says is in effect now, as this page saw it.
let knownReports = new Set();
const windows = new Map();
const samples = new Map(); // runId -> Map(probe -> [sample])
const ended = new Map(); // runId -> the run as last seen, once it is no longer in progress
let lastState = null;
function trackWindows(state) {
  const now = Date.now();
  for (const run of state.active) {
    const w = windows.get(run.runId) || new Map();
    windows.set(run.runId, w);
    const current = new Set();
    for (const f of run.inEffect) {
      const key = f.fault + "\u0000" + f.target;
      current.add(key);
      const open = w.get(key);
      if (open && open.to == null) continue;
      if (open) w.set(key + "\u0000" + open.from, open); // keep the window that closed
      w.set(key, { fault: f.fault, target: f.target, from: now, to: null });
    }
    for (const [key, win] of w) if (win && win.to == null && !current.has(key)) win.to = now;
  }
  // Runs that left: kept as ended, with their report.
  const here = new Set(state.active.map((r) => r.runId));
  if (lastState) for (const r of lastState.active) if (!here.has(r.runId)) ended.set(r.runId, r);
  if (lastState && lastState.active.some((r) => !here.has(r.runId))) loadRuns();
}
function addSamples(ev) {
  const m = samples.get(ev.runId) || new Map();
  samples.set(ev.runId, m);
  const list = (m.get(ev.probe) || []).slice(0, ev.from);
  m.set(ev.probe, list.concat(ev.samples));
}

const SVG = "http://www.w3.org/2000/svg"; // the SVG namespace: a name, nothing is fetched
function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : String(c ?? ""));
  return e;
}
const W = 860, LABEL = 220, PLOT = W - LABEL - 10;
const f1 = (x) => (Math.round(x * 10) / 10).toFixed(1);
const f3 = (x) => x.toFixed(3);

// The time axis of one run follows it: from its start to a little past now (at least 10 s), or
// to the end of its plan once that is in sight. What lies further is clipped at the right edge.
function span(run) {
  const l = run.live;
  const now = Math.max(0, (Date.now() - l.startedAtUnixMs) / 1000);
  let seen = now;
  for (const w of l.windows) seen = Math.max(seen, w.start, w.end ?? 0);
  for (const list of (samples.get(run.runId) || new Map()).values()) for (const x of list) seen = Math.max(seen, x.t);
  const ahead = Math.max(10, seen * 1.25);
  const end = Math.max(seen, l.lengthSeconds <= ahead ? l.lengthSeconds : ahead) * 1.03 || 1;
  return { end, now: Math.min(now, end), planEnd: l.lengthSeconds };
}
const xOf = (ax) => (t) => LABEL + (Math.min(Math.max(0, t), ax.end) / ax.end) * PLOT;

function timeline(run, ax) {
  const l = run.live;
  const x = xOf(ax);
  const rows = [];
  for (const f of l.faults) for (const t of f.targets) rows.push({ f, target: t });
  for (const w of l.windows) if (!rows.some((r) => r.f.name === w.fault && r.target === w.target)) rows.push({ f: { name: w.fault }, target: w.target });
  const ROW = 22, TOP = 18, h = TOP + rows.length * ROW + 18;
  const g = svg("svg", { class: "live-timeline", viewBox: `0 0 ${W} ${h}`, role: "img",
    "aria-label": `Timeline of run ${run.runId}: planned and measured fault windows` });
  // Phases, as the run entered them.
  l.phases.forEach((p, i) => {
    const to = i + 1 < l.phases.length ? l.phases[i + 1].at : ax.now;
    g.append(svg("rect", { class: "phase phase-" + p.phase, x: x(p.at), y: 0, width: Math.max(0, x(to) - x(p.at)), height: h - 14 },
      svg("title", {}, `${p.phase} from +${f1(p.at)} s`)));
    if (x(to) - x(p.at) > 50) g.append(svg("text", { class: "phase-label", x: x(p.at) + 3, y: 12 }, p.phase));
  });
  rows.forEach((r, i) => {
    const y = TOP + i * ROW;
    g.append(svg("text", { class: "row-label", x: 4, y: y + 15 }, `${r.f.name} · ${r.target}`.slice(0, 34)));
    if (r.f.durationSeconds != null) {
      g.append(svg("rect", { class: "planned", x: x(r.f.startSeconds), y: y + 3, width: Math.max(1, x(r.f.startSeconds + r.f.durationSeconds) - x(r.f.startSeconds)), height: ROW - 6 },
        svg("title", {}, `planned +${f1(r.f.startSeconds)} s for ${f1(r.f.durationSeconds)} s`)));
    }
    for (const w of l.windows.filter((w) => w.fault === r.f.name && w.target === r.target)) {
      const to = w.end ?? ax.now;
      g.append(svg("rect", { class: "window" + (w.end == null ? " open" : "") + (w.error ? " error" : ""), x: x(w.start), y: y + 5, width: Math.max(2, x(to) - x(w.start)), height: ROW - 10,
        "data-start": w.start, "data-end": w.end ?? "" },
        svg("title", {}, `${w.fault} on ${w.target}: in effect +${f3(w.start)} s` + (w.end == null ? ", still in effect" : ` → recovered +${f3(w.end)} s`) + (w.effect ? ` (${w.effect})` : ""))));
    }
  });
  g.append(svg("line", { class: "now", x1: x(ax.now), x2: x(ax.now), y1: 0, y2: h - 14 }));
  g.append(svg("text", { class: "axis", x: LABEL, y: h - 2 }, "0 s"));
  g.append(svg("text", { class: "axis", x: W - 10, y: h - 2, "text-anchor": "end" },
    `${f1(ax.end)} s` + (ax.planEnd > ax.end ? ` · the plan ends at ${f1(ax.planEnd)} s` : "")));
  return g;
}

function probeChart(run, p, ax) {
  const list = (samples.get(run.runId) || new Map()).get(p.name) || [];
  const hasValue = list.some((s) => s.value != null);
  const val = (s) => (hasValue ? s.value ?? null : s.latencyMs);
  const vs = list.map(val).filter((v) => v != null);
  const lo = Math.min(0, ...vs), hi = Math.max(1e-9, ...vs) * 1.1;
  const H = 90, x = xOf(ax), y = (v) => 8 + (1 - (v - lo) / (hi - lo)) * (H - 24);
  const last = list[list.length - 1];
  const failed = list.filter((s) => !s.ok).length;
  const g = svg("svg", { class: "probe-chart", viewBox: `0 0 ${W} ${H}`, role: "img", "data-probe": p.name,
    "aria-label": `Probe ${p.name}: ${list.length} samples, ${failed} failed` });
  g.append(svg("text", { class: "row-label", x: 4, y: 20 }, `${p.name} (${p.kind})`.slice(0, 34)));
  g.append(svg("text", { class: "axis", x: 4, y: 38 }, hasValue ? "value" : "latency, ms"));
  g.append(svg("text", { class: "axis", x: 4, y: 56 }, `${list.length} samples, ${failed} failed`));
  if (p.capped) g.append(svg("text", { class: "axis warn", x: 4, y: 74 }, `live view capped at ${run.live.sampleCap}`));
  g.append(svg("line", { class: "axis-line", x1: LABEL, x2: W - 10, y1: y(lo), y2: y(lo) }));
  g.append(svg("text", { class: "axis", x: LABEL - 4, y: y(hi / 1.1) + 4, "text-anchor": "end" }, f1(hi / 1.1)));
  const pts = list.filter((s) => val(s) != null).map((s) => `${x(s.t).toFixed(1)},${y(val(s)).toFixed(1)}`);
  if (pts.length > 1) g.append(svg("polyline", { class: "series", points: pts.join(" ") }));
  for (const s of list) {
    const v = val(s);
    g.append(svg("circle", { class: s.ok ? "ok" : "fail", cx: x(s.t).toFixed(1), cy: y(v ?? lo).toFixed(1), r: s.ok ? 2.2 : 3.2 },
      svg("title", {}, `+${f3(s.t)} s ${s.phase}: ${s.ok ? "pass" : "FAIL"}, ${f1(s.latencyMs)} ms` + (s.value != null ? `, value ${s.value}` : "") + (s.error ? ` (${s.error})` : ""))));
  }
  g.append(svg("line", { class: "now", x1: x(ax.now), x2: x(ax.now), y1: 0, y2: H - 14 }));
  const sum = last ? `last +${f1(last.t)} s: ${last.ok ? "pass" : "FAIL"}` + (last.value != null ? `, value ${last.value}` : `, ${f1(last.latencyMs)} ms`) : "no sample yet";
  return el("div", { class: "probe" }, g, el("p", { class: "muted small" }, `${p.name}: ${sum}`));
}

function liveCard(run) {
  const l = run.live;
  const t0 = l ? l.startedAtUnixMs : run.startedAtUnixMs || Date.now();
  const rel = (ms) => "+" + ((ms - t0) / 1000).toFixed(1) + " s";
  const faults = el("ul", { class: "windows" });
  if (l) {
    for (const w of l.windows) {
      faults.append(el("li", {}, `${w.fault} on ${w.target}: `, w.end == null
        ? el("strong", {}, `in effect since +${f3(w.start)} s`) : `in effect +${f3(w.start)} s → recovered +${f3(w.end)} s`,
        w.error ? el("span", { class: "bad" }, ` · ${w.error}`) : ""));
    }
    for (const n of l.notes) faults.append(el("li", { class: "bad" }, n));
    if (!l.windows.length) faults.append(el("li", { class: "muted" }, "no fault in effect yet"));
  } else {
    for (const win of (windows.get(run.runId) || new Map()).values()) {
      faults.append(el("li", {}, `${win.fault} on ${win.target}: `,
        win.to == null ? el("strong", {}, `in effect since ${rel(win.from)}`) : `in effect ${rel(win.from)} → ${rel(win.to)}`));
    }
    if (!run.inEffect.length) faults.append(el("li", { class: "muted" }, "no fault in effect right now"));
  }
  const elapsed = ((Date.now() - t0) / 1000).toFixed(0) + " s";
  const phase = l && l.phase ? ` · phase ${l.phase}` : "";
  const card = el("li", { class: "live-run", "data-run": run.runId },
    el("strong", {}, run.experiment), ` · run ${run.runId} · pid ${run.pid} · running for ${elapsed}${phase}`,
    l && l.stopping ? el("p", { class: "warn" }, `Stopping: ${l.stopping}`) : "", faults);
  if (l) {
    const ax = span(run);
    card.append(timeline(run, ax));
    for (const p of l.probeSamples) card.append(probeChart(run, p, ax));
  }
  card.append(el("button", { type: "button", class: "danger", "aria-label": `Halt run ${run.runId}`,
    onclick: () => halt(run.runId) }, "Halt"));
  return card;
}

function renderLive(state) {
  lastState = state;
  const live = $("live-list");
  live.replaceChildren();
  for (const run of state.active) live.append(liveCard(run));
  for (const [id, run] of [...ended].reverse().slice(0, 5)) {
    live.append(el("li", { class: "ended", "data-run": id }, el("strong", {}, run.experiment), ` · run ${id} · ended `,
      run.reportKey ? el("a", { href: "/runs/" + encodeURIComponent(run.reportKey) }, "report") : "(its report is where it was told to write it)"));
  }
  $("live-status").textContent = state.active.length
    ? `${state.active.length} run(s) in progress` : "No run in progress.";
  const jobs = $("jobs-list");
  jobs.replaceChildren();
  let newReport = false;
  for (const j of state.jobs) {
    const status = j.exitCode == null ? "running" : `ended (exit ${j.exitCode})`;
    const li = el("li", {}, el("strong", {}, j.experiment), ` · ${j.id} · pid ${j.pid} · ${status} `);
    if (j.hasReport) {
      li.append(el("a", { href: "/runs/" + encodeURIComponent(j.reportKey) }, "report"));
      if (!knownReports.has(j.id)) { knownReports.add(j.id); newReport = true; }
    } else if (j.exitCode == null) {
      li.append(el("button", { type: "button", class: "danger", onclick: () => halt(j.id) }, "Halt"));
    }
    if (j.outputTail && !j.hasReport) li.append(el("pre", {}, j.outputTail));
    jobs.append(li);
  }
  if (!state.jobs.length) jobs.append(el("li", { class: "muted" }, "None yet."));
  if (newReport) loadRuns();
}

function connect() {
  const es = new EventSource("/api/events");
  // Each connection's samples start from 0 on the server: so do ours.
  es.addEventListener("open", () => samples.clear());
  es.addEventListener("samples", (e) => addSamples(JSON.parse(e.data)));
  es.addEventListener("state", (e) => { const st = JSON.parse(e.data); trackWindows(st); renderLive(st); });
  es.onerror = () => { $("live-status").textContent = "Disconnected from the dashboard; retrying…"; };
}

async function halt(id) {
  const r = await post("/api/runs/" + encodeURIComponent(id) + "/halt");
  $("live-status").textContent = r.ok ? `Halt sent to pid ${r.json.halted.join(", ")}` : r.json.error;
}

// --- Editor -------------------------------------------------------------------------------
const TEMPLATE = `apiVersion: havoc.dev/v1alpha1
kind: Experiment
metadata: { name: pause-a-worker }
spec:
  duration: 30s
  faults:
    - name: pause-worker
      kind: ProcessChaos
      action: pause
      selector: { processNames: ["worker"], mode: one }
      duration: 10s
`;

function lineStart(text, line) {
  let at = 0;
  for (let i = 1; i < line && at >= 0; i++) at = text.indexOf("\n", at) + 1 || -1;
  return Math.max(at, 0);
}

function jumpTo(line, col) {
  const ta = $("yaml");
  const at = lineStart(ta.value, line) + Math.max(col - 1, 0);
  ta.focus();
  ta.setSelectionRange(at, at);
}

function gutter(bad) {
  const n = $("yaml").value.split("\n").length;
  const g = $("gutter");
  g.replaceChildren();
  for (let i = 1; i <= n; i++) {
    g.append(bad.has(i) ? el("span", { class: "bad" }, i) : String(i), "\n");
  }
}

let checking = 0;
async function check() {
  const seq = ++checking;
  const text = $("yaml").value;
  localStorage.setItem("havoc-yaml", text);
  const r = await post("/api/validate", text);
  if (seq !== checking) return; // a newer check is on its way
  const list = $("problems");
  list.replaceChildren();
  if (!r.ok) { $("problems-h").textContent = r.json.error || `HTTP ${r.status}`; return; }
  const bad = new Set();
  if (r.json.valid) {
    const kinds = r.json.faults.map((f) => `${f.name} (${f.kind})`).join(", ");
    $("problems-h").textContent = `Valid: experiment ${r.json.experiment}, faults: ${kinds}`;
  } else {
    $("problems-h").textContent = `${r.json.errors.length} problem(s)`;
    for (const p of r.json.errors) {
      bad.add(p.line);
      list.append(el("li", {},
        el("button", { type: "button", onclick: () => jumpTo(p.line, p.col) }, `line ${p.line}, column ${p.col}`),
        ": " + (p.path ? p.path + ": " : "") + p.message));
    }
  }
  gutter(bad);
}

let timer;
function changed() { clearTimeout(timer); timer = setTimeout(check, 200); gutter(new Set()); }

async function preview() {
  $("action-status").textContent = "Resolving targets…";
  const r = await post("/api/plan", $("yaml").value);
  const j = r.json;
  $("plan").textContent = j.plan || j.planError || (j.errors ? "Fix the problems above first." : j.error || "");
  $("action-status").textContent = (j.note ? j.note + ". " : "") + (j.seedNote ? j.seedNote + ". " : "") + (j.planError ? "The plan failed." : j.plan ? "Dry run: nothing was injected." : "");
}

async function start() {
  $("action-status").textContent = "Starting…";
  const r = await post("/api/runs", $("yaml").value);
  if (r.ok) {
    $("action-status").textContent = `Started ${r.json.job.experiment} as ${r.json.job.id} (pid ${r.json.job.pid}); follow it under In progress.`;
    location.hash = "#live";
  } else {
    $("action-status").textContent = r.json.error || "Fix the problems above first.";
  }
}

// --- Cluster ------------------------------------------------------------------------------
const CLUSTER_TEMPLATE = `apiVersion: havoc.dev/v1alpha1
kind: PodChaos
metadata: { name: kill-one-web-pod, namespace: default }
spec:
  action: pod-kill
  mode: one
  selector: { labelSelectors: { app: web } }
`;
const objUrl = (o) => "/api/cluster/objects/" + [o.plural, o.namespace, o.name].map(encodeURIComponent).join("/");
const counts = (c) => (c ? Object.entries(c).filter(([, n]) => n).map(([k, n]) => `${k} ${n}`).join(", ") || "none" : "—");

async function loadCluster() {
  const ns = $("cluster-ns").value.trim();
  const r = await fetch("/api/cluster/objects" + (ns ? "?namespace=" + encodeURIComponent(ns) : ""));
  const data = await r.json();
  const body = $("cluster-body");
  body.replaceChildren();
  if (!r.ok) { $("cluster-status").textContent = data.error; return; }
  for (const o of data.objects) {
    const act = (what, label, cls) => el("button", { type: "button", class: cls || "", "aria-label": `${label} ${o.kind} ${o.namespace}/${o.name}`,
      onclick: () => clusterAct(o, what) }, label);
    body.append(el("tr", {},
      el("td", {}, o.kind), el("td", {}, o.namespace),
      el("td", {}, el("button", { type: "button", class: "link", onclick: () => showObject(o) }, o.name)),
      el("td", {}, (o.deleting ? "Deleting" : o.phase || "—") + (o.paused ? " (paused)" : "")),
      el("td", {}, counts(o.counts)),
      el("td", {}, o.paused ? act("resume", "Resume") : act("pause", "Pause"), " ",
        act("delete", "Delete", "danger"), " ", o.deleting ? act("force-cleanup", "Force cleanup", "danger") : "")));
  }
  let s = `${data.objects.length} object(s)`;
  if (data.forbidden.length) s += ` · not allowed to list: ${data.forbidden.map((f) => f.kind + (f.namespace ? " in " + f.namespace : "")).join(", ")}`;
  if (data.missingKinds.length) s += ` · CRDs not installed: ${data.missingKinds.join(", ")}`;
  $("cluster-status").textContent = s;
}

async function clusterAct(o, what) {
  const r = what === "delete" ? await post(objUrl(o), "", "DELETE") : await post(objUrl(o) + "/" + what);
  $("cluster-status").textContent = r.ok ? `${what}: ${o.kind} ${o.namespace}/${o.name}` : r.json.error;
  loadCluster();
}

function records(list) {
  if (!list.length) return el("p", { class: "muted" }, "no targets yet");
  const body = el("tbody", {});
  for (const r of list) {
    body.append(el("tr", {}, el("td", {}, `${r.namespace}/${r.pod}`), el("td", {}, r.node || "—"),
      el("td", {}, r.container || r.podUid || "—"), el("td", {}, r.phase),
      el("td", {}, r.injected), el("td", {}, r.recovered), el("td", {}, r.lastError || "")));
  }
  return el("table", {}, el("caption", { class: "sr" }, "One row per target"),
    el("thead", {}, el("tr", {}, ...["Pod", "Node", "Container / pod uid", "Phase", "Injected", "Recovered", "Last error"]
      .map((h) => el("th", { scope: "col" }, h)))), body);
}

async function showObject(o) {
  const r = await fetch(objUrl(o));
  const j = await r.json();
  const d = $("cluster-detail");
  d.replaceChildren();
  if (!r.ok) { d.append(el("p", {}, j.error)); return; }
  const st = j.object.status || {};
  const cond = el("ul", {});
  for (const c of st.conditions || []) cond.append(el("li", {}, `${c.type}: ${c.status}` + (c.message ? ` (${c.message})` : "")));
  const ev = el("ol", { class: "timeline" });
  for (const e of j.events) ev.append(el("li", { class: e.type === "Warning" ? "warn" : "" }, `${e.at || ""} ${e.reason}: ${e.message}` + (e.count > 1 ? ` (×${e.count})` : "")));
  if (!j.events.length) ev.append(el("li", { class: "muted" }, j.eventsError ? "events not readable: " + j.eventsError : "no events"));
  d.append(el("h3", {}, `${o.kind} ${o.namespace}/${o.name}`),
    el("p", {}, `Phase ${st.phase || "—"} · targets: ${counts(st.counts)}`),
    el("h4", {}, "Conditions"), cond,
    el("h4", {}, "Records per target"), records(j.records),
    el("h4", {}, "Events"), ev);
}

async function clusterCreate(dry) {
  const ns = $("cluster-ns").value.trim();
  const q = new URLSearchParams();
  if (ns) q.set("namespace", ns);
  if (dry) q.set("dryRun", "true");
  const r = await post("/api/cluster/objects?" + q, $("cluster-yaml").value);
  const list = $("cluster-problems");
  list.replaceChildren();
  for (const p of r.json.errors || []) list.append(el("li", {}, `line ${p.line}, column ${p.col}: ` + (p.path ? p.path + ": " : "") + p.message));
  $("cluster-action").textContent = r.ok
    ? (dry ? "The API server accepts it (nothing created)." : `Created ${r.json.summary.kind} ${r.json.summary.namespace}/${r.json.summary.name}.`)
    : r.json.error || `${(r.json.errors || []).length} problem(s)`;
  if (r.ok && !dry) loadCluster();
}

async function initCluster() {
  const r = await fetch("/api/cluster");
  const c = await r.json();
  if (!c.enabled) return;
  $("cluster").hidden = false;
  $("cluster-link").hidden = false;
  $("cluster-mode").textContent = c.mode === "kubeconfig"
    ? "Every call is made with your kubeconfig: you see and change what kubectl would let you."
    : "Every call carries your request's bearer token: you see and change what your RBAC allows.";
  $("cluster-yaml").value = CLUSTER_TEMPLATE;
  $("cluster-reload").addEventListener("click", loadCluster);
  $("cluster-dry").addEventListener("click", () => clusterCreate(true));
  $("cluster-create").addEventListener("click", () => clusterCreate(false));
  loadCluster();
  setInterval(loadCluster, 5000);
}

window.addEventListener("DOMContentLoaded", () => {
  initCluster();
  $("verdict").addEventListener("change", loadRuns);
  $("reload").addEventListener("click", loadRuns);
  $("halt-all").addEventListener("click", async () => {
    const r = await post("/api/halt");
    $("live-status").textContent = r.ok ? `Halt sent to ${r.json.halted.length} run(s)` : r.json.error;
  });
  const ta = $("yaml");
  ta.value = localStorage.getItem("havoc-yaml") || TEMPLATE;
  ta.addEventListener("input", changed);
  ta.addEventListener("scroll", () => { $("gutter").scrollTop = ta.scrollTop; });
  $("preview").addEventListener("click", preview);
  $("start").addEventListener("click", start);
  loadRuns();
  connect();
  setInterval(() => { if (lastState && lastState.active.length) renderLive(lastState); }, 1000);
  check();
});
