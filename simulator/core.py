"""simulate(scenario) -> Trace: pick an engine, run it, resolve versions and memory, build the trace.

Two engines give the same schedule where both apply: the SimPy model (every method, shared devices, jitter,
stragglers) and the fast path (fixed-time sequential / async-lu / async-bu with a device per worker,
`simulator.fast`; gossip-lu / gossip-bu in exchange mode the same way, `simulator.fastgossip`).
`engine="auto"` takes the fast path whenever it is valid. `simulate_summary` returns what
`pdasgd.metrics.summarize(simulate(scenario))` would, without building spans on the fast path, so it stays
cheap for 10^6 batches (and for 128 gossiping ranks).

The trace says `source="simulator"`; `sequential_batch_s` is the sum of every layer's forward, backward and
update cost (plain backprop on one device of speed 1), and `info` records the scenario name, seed and engine.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from pdasgd.gossip import mix_records
from pdasgd.methods import MethodError
from pdasgd.metrics import Summary, summarize
from pdasgd.scenario import Scenario, ScenarioError
from pdasgd.trace import Trace
from simulator import fast, fastgossip, fastsummary
from simulator.engine import Engine, trace_workers, worker_groups
from simulator.memory import timeline_peak_bytes
from simulator.progress import ProgressBar, wanted
from simulator.records import MIX, Timeline, resolve_versions, timeline_spans
from simulator.workers import start_workers
from theory import ties

ENGINES = ("auto", "fast", "simpy")
TRACE_STEPS = 4_000_000  # batches x layers in a trace: 1.2e7 spans, about 3 GiB
SPAN_BYTES = 350  # measured: 205 resident per span, 345 at the peak of building them


def simulate(scenario: Scenario, engine: str = "auto", progress: bool | None = None) -> Trace:
    """The predicted trace of `scenario` (module docstring); `progress` None shows a bar on long runs."""
    chosen = choose_engine(scenario, engine)
    check_trace_size(scenario)
    with gc_paused():
        mixes: list[tuple[int, int]] = []
        if chosen == "fast" and scenario.definition.gossip:
            schedule = fastgossip.gossip_schedule(scenario)
            timeline, mixes = fastgossip.timeline(scenario, schedule), fastgossip.mix_meta(schedule)
        elif chosen == "fast":
            timeline = fast.schedule_timeline(fast.fixed_schedule(scenario))
        else:
            runner = _simpy_engine(scenario, progress)
            timeline, mixes = runner.timeline, runner.mix_meta
        return build_trace(scenario, timeline, chosen, mixes)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while millions of short-lived acyclic objects (events, rows, spans) are
    made: CPython's collector would rescan them all again and again (it more than doubled the run time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def simulate_summary(scenario: Scenario, engine: str = "auto", progress: bool | None = None) -> Summary:
    """`summarize(simulate(scenario))`, computed from arrays on the fast path."""
    chosen = choose_engine(scenario, engine)
    if chosen != "fast":
        return summarize(simulate(scenario, chosen, progress))
    if scenario.definition.gossip:
        return _gossip_summary(scenario, progress)
    schedule = fast.fixed_schedule(scenario)
    arguments = (schedule, trace_meta(scenario, "fast"), layer_sizes(scenario), tie_s(scenario))
    if not wanted(progress, schedule.batches, len(schedule.offsets.forward_start)):
        return fastsummary.summary(*arguments, worker_devices(scenario))
    with ProgressBar(schedule.batches, f"summarise {scenario.method}") as bar:
        return fastsummary.summary(*arguments, worker_devices(scenario), bar)


def _gossip_summary(scenario: Scenario, progress: bool | None) -> Summary:
    """simulate_summary of gossip on the fast path (`simulator.fastgossip`), rank by rank."""
    assert scenario.model is not None
    batches = scenario.run.batches
    show = wanted(progress, batches, len(scenario.model.layers))
    with gc_paused():
        if show:
            with ProgressBar(batches, f"gossip rounds {scenario.method}") as bar:
                schedule = fastgossip.gossip_schedule(scenario, bar)
        else:
            schedule = fastgossip.gossip_schedule(scenario)
        arguments = (scenario, schedule, trace_meta(scenario, "fast"), layer_sizes(scenario), tie_s(scenario))
        more = (worker_groups(scenario), trace_workers(scenario)[1])
        if not show:
            return fastgossip.summary(*arguments, *more)
        with ProgressBar(batches, f"summarise {scenario.method}") as bar:
            return fastgossip.summary(*arguments, *more, bar)


def choose_engine(scenario: Scenario, engine: str = "auto") -> str:
    """'fast' or 'simpy'; raises ScenarioError when the scenario cannot be simulated as asked."""
    check_costs(scenario)
    if engine not in ENGINES:
        raise ScenarioError(f"engine: must be one of {', '.join(ENGINES)}; got {engine!r}")
    problem = fast_path_problem(scenario)
    if engine == "fast" and problem:
        raise ScenarioError(f"engine: the fast path cannot run this scenario: {problem}")
    if engine == "simpy" or problem:
        return "simpy"
    return "fast"


def _mix_records(timeline: Timeline, groups: np.ndarray, mixes: list[tuple[int, int]]) -> dict:
    """`info["mix_records"]` of exchange mixes: a simulated mix takes its snapshot at the exchange's end,
    so its snapshot is the version just before it."""
    rows = np.flatnonzero(timeline.op == MIX)
    ranks, layers, versions = (groups[timeline.worker[rows]], timeline.layer[rows], timeline.version[rows])
    return mix_records(
        (rank, layer, version, version, round_, partner)
        for rank, layer, version, (round_, partner) in zip(
            ranks.tolist(), layers.tolist(), versions.tolist(), mixes, strict=True
        )
        if round_ >= 0
    )


def fast_path_problem(scenario: Scenario) -> str | None:
    """Why neither fast path (`simulator.fast`, `simulator.fastgossip` for gossip) can run the scenario;
    None when one can."""
    if scenario.definition.gossip:
        return fastgossip.problem(scenario)
    return fast.fast_path_problem(scenario)


def check_trace_size(scenario: Scenario) -> None:
    """ScenarioError when the trace would not fit in memory (about 350 bytes per span at the peak, 3 spans per
    layer and batch): the fast path's summary needs no trace, so fixed-time scenarios summarise far longer
    runs."""
    assert scenario.model is not None
    steps = scenario.run.batches * len(scenario.model.layers)
    if steps > TRACE_STEPS:
        gib = steps * 3 * SPAN_BYTES / 2**30
        raise ScenarioError(
            f"run.batches: a trace of {scenario.run.batches} batches x {len(scenario.model.layers)} layers "
            f"would take about {gib:.0f} GiB; at most {TRACE_STEPS:.0e} batches x layers have a trace "
            "(fixed-time scenarios on the fast path are summarised without one)"
        )


def check_costs(scenario: Scenario) -> None:
    if scenario.model is None:
        raise ScenarioError(
            "model: no layer costs; run `pdasgd profile` to measure them from [train], "
            "or give [model] (layers, forward_s, beta) or [[model.layer]] entries"
        )
    if "simulator" not in scenario.definition.engines:
        raise ScenarioError(f"method {scenario.method}: the simulator does not run it")
    try:
        scenario.definition.check(len(scenario.model.layers), scenario.workers)
    except MethodError as error:
        raise ScenarioError(f"method: {error}") from None


def run_simpy(scenario: Scenario, progress: bool | None = None) -> Timeline:
    """The SimPy engine's records of the scenario."""
    return _simpy_engine(scenario, progress).timeline


