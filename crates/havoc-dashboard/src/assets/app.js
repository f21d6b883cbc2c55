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

async function post(url, body) {
  const r = await fetch(url, {
    method: "POST",
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
let knownReports = new Set();
// Fault windows as this page saw them: the journal lists what is in effect now; a window opens
// when an entry appears and closes when it goes (to the 250 ms the server polls at).
const windows = new Map();
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
}
function renderLive(state) {
  lastState = state;
  const live = $("live-list");
  live.replaceChildren();
  for (const run of state.active) {
    const t0 = run.startedAtUnixMs || Date.now();
    const rel = (ms) => "+" + ((ms - t0) / 1000).toFixed(1) + " s";
    const faults = el("ul", {});
    for (const win of (windows.get(run.runId) || new Map()).values()) {
      faults.append(el("li", {}, `${win.fault} on ${win.target}: `,
        win.to == null ? el("strong", {}, `in effect since ${rel(win.from)}`) : `in effect ${rel(win.from)} → ${rel(win.to)}`));
    }
    if (!run.inEffect.length) faults.append(el("li", { class: "muted" }, "no fault in effect right now"));
    const elapsed = ((Date.now() - t0) / 1000).toFixed(0) + " s";
    live.append(el("li", {},
      el("strong", {}, run.experiment), ` · run ${run.runId} · pid ${run.pid} · running for ${elapsed}`, faults,
      el("button", { type: "button", class: "danger", "aria-label": `Halt run ${run.runId}`,
        onclick: () => halt(run.runId) }, "Halt")));
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

window.addEventListener("DOMContentLoaded", () => {
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
