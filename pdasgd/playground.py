"""The schedule playground: one page on 127.0.0.1 whose answers come from the project's own simulator.

The page (`pdasgd/static/playground.*`, shipped in the package, nothing loaded from the internet) keeps its
state in its URL and asks `GET /api/simulate?<the same parameters>` on every change. This module turns
those parameters into a Scenario through the contract's own validation (`parse_scenario`), simulates it
(the fast path where it applies), and answers with what the page draws: the timeline as merged forward and
backward blocks per worker row, update ticks and waits; the summary (throughput, speed-up, utilisation,
per-layer staleness, and for async-lu/async-bu the other update rule's staleness on the same costs); the
closed forms (`pdasgd.closed_forms`) and a one-line reading of the regime. The page only draws: no part of
the schedule is computed in JavaScript.

A bad parameter is a `PlaygroundError`: HTTP 400 with `{"error": "<one line>"}`, shown on the page.
`GET /api/defaults` gives the controls (names, kinds, bounds) and their initial values, which come from a
scenario file when the command was given one: its method, per-layer costs, workers and delays (its
devices and placement are not used: the playground gives every worker its own device).
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pdasgd import methods
from pdasgd.cli.common import finite, one_line
from pdasgd.closed_forms import regime, theory_for
from pdasgd.plots import work_blocks
from pdasgd.scenario import Scenario, ScenarioError, parse_scenario

HOST = "127.0.0.1"
MAX_LAYERS = 64  # the playground's own bounds keep every answer interactive
MAX_BATCHES = 200
MAX_WORKERS = 16
STATIC = {
    "/": ("playground.html", "text/html; charset=utf-8"),
    "/playground.js": ("playground.js", "text/javascript; charset=utf-8"),
    "/playground.css": ("playground.css", "text/css; charset=utf-8"),
}


class PlaygroundError(ValueError):
    """A parameter the playground cannot answer for; the message is one line for the page."""


@dataclass(frozen=True)
class Control:
    """One control of the page: a query parameter, what it sets and its bounds."""

    name: str
    label: str
    kind: str  # "int", "float" or "choice"
    low: float = 0
    high: float = 0
    step: float = 1
    options: tuple[str, ...] = ()
    help: str = ""

    def parse(self, text: str) -> Any:
        if self.kind == "choice":
            if text not in self.options:
                raise PlaygroundError(f"{self.name}: must be one of {', '.join(self.options)}; got {text!r}")
            return text
        try:
            value = int(text) if self.kind == "int" else float(text)
        except ValueError:
            kind = "an integer" if self.kind == "int" else "a number"
            raise PlaygroundError(f"{self.name}: must be {kind}, got {text!r}") from None
        if not self.low <= value <= self.high:  # also refuses nan
            raise PlaygroundError(f"{self.name}: must be between {self.low:g} and {self.high:g}, got {text}")
        return value

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "kind": self.kind,
            "low": self.low,
            "high": self.high,
            "step": self.step,
            "options": list(self.options),
            "help": self.help,
        }


def playground_methods() -> tuple[str, ...]:
    """Methods of one process that the simulator runs (the ranks' methods need replicas of devices)."""
    return tuple(
        name
        for name in methods.names()
        if not methods.lookup(name).ranks and "simulator" in methods.lookup(name).engines
    )


def controls() -> tuple[Control, ...]:
    """Every control, in the page's order."""
    return (
        Control("method", "method", "choice", options=playground_methods()),
        Control("costs", "layer costs", "choice", options=("uniform", "file"), help="file: the scenario's"),
        Control("layers", "layers", "int", 1, MAX_LAYERS),
        Control("forward_s", "forward F (s/batch)", "float", 0.001, 100, 0.1),
        Control("beta", "beta = B/F", "float", 0, 20, 0.1),
        Control("forward", "forward workers", "int", 1, MAX_WORKERS),
        Control("backward", "backward workers", "int", 1, MAX_WORKERS),
        Control("workers", "hogwild workers", "int", 1, MAX_WORKERS),
        Control("max_in_flight", "max in flight Q", "int", 1, MAX_BATCHES),
        Control("handoff_s", "hand-off delay d (s)", "float", 0, 100, 0.1),
        Control("visibility_s", "update visibility delay (s)", "float", 0, 100, 0.1),
        Control("jitter_cv", "jitter (cv)", "float", 0, 2, 0.05),
        Control("straggler", "straggler", "choice", options=("none", "forward", "backward", "worker")),
        Control("straggler_index", "straggler's index", "int", 0, MAX_WORKERS - 1),
        Control("straggler_every", "straggles every n-th batch", "int", 1, MAX_BATCHES),
        Control("straggler_s", "straggler's extra time (s)", "float", 0, 100, 0.1),
        Control("straggler_kind", "straggler kind", "choice", options=("sleep", "busy")),
        Control("batches", "batches", "int", 2, MAX_BATCHES),
        Control("seed", "seed", "int", 0, 2**31 - 1),
    )


CONTROLS = {control.name: control for control in controls()}
DEFAULTS: dict[str, Any] = {
    "method": "async-lu",
    "costs": "uniform",
    "layers": 4,
    "forward_s": 1.0,
    "beta": 2.0,
    "forward": 1,
    "backward": 1,
    "workers": 2,
    "max_in_flight": 4,
    "handoff_s": 0.0,
    "visibility_s": 0.0,
    "jitter_cv": 0.0,
    "straggler": "none",
    "straggler_index": 0,
    "straggler_every": 3,
    "straggler_s": 1.0,
    "straggler_kind": "sleep",
    "batches": 12,
    "seed": 0,
}


# --- parameters -> scenario ------------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """What the playground starts from: the defaults, or a scenario file's values and its layer table."""

    values: dict[str, Any]
    layers: list[dict[str, Any]] | None = None  # the file's per-layer costs (costs = file)
    origin: str = "defaults"


def base_from(scenario: Scenario | None, origin: str = "defaults") -> Base:
    """The playground's starting point; a scenario the playground cannot show is refused in one line."""
    if scenario is None:
        return Base(dict(DEFAULTS))
    if scenario.method not in playground_methods():
        raise PlaygroundError(
            f"method: the playground shows {', '.join(playground_methods())}; {origin} has {scenario.method}"
        )
    if scenario.model is None:
        raise PlaygroundError(f"model: {origin} has no layer costs ([model]); profile it first")
    model, workers, delays = scenario.model, scenario.workers, scenario.delays
    values = {
        **DEFAULTS,
        "method": scenario.method,
        "costs": "file",
        "layers": len(model.layers),
        "forward_s": model.forward_s,
        "beta": model.beta,
        "forward": workers.forward,
        "backward": workers.backward,
        "workers": workers.per_replica,
        "max_in_flight": workers.max_in_flight,
        "handoff_s": delays.handoff_s,
        "visibility_s": delays.visibility_s,
        "jitter_cv": delays.jitter_cv,
        "batches": min(scenario.run.batches, MAX_BATCHES),
        "seed": scenario.run.seed,
    }
    values = {name: _clamped(name, value) for name, value in values.items()}
    layers = [{key: getattr(layer, key) for key in LAYER_KEYS} for layer in model.layers]
    return Base(values, layers[:MAX_LAYERS] if len(layers) <= MAX_LAYERS else None, origin)


LAYER_KEYS = ("name", "forward_s", "backward_s", "update_s", "activation_bytes", "param_bytes")


def _clamped(name: str, value: Any) -> Any:
    control = CONTROLS[name]
    if control.kind == "choice":
        return value
    return type(value)(min(max(value, control.low), control.high))


def read_query(query: str, base: Base) -> dict[str, Any]:
    """The page's parameters (a URL query) over the base's values; unknown or repeated ones are refused."""
    values = dict(base.values)
    for name, texts in parse_qs(query, keep_blank_values=True).items():
        if name not in CONTROLS:
            raise PlaygroundError(f"unknown parameter {name!r}; known: {', '.join(CONTROLS)}")
        if len(texts) > 1:
            raise PlaygroundError(f"{name}: given {len(texts)} times")
        values[name] = CONTROLS[name].parse(texts[0])
    return values


def scenario_of(values: dict[str, Any], base: Base) -> Scenario:
    """The Scenario the values describe, validated by the contract itself (its message, on one line)."""
    try:
        return parse_scenario(scenario_data(values, base))
    except ScenarioError as error:
        raise PlaygroundError(str(error)) from None


def scenario_data(values: dict[str, Any], base: Base) -> dict[str, Any]:
    """The values as a scenario table (what "Download scenario" saves and `pdasgd simulate` reads)."""
    batches = values["batches"]
    data: dict[str, Any] = {
        "name": "playground",
        "method": values["method"],
        "model": _model(values, base),
        "workers": {
            "forward": values["forward"],
            "backward": values["backward"],
            "max_in_flight": values["max_in_flight"],
            "replicas": 1,
            "per_replica": values["workers"],
        },
        "delays": {
            "handoff_s": values["handoff_s"],
            "visibility_s": values["visibility_s"],
            "jitter_cv": values["jitter_cv"],
        },
        "run": {"batches": batches, "warmup": batches // 4, "seed": values["seed"]},
    }
    straggler = _straggler(values)
    if straggler:
        data["delays"]["straggler"] = [straggler]
    return data


def _model(values: dict[str, Any], base: Base) -> dict[str, Any]:
    if values["costs"] == "uniform":
        return {"layers": values["layers"], "forward_s": values["forward_s"], "beta": values["beta"]}
    if base.layers is None:
        raise PlaygroundError(
            "costs: file needs a scenario file with at most "
            f"{MAX_LAYERS} layers (`pdasgd playground S.toml`); this playground has {base.origin}"
        )
    return {"layer": [dict(layer) for layer in base.layers]}


def _straggler(values: dict[str, Any]) -> dict[str, Any] | None:
    role = values["straggler"]
    if role == "none":
        return None
    return {
        "worker": f"{role}:{values['straggler_index']}",
        "every": values["straggler_every"],
        "extra_s": values["straggler_s"],
        "kind": values["straggler_kind"],
    }


# --- the answer ------------------------------------------------------------------------------------


def answer(query: str, base: Base) -> dict[str, Any]:
    """Everything the page shows for one view, from the simulator and the closed forms."""
    import simulator
    from pdasgd.metrics import summarize

    started = time.perf_counter()
    values = read_query(query, base)
    scenario = scenario_of(values, base)
    try:
        engine = simulator.choose_engine(scenario)
        trace = simulator.simulate(scenario, engine=engine, progress=False)
    except ScenarioError as error:
        raise PlaygroundError(str(error)) from None
    summary = summarize(trace)
    rows = methods.worker_order(trace.method, trace.workers())
    return {
        "values": values,
        "toml": scenario.to_toml(),
        "engine": engine,
        "rows": rows,
        **timeline(trace, rows),
        "summary": _summary(summary, scenario),
        "contrast": _contrast(scenario),
        "theory": _theory(scenario),
        "regime": regime(scenario),
        "elapsed_ms": (time.perf_counter() - started) * 1000,
    }


def timeline(trace, rows: list[str]) -> dict[str, Any]:
    """The trace as the page draws it: [row, "F"/"B", batch, start_s, end_s] blocks (a batch's layer ops on
    one worker merged), [row, batch, layer, time_s] update ticks, [row, op, start_s, end_s] waits."""
    row_of = {worker: row for row, worker in enumerate(rows)}
    blocks = [
        [row_of[worker], letter, batch, start_s, end_s]
        for op, letter in (("forward", "F"), ("backward", "B"))
        for (worker, batch), spans in work_blocks(trace.spans, op).items()
        for start_s, end_s in spans
    ]
    updates = [[row_of[s.worker], s.batch, s.layer, s.end_s] for s in trace.spans if s.op == methods.UPDATE]
    other = [
        [row_of[s.worker], s.op, s.start_s, s.end_s]
        for s in trace.spans
        if s.op not in (methods.FORWARD, methods.BACKWARD, methods.UPDATE)
    ]
    makespan_s = max((s.end_s for s in trace.spans), default=0.0)
    return {"blocks": blocks, "updates": updates, "other": other, "makespan_s": makespan_s}


def _summary(summary, scenario: Scenario) -> dict[str, Any]:
    device_of = scenario.device_of()
    return {
        "throughput_batches_per_s": summary.throughput_batches_per_s,
        "speedup_vs_sequential": summary.speedup_vs_sequential,
        "utilization": {worker: summary.utilization[device] for worker, device in device_of.items()},
        "staleness_mean": summary.staleness.mean,
        "staleness_per_layer": summary.staleness.per_layer_mean,
        "makespan_s": summary.makespan_s,
    }


def _contrast(scenario: Scenario) -> dict[str, Any] | None:
    """The other update rule (BU beside LU) on the same costs and workers, for the staleness view."""
    import simulator

    other = scenario.definition.contrast
    if other is None:
        return None
    summary = simulator.simulate_summary(scenario.with_overrides({"method": other}), progress=False)
    return {
        "method": other,
        "throughput_batches_per_s": summary.throughput_batches_per_s,
        "staleness_mean": summary.staleness.mean,
        "staleness_per_layer": summary.staleness.per_layer_mean,
    }


def _theory(scenario: Scenario) -> dict[str, Any]:
    closed = theory_for(scenario)
    staleness = closed.get("staleness") or {}
    return {
        "applies": closed["applies"],
        "note": closed["note"],
        "throughput_batches_per_s": closed.get("throughput_batches_per_s"),
        "speedup_vs_sequential": closed.get("speedup_vs_sequential"),
        "speedup_limit": closed.get("speedup_limit"),
        "paper_speedup": closed.get("paper_speedup"),
        "staleness_mean": staleness.get("mean"),
        "staleness_per_layer": staleness.get("per_layer_mean"),
        "staleness_source": staleness.get("source"),
    }


def defaults(base: Base) -> dict[str, Any]:
    return {
        "controls": [control.to_dict() for control in controls()],
        "values": base.values,
        "origin": base.origin,
        "file_layers": base.layers is not None,
    }


# --- the server ------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """GET only: the page's three files, /api/defaults and /api/simulate."""

    server_version = "pdasgd-playground"
    server: PlaygroundServer

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        url = urlsplit(self.path)
        if url.path in STATIC:
            name, kind = STATIC[url.path]
            self._send(HTTPStatus.OK, kind, static_text(name).encode())
        elif url.path == "/api/defaults":
            self._json(HTTPStatus.OK, defaults(self.server.base))
        elif url.path == "/api/simulate":
            try:
                self._json(HTTPStatus.OK, answer(url.query, self.server.base))
            except PlaygroundError as error:
                self._json(HTTPStatus.BAD_REQUEST, {"error": one_line(error)})
            except Exception as error:  # a bug: the page says so in one line, the log has the traceback
                self.log_error("%s", traceback.format_exc())
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {one_line(error)}"})
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {url.path}"})

    def _json(self, status: HTTPStatus, body: dict) -> None:
        self._send(status, "application/json", json.dumps(finite(body), allow_nan=False).encode())

    def _send(self, status: HTTPStatus, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.server.verbose:
            super().log_request(code, size)


class PlaygroundServer(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 only, holding the playground's base values."""

    daemon_threads = True

    def __init__(self, port: int, base: Base, verbose: bool = False) -> None:
        self.base, self.verbose = base, verbose
        super().__init__((HOST, port), Handler)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"


def start_server(port: int, base: Base, verbose: bool = False) -> PlaygroundServer:
    """Bind 127.0.0.1:`port` (0: any free port); a port in use is a PlaygroundError."""
    try:
        return PlaygroundServer(port, base, verbose)
    except OSError as error:
        raise PlaygroundError(f"--port {port}: cannot listen on {HOST}: {error.strerror or error}") from None


def static_text(name: str) -> str:
    return resources.files("pdasgd").joinpath("static", name).read_text(encoding="utf-8")
