/**
 * Layers progress in the browser, through the Layers Progress Proxy. No dependencies, no build.
 *
 *   import { watchProgress } from "/static/layers-progress.js";
 *   const watch = watchProgress("cnt_…", { onUpdate, onDone, onError, token });
 *   watch.close();
 *
 * or declaratively: <layers-progress container-id="cnt_…" token="…"></layers-progress>
 *
 * Transport: server-sent events (EventSource); polling with fetch + If-None-Match at the
 * interval the proxy advertises (X-Poll-Interval-Ms) when EventSource is missing, when
 * `transport: "poll"` is asked for, or when the stream keeps failing before its first event.
 */

const TERMINAL = new Set(["completed", "failed", "canceled"]);
const DEFAULT_INTERVAL_MS = 2000;
const MAX_BACKOFF_MS = 30000;
const STREAM_ATTEMPTS = 3; // failed connects, before any event, that make us poll instead
const FIRST_EVENT_TIMEOUT_MS = 20000; // a buffering middlebox shows as "open but silent"
const MAX_SHARED_IDS = 100; // the proxy's limit per multiplexed stream

const UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
const ULID = "[0-7][0-9a-hjkmnp-tv-z]{25}";
const CONTAINER_ID = new RegExp(`^(?:cnt_)?(${UUID})$|^cnt_(${ULID})$`, "i");
const JOB_ID = new RegExp(`^job_(${ULID})$`, "i");

const KINDS = {
  progress: {
    event: "progress",
    idField: "containerId",
    param: "containers",
    poll: (id) => `/v1/content/${encodeURIComponent(id)}/progress`,
    stream: (id) => `/v1/content/${encodeURIComponent(id)}/progress/stream`,
    canonical(id) {
      const m = CONTAINER_ID.exec(id);
      return m && (m[1] ? `cnt_${m[1].toLowerCase()}` : `cnt_${m[2].toUpperCase()}`);
    },
  },
  job: {
    event: "job",
    idField: "jobId",
    param: "jobs",
    poll: (id) => `/v1/jobs/${encodeURIComponent(id)}`,
    stream: (id) => `/v1/jobs/${encodeURIComponent(id)}/stream`,
    canonical(id) {
      const m = JOB_ID.exec(id);
      return m && `job_${m[1].toUpperCase()}`;
    },
  },
};

/** An error from the proxy (its envelope's code and message) or from the network. */
export class LayersProgressError extends Error {
  constructor(message, options = {}) {
    const { status = 0, code = "NETWORK", requestId = null, details = null, terminal } = options;
    super(message);
    this.name = "LayersProgressError";
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.details = details;
    // A 4xx other than 408/429 will not fix itself by retrying: the watch stops.
    this.terminal = terminal ?? (status >= 400 && status < 500 && status !== 408 && status !== 429);
  }
}

/**
 * Watch a container's progress. Options: onUpdate(body), onDone(body), onError(err), token,
 * baseUrl (default: this page's origin), transport ("auto" | "poll"), shared (multiplex with
 * other shared watches on one connection: browsers allow only 6 per host over HTTP/1.1).
 */
export function watchProgress(containerId, options = {}) {
  return watch("progress", containerId, options);
}

/** Watch a job (`GET /v1/jobs/{id}`); same options and callbacks as watchProgress. */
export function watchJob(jobId, options = {}) {
  return watch("job", jobId, options);
}

