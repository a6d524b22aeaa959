// genserve playground: drives the service that serves this page, with fetch and nothing else.
// No build step, no dependencies: this file is what the browser runs.

import { initProbes } from "./probes.js";

const $ = (selector) => document.querySelector(selector);

const STORE = { key: "genserve.apiKey", mode: "genserve.mode", conversation: "genserve.conversation" };

/** Every sampling field of the API, with the bounds the service enforces. */
const FIELDS = [
  { name: "temperature", min: 0, max: 2, step: 0.05, start: 0.7, help: "0 is (nearly) deterministic, 2 is wild" },
  { name: "top_p", min: 0, max: 1, step: 0.01, start: 1, exclusiveMin: true, help: "nucleus sampling" },
  { name: "max_tokens", min: 1, max: 4096, step: 1, start: 256, int: true, help: "most tokens per choice" },
  { name: "n", min: 1, max: 8, step: 1, start: 1, int: true, help: "choices to generate" },
  { name: "presence_penalty", min: -2, max: 2, step: 0.1, start: 0, help: "push towards new topics" },
  { name: "frequency_penalty", min: -2, max: 2, step: 0.1, start: 0, help: "discourage repeating words" },
  { name: "seed", min: 0, max: Number.MAX_SAFE_INTEGER, step: 1, int: true, range: false, help: "same seed, same text" },
];

const state = {
  mode: "generate",
  models: new Map(),
  presets: new Map(),
  features: { presets: false, chat: false, feedback: false, probes: false },
  conversationId: null,
  controller: null,
  lastSent: null,
};

// ---------------------------------------------------------------------------------------------
// Talking to the service

class ServiceError extends Error {
  constructor(status, error) {
    super(error?.message || `The service answered HTTP ${status}.`);
    this.status = status;
    this.type = error?.type ?? null;
    this.code = error?.code ?? null;
    this.param = error?.param ?? null;
  }
}

class FormError extends Error {
  constructor(input, message) {
    super(message);
    this.input = input;
  }
}

function apiKey() {
  return localStorage.getItem(STORE.key) || "";
}

function url(path) {
  return new URL(path.replace(/^\//, ""), document.baseURI).href;
}

function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json, text/event-stream" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  return fetch(url(path), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    // No `cache` option: "no-store" would add `Cache-Control: no-cache`, which makes the service
    // skip its response cache — then the page would not behave like the copied request.
  });
}

/** The service's own error, from a non-2xx response (its body is `{"error": {...}}`). */
async function serviceError(response) {
  let error = null;
  try {
    error = (await response.json()).error;
  } catch {
    // Not JSON (a proxy's page, say): keep the status line.
  }
  const err = new ServiceError(response.status, error || { message: `HTTP ${response.status} ${response.statusText}` });
  err.requestId = response.headers.get("x-request-id");
  return err;
}

async function getJSON(path) {
  const response = await api(path);
  if (!response.ok) throw await serviceError(response);
  return response.json();
}

/** Yields the JSON payload of each server-sent event until `data: [DONE]`. */
async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (!data) continue; // a comment or keep-alive
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  throw new Error("The stream ended before the service finished it.");
}

// ---------------------------------------------------------------------------------------------
// Sampling controls, built from FIELDS

function buildSamplingControls() {
  const grid = $("#sampling-fields");
  for (const f of FIELDS) {
    const box = document.createElement("div");
    box.className = "control" + (f.range === false ? " no-range" : "");
    box.dataset.field = f.name;
    const bounds = f.name === "seed" ? "≥ 0" : f.exclusiveMin ? `(${f.min}, ${f.max}]` : `${f.min} – ${f.max}`;
    box.innerHTML = `<label for="f-${f.name}"><span>${f.name}</span><span class="bounds">${bounds}</span></label>`;
    const number = document.createElement("input");
    Object.assign(number, { type: "number", id: `f-${f.name}`, name: f.name, placeholder: "default" });
    number.min = String(f.min);
    if (f.name !== "seed") number.max = String(f.max);
    number.step = f.int ? "1" : "any";
    number.inputMode = f.int ? "numeric" : "decimal";
    number.title = f.help;
    number.setAttribute("aria-describedby", `h-${f.name}`);
    const help = document.createElement("span");
    help.id = `h-${f.name}`;
    help.className = "visually-hidden";
    help.textContent = `${f.help}; leave empty for the service's default`;
    if (f.range !== false) {
      const range = document.createElement("input");
      Object.assign(range, { type: "range", id: `r-${f.name}`, min: f.min, max: f.max, step: f.step });
      range.value = String(f.start);
      range.setAttribute("aria-label", `${f.name} slider`);
      range.addEventListener("input", () => {
        number.value = range.value;
        number.dispatchEvent(new Event("change"));
      });
      number.addEventListener("input", () => {
        if (number.value !== "") range.value = number.value;
      });
      box.append(range);
    }
    box.append(number, help);
    grid.append(box);
  }
  $("#f-top_p").addEventListener("input", (e) => {
    const v = e.target.value;
    e.target.setCustomValidity(v !== "" && Number(v) <= 0 ? "top_p must be greater than 0" : "");
  });
}

function setMaxTokensBound(limit) {
  const number = $("#f-max_tokens");
  const range = $("#r-max_tokens");
  number.max = range.max = String(limit);
  number.closest(".control").querySelector(".bounds").textContent = `1 – ${limit}`;
}

