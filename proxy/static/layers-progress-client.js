/**
 * Layers progress in the browser, through the Layers Progress Proxy. No dependencies, no build.
 *
 *   import { watchProgress } from "/static/layers-progress.js";
 *   const watch = watchProgress("cnt_…", { onUpdate, onDone, onError, token, getToken });
 *   watch.close();
 *
 * or declaratively: <layers-progress container-id="cnt_…" token="…"></layers-progress>
 * (set `element.getToken = async () => "…"` for tokens that expire).
 *
 * A whole project, without container ids:
 *
 *   const watch = watchProject("prj_…", { onChange, onContainer, onError, token, getToken });
 *
 * onChange(items) gets the project's containers, in flight first (in the order they appeared),
 * then those that ended (latest first), each its latest progress body (`{containerId, error}`
 * when the proxy has only an error for it); onContainer({containerId, status}) fires when one
 * appears or ends. Ended containers stay in the list until the watch is closed. It streams
 * /v1/projects/{id}/stream (every connect starts with each member's `event: container`, then
 * its progress; reconnects pass the last event id, and the state is merged) and falls back to
 * polling /v1/projects/{id}/progress with If-None-Match; tokens (claim
 * `projects`) and tab sharing work as below. Declaratively:
 * <layers-project-progress project-id="prj_…"> (layers-project-progress.js).
 *
 * Transport: server-sent events (EventSource); polling with fetch + If-None-Match at the
 * interval the proxy advertises (X-Poll-Interval-Ms) when EventSource is missing, when
 * `transport: "poll"` is asked for, or when the stream keeps failing before its first event.
 *
 * Tokens: `token` is a fixed capability token; `getToken` is an async function returning a fresh
 * one (your backend mints it). With getToken the client reads the token's `exp` and asks for a
 * new token shortly before it runs out (a tenth of its lifetime or 30 s before, whichever is
 * less, at least 1 s), then reconnects the stream with the new token and the last event id
 * (`?lastEventId=`), so nothing is missed. A stream the proxy ends with TOKEN_EXPIRED, a refused
 * reconnect, or a poll answered 401 gets a fresh token too (polls retry once). A watch that has
 * a token or getToken never sends a request without one: when getToken keeps failing
 * (3 attempts) after the token ran out, the watch ends with a terminal LayersProgressError
 * (code TOKEN_REFRESH_FAILED). Streams carry the token as `?access_token=` (EventSource cannot
 * set headers); polls send `Authorization: Bearer`.
 *
 * One stream for all tabs: shared watches (`shared: true`, as the element uses) of one page go
 * over one multiplexed /v1/stream, and tabs of one browser that watch the same set of
 * resources with the same token claims share that one connection: the tab holding a Web Lock
 * (navigator.locks) named after a SHA-256 of (base URL, token claims without iat/exp, resource
 * set) opens the stream and relays every event over a BroadcastChannel of the same name; the
 * other tabs listen, and ask the leader for the latest state when they join. When the leader
 * tab closes, the lock passes to another tab, which resumes the stream from the last event id
 * it saw. With getToken only the leader refreshes the token. `share: false` keeps the stream in
 * this tab; without Web Locks, BroadcastChannel or crypto.subtle (e.g. an insecure origin)
 * every tab streams on its own. A project's watches share the same way, one stream per project
 * (the resource set is "project:<id>"; the leader starts again from the proxy's catch-up).
 */

