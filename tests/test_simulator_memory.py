"""memory_peak_bytes against peaks computed by hand (simulator/memory.py states the model)."""

from __future__ import annotations

import numpy as np
import pytest

from pdasgd.scenario import parse_scenario
from simulator import simulate, simulate_summary
from simulator.memory import peak_bytes

ENGINES = ["fast", "simpy"]

# Two layers: forward 1 s each (F = 2), backward 1 s each (B = 2); input layer small, output layer big.
TWO_LAYERS = [
    {"name": "in", "forward_s": 1.0, "backward_s": 1.0, "activation_bytes": 1, "param_bytes": 100},
    {"name": "out", "forward_s": 1.0, "backward_s": 1.0, "activation_bytes": 10, "param_bytes": 1000},
]


def peak(data: dict, engine: str) -> int | None:
    sc = parse_scenario(data)
    by_trace = simulate(sc, engine=engine).memory_peak_bytes
    if engine == "fast":
        assert simulate_summary(sc).memory_peak_bytes == by_trace
    return by_trace


@pytest.mark.parametrize("engine", ENGINES)
def test_sequential_peak_is_all_activations_plus_one_version(engine: str) -> None:
    layers = [
        {"name": f"l{i}", "forward_s": 0.1 * (i + 1), "backward_s": 0.3, "update_s": 0.05, **sizes}
        for i, sizes in enumerate(
            [{"activation_bytes": 5, "param_bytes": 40}, {"activation_bytes": 7, "param_bytes": 0}, {}]
        )
    ]
    data = {"method": "sequential", "model": {"layer": layers}, "run": {"batches": 6, "warmup": 1}}
    assert peak(data, engine) == 5 + 7 + 40


@pytest.mark.parametrize("engine", ENGINES)
def test_sequential_with_update_delay_keeps_the_old_version(engine: str) -> None:
    """f=1, g=2, u=0.5, visible 1 s after applying: batch i+1 starts at 3.5 (i+1) and still reads the old
    version, so from then on two versions and one batch's activations are live: 100 + 100 + 10."""
    layer = {"name": "l", "forward_s": 1.0, "backward_s": 2.0, "update_s": 0.5}
    data = {
        "method": "sequential",
        "model": {"layer": [{**layer, "activation_bytes": 10, "param_bytes": 100}]},
        "delays": {"visibility_s": 1.0},
        "run": {"batches": 10, "warmup": 1},
    }
    assert peak(data, engine) == 210


def one_one(method: str) -> dict:
    return {
        "method": method,
        "model": {"layer": TWO_LAYERS},
        "workers": {"forward": 1, "backward": 1, "max_in_flight": 100},
        "run": {"batches": 30, "warmup": 2},
    }


@pytest.mark.parametrize("engine", ENGINES)
def test_async_bu_peak(engine: str) -> None:
    """1F+1B, one batch every 2 s. Batch i: forward of layer 0 at 2i, layer 1 at 2i+1; backward of layer 1
    [2i+2, 2i+3), layer 0 [2i+3, 2i+4); the block update lands at 2i+4. Batch i reads version i-1 of both
    layers. Live at t in [2v+2, 2v+3): activations of layer 0 of two batches (2 x 1) and of layer 1 of one
    (10); versions v and v-1 of layer 0 (its last reader, batch v, holds v-1 until 2v+4: 2 x 100) and of
    layer 1 (held until batch v's backward of layer 1 ends at 2v+3: 2 x 1000)."""
    assert peak(one_one("async-bu"), engine) == 2 * 1 + 10 + 2 * 100 + 2 * 1000


@pytest.mark.parametrize("engine", ENGINES)
def test_async_lu_peak(engine: str) -> None:
    """As async-bu, but layer 1's update lands at 2i+3, before batch i+1 reads it at 2i+3: layer 1 keeps one
    version (created at 2v+1, dropped at 2v+3 when batch v, its only reader, is done with it)."""
    assert peak(one_one("async-lu"), engine) == 2 * 1 + 10 + 2 * 100 + 1 * 1000


def test_ddp_holds_a_copy_per_replica() -> None:
    data = {
        "method": "ddp",
        "model": {"layer": TWO_LAYERS},
        "workers": {"replicas": 3},
        "run": {"batches": 12, "warmup": 0},
    }
    assert peak(data, "simpy") == 3 * (1 + 10 + 100 + 1000)


def test_no_sizes_gives_no_prediction() -> None:
    data = {
        "method": "async-lu",
        "model": {"layers": 2, "forward_s": 1.0, "beta": 2.0},
        "run": {"batches": 5, "warmup": 0},
    }
    assert peak(data, "fast") is None
    assert peak(data, "simpy") is None


def test_peak_sweep_frees_before_allocating_at_the_same_instant() -> None:
    start, end, size = np.array([0.0, 1.0, 0.5]), np.array([1.0, 2.0, 0.5]), np.array([5, 7, 100])
    assert peak_bytes([(start, end, size, np.inf)]) == 7  # [0,1) then [1,2); the empty interval never counts
    # the same intervals in two chunks ordered in time: nothing in the second starts before 1.0
    first = (start[[0, 2]], end[[0, 2]], size[[0, 2]], 1.0)
    second = (start[[1]], end[[1]], size[[1]], np.inf)
    assert peak_bytes([first, second]) == 7