/** The sampling fields the user set; empty fields are left to the service. */
function collectSampling() {
  const out = {};
  for (const f of FIELDS) {
    const input = $(`#f-${f.name}`);
    if (input.disabled) continue; // not offered in this mode
    if (!input.checkValidity()) throw new FormError(input, `${f.name}: ${input.validationMessage}`);
    const raw = input.value.trim();
    if (raw === "") continue;
    out[f.name] = f.int ? Number.parseInt(raw, 10) : Number(raw);
  }
  const stops = $("#stop")
    .value.split("\n")
    .filter((line) => line !== "")
    .map((line) => line.replace(/\\n/g, "\n").replace(/\\t/g, "\t"));
  if (stops.length > 4) throw new FormError($("#stop"), "At most 4 stop sequences are allowed.");
  if (stops.length) out.stop = stops;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Building the request of each mode (what is sent is also what "copy as ..." shows)

function buildRequest() {
  if (state.mode === "probe") return probes.buildRequest();
  const model = $("#model").value;
  const sampling = collectSampling();
  const stream = $("#stream").checked;
  if (state.mode === "generate") {
    const prompt = $("#prompt").value;
    if (!prompt.trim()) throw new FormError($("#prompt"), "Write a prompt first.");
    const body = {};
    if (model) body.model = model;
    if ($("#system").value.trim()) body.system = $("#system").value;
    body.prompt = prompt;
    if ($("#show-probs").checked) Object.assign(body, { logprobs: true, top_logprobs: 5 });
    return { path: "/v1/generate", body: { ...body, ...sampling, stream } };
  }
  if (state.mode === "preset") {
    const name = $("#preset").value;
    if (!name) throw new FormError($("#preset"), "Pick a preset.");
    const body = {};
    if (model) body.model = model;
    body.inputs = collectPresetInputs();
    return { path: `/v1/presets/${encodeURIComponent(name)}/generate`, body: { ...body, ...sampling, stream } };
  }
  const content = $("#message").value;
  if (!content.trim()) throw new FormError($("#message"), "Write a message first.");
  const id = state.conversationId || "CONVERSATION_ID";
  return {
    path: `/v1/conversations/${encodeURIComponent(id)}/messages`,
    body: { content, ...sampling, stream },
  };
}

// ---------------------------------------------------------------------------------------------
// Output

function setStatus(text, running = false) {
  const status = $("#status");
  status.textContent = text;
  status.classList.toggle("running", running);
}

function clearError() {
  $("#error").hidden = true;
  $("#error").textContent = "";
  for (const el of document.querySelectorAll("[aria-invalid='true']")) el.removeAttribute("aria-invalid");
}

function showError(err) {
  const box = $("#error");
  box.replaceChildren();
  const message = document.createElement("strong");
  message.className = "error-message";
  message.textContent = err.message;
  box.append(message);
  if (err instanceof ServiceError) {
    const detail = document.createElement("div");
    detail.className = "hint";
    detail.textContent = [
      `HTTP ${err.status}`,
      err.type,
      err.code,
      err.param && `param: ${err.param}`,
      err.requestId && `request ${err.requestId}`,
    ]
      .filter(Boolean)
      .join(" · ");
    box.append(detail);
    const field = err.param && document.getElementById(`f-${err.param}`);
    if (field) field.setAttribute("aria-invalid", "true");
  } else if (err instanceof FormError && err.input) {
    err.input.setAttribute("aria-invalid", "true");
    err.input.focus();
  }
  box.hidden = false;
  setStatus("Failed.");
}

function resetChoices(n) {
  const box = $("#choices");
  box.replaceChildren();
  for (let i = 0; i < n; i++) box.append(choiceCard(i, n));
}

function choiceCard(index, n) {
  const card = document.createElement("article");
  card.className = "choice";
  card.dataset.index = String(index);
  card.setAttribute("aria-label", n > 1 ? `Choice ${index + 1}` : "Answer");
  card.innerHTML = `<header><span>${n > 1 ? `Choice ${index + 1}` : "Answer"}</span><span class="badge finish"></span></header><p class="text"></p>`;
  return card;
}

function choiceText(index) {
  let card = $(`#choices .choice[data-index="${index}"]`);
  if (!card) {
    card = choiceCard(index, index + 1);
    $("#choices").append(card);
  }
  return card.querySelector(".text");
}

function kv(name, value, attr) {
  const span = document.createElement("span");
  span.className = "kv";
  if (attr) span.dataset.sampling = attr;
  const b = document.createElement("b");
  b.textContent = name;
  span.append(b, ` ${value}`);
  return span;
}

function fmt(x, digits = 1) {
  return Number.isFinite(x) ? x.toFixed(digits) : "–";
}

/** Finish reason, usage, timings and the effective sampling of a finished generation. */
function showMeta(result, clientTtftMs, requestId, cache) {
  const meta = $("#meta");
  const choices = result.choices || [];
  const reasons = choices.map((c) => c.finish_reason);
  $("#meta-finish").textContent =
    new Set(reasons).size <= 1
      ? reasons[0] || "–"
      : choices.map((c) => `choice ${c.index + 1}: ${c.finish_reason}`).join(" · ");
  for (const c of choices) {
    const badge = $(`#choices .choice[data-index="${c.index}"] .finish`);
    if (badge) {
      badge.textContent = c.finish_reason;
      badge.classList.toggle("length", c.finish_reason === "length");
    }
  }
  const u = result.usage || {};
  $("#meta-usage").textContent =
    `${u.prompt_tokens} prompt + ${u.completion_tokens} completion = ${u.total_tokens} tokens`;
  const t = result.timings || {};
  let ttft = `${fmt(t.ttft_ms)} ms (service)`;
  if (clientTtftMs != null) ttft += ` · ${fmt(clientTtftMs)} ms (this browser)`;
  $("#meta-ttft").textContent = ttft;
  const seconds = (t.total_ms || 0) / 1000;
  $("#meta-tps").textContent =
    seconds > 0
      ? `${fmt(u.completion_tokens / seconds)} tokens/s (${u.completion_tokens} tokens in ${fmt(t.total_ms, 0)} ms)`
      : "–";
  const s = result.sampling || {};
  const sampling = $("#meta-sampling");
  sampling.replaceChildren();
  for (const name of ["temperature", "top_p", "max_tokens", "n", "presence_penalty", "frequency_penalty"]) {
    if (name in s) sampling.append(kv(name, s[name], name));
  }
  sampling.append(kv("stop", s.stop && s.stop.length ? JSON.stringify(s.stop) : "none", "stop"));
  const seed = kv("seed", s.seed ?? "none", "seed");
  if (s.seed != null) {
    const reuse = document.createElement("button");
    reuse.type = "button";
    reuse.textContent = "reuse";
    reuse.setAttribute("aria-label", `Reuse seed ${s.seed} to reproduce this answer`);
    reuse.addEventListener("click", () => {
      $("#f-seed").value = String(s.seed);
      setStatus(`Seed ${s.seed} set: send again with the same settings to reproduce this answer.`);
    });
    seed.append(" ", reuse);
  }
  sampling.append(seed);
  sampling.append(kv("tuned", s.tuned ? `yes (variant ${s.variant ?? "?"})` : "no", "tuned"));
  $("#meta-served").textContent =
    `${result.model} via ${result.provider} · id ${result.id}` +
    (requestId ? ` · request ${requestId}` : "") +
    (cache ? ` · cache ${cache}` : "");
  // Facts the service adds (turns left out, cache, fallbacks, redactions), as it names them.
  const notes = Object.entries(result.metadata || {});
  const extra = $("#meta-extra");
  extra.replaceChildren(
    ...notes.map(([k, v]) => kv(k.replace(/_/g, " "), typeof v === "string" ? v : JSON.stringify(v))),
  );
  extra.hidden = $("#meta-extra-label").hidden = !notes.length;
  meta.hidden = false;
}

/** A thumb drawn inline (emoji fonts are not everywhere, and the page loads nothing else). */
function thumbIcon() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute(
    "d",
    "M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.28a2 2 0 0 0 2-1.7l1.38-9a2 2 0 0 0-2-2.3zM7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3",
  );
  svg.append(path);
  return svg;
}

