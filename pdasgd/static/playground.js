// pdasgd playground: controls, URL state and drawing. Every number comes from GET /api/simulate, which runs
// pdasgd's simulator; nothing here computes a schedule. View A's parameters are the URL's plain keys, view
// B's carry a "b." prefix, and "ab=1" shows B.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
// matplotlib's tab20 pairs, as the PNG Gantt charts use them: [dark, light] per batch, ten batches a cycle
const TAB20 = [
  ["#1f77b4", "#aec7e8"], ["#ff7f0e", "#ffbb78"], ["#2ca02c", "#98df8a"], ["#d62728", "#ff9896"],
  ["#9467bd", "#c5b0d5"], ["#8c564b", "#c49c94"], ["#e377c2", "#f7b6d2"], ["#7f7f7f", "#c7c7c7"],
  ["#bcbd22", "#dbdb8d"], ["#17becf", "#9edae5"],
];
const OTHER_COLOURS = { wait: "#bdbdbd", allreduce: "#7b3294", comm: "#4d4d4d" };
const VIEWS = ["a", "b"];
// which controls a method uses (the others keep their values but are hidden)
const HIDDEN = {
  sequential: ["forward", "backward", "workers", "max_in_flight", "handoff_s"],
  hogwild: ["forward", "backward", "max_in_flight", "handoff_s"],
  decoupled: ["workers"],
};
const STRAGGLER_DETAILS = ["straggler_index", "straggler_every", "straggler_s", "straggler_kind"];
const UNIFORM_COSTS = ["layers", "forward_s", "beta"];

const state = {
  controls: [],
  defaults: {},
  fileLayers: false,
  values: { a: {}, b: {} },
  ab: false,
  answers: { a: null, b: null },
  asked: { a: 0, b: 0 },
  timers: { a: null, b: null },
};

