"""The SimPy simulator: predicts the trace (throughput, staleness, utilisation, memory) of a scenario.

`simulate(scenario) -> Trace` and `simulate_summary(scenario) -> dict` (what `pdasgd.metrics.summarize`
says of that trace). Workers are SimPy processes, devices are resources with slots and a speed, hand-off and
update delays live in links; fixed-time schedules with a device per worker take an exact numpy fast path.
Imports numpy and simpy only (no torch).
"""

from simulator.core import choose_engine, simulate, simulate_summary

__all__ = ["choose_engine", "simulate", "simulate_summary"]
