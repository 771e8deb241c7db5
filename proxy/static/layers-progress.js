/**
 * <layers-progress container-id="cnt_…" token="…" base-url="…" label="…" transport="poll"
 *                  share="false">
 *
 * An accessible progress bar for one Layers container, fed by the Layers Progress Proxy.
 * The host element carries data-state = queued | running | completed | failed | canceled | error
 * (absent until the first snapshot) for styling and tests. Elements on one page share one
 * multiplexed stream, and tabs of one browser showing the same containers share that stream
 * (share="false" keeps it in this tab). For tokens that expire set the `getToken` property to an
 * async function returning a fresh token (give elements one function to keep them on one
 * stream). Style it with --layers-progress-accent, -done, -failed, -muted, -track.
 *
 * With the `external` attribute the element watches nothing: its owner feeds it with
 * `element.update(body)` (a progress body, or `{containerId, error}`) and `element.showError(err)`
 * — <layers-project-progress> draws its rows so. `live="off"` drops the title's live region (a
 * list of many bars announces through its own summary instead).
 */
import { LayersProgressError, watchProgress } from "./layers-progress-client.js";

export {
  LayersProgressError,
  watchJob,
  watchProgress,
  watchProject,
} from "./layers-progress-client.js";

const ACRONYMS = new Set(["api", "id", "pr", "sdk", "ui", "url"]);

