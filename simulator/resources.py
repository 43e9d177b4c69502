"""Resources the simulated workers share: devices, the hand-off queue, the in-flight window, barriers.

They are thinner than SimPy's general `Resource` and `Store`: a free device slot is taken without an event,
and waiting goes through one SimPy event. The schedule is the one `simpy.Resource` would give (FIFO) with a
third of the events.
"""

from __future__ import annotations

from collections import deque
from heapq import heappop, heappush

import simpy
from simpy.events import Event


class Device:
    """A compute device: `slots` ops at once, FIFO waiting; an op of cost c takes c / speed seconds."""

    __slots__ = ("env", "name", "slots", "speed", "free", "waiting")

    def __init__(self, env: simpy.Environment, name: str, slots: int = 1, speed: float = 1.0) -> None:
        self.env = env
        self.name = name
        self.slots = slots
        self.speed = speed
        self.free = slots
        self.waiting: deque[Event] = deque()

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
    goes to backward worker i mod k, as THEORY.md's recursion assumes). Matching happens at the end of each
    instant (`LateEvent`), so the order SimPy processes simultaneous events in does not matter.
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


class InFlight:
    """The max_in_flight window: the forward of batch i waits for the end of batch i - limit."""

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