function watch(kind, id, options) {
  const o = { baseUrl: location.origin, transport: "auto", ...options };
  let over = false;
  let lastText = null;
  let stop = () => {};
  const finish = () => {
    over = true;
    stop();
  };
  const handlers = {
    deliver(body) {
      const text = JSON.stringify(body);
      if (over || text === lastText) return; // reconnects resend the current snapshot
      lastText = text;
      o.onUpdate?.(body);
      if (TERMINAL.has(body.status)) {
        finish();
        o.onDone?.(body);
      }
    },
    fail(err) {
      if (over) return;
      if (err.terminal) finish();
      o.onError?.(err);
    },
    fallback() {
      if (over) return;
      stop();
      stop = startPolling(kind, id, o, handlers);
    },
  };
  if (o.transport === "poll" || typeof EventSource === "undefined") handlers.fallback();
  else stop = (o.shared && sharedStream(o).add(kind, id, handlers)) || startStream(kind, id, o, handlers);
  return { close: finish };
}

function url(o, path, params = {}) {
  // Keep a path prefix in baseUrl ("https://example.com/progress") when there is one.
  const u = new URL(o.baseUrl.replace(/\/+$/, "") + path, location.href);
  for (const [name, value] of Object.entries(params)) {
    if (value?.length) u.searchParams.set(name, value); // arrays become "a,b,c"
  }
  return u.toString();
}

/** One EventSource; calls onGiveUp when it fails before its first event (or closes for good). */
function openEventSource(href, events, onEvent, onGiveUp) {
  const source = new EventSource(href);
  let seen = false;
  let failures = 0;
  const giveUp = () => {
    clearTimeout(silence);
    source.close();
    onGiveUp();
  };
  const silence = setTimeout(giveUp, FIRST_EVENT_TIMEOUT_MS);
  for (const name of events) {
    source.addEventListener(name, (event) => {
      if (event.data === undefined) return; // the connection's own "error", not a server event
      seen = true;
      clearTimeout(silence);
      onEvent(name, JSON.parse(event.data));
    });
  }
  source.onerror = () => {
    // CLOSED: a non-200 answer (e.g. 404) or 204; CONNECTING: the browser retries by itself.
    if (source.readyState === EventSource.CLOSED || (!seen && ++failures >= STREAM_ATTEMPTS)) {
      giveUp();
    }
  };
  return () => {
    clearTimeout(silence);
    source.close();
  };
}

function startStream(kind, id, o, handlers) {
  const href = url(o, KINDS[kind].stream(id), { access_token: o.token });
  return openEventSource(
    href,
    [KINDS[kind].event, "error"],
    (name, data) => (name === "error" ? handlers.fail(streamError(data)) : handlers.deliver(data)),
    // Polling surfaces the real reason (404, 401, ...) with its envelope, or just works.
    () => handlers.fallback(),
  );
}

/** An `event: error` names one resource the stream gave up on (e.g. not found): final. */
function streamError(data) {
  const e = data.error ?? {};
  return new LayersProgressError(e.message ?? "Stream error", { ...e, terminal: true });
}

function startPolling(kind, id, o, handlers) {
  const href = url(o, KINDS[kind].poll(id));
  const abort = new AbortController();
  let etag = null;
  let timer = null;
  let failures = 0;

  async function pollOnce() {
    const headers = { Accept: "application/json" };
    if (etag) headers["If-None-Match"] = etag;
    if (o.token) headers.Authorization = `Bearer ${o.token}`;
    // no-store: we keep the ETag ourselves, so the browser cache must not answer for the proxy.
    const response = await fetch(href, { headers, cache: "no-store", signal: abort.signal });
    if (response.status !== 200 && response.status !== 304) throw await envelopeError(response);
    failures = 0;
    if (response.status === 200) {
      etag = response.headers.get("ETag");
      handlers.deliver(await response.json());
    }
    return Number(response.headers.get("X-Poll-Interval-Ms")) || DEFAULT_INTERVAL_MS;
  }

  async function poll() {
    let delay;
    try {
      delay = await pollOnce();
    } catch (err) {
      if (abort.signal.aborted) return;
      const error =
        err instanceof LayersProgressError
          ? err
          : new LayersProgressError(`Network error: ${err.message}`);
      handlers.fail(error);
      if (error.terminal) return;
      delay = Math.max(error.retryAfterMs ?? 0, backoff(++failures));
    }
    if (!abort.signal.aborted) timer = setTimeout(poll, delay);
  }

  poll();
  return () => {
    abort.abort();
    clearTimeout(timer);
  };
}

