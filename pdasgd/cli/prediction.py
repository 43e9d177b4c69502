"""What `compare` predicts and how sure it is: profiled costs, the prediction's interval, the measurement's.

- **Costs** (`profiled`): the network is profiled on the executor's own code path until a batch's mean
  forward and backward costs are known to ±2% (95% interval), or 30 s have passed, and the report says
  which. A single worker pays the costs of one worker alone (`executor.profile.measure_precisely`). Methods
  with several workers pay what a calibration run of their own workers measures
  (`measure_layout_precisely`): each op's thread CPU time, which leaves out waiting for a core (the
  simulator's time-sliced CPU models that) but keeps the slowdown of threads sharing caches and memory,
  the larger the more threads run: 2F+2B on 2 cores was predicted 31% too fast from the costs of a 1F+1B
  pipeline. A profile of the same network, device and threads taken in the last 15 minutes is reused
  (`executor.profile_cache`), and the report says so.
- **The cores' efficiency**: with more runnable threads than cores, some core time goes to neither the
  threads' work nor the waits their schedule explains (thread switches, GIL hand-offs). The calibration
  run's worker threads used `cpu_share` of the cores where its simulation keeps them busier; their ratio,
  the efficiency, is the simulated CPU's speed (`pdasgd.machine.on_machine`). The report gives it. For a
  scenario without delays, stragglers or another window the calibration run is a shorter run of the same
  schedule, so its throughput is close to the measured one by construction; the random draw of the
  fidelity benchmark (benchmarks/fidelity.md) is mostly of other schedules, and reports the predictions
  without the efficiency beside.
- **The prediction's interval** (`predict`): the schedule simulated at the profile's mean costs, then with
  the forward and the backward costs each at the ends of their intervals (the four corners) and with two
  more seeds of the op-time noise: the interval spans them all, widened by what the model leaves out
  (`UNMODELLED_THROUGHPUT`, `UNMODELLED_STALENESS`: measured on one random draw of scenarios, tested on
  another; benchmarks/fidelity.md).
- **The measurement's interval** (`measured`): a block bootstrap over the run's batches
  (`pdasgd.intervals`).
- **Judgement** (`judge`): whether the prediction's interval meets the measurement's (consistent within
  both uncertainties), whether the predicted value itself lies inside the measured interval, and a warning
  when the run is too short for a stable figure, with the number of batches that would give one.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

from pdasgd.intervals import Interval, batches_for, staleness_intervals, throughput_interval
from pdasgd.scenario import Layer, Model, Scenario

STABLE_THROUGHPUT = 0.05  # a run whose throughput interval is wider than ±5% is too short to judge by
# What the model leaves out, added to the prediction's interval: the 80th percentile of |error| over the
# random draw of seed 1 in benchmarks/fidelity.md (throughput 4.9%, mean staleness 0.25 versions); the
# draw of seed 2 then tests it on scenarios it was not taken from.
UNMODELLED_THROUGHPUT = 0.05
UNMODELLED_STALENESS = 0.25
STABLE_STALENESS = 0.25  # versions, for the mean staleness
SEEDS = (1, 2)  # more seeds of the simulated op-time noise


@dataclasses.dataclass(frozen=True)
class Profiled:
    """The scenario with the layer costs its method pays, and what the profiler measured besides."""

    scenario: Scenario
    jitter_cv: float  # op-time noise matching the measured batch-to-batch variation
    sequential_batch_s: float  # the costs of one batch by one worker alone, summed
    pipelined: bool  # whether the costs come from a pipelined run (executor.profile.measure_pipelined)
    precision: Any = None  # executor.profile.Precision of the costs used (None: the scenario gave them)
    reused_age_s: float | None = None  # the profile came from the cache, this old
    efficiency: float = 1.0  # share of core time the workers' threads get (the simulated CPU's speed)

    def notes(self) -> list[str]:
        if self.precision is None:
            return ["layer costs: as the scenario gives them"]
        p = self.precision
        where = "a calibration run of the scenario's workers" if self.pipelined else "one worker alone"
        line = (
            f"layer costs: profiled in {where}, {p.batches} batches: mean forward and backward known to "
            f"±{100 * p.half_width:.1f}% (95% interval)"
        )
        if not p.reached:
            line += f"; the ±{100 * p.target:.0f}% target was not reached within the time cap"
        if self.reused_age_s is not None:
            line += f"; reused from a profile taken {self.reused_age_s:.0f} s ago"
        lines = [
            line,
            f"the predicted intervals include ±{100 * UNMODELLED_THROUGHPUT:.0f}% throughput and "
            f"±{UNMODELLED_STALENESS} versions of staleness for what the model leaves out "
            "(benchmarks/fidelity.md)",
        ]
        if self.efficiency < 0.995:
            lines.append(
                f"cores' efficiency {self.efficiency:.3f}: the calibration run's threads got that share "
                "of the core time its simulation keeps busy (the rest went to thread switches and GIL "
                "hand-offs); "
                "the simulated CPU runs at that speed"
            )
        return lines


def profiled(scenario: Scenario, force: bool = False, fresh: bool = False) -> Profiled:
    """Measure the scenario's layer costs (module docstring), unless it gives some and not `force`;
    `fresh` never reuses a cached profile."""
    solo, solo_precision, solo_age, _ = _measured(scenario, "solo", None, fresh)
    sequential_s = sum(layer.cost(op) for layer in solo for op in ("forward", "backward", "update"))
    if scenario.model is not None and not force:
        return Profiled(scenario, batch_matched_cv(solo), sequential_s, pipelined=False)
    if len(scenario.worker_names()) == 1 or scenario.definition.ranks:
        # across ranks each rank is a process: no calibration run of threads in one process covers it
        model = Model(tuple(layer.layer("mean") for layer in solo))
        costed = dataclasses.replace(scenario, model=model)
        return Profiled(costed, batch_matched_cv(solo), sequential_s, False, solo_precision, solo_age)
    samples, precision, age, extra = _measured(scenario, "layout", solo, fresh)
    model = Model(tuple(layer.layer("mean") for layer in samples))
    return Profiled(
        dataclasses.replace(scenario, model=model),
        batch_matched_cv(samples),
        sequential_s,
        True,
        precision,
        age,
        extra.get("efficiency", 1.0),
    )


def _measured(scenario: Scenario, kind: str, solo, fresh: bool):
    """(layer samples, precision, age if reused, extra figures) of one measurement, cached when it may be."""
    from executor import profile_cache
    from executor.profile import measure_layout_precisely, measure_precisely

    profiling = dataclasses.replace(scenario, model=None) if scenario.train.network != "timed" else scenario
    entry = profile_cache.key(profiling, kind)
    cached = None if fresh else profile_cache.load(entry)
    if cached is not None:
        return cached
    extra: dict[str, float] = {}
    if kind == "solo":
        samples, precision = measure_precisely(scenario)
    else:
        layout = measure_layout_precisely(scenario, solo)
        samples, precision = layout.layers, layout.precision
        extra = {"cpu_share": layout.cpu_share, "efficiency": _efficiency(layout, samples)}
    profile_cache.store(entry, samples, precision, extra)
    return samples, precision, None, extra


def _efficiency(layout, samples) -> float:
    """The calibration runs' worker threads' share of the cores over the share their simulation (at speed 1)
    keeps busy, at most 1."""
    import simulator
    from pdasgd.machine import on_machine
    from pdasgd.metrics import makespan_s

    model = Model(tuple(layer.layer("mean") for layer in samples))
    busy_s = core_s = 0.0
    for calibration, trace in layout.runs:
        costed = dataclasses.replace(calibration, model=model)
        predicted = simulator.simulate(on_machine(costed, trace.device_slots, batch_matched_cv(samples)))
        slots, span_s = next(iter(trace.device_slots.values())), makespan_s(predicted)
        busy_s += sum(_utilization(predicted)) * slots * span_s
        core_s += slots * span_s
    simulated_share = busy_s / core_s if core_s else 0.0
    return min(1.0, layout.cpu_share / simulated_share) if simulated_share > 0 else 1.0


def _utilization(trace) -> list[float]:
    from pdasgd.metrics import utilization

    return list(utilization(trace).values())


def batch_matched_cv(samples: list) -> float:
    """The op-time noise that gives the measured batch-to-batch variation.

    The simulator draws each op's noise independently; measured op times are correlated within a batch (a
    slow batch is slow in most of its ops), so the per-op CV understates how much whole forwards and
    backwards vary, and the simulated workers fall into lockstep. For the forward ops and for the backward
    and update ops of a batch, with per-op means c_i and batch totals of CV v, independent noise of CV
    v sum(c_i) / sqrt(sum(c_i^2)) gives totals of CV v; the mean of the two roles' values is returned."""
    roles = (("forward",), ("backward", "update"))
    values = []
    for ops in roles:
        series = [layer.samples[op] for layer in samples for op in ops if layer.samples[op]]
        count = min((len(times) for times in series), default=0)
        if count < 2:
            continue
        totals = [sum(times[i] for times in series) for i in range(count)]
        means = [statistics.fmean(times) for times in series]
        if sum(means) > 0:
            batch_cv = statistics.pstdev(totals) / statistics.fmean(totals)
            values.append(batch_cv * sum(means) / sum(m * m for m in means) ** 0.5)
    return statistics.fmean(values) if values else 0.0


