"""`executor.profile(scenario)`: per-layer forward, backward and update costs of the scenario's network.

The costs are measured on the executor's own code path, not on a model of it: one worker
(`executor.workers.Worker`, the one the runtime uses, with `torch.set_num_threads(threads_per_worker)` in its
thread) trains the scenario's network on the scenario's batches and device, and its own spans give the
times. The worker runs one batch's steps of the scenario's method (`Method.batch_steps`: every role's
steps in turn), so each layer is updated where and as the method updates it. Each layer's forward span
covers reading the version, making leaves and running the block (plus the loss for the last block), its
backward span one `autograd.grad` call, its update span the SGD step under the layer's lock. Updates are
measured as the scenario's method pays them: in place for a method with one worker (nothing else reads the
version), as a new tensor for the others (a pending forward usually has).

Each op's cost includes the gap before it on the worker's timeline (fetching the batch, Python between
ops: the per-op overhead), so a batch's costs add up to its wall time; `LayerSamples.samples` keep the spans
alone and `overhead` the gaps.

The first `warmup` batches are dropped. For each layer and op the profile keeps every sample and writes the
mean: op times are right-skewed, and the simulator's feasibility study (docs/platform.md) found means
measured on this code path predicted threaded runs better than medians. Medians are kept for the table.

`activation_bytes` and `param_bytes` are the runtime's own figures (`executor.networks`): what one batch keeps
alive from a block's forward to its backward, and one version of its parameters.

`measure_pipelined` measures what one worker alone cannot show: ops run slower when a forward thread and a
backward thread share the device, as the pipelined methods make them. Alone, two independent copies of a
network slow each other by a few percent; in the pipeline the forward reads parameters the other thread
has just written and the backward frees activations the other thread allocated, and on the 2-core CPU
machine the op times rise by 20-35% (benchmarks/fidelity.md). It takes the op times from a short 1F+1B
run instead: of the scenario's method when it hands batches from forward to backward workers, else of
async-lu.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from executor.networks import block_names
from executor.setup import make_context, make_setup
from executor.timing import waited
from executor.workers import PendingBatch, Worker
from pdasgd.intervals import Interval, correlated_mean_interval
from pdasgd.methods import ALLREDUCE
from pdasgd.scenario import Delays, Layer, Scenario

OPS = ("forward", "backward", "update")
CHECK_EVERY = 10  # batches between checks of the stopping rule
TARGET = 0.02  # the 95% interval of a batch's mean forward and backward cost within ±2% of the mean
CAP_S = 30.0  # the longest a profile keeps measuring to reach TARGET (PDASGD_PROFILE_CAP_S)
MIN_BATCHES = 20
MIN_SECONDS = 15.0  # a real network's profile runs at least this long (`profile_floor_s`)
MAX_BATCHES = 100_000


@dataclass(frozen=True)
class LayerSamples:
    """Every measured time of one layer, per op, in seconds, and its memory figures."""

    name: str
    samples: dict[str, list[float]]
    activation_bytes: int
    param_bytes: int
    overhead: dict[str, list[float]] = field(default_factory=dict)  # gap before each op, seconds

    def statistic(self, op: str, how: str = "mean") -> float:
        """The op's span time alone."""
        return _statistic(self.samples[op], how)

    def cost(self, op: str, how: str = "mean") -> float:
        """The op's cost: its span time plus the gap before it."""
        return self.statistic(op, how) + _statistic(self.overhead.get(op) or [0.0], how)

    def layer(self, how: str = "mean") -> Layer:
        costs = {f"{op}_s": self.cost(op, how) for op in OPS}
        return Layer(self.name, **costs, activation_bytes=self.activation_bytes, param_bytes=self.param_bytes)


def _statistic(values: list[float], how: str) -> float:
    return statistics.fmean(values) if how == "mean" else statistics.median(values)


def profile(scenario: Scenario, batches: int = 30, warmup: int = 5, how: str = "mean") -> list[Layer]:
    """The scenario's network as `[[model.layer]]` entries: mean (or median) per-layer costs and bytes."""
    return [layer.layer(how) for layer in measure(scenario, batches, warmup)]