const TERMINAL = new Set(["completed", "failed", "canceled"]);
const DEFAULT_INTERVAL_MS = 2000;
const MAX_BACKOFF_MS = 30000;
const STREAM_ATTEMPTS = 3; // failed connects, before any event, that make us poll instead
const FIRST_EVENT_TIMEOUT_MS = 20000; // a buffering middlebox shows as "open but silent"
const MAX_SHARED_IDS = 100; // the proxy's limit per multiplexed stream
const TOKEN_ATTEMPTS = 3; // failed getToken() calls in a row, once no token is good, end a watch
const TOKEN_RETRY_MS = 1000; // after a failed getToken(): wait this (times the failures) and retry
const REFRESH_LEAD_MAX_MS = 30000;
const REFRESH_MIN_MS = 1000;
// Stream errors that end the stream's authorization, not one resource: get a token, reconnect.
const TOKEN_ERRORS = new Set(["TOKEN_EXPIRED", "UNAUTHENTICATED"]);
const CHANNEL_PREFIX = "layers-progress:";
// A new leader waits for the old one's "bye" (its last events are in the channel before it) at
// most this long: a leader whose tab died says nothing. A tab that never heard a leader waits
// only the short grace (for a leader whose messages are still on their way).
const TAKEOVER_GRACE_MS = 500;
const FIRST_GRACE_MS = 50;

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
 * getToken (async () => fresh token), baseUrl (default: this page's origin), transport
 * ("auto" | "poll"), shared (multiplex with other shared watches on one connection: browsers
 * allow only 6 per host over HTTP/1.1), share (default true: shared watches also share that
 * connection with this browser's other tabs; false keeps it in this tab).
 */
export function watchProgress(containerId, options = {}) {
  return watch("progress", containerId, options);
}

/** Watch a job (`GET /v1/jobs/{id}`); same options and callbacks as watchProgress. */
export function watchJob(jobId, options = {}) {
  return watch("job", jobId, options);
}

function watch(kind, id, options) {
  const o = { baseUrl: location.origin, transport: "auto", share: true, ...options };
  o.tokens = tokenSource(o);
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
      stop = startPolling(url(o, KINDS[kind].poll(id)), o, handlers);
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

/* ---- Tokens: a fixed one, or getToken() refreshed before it expires ---- */

/** The claims of a JWT (its payload, base64url JSON), or null for anything else. */
function jwtClaims(token) {
  try {
    const part = String(token).split(".")[1] ?? "";
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" && !Array.isArray(claims) ? claims : null;
  } catch {
    return null;
  }
}

// One TokenSource per getToken function: every watch and stream of a page asks it, so a page of
// twenty elements makes one getToken() call per token lifetime, not twenty.
const tokenSources = new WeakMap();

function tokenSource(o) {
  if (typeof o.getToken !== "function") return new TokenSource(o.token, null);
  let source = tokenSources.get(o.getToken);
  if (!source) tokenSources.set(o.getToken, (source = new TokenSource(o.token, o.getToken)));
  return source;
}

class TokenSource {
  constructor(token, getToken) {
    this.getToken = getToken;
    this.required = Boolean(token || getToken); // then nothing goes out without a token
    this.failures = 0; // getToken() failures in a row
    this.inflight = null;
    this.set(token || null);
  }

  set(token) {
    const now = Date.now();
    this.value = token;
    this.rejected = false;
    this.claims = token ? jwtClaims(token) : null;
    const seconds = (value) => (typeof value === "number" && Number.isFinite(value) ? value : null);
    const exp = seconds(this.claims?.exp);
    const iat = seconds(this.claims?.iat);
    this.expiresAt = Infinity;
    this.refreshAt = Infinity;
    if (exp === null) return;
    const lifetime = iat !== null && exp > iat ? (exp - iat) * 1000 : null;
    if (lifetime === null) {
      this.expiresAt = exp * 1000;
    } else if (now - iat * 1000 >= lifetime) {
      // Expired before it arrived, by our clock: more likely our clock is ahead of the issuer's,
      // so count from receipt (the proxy answers 401 if it really has expired).
      this.expiresAt = now + lifetime;
    } else {
      // Count from receipt as well: a browser clock behind the issuer's would wait too long.
      this.expiresAt = Math.min(exp * 1000, now + lifetime);
    }
    const span = lifetime ?? Math.max(0, this.expiresAt - now);
    const lead = Math.max(REFRESH_MIN_MS, Math.min(span / 10, REFRESH_LEAD_MAX_MS));
    this.refreshAt = Math.max(now + REFRESH_MIN_MS, this.expiresAt - lead);
  }

  /** True while the current token may still be sent. */
  valid() {
    return Boolean(this.value) && !this.rejected && Date.now() < this.expiresAt;
  }

  /** The proxy refused ``token`` (401, TOKEN_EXPIRED): the next usable() fetches a new one. */
  reject(token) {
    if (token && token === this.value) this.rejected = true;
  }

  /**
   * A token to send now: a fresh one when the current one is due for refresh; the current one
   * when refreshing failed but it is still good (onSoftError hears of the failure). Throws a
   * LayersProgressError (terminal after TOKEN_ATTEMPTS failures) when there is none to send.
   */
  async usable(onSoftError) {
    if (!this.getToken) return this.value;
    if (this.valid() && Date.now() < this.refreshAt) return this.value;
    try {
      return await this.refresh();
    } catch (err) {
      if (!this.valid()) throw err;
      onSoftError?.(err);
      return this.value;
    }
  }

  /** Call getToken() (one call at a time, shared by every caller). */
  refresh() {
    if (!this.inflight) {
      const call = this.#fetch();
      const clear = () => {
        this.inflight = null;
      };
      call.then(clear, clear);
      this.inflight = call;
    }
    return this.inflight;
  }

  async #fetch() {
    try {
      const token = await this.getToken();
      if (typeof token !== "string" || !token) throw new Error("getToken() returned no token");
      this.set(token);
      this.failures = 0;
      return token;
    } catch (cause) {
      this.failures += 1;
      throw new LayersProgressError(`Could not get a token: ${cause?.message ?? cause}`, {
        code: "TOKEN_REFRESH_FAILED",
        terminal: this.failures >= TOKEN_ATTEMPTS,
      });
    }
  }
}

function noTokenError() {
  return new LayersProgressError("No token to send", { code: "TOKEN_MISSING", terminal: true });
}

/* ---- Streams ---- */

/**
 * One logical stream over successive EventSources. It reconnects with a fresh token and the last
 * event id before the token runs out, when the proxy ends it with TOKEN_EXPIRED, and once when a
 * connect is refused (a 401 looks like any other refusal to EventSource). Callbacks:
 * onEvent(name, data, lastId); onGiveUp() when streaming does not work here (poll instead);
 * onFatal(err) when no token can be had; onSoftError(err) for trouble it is riding out;
 * isDone() says every resource has ended (a resumed stream then answers 204).
 */
class TokenStream {
  constructor(options) {
    const { href, events, tokens, lastId = null, onEvent, onGiveUp, onFatal, onSoftError } = options;
    Object.assign(this, { href, events, tokens, lastId, onEvent, onGiveUp, onFatal, onSoftError });
    this.isDone = options.isDone ?? (() => false);
    // async () => true when the silence before the first event is the resource's, not a
    // middlebox's (an empty project has nothing to say); then we wait again instead of polling.
    this.explainSilence = options.explainSilence ?? null;
    this.onOpen = options.onOpen ?? null; // the proxy accepted a connect (200, event stream)
    this.source = null;
    this.token = null;
    this.closed = false;
    // Any event on any connection (a resumed group stream has had some): the stream works here.
    this.everSeen = lastId !== null;
    this.failures = 0; // connects that failed before the first event
    this.refusals = 0; // refused connects since the last event, each retried with a new token
    this.timer = null;
    this.silence = null;
    this.turn = 0;
    this.#connect();
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.#drop();
  }

  #drop() {
    clearTimeout(this.silence);
    this.source?.close();
    this.source = null;
  }

  async #connect() {
    clearTimeout(this.timer);
    if (this.isDone()) return this.#drop(); // everything ended: a resumed stream would say 204
    const turn = ++this.turn; // the latest call wins when a timer and an event both reconnect
    let token;
    try {
      token = await this.tokens.usable((err) => this.onSoftError?.(err));
    } catch (err) {
      if (this.closed || turn !== this.turn) return;
      this.#drop(); // no good token: do not keep a stream open on an expired one
      if (err.terminal) return this.#fatal(err);
      this.onSoftError?.(err);
      this.timer = setTimeout(() => this.#connect(), TOKEN_RETRY_MS * this.tokens.failures);
      return;
    }
    if (this.closed || turn !== this.turn) return;
    // A refresh that failed while the token is still good: keep this stream, try again soon.
    if (this.source && token === this.token) return this.#schedule();
    this.#drop();
    if (this.tokens.required && !token) return this.#fatal(noTokenError());
    this.token = token;
    this.#open(token);
    this.#schedule();
  }

  #schedule() {
    clearTimeout(this.timer);
    if (!this.tokens.getToken || this.tokens.refreshAt === Infinity) return;
    const now = Date.now();
    let at = this.tokens.refreshAt;
    // Past the refresh time means the last refresh failed: try again soon, at expiry at the latest.
    if (at <= now) {
      at = Math.min(now + TOKEN_RETRY_MS * Math.max(1, this.tokens.failures), this.tokens.expiresAt);
    }
    this.timer = setTimeout(() => this.#connect(), Math.max(0, at - now));
  }

  #open(token) {
    const source = new EventSource(this.href({ access_token: token, lastEventId: this.lastId }));
    this.source = source;
    if (!this.everSeen) {
      clearTimeout(this.silence);
      this.silence = setTimeout(() => this.#silent(source), FIRST_EVENT_TIMEOUT_MS);
    }
    for (const name of this.events) {
      source.addEventListener(name, (event) => {
        // No data: the connection's own "error", not a server event.
        if (event.data === undefined || source !== this.source) return;
        this.everSeen = true;
        this.refusals = 0;
        clearTimeout(this.silence);
        if (event.lastEventId) this.lastId = event.lastEventId;
        const data = JSON.parse(event.data);
        if (name === "error" && TOKEN_ERRORS.has(data?.error?.code)) {
          this.#tokenEnded(token, data);
          return;
        }
        this.onEvent(name, data, this.lastId);
      });
    }
    source.onopen = () => {
      if (source === this.source) this.onOpen?.();
    };
    source.onerror = () => {
      if (source !== this.source) return;
      // CLOSED: a non-200 answer (401, 404, 429, a middlebox) or 204; CONNECTING: the browser
      // retries by itself, with Last-Event-ID.
      if (source.readyState === EventSource.CLOSED) this.#refused(token);
      else if (!this.everSeen && ++this.failures >= STREAM_ATTEMPTS) this.#giveUp();
    };
  }

  /** The proxy ended the stream because the token expired (or is no longer accepted). */
  #tokenEnded(token, data) {
    this.#drop(); // before the browser reconnects with the dead token
    this.tokens.reject(token);
    if (!this.tokens.getToken) return this.#fatal(streamError(data));
    this.#connect();
  }

  #refused(token) {
    this.#drop();
    if (this.isDone()) return;
    if (this.tokens.getToken && this.refusals++ < 1) {
      this.tokens.reject(token); // maybe a 401: try once more with a fresh token
      this.#connect();
      return;
    }
    this.#giveUp();
  }

  async #silent(source) {
    let quiet = false;
    if (this.explainSilence && source.readyState === EventSource.OPEN) {
      try {
        quiet = await this.explainSilence();
      } catch {
        quiet = false;
      }
    }
    if (this.closed || source !== this.source || this.everSeen) return;
    if (!quiet) return this.#giveUp();
    this.silence = setTimeout(() => this.#silent(source), FIRST_EVENT_TIMEOUT_MS);
  }

  #giveUp() {
    if (this.closed) return;
    this.close();
    this.onGiveUp();
  }

  #fatal(err) {
    if (this.closed) return;
    this.close();
    this.onFatal(err);
  }
}

