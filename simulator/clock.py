"""Op durations: what one operation of one worker takes, with noise and stragglers.

An op of cost c (seconds on a device of speed 1) takes c / speed on the worker's device. With
`delays.jitter_cv` > 0 every op's duration is multiplied by lognormal noise of mean 1 and that coefficient of
variation, drawn from a generator seeded by (run.seed, worker index): each worker has its own stream, so the
noise an op gets does not depend on how other workers interleave. Hand-off, update-visibility and all-reduce
delays are not jittered.

A straggler `(worker, every, extra_s, kind)` makes that worker take `extra_s` longer on every `every`-th
batch it handles (the 1st batch it handles is number 1). A `sleep` straggler waits before that batch's work
on the worker, holding no device slot (the executor sleeps). A `busy` one adds the time to the first op of
that batch's work on the worker (the forward of layer 0 for forward, sequential and replicated workers; the
backward of the output layer for backward workers), so it holds the worker's device slot as slow compute
would (the executor computes for that long inside the op).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pdasgd.scenario import Straggler


class Clock:
    """Durations of one worker's ops, one batch at a time."""

    def __init__(
        self, jitter_cv: float, seed: int, worker_index: int, stragglers: Sequence[Straggler]
    ) -> None:
        self.sigma = math.sqrt(math.log1p(jitter_cv**2)) if jitter_cv > 0 else 0.0
        self.mu = -0.5 * self.sigma**2
        self.rng = np.random.default_rng([seed, worker_index]) if self.sigma > 0 else None
        self.stragglers = tuple(stragglers)
        self.handled = 0

    @property
    def fixed(self) -> bool:
        """True when every batch gets exactly the base durations."""
        return self.rng is None and not self.stragglers

    def batch(self, base_s: list[float]) -> tuple[float, list[float]]:
        """(sleep before the batch, op durations) for the next batch this worker handles; `base_s` are
        cost / speed in op order."""
        self.handled += 1
        if self.fixed:
            return 0.0, base_s
        times = base_s
        if self.rng is not None:
            noise = self.rng.lognormal(self.mu, self.sigma, len(base_s)).tolist()
            times = [t * x for t, x in zip(base_s, noise, strict=True)]
        due = [s for s in self.stragglers if self.handled % s.every == 0]
        busy_s = sum(s.extra_s for s in due if s.kind == "busy")
        if busy_s and times:
            times = list(times)
            times[0] += busy_s
        return sum(s.extra_s for s in due if s.kind == "sleep"), times
