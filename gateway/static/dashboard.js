// aiq dashboard: live state from the WebSocket /ws (snapshot, then events, workers, queues),
// one job's event log and a command job's output over SSE (/jobs/<id>/events), cancel and
// submit over the REST API.
// Plain DOM: every piece of text is set with textContent, never parsed as HTML.
"use strict";

const MAX_JOBS = 200;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const EVENT_TYPES = ["queued", "started", "progress", "retrying", "requeued",
  "cancel_requested", "succeeded", "failed", "cancelled"];
const PRESETS = {
  sleep: { data_path: "", hyperparameters: { seconds: 5, steps: 20 } },
  noop: { data_path: "", hyperparameters: {} },
  fail: { data_path: "", hyperparameters: { error: "fatal" } },
  random_forest: { data_path: "builtin:digits", hyperparameters: { n_estimators: 100 } },
  svm: { data_path: "builtin:digits", hyperparameters: {} },
  logistic_regression: { data_path: "builtin:digits", hyperparameters: {} },
};

const state = {
  queues: [],
  workers: [],
  jobs: new Map(), // job_id -> JobStatusView-like object, updated by events
  rows: new Map(), // job_id -> {tr, cells}
  showIdle: false,
  fetching: new Set(),
};

// --- small helpers -----------------------------------------------------------------------

function $(id) { return document.getElementById(id); }

// h("td", {className: "num", title: "x"}, "text", childNode): props are DOM properties.
function h(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function setText(node, text) {
  const value = text === null || text === undefined ? "" : String(text);
  if (node.textContent !== value) node.textContent = value;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  const s = Math.max(Math.round(seconds), 0);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

function clock(ms) {
  return ms ? new Date(ms).toLocaleTimeString([], { hour12: false }) : "";
}

function mib(value) {
  return value >= 1024 ? `${(value / 1024).toFixed(1)} GiB` : `${value} MiB`;
}

function shortId(jobId) {
  return jobId.startsWith("job_") ? jobId.slice(0, 12) + "…" : jobId;
}

let noticeTimer = null;
function notice(message, kind = "info") {
  const box = $("notice");
  box.className = `notice notice-${kind}`;
  setText(box, message);
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { box.hidden = true; }, 6000);
}

// With API_KEY set on the gateway, open the page as /?api_key=<key>: the key is sent along.
const API_KEY = new URLSearchParams(location.search).get("api_key");
function withKey(path) {
  if (!API_KEY) return path;
  return `${path}${path.includes("?") ? "&" : "?"}api_key=${encodeURIComponent(API_KEY)}`;
}

async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(withKey(path), init);
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    const error = data && data.error;
    throw new Error(error ? `${error.code}: ${error.message}` : `HTTP ${response.status}`);
  }
  return data;
}

// --- queues ------------------------------------------------------------------------------

// Idle: nothing queued, in flight, dead or delayed, and no live worker of its type.
function queueIsIdle(q, servedTypes) {
  return !q.length && !q.pending && !q.consumers && !q.dead_letters && !q.delayed &&
    !servedTypes.has(q.worker_type);
}

function renderQueues() {
  const tbody = $("queues").tBodies[0];
  const rows = [];
  let hidden = 0;
  const servedTypes = new Set(state.workers.map((w) => w.worker_type));
  const queues = [...state.queues].sort((a, b) =>
    a.worker_type.localeCompare(b.worker_type) || a.kind.localeCompare(b.kind));
  for (const q of queues) {
    const idle = queueIsIdle(q, servedTypes);
    if (idle && !state.showIdle) { hidden += 1; continue; }
    const lag = q.lag === null || q.lag === undefined ? "n/a" : q.lag;
    const age = q.oldest_pending_age_ms === null || q.oldest_pending_age_ms === undefined
      ? "" : duration(q.oldest_pending_age_ms / 1000);
    rows.push(h("tr", { className: idle ? "idle" : "", title: q.stream },
      h("td", {}, q.worker_type), h("td", {}, q.kind),
      h("td", { className: "num" }, q.length), h("td", { className: "num" }, q.pending),
      h("td", { className: "num" }, lag), h("td", { className: "num" }, age),
      h("td", { className: "num" }, q.consumers),
      h("td", { className: q.dead_letters ? "num warn" : "num" }, q.dead_letters),
      h("td", { className: "num" }, q.delayed ?? 0)));
  }
  tbody.replaceChildren(...rows);
  setText($("queues-note"), hidden && !state.showIdle
    ? `${hidden} idle queue${hidden === 1 ? "" : "s"} hidden.` : "");
}

// --- workers -----------------------------------------------------------------------------

