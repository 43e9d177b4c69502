"""`executor.profile(scenario)`: per-layer forward, backward and update costs of the scenario's network.

The costs are measured on the executor's own code path, not on a model of it: one worker
(`executor.workers.Worker`, the one the runtime uses, with `torch.set_num_threads(threads_per_worker)` in its
thread) trains the scenario's network on the scenario's batches and device, and its own spans give the
times. Each layer's forward span covers reading the version, making leaves and running the block (plus the
loss for the last block), its backward span one `autograd.grad` call, its update span the SGD step under the
layer's lock. Updates are measured as the scenario's method pays them: in place for `sequential` (nothing
else reads the version), as a new tensor for the pipelined methods (a pending forward usually has).

The first `warmup` batches are dropped. For each layer and op the profile keeps every sample and writes the
mean: op times are right-skewed, and the simulator's feasibility study (PLATFORM.md) found means measured on
this code path predicted threaded runs better than medians. Medians are kept for the table.

`activation_bytes` and `param_bytes` are the runtime's own figures (`executor.networks`): what one batch keeps
alive from a block's forward to its backward, and one version of its parameters.
"""

from __future__ import annotations

import statistics
import threading
from collections import defaultdict
from dataclasses import dataclass, replace

from executor.networks import block_names
from executor.setup import make_context, make_setup
from executor.workers import Worker
from pdasgd.scenario import Layer, Scenario

OPS = ("forward", "backward", "update")


@dataclass(frozen=True)
class LayerSamples:
    """Every measured time of one layer, per op, in seconds, and its memory figures."""

    name: str
    samples: dict[str, list[float]]
    activation_bytes: int
    param_bytes: int

    def statistic(self, op: str, how: str = "mean") -> float:
        values = self.samples[op]
        return statistics.fmean(values) if how == "mean" else statistics.median(values)

    def layer(self, how: str = "mean") -> Layer:
        costs = {f"{op}_s": self.statistic(op, how) for op in OPS}
        return Layer(self.name, **costs, activation_bytes=self.activation_bytes, param_bytes=self.param_bytes)


def profile(scenario: Scenario, batches: int = 30, warmup: int = 5, how: str = "mean") -> list[Layer]:
    """The scenario's network as `[[model.layer]]` entries: mean (or median) per-layer costs and bytes."""
    return [layer.layer(how) for layer in measure(scenario, batches, warmup)]


def measure(scenario: Scenario, batches: int = 30, warmup: int = 5) -> list[LayerSamples]:
    """Train `warmup + batches` batches with one worker thread and collect its per-layer op times."""
    if batches < 1 or warmup < 0:
        raise ValueError(f"profile: needs batches >= 1 and warmup >= 0, got {batches} and {warmup}")
    run = replace(scenario.run, batches=warmup + batches, warmup=0)
    setup = make_setup(replace(scenario, run=run, delays=replace(scenario.delays, stragglers=())))
    for layer in setup.layers:
        layer.in_place = layer.in_place and scenario.method == "sequential"
    ctx = make_context(setup, threading.Event())
    errors: list[BaseException] = []
    thread = threading.Thread(target=_train, args=(ctx, scenario.method, errors), name="pdasgd profile")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    samples: dict[tuple[int, str], list[float]] = defaultdict(list)
    for span in ctx.logs["profile"].spans():
        if span.op in OPS and span.batch >= warmup:
            samples[(span.layer, span.op)].append(span.duration_s)
    names = block_names(setup.blocks)
    return [
        LayerSamples(
            names[m],
            {op: samples[(m, op)] for op in OPS},
            setup.activation_bytes[m],
            setup.layers[m].nbytes,
        )
        for m in range(len(setup.layers))
    ]


def _train(ctx, method: str, errors: list[BaseException]) -> None:
    try:
        worker = Worker(ctx, "profile")
        for batch in range(ctx.first, ctx.end):
            worker.backward(worker.forward(batch), layerwise=method != "async-bu")
        ctx.clock.finish()
    except BaseException as error:  # re-raised by the caller's thread
        errors.append(error)