function feedbackBar(generationId) {
  const bar = document.createElement("div");
  bar.className = "feedback-bar";
  const label = document.createElement("span");
  label.textContent = "Was this answer good?";
  const note = document.createElement("span");
  note.className = "hint feedback-status";
  note.setAttribute("aria-live", "polite");
  const buttons = [];
  for (const [rating, text, name] of [
    ["up", "Good", "Good answer"],
    ["down", "Bad", "Bad answer"],
  ]) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = `thumb ${rating}`;
    button.append(thumbIcon(), text);
    button.dataset.rating = rating;
    button.setAttribute("aria-label", name);
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", async () => {
      note.textContent = "Sending…";
      try {
        const response = await api("/v1/feedback", {
          method: "POST",
          body: { generation_id: generationId, rating },
        });
        if (!response.ok) throw await serviceError(response);
        for (const b of buttons) b.setAttribute("aria-pressed", String(b === button));
        note.textContent = "Thanks, recorded.";
      } catch (err) {
        note.textContent = `Not recorded: ${err.message}`;
      }
    });
    buttons.push(button);
  }
  bar.append(label, ...buttons, note);
  return bar;
}

function showFeedback(generationId) {
  const box = $("#feedback");
  box.replaceChildren();
  box.hidden = !(state.features.feedback && generationId);
  if (!box.hidden) box.append(feedbackBar(generationId));
}

// ---------------------------------------------------------------------------------------------
// Running a request (all three modes stream the same way)

function setRunning(running) {
  $("#send").disabled = running;
  $("#stop-button").disabled = !running;
}

async function send() {
  if (state.controller) return;
  clearError();
  let request;
  try {
    request = buildRequest();
    if (state.mode === "chat" && !state.conversationId) {
      state.conversationId = await createConversation();
      request = buildRequest();
    }
  } catch (err) {
    showError(err);
    return;
  }
  state.lastSent = { ...request, mode: state.mode };
  renderSnippet(state.lastSent, "curl");
  if (state.mode === "chat") {
    await runChat(request);
  } else if (state.mode === "probe") {
    setRunning(true);
    try {
      await probes.run(request);
    } catch (err) {
      showError(err);
    } finally {
      setRunning(false);
    }
  } else {
    await runGeneration(request);
  }
}

/** Send one request and show its answer; returns the final result, or null. */
async function execute(request, { onText, onStart, onResult }) {
  const controller = new AbortController();
  state.controller = controller;
  setRunning(true);
  $("#meta").hidden = true;
  showFeedback(null);
  const started = performance.now();
  let firstTextAt = null;
  let chunks = 0;
  let requestId = null;
  setStatus("Waiting for the service…", true);
  try {
    const response = await api(request.path, { method: "POST", body: request.body, signal: controller.signal });
    if (!response.ok) throw await serviceError(response);
    requestId = response.headers.get("x-request-id");
    const cache = response.headers.get("x-cache");
    onStart?.();
    let result = null;
    if (request.body.stream) {
      for await (const event of sseEvents(response)) {
        if (event.error) throw Object.assign(new ServiceError(response.status, event.error), { requestId });
        if (event.usage && event.sampling) {
          result = event;
        } else if (typeof event.text === "string" || typeof event.delta === "string") {
          // The status is a live region: announce that text flows, not every chunk of it.
          if (firstTextAt == null) setStatus("Streaming…", true);
          firstTextAt ??= performance.now();
          chunks += 1;
          onText(event.index ?? 0, event.text ?? event.delta, event.logprobs);
        }
      }
      if (!result) throw new Error("The stream finished without its metadata event.");
    } else {
      result = await response.json();
      for (const c of result.choices || []) onText(c.index, c.text ?? c.message?.content ?? "", c.logprobs);
    }
    onResult?.(result);
    const elapsed = (performance.now() - started) / 1000;
    setStatus(`Done in ${elapsed.toFixed(2)} s.`);
    showMeta(result, firstTextAt == null ? null : firstTextAt - started, requestId, cache);
    return result;
  } catch (err) {
    if (err.name === "AbortError") {
      const elapsed = (performance.now() - started) / 1000;
      setStatus(`Stopped after ${elapsed.toFixed(2)} s (${chunks} chunks); the service stopped generating.`);
    } else if (err.name === "TypeError" && /fetch|network/i.test(err.message)) {
      showError(new Error(`Could not reach the service (${err.message}). Is it still running?`));
    } else {
      showError(err);
    }
    return null;
  } finally {
    state.controller = null;
    setRunning(false);
  }
}

