"""The fast path for layer-wise gossip (gossip-lu, gossip-bu) at scale: no SimPy process per rank.

In the SimPy model a gossiping rank's workers never wait for its communicator: a mix costs the network, not
the device, and marks only record which layers were updated. So with fixed op times (no jitter, no
stragglers, a device per worker) every rank runs the same local pipeline, the fixed-time recursion of
`simulator.fast` over its L = batches / R batches (local batch j is global batch r + R j, its window Q
local batches back). What differs between ranks is only their communication, and the exchange rounds of
`pdasgd.gossip` are in step across ranks: every rank gathers the round's marks, so round k ends, for all,
at T_k = the latest arrival. `exchange_rounds` runs them for all ranks at once with numpy, following
`simulator.ranks.gossip_communicator` step by step:

    start_r   = end of rank r's previous round (T + IDLE_S, T, or T + its exchange's cost)
    paced_r   = max(start_r, last_r + gossip_every_s)                    (a `wait` span when it waits)
    arrival_r = paced_r + comm delay_r (a `wait` span) + allreduce_cost_s(0)
    marks_r   = layers whose first update since their last clear ended before arrival_r's instant
    T         = max over ranks of arrival_r; the rounds end when every rank had finished before its arrival

then `partners(seed, k, R)`, `chosen_layers` and an exchange of `allreduce_cost_s(bytes)` from T, at whose
end the pair's chosen marks clear and each chosen layer gets a `mix` row. gossip_mode "none" has no rounds.
Push mode, or anything that makes ranks' pipelines differ, stays on SimPy (`problem` says why).

A rank's rows are then the local schedule's (workers and batch ids moved to the rank) plus its `wait` and
`mix` rows, and versions, staleness and memory are resolved per rank by the same code as for SimPy's
records (`simulator.records`, `simulator.memory`): a rank's parameter copy is its own group. `summary`
streams the ranks one at a time, so 128 ranks x 2,000 batches x 16 layers need no trace. Both engines
follow the tie rule of docs/design.md for marks (an update at the instant of a rank's arrival waits for the
next round; one at the instant of an exchange's end is cleared with it), so SimPy's event order never
decides, and the two agree span for span (tests/test_gossip.py).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from pdasgd.gossip import IDLE_S, partners
from pdasgd.metrics import Staleness, Summary, build_summary, busy_slot_s
from pdasgd.offsets import DECOUPLED, fixed_shape
from pdasgd.scenario import Scenario
from simulator import fast
from simulator.fastsummary import _steady_time_per_batch_s
from simulator.memory import peak_bytes, timeline_intervals
from simulator.progress import ProgressBar
from simulator.records import MIX, WAIT, Timeline, resolve_versions
from theory import ties

MODES = ("exchange", "none")


def problem(scenario: Scenario) -> str | None:
    """Why this gossip scenario's schedule cannot be computed here exactly; None when it can."""
    assert scenario.model is not None
    workers, mode = scenario.workers, scenario.distributed.gossip_mode
    if mode not in MODES:
        return f"gossip_mode {mode}: only {' and '.join(MODES)} have rounds in step"
    if fixed_shape(fast.local_definition(scenario), workers, len(scenario.model.layers)) != DECOUPLED:
        return f"method {scenario.method}: a rank's pipeline has no fixed-time recursion"
    return fast.timing_problem(scenario)


@dataclasses.dataclass(frozen=True)
class CommRows:
    """Every rank's communicator rows (`wait` and `mix`), as columns ordered by rank."""

    rank: np.ndarray
    op: np.ndarray
    layer: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    round: np.ndarray  # a mix's round (-1 for a wait)
    partner: np.ndarray  # a mix's partner (-1 for a wait)
    rounds: int

    def of(self, rank: int) -> slice:
        lo, hi = np.searchsorted(self.rank, [rank, rank + 1])
        return slice(int(lo), int(hi))


@dataclasses.dataclass(frozen=True)
class GossipSchedule:
    """The local schedule every rank runs and the ranks' communication."""

    ranks: int
    local: fast.FixedSchedule
    comm: CommRows


