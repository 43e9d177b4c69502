"""Checkpoints: parameters, optimizer state, buffers and progress, written atomically every N batches.

A checkpoint is one file, `checkpoint.pt` in the checkpoint folder, written with `torch.save` to memory and
then through `pdasgd.io.atomic_write_bytes` (a temporary file and a rename): a run killed while saving leaves
the previous checkpoint intact. It holds, per layer, the version number, the parameter tensors and the
momentum buffers; every block buffer (BatchNorm running statistics); and `batches_done`, the number of
batches from the start of the run all of which have finished.

A run given a folder that holds a checkpoint resumes from it: versions, momentum and buffers are restored
and the batch stream skips the batches already done. A sequential run saves after a whole batch, from its
only worker, so its resumed run ends with exactly the parameters of an uninterrupted one. In async runs the
worker that finishes the N-th batch saves while the others go on: each layer is copied under its lock, but
batches in flight at that moment may already have updated some layers, and a resumed run trains on them
again (resuming async training is approximate, as it is for any asynchronous trainer).

The checkpoint records a fingerprint of the scenario (everything but `run.batches` and `run.warmup`, so a
run can be extended); resuming with another scenario is an error.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from executor.params import VersionedLayer
from pdasgd.io import atomic_write_bytes
from pdasgd.scenario import Scenario

FILE_NAME = "checkpoint.pt"
FORMAT = "pdasgd-checkpoint"


def fingerprint(scenario: Scenario) -> str:
    """A hash of the scenario without `run.batches` and `run.warmup`."""
    data = scenario.to_dict()
    data["run"] = {key: value for key, value in data["run"].items() if key not in ("batches", "warmup")}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def save(
    directory: str | Path,
    scenario: Scenario,
    batches_done: int,
    layers: list[VersionedLayer],
    buffers: list[torch.Tensor],
) -> Path:
    """Write the checkpoint atomically; return its path."""
    state = {
        "format": FORMAT,
        "fingerprint": fingerprint(scenario),
        "method": scenario.method,
        "batches_done": batches_done,
        "layers": [layer.state() for layer in layers],
        "buffers": [buffer.detach().to("cpu", copy=True) for buffer in buffers],
    }
    for layer in state["layers"]:
        layer["tensors"] = [t.cpu() for t in layer["tensors"]]
        layer["momentum"] = [t.cpu() for t in layer["momentum"]] if layer["momentum"] else None
    data = io.BytesIO()
    torch.save(state, data)
    return atomic_write_bytes(Path(directory) / FILE_NAME, data.getvalue())


def load(directory: str | Path, scenario: Scenario) -> dict[str, Any] | None:
    """The checkpoint in `directory`, or None when there is none. ValueError, in one line, when it cannot be
    read, is not a pdasgd checkpoint or is for another scenario."""
    path = Path(directory) / FILE_NAME
    if not path.exists():
        return None
    if not path.is_file():
        raise ValueError(f"checkpoint {path}: is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a foreign or damaged file: say which, in one line (torch's are long)
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise ValueError(f"checkpoint {path}: cannot read ({type(error).__name__}: {first})") from None
    if not _well_formed(state):
        raise ValueError(f"checkpoint {path}: not a pdasgd checkpoint")
    if state["fingerprint"] != fingerprint(scenario):
        raise ValueError(
            f"checkpoint {path}: was written for another scenario; use another --checkpoint folder"
        )
    return state


def check_unfinished(directory: str | Path, state: dict[str, Any], scenario: Scenario) -> None:
    """ValueError when the checkpoint's run has already trained every batch the scenario asks for."""
    if state["batches_done"] >= scenario.run.batches:
        raise ValueError(
            f"checkpoint {Path(directory) / FILE_NAME}: its run has finished all {state['batches_done']} "
            "batches; raise run.batches to train further, or use another --checkpoint folder"
        )


def _well_formed(state: Any) -> bool:
    """The keys and types `save` writes."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return False
    layers, buffers = state.get("layers"), state.get("buffers")
    if not isinstance(state.get("fingerprint"), str) or not isinstance(state.get("batches_done"), int):
        return False
    if not isinstance(layers, list) or not isinstance(buffers, list) or state["batches_done"] < 0:
        return False
    return all(_well_formed_layer(layer) for layer in layers) and all(torch.is_tensor(b) for b in buffers)


def _well_formed_layer(layer: Any) -> bool:
    if not isinstance(layer, dict) or not isinstance(layer.get("version"), int):
        return False
    tensors, momentum = layer.get("tensors"), layer.get("momentum")
    if not isinstance(tensors, list) or not all(torch.is_tensor(t) for t in tensors):
        return False
    return momentum is None or (isinstance(momentum, list) and all(torch.is_tensor(t) for t in momentum))
