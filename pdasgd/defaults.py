"""The built-in default scenario that `pdasgd demo` runs and README's quick start shows.

Layer costs are the one-thread measurements of PLATFORM.md for an MLP 8x1024 at batch 128 (forward
26.9 ms per batch, backward 2.35 times that), with one forward and two backward workers: the paper's
headline configuration on a 2-core machine.
"""

from __future__ import annotations

from pdasgd.scenario import Scenario, scenario_from_toml

DEMO_TOML = """\
name = "demo-mlp-1f2b"
method = "async-lu"

[model]
layers = 8
forward_s = 0.027
beta = 2.35

[workers]
forward = 1
backward = 2
max_in_flight = 4

[train]
network = "mlp"
width = 256
depth = 4
dataset = "digits"
batch_size = 64
lr = 0.05

[run]
batches = 300
warmup = 20
seed = 0
"""


def demo_scenario() -> Scenario:
    """The demo scenario, resolved."""
    return scenario_from_toml(DEMO_TOML, origin="<built-in demo>")
