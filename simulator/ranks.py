"""Ranks in the SimPy model: collectives that pair across ranks, DDP's bucketed all-reduce, averaging rounds.

Methods across ranks (`pdasgd.methods.Method.ranks`) run as the executor runs them on torch.distributed
(`pdasgd.ranks` has the facts both share):

- `Collectives`: the k-th collective of every rank pairs with the k-th of the others, keyed by what it is
  (("grad", step, bucket), ("avg", round)). It ends `cost` after the last rank arrives, the cost being
  `delays.allreduce_cost_s(bytes)` (latency + bytes / bandwidth).
- A rank's communicator (`r<rank>/comm`) does its communication one op at a time, in order: a
  [[delays.comm]] delay first (a `wait` span), then the all-reduce (an `allreduce` span).
- ddp: the `AR` step of a worker's batch is DDP's all-reduce in buckets (`gradient_allreduce`). Bucket j is
  ready when the backward of its lowest layer ends; the communicator starts it once it is ready and bucket
  j - 1 is done; the worker's updates wait for the last bucket.
- lapsgd, lppsgd: `averaging_communicator` runs round k once the rank has finished k x average_every of its
  batches, and a last round after its last batch. With `workers.averaging = "background"` the workers go on
  meanwhile; with "blocking" a worker that finishes a batch while a round is due or running waits for its
  end before taking another (`RankState.gate`).
- gossip-lu, gossip-bu: `gossip_communicator` runs the exchange rounds of `pdasgd.gossip`;
  `push_communicator` its push mode (the receiver's mix is a `mix` row of the receiver's communicator, at
  the message's arrival); gossip_mode "none" has no communicator process.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Hashable, Sequence
from typing import TYPE_CHECKING

from simpy.events import Event, Timeout

from pdasgd.gossip import IDLE_S, chosen_layers, partners, push_target
from pdasgd.ranks import averaging_rounds
from simulator.records import ALLREDUCE, BACKWARD, MIX, WAIT

if TYPE_CHECKING:
    from simulator.engine import Engine


class Collectives:
    """Collectives of `ranks` parties, paired by key; each event's value is the instant it ends."""

    def __init__(self, env, ranks: int) -> None:
        self.env = env
        self.ranks = ranks
        self._pending: dict[Hashable, list] = {}  # key -> [arrivals, latest arrival, event]

    def arrive(self, key: Hashable, at_s: float, cost_s: float) -> Event:
        """Rank's arrival at `at_s` (it may lie before now: a time computed from recorded ones)."""
        entry = self._pending.setdefault(key, [0, -math.inf, Event(self.env)])
        entry[0] += 1
        entry[1] = max(entry[1], at_s)
        event = entry[2]
        if entry[0] == self.ranks:
            del self._pending[key]
            end_s = entry[1] + cost_s
            release = Timeout(self.env, max(0.0, end_s - self.env.now))
            release.callbacks.append(lambda _: event.succeed(end_s))
        return event