# --- the prediction's interval -----------------------------------------------------------------------


def scaled(scenario: Scenario, forward: float, backward: float) -> Scenario:
    """`scenario` with every layer's forward cost times `forward`, backward and update costs times
    `backward`."""
    layers = tuple(
        Layer(
            x.name,
            x.forward_s * forward,
            x.backward_s * backward,
            x.update_s * backward,
            x.activation_bytes,
            x.param_bytes,
        )
        for x in scenario.model.layers
    )
    return dataclasses.replace(scenario, model=Model(layers))


def corners(precision) -> list[tuple[float, float]]:
    """The (forward, backward) cost factors at the ends of the profile's intervals."""
    if precision is None:
        return []
    f, b = precision.forward, precision.backward
    lows = (f.low / f.value if f.value else 1.0, b.low / b.value if b.value else 1.0)
    highs = (f.high / f.value if f.value else 1.0, b.high / b.value if b.value else 1.0)
    return [(x, y) for x in (lows[0], highs[0]) for y in (lows[1], highs[1])]


def predict(
    machine: Scenario, precision, sequential_batch_s: float, progress: bool = False
) -> dict[str, Any]:
    """The nominal predicted trace and summary, and the intervals of throughput and staleness over the
    corners of the costs and more noise seeds (module docstring)."""
    import simulator
    from pdasgd.metrics import summarize

    trace = simulator.simulate(machine, progress=progress)
    summary = summarize(trace, sequential_batch_s=sequential_batch_s)
    variants = [scaled(machine, f, b) for f, b in corners(precision)]
    if machine.delays.jitter_cv > 0:
        variants += [machine.with_overrides({"run.seed": machine.run.seed + s}) for s in SEEDS]
    others = [simulator.simulate_summary(v, progress=False) for v in variants]
    every = [summary, *others]
    rates = [s.throughput_batches_per_s for s in every]
    stale = [s.staleness.mean for s in every]
    layers = [[s.staleness.per_layer_mean[m] for s in every] for m in range(len(machine.model.layers))]
    widen = UNMODELLED_STALENESS
    return {
        "trace": trace,
        "summary": summary,
        "throughput": Interval(
            summary.throughput_batches_per_s,
            min(rates) * (1 - UNMODELLED_THROUGHPUT),
            max(rates) * (1 + UNMODELLED_THROUGHPUT),
        ),
        "staleness": Interval(summary.staleness.mean, max(0.0, min(stale) - widen), max(stale) + widen),
        "staleness_per_layer": [Interval(v[0], max(0.0, min(v) - widen), max(v) + widen) for v in layers],
    }


