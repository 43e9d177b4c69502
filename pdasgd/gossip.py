"""Layer-wise gossip across ranks (gossip-lu, gossip-bu): the rules both engines follow.

Each rank runs the single-process pipeline of async-lu or async-bu on its own copy of the parameters and
its share of the batches (batch i on rank i mod R). When an update of layer m ends, m is *marked*. The
rank's communicator runs rounds, one after another, the same rounds on every rank:

1. **Marks.** Every rank contributes its marked layers and whether it has finished its batches; an
   all-gather gives every rank everyone's (`MESSAGE_FIELDS`). When every rank has finished, the rounds end
   and one all-reduce averages the copies (as lapsgd's last round: not a version), so every rank ends with
   the same parameters.
2. **Partners.** `partners(seed, round, ranks)`: a pairwise matching drawn from a seed all ranks share
   (`run.seed`); with an odd number of ranks one sits the round out. Every rank computes the same matching,
   so nobody receives from an unknown sender (nccl cannot).
3. **Layers.** A pair exchanges `chosen_layers(...)`: the layers either of them marked, output layer first,
   at most `distributed.gossip_layers` of them (0: all). Both clear those marks as they take their snapshot;
   an update after that marks the layer again.
4. **Exchange and mix.** The rank waits its `[[delays.comm]]` delay (a `wait` span), then the pair swaps the
   layers' latest tensors (the modelled cost `delays.allreduce_cost_s(bytes)`, then the real transfer) and
   each side mixes `theta += w (theta_peer - theta_snapshot)` with w = `distributed.gossip_mix`: updates
   made during the exchange are kept, and with w = 1/2 the pair's sum is unchanged. Each mixed layer is a
   new version, published at once (a `mix` span per layer, its version the one before the mix), so a pending
   graph keeps the tensors it read and staleness counts mixes as well as local updates (docs/design.md).
5. A round in which nobody has a mark waits `IDLE_S` before the next. With `distributed.gossip_every_s`
   > 0, a round starts no sooner than that after the rank's previous round started (a `wait` span): on
   shared cores a communicator that copies, sends and mixes without pause takes their time from the
   workers.

That is `distributed.gossip_mode = "exchange"` (the default). Two other modes:

- **push** (gloo only: the receiver does not know its sender in advance, which nccl cannot do). No rounds in
  step: a rank with marked layers waits for `gossip_every_s` since its last push, then its
  `[[delays.comm]]` delay, takes its marks (output layer first, at
  most `gossip_layers`), pays the modelled cost of their bytes and sends their latest tensors to
  `push_target(seed, rank, k, ranks)` (its k-th push; any other rank, drawn from the shared seed). Its own
  copy is unchanged; the receiver mixes `theta += w (theta_sent - theta_snapshot)` the moment the message
  arrives, a new version of its layer (a `mix` span). Without marks it rests `IDLE_S`. One-way mixing does
  not keep the mean of the copies; the copies still close in on each other, and the final average makes
  them equal. A rank that has finished sends its last marks, then tells every peer it is done; once every
  rank is done, the average.
- **none**: no gossip during the run: each rank's pipeline runs alone and the copies are averaged once at
  the end (what the ranks compute without communication).

**Mix records** (exchange mode; what replay needs, `executor.replay`): a trace's `info["mix_records"]` has,
per mix, the columns of `MIX_RECORD`: the rank, the layer, the version just before the mix (as its `mix`
span says), the version of the rank's own snapshot that went into `theirs - mine`, the round and the
partner. The partner's snapshot is the partner's record of the same round and layer (`paired_mixes`). The
executor records what its snapshots held; the simulator mixes at the exchange's end, so its snapshot is the
version just before the mix.

Consensus distance (measured only): every `distributed.consensus_every_s` of rank 0's clock, per layer,
the mean over ranks of ||theta_r - mean|| / ||mean||.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

IDLE_S = 0.001  # a round in which no rank had a marked layer: the wait before the next
MESSAGE_FIELDS = 2  # per rank in the all-gather: [finished, sample consensus now, mark of layer 0..M-1]


def partners(seed: int, round_index: int, ranks: int) -> list[int]:
    """Rank r's partner in round `round_index` (-1: none this round), the same on every rank."""
    order = list(range(ranks))
    random.Random(f"pdasgd-gossip/{seed}/{round_index}").shuffle(order)
    partner = [-1] * ranks
    for a, b in zip(order[0::2], order[1::2], strict=False):
        partner[a], partner[b] = b, a
    return partner


def push_target(seed: int, rank: int, push_index: int, ranks: int) -> int:
    """The rank that `rank`'s `push_index`-th push goes to: any other rank, drawn from the shared seed."""
    other = random.Random(f"pdasgd-push/{seed}/{rank}/{push_index}").randrange(ranks - 1)
    return other + (other >= rank)


def chosen_layers(mine: Iterable[int], theirs: Iterable[int], limit: int) -> list[int]:
    """The layers a pair exchanges: marked by either, output layer first, at most `limit` (0: all)."""
    layers = sorted(set(mine) | set(theirs), reverse=True)
    return layers[:limit] if limit else layers


MIX_RECORD = ("rank", "layer", "version", "snapshot", "round", "partner")


def mix_records(rows: Iterable[Iterable[int]]) -> dict[str, list[int]]:
    """`info["mix_records"]` (module docstring) from rows of `MIX_RECORD` values."""
    columns: dict[str, list[int]] = {name: [] for name in MIX_RECORD}
    for row in rows:
        for name, value in zip(MIX_RECORD, row, strict=True):
            columns[name].append(int(value))
    return columns


def paired_mixes(records: dict[str, list[int]]) -> dict[tuple[int, int, int], tuple[int, int, int]]:
    """(rank, layer, version before the mix) -> (own snapshot, partner, partner's snapshot), each mix joined
    to its partner's record of the same round and layer; ValueError if one has no twin."""
    rows = list(zip(*(records[name] for name in MIX_RECORD), strict=True))
    twin = {(r, layer, round_, partner): snapshot for r, layer, _, snapshot, round_, partner in rows}
    paired = {}
    for rank, layer, version, snapshot, round_, partner in rows:
        other = twin.get((partner, layer, round_, rank))
        if other is None:
            raise ValueError(f"mix of rank {rank}, layer {layer}, round {round_}: rank {partner} has no twin")
        paired[(rank, layer, version)] = (snapshot, partner, other)
    return paired


def message(finished: bool, sample: bool, marked: Iterable[int], layers: int) -> list[float]:
    """One rank's part of a round's all-gather (`MESSAGE_FIELDS` then a 0/1 per layer)."""
    row = [float(finished), float(sample)] + [0.0] * layers
    for layer in marked:
        row[MESSAGE_FIELDS + layer] = 1.0
    return row


def read_message(row: Iterable[float]) -> tuple[bool, bool, set[int]]:
    """(finished, sample, marked layers) from one rank's part of the all-gather."""
    values = list(row)
    marked = {i for i, value in enumerate(values[MESSAGE_FIELDS:]) if value > 0.5}
    return values[0] > 0.5, values[1] > 0.5, marked