class RankState:
    """One rank's communicator and its count of finished batches."""

    def __init__(self, engine: Engine, rank: int, comm_worker: int) -> None:
        self.engine = engine
        self.rank = rank
        self.comm_worker = comm_worker
        self.delay_s = engine.scenario.delays.comm_delay_s(rank)
        self.comm_free_s = 0.0  # when the communicator has finished its last op
        self.finished = 0
        self.marked: dict[int, float] = {}  # gossip: layer -> its first update since the rank last sent it
        self.cleared_s: dict[int, float] = {}  # gossip: layer -> when its marks were last cleared
        self.finished_s = math.inf  # when the rank's last batch finished
        self.tie_s = engine.tie_s
        self.last_gossip_s = -math.inf  # gossip: when its last round (push) started
        self._waiting: dict[int, Event] = {}  # finished count -> event
        self._gate: Event | None = None  # blocking averaging: closed while a round is due or running
        workers = engine.scenario.workers
        self.blocking = workers.averaging == "blocking" and engine.method.averaging
        local = engine.batches // engine.rank_count
        rounds = averaging_rounds(local, workers.average_every) if engine.method.averaging else 0
        self.round_counts = [k * workers.average_every for k in range(1, rounds + 1)]

    def finish(self) -> None:
        self.finished += 1
        if self.finished == self.engine.batches // self.engine.rank_count:
            self.finished_s = self.engine.env.now
        if self.blocking and self.finished in self.round_counts and self._gate is None:
            self._gate = Event(self.engine.env)  # closed at once: no worker of the rank starts another
        event = self._waiting.pop(self.finished, None)
        if event is not None:
            event.succeed()

    def mark(self, layer: int, now_s: float) -> None:
        """Gossip: an update of `layer` ended now; one at the instant its marks were cleared (within tie_s)
        went with them."""
        if layer not in self.marked and now_s > self.cleared_s.get(layer, -math.inf) + self.tie_s:
            self.marked[layer] = now_s

    def marks_before(self, now_s: float) -> frozenset[int]:
        """Gossip: the layers marked before this instant (an update at the same instant, within tie_s, is
        not in them: SimPy may not have run it yet)."""
        return frozenset(m for m, at_s in self.marked.items() if at_s < now_s - self.tie_s)

    def finished_before(self, now_s: float) -> bool:
        """Gossip: whether the rank's last batch finished before this instant (the same tie rule)."""
        return self.finished_s < now_s - self.tie_s

    def clear(self, layers, now_s: float) -> None:
        """Gossip: the marks of `layers` are sent; an update at this same instant is counted as sent."""
        for layer in layers:
            self.marked.pop(layer, None)
            self.cleared_s[layer] = now_s

    def reached(self, count: int) -> Event | None:
        """An event for the moment `count` batches of this rank have finished (None: they have)."""
        if self.finished >= count:
            return None
        return self._waiting.setdefault(count, Event(self.engine.env))

    def gate(self) -> Event | None:
        """Blocking averaging: the event a worker waits on before its next batch (None: go on)."""
        return self._gate

    def open_gate(self) -> None:
        if self._gate is not None:
            gate, self._gate = self._gate, None
            gate.succeed()

    def communicate(self, key: Hashable, ready_s: float, nbytes: int, batch: int = -1, layer: int = -1):
        """One communication op of this rank, started once it is ready and the previous one is done: the
        delay (a `wait` span), then the collective (an `allreduce` span). Returns the event of its end."""
        engine = self.engine
        start_s = max(ready_s, self.comm_free_s)
        at_s = start_s + self.delay_s
        if self.delay_s > 0:
            engine.rows.append((self.comm_worker, WAIT, batch, layer, start_s, at_s, math.nan))
        event = engine.collectives.arrive(key, at_s, engine.scenario.delays.allreduce_cost_s(nbytes))
        # the communicator is busy until the collective ends; recorded when it does
        event.callbacks.append(lambda ended: self._done(at_s, ended.value, batch, layer))
        return event

    def _done(self, at_s: float, end_s: float, batch: int, layer: int) -> None:
        self.comm_free_s = end_s
        self.engine.rows.append((self.comm_worker, ALLREDUCE, batch, layer, at_s, end_s, math.nan))


def gradient_allreduce(
    engine: Engine, rank: int, batch: int, plan_steps: Sequence[tuple[int, int]], times: Sequence[float]
) -> Generator:
    """DDP's all-reduce of batch `batch`'s gradients in buckets (module docstring); `times` are the
    start and end of each of the batch's steps so far (`plan_steps`)."""
    state = engine.rank_states[rank]
    backward_end = {layer: times[2 * i + 1] for i, (op, layer) in enumerate(plan_steps) if op == BACKWARD}
    local_step = batch // engine.rank_count
    for index, layers in enumerate(engine.buckets):
        lowest = min(layers)
        nbytes = sum(engine.layers[m].param_bytes for m in layers)
        yield state.communicate(("grad", local_step, index), backward_end[lowest], nbytes, batch, lowest)


def averaging_communicator(engine: Engine, state: RankState) -> Generator:
    """Averaging rounds of one rank (module docstring): every parameter, each round."""
    local = engine.batches // engine.rank_count
    nbytes = sum(layer.param_bytes for layer in engine.layers)
    for round_index, count in enumerate([*state.round_counts, local]):
        due = state.reached(count)
        if due is not None:
            yield due
        yield state.communicate(("avg", round_index), engine.env.now, nbytes)
        state.open_gate()


