// The admin page: reads /admin/state every second with the admin token and renders its tables.
// The token lives in sessionStorage (this tab only) and travels as a Bearer header, never in a
// URL. Everything is written with textContent: resource ids and messages are never parsed as HTML.

const TOKEN_KEY = "layers-proxy-admin-token";
const REFRESH_MS = 1000;

const $ = (id) => document.getElementById(id);
const number = new Intl.NumberFormat("en");
let timer = null;
let generation = 0; // bumped on every connect/forget, so a late answer of an old token is dropped
let lastReplica = null;

function setState(state, message) {
  document.body.dataset.state = state;
  $("status").textContent = message;
}

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return ""; // storage disabled: the page still works until it is reloaded
  }
}

function storeToken(value) {
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // nothing to do: the token is then kept in memory only
  }
}

let memoryToken = "";

function currentToken() {
  return storedToken() || memoryToken;
}

function seconds(ms) {
  if (ms === null || ms === undefined) return "—";
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${number.format(Math.round(ms / 1000))} s`;
}

function percent(ratio) {
  return ratio === null || ratio === undefined ? "—" : `${(ratio * 100).toFixed(1)} %`;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString("en-GB", { hour12: false });
}

function cell(tag, text, className) {
  const element = document.createElement(tag);
  element.textContent = text;
  if (className) element.className = className;
  return element;
}

function row(cells) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  return tr;
}

function factRows(tableId, facts) {
  $(tableId).tBodies[0].replaceChildren(
    ...facts.map(([name, value, className]) =>
      row([Object.assign(cell("th", name), { scope: "row" }), cell("td", value, className)]),
    ),
  );
}

function renderReplica(replica, generatedMs) {
  $("replica-id").textContent = replica.id;
  $("replica-meta").textContent =
    `pid ${replica.pid} · up ${seconds(replica.uptime_s * 1000)} · v${replica.version}` +
    ` · auth ${replica.auth_mode} · updated ${clock(generatedMs)}`;
  const changed = $("replica-changed");
  if (lastReplica !== null && lastReplica !== replica.id) {
    changed.textContent =
      `Now showing replica ${replica.id} (was ${lastReplica}): ` +
      "the balancer sent this refresh to another replica.";
    changed.hidden = false;
  }
  lastReplica = replica.id;
}

function renderRedis(redis) {
  const state = redis.up ? "up" : `DOWN for ${seconds(redis.since_s * 1000)}`;
  factRows("redis-table", [
    ["Address", redis.embedded ? "embedded (memory://)" : redis.address],
    ["State", redis.checked ? state : `${state} (not checked yet)`, redis.up ? "" : "bad"],
    ["Last error", redis.last_error || "none"],
    ["Failed commands since start", number.format(redis.errors)],
  ]);
}

function cooldownText(ms) {
  if (ms === null) return "unknown (Redis did not answer)";
  return ms ? `${seconds(ms)} left` : "none";
}

function renderBudget(budget) {
  const held = Object.entries(budget.held_back)
    .map(([reason, count]) => `${count} by ${reason}`)
    .join(", ");
  factRows("budget-table", [
    ["Tier", `${number.format(budget.tier_per_min)} GETs/min`],
    [
      "Enforced cap (all replicas)",
      `${number.format(budget.cap_per_min)} GETs/min (${percent(budget.share)} of the tier)`,
    ],
    ["Used by this replica, last 60 s", number.format(budget.used_last_minute)],
    ["Used of the cap", percent(budget.used_ratio), budget.used_ratio >= 0.95 ? "bad" : ""],
    [
      "Cooldown (after a 429)",
      cooldownText(budget.cooldown_ms),
      budget.cooldown_ms ? "bad" : "",
    ],
    ["Polls held back by the gate", held || "none"],
  ]);
}

function renderTenants(tenants) {
  $("tenants-caption").textContent =
    `Window: the last ${seconds(tenants.window_s * 1000)} on this replica. ` +
    "Fair rate and share: the cluster's max-min allocation of the budget.";
  const rows = tenants.rows.map((t) =>
    row([
      // "-" is traffic no tenant is known for: open mode, or polls before the census names one.
      Object.assign(cell("th", t.id === "-" ? "- (no tenant)" : t.id), { scope: "row" }),
      cell("td", t.weight === null ? "—" : String(t.weight)),
      cell("td", number.format(t.recent_client_requests), "num"),
      cell("td", number.format(t.recent_upstream_requests), "num"),
      cell("td", percent(t.upstream_share), "num"),
      cell("td", `${number.format(t.fair_per_min)}/min`, "num"),
      cell("td", percent(t.fair_share), "num"),
      cell("td", number.format(t.resources), "num"),
      cell("td", `${number.format(t.client_requests)} / ${number.format(t.upstream_requests)}`, "num"),
    ]),
  );
  if (!rows.length) rows.push(row([Object.assign(cell("td", "No tenant traffic yet."), { colSpan: 9 })]));
  $("tenants-table").tBodies[0].replaceChildren(...rows);
}

function nextPoll(r) {
  if (!r.lease_here) return "elsewhere";
  if (r.polling_now) return "polling now";
  return r.next_poll_in_ms === null ? "—" : `in ${seconds(r.next_poll_in_ms)}`;
}

function upstreamText(r) {
  if (!r.upstream) return "not fetched yet";
  if (r.upstream.ok) return `ok (${r.upstream.status})`;
  return `error ${r.upstream.status} ${r.upstream.code}: ${r.upstream.message}`;
}

function renderResources(resources) {
  $("resources-caption").textContent =
    `${number.format(resources.total)} resources on this replica, ` +
    `${number.format(resources.leases_held)} polled here (lease held); ` +
    `showing ${number.format(resources.shown)}, soonest poll first.`;
  const rows = resources.rows.map((r) => {
    const tr = row([
      Object.assign(cell("th", `${r.kind} ${r.id}${r.org ? ` (${r.org})` : ""}`), { scope: "row" }),
      cell("td", r.lease_here ? `held here (fence ${r.fence})` : "held elsewhere"),
      cell("td", r.cadence_ms === null ? "— (terminal)" : seconds(r.cadence_ms), "num"),
      cell("td", nextPoll(r), "num"),
      cell("td", r.held_back ? `yes: ${r.held_back}` : "no", r.held_back ? "bad" : ""),
      cell("td", upstreamText(r), r.upstream && !r.upstream.ok ? "bad" : ""),
      cell("td", [r.status, r.stage].filter(Boolean).join(" · ") || "—"),
      cell("td", seconds(r.age_ms), "num"),
    ]);
    tr.dataset.key = r.key;
    tr.dataset.lease = r.lease_here ? "here" : "elsewhere";
    return tr;
  });
  if (!rows.length) rows.push(row([Object.assign(cell("td", "Nothing watched on this replica."), { colSpan: 8 })]));
  $("resources-table").tBodies[0].replaceChildren(...rows);
}

function render(state) {
  renderReplica(state.replica, state.generated_ms);
  renderRedis(state.redis);
  renderBudget(state.budget);
  renderTenants(state.tenants);
  renderResources(state.resources);
  setState("live", `Live: replica ${state.replica.id}, updated ${clock(state.generated_ms)}.`);
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body?.error?.message ? `: ${body.error.message}` : "";
  } catch {
    return "";
  }
}

function unauthorized() {
  stop();
  storeToken("");
  memoryToken = "";
  lastReplica = null;
  $("replica-id").textContent = "not connected";
  $("replica-meta").textContent = "";
  setState(
    "unauthorized",
    "Wrong admin token: /admin/state answered 401. Enter the token set as PROXY_ADMIN_TOKEN.",
  );
  $("token").focus();
}

async function refresh(mine) {
  let response;
  try {
    response = await fetch("/admin/state", {
      headers: { Authorization: `Bearer ${currentToken()}` },
      cache: "no-store",
      credentials: "omit",
    });
  } catch (error) {
    if (mine === generation) failed(`the proxy did not answer (${error.message})`);
    return;
  }
  if (mine !== generation) return;
  if (response.status === 401) {
    unauthorized();
    return;
  }
  if (!response.ok) {
    failed(`HTTP ${response.status}${await errorMessage(response)}`);
    return;
  }
  let state;
  try {
    state = await response.json();
  } catch (error) {
    failed(`unreadable answer (${error.message})`);
    return;
  }
  if (mine === generation) render(state);
}

function failed(why) {
  const when = new Date().toLocaleTimeString("en-GB", { hour12: false });
  setState("failed", `Feed failed at ${when}: ${why}. Retrying every second; the tables are stale.`);
}

function stop() {
  generation += 1;
  if (timer !== null) clearTimeout(timer);
  timer = null;
}

function start() {
  stop();
  const mine = generation;
  setState("connecting", "Connecting…");
  const loop = async () => {
    await refresh(mine);
    if (mine === generation) timer = setTimeout(loop, REFRESH_MS);
  };
  loop();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  $("token").value = "";
  if (!value) return;
  memoryToken = value;
  storeToken(value);
  lastReplica = null;
  $("replica-changed").hidden = true;
  start();
});

$("forget").addEventListener("click", () => {
  stop();
  storeToken("");
  memoryToken = "";
  lastReplica = null;
  $("replica-id").textContent = "not connected";
  $("replica-meta").textContent = "";
  setState("need-token", "Token forgotten. Enter the admin token to connect.");
});

if (currentToken()) start();