def measure(
    scenario: Scenario, batches: int = 30, warmup: int = 5, enough: Callable[[list], bool] | None = None
) -> list[LayerSamples]:
    """Train `warmup + batches` batches with one worker thread and collect its per-layer op times;
    `enough(spans)`, asked every CHECK_EVERY batches with the measured spans so far, may stop it sooner."""
    if batches < 1 or warmup < 0:
        raise ValueError(f"profile: needs batches >= 1 and warmup >= 0, got {batches} and {warmup}")
    run = replace(scenario.run, batches=warmup + batches, warmup=0)
    setup = make_setup(replace(scenario, run=run, delays=Delays()))  # one worker: no delay applies
    alone = len(scenario.worker_names()) == 1
    for layer in setup.layers:
        layer.in_place = layer.in_place and alone
    ctx = make_context(setup, threading.Event())
    errors: list[BaseException] = []
    # an all-reduce (ddp's, across ranks) is no cost of one worker's: the ranks' probe measures it
    every = scenario.definition.batch_steps(len(setup.layers), scenario.workers)
    steps = tuple(step for step in every if step.op != ALLREDUCE)
    stop = _stopper(ctx, warmup, enough)
    thread = threading.Thread(target=_train, args=(ctx, steps, errors, stop), name="pdasgd profile")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    samples, overhead = _collect(ctx.logs["profile"].spans(), warmup)
    names = block_names(setup.blocks)
    return [
        LayerSamples(
            names[m],
            {op: samples[(m, op)] for op in OPS},
            setup.activation_bytes[m],
            setup.layers[m].nbytes,
            {op: overhead[(m, op)] for op in OPS},
        )
        for m in range(len(setup.layers))
    ]


def _collect(spans: list, warmup: int) -> tuple[dict, dict]:
    """Per (layer, op): the span times of batches from `warmup` on, and the gap before each."""
    samples: dict[tuple[int, str], list[float]] = defaultdict(list)
    overhead: dict[tuple[int, str], list[float]] = defaultdict(list)
    previous_end_s = None
    for span in sorted(spans, key=lambda span: span.start_s):
        if span.op in OPS and span.batch >= warmup:
            samples[(span.layer, span.op)].append(span.duration_s)
            if previous_end_s is not None:
                overhead[(span.layer, span.op)].append(max(0.0, span.start_s - previous_end_s))
        previous_end_s = span.end_s
    return samples, overhead


def _stopper(ctx, warmup: int, enough: Callable[[list], bool] | None) -> Callable[[int], bool]:
    """Whether the profile thread may stop after `batch`: `enough` is asked every CHECK_EVERY measured
    batches with the spans logged since it was last asked (so a check costs as little late as early). The
    check is logged as a `wait` span, so its time is not taken for the gap before the next op."""
    seen = [0]

    def done(batch: int) -> bool:
        measured = batch + 1 - warmup
        if enough is None or measured < CHECK_EVERY or measured % CHECK_EVERY:
            return False
        log = ctx.logs["profile"]
        start = ctx.clock.stamp()
        ctx.clock.finish()  # CUDA: the events must have happened before they are read
        new, seen[0] = log.spans(seen[0]), len(log.rows)
        stop = enough(new)
        log.add("wait", batch, None, start, ctx.clock.stamp())  # the check's time is no op's gap
        waited()  # nor does it shorten the next timed op (executor.timing's nominal clock)
        return stop

    return done


def _train(ctx, steps: tuple, errors: list[BaseException], done: Callable[[int], bool]) -> None:
    try:
        worker = Worker(ctx, "profile", steps)
        for batch in range(ctx.first, ctx.end):
            worker.run(PendingBatch(batch))
            if done(batch):
                break
        ctx.clock.finish()
    except BaseException as error:  # re-raised by the caller's thread
        errors.append(error)


