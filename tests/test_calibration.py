"""compare's calibration of the simulated CPU (`pdasgd.cli.prediction.calibrated`): the role speeds and
the op-time noise that make the simulation of a calibration run give each role the walls it had. Checked
on "measured" runs made by the simulator itself at known speeds and noise (other noise seeds than the
calibration's own), from which the calibration must recover them."""

from __future__ import annotations

import dataclasses

import pytest

import simulator
from executor.profile import OPS, LayerSamples
from pdasgd.cli.prediction import batch_matched_cv, calibrated, role_walls
from pdasgd.machine import on_machine
from pdasgd.scenario import Layer, Model, parse_scenario
from pdasgd.trace import Span, Trace

COSTS_S = {"forward": 0.002, "backward": 0.004, "update": 0.001}
LAYERS = 4


def test_role_walls_run_from_a_batch_s_first_op_to_its_last() -> None:
    spans = [
        Span("forward:0", "cpu", "forward", 0, 0, 0.0, 1.0),  # warm-up batch: left out
        Span("forward:0", "cpu", "forward", 1, 0, 1.0, 1.5),
        Span("forward:0", "cpu", "forward", 1, 1, 1.75, 2.0),  # the gap between ops counts
        Span("backward:0", "cpu", "backward", 1, 1, 3.0, 3.5),
        Span("backward:0", "cpu", "update", 1, 1, 3.5, 3.75),
        Span("backward:0", "cpu", "backward", 1, 0, 3.75, 4.5),
        Span("backward:0", "cpu", "update", 1, 0, 4.5, 5.0),
        Span("forward:0", "cpu", "forward", 2, 0, 2.0, 2.25),
        Span("backward:1", "cpu", "backward", 2, 0, 5.0, 5.5),
        Span("comm", "cpu", "allreduce", None, None, 6.0, 7.0),  # not a role's op
    ]
    trace = Trace(spans, "executor", "async-bu", 2, 3, warmup=1)
    assert role_walls(trace, warmup=1) == [[1.0, 0.25], [2.0, 0.5]]


def scenario(seed: int = 0):
    table = {
        "name": "calibration",
        "method": "async-bu",
        "workers": {"forward": 1, "backward": 2, "max_in_flight": 4},
        "run": {"batches": 220, "warmup": 20, "seed": seed},
    }
    layers = tuple(Layer(f"l{m}", *COSTS_S.values()) for m in range(LAYERS))
    return dataclasses.replace(parse_scenario(table), model=Model(layers))


def samples(spread: float) -> list[LayerSamples]:
    """Per layer, CPU times alternating cost x (1 -+ spread): the means are the costs exactly."""
    times = {op: [c * (1 - spread), c * (1 + spread)] * 50 for op, c in COSTS_S.items()}
    return [LayerSamples(f"l{m}", times, 0, 0, {op: [] for op in OPS}) for m in range(LAYERS)]


@pytest.mark.parametrize("speeds, cv", [((0.75, 1.1), 0.5), ((1.0, 0.9), 0.3)])
def test_calibration_recovers_the_speeds_and_the_noise_a_run_had(speeds, cv) -> None:
    runs = []
    for seed in (101, 102, 103):  # the calibration simulates with the runs' own seed 0: other noise
        measured = simulator.simulate(on_machine(scenario(seed), {"cpu": 2}, cv, speeds))
        runs.append((scenario(), measured))
    profile = samples(spread=0.03)
    assert batch_matched_cv(profile) < cv / 2  # the CPU times spread less than the walls
    found_speeds, found_cv = calibrated(runs, profile)
    assert found_speeds == pytest.approx(speeds, rel=0.03)
    assert found_cv == pytest.approx(cv, rel=0.15)


def test_a_run_at_a_fair_time_slice_calibrates_to_speed_one() -> None:
    """Fixed op times: the simulation at speed 1 and no noise is the run itself, and stays so."""
    measured = simulator.simulate(on_machine(scenario(), {"cpu": 2}, 0.0))
    speeds, cv = calibrated([(scenario(), measured)], samples(spread=0.0))
    assert speeds == pytest.approx((1.0, 1.0), rel=1e-9)
    assert cv == 0.0
