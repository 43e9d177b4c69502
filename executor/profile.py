"""`executor.profile(scenario)`: per-layer forward, backward and update costs of the scenario's network.

The costs are measured on the executor's own code path, not on a model of it: one worker
(`executor.workers.Worker`, the one the runtime uses, with `torch.set_num_threads(threads_per_worker)` in its
thread) trains the scenario's network on the scenario's batches and device, and its own spans give the
times. The worker runs one batch's steps of the scenario's method (`Method.batch_steps`: every role's
steps in turn), so each layer is updated where and as the method updates it. Each layer's forward span
covers reading the version, making leaves and running the block (plus the loss for the last block), its
backward span one `autograd.grad` call, its update span the SGD step under the layer's lock. Updates are
measured as the scenario's method pays them: in place for a method with one worker (nothing else reads the
version), as a new tensor for the others (a pending forward usually has).

Each op's cost includes the gap before it on the worker's timeline (fetching the batch, Python between
ops: the per-op overhead), so a batch's costs add up to its wall time; `LayerSamples.samples` keep the spans
alone and `overhead` the gaps.

The first `warmup` batches are dropped. For each layer and op the profile keeps every sample and writes the
mean: op times are right-skewed, and the simulator's feasibility study (docs/platform.md) found means
measured on this code path predicted threaded runs better than medians. Medians are kept for the table.

`activation_bytes` and `param_bytes` are the runtime's own figures (`executor.networks`): what one batch keeps
alive from a block's forward to its backward, and one version of its parameters.

`measure_pipelined` measures what one worker alone cannot show: ops run slower when a forward thread and a
backward thread share the device, as the pipelined methods make them. Alone, two independent copies of a
network slow each other by a few percent; in the pipeline the forward reads parameters the other thread
has just written and the backward frees activations the other thread allocated, and on the 2-core CPU
machine the op times rise by 20-35% (benchmarks/fidelity.md). It takes the op times from a short 1F+1B
run instead: of the scenario's method when it hands batches from forward to backward workers, else of
async-lu.
"""

from __future__ import annotations

import statistics
import threading
from collections import defaultdict
from dataclasses import dataclass, field, replace

from executor.networks import block_names
from executor.setup import make_context, make_setup
from executor.workers import PendingBatch, Worker
from pdasgd.scenario import Delays, Layer, Scenario

OPS = ("forward", "backward", "update")


@dataclass(frozen=True)
class LayerSamples:
    """Every measured time of one layer, per op, in seconds, and its memory figures."""

    name: str
    samples: dict[str, list[float]]
    activation_bytes: int
    param_bytes: int
    overhead: dict[str, list[float]] = field(default_factory=dict)  # gap before each op, seconds

    def statistic(self, op: str, how: str = "mean") -> float:
        """The op's span time alone."""
        return _statistic(self.samples[op], how)

    def cost(self, op: str, how: str = "mean") -> float:
        """The op's cost: its span time plus the gap before it."""
        return self.statistic(op, how) + _statistic(self.overhead.get(op) or [0.0], how)

    def layer(self, how: str = "mean") -> Layer:
        costs = {f"{op}_s": self.cost(op, how) for op in OPS}
        return Layer(self.name, **costs, activation_bytes=self.activation_bytes, param_bytes=self.param_bytes)


def _statistic(values: list[float], how: str) -> float:
    return statistics.fmean(values) if how == "mean" else statistics.median(values)


def profile(scenario: Scenario, batches: int = 30, warmup: int = 5, how: str = "mean") -> list[Layer]:
    """The scenario's network as `[[model.layer]]` entries: mean (or median) per-layer costs and bytes."""
    return [layer.layer(how) for layer in measure(scenario, batches, warmup)]


def measure(scenario: Scenario, batches: int = 30, warmup: int = 5) -> list[LayerSamples]:
    """Train `warmup + batches` batches with one worker thread and collect its per-layer op times."""
    if batches < 1 or warmup < 0:
        raise ValueError(f"profile: needs batches >= 1 and warmup >= 0, got {batches} and {warmup}")
    run = replace(scenario.run, batches=warmup + batches, warmup=0)
    setup = make_setup(replace(scenario, run=run, delays=Delays()))  # one worker: no delay applies
    alone = len(scenario.worker_names()) == 1
    for layer in setup.layers:
        layer.in_place = layer.in_place and alone
    ctx = make_context(setup, threading.Event())
    errors: list[BaseException] = []
    steps = tuple(scenario.definition.batch_steps(len(setup.layers), scenario.workers))
    thread = threading.Thread(target=_train, args=(ctx, steps, errors), name="pdasgd profile")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    samples: dict[tuple[int, str], list[float]] = defaultdict(list)
    overhead: dict[tuple[int, str], list[float]] = defaultdict(list)
    previous_end_s = None
    for span in sorted(ctx.logs["profile"].spans(), key=lambda span: span.start_s):
        if span.op in OPS and span.batch >= warmup:
            samples[(span.layer, span.op)].append(span.duration_s)
            if previous_end_s is not None:
                overhead[(span.layer, span.op)].append(max(0.0, span.start_s - previous_end_s))
        previous_end_s = span.end_s
    names = block_names(setup.blocks)
    return [
        LayerSamples(
            names[m],
            {op: samples[(m, op)] for op in OPS},
            setup.activation_bytes[m],
            setup.layers[m].nbytes,
            {op: overhead[(m, op)] for op in OPS},
        )
        for m in range(len(setup.layers))
    ]


def _train(ctx, steps: tuple, errors: list[BaseException]) -> None:
    try:
        worker = Worker(ctx, "profile", steps)
        for batch in range(ctx.first, ctx.end):
            worker.run(PendingBatch(batch))
        ctx.clock.finish()
    except BaseException as error:  # re-raised by the caller's thread
        errors.append(error)


def measure_pipelined(
    scenario: Scenario, solo: list[LayerSamples], batches: int = 40, warmup: int = 20
) -> list[LayerSamples]:
    """Per-layer op times as the pipelined methods pay them: a short async-lu run with one forward and one
    backward thread (max_in_flight 4, no injected delays) on the scenario's network and device. Span times
    come from that run; the per-op overhead (gap before each op) from `solo`, since the pipeline's gaps
    are mostly waiting, which the simulator models itself."""
    from executor.runtime import run

    pipeline = replace(
        scenario,
        method=scenario.method if scenario.definition.windowed else "async-lu",
        workers=replace(scenario.workers, forward=1, backward=1, max_in_flight=4),
        delays=Delays(),
        run=replace(scenario.run, batches=warmup + batches, warmup=warmup),
    )
    samples: dict[tuple[int, str], list[float]] = defaultdict(list)
    for span in run(pipeline, curve_points=0).trace.spans:
        if span.op in OPS and span.batch >= warmup:
            samples[(span.layer, span.op)].append(span.duration_s)
    return [replace(layer, samples={op: samples[(m, op)] for op in OPS}) for m, layer in enumerate(solo)]
