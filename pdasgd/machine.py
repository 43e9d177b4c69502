"""The machine a real run uses, as scenario devices, so the simulator predicts that run and not an ideal one.

The executor runs every worker thread on one device: the CPU's cores (its trace's `device_slots` says how
many) or one GPU's streams. A scenario's default of a device per worker describes the paper's ideal; for
predicting a measured run the simulator needs the workers to share that device. `on_machine` rewrites a
scenario that way, and adds the per-op noise the profile measured (without it two backward workers run in
lockstep and staleness comes out as whole-number artefacts; docs/platform.md). CPU devices are time-sliced:
the operating system shares the cores among more threads than cores rather than queueing them. Ranks on
one machine's CPU share its cores the same way; on CUDA each rank has its GPU. `with_network` adds the
real network's all-reduce cost the ranks measured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from pdasgd.methods import split_rank
from pdasgd.ranks import NETWORK
from pdasgd.scenario import Device, Layer, Model, Scenario


def on_machine(
    scenario: Scenario,
    device_slots: Mapping[str, int],
    jitter_cv: float | None = None,
    speeds: tuple[float, float] = (1.0, 1.0),
) -> Scenario:
    """`scenario` with all workers on the run's device (first of `device_slots`, time-sliced unless it is a
    GPU), optional op jitter, and the forward ops and the backward and update ops at `speeds` (an op of
    cost c at speed s takes c / s alone): the speeds the workers' threads really get on the run's machine
    (measured by compare's calibration run; below 1 where more threads than cores lose time to switches
    and GIL hand-offs, and a forward thread of many short ops gets less than its share)."""
    if speeds != (1.0, 1.0):
        scenario = scaled(scenario, 1 / speeds[0], 1 / speeds[1])
    if not device_slots:
        raise ValueError("device_slots: the run reported no device")
    compute = {name: slots for name, slots in device_slots.items() if not name.endswith(f"/{NETWORK}")}
    name, slots = next(iter(compute.items()))
    delays = scenario.delays
    if jitter_cv is not None:
        delays = dataclasses.replace(delays, jitter_cv=jitter_cv)
    if scenario.definition.ranks and "cuda" in name:  # a GPU per rank; on the CPU the ranks share the cores
        devices = tuple(Device(device, count) for device, count in compute.items())
        names = scenario.worker_names()
        by_rank = {split_rank(device)[0]: device for device in compute}
        placed = [by_rank[split_rank(worker)[0]] for worker in names]
        return dataclasses.replace(
            scenario, devices=devices, placement={"workers": tuple(placed)}, delays=delays
        )
    return dataclasses.replace(
        scenario,
        devices=(Device(name, slots, time_slice=not name.startswith("cuda")),),
        placement={},
        delays=delays,
    )


def with_network(scenario: Scenario, probe: Mapping[str, float] | None) -> Scenario:
    """Across ranks: the scenario's modelled all-reduce cost plus the real network's, as the ranks measured
    it (`latency_s`, `bytes_per_s`; executor.world.probe_allreduce): latencies add, and so do the seconds
    per byte."""
    if not probe or not scenario.definition.ranks:
        return scenario
    delays = scenario.delays
    per_byte_s = (1 / delays.allreduce_bytes_per_s if delays.allreduce_bytes_per_s else 0.0) + (
        1 / probe["bytes_per_s"] if probe["bytes_per_s"] else 0.0
    )
    network = dataclasses.replace(
        delays,
        allreduce_s=delays.allreduce_s + probe["latency_s"],
        allreduce_bytes_per_s=1 / per_byte_s if per_byte_s else 0.0,
    )
    return dataclasses.replace(scenario, delays=network)


def scaled(scenario: Scenario, forward: float, backward: float) -> Scenario:
    """`scenario` with every layer's forward cost times `forward`, backward and update costs times
    `backward`."""
    layers = tuple(
        Layer(
            x.name,
            x.forward_s * forward,
            x.backward_s * backward,
            x.update_s * backward,
            x.activation_bytes,
            x.param_bytes,
        )
        for x in scenario.model.layers
    )
    return dataclasses.replace(scenario, model=Model(layers))
