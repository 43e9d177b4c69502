"""Starting the ranks of a method across ranks on this machine, with torch's own launcher.

`run_ranks` is what `executor.run` does for ddp, lapsgd and lppsgd. In a process that torch's launcher
started as a rank (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` set: an outside `torchrun`, also
under SLURM) it joins that world and runs this rank (`executor.ranks.rank_run`). Otherwise it starts
`workers.replicas` ranks itself through `torch.distributed.launcher.api.elastic_launch`, the API behind
`torchrun --standalone --nproc-per-node N`: a c10d rendezvous on 127.0.0.1 at a free port, no restarts,
every rank a fresh process running `python -m executor.ranks FOLDER` (`executor.ranks.rank_entry`), which
reads the scenario from FOLDER and leaves its result or partial trace there.

Before anything starts it checks what would fail later: the backend for the device (nccl needs CUDA), one
GPU per rank on CUDA. Failures end the whole run: a rank that raises, is killed or freezes (its peers'
collectives time out after `distributed.timeout_s`) makes the launcher stop the others (a frozen one is
killed REAP_S later, see `Reaper`), and `run_ranks`
raises `RunFailed` with one line naming the rank and the cause (`describe_failure`), its `result` the
partial traces the ranks left, merged. Ctrl-C or SIGTERM stops every rank, each writes its partial trace,
and `run_ranks` raises `RunInterrupted` with them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import torch

from pdasgd.scenario import Scenario

SHUTDOWN_S = 10  # after Ctrl-C or SIGTERM: how long the ranks have to write their partial traces
STOPPED_STATUS = 130  # a rank that a stop signal ended, its partial trace written (executor.ranks)
REAP_S = 5  # after a rank failed: how long the others have (then a frozen one is killed, see Reaper)


def check_ranks(scenario: Scenario) -> None:
    """ValueError (one line) for distributed settings that cannot work on this machine."""
    ranks = scenario.workers.replicas
    wanted = scenario.train.device
    cuda = wanted.startswith("cuda") or (wanted == "auto" and torch.cuda.is_available())
    backend = scenario.distributed.backend
    if backend == "nccl" and not cuda:
        raise ValueError("distributed.backend: nccl needs CUDA devices; use gloo (or auto) on the CPU")
    if cuda and not torch.cuda.is_available():
        raise ValueError(f"train.device: {wanted} requested but torch sees no CUDA device")
    if cuda and ranks > torch.cuda.device_count():
        raise ValueError(
            f"workers.replicas: {ranks} ranks need a GPU each; this machine has {torch.cuda.device_count()}"
        )


def run_ranks(
    scenario: Scenario,
    progress: bool = False,
    curve_points: int = 10,
    baseline: bool = False,
    stop_event: threading.Event | None = None,
):
    """Run the scenario's ranks (module docstring) and return the merged RunResult."""
    from executor.ranks import rank_run
    from executor.world import in_world

    check_ranks(scenario)
    options = {"curve_points": curve_points, "progress": progress}
    sequential_s = _baseline(scenario) if baseline else None
    if in_world():
        result = rank_run(scenario, options, stop_event=stop_event)
    else:
        result = _launch(scenario, options)
    if sequential_s is not None:
        _with_baseline(result, sequential_s)
    return result


def _baseline(scenario: Scenario) -> float:
    import dataclasses

    from executor.runtime import sequential_batch_s
    from pdasgd.scenario import Delays, Workers

    single = dataclasses.replace(scenario, method="sequential", workers=Workers(), delays=Delays())
    return sequential_batch_s(single)


def _with_baseline(result: Any, sequential_s: float) -> None:
    from pdasgd import metrics

    result.trace = dataclasses.replace(result.trace, sequential_batch_s=sequential_s)
    result.summary = metrics.summarize(result.trace)


def _launch(scenario: Scenario, options: dict):
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from executor.ranks import RESULT_FILE, merge_partials, write_inputs
    from executor.runtime import RunFailed, RunInterrupted

    folder = Path(tempfile.mkdtemp(prefix="pdasgd-ranks-"))
    write_inputs(folder, scenario, options)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=scenario.workers.replicas,
        run_id=f"pdasgd-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        local_addr="127.0.0.1",
        max_restarts=0,
        monitor_interval=0.1,
        shutdown_timeout=SHUTDOWN_S,
    )
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    quiet = _quiet_launcher_logs()  # its per-rank warnings: describe_failure says it in one line
    reaper = Reaper(folder)
    reaper.start()
    try:
        elastic_launch(config, sys.executable)("-m", "executor.ranks", str(folder))
        return _read_result(folder / RESULT_FILE)
    except ChildFailedError as failure:
        raise _failed(RunFailed(describe_failure(failure, scenario)), merge_partials(folder)) from None
    except SignalException as stop:
        _note_signal(stop.sigval)
        raise _failed(RunInterrupted(None), merge_partials(folder)) from None
    except KeyboardInterrupt:
        raise _failed(RunInterrupted(None), merge_partials(folder)) from None
    finally:
        reaper.stop()
        for log, level in quiet.items():
            log.setLevel(level)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        shutil.rmtree(folder, ignore_errors=True)


