"""Replay: the parameters a schedule produces, by executing its trace's events in order on the real network.

A trace says everything that decides the arithmetic of an asynchronous run: which version of each layer
every forward read (forward spans) and the order in which each layer's updates were applied (update spans
carry the version just before them). `replay(scenario, trace)` trains the scenario's real network on one
device by running those events one at a time, whatever schedule, engine or hardware produced the trace:

- forward (i, m): block m of batch i on the version of layer m the trace says it read; batch i's data is
  batch i of the executor's seeded stream (`executor.data.batch_stream`);
- backward (i, m): the same `autograd.grad` call as the executor's (`executor.blocks`);
- update (i, m): SGD with momentum and weight decay on layer m's latest version, as `executor.params`
  applies it, in the trace's order of that layer's versions.

Methods with one shared parameter copy replay as they are (sequential, async-lu, async-bu, hogwild). ddp's
ranks hold copies that stay equal, since every update applies the all-reduced mean gradient: its replay
keeps one copy and makes each step's updates of a layer one update with the mean of the step's batches'
gradients. Gossip (gossip-lu, gossip-bu in exchange mode) keeps a copy per rank, each with its own versions
and momentum: a `mix` span is an event too, `latest += w (partner's snapshot - own snapshot)` as a new
version, the snapshots named by the trace's mix records (`pdasgd.gossip`); after the last event the copies
are averaged as the executor's final all-reduce does, and `parameters` are rank 0's. The accuracy during
the run is that of the copies' mean. lapsgd and lppsgd, whose averaging rounds are not versions, and push
gossip, whose receiver's snapshot the trace does not record, are refused.

Events run in the trace's time order; where ties leave that order open (zero-cost ops in a simulated
trace), an event waits until what it needs has happened: the version it reads exists, its batch's previous
op is done, the layer is at the version the update started from. Only the versions a later forward still
reads are kept, besides the latest (`peak_versions` says how many were alive at most); an update writes in
place when no pending graph and no later forward can see the version it replaces, as the executor's does.

BatchNorm's running statistics are buffers that forwards update in place; a replay updates them in the
trace's order of forwards per layer. With one forward worker that is the executor's order exactly; with
several (hogwild) two forwards of one layer may overlap in the real run and interleave their running
averages, which a serial replay cannot reproduce: the parameters stay exact, the statistics differ
(tests/test_replay.py bounds it). ddp's ranks keep their own statistics (DistributedDataParallel is built
without buffer broadcasts), while a replay's one copy sees every rank's batches.

The accuracy curve is evaluated on the test split at `eval_points` moments of the trace's time axis: when
the k-th batch of the trace completes (its last op ends), with every update applied before that moment.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from executor.blocks import Replica, backward_block, block_input, loss_of, owned
from executor.data import evaluate
from executor.params import VersionedLayer
from executor.setup import make_setup
from pdasgd.gossip import paired_mixes
from pdasgd.methods import BACKWARD, FORWARD, UPDATE, lookup, split_rank
from pdasgd.scenario import Scenario
from pdasgd.trace import Trace, TraceError

EVAL_POINTS = 20
MIX = "mix"
# at one instant: publish first, then read (the tie rule)
KIND_ORDER = {UPDATE: 0, MIX: 0, FORWARD: 1, BACKWARD: 2}


@dataclass(frozen=True)
class Mix:
    """What a gossip mix reads: its own snapshot, and the partner's copy and snapshot."""

    snapshot: int
    partner: int
    partner_snapshot: int


@dataclass(frozen=True)
class Event:
    time_s: float
    kind: str
    batch: int  # -1 for a mix
    layer: int
    version: int  # forward: the version read; update, mix: the version before it; backward: unused
    group: tuple[int, ...] = ()  # a synchronous step's update: every batch whose gradient it averages
    copy: int = 0  # the parameter copy (gossip: the rank)
    mix: Mix | None = None

    @property
    def key(self) -> tuple:
        return (self.time_s, KIND_ORDER[self.kind], self.batch, self.layer, self.copy)


@dataclass(frozen=True)
class CurvePoint:
    batches: int  # batches completed at this moment of the trace
    time_s: float
    accuracy: float