function startStream(kind, id, o, handlers) {
  const stream = new TokenStream({
    href: (params) => url(o, KINDS[kind].stream(id), params),
    events: [KINDS[kind].event, "error"],
    tokens: o.tokens,
    onEvent: (name, data) =>
      name === "error" ? handlers.fail(streamError(data)) : handlers.deliver(data),
    // Polling surfaces the real reason (404, 401, ...) with its envelope, or just works.
    onGiveUp: () => handlers.fallback(),
    onFatal: (err) => handlers.fail(err),
    onSoftError: (err) => handlers.fail(err),
  });
  return () => stream.close();
}

/** An `event: error` names one resource the stream gave up on (e.g. not found): final. */
function streamError(data) {
  const e = data.error ?? {};
  return new LayersProgressError(e.message ?? "Stream error", { ...e, terminal: true });
}

/* ---- Polling ---- */

/** Poll ``href`` (a full URL) until stopped; each 200 body goes to handlers.deliver. */
function startPolling(href, o, handlers) {
  const tokens = o.tokens;
  const abort = new AbortController();
  let etag = null;
  let timer = null;
  let failures = 0;

  async function get(token) {
    const headers = { Accept: "application/json" };
    if (etag) headers["If-None-Match"] = etag;
    if (token) headers.Authorization = `Bearer ${token}`;
    // no-store: we keep the ETag ourselves, so the browser cache must not answer for the proxy.
    return fetch(href, { headers, cache: "no-store", signal: abort.signal });
  }

  async function pollOnce() {
    let token = await tokens.usable((err) => handlers.fail(err));
    if (tokens.required && !token) throw noTokenError();
    let response = await get(token);
    if (response.status === 401 && tokens.getToken) {
      tokens.reject(token); // expired or revoked: one retry with a fresh token
      token = await tokens.usable();
      if (abort.signal.aborted) return DEFAULT_INTERVAL_MS;
      response = await get(token);
    }
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
      delay = error.code === "TOKEN_REFRESH_FAILED"
        ? TOKEN_RETRY_MS * tokens.failures
        : Math.max(error.retryAfterMs ?? 0, backoff(++failures));
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
const functionIds = new WeakMap(); // getToken functions by number, for the key below
let nextFunctionId = 1;

function functionId(fn) {
  if (!functionIds.has(fn)) functionIds.set(fn, nextFunctionId++);
  return functionIds.get(fn);
}

function sharedStream(o) {
  const getToken = typeof o.getToken === "function" ? functionId(o.getToken) : 0;
  const key = JSON.stringify([o.baseUrl, o.token ?? "", getToken, o.share !== false]);
  if (!sharedStreams.has(key)) sharedStreams.set(key, new SharedStream(o));
  return sharedStreams.get(key);
}

function isFinal([name, data]) {
  return name === "error" || TERMINAL.has(data?.status);
}

class SharedStream {
  constructor(o) {
    this.o = o;
    this.tokens = o.tokens;
    this.subs = new Map(); // "progress:cnt_…" → Set of handlers
    this.latest = new Map(); // "progress:cnt_…" → [event name, data]: the last event of each
    this.keys = []; // what the current link carries, sorted
    this.link = null; // a TabLink (shared with other tabs) or a TokenStream (this tab only)
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
    const last = this.latest.get(key);
    if (last) queueMicrotask(() => this.#route(key, last, handlers)); // join where the others are
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
    if (set?.size === 0) {
      this.subs.delete(key);
      // Kept while the link carries it: a tab joining later still needs it from us.
      if (!this.keys.includes(key)) this.latest.delete(key);
    }
    if (this.subs.size === 0) this.disconnect();
  }

  connect() {
    this.pending = false;
    const keys = [...this.subs.keys()].sort(); // one order in every tab: one URL, one event id
    if (this.link && keys.join() === this.keys.join()) return;
    this.disconnect();
    for (const key of this.latest.keys()) if (!this.subs.has(key)) this.latest.delete(key);
    if (keys.length === 0) return;
    this.keys = keys;
    const params = {};
    for (const [kind, { param }] of Object.entries(KINDS)) {
      const prefix = `${kind}:`;
      params[param] = keys.filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length));
    }
    const href = (extra) => url(this.o, "/v1/stream", { ...params, ...extra });
    const acrossTabs = this.o.share !== false && crossTabAvailable();
    this.link = acrossTabs ? new TabLink(this, keys, href) : this.direct(href);
  }

  /** The stream itself, on this tab's connection; ``relay`` sees every event first. */
  direct(href, lastId = null, relay = {}) {
    return new TokenStream({
      href,
      lastId,
      events: ["progress", "job", "error"],
      tokens: this.tokens,
      isDone: () => this.isDone(),
      onEvent: (name, data, id) => {
        relay.onEvent?.(name, data, id);
        this.dispatch(name, data);
      },
      onGiveUp: () => {
        relay.onGiveUp?.();
        this.giveUp();
      },
      onFatal: (err) => {
        relay.onFatal?.(err);
        this.fatal(err);
      },
      onSoftError: (err) => {
        relay.onSoftError?.(err);
        this.soft(err);
      },
    });
  }

  /** True when every resource of the link has had its last word (or nobody here watches it). */
  isDone() {
    const ended = (k) => !this.subs.has(k) || (this.latest.has(k) && isFinal(this.latest.get(k)));
    return this.keys.length > 0 && this.keys.every(ended);
  }

  dispatch(name, data) {
    const kind = name === "error" ? (data.containerId ? "progress" : "job") : name;
    if (!KINDS[kind]) return;
    const key = `${kind}:${data[KINDS[kind].idField]}`;
    if (!this.subs.has(key) && !this.keys.includes(key)) return;
    this.latest.set(key, [name, data]); // also for tabs that join later
    for (const handlers of [...(this.subs.get(key) ?? [])]) this.#route(key, [name, data], handlers);
  }

  #route(key, [name, data], handlers) {
    if (!this.subs.get(key)?.has(handlers)) return;
    if (name === "error") handlers.fail(streamError(data));
    else handlers.deliver(data);
  }

  /** The events that bring a newcomer up to date. */
  current() {
    return this.keys.filter((k) => this.latest.has(k)).map((k) => this.latest.get(k));
  }

  #everyone() {
    return [...this.subs.values()].flatMap((set) => [...set]);
  }

  giveUp() {
    this.disconnect();
    this.broken = true; // later watches poll straight away
    for (const handlers of this.#everyone()) handlers.fallback();
  }

  fatal(err) {
    this.disconnect();
    for (const handlers of this.#everyone()) handlers.fail(err);
  }

  soft(err) {
    for (const handlers of this.#everyone()) handlers.fail(err);
  }

  disconnect() {
    const link = this.link;
    this.link = null;
    this.keys = [];
    link?.close();
  }
}

/* ---- One stream for all tabs: Web Locks elect the leader, a BroadcastChannel relays ---- */

function crossTabAvailable() {
  return (
    typeof BroadcastChannel === "function" &&
    typeof navigator !== "undefined" &&
    typeof navigator.locks?.request === "function" &&
    typeof crypto !== "undefined" &&
    typeof crypto.subtle?.digest === "function"
  );
}

/** What a token says apart from when: tabs share only with tokens that say the same. */
function claimsOf(tokens) {
  if (!tokens.value) return null;
  const claims = tokens.claims;
  if (!claims) return { opaque: tokens.value }; // not a JWT: only the same token shares (hashed)
  const kept = {};
  for (const name of Object.keys(claims).sort()) {
    if (["iat", "exp", "nbf", "jti"].includes(name)) continue;
    const value = claims[name];
    kept[name] = Array.isArray(value) ? [...value].map(String).sort() : value;
  }
  return kept;
}

async function groupName(baseUrl, tokens, keys) {
  const origin = new URL(baseUrl.replace(/\/+$/, ""), location.href).href;
  const text = JSON.stringify(["layers-progress/1", origin, claimsOf(tokens), keys]);
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return CHANNEL_PREFIX + hex;
}

function plainError(err) {
  const { message, status, code, requestId, details, terminal } = err;
  return { message, status, code, requestId, details, terminal };
}

/**
 * This tab's membership in a group of tabs that share one stream. Every member waits for the
 * group's lock; the holder (the leader) runs the stream and posts each event to the channel;
 * the others dispatch what the channel brings. Messages: hello (a newcomer asks for the state),
 * state (the leader's answer), event, lead (a new leader), bye (a leader leaves: its events are
 * all sent), soft, fatal, giveup.
 */
class TabLink {
  constructor(shared, keys, href) {
    this.shared = shared;
    this.keys = keys;
    this.href = href;
    this.id = Math.random().toString(36).slice(2) + Date.now().toString(36);
    this.lastId = null; // the last event id of the group's stream, whoever ran it
    this.closed = false;
    this.leading = false;
    this.synced = false; // had the leader's state (or an event) since joining
    this.handedOver = false; // the last leader said bye and no new one has spoken since
    this.heardLeader = false; // some leader spoke since this tab joined
    this.start = null; // while leading in the grace: starts the stream
    this.stream = null;
    this.channel = null;
    this.release = null;
    this.abort = new AbortController();
    this.#join();
  }

  async #join() {
    let name;
    try {
      // The group's name needs the token's claims: a getToken() page asks for its first token.
      const tokens = this.shared.tokens;
      if (tokens.getToken && !tokens.valid()) await tokens.usable();
      name = await groupName(this.shared.o.baseUrl, tokens, this.keys);
    } catch {
      name = null;
    }
    if (this.closed) return;
    if (name === null) {
      // No token yet, or no digest: stream from this tab (it reports token trouble itself).
      this.stream = this.shared.direct(this.href);
      return;
    }
    this.channel = new BroadcastChannel(name);
    this.channel.onmessage = (event) => this.#message(event.data);
    this.#post({ t: "hello", from: this.id });
    navigator.locks
      .request(name, { signal: this.abort.signal }, () => this.#lead())
      .catch(() => {}); // AbortError: we left before our turn came
  }

  #lead() {
    if (this.closed) return undefined;
    this.leading = true;
    this.synced = true;
    this.#post({ t: "lead", from: this.id });
    // The old leader posted its last events (and a bye) before it let go of the lock, but the
    // lock and the channel travel separately: until its bye arrives, its events are still taken
    // (they may say everything has ended).
    const grace = this.heardLeader ? TAKEOVER_GRACE_MS : FIRST_GRACE_MS;
    const timer = setTimeout(() => this.start?.(), this.handedOver ? 0 : grace);
    this.start = () => {
      clearTimeout(timer);
      this.start = null;
      this.#stream();
    };
    // Hold the lock until this tab leaves the group (or closes: the browser releases it then).
    return new Promise((resolve) => {
      this.release = () => {
        clearTimeout(timer);
        this.start = null;
        resolve();
      };
    });
  }

  #stream() {
    if (this.closed) return;
    this.stream = this.shared.direct(this.href, this.lastId, {
      // Post before dispatching here: a terminal event may end this tab's watches (and lock).
      onEvent: (name, data, id) => {
        this.lastId = id;
        this.#post({ t: "event", name, data, id });
      },
      onGiveUp: () => this.#post({ t: "giveup" }),
      onFatal: (err) => this.#post({ t: "fatal", error: plainError(err) }),
      onSoftError: (err) => this.#post({ t: "soft", error: plainError(err) }),
    });
  }

  #post(message) {
    try {
      this.channel?.postMessage(message);
    } catch {
      // the channel closed under us: the tab is leaving
    }
  }

  #message(m) {
    if (this.closed || !m || typeof m !== "object") return;
    const shared = this.shared;
    if (m.t !== "hello") this.heardLeader = true; // only a leader says anything else
    if (m.t === "hello") {
      if (!this.leading) return;
      this.#post({ t: "state", to: m.from, id: this.lastId, events: shared.current() });
    } else if (m.t === "bye") {
      if (this.leading && !this.start) return; // late: this tab streams already
      if (m.id) this.lastId = m.id;
      this.handedOver = true;
      this.start?.(); // a leader in its grace starts now
    } else if (this.leading && !this.start) {
      // Only the leader speaks otherwise; a second one would be a bug: ignore it.
    } else if (m.t === "event") {
      this.synced = true;
      if (m.id) this.lastId = m.id;
      shared.dispatch(m.name, m.data);
    } else if (m.t === "state" && m.to === this.id) {
      this.synced = true;
      if (m.id) this.lastId = m.id;
      for (const [name, data] of m.events ?? []) shared.dispatch(name, data);
    } else if (m.t === "lead") {
      this.handedOver = false;
      if (!this.synced) this.#post({ t: "hello", from: this.id }); // our first hello found none
    } else if (m.t === "soft") {
      shared.soft(new LayersProgressError(m.error.message, { ...m.error, terminal: false }));
    } else if (m.t === "fatal") {
      shared.fatal(new LayersProgressError(m.error.message, { ...m.error, terminal: true }));
    } else if (m.t === "giveup") {
      shared.giveUp();
    }
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.stream?.close();
    this.stream = null;
    if (this.leading) this.#post({ t: "bye", from: this.id, id: this.lastId });
    this.abort.abort(); // leave the lock's queue (no effect once we hold it)
    this.release?.(); // or hand the lock to the next tab
    this.channel?.close();
    this.channel = null;
  }
}

