"""Links: the delays between workers live here, not in the sender or the receiver (SimPy's Cable example).

- `HandoffLink`: forward end -> backward start (`delays.handoff_s`, the loss/activations transfer). A batch
  put in at t arrives in the receiving queue at t + delay.
- `UpdateLink`: an update published at t becomes visible to readers at t + `delays.visibility_s`. It never
  holds the updating worker. Visibility only decides versions, which are resolved from the records after
  the run (`simulator.records`), so the link returns the instant instead of scheduling an event.
- `AllreduceLink`: the time of one all-reduce (ddp gradients, lapsgd/lppsgd parameter averaging):
  `delays.allreduce_s` with two or more replicas, nothing with one.
"""

from __future__ import annotations

import simpy

from simulator.resources import BatchQueue


class HandoffLink:
    """Delivers batch ids to `target` after `delay_s`."""

    def __init__(self, env: simpy.Environment, delay_s: float, target: BatchQueue) -> None:
        self.env = env
        self.delay_s = delay_s
        self.target = target

    def put(self, batch: int) -> None:
        if self.delay_s <= 0:
            self.target.put(batch)
            return
        arrival = self.env.timeout(self.delay_s, batch)
        arrival.callbacks.append(self._deliver)

    def _deliver(self, event: simpy.events.Event) -> None:
        self.target.put(event.value)


class UpdateLink:
    """When an update applied at `applied_s` becomes visible to readers."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def visible_s(self, applied_s: float) -> float:
        return applied_s + self.delay_s


class AllreduceLink:
    """Duration of one all-reduce among `replicas` parties."""

    def __init__(self, latency_s: float, replicas: int) -> None:
        self.latency_s = latency_s
        self.replicas = replicas

    def duration_s(self) -> float:
        return self.latency_s if self.replicas > 1 else 0.0