def measure_pipelined(
    scenario: Scenario, solo: list[LayerSamples], batches: int = 40, warmup: int = 20
) -> list[LayerSamples]:
    """Per-layer op times as the pipelined methods pay them: a short async-lu run with one forward and one
    backward thread (max_in_flight 4, no injected delays) on the scenario's network and device. Span times
    come from that run; the per-op overhead (gap before each op) from `solo`, since the pipeline's gaps
    are mostly waiting, which the simulator models itself."""
    from executor.runtime import run

    pipeline = replace(
        scenario,
        method=_pipelined_method(scenario),
        workers=replace(scenario.workers, forward=1, backward=1, max_in_flight=4),
        delays=Delays(),
        run=replace(scenario.run, batches=warmup + batches, warmup=warmup),
    )
    samples: dict[tuple[int, str], list[float]] = defaultdict(list)
    for span in run(pipeline, curve_points=0).trace.spans:
        if span.op in OPS and span.batch >= warmup:
            samples[(span.layer, span.op)].append(span.duration_s)
    return [replace(layer, samples={op: samples[(m, op)] for op in OPS}) for m, layer in enumerate(solo)]


def _pipelined_method(scenario: Scenario) -> str:
    """The one-process pipeline to measure: the method itself, what each of its ranks runs (gossip-lu:
    async-lu), or async-lu for methods without a hand-off."""
    definition = scenario.definition
    if definition.per_rank:
        return definition.per_rank
    return scenario.method if definition.windowed else "async-lu"


# --- profiling to a stated precision ----------------------------------------------------------------


def profile_cap_s() -> float:
    """The profiles' time cap: `PDASGD_PROFILE_CAP_S` seconds if set to a positive number, else CAP_S."""
    try:
        value = float(os.environ.get("PDASGD_PROFILE_CAP_S", CAP_S))
    except ValueError:
        return CAP_S
    return value if value > 0 else CAP_S


def profile_floor_s(scenario: Scenario, cap_s: float) -> float:
    """The shortest a profile of a real network runs before its stopping rule may stop it: MIN_SECONDS,
    or the cap if that is shorter; none for the timed network, which sleeps its costs. A series shorter
    than the machine's correlation (5-16 s here) underestimates it and reads too precise: on draw 3 of
    benchmarks/fidelity.md, pairs of fresh profiles of which one had stopped within 15 s at a stated ±2%
    gave predictions a median 17.8% apart, pairs that both ran 15 s or more 5.3%."""
    return 0.0 if scenario.train.network == "timed" else min(MIN_SECONDS, cap_s)


@dataclass(frozen=True)
class Precision:
    """How well a profile knows one batch's costs: the 95% intervals of the mean forward time and of the
    mean backward-plus-update time per batch, over `batches` batches measured in `seconds`. The batches
    are a series in time order, correlated by the machine's drifting speed, so each interval is the t
    interval at the series' effective sample size (`pdasgd.intervals.correlated_mean_interval`)."""

    batches: int
    seconds: float
    forward: Interval
    backward: Interval
    target: float

    @property
    def half_width(self) -> float:
        """The larger relative half-width of the two intervals."""
        return max(self.forward.relative_half_width, self.backward.relative_half_width)

    @property
    def reached(self) -> bool:
        return self.half_width <= self.target

    def to_dict(self) -> dict:
        return {
            "batches": self.batches,
            "seconds": self.seconds,
            "forward_s": self.forward.to_dict(),
            "backward_s": self.backward.to_dict(),
            "relative_half_width": self.half_width,
            "target": self.target,
            "reached": self.reached,
        }


def batch_totals(spans: list, warmup: int, gaps: bool) -> tuple[list[float], list[float]]:
    """Per measured batch: its forward time and its backward-plus-update time (with the gap before each
    op when `gaps`; for one worker, whose gaps are Python between ops, not waiting)."""
    forward: dict[int, float] = defaultdict(float)
    backward: dict[int, float] = defaultdict(float)
    previous_end_s = None
    for span in sorted(spans, key=lambda span: span.start_s):
        if span.op in OPS and span.batch >= warmup:
            cost = span.duration_s
            if gaps and previous_end_s is not None:
                cost += max(0.0, span.start_s - previous_end_s)
            (forward if span.op == "forward" else backward)[span.batch] += cost
        previous_end_s = span.end_s
    complete = sorted(set(forward) & set(backward))
    return [forward[b] for b in complete], [backward[b] for b in complete]