/* ---- Projects: every container of one project, on /v1/projects/{id}/stream or its poll ---- */

const PROJECT_ID = new RegExp(`^prj_(?:(${UUID})|(${ULID}))$`, "i");
const PROJECT_EVENTS = ["container", "progress", "error"];

function canonicalProject(id) {
  const m = PROJECT_ID.exec(String(id ?? ""));
  return m && (m[1] ? `prj_${m[1].toLowerCase()}` : `prj_${m[2].toUpperCase()}`);
}

function projectPath(id, tail) {
  return `/v1/projects/${encodeURIComponent(id)}/${tail}`;
}

function updatedMs(body) {
  const ms = Date.parse(body?.updatedAt ?? "");
  return Number.isFinite(ms) ? ms : null;
}

/**
 * Watch every container of a project: those in flight and those that ended lately (the proxy
 * shows an ended one for 5 minutes; this watch keeps it until closed). Options: onChange(items)
 * with the current list, in-flight containers first (in the order they appeared), then ended
 * ones (the latest to end first), each item the container's latest progress body (or
 * `{containerId, status}` before its first one, `{containerId, error}` when the proxy has only
 * an error for it); onContainer({containerId, status}) when a container appears or ends;
 * onError(err); token, getToken, baseUrl, transport ("auto" | "poll") and share as for
 * watchProgress. Returns `{close(), items()}`.
 *
 * It streams /v1/projects/{id}/stream (`event: container` on appear and end, `event: progress`
 * on every change; each connect starts with the container events of every current member and
 * their progress, so whatever a reconnect sends is merged into what the watch has) and polls
 * /v1/projects/{id}/progress (ETag, at X-Poll-Interval-Ms or 2 s) where streaming does not work.
 * Tabs watching the same project with tokens of the same claims share one stream, as shared
 * watches do (group "project:<id>").
 */