def gossip_schedule(scenario: Scenario, progress: ProgressBar | None = None) -> GossipSchedule:
    """The local pipeline's recursion, then the rounds of every rank (module docstring); `progress` is
    ticked by the batches finished as the rounds' simulated time passes them."""
    ranks = scenario.definition.rank_count(scenario.workers)
    local = fast.fixed_schedule(scenario, batches=scenario.run.batches // ranks)
    if scenario.distributed.gossip_mode == "none" or ranks < 2:
        return GossipSchedule(ranks, local, _Rows().columns(0))
    return GossipSchedule(ranks, local, exchange_rounds(scenario, local, ranks, progress))


class _Rows:
    """Columns of communicator rows, appended a round at a time."""

    def __init__(self) -> None:
        self.parts: list[tuple] = []

    def add(
        self, rank: np.ndarray, op: int, layer, start_s: np.ndarray, end_s: np.ndarray, round_=-1, partner=-1
    ) -> None:
        n = len(rank)
        if n:
            op_, layer, round_, partner = (
                np.broadcast_to(np.asarray(v, dtype=np.int64), (n,)) for v in (op, layer, round_, partner)
            )
            self.parts.append((rank, op_, layer, start_s, end_s, round_, partner))

    def columns(self, rounds: int) -> CommRows:
        if not self.parts:
            empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0)
            return CommRows(empty_i, empty_i, empty_i, empty_f, empty_f, empty_i, empty_i, rounds)
        columns = [np.concatenate(column) for column in zip(*self.parts, strict=True)]
        order = np.argsort(columns[0], kind="stable")
        return CommRows(*[column[order] for column in columns], rounds)


def exchange_rounds(
    scenario: Scenario, local: fast.FixedSchedule, ranks: int, progress: ProgressBar | None = None
) -> CommRows:
    """Every rank's exchange rounds, all ranks at once (module docstring)."""
    rounds = _Rounds(scenario, local, ranks)
    done_s, ticked = np.sort(local.end_s), 0
    while True:
        arrival = rounds.arrive()
        gathered = float(arrival.max())
        if progress is not None:
            done = ranks * int(np.searchsorted(done_s, gathered, "right"))
            progress.tick(done - ticked)
            ticked = done
        if rounds.finished_s < float(arrival.min()) - rounds.tie_s:
            return rounds.rows.columns(rounds.index)
        rounds.exchange(arrival, gathered)


class _Rounds:
    """The state of every rank's communicator between rounds, as arrays over ranks (and layers)."""

    def __init__(self, scenario: Scenario, local: fast.FixedSchedule, ranks: int) -> None:
        assert scenario.model is not None
        layers = scenario.model.layers
        self.delays, self.seed, self.ranks = scenario.delays, scenario.run.seed, ranks
        self.every_s, self.limit = scenario.distributed.gossip_every_s, scenario.distributed.gossip_layers
        update_end = local.backward_start[:, None] + local.offsets.update_end[None, :]  # (L, M), as the rows
        self.update_end = np.ascontiguousarray(update_end.T)  # per layer, nondecreasing
        self.param_bytes = np.array([layer.param_bytes for layer in layers], dtype=np.int64)
        bandwidth = self.delays.allreduce_bytes_per_s
        self.per_byte_s = 1.0 / bandwidth if bandwidth else 0.0
        self.delay_s = np.array([self.delays.comm_delay_s(r) for r in range(ranks)])
        self.tie_s = ties.tie_s(scenario.model.sequential_s)
        self.finished_s = float(local.end_s.max())  # every rank finishes its last batch then
        self.next_mark = np.repeat(self.update_end[:, :1].T, ranks, axis=0)  # (R, M): since the last clear
        self.start = np.zeros(ranks)  # when each rank's next round starts
        self.last = np.full(ranks, -math.inf)  # when each rank's previous round started (the pace)
        self.everyone = np.arange(ranks)
        self.rows = _Rows()
        self.index = 0  # rounds so far

    def arrive(self) -> np.ndarray:
        """Each rank's pace and delay (`wait` rows), then the latency: its arrival at the all-gather."""
        start, everyone = self.start, self.everyone
        if self.every_s > 0:
            rest = self.last + self.every_s - start
            waits = rest > 0
            paced = np.where(waits, start + rest, start)
            self.rows.add(everyone[waits], WAIT, -1, start[waits], paced[waits])
            start = self.last = paced
        delayed = self.delay_s > 0
        arrival = np.where(delayed, start + self.delay_s, start)
        self.rows.add(everyone[delayed], WAIT, -1, start[delayed], arrival[delayed])
        if self.delays.allreduce_s > 0:
            arrival = arrival + self.delays.allreduce_cost_s(0)
        return arrival

    def exchange(self, arrival: np.ndarray, gathered: float) -> None:
        """The round's marks (updates before each rank's arrival instant), partners, exchanges and mixes;
        sets when each rank starts its next round."""
        marks = self.next_mark < (arrival - self.tie_s)[:, None]
        partner = np.array(partners(self.seed, self.index, self.ranks))
        self.index += 1
        if not marks.any():
            self.start = np.full(self.ranks, gathered + IDLE_S)
            return
        chosen = _chosen(marks, partner, self.limit)
        end = gathered + (self.delays.allreduce_s + (chosen @ self.param_bytes) * self.per_byte_s)
        self.start = np.where(chosen.any(axis=1), end, gathered)
        rank_of, layer_of = np.nonzero(chosen)
        at = np.full(len(rank_of), gathered)
        self.rows.add(rank_of, MIX, layer_of, at, end[rank_of], self.index - 1, partner[rank_of])
        for m in np.unique(layer_of).tolist():
            cleared = rank_of[layer_of == m]
            # the first update after the clear; one at the clear's very instant went with it
            later = np.searchsorted(self.update_end[m], end[cleared] + self.tie_s, "right")
            self.next_mark[cleared, m] = np.append(self.update_end[m], math.inf)[later]


