"""Resources the simulated workers share: devices, the hand-off queue, the in-flight window, barriers.

They are thinner than SimPy's general `Resource` and `Store`: a free device slot is taken without an event,
and waiting goes through one SimPy event. The schedule is the one `simpy.Resource` would give (FIFO) with a
third of the events.
"""

from __future__ import annotations

from collections import deque
from heapq import heappop, heappush

import simpy
from simpy.events import Event, Timeout


class Device:
    """A compute device: `slots` ops at once, FIFO waiting; an op of cost c takes c / speed seconds alone.

    With `time_slice` the ops do not queue: all of them run, sharing the slots as an operating system shares
    cores between threads, each at rate min(1, slots / n) while n run. With `contention` > 0 (and more than
    one slot) ops that run at the same time slow each other down (they share memory bandwidth, caches or the
    GIL): while n ops run, each progresses at rate 1 / (1 + contention x (min(n, slots) - 1) / (slots - 1))
    (times the time-slice share), so two ops on a 2-slot device with contention 0.3 each run 1.3x slower
    while they overlap. `run(work_s)` is the op; the device re-plans every running op's end whenever one
    starts or ends (processor sharing, exact in event time).
    """

    __slots__ = (
        "env",
        "name",
        "slots",
        "speed",
        "contention",
        "time_slice",
        "free",
        "waiting",
        "_running",
        "_since",
        "_plan",
    )

    def __init__(
        self,
        env: simpy.Environment,
        name: str,
        slots: int = 1,
        speed: float = 1.0,
        contention: float = 0.0,
        time_slice: bool = False,
    ) -> None:
        self.env = env
        self.name = name
        self.slots = slots
        self.speed = speed
        self.contention = contention if slots > 1 else 0.0
        self.time_slice = time_slice
        self.free = slots
        self.waiting: deque[Event] = deque()
        self._running: dict[Event, float] = {}  # op -> work left, seconds at rate 1
        self._since = 0.0  # when the work left was last brought up to date
        self._plan = 0  # id of the current end-of-op timer (older timers are stale)

    def request(self) -> Event | None:
        """Take a slot: None when one is free now, else an event that fires when a slot is handed over.
        (The engine's hot loop inlines this: `if device.free: device.free -= 1 else: yield device.wait()`.)"""
        if self.free:
            self.free -= 1
            return None
        return self.wait()

    def wait(self) -> Event:
        """Queue for a slot (none is free): the event fires when one is handed over."""
        event = Event(self.env)
        self.waiting.append(event)
        return event

    def release(self) -> None:
        """Give the slot to the longest waiter, or free it."""
        if self.waiting:
            self.waiting.popleft().succeed()
        else:
            self.free += 1

    @property
    def shared(self) -> bool:
        """Whether ops go through `run` (their rates depend on what else runs) rather than a plain timeout."""
        return self.time_slice or self.contention > 0

    def run(self, work_s: float) -> Event:
        """An op of `work_s` seconds alone (on a slot the caller holds, unless time-sliced): fires when it
        ends."""
        self._catch_up()
        done = Event(self.env)
        self._running[done] = work_s
        self._replan()
        return done

    def _rate(self) -> float:
        running = len(self._running)
        share = min(1.0, self.slots / running)
        if not self.contention:
            return share
        return share / (1.0 + self.contention * (min(running, self.slots) - 1) / (self.slots - 1))

    def _catch_up(self) -> None:
        progress_s = (self.env.now - self._since) * self._rate() if self._running else 0.0
        for op in self._running:
            self._running[op] -= progress_s
        self._since = self.env.now

    def _replan(self) -> None:
        self._plan += 1
        if self._running:
            plan = self._plan
            timer = Timeout(self.env, max(0.0, min(self._running.values())) / self._rate())
            timer.callbacks.append(lambda _: self._end(plan))

    def _end(self, plan: int) -> None:
        if plan != self._plan:
            return
        self._catch_up()
        least_s = min(self._running.values())
        for op in [op for op, left_s in self._running.items() if left_s <= least_s + 1e-12]:
            del self._running[op]
            op.succeed()
        self._replan()


LATE = 2  # after simpy's URGENT (0) and NORMAL (1): processed once everything else at this instant is


class LateEvent(Event):
    """An event triggered now and processed after every other event of this instant (SimPy orders events of
    one instant by priority; its own Timeout sets the same fields before scheduling itself)."""

    def __init__(self, env: simpy.Environment) -> None:
        super().__init__(env)
        self._ok = True
        self._value = None
        env.schedule(self, LATE)


class BatchQueue:
    """Batches waiting for a backward worker, and idle backward workers waiting for a batch.

    Batches go FIFO by arrival, simultaneous arrivals in batch order; each goes to the earliest free worker,
    workers freed at the same instant in the order of the batches they finished (with fixed times: batch i
    goes to backward worker i mod k, as the recursion of theory.speedup assumes). Matching happens at the end
    of each instant (`LateEvent`), so the order SimPy processes simultaneous events in does not matter.
    """

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.items: list[tuple[float, int]] = []
        self.idle: list[tuple[float, int, Event]] = []
        self.pending = False

    def put(self, batch: int) -> None:
        heappush(self.items, (self.env.now, batch))
        self._schedule()

    def get(self, finished_batch: int) -> Event:
        """An event whose value is the next batch for a worker that just finished `finished_batch`."""
        event = Event(self.env)
        heappush(self.idle, (self.env.now, finished_batch, event))
        self._schedule()
        return event

    def _schedule(self) -> None:
        if not self.pending and self.items and self.idle:
            self.pending = True
            LateEvent(self.env).callbacks.append(self._match)

    def _match(self, _: Event) -> None:
        self.pending = False
        while self.items and self.idle:
            batch = heappop(self.items)[1]
            heappop(self.idle)[2].succeed(batch)


class Window:
    """The max_in_flight window: the first role's work on batch i waits for the end of batch i - limit."""

    def __init__(self, env: simpy.Environment, limit: int, batches: int) -> None:
        self.env = env
        self.limit = limit
        self.finished = bytearray(batches)
        self.waiters: dict[int, Event] = {}

    def wait(self, batch: int) -> Event | None:
        """None when batch may start now, else an event that fires when it may."""
        ahead = batch - self.limit
        if ahead < 0 or self.finished[ahead]:
            return None
        event = Event(self.env)
        self.waiters[ahead] = event
        return event

    def finish(self, batch: int) -> None:
        self.finished[batch] = 1
        event = self.waiters.pop(batch, None)
        if event is not None:
            event.succeed()


class Barrier:
    """Everyone of `parties` arrives, then all leave together (synchronous steps, averaging rounds)."""

    def __init__(self, env: simpy.Environment, parties: int) -> None:
        self.env = env
        self.parties = parties
        self.event = Event(env)
        self.arrived = 0

    def arrive(self) -> Event:
        """The event all arrivals wait on; the last arrival triggers it and resets the barrier."""
        event = self.event
        self.arrived += 1
        self._maybe_open()
        return event

    def leave(self) -> None:
        """One party stops taking part (no batch left for it)."""
        self.parties -= 1
        self._maybe_open()

    def _maybe_open(self) -> None:
        if self.arrived and self.arrived >= self.parties:
            event, self.event, self.arrived = self.event, Event(self.env), 0
            event.succeed()