def measured(trace) -> dict[str, Any]:
    """The measured throughput and staleness with their block-bootstrap intervals."""
    staleness = staleness_intervals(trace)
    return {
        "throughput": throughput_interval(trace),
        "staleness": staleness["mean"],
        "staleness_per_layer": staleness["per_layer"],
    }


def judge(predicted: dict[str, Any], measured_: dict[str, Any], batches: int) -> dict[str, Any]:
    """Consistency of prediction and measurement, and warnings for runs too short to judge by."""
    verdict: dict[str, Any] = {"warnings": []}
    for key in ("throughput", "staleness"):
        p, m = predicted[key], measured_[key]
        verdict[key] = {
            "predicted": p.to_dict(),
            "measured": m.to_dict(),
            "consistent": p.overlaps(m),  # the two intervals meet
            "inside": m.contains(p.value),  # the predicted value lies in the measured interval
        }
    width = measured_["throughput"].relative_half_width
    if width > STABLE_THROUGHPUT:
        verdict["warnings"].append(
            f"the run is too short for a stable throughput (its interval is ±{100 * width:.0f}%): about "
            f"{batches_for(width, STABLE_THROUGHPUT, batches)} batches would give ±"
            f"{100 * STABLE_THROUGHPUT:.0f}%"
        )
    stale = measured_["staleness"]
    half = (stale.high - stale.low) / 2
    if half > STABLE_STALENESS:
        need = batches_for(half, STABLE_STALENESS, batches)
        verdict["warnings"].append(
            f"the run is too short for a stable staleness (±{half:.2f} versions): about {need} batches "
            f"would give ±{STABLE_STALENESS}"
        )
    return verdict
