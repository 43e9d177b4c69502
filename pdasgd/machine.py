"""The machine a real run uses, as scenario devices, so the simulator predicts that run and not an ideal one.

The executor runs every worker thread on one device: the CPU's cores (its trace's `device_slots` says how
many) or one GPU's streams. A scenario's default of a device per worker describes the paper's ideal; for
predicting a measured run the simulator needs the workers to share that device. `on_machine` rewrites a
scenario that way, and adds the per-op noise the profile measured (without it two backward workers run in
lockstep and staleness comes out as whole-number artefacts; docs/platform.md). CPU devices are time-sliced:
the operating system shares the cores among more threads than cores rather than queueing them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from pdasgd.scenario import Device, Scenario


def on_machine(
    scenario: Scenario,
    device_slots: Mapping[str, int],
    jitter_cv: float | None = None,
    efficiency: float = 1.0,
) -> Scenario:
    """`scenario` with all workers on the run's device (first of `device_slots`, time-sliced unless it is a
    GPU), optional op jitter, and the device's speed set to `efficiency`: the share of core time the
    workers' threads really get (below 1 when more threads than cores lose time to switches and GIL
    hand-offs; measured by compare's calibration run)."""
    if not device_slots:
        raise ValueError("device_slots: the run reported no device")
    name, slots = next(iter(device_slots.items()))
    delays = scenario.delays
    if jitter_cv is not None:
        delays = dataclasses.replace(delays, jitter_cv=jitter_cv)
    return dataclasses.replace(
        scenario,
        devices=(Device(name, slots, speed=efficiency, time_slice=not name.startswith("cuda")),),
        placement={},
        delays=delays,
    )