/** "generating_sdk_patch" → "Generating SDK patch": stages are open strings, never a fixed list. */
export function humanise(stage) {
  const words = String(stage ?? "").split(/[_\-\s]+/).filter(Boolean);
  const text = words.map((w) => (ACRONYMS.has(w.toLowerCase()) ? w.toUpperCase() : w)).join(" ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function stateOf(status) {
  if (["queued", "completed", "failed", "canceled"].includes(status)) return status;
  return "running"; // processing, generating, and any in-progress word added later
}

function formatEta(seconds) {
  if (seconds <= 0) return "Almost done";
  if (seconds < 60) return `About ${seconds} s left`;
  const m = Math.floor(seconds / 60);
  const s = String(seconds % 60).padStart(2, "0");
  return `About ${m}:${s} min left`;
}

const STYLE = `
  :host {
    --_accent: var(--layers-progress-accent, #2f6fde);
    --_done: var(--layers-progress-done, #1f8a4c);
    --_failed: var(--layers-progress-failed, #c62f3a);
    --_muted: var(--layers-progress-muted, #6b7280);
    --_track: var(--layers-progress-track, #e6e8ee);
    display: block;
    font: inherit;
    color: inherit;
  }
  :host([hidden]) { display: none; }
  .caption { font-size: .8em; color: var(--_muted); margin-bottom: .25em;
    overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .top, .bottom { display: flex; justify-content: space-between; gap: .75em; align-items: baseline; }
  .title { font-weight: 600; }
  .pct, .bottom { font-variant-numeric: tabular-nums; }
  .bottom { font-size: .85em; color: var(--_muted); min-height: 1.3em; }
  .track { height: .5em; margin: .4em 0; border-radius: 999px; background: var(--_track); overflow: hidden; }
  .fill { height: 100%; width: 0; border-radius: inherit; background: var(--_accent);
    transition: width .6s ease-out; }
  .fill.jump { transition: none; }
  :host([data-state="running"]) .fill {
    background-image: linear-gradient(110deg, transparent 35%, rgb(255 255 255 / .35) 50%, transparent 65%);
    background-size: 200% 100%; animation: shimmer 1.6s linear infinite; }
  :host([data-state="queued"]) .fill { background: var(--_muted); }
  :host([data-state="completed"]) .fill { background: var(--_done); }
  :host([data-state="failed"]) .fill, :host([data-state="error"]) .fill { background: var(--_failed); }
  :host([data-state="canceled"]) .fill { background: var(--_muted); }
  :host([data-state="failed"]) .title, :host([data-state="error"]) .title { color: var(--_failed); }
  :host([data-state="completed"]) .title { color: var(--_done); }
  .problem { margin: .35em 0 0; font-size: .85em; color: var(--_failed); }
  .problem code { font-weight: 600; }
  @keyframes shimmer { from { background-position: 100% 0; } to { background-position: -100% 0; } }
  @media (prefers-reduced-motion: reduce) {
    .fill { transition: none; }
    :host([data-state="running"]) .fill { animation: none; background-image: none; }
  }
  @media (prefers-color-scheme: dark) {
    :host { --_track: var(--layers-progress-track, #2a2f3a); --_muted: var(--layers-progress-muted, #9aa3b2);
      --_accent: var(--layers-progress-accent, #5b92f0); --_done: var(--layers-progress-done, #3fb872);
      --_failed: var(--layers-progress-failed, #f06b73); }
  }
`;

const TEMPLATE = `
  <style>${STYLE}</style>
  <div class="caption" id="caption" part="caption" hidden></div>
  <div class="top">
    <span class="title" id="title" part="title" role="status">Connecting…</span>
    <span class="pct" part="percent" aria-hidden="true"></span>
  </div>
  <div class="track" part="track" role="progressbar" aria-labelledby="caption title"
       aria-valuemin="0" aria-valuemax="100" aria-valuenow="0" aria-busy="true">
    <div class="fill" part="fill"></div>
  </div>
  <div class="bottom"><span class="detail" part="detail"></span><span class="eta" part="eta" hidden></span></div>
  <p class="problem" part="problem" hidden></p>
`;

export class LayersProgressElement extends HTMLElement {
  static observedAttributes = [
    "container-id", "token", "base-url", "transport", "label", "share", "external", "live",
  ];

  #ui;
  #getToken = null;
  #watch = null;
  #restartQueued = false;
  #etaEnd = null;
  #etaTimer = null;
  /** The latest snapshot (the proxy's JSON body), or null. */
  snapshot = null;

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.innerHTML = TEMPLATE;
    const $ = (selector) => root.querySelector(selector);
    this.#ui = {
      caption: $(".caption"), title: $(".title"), pct: $(".pct"), bar: $(".track"),
      fill: $(".fill"), detail: $(".detail"), eta: $(".eta"), problem: $(".problem"),
    };
    // A getToken assigned before this module defined the element sits on the instance: adopt it.
    if (Object.hasOwn(this, "getToken")) {
      const fn = this.getToken;
      delete this.getToken;
      this.#getToken = typeof fn === "function" ? fn : null;
    }
  }

  /** An async function returning a fresh capability token (refreshed before each expires). */
  get getToken() {
    return this.#getToken;
  }

  set getToken(fn) {
    this.#getToken = typeof fn === "function" ? fn : null;
    if (this.isConnected && !this.#external()) this.#restart();
  }

  connectedCallback() {
    // A fed element keeps what it shows when its owner moves it (a list reordering its rows).
    if (this.#external()) this.#resumeEta();
    else this.#restart();
  }

  disconnectedCallback() {
    if (this.#external()) this.#pauseEta();
    else this.#stop();
  }

  attributeChangedCallback(name) {
    if (name === "label") this.#showCaption();
    else if (name === "live") this.#showLive();
    else if (this.#external() && name !== "external") return; // nothing to watch
    else if (this.isConnected) this.#restart();
  }

  /** Show ``body`` (a progress body, or `{containerId, error}`): for `external` elements. */
  update(body) {
    if (!body || typeof body !== "object") return;
    if (body.error && !body.status) {
      const e = body.error;
      this.snapshot = body;
      this.#renderError(new LayersProgressError(e.message ?? "Error", { ...e, terminal: true }));
    } else {
      this.#render(body);
    }
  }

  /** Show ``err`` (a LayersProgressError; a non-terminal one only notes the trouble). */
  showError(err) {
    this.#renderError(err);
  }

  #external() {
    return this.hasAttribute("external");
  }

  #showLive() {
    const title = this.#ui.title;
    if (this.getAttribute("live") === "off") title.removeAttribute("role");
    else title.setAttribute("role", "status");
  }

  #restart() {
    // Attributes arrive one by one (parsing, upgrades); start once, after the last of them.
    if (this.#restartQueued) return;
    this.#restartQueued = true;
    queueMicrotask(() => {
      this.#restartQueued = false;
      this.#stop();
      this.#reset();
      const id = this.getAttribute("container-id");
      if (!this.isConnected || !id || this.#external()) return;
      this.#watch = watchProgress(id, {
        token: this.getAttribute("token") || undefined,
        getToken: this.#getToken ?? undefined,
        share: this.getAttribute("share") !== "false",
        baseUrl: this.getAttribute("base-url") || location.origin,
        transport: this.getAttribute("transport") || "auto",
        shared: true,
        onUpdate: (body) => this.#render(body),
        onError: (err) => this.#renderError(err),
      });
    });
  }

  #stop() {
    this.#watch?.close();
    this.#watch = null;
    this.#setEta(null);
  }

  #reset() {
    this.snapshot = null;
    delete this.dataset.state;
    delete this.dataset.stage;
    const ui = this.#ui;
    ui.title.textContent = "Connecting…";
    ui.pct.textContent = ui.detail.textContent = "";
    ui.fill.style.width = "0%";
    ui.bar.setAttribute("aria-busy", "true");
    ui.bar.setAttribute("aria-valuenow", "0");
    ui.bar.removeAttribute("aria-valuetext");
    this.#showProblem(null);
    this.#showCaption();
  }

  #showCaption() {
    const label = this.getAttribute("label");
    this.#ui.caption.textContent = label ?? "";
    this.#ui.caption.hidden = !label;
  }

  #render(body) {
    this.snapshot = body;
    const ui = this.#ui;
    const state = stateOf(body.status);
    const stage = humanise(body.stage);
    const fraction = Math.min(1, Math.max(0, Number(body.stageProgress) || 0));
    const pct = state === "completed" ? 100 : Math.round(fraction * 100);
    const started = body.stage && body.stage !== "queued";
    const [title, detail] = {
      queued: ["Queued", "Waiting to start"],
      running: [stage || "Working", "In progress"],
      completed: ["Completed", "Done"],
      failed: ["Failed", started ? `Stopped during ${stage}` : "Stopped before starting"],
      canceled: ["Canceled", started ? `Stopped after ${stage}` : "Stopped before starting"],
    }[state];
    // Stage progress restarts at 0 with every stage: jump there instead of sliding backwards.
    ui.fill.classList.toggle("jump", (body.stage ?? "") !== (this.dataset.stage ?? ""));
    this.dataset.state = state;
    this.dataset.stage = body.stage ?? "";
    if (ui.title.textContent !== title) ui.title.textContent = title; // a live region
    ui.pct.textContent = state === "queued" ? "" : `${pct}%`;
    ui.detail.textContent = detail;
    ui.fill.style.width = `${pct}%`;
    const error = state === "failed" ? body.lastError : null;
    this.#showProblem(error);
    this.#setEta(state === "running" || state === "queued" ? body.etaSeconds : null);
    const eta = this.#ui.eta.hidden ? "" : this.#ui.eta.textContent.toLowerCase();
    const value = state === "running" ? `${pct}% of this stage` : detail || title;
    this.#setValue(pct, [value, error && `${error.code}: ${error.message}`, eta]);
  }

  #renderError(err) {
    if (!err.terminal) {
      if (this.snapshot) this.#ui.detail.textContent = "Connection trouble, retrying…";
      return;
    }
    this.dataset.state = "error";
    this.#setEta(null);
    const notFound = err.status === 404 || err.code === "NOT_FOUND";
    const expired = String(err.code ?? "").startsWith("TOKEN_");
    const refused = err.status === 401 || err.code === "UNAUTHENTICATED";
    this.#ui.title.textContent = notFound
      ? "Not found"
      : expired
        ? "Access expired"
        : refused
          ? "Not authorized"
          : "Unavailable";
    this.#ui.detail.textContent = "";
    this.#showProblem(err);
    this.#setValue(Number(this.#ui.bar.getAttribute("aria-valuenow")), [
      this.#ui.title.textContent,
      `${err.code}: ${err.message}`,
    ]);
  }

  #showProblem(error) {
    this.#ui.problem.hidden = !error;
    if (error) this.#ui.problem.replaceChildren(codeElement(error.code), ` ${error.message ?? ""}`);
  }

  #setValue(pct, texts) {
    const bar = this.#ui.bar;
    bar.removeAttribute("aria-busy");
    bar.setAttribute("aria-valuenow", String(pct));
    bar.setAttribute("aria-valuetext", texts.filter(Boolean).join(", "));
  }

  #setEta(seconds) {
    this.#etaEnd = typeof seconds === "number" ? Date.now() + seconds * 1000 : null;
    this.#ui.eta.hidden = this.#etaEnd === null;
    this.#resumeEta();
  }

  #pauseEta() {
    clearInterval(this.#etaTimer);
    this.#etaTimer = null;
  }

  #resumeEta() {
    this.#pauseEta();
    if (this.#etaEnd === null) return;
    this.#tickEta();
    this.#etaTimer = setInterval(() => this.#tickEta(), 1000);
  }

  #tickEta() {
    const left = Math.max(0, Math.round((this.#etaEnd - Date.now()) / 1000));
    this.#ui.eta.textContent = formatEta(left);
  }
}

function codeElement(text) {
  const code = document.createElement("code");
  code.textContent = text ?? "";
  return code;
}

if (!customElements.get("layers-progress")) {
  customElements.define("layers-progress", LayersProgressElement);
}
