"""A progress bar for long simulations: tqdm on stderr, cheap to tick from the SimPy hot loop.

`ProgressBar.tick()` is called once per finished batch and touches tqdm only every `stride` batches. The bar
is shown when asked for, or by default when stderr is a terminal and the run is long (many layer steps).
"""

from __future__ import annotations

import sys
from types import TracebackType

LONG_RUN_STEPS = 2_000_000  # batches x layers above which a run shows a bar by default


class ProgressBar:
    """Counts finished batches (or other units) towards `total`."""

    def __init__(self, total: int, description: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=description, unit="batch", file=sys.stderr, leave=False)
        self.stride = max(1, total // 200)
        self.pending = 0

    def tick(self, count: int = 1) -> None:
        self.pending += count
        if self.pending >= self.stride:
            self.bar.update(self.pending)
            self.pending = 0

    def close(self) -> None:
        if self.pending:
            self.bar.update(self.pending)
        self.bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()


def wanted(progress: bool | None, batches: int, layers: int) -> bool:
    """Show a bar? An explicit choice wins; by default only for long runs on a terminal."""
    if progress is not None:
        return progress
    return batches * layers >= LONG_RUN_STEPS and sys.stderr.isatty()