function gpuText(gpus) {
  if (!gpus || gpus.length === 0) return "—";
  return gpus.map((g) => `GPU${g.index} ${g.name}: ${mib(g.total_mb - g.free_mb)} / ` +
    `${mib(g.total_mb)} used`).join("; ");
}

function runningCell(w) {
  const jobs = w.running_jobs || [];
  const cell = h("td", {}, `${jobs.length} / ${w.max_concurrent_jobs}`);
  for (const id of jobs) {
    cell.append(" ", h("button", { type: "button", className: "link mono", title: id,
      onclick: () => selectJob(id, true) }, shortId(id)));
  }
  return cell;
}

function heartbeatCell(w) {
  const age = w.heartbeat_at ? (Date.now() - w.heartbeat_at) / 1000 : null;
  const cell = h("td", { className: "num heartbeat", dataset: { at: String(w.heartbeat_at) } },
    age === null ? "" : `${duration(age)} ago`);
  if (age !== null && age > 15) cell.classList.add("warn");
  return cell;
}

function renderWorkers() {
  const workers = [...state.workers].sort((a, b) =>
    a.worker_type.localeCompare(b.worker_type) || a.worker_id.localeCompare(b.worker_id));
  $("workers").tBodies[0].replaceChildren(...workers.map((w) =>
    h("tr", { dataset: { workerId: w.worker_id } },
      h("td", { className: "mono", title: `${w.hostname} pid ${w.pid}` }, w.worker_id),
      h("td", {}, w.worker_type),
      h("td", {}, `${w.framework} ${w.framework_version}`),
      h("td", {}, gpuText(w.gpus)),
      runningCell(w),
      h("td", {}, w.state),
      heartbeatCell(w))));
  setText($("workers-count"), workers.length ? `(${workers.length})` : "");
  $("workers-empty").hidden = workers.length > 0;
}

function tickHeartbeats() {
  for (const cell of document.querySelectorAll("#workers td.heartbeat")) {
    const at = Number(cell.dataset.at);
    if (!at) continue;
    const age = (Date.now() - at) / 1000;
    setText(cell, `${duration(age)} ago`);
    cell.classList.toggle("warn", age > 15);
  }
}

// --- jobs --------------------------------------------------------------------------------

function epochStep(p) {
  const parts = [];
  if (p.epoch !== null && p.epoch !== undefined) {
    parts.push(p.epochs ? `epoch ${p.epoch}/${p.epochs}` : `epoch ${p.epoch}`);
  }
  if (p.step !== null && p.step !== undefined) {
    parts.push(p.steps ? `step ${p.step}/${p.steps}` : `step ${p.step}`);
  }
  return parts.join(" · ");
}

function newRow(job) {
  const cells = {
    id: h("td", { className: "mono" }),
    model: h("td"),
    workerType: h("td"),
    status: h("td", {}, h("span", { className: "badge status" })),
    progress: h("td", { className: "progress-col" },
      h("progress", { className: "progress-bar", max: 100 }), h("span", { className: "pct" })),
    stage: h("td", { className: "stage" }),
    epochStep: h("td", { className: "epoch-step" }),
    loss: h("td", { className: "num loss" }),
    eta: h("td", { className: "num eta" }),
    created: h("td", { className: "created" }),
    actions: h("td", { className: "actions" }),
  };
  const select = h("button", { type: "button", className: "link mono", title: job.job_id,
    onclick: () => selectJob(job.job_id, true) }, shortId(job.job_id));
  cells.id.append(select);
  const cancel = h("button", { type: "button", className: "danger small-button",
    onclick: () => cancelJob(job.job_id, cancel) }, "cancel");
  cells.actions.append(cancel);
  const tr = h("tr", { dataset: { jobId: job.job_id } }, ...Object.values(cells));
  return { tr, cells, cancel };
}

