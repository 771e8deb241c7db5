// The demo page: a grid of <layers-progress> bars and the proxy's counters, refreshed every
// second, and the demo project's containers in a <layers-project-progress> list.
import { watchProgress } from "/static/layers-progress.js";
import "/static/layers-project-progress.js";

const KINDS = {
  content_generate: "Video",
  ingest_github: "GitHub ingest",
  project_ingest_website: "Website ingest",
};
const POLLS_PER_MIN = 30; // one GET every 2 s: what each viewer would do without the proxy

const $ = (id) => document.getElementById(id);
const number = new Intl.NumberFormat("en");
let batch = null;
let containers = [];
let extraViewers = [];
let history = []; // [time ms, upstream requests] over the last minute (at least 10 s)

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function loadBatch() {
  const data = await getJson("/demo/api/containers");
  batch = data.batch;
  containers = data.containers;
  $("batch").textContent = `· batch ${batch}`;
  $("grid").replaceChildren(
    ...containers.map(({ containerId, kind }) => {
      const item = document.createElement("li");
      const bar = document.createElement("layers-progress");
      bar.setAttribute("label", `${KINDS[kind] ?? kind} · ${containerId.slice(0, 12)}…`);
      bar.setAttribute("container-id", containerId);
      item.append(bar);
      return item;
    }),
  );
  startExtraViewers();
}

function startExtraViewers() {
  for (const viewer of extraViewers) viewer.close();
  const perContainer = Number($("viewers").value) - 1;
  extraViewers = containers.flatMap(({ containerId }) =>
    Array.from({ length: perContainer }, () => watchProgress(containerId, { transport: "poll" })),
  );
}

function upstreamRatePerMin(now, upstream) {
  history.push([now, upstream]);
  history = history.filter(([t]) => now - t <= 60000);
  const [t0, u0] = history[0];
  return now - t0 < 10000 ? null : ((upstream - u0) * 60000) / (now - t0);
}

function show(stats) {
  const { proxy, upstream } = stats;
  $("ratio").textContent = stats.ratio === null ? "–" : stats.ratio.toFixed(1);
  $("deliveries").textContent = number.format(stats.deliveries);
  $("polls").textContent = number.format(proxy.client_requests);
  $("not-modified").textContent = number.format(proxy.not_modified);
  $("not-modified-note").hidden = proxy.not_modified === 0;
  $("events").textContent = number.format(proxy.stream_events);
  $("upstream").textContent = number.format(upstream.requests);
  const rate = upstreamRatePerMin(Date.now(), upstream.requests);
  $("rate").textContent = rate === null ? "…" : number.format(Math.round(rate));
  $("budget").textContent = number.format(stats.rate_per_min);
  $("streams").textContent = number.format(proxy.streams_open);
  $("direct").textContent = number.format(Number($("viewers").value) * stats.active * POLLS_PER_MIN);
}

async function refresh() {
  try {
    const stats = await getJson("/demo/api/stats");
    if (stats.batch !== batch) await loadBatch();
    show(stats);
  } catch (err) {
    console.warn("demo: stats unavailable", err);
  } finally {
    setTimeout(refresh, 1000);
  }
}

async function showProject() {
  try {
    const { projectId } = await getJson("/demo/api/project");
    const view = $("project-view");
    view.setAttribute("label", `Demo project ${projectId}`);
    view.setAttribute("project-id", projectId);
  } catch (err) {
    console.warn("demo: project unavailable", err);
    setTimeout(showProject, 2000);
  }
}

async function startProjectRun() {
  const button = $("project-run");
  button.disabled = true;
  try {
    const response = await fetch("/demo/api/project/runs", { method: "POST", cache: "no-store" });
    const data = await response.json();
    $("project-note").textContent = response.ok
      ? `Started ${data.started.length} containers; they appear within a few seconds.`
      : data.error?.message ?? `HTTP ${response.status}`;
  } catch (err) {
    $("project-note").textContent = `Could not start a run: ${err.message}`;
  } finally {
    button.disabled = false;
  }
}

$("viewers").addEventListener("change", startExtraViewers);
$("project-run").addEventListener("click", startProjectRun);
showProject();
refresh();