def precision(spans: list, warmup: int, target: float, seconds: float, gaps: bool = True) -> Precision:
    forward, backward = batch_totals(spans, warmup, gaps)
    return Precision(
        len(forward), seconds, correlated_mean_interval(forward), correlated_mean_interval(backward), target
    )


def measure_precisely(
    scenario: Scenario,
    target: float = TARGET,
    cap_s: float | None = None,
    warmup: int = 5,
    min_s: float | None = None,
) -> tuple[list[LayerSamples], Precision]:
    """Profile one worker until the 95% intervals of a batch's mean forward and backward costs are within
    ±`target` of the means (the stopping rule, checked every CHECK_EVERY batches once MIN_BATCHES are in
    and `min_s` seconds have passed: `profile_floor_s`), or until `cap_s` seconds have passed: then
    `Precision.reached` is False and says how far it got."""
    cap_s = profile_cap_s() if cap_s is None else cap_s
    min_s = profile_floor_s(scenario, cap_s) if min_s is None else min_s
    started = time.perf_counter()
    totals = _Totals(warmup)

    def enough(new_spans: list) -> bool:
        totals.add(new_spans)
        elapsed = time.perf_counter() - started
        measured = totals.precision(target, elapsed)
        return elapsed > cap_s or (measured.batches >= MIN_BATCHES and measured.reached and elapsed >= min_s)

    layers = measure(scenario, MAX_BATCHES, warmup, enough)
    spans = _as_spans(layers)
    return layers, precision(spans, 0, target, time.perf_counter() - started)


def measure_pipelined_precisely(
    scenario: Scenario, solo: list[LayerSamples], target: float = TARGET, cap_s: float | None = None
) -> tuple[list[LayerSamples], Precision]:
    """`measure_pipelined` until its per-batch op times are known to ±`target` (or `cap_s` has passed):
    runs of 40, 80, 160, ... measured batches, their samples pooled."""
    cap_s = profile_cap_s() if cap_s is None else cap_s
    started = time.perf_counter()
    pooled: list[LayerSamples] | None = None
    batches = 40
    while True:
        layers = measure_pipelined(scenario, solo, batches=batches)
        pooled = layers if pooled is None else [_pool(a, b) for a, b in zip(pooled, layers, strict=True)]
        measured = precision(_as_spans(pooled), 0, target, time.perf_counter() - started, gaps=False)
        if measured.reached or time.perf_counter() - started > cap_s:
            return pooled, measured
        batches *= 2


class _Totals:
    """Per-batch forward and backward totals (gaps included), accumulated as spans arrive in order."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.forward: dict[int, float] = defaultdict(float)
        self.backward: dict[int, float] = defaultdict(float)
        self.previous_end_s: float | None = None

    def add(self, spans: list) -> None:
        for span in spans:
            if span.op in OPS and span.batch >= self.warmup:
                gap = 0.0 if self.previous_end_s is None else max(0.0, span.start_s - self.previous_end_s)
                (self.forward if span.op == "forward" else self.backward)[span.batch] += span.duration_s + gap
            self.previous_end_s = span.end_s

    def precision(self, target: float, seconds: float) -> Precision:
        done = sorted(set(self.forward) & set(self.backward))  # checked after a batch: every one is whole
        forward, backward = [self.forward[b] for b in done], [self.backward[b] for b in done]
        return Precision(
            len(done), seconds, correlated_mean_interval(forward), correlated_mean_interval(backward), target
        )


def _pool(a: LayerSamples, b: LayerSamples) -> LayerSamples:
    return replace(a, samples={op: a.samples[op] + b.samples[op] for op in OPS})


class _Span:
    """A stand-in span rebuilt from LayerSamples (batch order is what the totals need)."""

    __slots__ = ("op", "batch", "layer", "start_s", "end_s")

    def __init__(self, op: str, batch: int, layer: int, start_s: float, end_s: float) -> None:
        self.op, self.batch, self.layer, self.start_s, self.end_s = op, batch, layer, start_s, end_s

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def _as_spans(layers: list[LayerSamples]) -> list[_Span]:
    """The samples as back-to-back spans, batch by batch, with each op's gap before it kept."""
    spans, now = [], 0.0
    count = min((len(layer.samples[op]) for layer in layers for op in OPS), default=0)
    for batch in range(count):
        for m, layer in enumerate(layers):
            for op in OPS:
                gaps = layer.overhead.get(op) or []
                now += gaps[batch] if batch < len(gaps) else 0.0
                spans.append(_Span(op, batch, m, now, now + layer.samples[op][batch]))
                now = spans[-1].end_s
    return spans