class Reaper(threading.Thread):
    """Ends a frozen rank soon after another failed.

    When a rank fails, torch's launcher sends the others SIGTERM and waits a fixed 30 s before SIGKILL
    (its `shutdown_timeout` applies only to signals). A frozen rank never handles SIGTERM. So once a rank
    has failed (it leaves a `failed-r*` file), the reaper gives the others REAP_S to write their partial
    traces, then SIGKILLs those still running: only processes this process started, by the ids the ranks
    wrote (checked to be its children).
    """

    def __init__(self, folder: Path) -> None:
        super().__init__(name="pdasgd-reaper", daemon=True)
        self.folder = folder
        self.done = threading.Event()

    def stop(self) -> None:
        self.done.set()
        self.join()

    def run(self) -> None:
        from executor.ranks import FAILED_FILE, PID_FILE

        while not any(self.folder.glob(f"{FAILED_FILE}*")):
            if self.done.wait(0.1):
                return
        if self.done.wait(REAP_S):
            return
        for path in self.folder.glob(f"{PID_FILE}*"):
            pid = int(path.read_text())
            if _running_child(pid):
                os.kill(pid, signal.SIGKILL)


def _running_child(pid: int) -> bool:
    """Whether `pid` is a child of this process that has not ended (Linux /proc; elsewhere: False)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and int(fields[1]) == os.getpid()


def _quiet_launcher_logs() -> dict[logging.Logger, int]:
    """Raise torch's launcher loggers (each module sets its own level) to CRITICAL; their old levels."""
    names = [name for name in logging.root.manager.loggerDict if name.startswith("torch.distributed")]
    loggers = [logging.getLogger(name) for name in ["torch.distributed.elastic", *names]]
    levels = {log: log.level for log in loggers}
    for log in loggers:
        log.setLevel(logging.CRITICAL)
    return levels


def _failed(error: Exception, partial: Any) -> Exception:
    """`error` carrying the merged partial traces as its result (None when no rank left one)."""
    from executor.results import RunResult
    from pdasgd import metrics

    error.result = None
    if partial is not None:
        summary = metrics.summarize(partial)
        error.result = RunResult(partial, summary, [], [], [], completed=False)
    return error


def _note_signal(signum: int) -> None:
    """Tell the command which signal stopped it (torch's launcher caught it in our place)."""
    from pdasgd.cli import signals

    if signals._state.first is None:
        signals._state.first = int(signum)


def _read_result(path: Path):
    from executor.results import RunResult
    from pdasgd import metrics
    from pdasgd.trace import Trace

    data = torch.load(path, weights_only=False)
    trace = Trace.from_json(data["trace"])
    parameters = [tuple(tensors) for tensors in data["parameters"]]
    summary = metrics.summarize(trace)
    return RunResult(trace, summary, data["accuracy_curve"], parameters, data["buffers"], data["completed"])


def describe_failure(failure: Any, scenario: Scenario) -> str:
    """One line naming the rank that failed and why, from torch's launcher's ChildFailedError.

    A rank with an error of its own is the cause (the earliest such). A collective that found its peer gone
    or timed out is only a symptom. A peer gone (its sockets closed) means a rank died without an error of
    its own: that rank, killed by a signal, is named. A timeout means a rank froze: the ranks that left no
    error are the ones that stopped responding.
    """
    failures = failure.failures
    errors = {rank: _message(f) for rank, f in failures.items()}
    gone = {rank for rank, message in errors.items() if _says(message, PEER_GONE)}
    silent_peer = {rank for rank, message in errors.items() if _says(message, PEER_SILENT)} - gone
    own = [rank for rank, message in errors.items() if message and rank not in gone | silent_peer]
    if own:
        first = min(own, key=lambda rank: failures[rank].timestamp)
        return f"rank {first}: {errors[first]}"
    silent = sorted(rank for rank in failures if not errors[rank])
    if silent and (gone or not silent_peer):
        return f"rank {_cause(silent, failures)}: {_exit(failures[_cause(silent, failures)])}"
    timeout_s = scenario.distributed.timeout_s
    quiet = f"rank {', '.join(map(str, silent))} stopped responding: " if silent else ""
    return (
        f"{quiet}rank {min(silent_peer | gone)}'s communication timed out after {timeout_s:g} s "
        "(distributed.timeout_s): a rank crashed or froze"
    )


# What gloo and nccl say when the other side of a collective is gone or silent: symptoms, not causes.
PEER_GONE = ("connection closed by peer", "connection reset", "broken pipe")
PEER_SILENT = ("timed out", "timeout")


def _says(message: str, phrases: tuple[str, ...]) -> bool:
    lowered = message.lower()
    return any(phrase in lowered for phrase in phrases)


def _cause(ranks: list[int], failures: dict) -> int:
    """The rank most likely to have died first, the earliest of: those a signal other than the launcher's
    SIGTERM ended, else those that exited on their own (not 130: stopped by the launcher), else any."""
    codes = {rank: failures[rank].exitcode for rank in ranks}
    for chosen in (
        [rank for rank in ranks if codes[rank] < 0 and codes[rank] != -signal.SIGTERM],
        [rank for rank in ranks if codes[rank] not in (-signal.SIGTERM, STOPPED_STATUS)],
        ranks,
    ):
        if chosen:
            return min(chosen, key=lambda rank: failures[rank].timestamp)
    raise ValueError("no failed rank")


def _message(failure: Any) -> str:
    """A rank's own error in one line ('' when it left none: killed, or ended by the launcher)."""
    data = failure.error_file_data if isinstance(failure.error_file_data, dict) else {}
    message = data.get("message", {})
    text = message.get("message", "") if isinstance(message, dict) else str(message)
    text = " ".join(str(text).split())
    return "" if text == "<NONE>" else text[:500]


def _exit(failure: Any) -> str:
    if failure.exitcode < 0:
        try:
            name = signal.Signals(-failure.exitcode).name
        except ValueError:
            name = f"signal {-failure.exitcode}"
        return f"killed by {name}"
    return f"exited with status {failure.exitcode}"
