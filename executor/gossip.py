"""gossip-lu and gossip-bu across ranks: the communicator thread that gossips a rank's updated layers.

The rules are `pdasgd.gossip`'s; this is their torch.distributed side. The `Gossiper` is the rank's
communicator (`r<rank>/comm` on `r<rank>/network`) and the only thread that uses the rank's `World.comm`
group. Workers call `mark(m)` after each update of layer m (`Context.on_update`). Each round:

1. the rank's `[[delays.comm]]` delay (a `wait` span), then the modelled latency (`delays.allreduce_s`) and
   an all-gather of every rank's message: finished or not, sample the consensus now (rank 0 decides, on its
   clock), the marked layers;
2. with a partner (`pdasgd.gossip.partners`) and layers to exchange (`chosen_layers`): the marks of those
   layers cleared, their latest tensors copied (each under its layer's lock), the modelled cost of the
   bytes slept, the tensors swapped with `batch_isend_irecv`, and each layer mixed as a new version
   (`VersionedLayer.mix`), one `mix` span per layer from the exchange's start to the mix;
3. without marks anywhere, `IDLE_S` of rest.

That is the `exchange` mode. With `distributed.gossip_mode = "push"` (gloo) the communicator pushes instead
(`pdasgd.gossip`): its marked layers' latest tensors, after the delay and the modelled cost, to
`push_target(...)`, a header (the layers) then the tensors (tags 0 and 1) on `World.push`, which it sends
on; a second thread, the rank's inbox, receives on it from any sender and mixes each message on arrival.
A finished rank sends a last header saying so to every peer; the inbox ends once every peer has. With
"none" the communicator only waits for the rank's batches to end. Consensus distance is sampled in
exchange rounds only (push and none have no rounds in step).

Once every rank has finished its batches, the rounds end and one all-reduce averages the copies
(`executor.averaging.average_copies`). A collective that fails or times out stops the run and is reported
naming the communicator, as `executor.communicator` does.

`info()` says what the run's trace records: rounds, exchanges, mixes, and rank 0's consensus samples
(`consensus_distance`: times on the rank's clock and, per sample, per layer the mean over ranks of
||theta_r - mean|| / ||mean||).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

from executor.averaging import average_copies, numbered_snapshot_flat, snapshot_flat, split_like
from executor.links import Stopped, check, sleep
from executor.params import VersionedLayer
from executor.timing import CpuClock, SpanLog, waited
from executor.world import World
from pdasgd.gossip import IDLE_S, chosen_layers, message, mix_records, partners, push_target, read_message
from pdasgd.ranks import COMM, NETWORK
from pdasgd.scenario import Scenario


class Gossiper:
    """The gossip communicator of one rank (module docstring)."""

    def __init__(
        self,
        scenario: Scenario,
        layers: list[VersionedLayer],
        layer_bytes: list[int],
        world: World,
        clock: CpuClock,
        stop: threading.Event,
        on_error: Callable[[str, BaseException], None],
    ) -> None:
        settings = scenario.distributed
        self.layers = layers
        self.layer_bytes = layer_bytes
        self.world = world
        self.group = world.comm
        self.clock = clock
        self.stop = stop
        self.on_error = on_error
        self.delays = scenario.delays
        self.delay_s = scenario.delays.comm_delay_s(world.rank)
        self.mode = settings.gossip_mode
        self.limit = settings.gossip_layers
        self.pace_s = settings.gossip_every_s
        self.last_start_s = -float("inf")
        self.weight = settings.gossip_mix
        self.every_s = settings.consensus_every_s
        self.seed = scenario.run.seed
        self.device = world.device if world.backend == "nccl" else torch.device("cpu")
        self.log = SpanLog(COMM, NETWORK, clock)
        self.marked: set[int] = set()
        self._lock = threading.Lock()
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self.rounds = self.exchanges = self.mixes = 0
        self.records: list[tuple[int, ...]] = []  # exchange mode: MIX_RECORD rows (pdasgd.gossip)
        self.next_sample_s = self.every_s
        self.samples_s: list[float] = []
        self.samples: list[list[float]] = []
        self.thread = threading.Thread(target=self._run, name=f"pdasgd r{world.rank} comm", daemon=True)

    def mark(self, layer: int) -> None:
        """Layer `layer` was updated: send it in a coming round (a worker calls this)."""
        with self._lock:
            self.marked.add(layer)

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        """The rank's batches are done: end the rounds with the others, average; raise a round's error."""
        self.finished.set()
        self.thread.join()
        if self.error is not None and not isinstance(self.error, Stopped):
            raise self.error

    def close(self, timeout_s: float | None = None) -> None:
        self.finished.set()
        self.thread.join(timeout_s)

    def info(self) -> dict[str, Any]:
        data: dict[str, Any] = {"gossip_rounds": self.rounds, "gossip_exchanges": self.exchanges}
        data["gossip_mixes"] = self.mixes
        if self.records:
            data["mix_records"] = mix_records(self.records)
        if self.world.rank == 0 and self.samples:
            data["consensus_distance"] = {"times_s": self.samples_s, "per_layer": self.samples}
        return data

    def _run(self) -> None:
        try:
            if self.mode == "exchange":
                while self._round():
                    pass
            elif self.mode == "push":
                self._push_until_done()
            else:
                while not self.finished.wait(IDLE_S):
                    check(self.stop)
            average_copies(self.layers, self.group, self.world.size)
        except Stopped as stopped:  # the run is stopping anyway: nothing to report
            self.error = stopped
        except BaseException as error:  # reported by the runtime, naming the communicator
            self.error = error
            self.on_error(COMM, error)

    def _round(self) -> bool:
        """One round (module docstring); False once every rank has finished."""
        check(self.stop)
        stamp, ranks = self.clock.stamp, self.world.size
        waited()
        self._pace()
        start = stamp()
        if self.delay_s > 0:
            sleep(self.delay_s, self.stop)
            self.log.add("wait", None, None, start, stamp())
        if self.delays.allreduce_s > 0:
            sleep(self.delays.allreduce_cost_s(0), self.stop)
        with self._lock:
            mine = set(self.marked)
        sample = self.world.rank == 0 and self.every_s > 0 and self.clock.now_s() >= self.next_sample_s
        row = torch.tensor(
            message(self.finished.is_set(), sample, mine, len(self.layers)), device=self.device
        )
        states = [read_message(part.tolist()) for part in self.group.all_gather(row, ranks)]
        if all(finished for finished, _, _ in states):
            return False
        round_index, self.rounds = self.rounds, self.rounds + 1
        if states[0][1]:
            self._sample()
        if not any(marked for _, _, marked in states):
            if not self.stop.wait(IDLE_S):
                return True
            raise Stopped
        partner = partners(self.seed, round_index, ranks)[self.world.rank]
        if partner >= 0:
            chosen = chosen_layers(states[self.world.rank][2], states[partner][2], self.limit)
            if chosen:
                self._exchange(chosen, partner, round_index)
        return True

    def _pace(self) -> None:
        """`gossip_every_s` (pdasgd.gossip): wait until that long after the previous round's start."""
        if self.pace_s <= 0:
            return
        start = self.clock.stamp()
        rest_s = self.last_start_s + self.pace_s - self.clock.now_s()
        if rest_s > 0:
            sleep(rest_s, self.stop)
            self.log.add("wait", None, None, start, self.clock.stamp())
        self.last_start_s = self.clock.now_s()

    def _exchange(self, chosen: list[int], partner: int, round_index: int) -> None:
        stamp = self.clock.stamp
        at = stamp()
        numbers, snapshot, flat = self._take(chosen)
        theirs = torch.empty_like(flat)
        self.group.exchange(flat, theirs, partner)
        befores = self._mix(chosen, theirs.sub_(flat).mul_(self.weight), snapshot, at)
        rank = self.world.rank
        for m, before, number in zip(chosen, befores, numbers, strict=True):
            self.records.append((rank, m, before, number, round_index, partner))
        self.exchanges += 1

    def _take(self, chosen: list[int]) -> tuple[list[int], list, torch.Tensor]:
        """What sending `chosen` costs: the modelled cost of their bytes slept, their marks cleared, their
        latest tensors copied (their version numbers, snapshot and flat)."""
        cost_s = self.delays.allreduce_cost_s(sum(self.layer_bytes[m] for m in chosen))
        if cost_s > 0:
            sleep(cost_s, self.stop)
        with self._lock:
            self.marked.difference_update(chosen)
        return numbered_snapshot_flat([self.layers[m] for m in chosen], self.device)

    def _push_until_done(self) -> None:
        """Push mode (module docstring): push marked layers until the rank has finished and sent its last
        marks; then tell every peer, and wait for the inbox to hear the same from every peer."""
        inbox = threading.Thread(target=self._receive, name=f"pdasgd r{self.world.rank} inbox", daemon=True)
        inbox.start()
        while True:
            check(self.stop)
            finished = self.finished.is_set()  # before the marks: no worker marks a layer after it is set
            with self._lock:
                marked = bool(self.marked)
            if marked:
                self._push()
            elif finished:
                break
            elif self.stop.wait(IDLE_S):
                raise Stopped
        done = torch.tensor(message(True, False, (), len(self.layers)), device=self.device)
        for peer in range(self.world.size):
            if peer != self.world.rank:
                self.world.push.send(done, peer, tag=0)
        while inbox.is_alive():
            check(self.stop)
            inbox.join(IDLE_S * 50)

    def _push(self) -> None:
        """One push: the delay, the marked layers (output first), their modelled cost, header, tensors."""
        stamp = self.clock.stamp
        self._pace()
        start = stamp()
        if self.delay_s > 0:
            sleep(self.delay_s, self.stop)
            self.log.add("wait", None, None, start, stamp())
        with self._lock:
            chosen = chosen_layers(self.marked, (), self.limit)
        _, _, flat = self._take(chosen)
        header = torch.tensor(message(False, False, chosen, len(self.layers)), device=self.device)
        target = push_target(self.seed, self.world.rank, self.exchanges, self.world.size)
        self.world.push.send(header, target, tag=0)
        self.world.push.send(flat, target, tag=1)
        self.rounds += 1
        self.exchanges += 1

    def _receive(self) -> None:
        """The inbox (module docstring): mix every message on arrival, until every peer is done."""
        inbox, stamp = self.world.push, self.clock.stamp
        header = torch.empty(len(message(False, False, (), len(self.layers))), device=self.device)
        peers_done = 0
        try:
            while peers_done < self.world.size - 1:
                source = inbox.recv_any(header, tag=0)
                done, _, layers = read_message(header.tolist())
                if done:
                    peers_done += 1
                    continue
                at = stamp()
                chosen = sorted(layers, reverse=True)
                snapshot, flat = snapshot_flat([self.layers[m] for m in chosen], self.device)
                theirs = torch.empty_like(flat)
                inbox.recv(theirs, source, tag=1)
                self._mix(chosen, theirs.sub_(flat).mul_(self.weight), snapshot, at)
        except BaseException as error:  # reported by the runtime, naming the communicator
            if not self.stop.is_set():
                self.on_error(COMM, error)

    def _mix(self, chosen: list[int], delta: torch.Tensor, snapshot: list, at: Any) -> list[int]:
        """Mix `delta` (flat, `chosen`'s layers in order) into the layers, each a new version and a span;
        returns the versions just before the mixes."""
        befores = []
        for m, deltas in zip(chosen, split_like(delta, snapshot), strict=True):
            local = [d.to(self.layers[m].latest.tensors[0].device) for d in deltas]
            _, before, end = self.layers[m].mix(local, self.clock.stamp)
            self.log.add("mix", None, m, at, end, before)
            befores.append(before)
        self.mixes += len(chosen)
        return befores

    def _sample(self) -> None:
        """Consensus distance (module docstring): two all-reduces, every rank; rank 0 keeps the sample."""
        snapshot, flat = snapshot_flat(self.layers, self.device)
        mean = flat.clone()
        self.group.all_reduce(mean)
        mean.div_(self.world.size)
        parts = split_like(flat - mean, snapshot)
        means = split_like(mean, snapshot)
        distances = torch.stack([torch.sqrt(sum((d.double() ** 2).sum() for d in part)) for part in parts])
        distances = distances.to(self.device)
        self.group.all_reduce(distances)
        if self.world.rank == 0:
            norms = [float(torch.sqrt(sum((m.double() ** 2).sum() for m in part))) for part in means]
            mean_distance = distances.div_(self.world.size).tolist()
            self.samples.append([d / n if n > 0 else 0.0 for d, n in zip(mean_distance, norms, strict=True)])
            self.samples_s.append(self.clock.now_s())
            self.next_sample_s = self.clock.now_s() + self.every_s
