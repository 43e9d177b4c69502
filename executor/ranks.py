"""One rank of a method across ranks (ddp, lapsgd, lppsgd, gossip-lu, gossip-bu): its communicator, and what
it hands back.

Each rank is a process (`executor.launch` starts them, or an outside torchrun). It joins the world
(`executor.world`), measures its clock's offset to rank 0, and trains its share of the batches with the
same runtime as a single process (`executor.runtime.run(world=...)`): its workers, plus `RankParts`:

- the communicator thread (`executor.communicator`), the only one that talks to other ranks;
- lapsgd/lppsgd: the `Averager`, whose rounds the workers' finished batches trigger
  (`executor.averaging`);
- ddp: the `DdpModel` its one worker trains (`executor.ddp`);
- gossip-lu, gossip-bu: the `Gossiper` (`executor.gossip`) is the rank's communicator.

After the run the ranks time an all-reduce of 8 bytes and of the model's parameters (`probe_allreduce`:
the real network's latency and rate, for compare's prediction). Then rank 0 gathers every rank's trace
over the main group and merges them into one
(`pdasgd.ranks.merge_traces`), with each rank's measured clock offset and its bound in `info`. A rank that
fails or is stopped writes its partial trace into the run's folder (`save_partial`), so the launcher can
merge what there is.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import torch
from torch.distributed.elastic.multiprocessing.errors import get_error_handler, record

from executor.averaging import Averager
from executor.communicator import Communicator
from executor.gossip import Gossiper
from executor.world import World, align_clocks, join, probe_allreduce
from pdasgd.methods import ALLREDUCE
from pdasgd.ranks import COMM, merge_traces
from pdasgd.scenario import Scenario, parse_scenario
from pdasgd.trace import Trace

RESULT_FILE = "result.pt"


class RankParts:
    """What a rank's runtime has besides its workers (module docstring)."""

    def __init__(self, scenario: Scenario, ctx: Any, world: World, report) -> None:
        from executor.ddp import DdpModel

        method = scenario.definition
        self.ctx = ctx
        self.averager = None
        self.gossiper = None
        if method.gossip:
            nbytes = model_bytes(scenario, ctx.layers)
            self.gossiper = Gossiper(scenario, ctx.layers, nbytes, world, ctx.clock, ctx.stop, report)
            self.communicator = self.gossiper
            ctx.logs[COMM] = self.gossiper.log
            ctx.on_update = self.gossiper.mark
            return
        self.communicator = Communicator(world.comm, world.rank, scenario.delays, ctx.clock, ctx.stop, report)
        ctx.logs[COMM] = self.communicator.log
        if method.averaging and world.size > 1:
            self.averager = Averager(scenario, ctx.layers, self.communicator, world.size, ctx.stop)
            previous = ctx.on_finish

            def finished(batch: int, completed: int) -> None:
                self.averager.on_finish(batch, completed)
                if previous is not None:
                    previous(batch, completed)

            ctx.on_finish = finished
            if self.averager.blocking:
                ctx.gate = self.averager.gate
        if uses_ddp(scenario):
            nbytes = model_bytes(scenario, ctx.layers)
            ctx.ddp = DdpModel(ctx, world, self.communicator, scenario.distributed.bucket_mb, nbytes)

    def start(self) -> None:
        self.communicator.start()

    def finish(self) -> None:
        """After the workers: the last averaging round, or the end of gossip (its error, if any, raises)."""
        if self.averager is not None:
            self.averager.finish()
        if self.gossiper is not None:
            self.gossiper.finish()
            self.ctx.info.update(self.gossiper.info())

    def close(self, timeout_s: float) -> None:
        self.communicator.close(timeout_s)


def uses_ddp(scenario: Scenario) -> bool:
    """A method across ranks whose steps all-reduce gradients runs as DistributedDataParallel."""
    method = scenario.definition
    steps = method.batch_steps(2, scenario.workers)
    return method.ranks and any(step.op == ALLREDUCE for step in steps)


def model_bytes(scenario: Scenario, layers: list) -> list[int]:
    """Per layer, the bytes the modelled network moves: [model]'s param_bytes if the scenario gives layer
    costs (as the simulator counts them), else the real tensors'."""
    if scenario.model is not None:
        return [layer.param_bytes for layer in scenario.model.layers]
    return [layer.nbytes for layer in layers]


# --- a rank's whole run ---------------------------------------------------------------------------


def rank_run(
    scenario: Scenario,
    options: dict,
    folder: str | os.PathLike | None = None,
    stop_event: threading.Event | None = None,
):
    """Join the world, train this rank's share, gather: rank 0 returns the merged RunResult, the others
    their own (its trace's info says which rank). A failure or stop raises as `executor.runtime.run` does,
    after writing this rank's partial trace into `folder` (if given); so does a set `stop_event`."""
    from executor.runtime import RunFailed, RunInterrupted, run

    world = join(scenario)
    align_clocks(world)
    rank_options = {**options, "progress": options.get("progress", False) and world.rank == 0}
    if world.rank:
        rank_options["curve_points"] = 0
    try:
        result = run(scenario, world=world, stop_event=stop_event, **rank_options)
        if stop_event is not None and stop_event.is_set() and not result.completed:
            raise RunInterrupted(result)
    except (RunFailed, RunInterrupted) as stopped:
        # no destroy_process_group: the communicator may be inside a collective that never ends
        if folder is not None and stopped.result is not None:
            save_partial(folder, world, stopped.result.trace)
        raise
    result.trace.info["allreduce_probe"] = probe_allreduce(world, sum(result.trace.info["param_bytes"]))
    payload = (result.trace, origin_s(world, result.trace))
    gathered = world.main.gather_object(payload, world.rank, world.size)
    world.close()
    if world.rank != 0:
        result.trace.info["rank"] = world.rank
        return result
    return _merged(result, gathered)