export function watchProject(projectId, options = {}) {
  const o = { baseUrl: location.origin, transport: "auto", share: true, ...options };
  o.tokens = tokenSource(o);
  const pid = canonicalProject(projectId);
  const members = new Map(); // containerId → { id, order, status, ended, endedOrder, body, text }
  let order = 0;
  let over = false;
  let dirty = false;
  let stop = () => {};
  const finish = () => {
    over = true;
    stop();
  };

  const items = () => {
    const all = [...members.values()];
    const live = all.filter((m) => !m.ended).sort((a, b) => a.order - b.order);
    // The latest to end first: by the proxy's updatedAt of the last body (one clock for all),
    // then by when we heard of the end.
    const endedAt = (m) => updatedMs(m.body) ?? Infinity;
    const ended = all
      .filter((m) => m.ended)
      .sort((a, b) => endedAt(b) - endedAt(a) || b.endedOrder - a.endedOrder);
    return [...live, ...ended].map(item);
  };

  // The latest body, with the latest status when an `event: container` said it ended (or came
  // back) before the body that says so: the stream sends the container event first.
  const item = (m) => {
    const body = m.body;
    if (!body) return { containerId: m.id, status: m.status };
    const known = typeof body.status === "string" && m.status;
    const stale = known && TERMINAL.has(body.status) !== m.ended;
    return stale ? { ...body, status: m.status } : body;
  };

  const changed = () => {
    if (dirty) return;
    dirty = true;
    // A poll answer or a tab's catch-up brings many events at once: one onChange for them.
    queueMicrotask(() => {
      dirty = false;
      if (!over) o.onChange?.(items());
    });
  };

  const entry = (id) => {
    let m = members.get(id);
    if (!m) {
      m = { id, order: order++, status: undefined, ended: false, endedOrder: 0 };
      m.body = null; // the latest progress body
      m.text = null; // its JSON, to skip repeats (every connect resends the current state)
      members.set(id, m);
      changed();
    }
    return m;
  };

  const setStatus = (m, status) => {
    if (typeof status !== "string" || !status) return;
    const ended = TERMINAL.has(status);
    const news = m.status === undefined || ended !== m.ended || (ended && status !== m.status);
    m.status = status;
    if (ended && !m.ended) m.endedOrder = order++;
    m.ended = ended;
    if (!news) return;
    changed();
    o.onContainer?.({ containerId: m.id, status });
  };

  const applyBody = (body) => {
    if (!body || typeof body !== "object" || typeof body.containerId !== "string") return;
    const m = entry(body.containerId);
    const text = JSON.stringify(body);
    if (text !== m.text) {
      m.text = text;
      m.body = body;
      changed();
    }
    setStatus(m, body.status);
  };

  let answered = false;
  const handlers = {
    /** One stream event (from this tab's stream or the tab that holds it). */
    event(name, data) {
      if (over || !data || typeof data !== "object") return;
      if (name === "ready") {
        handlers.answered();
      } else if (name === "container" && typeof data.containerId === "string") {
        setStatus(entry(data.containerId), data.status);
      } else if (name === "progress") {
        applyBody(data);
      } else if (name === "error") {
        // One container's trouble is its row's; anything else ends the watch.
        if (typeof data.containerId === "string") applyBody(data);
        else handlers.fail(streamError(data));
      }
    },
    /** The stream is up or a poll was answered: an empty project says so too. */
    answered() {
      if (answered) return;
      answered = true;
      changed();
    },
    /** A poll answer: `{projectId, items: [...]}`. */
    deliver(list) {
      if (over) return;
      handlers.answered();
      for (const body of Array.isArray(list?.items) ? list.items : []) applyBody(body);
    },
    fail(err) {
      if (over) return;
      if (err.terminal) finish();
      o.onError?.(err);
    },
    fallback() {
      if (over) return;
      stop();
      stop = startPolling(url(o, projectPath(pid ?? projectId, "progress")), o, handlers);
    },
  };

  // A malformed id goes straight to the poll: its 400 (or 404) names the problem.
  if (o.transport === "poll" || typeof EventSource === "undefined" || !pid) {
    handlers.fallback();
  } else {
    const unsubscribe = projectHub(o, pid).add(handlers);
    if (unsubscribe) stop = unsubscribe;
    else handlers.fallback(); // this page's stream of the project gave up before
  }
  return { close: finish, items };
}