async function runGeneration(request) {
  resetChoices(request.body.n || 1);
  const probs = request.body.logprobs === true;
  state.branchFrom = probs ? { request, model: request.body.model || $("#model").value } : null;
  const result = await execute(request, {
    onText: (index, text, logprobs) => {
      if (probs && logprobs) tokenView(choiceText(index)).add(logprobs);
      else choiceText(index).append(text);
    },
    onResult: (result) => {
      if (!probs) return;
      for (const c of result.choices || []) tokenView(choiceText(c.index)).finish();
    },
  });
  if (result) showFeedback(result.id);
}

// ---------------------------------------------------------------------------------------------
// Token probabilities: tinted tokens, their alternatives, and branching from one

/** The token view of a choice's text element (created on first use). */
function tokenView(textEl) {
  if (!textEl.tokenView) textEl.tokenView = new TokenView(textEl);
  return textEl.tokenView;
}

const pct = (logprob) => {
  const p = Math.exp(logprob) * 100;
  return p >= 99.95 ? "100%" : p < 0.1 ? "<0.1%" : `${p.toFixed(p < 10 ? 1 : 0)}%`;
};

class TokenView {
  constructor(textEl, prefix = "") {
    this.el = textEl;
    this.el.classList.add("tokens");
    this.tokens = [];
    this.prefix = prefix;
    if (prefix) {
      const span = document.createElement("span");
      span.className = "prefix";
      span.textContent = prefix;
      span.title = "The text this branch continues from";
      this.el.append(span);
    }
  }

  add(logprobs) {
    for (const t of logprobs) {
      const span = document.createElement("span");
      span.className = "tok";
      span.tabIndex = 0;
      span.textContent = t.token;
      span.dataset.i = String(this.tokens.length);
      span.dataset.p = Math.exp(t.logprob).toFixed(4);
      span.style.setProperty("--p", span.dataset.p);
      span.setAttribute("aria-label", `${t.token} ${pct(t.logprob)}`);
      span.addEventListener("mouseenter", () => showAlternatives(this, span));
      span.addEventListener("focus", () => {
        if (quietFocus) quietFocus = false;
        else showAlternatives(this, span);
      });
      span.addEventListener("click", () => showAlternatives(this, span, true));
      span.addEventListener("keydown", (e) => onTokenKey(e, this, span));
      this.tokens.push({ ...t, span });
      this.el.append(span);
    }
  }

  /** Mean log probability, perplexity and the least confident tokens, once the choice is done. */
  finish() {
    const card = this.el.closest(".choice");
    card.querySelector(".probs-summary")?.remove();
    if (!this.tokens.length) return;
    const mean = this.tokens.reduce((a, t) => a + t.logprob, 0) / this.tokens.length;
    const ranked = [...this.tokens].sort((a, b) => a.logprob - b.logprob);
    const least = ranked.slice(0, Math.max(1, Math.ceil(this.tokens.length / 10))).filter((t) => t.logprob < Math.log(0.5));
    for (const t of least) t.span.classList.add("least");
    const summary = document.createElement("p");
    summary.className = "probs-summary hint";
    summary.innerHTML = `<span class="kv"><b>mean logprob</b> <span class="mean-logprob"></span></span> <span class="kv"><b>perplexity</b> <span class="perplexity"></span></span> <span class="least-list"></span>`;
    summary.querySelector(".mean-logprob").textContent = mean.toFixed(3);
    summary.querySelector(".perplexity").textContent = Math.exp(-mean).toFixed(2);
    summary.querySelector(".least-list").textContent = least.length
      ? `Least confident: ${least.map((t) => `“${t.token}” ${pct(t.logprob)}`).join(", ")}`
      : "No token below 50%.";
    card.append(summary);
  }

  /** The exact text up to (not including) token i. */
  textBefore(i) {
    return this.prefix + this.tokens.slice(0, i).map((t) => t.token).join("");
  }
}

function onTokenKey(event, view, span) {
  const i = Number(span.dataset.i);
  const move = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: view.tokens.length - 1 }[event.key];
  if (move !== undefined) {
    event.preventDefault();
    view.tokens[Math.max(0, Math.min(view.tokens.length - 1, move))]?.span.focus();
  } else if (event.key === "Enter" || event.key === " " || event.key === "ArrowDown") {
    event.preventDefault();
    showAlternatives(view, span, true);
    ($("#tok-pop button") || $("#tok-pop li"))?.focus();
  } else if (event.key === "Escape") {
    hideAlternatives();
  }
}

/** Set while focus returns to a token from its list, so that the list stays closed. */
let quietFocus = false;

