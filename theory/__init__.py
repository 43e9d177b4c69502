"""Closed forms for decoupled asynchronous backpropagation with layer-wise updates.

Re-derived and corrected from arXiv 2410.05985 (docs/theory.md): speed-up (section 3.3, `speedup`),
staleness (section 3.4, `staleness`), gradient-bias bound (later version, `bias`), SDE and delayed-SGD
variance (section 5 and appendix B, `sde`), and the max-plus cycle time of fixed-time schedules (`maxplus`).
Each module states its assumptions and where the paper is wrong. Only numpy, scipy and the standard library
are used; nothing else of the project is imported.
"""

# `speedup` (the function) is not re-exported: it would hide the module theory.speedup.
from theory.bias import bias_bound, lipschitz_constant, pathwise_bound, simulate_delayed_quadratic
from theory.maxplus import async_schedule_graph, firing_times, karp, max_cycle_mean
from theory.sde import (
    delayed_sgd_stable,
    delayed_sgd_variance,
    delayed_stability_limit,
    eq2_stationary_variance,
    euler_maruyama,
    ou_stationary_variance,
    paper_stationary_variance,
    perturbed_sgd_variance,
    sample_delayed_sgd,
    sgd_variance,
)
from theory.speedup import (
    async_schedule,
    async_time,
    cycle_time,
    paper_speedup,
    sequential_time,
    speedup_limit,
)
from theory.staleness import (
    block_delay,
    bounded_bu_staleness,
    fresh_layer_fraction,
    mean_relative_delay,
    offset_staleness,
    offset_staleness_recursion,
    paper_relative_staleness,
    read_offsets,
    staleness_recursion,
    uniform_layers,
    uniform_staleness,
    version_staleness,
    visible_offsets,
)
from theory.ties import TIE_FRACTION, tie_s

__all__ = [
    "async_schedule",
    "async_schedule_graph",
    "async_time",
    "bias_bound",
    "block_delay",
    "bounded_bu_staleness",
    "cycle_time",
    "delayed_sgd_stable",
    "delayed_sgd_variance",
    "delayed_stability_limit",
    "eq2_stationary_variance",
    "euler_maruyama",
    "firing_times",
    "fresh_layer_fraction",
    "karp",
    "lipschitz_constant",
    "max_cycle_mean",
    "mean_relative_delay",
    "offset_staleness",
    "offset_staleness_recursion",
    "ou_stationary_variance",
    "paper_relative_staleness",
    "paper_stationary_variance",
    "paper_speedup",
    "read_offsets",
    "pathwise_bound",
    "perturbed_sgd_variance",
    "sample_delayed_sgd",
    "sequential_time",
    "sgd_variance",
    "simulate_delayed_quadratic",
    "speedup_limit",
    "staleness_recursion",
    "uniform_layers",
    "uniform_staleness",
    "version_staleness",
    "visible_offsets",
    "TIE_FRACTION",
    "tie_s",
]