function updateRow(row, job) {
  const { cells } = row;
  const p = job.progress || {};
  setText(cells.model, job.model_type || "");
  setText(cells.workerType, job.worker_type || "");
  const badge = cells.status.firstChild;
  setText(badge, job.status);
  badge.className = `badge status status-${job.status}`;
  badge.title = job.error ? `${job.error.code}: ${job.error.message}` : "";
  const bar = cells.progress.firstChild;
  const pct = cells.progress.lastChild;
  let percent = typeof p.percent === "number" ? p.percent : null;
  if (job.status === "succeeded") percent = 100;
  if (percent === null) {
    bar.removeAttribute("value"); // indeterminate
    setText(pct, "");
  } else {
    bar.value = Math.min(Math.max(percent, 0), 100);
    setText(pct, `${Math.round(percent)}%`);
  }
  bar.hidden = percent === null && job.status !== "running";
  const error = job.error && ["failed", "retrying"].includes(job.status) ? job.error : null;
  setText(cells.stage, error ? error.code : p.stage || "");
  cells.stage.title = error ? error.message : p.message || "";
  setText(cells.epochStep, epochStep(p));
  setText(cells.loss, typeof p.loss === "number" ? p.loss.toPrecision(4) : "");
  const running = job.status === "running";
  setText(cells.eta, running && typeof p.eta_s === "number" ? duration(p.eta_s) : "");
  setText(cells.created, clock(job.created_at));
  cells.created.title = job.finished_at && job.started_at
    ? `ran ${duration((job.finished_at - job.started_at) / 1000)}` : "";
  row.cancel.hidden = TERMINAL.has(job.status);
  row.tr.classList.toggle("selected", job.job_id === selectedJob);
}

function trimJobs() {
  if (state.jobs.size <= MAX_JOBS) return;
  const oldest = [...state.jobs.values()]
    .filter((j) => TERMINAL.has(j.status) && j.job_id !== selectedJob)
    .sort((a, b) => (a.created_at || 0) - (b.created_at || 0));
  for (const job of oldest.slice(0, state.jobs.size - MAX_JOBS)) state.jobs.delete(job.job_id);
}

let jobsDirty = false;
let orderDirty = false;
function scheduleJobs(reorder) {
  orderDirty = orderDirty || reorder;
  if (jobsDirty) return;
  jobsDirty = true;
  requestAnimationFrame(renderJobs);
}

function renderJobs() {
  jobsDirty = false;
  trimJobs();
  const tbody = $("jobs").tBodies[0];
  for (const [id, row] of state.rows) {
    if (!state.jobs.has(id)) { row.tr.remove(); state.rows.delete(id); }
  }
  for (const job of state.jobs.values()) {
    let row = state.rows.get(job.job_id);
    if (!row) { row = newRow(job); state.rows.set(job.job_id, row); orderDirty = true; }
    updateRow(row, job);
  }
  if (orderDirty) {
    const ordered = [...state.jobs.values()].sort((a, b) =>
      (b.created_at || 0) - (a.created_at || 0) || b.job_id.localeCompare(a.job_id));
    tbody.append(...ordered.map((j) => state.rows.get(j.job_id).tr)); // moves, keeps nodes
    orderDirty = false;
  }
  setText($("jobs-count"), state.jobs.size ? `(${state.jobs.size})` : "");
  $("jobs-empty").hidden = state.jobs.size > 0;
}

function replaceJobs(jobs) {
  state.jobs = new Map(jobs.map((j) => [j.job_id, { ...j }]));
  scheduleJobs(true);
}

async function fetchJob(jobId) {
  if (state.fetching.has(jobId)) return;
  state.fetching.add(jobId);
  try {
    const view = await api("GET", `/jobs/${encodeURIComponent(jobId)}/status`);
    const known = state.jobs.get(jobId);
    // Events that arrived meanwhile are newer than this read: keep their status and progress.
    state.jobs.set(jobId, known ? { ...view, ...pickLive(known) } : view);
    scheduleJobs(true);
  } catch {
    // expired or unreachable: the row keeps what the events said
  } finally {
    state.fetching.delete(jobId);
  }
}

function pickLive(job) {
  const out = { status: job.status };
  for (const key of ["progress", "result", "error", "started_at", "finished_at"]) {
    if (job[key] !== undefined && job[key] !== null) out[key] = job[key];
  }
  return out;
}

const PROGRESS_FIELDS = ["stage", "percent", "epoch", "epochs", "step", "steps", "loss",
  "metrics", "eta_s", "message"];

function applyEvent(ev) {
  if (!ev || !ev.job_id) return;
  let job = state.jobs.get(ev.job_id);
  const isNew = !job;
  if (isNew) {
    job = { job_id: ev.job_id, status: ev.status, worker_type: ev.worker_type || "",
      model_type: "", created_at: ev.ts, progress: null };
    state.jobs.set(ev.job_id, job);
    fetchJob(ev.job_id);
  }
  if (ev.status) job.status = ev.status;
  if (ev.worker_type && !job.worker_type) job.worker_type = ev.worker_type;
  switch (ev.type) {
    case "progress":
      job.progress = Object.fromEntries(PROGRESS_FIELDS.map((k) => [k, ev[k]]));
      break;
    case "started":
      job.started_at = ev.ts;
      job.attempt = ev.attempt;
      job.error = null;
      break;
    case "retrying":
      job.error = ev.error && ev.error.code ? ev.error : null;
      break;
    case "succeeded":
      job.result = ev.result;
      job.finished_at = ev.ts;
      break;
    case "failed":
      job.error = ev.error;
      job.finished_at = ev.ts;
      break;
    case "cancelled":
      job.finished_at = ev.ts;
      break;
    default:
      break;
  }
  scheduleJobs(isNew);
}