function el(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

function svg(tag, attributes = {}, text = "") {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "-";
  if (typeof value !== "number") return String(value);
  return Number(value.toPrecision(digits)).toString();
}

// --- state <-> URL ------------------------------------------------------------------------------------

function readUrl() {
  const query = new URLSearchParams(window.location.search);
  state.ab = query.get("ab") === "1";
  const given = { a: {}, b: {} };
  for (const [key, value] of query) {
    const [view, name] = key.startsWith("b.") ? ["b", key.slice(2)] : ["a", key];
    if (name in state.defaults) given[view][name] = value;
  }
  state.values.a = { ...state.defaults, ...given.a };
  if (Object.keys(given.b).length) {
    state.values.b = { ...state.defaults, ...given.b };
  } else {
    // B starts as A with one backward worker more: the first question most people ask
    const backward = Math.min(Number(state.values.a.backward) + 1, 16);
    state.values.b = { ...state.values.a, backward: String(backward) };
  }
}

function writeUrl() {
  const query = new URLSearchParams();
  if (state.ab) query.set("ab", "1");
  for (const view of VIEWS) {
    if (view === "b" && !state.ab) continue;
    for (const [name, value] of Object.entries(state.values[view])) {
      if (String(value) !== String(state.defaults[name])) query.set(view === "b" ? `b.${name}` : name, value);
    }
  }
  const search = query.toString();
  window.history.replaceState(null, "", search ? `?${search}` : window.location.pathname);
}

function apiQuery(view) {
  return new URLSearchParams(state.values[view]).toString();
}

// --- controls -----------------------------------------------------------------------------------------

function buildView(view) {
  const section = document.getElementById("view-template").content.firstElementChild.cloneNode(true);
  section.id = `view-${view}`;
  section.dataset.view = view;
  const form = section.querySelector(".controls");
  for (const control of state.controls) form.appendChild(buildControl(view, control));
  form.addEventListener("input", (event) => changed(view, event, 250));
  form.addEventListener("change", (event) => changed(view, event, 0));
  form.addEventListener("submit", (event) => event.preventDefault());
  section.querySelector(".download").addEventListener("click", () => download(view));
  document.getElementById("views").appendChild(section);
  return section;
}

function buildControl(view, control) {
  const label = el("label", { "data-control": control.name }, control.label);
  if (control.help) label.title = control.help;
  let input;
  if (control.kind === "choice") {
    input = el("select");
    for (const option of control.options) input.appendChild(el("option", { value: option }, option));
  } else {
    input = el("input", { type: "number", min: control.low, max: control.high, step: control.step });
  }
  input.id = `${view}-${control.name}`;
  input.name = control.name;
  label.appendChild(input);
  return label;
}

function showValues(view) {
  const section = document.getElementById(`view-${view}`);
  for (const [name, value] of Object.entries(state.values[view])) {
    const input = section.querySelector(`[name="${name}"]`);
    if (input && input.value !== String(value)) input.value = value;
  }
  const values = state.values[view];
  const kind = values.method in HIDDEN ? values.method : "decoupled";
  const hidden = new Set(HIDDEN[kind]);
  if (values.straggler === "none") STRAGGLER_DETAILS.forEach((name) => hidden.add(name));
  if (values.costs === "file") UNIFORM_COSTS.forEach((name) => hidden.add(name));
  if (!state.fileLayers) hidden.add("costs");
  for (const label of section.querySelectorAll("label[data-control]")) {
    label.hidden = hidden.has(label.dataset.control);
  }
  section.querySelector(".title").textContent = `${view.toUpperCase()}: ${describe(values)}`;
}

function describe(values) {
  if (values.method === "sequential") return "sequential";
  if (values.method === "hogwild") return `hogwild, ${values.workers} workers`;
  return `${values.method} ${values.forward}F:${values.backward}B`;
}

function changed(view, event, delayMs) {
  const input = event.target;
  if (!input.name) return;
  state.values[view][input.name] = input.value;
  showValues(view);
  writeUrl();
  window.clearTimeout(state.timers[view]);
  state.timers[view] = window.setTimeout(() => ask(view), delayMs);
}

// --- asking the simulator -----------------------------------------------------------------------------

async function ask(view) {
  const section = document.getElementById(`view-${view}`);
  const query = apiQuery(view);
  const serial = ++state.asked[view];
  const startedMs = performance.now();
  section.dataset.state = "loading";
  let body;
  let ok;
  try {
    const response = await fetch(`/api/simulate?${query}`);
    ok = response.ok;
    body = await response.json();
  } catch (error) {
    ok = false;
    body = { error: `the playground server did not answer (${error.message}); is it still running?` };
  }
  if (serial !== state.asked[view]) return; // a newer question is on its way
  const message = section.querySelector(".error");
  if (!ok) {
    message.textContent = body.error;
    message.hidden = false;
    section.dataset.state = "error";
    section.dataset.query = query;
    return;
  }
  message.hidden = true;
  state.answers[view] = body;
  section.dataset.query = query;
  drawAll();
  const shownMs = performance.now() - startedMs;
  section.dataset.shownMs = shownMs.toFixed(1);
  section.querySelector(".timing").textContent = `${body.engine} engine: simulated in ${fmt(body.elapsed_ms, 2)} ms, `
    + `drawn ${fmt(shownMs, 2)} ms after asking`;
  section.dataset.state = "ready";
}

function drawAll() {
  const shown = VIEWS.filter((view) => view === "a" || state.ab);
  const answered = shown.filter((view) => state.answers[view]);
  const endS = Math.max(...answered.map((view) => state.answers[view].makespan_s), 1e-9);
  for (const view of answered) draw(view, state.answers[view], endS);
}

function draw(view, answer, endS) {
  const section = document.getElementById(`view-${view}`);
  section.querySelector(".regime").textContent = answer.regime;
  section.querySelector(".gantt").replaceChildren(gantt(answer, endS));
  section.querySelector(".metrics").replaceChildren(...metrics(view, answer));
  section.querySelector(".staleness").replaceChildren(stalenessChart(answer));
}

// --- the Gantt chart ----------------------------------------------------------------------------------

const CHART = { width: 760, left: 86, right: 10, row: 26, top: 8, axis: 34 };

function gantt(answer, endS) {
  const rows = answer.rows.length;
  const height = CHART.top + rows * CHART.row + CHART.axis;
  const plotWidth = CHART.width - CHART.left - CHART.right;
  const x = (seconds) => CHART.left + (seconds / endS) * plotWidth;
  const chart = svg("svg", { viewBox: `0 0 ${CHART.width} ${height}`, class: "gantt-chart" });
  chart.appendChild(hatchPattern());
  const groups = answer.rows.map((worker, row) => {
    const y = CHART.top + row * CHART.row;
    const group = svg("g", { class: "row", "data-worker": worker });
    group.appendChild(svg("rect", { x: CHART.left, y, width: plotWidth, height: CHART.row - 4, fill: "#fff",
      stroke: "#eee" }));
    group.appendChild(svg("text", { x: CHART.left - 6, y: y + CHART.row / 2 + 2, "text-anchor": "end" },
      worker));
    chart.appendChild(group);
    return group;
  });
  for (const [row, letter, batch, start, end] of answer.blocks) {
    const y = CHART.top + row * CHART.row + 2;
    const [dark, light] = TAB20[batch % TAB20.length];
    const width = Math.max(x(end) - x(start), 0.5);
    const block = svg("rect", { x: x(start), y, width, height: CHART.row - 8,
      fill: letter === "B" ? dark : light, class: `block ${letter}` });
    block.appendChild(svg("title", {}, `${letter}${batch}: ${fmt(start)} - ${fmt(end)} s`));
    groups[row].appendChild(block);
    if (width > 24) {
      groups[row].appendChild(svg("text", { x: x(start) + width / 2, y: y + CHART.row / 2 - 1,
        "text-anchor": "middle", fill: letter === "B" ? "#fff" : "#000" }, `${letter}${batch}`));
    }
  }
  for (const [row, op, start, end] of answer.other) {
    const y = CHART.top + row * CHART.row + 2;
    const fill = op === "wait" ? "url(#hatch)" : OTHER_COLOURS[op] || "#444";
    groups[row].appendChild(svg("rect", { x: x(start), y, width: Math.max(x(end) - x(start), 0.5),
      height: CHART.row - 8, fill, class: `other ${op}` }));
  }
  for (const [row, , , time] of answer.updates) {
    const y = CHART.top + (row + 1) * CHART.row - 9;
    groups[row].appendChild(svg("line", { x1: x(time), x2: x(time), y1: y, y2: y + 6, stroke: "#000",
      "stroke-width": 0.7, class: "update" }));
  }
  chart.appendChild(timeAxis(x, endS, CHART.top + rows * CHART.row));
  return chart;
}

function hatchPattern() {
  const defs = svg("defs");
  const pattern = svg("pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse",
    patternTransform: "rotate(45)" });
  pattern.appendChild(svg("rect", { width: 6, height: 6, fill: OTHER_COLOURS.wait }));
  pattern.appendChild(svg("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#888", "stroke-width": 2 }));
  defs.appendChild(pattern);
  return defs;
}