@dataclass
class ReplayResult:
    """What the schedule's arithmetic gives: the accuracy curve, per-batch losses, the final parameters."""

    method: str
    source: str
    batches: int
    curve: list[CurvePoint]
    losses: list[tuple[int, float, float]]  # (batch, time it completed, its training loss)
    parameters: list[tuple[torch.Tensor, ...]]
    buffers: list[torch.Tensor]
    peak_versions: int  # the most layer versions kept at once (all layers together)
    layers: int
    wall_s: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def final_accuracy(self) -> float:
        return self.curve[-1].accuracy if self.curve else math.nan

    def time_to(self, target: float) -> CurvePoint | None:
        """The first point of the curve at or above `target` accuracy, or None if it never gets there."""
        return next((point for point in self.curve if point.accuracy >= target), None)

    @property
    def diverged_at(self) -> int | None:
        """The first batch (in completion order) whose training loss was NaN or infinite, if any: the
        schedule's staleness (or the learning rate) made training diverge."""
        return next((batch for batch, _, loss in self.losses if not math.isfinite(loss)), None)

    def to_dict(self, target: float | None = None) -> dict:
        reached = self.time_to(target) if target is not None else None
        tail = [loss for _, _, loss in self.losses[-max(1, len(self.losses) // 10) :]]
        return {
            "method": self.method,
            "source": self.source,
            "batches": self.batches,
            "final_accuracy": self.final_accuracy,
            "final_loss": sum(tail) / len(tail) if tail else None,
            "target": target,
            "time_to_target_s": reached.time_s if reached else None,
            "batches_to_target": reached.batches if reached else None,
            "curve": [vars(point) for point in self.curve],
            "losses": [{"batch": b, "time_s": t, "loss": loss} for b, t, loss in self.losses],
            "peak_versions": self.peak_versions,
            "loss_not_finite_from_batch": self.diverged_at,
            "replay_wall_s": self.wall_s,
        }


def events_of(trace: Trace) -> list[Event]:
    """The trace's forward, backward and update spans as events in time order (TraceError if one is
    missing what a replay needs). For synchronous data parallel (ddp), whose ranks' copies are equal at
    every step, the ranks' updates of a layer at one step (one version) are one update with the mean of
    their batches' gradients, as DistributedDataParallel's all-reduce gives every rank."""
    gossip = lookup(trace.method).gossip
    found = []
    for span in trace.spans:
        if gossip and span.op == MIX:
            continue
        if span.op not in KIND_ORDER or span.batch is None or span.layer is None:
            continue
        if span.op != BACKWARD and span.version is None:
            raise TraceError(f"a {span.op} span of batch {span.batch}, layer {span.layer} has no version")
        copy = (split_rank(span.worker)[0] or 0) if gossip else 0
        found.append(Event(span.start_s, span.op, span.batch, span.layer, span.version or 0, copy=copy))
    if lookup(trace.method).synchronous:
        found = _one_update_per_step(found)
    if gossip:
        found += _mix_events(trace)
    return sorted(found, key=lambda event: event.key)


def _mix_events(trace: Trace) -> list[Event]:
    """Gossip: every `mix` span as an event at its end (when the executor published it), joined to its
    records (pdasgd.gossip)."""
    spans = [span for span in trace.spans if span.op == MIX]
    if not spans:
        return []
    if "mix_records" not in trace.info:
        raise TraceError("replay: the trace's mixes have no mix records (push mode, or an older trace)")
    try:
        paired = paired_mixes(trace.info["mix_records"])
    except ValueError as error:
        raise TraceError(f"replay: {error}") from None
    events = []
    for span in spans:
        rank = split_rank(span.worker)[0] or 0
        record = paired.get((rank, span.layer, span.version))
        if record is None:
            raise TraceError(f"replay: the mix of rank {rank}, layer {span.layer} has no record")
        events.append(Event(span.end_s, MIX, -1, span.layer, span.version, copy=rank, mix=Mix(*record)))
    return events


def _one_update_per_step(events: list[Event]) -> list[Event]:
    steps: dict[tuple[int, int], list[Event]] = defaultdict(list)
    others = []
    for event in events:
        (steps[(event.layer, event.version)] if event.kind == UPDATE else others).append(event)
    merged = []
    for (layer, version), updates in steps.items():
        first = min(updates, key=lambda event: event.key)
        group = tuple(sorted(event.batch for event in updates))
        merged.append(Event(first.time_s, UPDATE, group[0], layer, version, group))
    return others + merged


def not_replayable(method: str) -> str:
    """Why a method's traces cannot be replayed (for the one-line refusals)."""
    return (
        f"{method} averages a parameter copy per rank every few batches; replay covers one shared copy "
        "(sequential, async-lu, async-bu, hogwild), synchronous ddp and exchange gossip so far"
    )


def replay_problem(scenario: Scenario) -> str | None:
    """Why `scenario`'s traces cannot be replayed; None when they can."""
    if not scenario.definition.replayable:
        return not_replayable(scenario.method)
    if scenario.definition.gossip and scenario.distributed.gossip_mode == "push":
        return "push gossip: the trace does not record the receiver's snapshot; use gossip_mode exchange"
    return None


def check_replayable(scenario: Scenario, trace: Trace) -> None:
    """TraceError unless `trace` can be replayed on `scenario`'s network."""
    problem = replay_problem(scenario)
    if problem:
        raise TraceError(f"replay: {problem}")
    if trace.method != scenario.method:
        raise TraceError(
            f"replay: the trace is of {trace.method}, the scenario's method is {scenario.method}"
        )
    if trace.info.get("first_batch", 0):
        raise TraceError("replay: the trace is of a resumed run (it does not start at batch 0)")


class _Replayer:
    """The replay's state: the network, every kept version of every copy, pending graphs and what has
    happened. Versions are keyed (copy, layer); batch ids are unique across copies."""

    def __init__(self, scenario: Scenario, events: list[Event], layers: int, copies: int = 1) -> None:
        setup = make_setup(scenario)
        if len(setup.blocks) != layers:
            raise TraceError(f"replay: the trace has {layers} layers, the network {len(setup.blocks)} blocks")
        self.setup = setup
        self.replica = Replica(setup.blocks)
        self.weight = scenario.distributed.gossip_mix
        self.layers = [  # [copy][layer]; copies start equal, as the ranks do
            [
                VersionedLayer(_own(block, copy), layer.sgd, in_place=False)
                for block, layer in zip(setup.blocks, setup.layers, strict=True)
            ]
            for copy in range(copies)
        ]
        self.kept: list[list[dict[int, tuple[torch.Tensor, ...]]]] = [
            [{0: layer.latest.tensors} for layer in mine] for mine in self.layers
        ]
        self.last_read = _last_reads(events)
        self.stream = _batches(setup)
        self.top = layers - 1
        self.inputs: dict[int, object] = {}  # batch -> activation going forward
        self.saved: dict[tuple[int, int], tuple] = {}  # (batch, layer) -> (input, leaves, output, version)
        self.reading: dict[tuple[int, int, int], int] = defaultdict(int)  # (copy, layer, version) -> graphs
        self.grad_in: dict[int, torch.Tensor | None] = {}  # batch -> gradient coming back
        self.grads: dict[tuple[int, int], tuple[list[torch.Tensor], list[bool]]] = {}
        self.done: set[tuple[str, int, int]] = set()
        self.losses: dict[int, float] = {}
        self.peak_versions = layers * copies
        self.awaited: dict[tuple[int, int, int], int] = defaultdict(int)  # versions pending forwards read

    def ready(self, event: Event) -> bool:
        i, m, mine = event.batch, event.layer, self.layers[event.copy]
        if event.kind == FORWARD:
            previous = m == 0 or (FORWARD, i, m - 1) in self.done
            return previous and event.version <= mine[m].latest.number
        if event.kind == BACKWARD:
            return (FORWARD, i, self.top) in self.done and (
                m == self.top or (BACKWARD, i, m + 1) in self.done
            )
        if event.kind == MIX:
            assert event.mix is not None
            theirs = self.layers[event.mix.partner][m].latest.number
            return mine[m].latest.number == event.version and event.mix.partner_snapshot <= theirs
        batches = event.group or (i,)
        done = all((BACKWARD, b, m) in self.done for b in batches)
        return done and mine[m].latest.number == event.version

    def wait(self, event: Event) -> None:
        """`event` is pending: keep the version it reads, though later events may run first (a forward
        that waits for a mix published after the update it reads)."""
        if event.kind == FORWARD:
            self.awaited[(event.copy, event.layer, event.version)] += 1

    def run(self, event: Event, index: int) -> None:
        if event.kind == FORWARD:
            self.awaited[(event.copy, event.layer, event.version)] -= 1
        run = {FORWARD: self.forward, BACKWARD: self.backward, UPDATE: self.update, MIX: self.mix}
        run[event.kind](event, index)
        self.done.add((event.kind, event.batch, event.layer))

    def forward(self, event: Event, index: int) -> None:
        i, m, c = event.batch, event.layer, event.copy
        if m == 0:
            self.inputs[i] = self.stream(i)
        x, y = self.inputs[i]
        tensors = self.kept[c][m].get(event.version)
        if tensors is None:
            raise TraceError(f"replay: batch {i} reads version {event.version} of layer {m}, gone already")
        x_in = block_input(x, m)
        leaves, out = self.replica.forward(m, x_in, tensors)
        if m == self.top:
            out = loss_of(out, y)
            self.losses[i] = float(out.detach())
            del self.inputs[i]
        else:
            self.inputs[i] = (out, y)
        self.saved[(i, m)] = (x_in, leaves, out, event.version)
        self.reading[(c, m, event.version)] += 1
        self._forget(c, m, index)

    def backward(self, event: Event, _: int) -> None:
        i, m = event.batch, event.layer
        x_in, leaves, output, version = self.saved.pop((i, m))
        grads, self.grad_in[i] = backward_block(output, self.grad_in.get(i), leaves, x_in)
        self.grads[(i, m)] = (grads, owned(grads, self.grad_in[i]))
        self.reading[(event.copy, m, version)] -= 1
        if m == 0:
            self.grad_in.pop(i, None)

    def update(self, event: Event, index: int) -> None:
        c, m = event.copy, event.layer
        layer = self.layers[c][m]
        if event.group:  # a synchronous step: the mean of its batches' gradients, as DDP averages them
            parts = [self.grads.pop((b, m))[0] for b in event.group]
            grads, mine = [sum(p[k] for p in parts) / len(parts) for k in range(len(parts[0]))], None
        else:
            grads, mine = self.grads.pop((event.batch, m))
        # in place when nothing will see the old tensors: no pending graph read them, no later event will
        old = layer.latest.number
        unseen = not self.reading[(c, m, old)] and not self.awaited[(c, m, old)]
        layer.in_place = unseen and self.last_read.get((c, m, old), -1) <= index
        new, _, _, _ = layer.apply(grads, owned=mine)
        self.kept[c][m][new.number] = new.tensors
        self._forget(c, m, index)

    def mix(self, event: Event, index: int) -> None:
        """`latest += w (partner's snapshot - own snapshot)`, a new version (executor.gossip's arithmetic)."""
        assert event.mix is not None
        c, m, mix = event.copy, event.layer, event.mix
        own, theirs = self.kept[c][m][mix.snapshot], self.kept[mix.partner][m][mix.partner_snapshot]
        deltas = [(t - o).mul_(self.weight) for t, o in zip(theirs, own, strict=True)]
        new, _, _ = self.layers[c][m].mix(deltas)
        self.kept[c][m][new.number] = new.tensors
        self._forget(c, m, index)
        self._forget(mix.partner, m, index)

    def average(self) -> None:
        """The executor's last all-reduce (executor.averaging.average_copies): every copy's latest plus the
        mean minus itself."""
        if len(self.layers) < 2:
            return
        for m in range(len(self.layers[0])):
            latest = [mine[m].latest.tensors for mine in self.layers]
            for mine, tensors in zip(self.layers, latest, strict=True):
                mine[m].shift([a.sub_(t) for a, t in zip(_mean(latest), tensors, strict=True)])

    def _forget(self, c: int, m: int, index: int) -> None:
        """Drop copy c's versions of layer m that no event after `index` reads (the latest always stays)."""
        latest, kept = self.layers[c][m].latest.number, self.kept[c][m]
        for number in [n for n in kept if n != latest and self.last_read.get((c, m, n), -1) <= index]:
            if not self.awaited[(c, m, number)]:
                del kept[number]
        self.peak_versions = max(self.peak_versions, sum(len(k) for mine in self.kept for k in mine))

    def accuracy(self) -> float:
        """Test accuracy of the copies' mean (of the one copy, without gossip)."""
        evaluator = Replica(self.setup.blocks)
        for m in range(len(self.layers[0])):
            latest = [mine[m].latest.tensors for mine in self.layers]
            evaluator.load(m, tuple(_mean(latest)) if len(latest) > 1 else latest[0])
        dataset = self.setup.dataset
        return evaluate(evaluator.blocks, dataset.test_x, dataset.test_y)


def _mean(copies: list[tuple[torch.Tensor, ...]]) -> list[torch.Tensor]:
    """The copies' tensors summed in rank order and divided by their count (as the final all-reduce's
    sum, then division), new tensors."""
    return [sum(parts[1:], parts[0]).div(len(copies)) for parts in zip(*copies, strict=True)]


def _own(block: torch.nn.Module, copy: int) -> list[torch.Tensor]:
    """Copy 0 trains the block's own parameters; other copies start from clones of them."""
    parameters = list(block.parameters())
    return parameters if copy == 0 else [p.detach().clone() for p in parameters]


def _last_reads(events: list[Event]) -> dict[tuple[int, int, int], int]:
    """(copy, layer, version) -> index of the last event that reads it (a forward, or a mix's snapshots)."""
    last: dict[tuple[int, int, int], int] = {}
    for index, event in enumerate(events):
        if event.kind == FORWARD:
            last[(event.copy, event.layer, event.version)] = index
        elif event.mix is not None:
            last[(event.copy, event.layer, event.mix.snapshot)] = index
            last[(event.mix.partner, event.layer, event.mix.partner_snapshot)] = index
    return last


def _batches(setup) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """Batch i of the executor's seeded stream, on the setup's device (batches are asked for in order of
    their first forward, which need not be their number's order)."""
    from executor.data import batch_stream

    stream = batch_stream(setup.dataset, setup.scenario.train.batch_size, setup.scenario.run.seed)
    waiting: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    produced = [0]

    def get(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        while produced[0] <= i:
            waiting[produced[0]] = next(stream)
            produced[0] += 1
        x, y = waiting.pop(i)
        return x.to(setup.device), y.to(setup.device)

    return get


def completion_times(trace: Trace) -> list[tuple[float, int]]:
    """(time its last op ended, batch) of every batch in the trace, in completion order."""
    end: dict[int, float] = defaultdict(float)
    for span in trace.spans:
        if span.batch is not None and span.op in KIND_ORDER:
            end[span.batch] = max(end[span.batch], span.end_s)
    return sorted((t, batch) for batch, t in end.items())


def eval_moments(trace: Trace, points: int) -> list[tuple[int, float]]:
    """(batches completed, time) of `points` moments spread over the trace's completions, the last one
    the end."""
    done = completion_times(trace)
    if not done:
        return []
    count = len(done)
    chosen = sorted({max(1, round(count * k / points)) for k in range(1, points + 1)})
    return [(k, done[k - 1][0]) for k in chosen]


def replay(
    scenario: Scenario,
    trace: Trace,
    eval_points: int = EVAL_POINTS,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Train `scenario`'s network by executing `trace`'s events in order (module docstring)."""
    check_replayable(scenario, trace)
    torch.set_num_threads(scenario.train.threads_per_worker)  # as each executor worker: the same kernels
    started_s = time.perf_counter()
    events = events_of(trace)
    copies = scenario.definition.rank_count(scenario.workers) if scenario.definition.gossip else 1
    state = _Replayer(scenario, events, trace.layers, copies)
    moments = eval_moments(trace, eval_points)
    curve, pending, next_moment = [], [], 0
    for index, event in enumerate(events):
        while next_moment < len(moments) and moments[next_moment][1] < event.time_s and not pending:
            batches, at_s = moments[next_moment]
            curve.append(CurvePoint(batches, at_s, state.accuracy()))
            next_moment += 1
        pending.append((index, event))
        state.wait(event)
        _drain(state, pending)
        if progress and index % 256 == 0:
            progress(index, len(events))
    if pending:
        stuck = pending[0][1]
        raise TraceError(
            f"replay: the trace's {stuck.kind} of batch {stuck.batch}, layer {stuck.layer} can never run "
            "(what it needs never happens): the trace is not a schedule"
        )
    state.average()
    for batches, at_s in moments[next_moment:]:
        curve.append(CurvePoint(batches, at_s, state.accuracy()))
    finished = {batch: t for t, batch in completion_times(trace)}
    losses = sorted((finished[i], i, loss) for i, loss in state.losses.items())
    return ReplayResult(
        method=trace.method,
        source=trace.source,
        batches=len(finished),
        curve=curve,
        losses=[(i, t, loss) for t, i, loss in losses],
        parameters=[layer.latest.tensors for layer in state.layers[0]],
        buffers=list(state.setup.buffers),
        peak_versions=state.peak_versions,
        layers=trace.layers,
        wall_s=time.perf_counter() - started_s,
    )


def _drain(state: _Replayer, pending: list[tuple[int, Event]]) -> None:
    """Run every pending event whose needs are met, in order, until none is left that can run."""
    progressed = True
    while progressed and pending:
        progressed = False
        for position, (index, event) in enumerate(pending):
            if state.ready(event):
                state.run(event, index)
                del pending[position]
                progressed = True
                break