const projectHubs = new Map();

function projectHub(o, pid) {
  const getToken = typeof o.getToken === "function" ? functionId(o.getToken) : 0;
  const key = JSON.stringify([o.baseUrl, o.token ?? "", getToken, o.share !== false, pid]);
  if (!projectHubs.has(key)) projectHubs.set(key, new ProjectHub(o, pid));
  return projectHubs.get(key);
}

/**
 * The project's stream for every watchProject of this page (one EventSource per project), and,
 * through a TabLink, for the browser's other tabs: the same group scheme as SharedStream, with
 * the one key "project:<id>". It keeps each member's last `container` and `progress` events so
 * that a watch (or a tab) joining late starts where the others are.
 */
class ProjectHub {
  constructor(o, pid) {
    this.o = o;
    this.tokens = o.tokens;
    this.pid = pid;
    this.keys = [`project:${pid}`];
    this.subs = new Set();
    this.members = new Map(); // containerId → { container, progress }: the latest of each
    this.ready = false; // the stream has been opened: a newcomer may show an empty project
    this.link = null;
    this.broken = false;
    this.pending = false;
  }

  /** Subscribe; returns the unsubscribe function, or null when streaming is known not to work. */
  add(handlers) {
    if (this.broken) return null;
    this.subs.add(handlers);
    queueMicrotask(() => {
      if (!this.subs.has(handlers)) return;
      for (const [name, data] of this.current()) handlers.event(name, data);
    });
    if (!this.link && !this.pending) {
      this.pending = true;
      setTimeout(() => this.connect(), 0);
    }
    return () => this.remove(handlers);
  }

