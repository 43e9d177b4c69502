"""Property-based fuzzing of near-valid scenarios (hypothesis): `validate` either refuses one with exit 2 and
one line, or accepts it; then what `validate` prints validates again to the same scenario, and a short
`simulate` gives finite figures."""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import pytest
from hostile import assert_one_line_error, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdasgd.scenario import load_scenario, scenario_from_toml
from pdasgd.tomlwrite import dumps
from simulator import simulate_summary

BASE = {
    "name": "fuzz",
    "method": "async-lu",
    "model": {"layers": 3, "forward_s": 0.03, "beta": 2.0},
    "workers": {"forward": 1, "backward": 2, "max_in_flight": 4},
    "delays": {"handoff_s": 0.001},
    "run": {"batches": 30, "warmup": 3, "seed": 0},
}
KEYS = {
    "": ["name", "method", "colour"],
    "model": ["layers", "forward_s", "beta", "update_s", "activation_bytes", "param_bytes", "width"],
    "workers": ["forward", "backward", "max_in_flight", "replicas", "per_replica", "average_every", "k"],
    "delays": ["handoff_s", "visibility_s", "allreduce_s", "jitter_cv", "update_s"],
    "train": ["network", "width", "depth", "dataset", "batch_size", "lr", "momentum", "device"],
    "run": ["batches", "warmup", "seed", "op_timeout_s"],
}
METHODS = ["sequential", "async-lu", "async-bu", "hogwild", "lapsgd", "lppsgd", "ddp", "adam", ""]

numbers = st.one_of(
    st.integers(min_value=-3, max_value=12),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, 4096, 10**6, 10**7, 10**9, 2**31, 2**32, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=1e-6, max_value=10.0),
    st.sampled_from([0.0, -0.0, 5e-324, 1e-300, 1e-12, 0.5, 0.999999, 1.0, 1e6, 1e7, 1e300]),
)
values = st.one_of(
    numbers,
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(METHODS + ["mlp", "timed", "cuda:\u0661", "cuda:1", "digits", "x.npz", "m:f"]),
    st.lists(st.integers(min_value=0, max_value=3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
small_int = st.integers(min_value=1, max_value=6)
short_s = st.floats(min_value=0.0, max_value=0.1)
PLAUSIBLE = {  # values that are usually valid, so accepted scenarios get fuzzed too
    "name": st.text(max_size=20),  # any text, control characters included: it must round-trip
    "method": st.sampled_from(METHODS[:7]),
    "layers": small_int,
    "forward_s": st.floats(min_value=1e-6, max_value=1.0),
    "beta": st.floats(min_value=0.0, max_value=5.0),
    "update_s": short_s,
    "activation_bytes": st.integers(min_value=0, max_value=2**30),
    "param_bytes": st.integers(min_value=0, max_value=2**30),
    "forward": small_int,
    "backward": small_int,
    "max_in_flight": st.integers(min_value=1, max_value=40),
    "replicas": small_int,
    "per_replica": small_int,
    "average_every": small_int,
    "handoff_s": short_s,
    "visibility_s": short_s,
    "allreduce_s": short_s,
    "jitter_cv": st.floats(min_value=0.0, max_value=2.0),
    "batches": st.integers(min_value=4, max_value=200),
    "warmup": st.integers(min_value=0, max_value=3),
    "seed": st.integers(min_value=0, max_value=2**32 - 1),
    "op_timeout_s": st.floats(min_value=0.01, max_value=1e6),
    "lr": st.floats(min_value=0.0, max_value=1.0),
    "momentum": st.floats(min_value=0.0, max_value=0.99),
}
straggler = st.fixed_dictionaries(
    {"worker": st.sampled_from(["backward:0", "backward:5", "forward:0", "worker:0", "worker:3"])},
    optional={
        "every": st.integers(min_value=-1, max_value=10**10),
        "extra_s": numbers,
        "kind": st.sampled_from(["sleep", "busy", "nap"]),
    },
)
device = st.fixed_dictionaries(
    {"name": st.sampled_from(["cpu", "gpu0"])},
    optional={"slots": numbers, "speed": numbers, "contention": numbers, "time_slice": st.booleans()},
)


@st.composite
def near_valid(draw) -> dict:
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        section = draw(st.sampled_from(sorted(KEYS)))
        key = draw(st.sampled_from(KEYS[section]))
        table = data if section == "" else data.setdefault(section, {})
        choice = draw(st.integers(min_value=0, max_value=9))
        if choice == 0:
            table.pop(key, None)
        elif choice < 6 and key in PLAUSIBLE:
            table[key] = draw(PLAUSIBLE[key])
        else:
            table[key] = draw(values)
    if draw(st.booleans()):
        data.setdefault("delays", {})["straggler"] = draw(st.lists(straggler, max_size=2))
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        data["device"] = draw(st.lists(device, min_size=1, max_size=2))
    return data


def finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(finite(v) for v in value)
    return True


@pytest.mark.slow  # 2000 derandomized examples: 33-48 s
@settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(near_valid())
def test_validate_refuses_in_one_line_or_round_trips_and_simulates(data: dict) -> None:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        path = work / "s.toml"
        path.write_text(dumps(data), encoding="utf-8")
        outcome = run_cli(["validate", str(path)], work)
        if outcome.status != 0:
            assert_one_line_error(outcome, "validate", ": ")
            return
        scenario = load_scenario(path)
        again = scenario_from_toml(outcome.out, base_dir=work)
        assert again == scenario
        if scenario.model is None:
            return
        short = scenario.with_overrides({"run.batches": min(scenario.run.batches, 40), "run.warmup": 0})
        summary = simulate_summary(short, progress=False).to_dict()
        assert finite(summary), summary