function backoff(failures) {
  const ms = DEFAULT_INTERVAL_MS * 2 ** Math.min(failures, 5);
  return Math.min(MAX_BACKOFF_MS, ms) * (0.5 + Math.random() / 2);
}

async function envelopeError(response) {
  let e = {};
  try {
    e = (await response.json()).error ?? {};
  } catch {
    // not JSON: the HTTP status says it all
  }
  const error = new LayersProgressError(e.message ?? `HTTP ${response.status}`, {
    status: response.status,
    code: e.code ?? `HTTP_${response.status}`,
    requestId: e.requestId ?? response.headers.get("X-Request-Id"),
    details: e.details ?? null,
  });
  error.retryAfterMs = Number(response.headers.get("Retry-After")) * 1000 || 0;
  return error;
}

/* ---- Shared streams: every shared watch of one (baseUrl, token) on one /v1/stream ---- */

const sharedStreams = new Map();

function sharedStream(o) {
  const key = `${o.baseUrl}\n${o.token ?? ""}`;
  if (!sharedStreams.has(key)) sharedStreams.set(key, new SharedStream(o));
  return sharedStreams.get(key);
}

class SharedStream {
  constructor(o) {
    this.o = o;
    this.subs = new Map(); // "progress:cnt_…" → Set of handlers
    this.connected = new Set(); // the keys the open connection carries
    this.close = null;
    this.broken = false;
    this.pending = false;
  }

  /** Subscribe; returns the unsubscribe function, or null when the caller must go alone. */
  add(kind, id, handlers) {
    // The stream answers in canonical ids; an invalid one would fail the request for everybody.
    const canonical = KINDS[kind].canonical(id);
    const key = `${kind}:${canonical}`;
    if (!canonical || this.broken) return null;
    if (!this.subs.has(key) && this.subs.size >= MAX_SHARED_IDS) return null;
    if (!this.subs.has(key)) this.subs.set(key, new Set());
    this.subs.get(key).add(handlers);
    if (!this.pending) {
      // Elements created together (a list page) share one connect.
      this.pending = true;
      setTimeout(() => this.connect(), 0);
    }
    return () => this.remove(key, handlers);
  }

  remove(key, handlers) {
    const set = this.subs.get(key);
    set?.delete(handlers);
    if (set?.size === 0) this.subs.delete(key);
    if (this.subs.size === 0) this.disconnect();
  }

  connect() {
    this.pending = false;
    const keys = [...this.subs.keys()];
    if (this.close && keys.every((k) => this.connected.has(k))) return;
    this.disconnect();
    if (keys.length === 0) return;
    const params = { access_token: this.o.token };
    for (const [kind, { param }] of Object.entries(KINDS)) {
      const prefix = `${kind}:`;
      params[param] = keys.filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length));
    }
    this.connected = new Set(keys);
    this.close = openEventSource(
      url(this.o, "/v1/stream", params),
      ["progress", "job", "error"],
      (name, data) => this.dispatch(name, data),
      () => this.giveUp(),
    );
  }

  dispatch(name, data) {
    const kind = name === "error" ? (data.containerId ? "progress" : "job") : name;
    const set = this.subs.get(`${kind}:${data[KINDS[kind].idField]}`);
    for (const handlers of [...(set ?? [])]) {
      if (name === "error") handlers.fail(streamError(data));
      else handlers.deliver(data);
    }
  }

  giveUp() {
    this.close = null;
    this.broken = true; // later watches poll straight away
    for (const set of [...this.subs.values()]) for (const handlers of [...set]) handlers.fallback();
  }

  disconnect() {
    this.close?.();
    this.close = null;
    this.connected = new Set();
  }
}

