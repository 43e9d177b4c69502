"""The theory's prediction for a scenario, in the same keys as a summary, so it sits beside the others.

`theory/` works on numbers (F, B, k, n_f, d, Q, per-layer offsets); this module reads them off a Scenario
and returns what the closed forms say: steady-state cycle time and throughput, speed-up over sequential
(steady state, the summary's definition, and makespan-based, the paper's), the paper's lambda, and per-layer
version staleness. Which closed forms apply is part of the method's definition (`Method.theory`); the read
and visibility offsets of each layer come from the method's steps (`pdasgd.offsets`), so a variant of
async-lu or async-bu defined as data gets its closed forms too.

The closed forms assume fixed op times and one device per worker. Staleness comes from the closed form in
the forward-bound regime (one forward worker, B <= k F) and from the exact recursion elsewhere (mean over
the second half of the batches). Other methods, shared devices, jitter and stragglers are outside the
theory: the result says so in `applies` and `note`.
"""

from __future__ import annotations

from typing import Any

from pdasgd.offsets import Offsets, batch_offsets
from pdasgd.scenario import Scenario


def theory_for(scenario: Scenario) -> dict[str, Any]:
    """Closed-form predictions for `scenario` (which must have layer costs)."""
    if scenario.model is None:
        raise ValueError("model: no layer costs; give [model] or run `pdasgd profile` first")
    reason = _outside_theory(scenario)
    base = {"applies": reason is None, "note": reason or "fixed times, one device per worker"}
    kind = scenario.definition.theory
    if kind == "sequential":
        return {**base, **_sequential(scenario)}
    if kind == "decoupled":
        return {**base, **_decoupled(scenario)}
    return base


def _outside_theory(scenario: Scenario) -> str | None:
    if scenario.definition.theory is None:
        return f"no closed form for {scenario.method}"
    devices = list(scenario.device_of().values())
    if len(set(devices)) < len(devices) or any(d.speed != 1.0 for d in scenario.devices):
        return "shared or scaled devices: the closed forms only bound this schedule"
    if scenario.delays.jitter_cv > 0 or scenario.delays.stragglers:
        return "random or straggling op times: the closed forms give the fixed-time optimum"
    return None


def _offsets(scenario: Scenario) -> Offsets:
    """One batch's step offsets at the layer costs (devices of speed 1)."""
    layers = scenario.model.layers
    return batch_offsets(
        scenario.definition.batch_steps(len(layers), scenario.workers),
        [x.forward_s for x in layers],
        [x.backward_s for x in layers],
        [x.update_s for x in layers],
        scenario.delays.visibility_s,
    )


def _sequential(scenario: Scenario) -> dict[str, Any]:
    from theory.speedup import sequential_time

    model = scenario.model
    cycle_s = model.forward_s + model.backward_s + model.update_s
    layers = len(model.layers)
    return {
        "cycle_time_s": cycle_s,
        "throughput_batches_per_s": 1.0 / cycle_s,
        "speedup_vs_sequential": 1.0,
        "makespan_s": sequential_time(
            scenario.run.batches, model.forward_s, model.backward_s + model.update_s
        ),
        "staleness": {"mean": 0.0, "per_layer_mean": [0.0] * layers, "source": "closed form"},
    }


def _decoupled(scenario: Scenario) -> dict[str, Any]:
    from theory.speedup import async_schedule, cycle_time, paper_speedup, speedup_limit

    offsets = _offsets(scenario)
    workers, batches = scenario.workers, scenario.run.batches
    f_s, b_s = offsets.forward_s, offsets.end
    n_f, k, d = workers.forward, workers.backward, scenario.delays.handoff_s
    q = workers.max_in_flight if workers.max_in_flight < batches else None
    cycle_s = cycle_time(f_s, b_s, n_f, k, d, q)
    makespan_s = async_schedule(batches, f_s, b_s, k, n_f, d, q).makespan_s
    beta = b_s / f_s
    return {
        "cycle_time_s": cycle_s,
        "throughput_batches_per_s": 1.0 / cycle_s,
        "speedup_vs_sequential": (f_s + b_s) / cycle_s,
        "makespan_s": makespan_s,
        "speedup_makespan": batches * (f_s + b_s) / makespan_s,
        "paper_speedup": paper_speedup(batches, beta),
        "speedup_limit": speedup_limit(beta, n_backward=k, n_forward=n_f),
        "staleness": _staleness(scenario, offsets, q),
    }