function niceStep(span, ticks) {
  const raw = span / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw);
}

function timeAxis(x, endS, y) {
  const axis = svg("g", { class: "axis" });
  axis.appendChild(svg("line", { x1: x(0), x2: x(endS), y1: y, y2: y }));
  const step = niceStep(endS, 8);
  for (let t = 0; t <= endS + 1e-9; t += step) {
    axis.appendChild(svg("line", { x1: x(t), x2: x(t), y1: y, y2: y + 4 }));
    axis.appendChild(svg("text", { x: x(t), y: y + 15, "text-anchor": "middle" }, fmt(t, 3)));
  }
  axis.appendChild(svg("text", { x: x(endS), y: y + 29, "text-anchor": "end" }, "time (s)"));
  return axis;
}

// --- numbers ------------------------------------------------------------------------------------------

function metrics(view, answer) {
  const { summary, theory, contrast } = answer;
  const head = el("thead");
  head.appendChild(row(["", "simulated", "theory"], "th"));
  const body = el("tbody");
  body.appendChild(row(["throughput (batches/s)", cell(summary.throughput_batches_per_s,
    `${view}-throughput`), cell(theory.throughput_batches_per_s, `${view}-theory-throughput`)]));
  body.appendChild(row(["speed-up vs sequential", cell(summary.speedup_vs_sequential, `${view}-speedup`),
    cell(theory.speedup_vs_sequential)]));
  if (theory.speedup_limit !== null) {
    body.appendChild(row(["speed-up limit, paper's lambda", "", `${fmt(theory.speedup_limit)}, ${fmt(
      theory.paper_speedup)}`]));
  }
  body.appendChild(row(["mean staleness (versions)", cell(summary.staleness_mean, `${view}-staleness`),
    cell(theory.staleness_mean)]));
  if (contrast) {
    body.appendChild(row([`mean staleness with ${contrast.method}`, cell(contrast.staleness_mean), ""]));
  }
  for (const [worker, busy] of Object.entries(summary.utilization)) {
    body.appendChild(row([`utilisation ${worker}`, el("td", { class: "number" }, `${fmt(100 * busy, 3)}%`),
      ""]));
  }
  const note = el("caption", { class: "note" }, theory.applies ? "" : `theory: ${theory.note}`);
  return [note, head, body];
}

function cell(value, id) {
  const td = el("td", { class: "number" }, fmt(value));
  if (id) {
    td.id = id;
    td.dataset.value = value === null ? "" : String(value);
  }
  return td;
}

function row(cells, tag = "td") {
  const tr = el("tr");
  for (const content of cells) tr.appendChild(content instanceof Node ? content : el(tag, {}, content));
  return tr;
}

const STALE = { width: 760, height: 170, left: 86, right: 150, top: 10, bottom: 30 };