  remove(handlers) {
    this.subs.delete(handlers);
    if (this.subs.size === 0) this.disconnect();
  }

  connect() {
    this.pending = false;
    if (this.link || this.subs.size === 0) return;
    const href = (extra) => url(this.o, projectPath(this.pid, "stream"), extra);
    const acrossTabs = this.o.share !== false && crossTabAvailable();
    this.link = acrossTabs ? new TabLink(this, this.keys, href) : this.direct(href);
  }

  /** The stream on this tab's connection (TabLink's leader calls this too). */
  direct(href, lastId = null, relay = {}) {
    return new TokenStream({
      href,
      lastId,
      events: PROJECT_EVENTS,
      tokens: this.tokens,
      explainSilence: () => this.isEmpty(),
      // "ready" is ours, not the proxy's: the stream is up, so an empty project is empty (it
      // travels to the other tabs like the proxy's events).
      onOpen: () => {
        relay.onEvent?.("ready", {}, lastId);
        this.dispatch("ready", {});
      },
      onEvent: (name, data, id) => {
        relay.onEvent?.(name, data, id);
        this.dispatch(name, data);
      },
      onGiveUp: () => {
        relay.onGiveUp?.();
        this.giveUp();
      },
      onFatal: (err) => {
        relay.onFatal?.(err);
        this.fatal(err);
      },
      onSoftError: (err) => {
        relay.onSoftError?.(err);
        this.soft(err);
      },
    });
  }