function hideAlternatives() {
  const pop = $("#tok-pop");
  pop.hidden = true;
  document.querySelector(".tok.current")?.classList.remove("current");
}

function branchNote() {
  const m = state.models.get(state.branchFrom?.model || $("#model").value);
  if (!m) return null;
  return m.continuation === false ? m.continuation_note || "This model cannot continue from a prefix." : null;
}

function showAlternatives(view, span, pinned = false) {
  const pop = $("#tok-pop");
  const t = view.tokens[Number(span.dataset.i)];
  document.querySelector(".tok.current")?.classList.remove("current");
  span.classList.add("current");
  pop.replaceChildren();
  const head = document.createElement("p");
  head.className = "pop-head";
  head.textContent = `“${t.token}” — ${pct(t.logprob)}`;
  pop.append(head);
  const list = document.createElement("ol");
  list.className = "alts";
  list.setAttribute("aria-label", "Most likely tokens here");
  const why = branchNote();
  for (const alt of t.top_logprobs) {
    const li = document.createElement("li");
    const label = `${JSON.stringify(alt.token)} ${pct(alt.logprob)}`;
    if (why === null && state.branchFrom) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "alt";
      button.textContent = label;
      button.title = "Continue the answer with this token instead";
      if (alt.token === t.token) button.classList.add("chosen");
      button.addEventListener("click", () => branch(view, Number(span.dataset.i), alt.token));
      button.addEventListener("keydown", (e) => {
        if (e.key === "Escape") {
          hideAlternatives();
          quietFocus = true; // back to the token without opening the list again
          span.focus();
        }
      });
      li.append(button);
    } else {
      li.textContent = label;
      li.tabIndex = -1;
    }
    const bar = document.createElement("span");
    bar.className = "alt-bar";
    bar.style.setProperty("--p", Math.exp(alt.logprob).toFixed(4));
    li.append(bar);
    list.append(li);
  }
  pop.append(list);
  const note = document.createElement("p");
  note.className = "hint";
  note.textContent = why ?? (state.branchFrom ? "Pick one to branch: the answer continues from there." : "");
  pop.append(note);
  pop.dataset.pinned = String(pinned);
  pop.hidden = false;
  // Below the token, kept inside the answer column.
  const box = span.getBoundingClientRect();
  const host = pop.offsetParent?.getBoundingClientRect() ?? { left: 0, top: 0, width: innerWidth };
  const left = Math.min(box.left - host.left, host.width - pop.offsetWidth - 4);
  pop.style.left = `${Math.max(0, left)}px`;
  pop.style.top = `${box.bottom - host.top + 4}px`;
}

let branches = 0;

/** Continue choice `view` from token i with `token` instead: a new card next to the original. */
async function branch(view, i, token) {
  if (state.controller || !state.branchFrom) return;
  hideAlternatives();
  const prefix = view.textBefore(i) + token;
  const original = view.el.closest(".choice");
  branches += 1;
  const card = document.createElement("article");
  card.className = "choice branch";
  card.dataset.index = `branch-${branches}`;
  const label = `Branch ${branches}: ${original.querySelector("header span").textContent} at token ${i + 1}, “${token}”`;
  card.setAttribute("aria-label", label);
  card.innerHTML = `<header><span></span><span class="badge finish"></span></header><p class="text"></p>`;
  card.querySelector("header span").textContent = label;
  original.after(card);
  const textEl = card.querySelector(".text");
  const branchView = new TokenView(textEl, prefix);
  textEl.tokenView = branchView;
  const body = { ...state.branchFrom.request.body, n: 1, continue_from: prefix };
  const request = { path: "/v1/generate", body };
  state.lastSent = { ...request, mode: "generate" };
  renderSnippet(state.lastSent, "curl");
  await execute(request, {
    onText: (_, text, logprobs) => (logprobs ? branchView.add(logprobs) : textEl.append(text)),
    onResult: (result) => {
      // The service numbers the branch's choice 0: the page shows it on the branch's card.
      result.choices = result.choices.map((c) => ({ ...c, index: card.dataset.index }));
      branchView.finish();
    },
  });
}

function stop() {
  state.controller?.abort();
}

// ---------------------------------------------------------------------------------------------
// Presets

function presetList(data) {
  return Array.isArray(data) ? data : data.data || data.presets || [];
}

/** A preset's input fields, from either a JSON Schema or a list of field descriptions. */
function presetFields(preset) {
  const schema = preset.input_schema || preset.inputs || preset.schema || {};
  if (Array.isArray(schema)) return schema.map((f) => ({ ...f, required: !!f.required }));
  const required = new Set(schema.required || []);
  return Object.entries(schema.properties || {}).map(([name, p]) => ({
    name,
    ...p,
    minimum: p.minimum,
    maximum: p.maximum,
    required: required.has(name),
  }));
}

