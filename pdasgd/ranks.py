"""Facts of methods across ranks that both engines share: which batches a rank trains, DDP's buckets, the
averaging rounds and the names of a rank's communicator.

- Batch i belongs to rank i mod R (`rank_batches`); every rank trains run.batches / R of them.
- DDP all-reduces gradients in buckets (`ddp_buckets`): parameters from the output layer down, a bucket
  closing once it holds `bucket_bytes` or more, as DistributedDataParallel assigns them with an explicit
  `bucket_cap_mb` (its 1 MiB first bucket applies only to the default cap). Here the unit is a layer, not a
  parameter tensor: DDP can split a layer between two buckets where a layer's last tensor crosses the cap.
- lapsgd and lppsgd average in rounds (`averaging_rounds`): round k (1, 2, ...) once the rank has finished
  k x average_every of its own batches, then a last round after its last batch, so every rank ends with
  the same parameters. Every rank runs the same rounds, so the k-th all-reduce of one rank pairs with the
  k-th of every other, as torch.distributed pairs collectives. An averaging round is not a version: a
  version counts the gradient updates applied to a copy (docs/design.md).
- A rank's communication is done by its communicator, `r<rank>/comm`, on the rank's network device
  `r<rank>/network`; its spans are `allreduce` (and `wait` for a [[delays.comm]] delay).
- The executor's ranks each trace their own workers; `merge_traces` makes one trace of them, names and
  devices prefixed with the rank (`r1/worker:0`, `r1/cpu`), times moved onto rank 0's clock by each rank's
  measured offset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pdasgd.methods import rank_name
from pdasgd.trace import Trace

COMM = "comm"
NETWORK = "network"


def rank_batches(rank: int, ranks: int, batches: int) -> range:
    """The global ids of the batches rank `rank` trains: rank, rank + R, rank + 2R, ..."""
    return range(rank, batches, ranks)


def ddp_buckets(param_bytes: Sequence[int], bucket_bytes: int) -> list[tuple[int, ...]]:
    """Layers per gradient bucket, in the order DDP all-reduces them (output layer first)."""
    buckets: list[tuple[int, ...]] = []
    current: list[int] = []
    size = 0
    for layer in reversed(range(len(param_bytes))):
        current.append(layer)
        size += param_bytes[layer]
        if size >= bucket_bytes:
            buckets.append(tuple(current))
            current, size = [], 0
    if current:
        buckets.append(tuple(current))
    return buckets


def averaging_rounds(local_batches: int, average_every: int) -> int:
    """Averaging rounds triggered by batch counts (the last round, after the last batch, not counted)."""
    return local_batches // average_every


def comm_name(rank: int) -> str:
    return rank_name(rank, COMM)


def network_name(rank: int) -> str:
    return rank_name(rank, NETWORK)


def merge_traces(traces: Sequence[Trace], origins_s: Sequence[float], info: dict | None = None) -> Trace:
    """One trace of every rank's: `traces[r]` is rank r's, its times in seconds from its own start, which
    lies at `origins_s[r]` on rank 0's clock (module docstring)."""
    first = traces[0]
    spans = [
        dataclasses.replace(
            span,
            worker=rank_name(rank, span.worker),
            device=rank_name(rank, span.device),
            start_s=span.start_s + origins_s[rank] - origins_s[0],
            end_s=span.end_s + origins_s[rank] - origins_s[0],
        )
        for rank, trace in enumerate(traces)
        for span in trace.spans
    ]
    spans.sort(key=lambda span: (span.start_s, span.end_s))
    shift = min((span.start_s for span in spans), default=0.0)
    if shift < 0:  # a rank started before rank 0: times stay >= 0
        spans = [dataclasses.replace(s, start_s=s.start_s - shift, end_s=s.end_s - shift) for s in spans]
    peaks = [trace.memory_peak_bytes for trace in traces]
    return Trace(
        spans=spans,
        source=first.source,
        method=first.method,
        layers=first.layers,
        batches=sum(trace.batches for trace in traces),
        warmup=first.warmup,
        device_slots={
            rank_name(rank, device): slots
            for rank, trace in enumerate(traces)
            for device, slots in trace.device_slots.items()
        },
        sequential_batch_s=first.sequential_batch_s,
        memory_peak_bytes=max(peaks) if all(peak is not None for peak in peaks) else None,
        accuracy=first.accuracy,
        info={**first.info, "ranks": len(traces), "memory_peak_bytes_per_rank": peaks, **(info or {})},
    )