def _simpy_engine(scenario: Scenario, progress: bool | None = None) -> Engine:
    """A SimPy engine that has run the scenario (its records in `timeline`)."""
    assert scenario.model is not None
    engine = Engine(scenario)
    start_workers(engine)
    if not wanted(progress, engine.batches, len(engine.layers)):
        engine.timeline = engine.run()
        return engine
    with ProgressBar(engine.batches, f"simulate {scenario.method}") as bar:
        engine.progress = bar
        engine.timeline = engine.run()
    return engine


def sequential_batch_s(scenario: Scenario) -> float:
    assert scenario.model is not None
    return scenario.model.sequential_s


def tie_s(scenario: Scenario) -> float:
    return ties.tie_s(sequential_batch_s(scenario))


def layer_sizes(scenario: Scenario) -> tuple[np.ndarray, np.ndarray]:
    """(activation_bytes, param_bytes) per layer, input first."""
    assert scenario.model is not None
    layers = scenario.model.layers
    activations = np.array([layer.activation_bytes for layer in layers], dtype=np.int64)
    params = np.array([layer.param_bytes for layer in layers], dtype=np.int64)
    return activations, params


def worker_devices(scenario: Scenario) -> list[str]:
    """Device name of each worker, in worker order."""
    placement = scenario.device_of()
    return [placement[name] for name in scenario.worker_names()]


def trace_meta(scenario: Scenario, engine: str) -> dict:
    """Every Trace field but spans and memory_peak_bytes."""
    assert scenario.model is not None
    return {
        "source": "simulator",
        "method": scenario.method,
        "layers": len(scenario.model.layers),
        "batches": scenario.run.batches,
        "warmup": scenario.run.warmup,
        "device_slots": device_slots(scenario),
        "sequential_batch_s": sequential_batch_s(scenario),
        "info": {"scenario": scenario.name, "seed": scenario.run.seed, "engine": engine},
    }


def device_slots(scenario: Scenario) -> dict[str, int]:
    """Slots of every device with spans: the scenario's, and a rank's network (one op at a time)."""
    slots = {name: device.slots for name, device in scenario.device_table().items()}
    for device in trace_workers(scenario)[1]:
        slots.setdefault(device, 1)
    return slots


def build_trace(
    scenario: Scenario, timeline: Timeline, engine: str, mixes: list[tuple[int, int]] | None = None
) -> Trace:
    """The trace of an engine's records; `mixes` is (round, partner) of every `mix` row in order (exchange
    gossip: the trace's mix records, `pdasgd.gossip`)."""
    meta = trace_meta(scenario, engine)
    groups = worker_groups(scenario)
    resolve_versions(timeline, groups, meta["layers"], tie_s(scenario))
    records = _mix_records(timeline, groups, mixes) if mixes else None
    if records and records["rank"]:
        meta["info"]["mix_records"] = records
    activations, params = layer_sizes(scenario)
    peak = timeline_peak_bytes(timeline, groups, activations, params, meta["batches"], tie_s(scenario))
    spans = timeline_spans(timeline, *trace_workers(scenario))
    return Trace(spans=spans, memory_peak_bytes=peak, **meta)