function renderPresetInputs() {
  const box = $("#preset-inputs");
  box.replaceChildren();
  const preset = state.presets.get($("#preset").value);
  const about = $("#preset-description");
  about.textContent = preset?.description || "";
  if (!preset) return;
  const defaults = Object.entries(preset.sampling || {}).map(([k, v]) => `${k} ${JSON.stringify(v)}`);
  if (defaults.length) about.append(document.createElement("br"), `Preset defaults: ${defaults.join(", ")}.`);
  const variants = Object.keys(preset.tuning?.variants || {});
  if (variants.length) {
    about.append(
      document.createElement("br"),
      `Tuned by feedback between ${variants.join(", ")}: leave the sampling fields empty to let it choose.`,
    );
  }
  const legend = document.createElement("legend");
  legend.textContent = "Inputs";
  box.append(legend);
  for (const f of presetFields(preset)) {
    const field = document.createElement("div");
    field.className = "field";
    const id = `pi-${f.name}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = f.title || f.name;
    if (!f.required) label.insertAdjacentHTML("beforeend", ' <span class="opt">optional</span>');
    let input;
    const type = Array.isArray(f.type) ? f.type.find((t) => t !== "null") : f.type;
    const choices = f.enum || f.choices;
    if (choices) {
      input = document.createElement("select");
      if (!f.required) input.append(new Option("", ""));
      for (const c of choices) input.append(new Option(String(c), String(c)));
    } else if (type === "boolean") {
      input = document.createElement("input");
      input.type = "checkbox";
    } else if (type === "integer" || type === "number") {
      input = document.createElement("input");
      input.type = "number";
      input.step = type === "integer" ? "1" : "any";
      const min = f.minimum ?? f.min ?? f.ge;
      const max = f.maximum ?? f.max ?? f.le;
      if (min != null) input.min = String(min);
      if (max != null) input.max = String(max);
    } else {
      const multiline = f.format === "multiline" || type === "text";
      input = document.createElement(multiline ? "textarea" : "input");
      if (multiline) input.rows = 3;
      else input.type = "text";
      const maxLength = f.maxLength ?? f.max_length;
      if (maxLength != null) input.maxLength = maxLength;
      const minLength = f.minLength ?? f.min_length;
      if (minLength != null) input.minLength = minLength;
    }
    input.id = id;
    input.dataset.name = f.name;
    input.dataset.type = type || "string";
    if (f.required) input.required = true;
    if (f.default != null) {
      if (input.type === "checkbox") input.checked = !!f.default;
      else input.value = String(f.default);
    }
    field.append(label, input);
    if (f.description) {
      const hint = document.createElement("p");
      hint.className = "hint";
      hint.textContent = f.description;
      field.append(hint);
    }
    box.append(field);
  }
}

function collectPresetInputs() {
  const inputs = {};
  for (const input of document.querySelectorAll("#preset-inputs [data-name]")) {
    const name = input.dataset.name;
    if (input.type === "checkbox") {
      inputs[name] = input.checked;
      continue;
    }
    if (!input.checkValidity()) throw new FormError(input, `${name}: ${input.validationMessage}`);
    if (input.value === "") continue;
    const type = input.dataset.type;
    inputs[name] = type === "integer" || type === "number" ? Number(input.value) : input.value;
  }
  return inputs;
}

// ---------------------------------------------------------------------------------------------
// Chat: conversations kept by the service, the current one remembered across reloads

function messageItem(role, text, generationId, interrupted = false) {
  const li = document.createElement("li");
  li.className = `msg ${role}`;
  li.dataset.role = role;
  const body = document.createElement("div");
  body.className = "msg-text";
  body.textContent = text;
  li.append(body);
  if (interrupted) {
    const note = document.createElement("div");
    note.className = "hint";
    note.textContent = "(stopped before the end)";
    li.append(note);
  }
  if (role === "assistant" && generationId && state.features.feedback) li.append(feedbackBar(generationId));
  return li;
}

function messageText(m) {
  if (typeof m.content === "string") return m.content;
  if (Array.isArray(m.content)) return m.content.map((p) => p.text || "").join("");
  return m.text || "";
}

async function refreshConversations() {
  const select = $("#conversation");
  const data = await getJSON("/v1/conversations?limit=50");
  const list = data.data || data.conversations || (Array.isArray(data) ? data : []);
  select.replaceChildren(new Option("(new conversation)", ""));
  for (const c of list) {
    const when = c.created_at || c.created;
    const label = c.metadata?.title || c.title || `Conversation ${c.id.slice(-6)}`;
    const date = when ? new Date(typeof when === "number" ? when * 1000 : when).toLocaleString() : "";
    const count = c.message_count != null ? ` · ${c.message_count} messages` : "";
    select.append(new Option(`${label}${count}${date ? ` · ${date}` : ""}`, c.id));
  }
  select.value = state.conversationId || "";
}

async function openConversation(id) {
  const thread = $("#thread");
  thread.replaceChildren();
  state.conversationId = id || null;
  $("#conversation").value = id || "";
  $("#chat-system-field").hidden = !!id;
  $("#delete-conversation").disabled = !id;
  if (!id) {
    localStorage.removeItem(STORE.conversation);
    return;
  }
  localStorage.setItem(STORE.conversation, id);
  try {
    const data = await getJSON(`/v1/conversations/${encodeURIComponent(id)}`);
    for (const m of data.messages || data.data || []) {
      thread.append(messageItem(m.role, messageText(m), m.generation_id, m.interrupted));
    }
    thread.scrollTop = thread.scrollHeight;
  } catch (err) {
    if (err.status === 404) {
      state.conversationId = null;
      localStorage.removeItem(STORE.conversation);
      $("#chat-system-field").hidden = false;
    }
    showError(err);
  }
}

async function createConversation() {
  const body = {};
  if ($("#model").value) body.model = $("#model").value;
  if ($("#chat-system").value.trim()) body.system = $("#chat-system").value;
  // The first message names the conversation in the list.
  body.metadata = { title: $("#message").value.trim().replace(/\s+/g, " ").slice(0, 60) };
  const response = await api("/v1/conversations", { method: "POST", body });
  if (!response.ok) throw await serviceError(response);
  const created = await response.json();
  localStorage.setItem(STORE.conversation, created.id);
  $("#chat-system-field").hidden = true;
  $("#delete-conversation").disabled = false;
  return created.id;
}

async function runChat(request) {
  const thread = $("#thread");
  thread.append(messageItem("user", request.body.content));
  const reply = messageItem("assistant", "");
  reply.classList.add("pending");
  thread.append(reply);
  const text = reply.querySelector(".msg-text");
  const result = await execute(request, {
    onStart: () => $("#message").value = "",
    onText: (_, delta) => {
      text.textContent += delta;
      thread.scrollTop = thread.scrollHeight;
    },
  });
  reply.classList.remove("pending");
  if (result) {
    const final = result.text ?? result.choices?.[0]?.text ?? result.message?.content;
    if (typeof final === "string" && !text.textContent) text.textContent = final;
    if (state.features.feedback && result.id) reply.append(feedbackBar(result.id));
  } else if (!text.textContent) {
    reply.remove();
  }
  refreshConversations().catch(() => {});
}

async function deleteConversation() {
  const button = $("#delete-conversation");
  const id = state.conversationId;
  if (!id) return;
  if (button.dataset.armed !== "1") {
    button.dataset.armed = "1";
    button.textContent = "Really delete?";
    setTimeout(() => {
      button.dataset.armed = "";
      button.textContent = "Delete";
    }, 4000);
    return;
  }
  button.dataset.armed = "";
  button.textContent = "Delete";
  try {
    const response = await api(`/v1/conversations/${encodeURIComponent(id)}`, { method: "DELETE" });
    if (!response.ok && response.status !== 404) throw await serviceError(response);
    await openConversation(null);
    await refreshConversations();
    setStatus("Conversation deleted.");
  } catch (err) {
    showError(err);
  }
}

// ---------------------------------------------------------------------------------------------
// "Copy as curl" and "copy as Python": the request exactly as sent (the key stays in a variable)

function shellQuote(s) {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function curlSnippet(request) {
  const parts = [`curl -sS${request.body.stream ? " -N" : ""} ${shellQuote(url(request.path))}`];
  parts.push(`-H 'Content-Type: application/json'`);
  if (apiKey()) parts.push(`-H "Authorization: Bearer $GENSERVE_API_KEY"`);
  parts.push(`-d ${shellQuote(JSON.stringify(request.body))}`);
  const head = apiKey() ? "# export GENSERVE_API_KEY=... (the key from the playground)\n" : "";
  return head + parts.join(" \\\n  ");
}

function py(value, indent = "") {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  const inner = indent + "    ";
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((v) => inner + py(v, inner)).join(",\n")},\n${indent}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${py(v, inner)}`).join(",\n")},\n${indent}}`;
}

function pythonSnippet(request) {
  const base = url("/v1");
  const path = request.path.replace(/^\/v1/, "");
  const lines = [
    "import os",
    "",
    "import openai",
    "",
    "client = openai.OpenAI(",
    `    base_url=${JSON.stringify(base)},`,
    `    api_key=os.environ.get("GENSERVE_API_KEY", "unused"),`,
    ")",
    `body = ${py(request.body)}`,
  ];
  if (request.body.stream) {
    lines.push(
      `stream = client.post(${JSON.stringify(path)}, body=body, cast_to=object, stream=True, stream_cls=openai.Stream[object])`,
      "for event in stream:",
      '    if "usage" in event:  # the last event carries the metadata',
      '        print("\\n", event["usage"], event["sampling"])',
      "    else:",
      '        print(event.get("text", ""), end="", flush=True)',
    );
  } else {
    lines.push(
      `result = client.post(${JSON.stringify(path)}, body=body, cast_to=object)`,
      'print(result.get("text"), result["usage"], result["sampling"])',
    );
  }
  return lines.join("\n") + "\n";
}

function renderSnippet(request, kind) {
  const text = kind === "curl" ? curlSnippet(request) : pythonSnippet(request);
  $("#snippet").textContent = text;
  $("#snippet-kind").textContent =
    `(${kind === "curl" ? "curl" : "Python, openai SDK"}${request === state.lastSent ? ", as last sent" : ", not sent yet"})`;
  return text;
}

async function copySnippet(kind) {
  clearError();
  let request = state.lastSent;
  if (!request || request.mode !== state.mode) {
    try {
      request = buildRequest();
    } catch (err) {
      showError(err);
      return;
    }
  }
  const text = renderSnippet(request, kind);
  $("#snippet-box").open = true;
  try {
    await navigator.clipboard.writeText(text);
    setStatus(`Copied as ${kind === "curl" ? "curl" : "Python"}.`);
  } catch {
    // No clipboard (plain http on another host): select the text for Ctrl+C instead.
    const range = document.createRange();
    range.selectNodeContents($("#snippet"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    setStatus("The clipboard is not available here: the snippet is selected, press Ctrl+C.");
  }
}

// ---------------------------------------------------------------------------------------------
// Modes (tabs), start-up and feature detection

function setMode(mode, { focus = false } = {}) {
  const tab = $(`#tab-${mode}`);
  if (!tab || tab.hidden) mode = "generate";
  if (mode !== state.mode) {
    // The last answer's details belong to the mode that produced it.
    $("#meta").hidden = true;
    showFeedback(null);
    clearError();
  }
  state.mode = mode;
  localStorage.setItem(STORE.mode, mode);
  for (const t of document.querySelectorAll('[role="tab"]')) {
    const selected = t.dataset.mode === mode;
    t.setAttribute("aria-selected", String(selected));
    t.tabIndex = selected ? 0 : -1;
    if (selected && focus) t.focus();
  }
  for (const m of ["generate", "preset", "chat", "probe"]) $(`#mode-${m}`).hidden = m !== mode;
  $("#thread").hidden = mode !== "chat";
  $("#choices").hidden = mode === "chat" || mode === "probe";
  $("#probe-result").hidden = mode !== "probe" || !$("#probe-report").childElementCount;
  $("#send").textContent = { chat: "Send message", probe: "Run probe" }[mode] ?? "Send";
  // Probabilities and branching are a view of /v1/generate answers.
  $("#show-probs").closest("label").hidden = mode !== "generate";
  // A conversation keeps one reply per turn: n is always 1 there.
  for (const el of [$("#f-n"), $("#r-n")]) el.disabled = mode === "chat";
}

