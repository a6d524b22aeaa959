// genserve playground, the bias probe tab: pick a suite or write a template, run it as a job,
// follow its progress, cancel it, and read the report (charts are inline SVG drawn here).

const SVG = "http://www.w3.org/2000/svg";
const FINAL = new Set(["succeeded", "failed", "cancelled"]);

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

const num = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x.toPrecision(digits)).toString());

/** One measure: each group's mean as a bar, its confidence interval as a whisker. */
export function measureChart(measure) {
  const W = 320, H = 170, left = 40, bottom = 28, top = 10;
  const groups = measure.groups;
  const lows = groups.map((g) => g.low ?? g.mean ?? 0);
  const highs = groups.map((g) => g.high ?? g.mean ?? 0);
  let lo = Math.min(0, ...lows), hi = Math.max(0, ...highs);
  if (measure.name === "sentiment") [lo, hi] = [Math.min(lo, -1), Math.max(hi, 1)];
  if (measure.name === "refusal" || measure.name === "hedging") [lo, hi] = [0, 1];
  if (hi === lo) hi = lo + 1;
  const y = (v) => top + (H - top - bottom) * (1 - (v - lo) / (hi - lo));
  const slot = (W - left) / groups.length;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  chart.setAttribute(
    "aria-label",
    `${measure.label}: ` + groups.map((g) => `${g.group} ${num(g.mean)} (${num(g.low)} to ${num(g.high)})`).join("; "),
  );
  chart.append(svg("line", { class: "axis", x1: left, x2: W, y1: y(0), y2: y(0) }));
  for (const v of [lo, hi]) chart.append(svg("text", { x: left - 4, y: y(v) + 4, "text-anchor": "end" }, num(v, 2)));
  groups.forEach((g, i) => {
    const x = left + slot * i + slot * 0.2;
    const w = slot * 0.6;
    const mean = g.mean ?? 0;
    chart.append(
      svg("rect", { class: `g${i % 8}`, x, width: w, y: Math.min(y(mean), y(0)), height: Math.max(1, Math.abs(y(mean) - y(0))) }),
    );
    const cx = x + w / 2;
    chart.append(svg("line", { class: "whisker", x1: cx, x2: cx, y1: y(g.low ?? mean), y2: y(g.high ?? mean) }));
    for (const v of [g.low ?? mean, g.high ?? mean]) {
      chart.append(svg("line", { class: "whisker", x1: cx - 6, x2: cx + 6, y1: y(v), y2: y(v) }));
    }
    chart.append(svg("text", { x: cx, y: H - 10, "text-anchor": "middle" }, `${g.group} ${num(mean)}`));
  });
  return chart;
}

export function renderReport(probe, box) {
  box.replaceChildren();
  const report = probe.report;
  if (!report) {
    const why = probe.status === "failed" ? `The probe failed: ${probe.error}` : `The probe was ${probe.status}.`;
    box.append(el("p", { class: "probe-verdict" }, why));
    return;
  }
  box.append(el("p", { class: "probe-verdict", id: "probe-verdict" }, report.verdict));
  box.append(el("h3", {}, "Measures"));
  const charts = el("div", { class: "probe-charts" });
  for (const m of report.measures) {
    const fig = el("figure", { class: "probe-chart", "data-measure": m.name });
    fig.append(el("h4", {}, `${m.label} (${m.unit})`));
    fig.append(measureChart(m));
    fig.append(el("p", { class: "verdict" }, m.verdict));
    charts.append(fig);
  }
  box.append(charts);

  box.append(el("h3", {}, "Distinctive words"));
  const words = el("div", { class: "probe-words" });
  for (const [group, list] of Object.entries(report.distinctive_words)) {
    const col = el("div");
    col.append(el("strong", {}, group));
    const ul = el("ul");
    for (const w of list) ul.append(el("li", {}, `${w.word} (z = ${w.z.toFixed(2)}, ×${w.count})`));
    if (!list.length) ul.append(el("li", {}, "none stands out"));
    col.append(ul);
    words.append(col);
  }
  box.append(words);
  box.append(el("p", { class: "hint" }, "Log-odds ratio with an informative Dirichlet prior; the substituted words themselves are left out."));

  box.append(el("h3", {}, "Paired examples"));
  const table = el("table", { class: "probe-table" });
  const head = el("tr");
  head.append(el("th", { scope: "col" }, "Seed"));
  for (const g of report.groups) head.append(el("th", { scope: "col" }, g));
  const thead = el("thead");
  thead.append(head);
  table.append(thead);
  const body = el("tbody");
  for (const pair of report.pairs.slice(0, 12)) {
    const row = el("tr");
    row.append(el("td", {}, String(pair.seed)));
    for (const o of pair.outputs) {
      const cell = el("td");
      cell.append(el("strong", {}, o.value), document.createTextNode(` — ${o.text.trim()}`));
      cell.append(el("div", { class: "hint" }, `sentiment ${o.sentiment}, ${o.tokens} tokens${o.refusal ? ", refusal" : ""}${o.hedging ? ", hedging" : ""}`));
      row.append(cell);
    }
    body.append(row);
  }
  table.append(body);
  box.append(table);
}

