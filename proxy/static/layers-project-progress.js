/**
 * <layers-project-progress project-id="prj_…" label="…" token="…" base-url="…" transport="poll"
 *                          share="false">
 *
 * Every container of one Layers project, live: one <layers-progress> row per container (its bar,
 * stage label and state), fed by watchProject() (the project's stream, or its poll). A row is
 * added when a container appears and kept after it ends; rows in flight come first, in the order
 * they appeared, then ended ones, the latest to end first. The list is labelled with `label`
 * (default "Project prj_…"); a polite status line sums the rows up ("2 running · 1 completed").
 *
 * For tests and styling: the host has data-state = connecting | live | error and data-count
 * (rows); each row is `<li data-container-id="cnt_…" data-state="…" data-status="…">` with the
 * states of <layers-progress> (queued | running | completed | failed | canceled | error).
 * `element.items` is the latest list watchProject reported. Parts: name, summary, list, row,
 * empty, problem (e.g. `::part(list) { grid-template-columns: repeat(3, 1fr) }`). For tokens
 * that expire set the `getToken` property (the token must name the project: claim `projects`).
 */
import { watchProject } from "./layers-progress-client.js";
import "./layers-progress.js";

export { LayersProgressError, watchProject } from "./layers-progress-client.js";

const STATES = ["running", "queued", "completed", "failed", "canceled", "error"];
const STATE_WORDS = {
  running: "running",
  queued: "queued",
  completed: "completed",
  failed: "failed",
  canceled: "canceled",
  error: "unavailable",
};

const STYLE = `
  :host {
    --_muted: var(--layers-progress-muted, #6b7280);
    --_failed: var(--layers-progress-failed, #c62f3a);
    --_line: var(--layers-project-line, #e6e8ee);
    display: block;
    font: inherit;
    color: inherit;
  }
  :host([hidden]) { display: none; }
  .head { display: flex; justify-content: space-between; align-items: baseline; gap: .75em;
    flex-wrap: wrap; margin-bottom: .6em; }
  .name { font-weight: 600; overflow-wrap: anywhere; }
  .summary { font-size: .85em; color: var(--_muted); font-variant-numeric: tabular-nums; }
  .rows { list-style: none; margin: 0; padding: 0; display: grid; gap: .75em; }
  .rows li { padding-bottom: .75em; border-bottom: 1px solid var(--_line); }
  .rows li:last-child { border-bottom: 0; padding-bottom: 0; }
  .empty { margin: 0; font-size: .9em; color: var(--_muted); }
  .problem { margin: .35em 0 0; font-size: .85em; color: var(--_failed); }
  .problem code { font-weight: 600; }
  @media (prefers-color-scheme: dark) {
    :host { --_muted: var(--layers-progress-muted, #9aa3b2);
      --_line: var(--layers-project-line, #2a2f3a);
      --_failed: var(--layers-progress-failed, #f06b73); }
  }
`;

const TEMPLATE = `
  <style>${STYLE}</style>
  <div class="head">
    <span class="name" id="name" part="name"></span>
    <span class="summary" part="summary" role="status">Connecting…</span>
  </div>
  <ul class="rows" part="list" role="list" aria-labelledby="name"></ul>
  <p class="empty" part="empty" hidden>No containers yet</p>
  <p class="problem" part="problem" hidden></p>
`;

export class LayersProjectProgressElement extends HTMLElement {
  static observedAttributes = ["project-id", "token", "base-url", "transport", "share", "label"];