function onTabKey(event) {
  const tabs = [...document.querySelectorAll('[role="tab"]')].filter((t) => !t.hidden);
  const i = tabs.indexOf(event.target);
  const next = {
    ArrowRight: tabs[(i + 1) % tabs.length],
    ArrowLeft: tabs[(i - 1 + tabs.length) % tabs.length],
    Home: tabs[0],
    End: tabs[tabs.length - 1],
  }[event.key];
  if (next) {
    event.preventDefault();
    setMode(next.dataset.mode, { focus: true });
  }
}

/** GET a listing; `null` when the service does not have that endpoint (yet). */
async function optional(path) {
  const response = await api(path);
  if (response.status === 404 || response.status === 405) return null;
  if (!response.ok) throw await serviceError(response);
  return response.json();
}

async function loadModels() {
  const data = await getJSON("/v1/models");
  const select = $("#model");
  const previous = select.value;
  select.replaceChildren();
  state.models.clear();
  for (const m of data.data) {
    state.models.set(m.id, m);
    select.append(new Option(`${m.id} (${m.owned_by})`, m.id));
  }
  if (state.models.has(previous)) select.value = previous;
  onModelChange();
}

function onModelChange() {
  const m = state.models.get($("#model").value);
  if (!m) return;
  setMaxTokensBound(m.max_output_tokens);
  $("#model-hint").textContent = `${m.context_window} tokens of context, up to ${m.max_output_tokens} per answer`;
}