def _staleness(scenario: Scenario, offsets: Offsets, q: int | None) -> dict[str, Any]:
    from theory.staleness import offset_staleness, offset_staleness_recursion

    workers, d = scenario.workers, scenario.delays.handoff_s
    f_s, b_s = offsets.forward_s, offsets.end
    read, visible = list(offsets.forward_start), list(offsets.visible)
    in_flight_free = q is None or q * f_s >= f_s + d + b_s
    if workers.forward == 1 and b_s <= workers.backward * f_s and in_flight_free:
        per_layer = offset_staleness(read, visible, f_s, b_s, workers.backward, d)
        return _stale_summary([float(x) for x in per_layer], "closed form")
    batches = scenario.run.batches
    table = offset_staleness_recursion(
        read, visible, f_s, b_s, batches, workers.backward, workers.forward, d, q
    )
    per_layer = [float(x) for x in table[max(scenario.run.warmup, batches // 2) :].mean(axis=0)]
    return _stale_summary(per_layer, "recursion")


def _stale_summary(per_layer: list[float], source: str) -> dict[str, Any]:
    return {"mean": sum(per_layer) / len(per_layer), "per_layer_mean": per_layer, "source": source}


def regime(scenario: Scenario) -> str:
    """One line on what bounds the schedule, in the closed forms' terms: the largest of F/n_f (the forward),
    B/k (the backward workers) and (F + d + B)/Q (the batches in flight), e.g. "backward-bound: k = 1 <
    beta = 2, the forward waits for a free backward worker"."""
    if scenario.model is None:
        raise ValueError("model: no layer costs; give [model] or run `pdasgd profile` first")
    kind = scenario.definition.theory
    if kind == "sequential":
        return "sequential: one worker runs each batch's forward, then its backward; nothing overlaps"
    if kind != "decoupled":
        return f"{scenario.method}: outside the closed forms ({scenario.definition.description})"
    line = _decoupled_regime(scenario)
    reason = _outside_theory(scenario)
    return f"{line} ({reason})" if reason else line


def _decoupled_regime(scenario: Scenario) -> str:
    offsets = _offsets(scenario)
    f_s, b_s = offsets.forward_s, offsets.end
    n_f, k, d = scenario.workers.forward, scenario.workers.backward, scenario.delays.handoff_s
    q = scenario.workers.max_in_flight
    beta = b_s / f_s
    bound = {"forward": f_s / n_f, "backward": b_s / k}
    if q < scenario.run.batches:
        bound["window"] = (f_s + d + b_s) / q
    slowest = max(bound.values())
    tied = {name for name, cycle_s in bound.items() if cycle_s >= slowest * (1 - 1e-9)}
    beta_text = f"beta = {beta:.3g}" if n_f == 1 else f"n_f beta = {n_f * beta:.3g}"
    if "window" in tied and len(tied) == 1:
        return (
            f"window-bound: Q = {q} batches in flight do not cover F + d + B = {f_s + d + b_s:.3g} s; "
            "a larger max_in_flight would raise the throughput"
        )
    if tied >= {"forward", "backward"}:
        return f"balanced: k = {k} = {beta_text}, the forward and the backward workers are both busy"
    if "backward" in tied:
        return f"backward-bound: k = {k} < {beta_text}, the forward waits for a free backward worker"
    return f"forward-bound: k = {k} > {beta_text}, the backward workers wait for the forward"