  #ui;
  #getToken = null;
  #watch = null;
  #restartQueued = false;
  #rows = new Map(); // containerId → { item, bar }
  /** The latest list from watchProject (progress bodies, in-flight first), or []. */
  items = [];

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.innerHTML = TEMPLATE;
    const $ = (selector) => root.querySelector(selector);
    this.#ui = {
      name: $(".name"), summary: $(".summary"), list: $(".rows"), empty: $(".empty"),
      problem: $(".problem"),
    };
    // A getToken assigned before this module defined the element sits on the instance: adopt it.
    if (Object.hasOwn(this, "getToken")) {
      const fn = this.getToken;
      delete this.getToken;
      this.#getToken = typeof fn === "function" ? fn : null;
    }
  }

  /** An async function returning a fresh capability token naming the project. */
  get getToken() {
    return this.#getToken;
  }

  set getToken(fn) {
    this.#getToken = typeof fn === "function" ? fn : null;
    if (this.isConnected) this.#restart();
  }

  connectedCallback() {
    this.#restart();
  }

  disconnectedCallback() {
    this.#stop();
  }

  attributeChangedCallback(name) {
    if (name === "label") this.#showName();
    else if (this.isConnected) this.#restart();
  }

  #restart() {
    // Attributes arrive one by one (parsing, upgrades); start once, after the last of them.
    if (this.#restartQueued) return;
    this.#restartQueued = true;
    queueMicrotask(() => {
      this.#restartQueued = false;
      this.#stop();
      this.#reset();
      const id = this.getAttribute("project-id");
      if (!this.isConnected || !id) return;
      this.dataset.state = "connecting";
      this.#watch = watchProject(id, {
        token: this.getAttribute("token") || undefined,
        getToken: this.#getToken ?? undefined,
        share: this.getAttribute("share") !== "false",
        baseUrl: this.getAttribute("base-url") || location.origin,
        transport: this.getAttribute("transport") || "auto",
        onChange: (items) => this.#render(items),
        onError: (err) => this.#renderError(err),
      });
    });
  }

  #stop() {
    this.#watch?.close();
    this.#watch = null;
  }

  #reset() {
    this.items = [];
    this.#rows.clear();
    this.#ui.list.replaceChildren();
    this.#ui.empty.hidden = true;
    this.#ui.summary.textContent = "Connecting…";
    this.#showProblem(null);
    delete this.dataset.state;
    this.dataset.count = "0";
    this.#showName();
  }

  #showName() {
    const id = this.getAttribute("project-id") ?? "";
    this.#ui.name.textContent = this.getAttribute("label") || `Project ${id}`;
  }

  #render(items) {
    this.items = items;
    this.dataset.state = "live";
    this.#showProblem(null);
    const list = this.#ui.list;
    const wanted = [];
    for (const body of items) {
      let row = this.#rows.get(body.containerId);
      if (!row) {
        row = this.#newRow(body.containerId);
        this.#rows.set(body.containerId, row);
      }
      row.bar.update(body);
      row.item.dataset.state = row.bar.dataset.state ?? "";
      row.item.dataset.status = body.status ?? "";
      wanted.push(row.item);
    }
    // Rows the watch no longer lists stay (it keeps every container until closed), at the end.
    for (const row of this.#rows.values()) if (!wanted.includes(row.item)) wanted.push(row.item);
    // Move only what is out of place: a row that moves keeps its bar (and its ETA).
    wanted.forEach((item, n) => {
      if (list.children[n] !== item) list.insertBefore(item, list.children[n] ?? null);
    });
    this.dataset.count = String(wanted.length);
    this.#ui.empty.hidden = wanted.length > 0;
    const summary = this.#summary(wanted);
    if (this.#ui.summary.textContent !== summary) this.#ui.summary.textContent = summary;
  }

  #newRow(containerId) {
    const item = document.createElement("li");
    item.dataset.containerId = containerId;
    item.setAttribute("part", "row");
    const bar = document.createElement("layers-progress");
    bar.setAttribute("external", "");
    bar.setAttribute("live", "off"); // the summary line is this list's live region
    bar.setAttribute("container-id", containerId);
    bar.setAttribute("label", containerId);
    item.append(bar);
    return { item, bar };
  }

  #summary(rows) {
    if (rows.length === 0) return "No containers";
    const counts = new Map();
    for (const { dataset } of rows) counts.set(dataset.state, (counts.get(dataset.state) ?? 0) + 1);
    return STATES.filter((s) => counts.has(s))
      .map((s) => `${counts.get(s)} ${STATE_WORDS[s]}`)
      .join(" · ");
  }

  #renderError(err) {
    if (!err.terminal) {
      if (this.#rows.size) this.#ui.summary.textContent = "Connection trouble, retrying…";
      return;
    }
    this.dataset.state = "error";
    const notFound = err.status === 404 || err.code === "NOT_FOUND";
    const expired = String(err.code ?? "").startsWith("TOKEN_");
    const refused = err.status === 401 || err.code === "UNAUTHENTICATED";
    this.#ui.summary.textContent = notFound
      ? "Not found"
      : expired
        ? "Access expired"
        : refused
          ? "Not authorized"
          : "Unavailable";
    this.#showProblem(err);
  }

  #showProblem(error) {
    const problem = this.#ui.problem;
    problem.hidden = !error;
    if (!error) return;
    const code = document.createElement("code");
    code.textContent = error.code ?? "";
    problem.replaceChildren(code, ` ${error.message ?? ""}`);
  }
}

if (!customElements.get("layers-project-progress")) {
  customElements.define("layers-project-progress", LayersProjectProgressElement);
}