async function detectFeatures() {
  const [presets, conversations, feedback, probeSuites] = await Promise.allSettled([
    optional("/v1/presets"),
    optional("/v1/conversations?limit=1"),
    optional("/v1/feedback/summary"),
    probes.load(),
  ]);
  state.features.probes = probeSuites.status === "fulfilled" && probeSuites.value === true;
  $("#tab-probe").hidden = !state.features.probes;
  state.features.presets = presets.status === "fulfilled" && presets.value !== null;
  state.features.chat = conversations.status === "fulfilled" && conversations.value !== null;
  state.features.feedback = feedback.status === "fulfilled" && feedback.value !== null;
  $("#tab-preset").hidden = !state.features.presets;
  $("#tab-chat").hidden = !state.features.chat;
  if (state.features.presets) {
    state.presets.clear();
    const select = $("#preset");
    select.replaceChildren();
    for (const p of presetList(presets.value)) {
      const name = p.name || p.id;
      state.presets.set(name, p);
      select.append(new Option(p.title ? `${p.title} (${name})` : name, name));
    }
    renderPresetInputs();
  }
  if (state.features.chat) {
    const stored = localStorage.getItem(STORE.conversation);
    state.conversationId = stored;
    await refreshConversations();
    await openConversation(stored);
  }
}

async function start() {
  clearError();
  setStatus("Connecting…");
  try {
    await loadModels();
    await detectFeatures();
    setMode(localStorage.getItem(STORE.mode) || state.mode);
    setStatus("Ready.");
  } catch (err) {
    setMode(state.mode);
    showError(err);
    if (err.status === 401 || err.status === 403) {
      $("#key-box").open = true;
      $("#api-key").focus();
    }
  }
  document.body.dataset.ready = "true";
}

function initKey() {
  const input = $("#api-key");
  const pill = $("#key-state");
  const show = () => {
    pill.textContent = apiKey() ? "set" : "none";
    pill.classList.toggle("on", !!apiKey());
  };
  input.value = apiKey();
  show();
  input.addEventListener("change", () => {
    const value = input.value.trim();
    if (value) localStorage.setItem(STORE.key, value);
    else localStorage.removeItem(STORE.key);
    show();
    start();
  });
  $("#forget-key").addEventListener("click", () => {
    input.value = "";
    localStorage.removeItem(STORE.key);
    show();
    start();
  });
}

const probes = initProbes({ $, api, getJSON, serviceError, showError, clearError, setStatus, collectSampling });

function init() {
  buildSamplingControls();
  // On a phone the sampling controls start folded, so the prompt and the answer stay close.
  if (matchMedia("(max-width: 899px)").matches) $("#sampling").open = false;
  initKey();
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("click", () => setMode(tab.dataset.mode));
    tab.addEventListener("keydown", onTabKey);
  }
  $("#model").addEventListener("change", onModelChange);
  $("#preset").addEventListener("change", renderPresetInputs);
  $("#conversation").addEventListener("change", (e) => openConversation(e.target.value));
  $("#new-conversation").addEventListener("click", () => {
    openConversation(null);
    $("#message").focus();
  });
  $("#delete-conversation").addEventListener("click", deleteConversation);
  $("#request-form").addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  $("#stop-button").addEventListener("click", () => {
    stop();
    $("#send").focus();
  });
  $("#show-probs").addEventListener("change", () => {
    $("#probs-legend").hidden = !$("#show-probs").checked;
  });
  $("#probs-legend").hidden = !$("#show-probs").checked;
  document.addEventListener("click", (e) => {
    if (!e.target.closest?.("#tok-pop, .tok")) hideAlternatives();
  });
  $("#copy-curl").addEventListener("click", () => copySnippet("curl"));
  $("#copy-python").addEventListener("click", () => copySnippet("python"));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && e.target.closest?.("#request-form")) {
      e.preventDefault();
      $("#request-form").requestSubmit();
    } else if (e.key === "Escape" && state.controller) {
      stop();
    }
  });
  start();
}

init();
