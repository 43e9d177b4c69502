"""A cache of recent profiles: the same network, device and threads profiled minutes ago is reused.

Profiling to a stated precision costs seconds to tens of seconds, and two profiles of one network taken
minutes apart differ by their noise. `pdasgd compare` therefore reuses a profile when one exists that was
taken within `TTL_S` (15 minutes; `PDASGD_PROFILE_TTL_S`) of the same thing: the same `[train]` sizes and
data shape, the same per-batch steps (which decide where updates happen and whether they run in place),
the same device and threads per worker, on the same machine (host name, cores this process may use) with
the same torch; the report says so, with the profile's age. The learning rate and the seed decide no op
time and are left out of the key.

Entries are JSON files in `PDASGD_PROFILE_CACHE` (default `~/.cache/pdasgd/profiles`), one per key,
written atomically; an unreadable or foreign entry is ignored and replaced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from executor.profile import LayerSamples, Precision
from pdasgd.intervals import Interval
from pdasgd.io import atomic_write_text
from pdasgd.scenario import Scenario

TTL_S = 900.0
FORMAT = "pdasgd-profile-2"  # 2: the calibration's role speeds in `extra`


def folder() -> Path:
    return Path(os.environ.get("PDASGD_PROFILE_CACHE") or Path.home() / ".cache" / "pdasgd" / "profiles")


def ttl_s() -> float:
    try:
        return float(os.environ.get("PDASGD_PROFILE_TTL_S", TTL_S))
    except ValueError:
        return TTL_S


def key(scenario: Scenario, kind: str) -> dict[str, Any]:
    """What must be equal for a profile to be reused: `kind` says which measurement (solo or pipelined)."""
    train = dataclasses.asdict(scenario.train)
    for unrelated in ("lr",):
        train.pop(unrelated)
    layers = len(scenario.model.layers) if scenario.model is not None else None
    steps = scenario.definition.schedule_text(layers, scenario.workers) if layers else scenario.method
    return _plain(
        {
            "kind": kind,
            "train": train,
            "timed_costs": dataclasses.asdict(scenario.model) if scenario.train.network == "timed" else None,
            "steps": steps,
            "alone": len(scenario.worker_names()) == 1,  # whether updates may run in place
            "workers": dataclasses.asdict(scenario.workers) if kind == "layout" else None,
            "host": platform.node(),
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch": torch.__version__,
        }
    )


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """The key as JSON reads it back (tuples become lists), so a stored key compares equal."""
    return json.loads(json.dumps(data))


def _path(entry_key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(entry_key, sort_keys=True).encode()).hexdigest()[:24]
    return folder() / f"{digest}.json"


def load(entry_key: dict[str, Any]) -> tuple[list[LayerSamples], Precision, float, dict] | None:
    """(layers, precision, age in seconds, extra figures) of a fresh entry for `entry_key`, or None."""
    path = _path(entry_key)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != FORMAT or document.get("key") != entry_key:
            return None
        age_s = time.time() - float(document["created"])
        if not 0 <= age_s <= ttl_s():
            return None
        layers = [_layer(row) for row in document["layers"]]
        return layers, _precision(document["precision"]), age_s, dict(document.get("extra") or {})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(
    entry_key: dict[str, Any], layers: list[LayerSamples], precision: Precision, extra: dict | None = None
) -> None:
    document = {
        "format": FORMAT,
        "created": time.time(),
        "key": entry_key,
        "layers": [dataclasses.asdict(layer) for layer in layers],
        "precision": precision.to_dict(),
        "extra": extra or {},
    }
    try:
        atomic_write_text(_path(entry_key), json.dumps(document))
    except OSError:
        pass  # a cache that cannot be written is no cache; the profile itself is fine


def _layer(row: dict[str, Any]) -> LayerSamples:
    return LayerSamples(
        row["name"], row["samples"], int(row["activation_bytes"]), int(row["param_bytes"]), row["overhead"]
    )


def _precision(row: dict[str, Any]) -> Precision:
    def interval(part: dict[str, float]) -> Interval:
        return Interval(part["value"], part["low"], part["high"])

    return Precision(
        int(row["batches"]),
        float(row["seconds"]),
        interval(row["forward_s"]),
        interval(row["backward_s"]),
        float(row["target"]),
    )