# --- costs as the scenario's own thread layout pays them ---------------------------------------------


@dataclass(frozen=True)
class Layout:
    """What calibration runs of the scenario's own workers measured: per-layer CPU costs (`layers`), how
    precisely (`precision`), and the runs themselves, whose walls calibrate the simulated CPU
    (`pdasgd.cli.prediction.calibrated`)."""

    layers: list[LayerSamples]
    precision: Precision
    runs: list  # (scenario, trace) of each calibration run


def measure_layout_precisely(
    scenario: Scenario, solo: list[LayerSamples], target: float = TARGET, cap_s: float | None = None
) -> Layout:
    """Per-layer op costs in a calibration run of the scenario's own method and workers (no injected
    delays or stragglers): each op's thread CPU time, so time waiting for a core, which the simulator's
    time-sliced device models, is not counted, while the slowdown of sharing caches and memory with the
    other threads is. Each role's CPU time outside its ops (Python between them) is spread over its ops.
    Runs of 40, 80, 160, ... measured batches until a batch's forward and backward costs are known to
    ±`target` and `profile_floor_s` has passed, or `cap_s` has passed."""
    from executor.runtime import run

    cap_s = profile_cap_s() if cap_s is None else cap_s
    started = time.perf_counter()
    op_cpu: dict[tuple[int, str], list[float]] = defaultdict(list)
    role_op_s, role_thread_s, traces = defaultdict(float), defaultdict(float), []
    totals: dict[str, dict[int, float]] = {"forward": defaultdict(float), "backward": defaultdict(float)}
    batches, warmup = 40, 20
    while True:
        calibration = replace(
            scenario,
            delays=Delays(),
            run=replace(
                scenario.run, batches=warmup + batches, warmup=warmup, seed=scenario.run.seed + len(traces)
            ),
        )
        result = run(calibration, curve_points=0, cpu_times=True)
        traces.append((calibration, result.trace))
        for worker, rows in result.cpu_times.items():
            role = "forward" if worker.startswith("forward") else "backward"
            for op, batch, layer, seconds in rows:
                if op == "thread":
                    role_thread_s[role] += seconds
                    continue
                role_op_s[role] += seconds
                if batch >= warmup:
                    op_cpu[(layer, op)].append(seconds)
                    totals["forward" if op == "forward" else "backward"][(len(traces), batch)] += seconds
        done = sorted(set(totals["forward"]) & set(totals["backward"]))
        measured = Precision(
            len(done),
            time.perf_counter() - started,
            correlated_mean_interval([totals["forward"][b] for b in done]),
            correlated_mean_interval([totals["backward"][b] for b in done]),
            target,
        )
        elapsed = time.perf_counter() - started
        if (measured.reached and elapsed >= profile_floor_s(scenario, cap_s)) or elapsed > cap_s:
            break
        batches *= 2
    factor = {role: role_thread_s[role] / role_op_s[role] if role_op_s[role] else 1.0 for role in role_op_s}
    layers = [
        replace(
            layer,
            samples={op: [t * factor.get(_role(scenario, op), 1.0) for t in op_cpu[(m, op)]] for op in OPS},
            overhead={op: [] for op in OPS},
        )
        for m, layer in enumerate(solo)
    ]
    return Layout(layers, measured, traces)


def _role(scenario: Scenario, op: str) -> str:
    """The role that runs `op` in the calibration's accounting: forward ops on forward workers in a
    method with two roles; everything else on the single role ("backward" then stands for all)."""
    return "forward" if op == "forward" and scenario.definition.windowed else "backward"