def _chosen(marks: np.ndarray, partner: np.ndarray, limit: int) -> np.ndarray:
    """Per rank, the layers its pair exchanges (`pdasgd.gossip.chosen_layers`): either side's marks, output
    layer first, at most `limit` (0: all); nothing for a rank without a partner."""
    paired = partner >= 0
    either = marks | marks[np.where(paired, partner, np.arange(len(partner)))]
    either &= paired[:, None]
    if limit:
        from_output = np.cumsum(either[:, ::-1], axis=1)[:, ::-1]
        either &= from_output <= limit
    return either


def rank_timeline(
    scenario: Scenario, schedule: GossipSchedule, rank: int, local: Timeline | None = None
) -> Timeline:
    """Rank `rank`'s rows: the local schedule's (`local`, its timeline, if already built), moved to the
    rank's workers and batch ids, then its communicator's."""
    local = dataclasses.replace(local) if local is not None else fast.schedule_timeline(schedule.local)
    local_workers = len(scenario.definition.local_names(scenario.workers))
    local.worker = local.worker + rank * local_workers
    local.batch = rank + schedule.ranks * local.batch
    comm = schedule.comm
    part = comm.of(rank)
    n = part.stop - part.start
    comm_worker = len(scenario.worker_names()) + rank
    is_mix = comm.op[part] == MIX
    rows = Timeline(
        np.full(n, comm_worker, dtype=np.int64),
        comm.op[part],
        np.full(n, -1, dtype=np.int64),
        comm.layer[part],
        comm.start_s[part],
        comm.end_s[part],
        np.where(is_mix, comm.end_s[part], math.nan),
        np.full(n, -1, dtype=np.int64),
    )
    return Timeline.concatenate([local, rows])


def mix_meta(schedule: GossipSchedule) -> list[tuple[int, int]]:
    """(round, partner) of every mix row, in the order `timeline` has them."""
    comm = schedule.comm
    mixes = comm.op == MIX
    return list(zip(comm.round[mixes].tolist(), comm.partner[mixes].tolist(), strict=True))


def timeline(scenario: Scenario, schedule: GossipSchedule) -> Timeline:
    """Every rank's rows, rank by rank (the trace's records; small runs only)."""
    local = fast.schedule_timeline(schedule.local)
    return Timeline.concatenate([rank_timeline(scenario, schedule, r, local) for r in range(schedule.ranks)])