// --- live feed: WebSocket with reconnect and backoff -------------------------------------

const socket = { ws: null, delay: 500, retryAt: 0, timer: null };

function setConnection(kind, text) {
  const pill = $("connection");
  pill.className = `pill pill-${kind}`;
  setText(pill, text);
}

function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${withKey("/ws")}`;
}

function connect() {
  clearTimeout(socket.timer);
  setConnection("idle", "connecting…");
  const ws = new WebSocket(wsUrl());
  socket.ws = ws;
  ws.onmessage = (message) => {
    let msg;
    try { msg = JSON.parse(message.data); } catch { return; }
    handleMessage(msg);
  };
  ws.onclose = () => {
    if (socket.ws !== ws) return;
    const wait = socket.delay * (0.8 + Math.random() * 0.4);
    socket.delay = Math.min(socket.delay * 2, 15000);
    socket.retryAt = Date.now() + wait;
    setConnection("down", `reconnecting in ${duration(wait / 1000)}`);
    socket.timer = setTimeout(connect, wait);
  };
}

function handleMessage(msg) {
  switch (msg.type) {
    case "snapshot":
      socket.delay = 500; // a healthy connection: start the backoff over next time
      setConnection("live", "live");
      state.queues = msg.queues || [];
      state.workers = msg.workers || [];
      replaceJobs(msg.jobs || []);
      renderQueues();
      renderWorkers();
      break;
    case "event":
      applyEvent(msg.event);
      break;
    case "workers":
      state.workers = msg.workers || [];
      renderWorkers();
      renderQueues(); // which queues count as idle depends on the live workers
      break;
    case "queues":
      state.queues = msg.queues || [];
      renderQueues();
      break;
    case "lagged":
      notice(`The live feed dropped ${msg.dropped} events; refreshing.`, "warn");
      resync();
      break;
    default:
      break;
  }
}

function resync() {
  if (socket.ws && socket.ws.readyState === WebSocket.OPEN) {
    socket.ws.send(JSON.stringify({ type: "snapshot" })); // answered with a fresh snapshot
  }
}

// --- one job's event log over SSE --------------------------------------------------------

let selectedJob = null;
let source = null;
let seenIds = new Set();

function eventDetail(ev) {
  switch (ev.type) {
    case "queued": return `on ${ev.worker_type || "?"} (position ${ev.position ?? 0})`;
    case "started":
      return `on ${ev.worker} (attempt ${ev.attempt}, delivery ${ev.deliveries})`;
    case "progress": {
      const parts = [ev.stage, typeof ev.percent === "number" ? `${ev.percent.toFixed(1)}%` : "",
        epochStep(ev), typeof ev.loss === "number" ? `loss ${ev.loss.toPrecision(4)}` : "",
        typeof ev.eta_s === "number" ? `ETA ${duration(ev.eta_s)}` : "", ev.message];
      return parts.filter(Boolean).join(" · ");
    }
    case "retrying":
      return `attempt ${ev.attempt} in ${duration(ev.delay_ms / 1000)}` +
        (ev.error && ev.error.message ? `: ${ev.error.message}` : "");
    case "requeued": return ev.reason || "";
    case "succeeded": return JSON.stringify(ev.result || {});
    case "failed": return ev.error ? `${ev.error.code}: ${ev.error.message}` : "";
    default: return "";
  }
}

function onJobEvent(message) {
  if (message.lastEventId && seenIds.has(message.lastEventId)) return;
  if (message.lastEventId) seenIds.add(message.lastEventId);
  let ev;
  try { ev = JSON.parse(message.data); } catch { return; }
  const log = $("event-log");
  log.append(h("li", { className: `event event-${ev.type}` },
    h("time", {}, clock(ev.ts)),
    h("span", { className: `badge status-${ev.status}` }, ev.type),
    h("span", { className: "detail" }, eventDetail(ev))));
  if (log.childElementCount > 500) log.firstElementChild.remove();
  log.scrollTop = log.scrollHeight;
  if (TERMINAL.has(ev.type)) {
    source.close();
    setText($("events-state"), `ended: ${ev.type}`);
  }
}

// A command job's output lines: at most LOG_LINES kept on the page (the API keeps more).
const LOG_LINES = 2000;
let logLines = 0;

function onLogLine(message) {
  if (message.lastEventId && seenIds.has(message.lastEventId)) return;
  if (message.lastEventId) seenIds.add(message.lastEventId);
  let line;
  try { line = JSON.parse(message.data); } catch { return; }
  const out = $("job-log");
  $("job-log-panel").hidden = false;
  const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
  out.append(h("span", { className: line.stream }, `${line.line}\n`));
  logLines += 1;
  if (out.childElementCount > LOG_LINES) out.firstElementChild.remove();
  setText($("job-log-count"), `${logLines} lines`);
  if (atEnd) out.scrollTop = out.scrollHeight;
}

function selectJob(jobId, reveal = false) {
  closeEvents();
  selectedJob = jobId;
  seenIds = new Set();
  $("events-panel").hidden = false;
  setText($("events-job"), jobId);
  setText($("events-state"), "connecting…");
  $("event-log").replaceChildren();
  $("job-log").replaceChildren();
  $("job-log-panel").hidden = true;
  logLines = 0;
  const es = new EventSource(withKey(`/jobs/${encodeURIComponent(jobId)}/events`));
  source = es;
  for (const type of EVENT_TYPES) es.addEventListener(type, onJobEvent);
  es.addEventListener("log", onLogLine); // a command job's output
  if (reveal) $("events-panel").scrollIntoView({ behavior: "smooth", block: "nearest" });
  es.onopen = () => setText($("events-state"), "live");
  es.onerror = () => {
    if (source !== es) return;
    if (es.readyState === EventSource.CONNECTING) {
      setText($("events-state"), "reconnecting…"); // the browser resumes with Last-Event-ID
    } else if (!$("events-state").textContent.startsWith("ended")) {
      setText($("events-state"), "no event stream (unknown or expired job)");
    }
  };
  scheduleJobs(false);
}

function closeEvents() {
  if (source) source.close();
  source = null;
  selectedJob = null;
  $("events-panel").hidden = true;
  scheduleJobs(false);
}

// --- actions -----------------------------------------------------------------------------

async function cancelJob(jobId, button) {
  button.disabled = true;
  try {
    const result = await api("POST", `/jobs/${encodeURIComponent(jobId)}/cancel`);
    notice(`${shortId(jobId)}: ${result.status}`);
  } catch (error) {
    notice(`Cancel ${shortId(jobId)} failed: ${error.message}`, "error");
  } finally {
    button.disabled = false;
  }
}

function applyPreset() {
  const preset = PRESETS[$("model-type").value];
  if (!preset) return;
  $("data-path").value = preset.data_path;
  $("hyperparameters").value = JSON.stringify(preset.hyperparameters);
}

async function submitJob(event) {
  event.preventDefault();
  const result = $("submit-result");
  result.className = "form-result";
  let hyperparameters;
  try {
    hyperparameters = JSON.parse($("hyperparameters").value.trim() || "{}");
    if (typeof hyperparameters !== "object" || hyperparameters === null ||
        Array.isArray(hyperparameters)) throw new Error("not an object");
  } catch (error) {
    result.classList.add("error");
    setText(result, `Hyperparameters must be a JSON object (${error.message}).`);
    return;
  }
  const body = { model_type: $("model-type").value, hyperparameters };
  const dataPath = $("data-path").value.trim();
  if (dataPath) body.data_path = dataPath;
  const button = $("submit-button");
  button.disabled = true;
  try {
    const job = await api("POST", "/jobs/training", body);
    setText(result, `queued ${job.job_id} on ${job.worker_type}`);
    if (!state.jobs.has(job.job_id)) {
      state.jobs.set(job.job_id, { job_id: job.job_id, status: job.status,
        kind: job.kind, worker_type: job.worker_type, model_type: body.model_type,
        created_at: Date.now(), progress: null });
      fetchJob(job.job_id);
    }
    selectJob(job.job_id);
  } catch (error) {
    result.classList.add("error");
    setText(result, error.message);
  } finally {
    button.disabled = false;
  }
}

// --- start -------------------------------------------------------------------------------

function start() {
  $("submit-form").addEventListener("submit", submitJob);
  $("model-type").addEventListener("change", applyPreset);
  $("show-idle").addEventListener("change", (e) => {
    state.showIdle = e.target.checked;
    renderQueues();
  });
  $("events-close").addEventListener("click", closeEvents);
  applyPreset();
  renderJobs();
  renderWorkers();
  setInterval(tickHeartbeats, 1000);
  connect();
}

document.addEventListener("DOMContentLoaded", start);
