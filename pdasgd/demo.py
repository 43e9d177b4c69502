"""The built-in default scenario that `pdasgd demo` runs and README's quick start shows.

An MLP on scikit-learn's digits (bundled, offline) with one forward and two backward workers: the paper's
headline configuration on a 2-core machine. It gives no layer costs, so the demo measures them first
(`pdasgd profile`), then compares sequential, async-bu and async-lu, predicted against measured.
"""

from __future__ import annotations

from pdasgd.scenario import Scenario, scenario_from_toml

DEMO_TOML = """\
name = "demo-mlp-1f2b"
method = "async-lu"

[workers]
forward = 1
backward = 2
max_in_flight = 4

[train]
network = "mlp"
width = 1024
depth = 4
dataset = "digits"
batch_size = 128
lr = 0.05

[run]
batches = 300
warmup = 30
seed = 0
"""

DEMO_METHODS = ("sequential", "async-bu", "async-lu")


def demo_scenario() -> Scenario:
    """The demo scenario, resolved."""
    return scenario_from_toml(DEMO_TOML, origin="<built-in demo>")