def origin_s(world: World, trace: Trace) -> float:
    """Where this rank's trace time 0 lies on rank 0's clock."""
    return trace.info["clock_start_s"] + world.offset_s


def _merged(result, gathered: list):
    traces = [trace for trace, _ in gathered]
    origins = [origin for _, origin in gathered]
    offsets = [origin - trace.info["clock_start_s"] for trace, origin in gathered]
    bounds = [trace.info.get("clock_offset_bound_s", 0.0) for trace in traces]
    info = {"rank": 0, "clock_offsets_s": offsets, "clock_offset_bounds_s": bounds}
    records = [trace.info["mix_records"] for trace in traces if "mix_records" in trace.info]
    if records:  # every rank's (pdasgd.gossip): replay joins each mix to its partner's
        info["mix_records"] = {name: [v for part in records for v in part[name]] for name in records[0]}
    result.trace = merge_traces(traces, origins, info)
    from pdasgd import metrics

    result.summary = metrics.summarize(result.trace)
    return result


def save_partial(folder: str | os.PathLike, world: World, trace: Trace) -> None:
    trace.info["clock_origin_s"] = origin_s(world, trace)
    trace.save(Path(folder) / f"partial-r{world.rank}.json")


def merge_partials(folder: str | os.PathLike) -> Trace | None:
    """The partial traces the ranks left in `folder`, merged (None if none did)."""
    traces = {}
    for path in Path(folder).glob("partial-r*.json"):
        traces[int(path.stem.removeprefix("partial-r"))] = Trace.load(path)
    if not traces:
        return None
    ranks = sorted(traces)
    ordered = [traces[rank] for rank in ranks]
    origins = [trace.info["clock_origin_s"] for trace in ordered]
    merged = merge_traces(ordered, origins, {"rank": 0, "ranks_kept": ranks})
    return merged


SCENARIO_FILE, OPTIONS_FILE = "scenario.json", "options.json"
PID_FILE, FAILED_FILE = "pid-r", "failed-r"  # each rank's process id; a rank that failed (for the reaper)


def write_inputs(folder: str | os.PathLike, scenario: Scenario, options: dict) -> None:
    """What `python -m executor.ranks FOLDER` reads: the resolved scenario and the run's options."""
    (Path(folder) / SCENARIO_FILE).write_text(json.dumps(scenario.to_dict()))
    (Path(folder) / OPTIONS_FILE).write_text(json.dumps(options))


@record  # an error we did not expect: its traceback on the terminal and in the launcher's error file
def rank_entry(folder: str) -> None:
    """What torch's launcher runs in each rank process (`python -m executor.ranks FOLDER`)."""
    from executor.runtime import RunFailed
    from pdasgd.cli import signals

    torch.set_num_threads(1)
    rank = os.environ.get("RANK", "0")
    (Path(folder) / f"{PID_FILE}{rank}").write_text(str(os.getpid()))
    scenario = parse_scenario(json.loads((Path(folder) / SCENARIO_FILE).read_text()))
    options = json.loads((Path(folder) / OPTIONS_FILE).read_text())
    stop = threading.Event()
    for signum in signals.STOP_SIGNALS:  # Ctrl-C, the launcher's SIGTERM: stop, keep the partial trace
        signal.signal(signum, lambda *_: stop.set())
    try:
        result = rank_run(scenario, options, folder, stop)
    except (RunFailed, ValueError) as error:  # the launcher says it in one line, without a traceback
        get_error_handler().record_exception(error)
        (Path(folder) / f"{FAILED_FILE}{rank}").touch()
        _leave(1)
    except KeyboardInterrupt:  # Ctrl-C or the launcher's SIGTERM: the partial trace is in the folder
        _leave(130)
    if result.trace.info.get("rank") == 0:
        torch.save(_portable(result), Path(folder) / RESULT_FILE)
    _leave(0)


def _leave(status: int) -> None:
    """End the rank's process now, its result or partial trace already written. A stopped rank's
    communicator may be inside a collective that never completes; and even after a clean
    `destroy_process_group` the interpreter's teardown sometimes destroys a native thread that is still
    joinable (gloo's), which aborts the process ("terminate called without an active exception", SIGABRT:
    seen once in about 30 two-rank runs, a finished run reported as a crash)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _portable(result) -> dict:
    """A RunResult as plain data and CPU tensors, for the launcher to read back."""
    return {
        "trace": result.trace.to_json(),
        "accuracy_curve": result.accuracy_curve,
        "parameters": [[t.detach().cpu() for t in tensors] for tensors in result.parameters],
        "buffers": [b.detach().cpu() for b in result.buffers],
        "completed": result.completed,
    }


if __name__ == "__main__":
    rank_entry(sys.argv[1])