def gossip_communicator(engine: Engine, state: RankState) -> Generator:
    """The gossip rounds of one rank (`pdasgd.gossip`, as `executor.gossip` runs them): the rank's delay
    (a `wait` span), the modelled latency, the all-gather of every rank's marks and whether it has
    finished (both as of before the arrival's instant: the tie rule of docs/design.md); then with a
    partner and chosen layers the exchange, `delays.allreduce_cost_s(bytes)` long, at whose end the marks
    are cleared and each layer is mixed (a `mix` row: a version); rounds without any marks rest `IDLE_S`.
    The rounds end once every rank has finished."""
    env, delays, ranks = engine.env, engine.scenario.delays, engine.rank_count
    settings = engine.scenario.distributed
    board = engine.gossip_board
    round_index = 0
    while True:
        yield from _pace(engine, state)
        start = env.now
        if state.delay_s > 0:
            yield Timeout(env, state.delay_s)
            engine.rows.append((state.comm_worker, WAIT, -1, -1, start, env.now, math.nan))
        if delays.allreduce_s > 0:
            yield Timeout(env, delays.allreduce_cost_s(0))
        messages = board.setdefault(round_index, [None] * ranks + [0, None])  # ranks' parts, reads, matching
        messages[state.rank] = (state.finished_before(env.now), state.marks_before(env.now))
        yield engine.collectives.arrive(("gossip", round_index), env.now, 0.0)
        messages[ranks] += 1
        if messages[ranks] == ranks:
            del board[round_index]
        if all(finished for finished, _ in messages[:ranks]):
            return
        if messages[ranks + 1] is None:  # the round's matching, drawn once for every rank
            messages[ranks + 1] = partners(engine.scenario.run.seed, round_index, ranks)
        partner = messages[ranks + 1][state.rank]
        round_index += 1
        if not any(marked for _, marked in messages[:ranks]):
            yield Timeout(env, IDLE_S)
            continue
        if partner < 0:
            continue
        chosen = chosen_layers(messages[state.rank][1], messages[partner][1], settings.gossip_layers)
        if not chosen:
            continue
        at = env.now
        yield Timeout(env, delays.allreduce_cost_s(sum(engine.layers[m].param_bytes for m in chosen)))
        state.clear(chosen, env.now)
        for m in chosen:
            engine.rows.append((state.comm_worker, MIX, -1, m, at, env.now, env.now))
            engine.mix_meta.append((round_index - 1, partner))


def push_communicator(engine: Engine, state: RankState) -> Generator:
    """Push gossip of one rank (`pdasgd.gossip`, as `executor.gossip` runs it): while it has marks, the
    rank's delay (a `wait` span), its marks (output first, at most `gossip_layers`), the modelled cost of
    their bytes, then the receiver `push_target(...)` mixes them at once (a `mix` row of the receiver's
    communicator); without marks `IDLE_S` of rest; once the rank has finished and sent its last marks it
    stops."""
    env, delays, ranks = engine.env, engine.scenario.delays, engine.rank_count
    settings, seed = engine.scenario.distributed, engine.scenario.run.seed
    local = engine.batches // ranks
    pushes = 0
    while True:
        finished = state.finished >= local
        if not state.marked:
            if finished:
                return
            yield Timeout(env, IDLE_S)
            continue
        yield from _pace(engine, state)
        start = env.now
        if state.delay_s > 0:
            yield Timeout(env, state.delay_s)
            engine.rows.append((state.comm_worker, WAIT, -1, -1, start, env.now, math.nan))
        chosen = chosen_layers(state.marked, (), settings.gossip_layers)
        yield Timeout(env, delays.allreduce_cost_s(sum(engine.layers[m].param_bytes for m in chosen)))
        state.clear(chosen, env.now)
        receiver = engine.rank_states[push_target(seed, state.rank, pushes, ranks)].comm_worker
        pushes += 1
        for m in chosen:
            engine.rows.append((receiver, MIX, -1, m, env.now, env.now, env.now))
            engine.mix_meta.append((-1, -1))


def _pace(engine: Engine, state: RankState) -> Generator:
    """`distributed.gossip_every_s` (pdasgd.gossip): wait (a `wait` span) until that long after the
    rank's previous round (push) started."""
    every_s, env = engine.scenario.distributed.gossip_every_s, engine.env
    if every_s <= 0:
        return
    start = env.now
    rest_s = state.last_gossip_s + every_s - start
    if rest_s > 0:
        yield Timeout(env, rest_s)
        engine.rows.append((state.comm_worker, WAIT, -1, -1, start, env.now, math.nan))
    state.last_gossip_s = env.now
