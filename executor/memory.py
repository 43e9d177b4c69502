"""Memory accounting: the peak of live activations plus live parameter versions (docs/design.md).

On CUDA the runtime reports `torch.cuda.max_memory_allocated` (everything the caching allocator handed out,
data and workspace included). On the CPU, torch 2.x exposes no allocator statistics (`torch.cpu` has no
memory counters; the process's peak RSS never falls and counts the interpreter, the dataset and freed pages),
so the runtime counts what the definition names, as it happens:

- activations: when batch i's forward of block m starts, the bytes block m keeps alive for its backward
  (`executor.networks.activation_bytes`, measured once per run on a real batch with `saved_tensors_hooks`)
  are added; they are subtracted when batch i's backward of block m ends;
- parameter versions: a version is alive while it is current or some pending forward read it and its
  backward of that layer has not run (`VersionedLayer.read` / `release`); each costs the block's
  `parameter_bytes`. Momentum buffers (one per layer, whatever the staleness) are not counted.

The meter keeps the running total and its peak; `peak_bytes` is what the trace reports.
"""

from __future__ import annotations

import threading


class MemoryMeter:
    """A running byte count and its peak, safe to update from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.live_bytes = 0
        self.peak_bytes = 0

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.live_bytes += nbytes
            if self.live_bytes > self.peak_bytes:
                self.peak_bytes = self.live_bytes

    def sub(self, nbytes: int) -> None:
        with self._lock:
            self.live_bytes -= nbytes
