"""What `compare` predicts and how sure it is: profiled costs, the prediction's interval, the measurement's.

- **Costs** (`profiled`): the network is profiled on the executor's own code path until a batch's mean
  forward and backward costs are known to ±2% (95% interval, at the effective sample size of a series the
  machine's drift correlates: `executor.profile.Precision`; at least 15 s, `profile_floor_s`), or 30 s have
  passed (`PDASGD_PROFILE_CAP_S`), and the report says which. A single worker pays the costs of one worker
  alone (`executor.profile.measure_precisely`). Methods with several workers pay what a calibration run of
  their own workers measures (`measure_layout_precisely`): each op's thread CPU time, which leaves out
  waiting for a core (the simulator's time-sliced CPU models that) but keeps the slowdown of threads sharing
  caches and memory, the larger the more threads run: 2F+2B on 2 cores was predicted 31% too fast from the
  costs of a 1F+1B pipeline. A profile of the same network, device and threads taken in the last 15 minutes
  is reused (`executor.profile_cache`), and the report says so.
- **The roles' speeds and the noise**: with more runnable threads than cores, the cores do not go to the
  threads in fair shares, and some of their time goes to neither (thread switches, GIL hand-offs). A
  forward thread, whose many short ops give the GIL away and wait to get it back, gets less than its
  share: in a 1F+2B run on two cores its forward took a fifth longer than a fair time slice gives while the
  backward ops took what it gives. And the waits for a core vary: a role's wall times spread about twice
  as much as its CPU times, which is what decides how often the window binds, and so the staleness (with
  the CPU times' noise, async-bu was predicted 0.3-0.6 versions too stale; benchmarks/replay.md). So the
  simulated CPU runs the forward ops and the backward and update ops at two speeds
  (`pdasgd.machine.on_machine`), with an op-time noise, that make the simulation of the calibration runs
  give each role the mean wall time per batch it took there and its walls the spread they had
  (`calibrated`). The report gives them. For a scenario without delays, stragglers or another window the
  calibration run is a shorter run of the same schedule, so its throughput is close to the measured one
  by construction; the random draw of the fidelity benchmark (benchmarks/fidelity.md) is mostly of other
  schedules, and reports the predictions without the speeds beside.
- **The prediction's interval** (`predict`): the schedule simulated at the profile's mean costs, then with
  the forward and the backward costs each at the ends of their intervals (the four corners) and with two
  more seeds of the op-time noise: the interval spans them all, widened by what the model leaves out
  (`UNMODELLED_THROUGHPUT`, `UNMODELLED_STALENESS`: measured on one random draw of scenarios, tested on
  another; benchmarks/fidelity.md).
- **The measurement's interval** (`measured`): with one run, a block bootstrap over the run's batches
  (`pdasgd.intervals`). That interval does not see what changes from one run to the next on a shared
  machine: on this project's 2-core VMs a second run of the same scenario fell inside the first one's
  interval in only 31-67% of cases (benchmarks/fidelity.md). With several runs (`compare --runs N`,
  `measured_over_runs`) the measurement is the mean over the runs and its interval the 95% t-interval of
  that mean: each run's figure carries its own batch-to-batch noise and the run-to-run change, so the
  spread of the runs' figures holds both.
- **Judgement** (`judge`): whether the prediction's interval meets the measurement's (consistent within
  both uncertainties), whether the predicted value itself lies inside the measured interval, and a warning
  when the run is too short for a stable figure, with the number of batches that would give one.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any

from pdasgd.intervals import (
    Interval,
    batches_for,
    mean_interval,
    staleness_intervals,
    throughput_interval,
)
from pdasgd.machine import scaled
from pdasgd.scenario import Model, Scenario

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
    jitter_cv: float  # op-time noise matching the measured batch-to-batch variation (of walls, calibrated)
    sequential_batch_s: float  # the costs of one batch by one worker alone, summed
    pipelined: bool  # whether the costs come from a pipelined run (executor.profile.measure_pipelined)
    precision: Any = None  # executor.profile.Precision of the costs used (None: the scenario gave them)
    reused_age_s: float | None = None  # the profile came from the cache, this old
    speeds: tuple[float, float] = (1.0, 1.0)  # the simulated CPU's speed for forward, backward/update ops

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
        if self.speeds != (1.0, 1.0):
            lines.append(
                f"the simulated CPU runs forward ops at speed {self.speeds[0]:.3f} and backward and update "
                f"ops at {self.speeds[1]:.3f} of a fair time slice, with op-time noise of CV "
                f"{self.jitter_cv:.2f}: under these the calibration runs' simulation gives each role the "
                "wall time per batch it took and the spread it had (the cores do not go to the threads in "
                "fair shares, and the waits for them vary)"
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
        extra["jitter_cv"],
        sequential_s,
        True,
        precision,
        age,
        tuple(extra["speeds"]),
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
        speeds, jitter_cv = calibrated(layout.runs, samples)
        extra = {"speeds": list(speeds), "jitter_cv": jitter_cv}
    profile_cache.store(entry, samples, precision, extra)
    return samples, precision, None, extra


def calibrated(runs: list, samples: list) -> tuple[tuple[float, float], float]:
    """The simulated CPU's speeds for the forward ops and for the backward and update ops, and the op-time
    noise, under which the calibration `runs` ((scenario, measured trace) pairs), simulated with the
    `samples`' mean costs, give each role the mean wall time per batch it took there and its walls the
    coefficient of variation they had (`role_walls`; the mean of the two roles' CVs). Found by fixed-point
    iteration from speed 1 and the CPU times' batch-matched noise: each speed times simulated / measured
    mean wall, the noise times measured / simulated CV (a role's wall is close to inverse in its speed, its
    spread close to linear in the noise)."""
    model = Model(tuple(layer.layer("mean") for layer in samples))
    runs = [(dataclasses.replace(run, model=model), trace) for run, trace in runs]
    real = _pooled([role_walls(trace, trace.warmup, _window(run)) for run, trace in runs])
    speeds, cv = (1.0, 1.0), batch_matched_cv(samples)
    for _ in range(CALIBRATION_ROUNDS):
        simulated = _pooled([_simulated_walls(run, trace, cv, speeds) for run, trace in runs])
        speeds = tuple(
            _clip(s * sim / wall, MAX_SPEED) if sim > 0 and wall > 0 else s
            for s, sim, wall in zip(speeds, simulated.means, real.means, strict=True)
        )
        if simulated.cv > 0 and real.cv > 0:
            cv = min(MAX_JITTER_CV, cv * real.cv / simulated.cv)
    return speeds, cv


CALIBRATION_ROUNDS = 5
MAX_SPEED = 4.0  # speeds stay within [1/4, 4] of a fair time slice
MAX_JITTER_CV = 2.0


def _clip(value: float, limit: float) -> float:
    return min(limit, max(1 / limit, value))


def _simulated_walls(run: Scenario, trace, cv: float, speeds: tuple[float, float]) -> list[list[float]]:
    import simulator
    from pdasgd.machine import on_machine

    simulated = simulator.simulate(on_machine(run, trace.device_slots, cv, speeds))
    return role_walls(simulated, trace.warmup, _window(run))


def _window(scenario: Scenario) -> int | None:
    return scenario.workers.max_in_flight if scenario.definition.windowed else None


def role_walls(trace, warmup: int, window: int | None = None) -> list[list[float]]:
    """Per role (forward; backward and update), the wall time of each batch after `warmup`: from when its
    worker could have started it to the end of its last op of that role. It could start once the worker's
    previous op had ended and the batch was there: for a forward, batch i - `window` finished (methods with
    a window); for a backward, the batch's forward done. So the Python before a role's first op (fetching
    the batch, the hand-off), which the profiled costs include, counts, as do the waits for a core or the
    GIL, while waiting for the window or for a batch does not."""
    first: dict[tuple[int, int], float] = {}
    last: dict[tuple[int, int], float] = {}
    batch_end: dict[int, float] = {}
    by_worker: dict[str, list[tuple[float, float, tuple[int, int]]]] = {}
    for span in trace.spans:
        if span.batch is None or span.op not in ("forward", "backward", "update"):
            continue
        key = (0 if span.op == "forward" else 1, span.batch)
        first[key] = min(first.get(key, span.start_s), span.start_s)
        last[key] = max(last.get(key, span.end_s), span.end_s)
        batch_end[span.batch] = max(batch_end.get(span.batch, span.end_s), span.end_s)
        by_worker.setdefault(span.worker, []).append((span.start_s, span.end_s, key))
    free = {key: s for ops in by_worker.values() for key, s in _free_before_first_ops(ops, first).items()}
    walls: list[list[float]] = [[], []]
    for key, start_s in first.items():
        role, batch = key
        if batch < warmup:
            continue
        if role == 0:
            there = batch_end.get(batch - window, -math.inf) if window and batch >= window else -math.inf
        else:
            there = last.get((0, batch), -math.inf)
        walls[role].append(last[key] - min(start_s, max(free.get(key, -math.inf), there)))
    return walls


def _free_before_first_ops(ops: list, first: dict) -> dict[tuple[int, int], float]:
    """For one worker's ops, (start, end, (role, batch)): when every op that started before each role's
    first op had ended."""
    free: dict[tuple[int, int], float] = {}
    latest_s = -math.inf
    for start_s, end_s, key in sorted(ops):
        if start_s == first[key] and key not in free:
            free[key] = latest_s
        latest_s = max(latest_s, end_s)
    return free


@dataclasses.dataclass(frozen=True)
class _Walls:
    means: tuple[float, float]  # mean wall per batch of each role over every run (0 when it ran nothing)
    cv: float  # the mean, over runs and the roles that ran, of the walls' coefficient of variation


def _pooled(per_run: list[list[list[float]]]) -> _Walls:
    """The means of each role's walls over every run, and the mean of each run's and role's CV (within a
    run: the machine's speed drifts between runs)."""
    roles = [[wall for run in per_run for wall in run[role]] for role in (0, 1)]
    means = tuple(statistics.fmean(walls) if walls else 0.0 for walls in roles)
    cvs = [_cv(walls) for run in per_run for walls in run if len(walls) > 1]
    return _Walls(means, statistics.fmean(cvs) if cvs else 0.0)


def _cv(values: list[float]) -> float:
    mean = statistics.fmean(values)
    return statistics.pstdev(values) / mean if mean > 0 else 0.0


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


def measured_over_runs(summaries: list, first_trace) -> dict[str, Any]:
    """The measured throughput and staleness of several runs of one scenario (their summaries): the means
    and their 95% t-intervals over the runs; `within_run` keeps the first run's own intervals (`measured`),
    which say whether a run is long enough. One run: `measured(first_trace)`."""
    within = measured(first_trace)
    if len(summaries) < 2:
        return within
    layers = zip(*(s.staleness.per_layer_mean for s in summaries), strict=True)
    return {
        "throughput": mean_interval([s.throughput_batches_per_s for s in summaries]),
        "staleness": mean_interval([s.staleness.mean for s in summaries]),
        "staleness_per_layer": [mean_interval(list(values)) for values in layers],
        "runs": len(summaries),
        "within_run": within,
    }


def judge(predicted: dict[str, Any], measured_: dict[str, Any], batches: int) -> dict[str, Any]:
    """Consistency of prediction and measurement, what the measured interval is over, and warnings for
    runs too short to judge by."""
    runs = measured_.get("runs", 1)
    over = f"the mean over {runs} runs, the 95% t-interval over them" if runs > 1 else None
    verdict: dict[str, Any] = {
        "warnings": [],
        "measured_runs": runs,
        "measured_interval": over
        or "one run, a block bootstrap over its batches: it leaves out what changes between runs "
        "(--runs 3 gives an interval over runs)",
    }
    for key in ("throughput", "staleness"):
        p, m = predicted[key], measured_[key]
        verdict[key] = {
            "predicted": p.to_dict(),
            "measured": m.to_dict(),
            "consistent": p.overlaps(m),  # the two intervals meet
            "inside": m.contains(p.value),  # the predicted value lies in the measured interval
        }
    width = measured_.get("within_run", measured_)["throughput"].relative_half_width
    if width > STABLE_THROUGHPUT:
        verdict["warnings"].append(
            f"the run is too short for a stable throughput (its interval is ±{100 * width:.0f}%): about "
            f"{batches_for(width, STABLE_THROUGHPUT, batches)} batches would give ±"
            f"{100 * STABLE_THROUGHPUT:.0f}%"
        )
    stale = measured_.get("within_run", measured_)["staleness"]
    half = (stale.high - stale.low) / 2
    if half > STABLE_STALENESS:
        need = batches_for(half, STABLE_STALENESS, batches)
        verdict["warnings"].append(
            f"the run is too short for a stable staleness (±{half:.2f} versions): about {need} batches "
            f"would give ±{STABLE_STALENESS}"
        )
    return verdict