function stalenessChart(answer) {
  const series = [[answer.values.method, answer.summary.staleness_per_layer, "#1f77b4", ""]];
  if (answer.contrast) {
    series.push([answer.contrast.method, answer.contrast.staleness_per_layer, "#d62728", "5 3"]);
  }
  if (answer.theory.staleness_per_layer) {
    series.push(["theory", answer.theory.staleness_per_layer, "#000", "1 4"]);
  }
  const layers = answer.summary.staleness_per_layer.length;
  const top = Math.max(1, ...series.flatMap(([, values]) => values));
  const plotWidth = STALE.width - STALE.left - STALE.right;
  const plotHeight = STALE.height - STALE.top - STALE.bottom;
  const x = (layer) => STALE.left + (layers === 1 ? plotWidth / 2 : (layer / (layers - 1)) * plotWidth);
  const y = (versions) => STALE.top + plotHeight - (versions / top) * plotHeight;
  const chart = svg("svg", { viewBox: `0 0 ${STALE.width} ${STALE.height}`, class: "staleness-chart" });
  const axis = svg("g", { class: "axis" });
  axis.appendChild(svg("line", { x1: STALE.left, x2: STALE.left + plotWidth, y1: y(0), y2: y(0) }));
  axis.appendChild(svg("line", { x1: STALE.left, x2: STALE.left, y1: y(0), y2: y(top) }));
  for (const versions of [0, top / 2, top]) {
    axis.appendChild(svg("text", { x: STALE.left - 6, y: y(versions) + 4, "text-anchor": "end" },
      fmt(versions, 3)));
  }
  const step = Math.max(1, Math.ceil(layers / 16));
  for (let layer = 0; layer < layers; layer += step) {
    axis.appendChild(svg("text", { x: x(layer), y: y(0) + 15, "text-anchor": "middle" }, String(layer)));
  }
  axis.appendChild(svg("text", { x: STALE.left + plotWidth / 2, y: STALE.height - 2,
    "text-anchor": "middle" }, "layer (input first): mean staleness in versions"));
  chart.appendChild(axis);
  series.forEach(([label, values, colour, dash], index) => {
    const points = values.map((v, layer) => `${x(layer)},${y(v)}`).join(" ");
    chart.appendChild(svg("polyline", { points, fill: "none", stroke: colour, "stroke-width": 2,
      "stroke-dasharray": dash, class: `series ${label}` }));
    for (const [layer, v] of values.entries()) {
      chart.appendChild(svg("circle", { cx: x(layer), cy: y(v), r: 2.5, fill: colour }));
    }
    const legendY = STALE.top + 14 * index + 6;
    chart.appendChild(svg("line", { x1: STALE.width - STALE.right + 12, x2: STALE.width - STALE.right + 36,
      y1: legendY, y2: legendY, stroke: colour, "stroke-width": 2, "stroke-dasharray": dash }));
    chart.appendChild(svg("text", { x: STALE.width - STALE.right + 40, y: legendY + 4 }, label));
  });
  return chart;
}

// --- the rest -----------------------------------------------------------------------------------------

function download(view) {
  const answer = state.answers[view];
  if (!answer) return;
  const link = el("a", { download: `playground-${view}.toml` });
  link.href = URL.createObjectURL(new Blob([answer.toml], { type: "application/toml" }));
  document.body.appendChild(link);
  link.click();
  link.remove();
  window.setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function setAb(on) {
  state.ab = on;
  document.getElementById("views").classList.toggle("ab", on);
  document.getElementById("view-b").hidden = !on;
  writeUrl();
  if (on) ask("b");
  else drawAll();
}

async function start() {
  let defaults;
  try {
    defaults = await (await fetch("/api/defaults")).json();
  } catch (error) {
    const fatal = document.getElementById("fatal");
    fatal.textContent = `the playground server did not answer (${error.message})`;
    fatal.hidden = false;
    return;
  }
  state.controls = defaults.controls;
  state.defaults = Object.fromEntries(Object.entries(defaults.values).map(([k, v]) => [k, String(v)]));
  state.fileLayers = defaults.file_layers;
  document.getElementById("origin").textContent = `started from ${defaults.origin}`;
  readUrl();
  for (const view of VIEWS) {
    buildView(view);
    showValues(view);
  }
  const toggle = document.getElementById("ab");
  toggle.checked = state.ab;
  toggle.addEventListener("change", () => setAb(toggle.checked));
  document.getElementById("views").classList.toggle("ab", state.ab);
  document.getElementById("view-b").hidden = !state.ab;
  writeUrl();
  ask("a");
  if (state.ab) ask("b");
}

start();