  /** Has the project nothing to show (so a silent stream is no middlebox's doing)? One GET. */
  async isEmpty() {
    const token = await this.tokens.usable();
    if (this.tokens.required && !token) return false;
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const href = url(this.o, projectPath(this.pid, "progress"));
    const response = await fetch(href, { headers, cache: "no-store" });
    if (!response.ok) return false;
    const body = await response.json();
    return Array.isArray(body?.items) && body.items.length === 0;
  }

  dispatch(name, data) {
    if (name === "ready") this.ready = true;
    else if (!PROJECT_EVENTS.includes(name) || !data || typeof data !== "object") return;
    const id = data.containerId;
    if (typeof id === "string") {
      const m = this.members.get(id) ?? {};
      if (name === "container") m.container = data;
      else m.progress = [name, data];
      this.members.set(id, m);
    }
    for (const handlers of [...this.subs]) handlers.event(name, data);
  }

  /** The events that bring a newcomer up to date: what the proxy sends on a connect. */
  current() {
    const out = [];
    for (const { container, progress } of this.members.values()) {
      if (container) out.push(["container", container]);
      if (progress) out.push(progress);
    }
    if (this.ready) out.push(["ready", {}]);
    return out;
  }

  giveUp() {
    this.disconnect();
    this.broken = true; // later watches of this project poll straight away
    for (const handlers of [...this.subs]) handlers.fallback();
  }

  fatal(err) {
    this.disconnect();
    for (const handlers of [...this.subs]) handlers.fail(err);
  }

  soft(err) {
    for (const handlers of [...this.subs]) handlers.fail(err);
  }

  disconnect() {
    const link = this.link;
    this.link = null;
    if (this.subs.size === 0) {
      this.members.clear();
      this.ready = false;
    }
    link?.close();
  }
}