def summary(
    scenario: Scenario,
    schedule: GossipSchedule,
    meta: dict,
    sizes: tuple[np.ndarray, np.ndarray],
    tie_s: float,
    groups: np.ndarray,
    devices: list[str],
    progress: ProgressBar | None = None,
) -> Summary:
    """What `pdasgd.metrics.summarize` says of the ranks' trace, one rank's rows at a time; `groups` and
    `devices` are the parameter copy and device of every worker with spans (`simulator.engine`);
    `progress` is ticked once per batch summarised."""
    ranks, local = schedule.ranks, fast.schedule_timeline(schedule.local)
    layers, local_batches = len(schedule.local.offsets.forward_start), schedule.local.batches
    comm = schedule.comm
    first_s = min(float(local.start_s.min()), float(comm.start_s.min(initial=math.inf)))
    makespan = max(float(local.end_s.max()), float(comm.end_s.max(initial=-math.inf))) - first_s
    done_s = np.tile(local.completion_s(local_batches), ranks)
    stale = _RankStaleness(local, local_batches, layers, meta["warmup"], ranks)
    intervals = []
    for rank in range(ranks):
        rows = rank_timeline(scenario, schedule, rank, local)
        resolve_versions(rows, groups, layers, tie_s)
        stale.add(rank, rows)
        if sizes[0].any() or sizes[1].any():
            intervals.append(timeline_intervals(rows, groups, *sizes, meta["batches"]))
        if progress is not None:
            progress.tick(local_batches)
    memory = None
    if intervals:
        start, end, size = (np.concatenate(column) for column in zip(*intervals, strict=True))
        memory = peak_bytes([(start, end, size, np.inf)], tie_s)
    return build_summary(
        {**meta, "accuracy": None},
        batches=meta["batches"],
        makespan=makespan,
        per_batch_s=_steady_time_per_batch_s(done_s, meta["warmup"], first_s),
        sequential_batch_s=meta["sequential_batch_s"],
        staleness=stale.versions(),
        time_staleness=stale.time_means(),
        utilization_=_utilization(scenario, local, comm, meta["device_slots"], devices, makespan),
        memory_peak_bytes=memory,
    )


class _RankStaleness:
    """Each rank's version staleness (its mixes differ) and time staleness (the same on every rank), over
    the steady batches (global id >= warmup), layer by layer."""

    def __init__(self, local: Timeline, batches: int, layers: int, warmup: int, ranks: int) -> None:
        self.n, self.layers, self.warmup, self.ranks = batches * layers, layers, warmup, ranks
        read_s = local.start_s[: self.n].reshape(batches, layers)
        update_end_s = local.end_s[2 * self.n : 3 * self.n].reshape(batches, layers)
        self.time_s = update_end_s - read_s
        self.local_ids = np.arange(batches)
        self.sums = np.zeros(layers, dtype=np.int64)
        self.counts = np.zeros(layers, dtype=np.int64)
        self.maxima = np.zeros(layers, dtype=np.int64)
        self.times: list[list[np.ndarray]] = [[] for _ in range(layers)]

    def add(self, rank: int, rows: Timeline) -> None:
        """Rank `rank`'s resolved rows (the local schedule's forward, backward, update blocks first)."""
        read = rows.version[: self.n].reshape(-1, self.layers)
        update = rows.version[2 * self.n : 3 * self.n].reshape(-1, self.layers)
        steady = rank + self.ranks * self.local_ids >= self.warmup
        versions = (update - read)[steady]
        if not len(versions):
            return
        self.sums += versions.sum(axis=0)
        self.counts += len(versions)
        self.maxima = np.maximum(self.maxima, versions.max(axis=0))
        for m in range(self.layers):
            self.times[m].append(self.time_s[steady, m])

    def versions(self) -> Staleness:
        return Staleness.from_counts(self.sums.tolist(), self.counts.tolist(), self.maxima.tolist())

    def time_means(self) -> list[float]:
        means = []
        for parts in self.times:
            values = np.concatenate(parts).tolist() if parts else []
            means.append(math.fsum(values) / len(values) if values else 0.0)
        return means


def _utilization(
    scenario: Scenario, local: Timeline, comm: CommRows, slots: dict, devices: list[str], makespan: float
) -> dict[str, float]:
    """Busy fraction per device, as `pdasgd.metrics.utilization` sums it: a worker's device is busy the
    same on every rank (each worker has a device of its own), a rank's network while it exchanges."""
    busy = dict.fromkeys(slots, 0.0)
    local_workers = len(scenario.definition.local_names(scenario.workers))
    ranks = len(scenario.worker_names()) // local_workers
    for worker in range(local_workers):
        mine = (local.worker == worker) & (local.op != WAIT)
        spans = np.column_stack([local.start_s[mine], local.end_s[mine]])
        for rank in range(ranks):
            device = devices[rank * local_workers + worker]
            busy[device] = busy_slot_s(spans, slots.get(device, 1)) if len(spans) else 0.0
    for rank in range(ranks if len(devices) > ranks * local_workers else 0):
        part, device = comm.of(rank), devices[ranks * local_workers + rank]
        working = comm.op[part] != WAIT
        spans = np.column_stack([comm.start_s[part][working], comm.end_s[part][working]])
        busy[device] = busy_slot_s(spans, slots.get(device, 1)) if len(spans) else 0.0
    return {
        device: busy[device] / (slots.get(device, 1) * makespan) if makespan > 0 else 0.0 for device in busy
    }