/** Wires the tab to the page's own helpers (passed in: this module reaches nothing else). */
export function initProbes(page) {
  const { $, api, getJSON, serviceError, showError, clearError, setStatus, collectSampling } = page;
  const suites = new Map();
  let current = null;

  function fillFromSuite() {
    const suite = suites.get($("#probe-suite").value);
    if (!suite) {
      $("#probe-suite-title").textContent = "Your own template and groups.";
      return;
    }
    $("#probe-suite-title").textContent = suite.title;
    $("#probe-template").value = suite.template;
    $("#probe-variables").value = JSON.stringify({ [suite.attribute]: suite.groups, ...suite.variables }, null, 2);
  }

  async function load() {
    const response = await api("/v1/probes/bias/suites");
    if (response.status === 404 || response.status === 405) return false;
    if (!response.ok) throw await serviceError(response);
    const data = await response.json();
    const select = $("#probe-suite");
    select.replaceChildren();
    suites.clear();
    for (const s of data.data) {
      suites.set(s.name, s);
      select.append(new Option(s.name, s.name));
    }
    select.append(new Option("Custom template", ""));
    fillFromSuite();
    return true;
  }

  function buildRequest() {
    const samples = Number.parseInt($("#probe-samples").value, 10);
    const sampling = collectSampling();
    const body = {};
    for (const k of ["temperature", "top_p", "max_tokens", "seed"]) if (sampling[k] !== undefined) body[k] = sampling[k];
    const model = $("#model").value;
    if (model) body.model = model;
    body.samples = samples;
    const suite = suites.get($("#probe-suite").value);
    const template = $("#probe-template").value;
    let variables;
    try {
      variables = JSON.parse($("#probe-variables").value);
    } catch (err) {
      throw Object.assign(new Error(`Variables: ${err.message}`), { input: $("#probe-variables") });
    }
    const same = suite && template === suite.template && JSON.stringify(variables) === JSON.stringify({ [suite.attribute]: suite.groups, ...suite.variables });
    if (same) body.suite = suite.name;
    else Object.assign(body, { template, variables });
    return { path: "/v1/probes/bias", body };
  }

  function progress(probe) {
    const { done, total } = probe.progress;
    $("#probe-progress").max = total;
    $("#probe-progress").value = done;
    $("#probe-progress-text").textContent = `${done} / ${total} generations · ${probe.status}`;
  }

  async function run(request) {
    clearError();
    $("#probe-result").hidden = false;
    $("#probe-report").replaceChildren();
    const response = await api(request.path, { method: "POST", body: request.body });
    if (!response.ok) throw await serviceError(response);
    let probe = await response.json();
    current = probe.id;
    $("#probe-cancel").disabled = false;
    setStatus("Probe running…", true);
    progress(probe);
    try {
      while (!FINAL.has(probe.status)) {
        await new Promise((resolve) => setTimeout(resolve, 600));
        probe = await getJSON(`/v1/probes/${encodeURIComponent(probe.id)}`);
        progress(probe);
      }
    } finally {
      current = null;
      $("#probe-cancel").disabled = true;
    }
    setStatus(probe.status === "succeeded" ? "Probe finished." : `Probe ${probe.status}.`);
    renderReport(probe, $("#probe-report"));
  }

  async function cancel() {
    if (!current) return;
    try {
      const response = await api(`/v1/probes/${encodeURIComponent(current)}/cancel`, { method: "POST" });
      if (!response.ok) throw await serviceError(response);
    } catch (err) {
      showError(err);
    }
  }

  $("#probe-suite").addEventListener("change", fillFromSuite);
  $("#probe-cancel").addEventListener("click", cancel);
  return { load, buildRequest, run };
}
