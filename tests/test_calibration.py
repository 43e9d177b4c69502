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


def test_role_walls_run_from_when_the_batch_could_start_to_its_last_op() -> None:
    """From the later of the worker's previous op's end and the batch being there (a forward: batch i - 1
    finished, with a window of 1; a backward: its forward done) to the role's last op: the Python before
    the first op counts, waiting for the window, for a batch or for the worker does not."""
    spans = [
        Span("forward:0", "cpu", "forward", 0, 0, 0.0, 1.0),  # warm-up batch: left out
        Span("backward:0", "cpu", "backward", 0, 0, 1.2, 2.0),
        Span("backward:0", "cpu", "update", 0, 0, 2.0, 2.5),
        # batch 1's forward may start at 2.5 (batch 0 done; the worker was free since 1.0)
        Span("forward:0", "cpu", "forward", 1, 0, 3.0, 3.5),
        Span("forward:0", "cpu", "forward", 1, 1, 3.75, 4.0),
        # its backward: there at 4.0, the worker free since 2.5
        Span("backward:0", "cpu", "backward", 1, 0, 4.25, 5.0),
        Span("backward:0", "cpu", "update", 1, 0, 5.0, 5.25),
        # batch 2: the window opens at 5.25, after the worker was free (4.0)
        Span("forward:0", "cpu", "forward", 2, 0, 5.25, 6.0),
        Span("backward:1", "cpu", "backward", 2, 0, 6.5, 7.0),  # a fresh worker: from the forward's end
        Span("comm", "cpu", "allreduce", None, None, 6.0, 7.0),  # not a role's op
    ]
    trace = Trace(spans, "executor", "async-bu", 2, 3, warmup=1)
    assert role_walls(trace, warmup=1, window=1) == [[1.5, 0.75], [1.25, 1.0]]
    # without a window a forward could start once its worker was free
    assert role_walls(trace, warmup=1) == [[3.0, 2.0], [1.25, 1.0]]


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
