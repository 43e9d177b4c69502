"""`executor.run(scenario)`: train the scenario's network for real with its method, and trace every op.

The run builds the network and data of `[train]` (`executor.setup`), starts the method's worker threads
(`executor.workers`) and watches them from the calling thread: progress bar, the caller's stop event,
Ctrl-C and worker failures. It returns a `RunResult` (`executor.results`): the trace (`source="executor"`),
its summary from `pdasgd.metrics.summarize`, the accuracy curve and the final parameters.

Failures: an exception in any worker sets the run's stop event, every other worker leaves at its next wait
or op (well within a second), and `run` raises `WorkerError` naming the worker; a NaN or infinite loss
raises `LossNotFinite` naming it. A watchdog stops the run when one op has taken longer than
`run.op_timeout_s` (a user network that blocks): `OpTimedOut`, naming the worker and the op. Ctrl-C (or
SIGTERM or SIGHUP, which the CLI turns into the same KeyboardInterrupt) stops the workers the same way and
raises `RunInterrupted`. Each of these carries the partial result (`.result`, its trace covering what was
done). A caller's `stop_event` is the run's own stop event: setting it stops the workers at once and `run`
returns the partial result with `completed=False` (the run also sets it when it stops on an error or Ctrl-C).

The threads are the method's workers (`pdasgd.methods`): each role's workers run the loop of its dispatch
(`executor.workers`) over the role's steps. The executor runs every method whose definition names it in
`engines` (sequential, async-lu, async-bu, hogwild, and variants defined as data) on one device (the CPU or
one GPU); it ignores `[[device]]`, `[placement]` and `delays.jitter_cv` (a real run has its own noise; the
timed network sleeps exact costs).

Methods across ranks (ddp, lapsgd, lppsgd) run one process per rank on torch.distributed: `run` starts
them through torch's launcher (`executor.launch`), or, in a process that torchrun started as a rank, joins
that world. A rank's own run is this same `run` with its `world` (`executor.ranks`): its share of the
batches, its workers, and its communicator thread.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from executor import checkpoint as checkpoints
from executor.ddp import ddp_worker
from executor.links import Link, Stopped, Window
from executor.results import Curve, RunResult, accuracy_curve, build_trace, snapshot_pool, take_snapshot
from executor.setup import PARAMETER_COPIES, Setup, make_context, make_setup
from executor.workers import LOOPS, Completions, Context, NonFiniteLoss, RoleContext
from pdasgd import metrics
from pdasgd.methods import MethodError
from pdasgd.scenario import Delays, Scenario, ScenarioError

JOIN_S = 3.0  # how long a stopping run waits for its workers before it gives up on them
POLL_S = 0.1


class RunFailed(RuntimeError):
    """The run stopped on a failure; `result` is what it had done (its trace is partial)."""

    result: RunResult | None = None


class WorkerError(RunFailed):
    """A worker thread raised; the run stopped. `worker` names it, `__cause__` is the original error."""

    def __init__(self, worker: str, error: BaseException) -> None:
        super().__init__(f"worker {worker} failed: {type(error).__name__}: {error}")
        self.worker = worker


class LossNotFinite(RunFailed, NonFiniteLoss):
    """The training loss became NaN or infinite (a user error: try a lower learning rate)."""


class OpTimedOut(RunFailed):
    """One op ran longer than `run.op_timeout_s`; the run was stopped."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, SIGHUP) stopped the run; `result` is what it had done (its trace is partial)."""

    def __init__(self, result: RunResult) -> None:
        super().__init__("run interrupted")
        self.result = result


def check_method(scenario: Scenario) -> None:
    """ScenarioError unless the executor runs the scenario's method."""
    if "executor" not in scenario.definition.engines:
        raise ScenarioError(f"method {scenario.method}: not in the executor yet (simulator only)")


def run(
    scenario: Scenario,
    progress: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    stop_event: threading.Event | None = None,
    probe: object | None = None,
    curve_points: int = 10,
    baseline: bool = False,
    cpu_times: bool = False,
    world: Any = None,
) -> RunResult:
    """Train `scenario` for real and trace it (module docstring).

    `checkpoint_dir` resumes from the checkpoint there, if any, and saves one every `checkpoint_every`
    finished batches. `probe` (tests) gets `batch(i, x, y)`, `read(i, m, version, tensors)` and
    `gradient(i, m, version, grads)` calls from the workers. `baseline` first runs sequential on the same
    batches, which sets `sequential_batch_s` and so the summary's `speedup_vs_sequential`. `cpu_times`
    records every step's thread CPU time (`RunResult.cpu_times`, for calibrating costs). `world` (an
    `executor.world.World`) runs this process's rank of a method across ranks.
    """
    check_method(scenario)
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every: must be >= 1, got {checkpoint_every}")
    if scenario.definition.ranks and world is None:
        from executor.launch import run_ranks

        if checkpoint_dir is not None or probe is not None or cpu_times:
            raise ValueError(f"{scenario.method} runs across ranks: no checkpoints, probes or CPU times")
        return run_ranks(scenario, progress, curve_points, baseline, stop_event)
    sequential_s = sequential_batch_s(scenario) if baseline else None
    copies = PARAMETER_COPIES + curve_points + 1
    setup = make_setup(scenario, checkpoint_dir, copies, device=world.device if world else None)
    if world is not None:  # the ranks start together: their setups (data, network, checks) differ in length
        world.main.barrier()
    ctx, curve = _context(setup, probe, curve_points, stop_event or threading.Event(), world)
    if cpu_times:
        ctx.cpu_times = {}
    if checkpoint_dir is not None:
        ctx.on_finish = _chain(ctx.on_finish, _checkpointer(setup, ctx, checkpoint_dir, checkpoint_every))
    errors: list[tuple[str, BaseException]] = []
    wake = threading.Event()
    parts = _rank_parts(scenario, ctx, world, errors, wake)
    threads = [_thread(ctx, name, target, args, errors, wake) for name, target, args in _plan(scenario, ctx)]
    if setup.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(setup.device)
    if ctx.delivery is not None:
        ctx.delivery.thread.start()
    if parts is not None:
        parts.start()
    try:
        _supervise(threads, ctx, errors, wake, progress, scenario.run.op_timeout_s)
        if parts is not None and not errors and not ctx.stop.is_set():
            _finish_rank(parts, errors)
    except KeyboardInterrupt:
        ctx.stop.set()
        _join(threads)
        raise RunInterrupted(_result(setup, ctx, curve, sequential_s, completed=False, world=world)) from None
    finally:
        if ctx.delivery is not None:
            ctx.delivery.close()
        if parts is not None:  # stopped: a collective the other ranks never join cannot end; leave it
            parts.close(0.0 if ctx.stop.is_set() else JOIN_S)
    if errors:
        failure = _failure(*errors[0])
        failure.result = _result(setup, ctx, curve, sequential_s, completed=False, world=world)
        raise failure from errors[0][1]
    done = ctx.progress.completed == len(ctx.batch_ids)
    return _result(setup, ctx, curve, sequential_s, completed=done, world=world)


def _rank_parts(scenario: Scenario, ctx: Context, world: Any, errors: list, wake: threading.Event):
    """A rank's communicator and averaging or DDP (executor.ranks); None in a single process."""
    if world is None:
        return None
    from executor.ranks import RankParts

    def report(name: str, error: BaseException) -> None:
        errors.append((name, error))
        ctx.stop.set()
        wake.set()

    return RankParts(scenario, ctx, world, report)


def _finish_rank(parts: Any, errors: list) -> None:
    try:
        parts.finish()
    except Exception as error:  # the communicator's error: a collective failed or timed out
        if not errors:
            errors.append(("comm", error))


def _failure(name: str, error: BaseException) -> RunFailed:
    if isinstance(error, NonFiniteLoss):
        return LossNotFinite(f"worker {name}: {error}")
    if isinstance(error, OpTimedOut):
        return error
    return WorkerError(name, error)


def sequential_batch_s(scenario: Scenario) -> float:
    """Steady-state seconds per batch of plain sequential backprop on the scenario's network and batches."""
    base = dataclasses.replace(scenario, method="sequential", delays=Delays(), devices=(), placement={})
    return metrics.steady_time_per_batch_s(run(base, curve_points=0).trace)


# --- set-up ---------------------------------------------------------------------------------------


def _context(
    setup: Setup, probe: object | None, curve_points: int, stop: threading.Event, world: Any = None
) -> tuple[Context, Curve]:
    total = setup.scenario.run.batches // (world.size if world else 1)
    every = max(1, total // curve_points) if curve_points else total + 1
    # allocated before the context starts the run's clock: filling the copies is no part of the run
    curve = Curve(every, pool=snapshot_pool(setup, min(total // every, curve_points + 1)))
    ctx = make_context(setup, stop, probe, world)
    ctx.on_finish = lambda batch, completed: curve.maybe_take(setup, ctx, completed)
    return ctx, curve


def _checkpointer(setup: Setup, ctx: Context, directory: str | os.PathLike, every: int) -> Callable:
    """Save every `every` finished batches. Saves run one at a time and never go back: two workers that
    finish batches at once used to write concurrently, and the older checkpoint could land last."""
    lock = threading.Lock()
    saved = [setup.first]

    def save(batch: int, completed: int) -> None:
        if completed % every:
            return
        with lock:
            done = ctx.progress.prefix
            if done > saved[0]:
                checkpoints.save(directory, setup.scenario, done, setup.layers, setup.buffers)
                saved[0] = done

    return save


def _chain(first: Callable | None, second: Callable) -> Callable:
    def both(batch: int, completed: int) -> None:
        if first:
            first(batch, completed)
        second(batch, completed)

    return both


def _plan(scenario: Scenario, ctx: Context) -> list[tuple[str, Callable, tuple]]:
    """(worker name, loop, extra arguments) for each thread: every worker of every role of the method."""
    method, workers = ctx.method, scenario.workers
    try:
        method.check(len(ctx.layers), workers)
    except MethodError as error:
        raise ScenarioError(f"method: {error}") from None
    stride = ctx.batch_ids.step  # a rank's batches: rank, rank + R, ...
    window = Window(workers.max_in_flight, ctx.first, ctx.stop, stride) if method.windowed else None
    sizes = [role.size(workers) for role in method.roles]
    links = [Link(scenario.delays.handoff_s, ctx.stop, senders=size) for size in sizes[:-1]]
    plan, slot = [], 0
    for r, role in enumerate(method.roles):
        source, sink = links[r - 1] if r else None, links[r] if r < len(links) else None
        shared = RoleContext(ctx, role, sizes[r], window, [source, sink])
        loop = ddp_worker if ctx.ddp is not None else LOOPS[role.dispatch]
        for index, name in enumerate(role.worker_names(workers)):
            plan.append((name, loop, (shared, index, slot)))
            slot += 1
    return plan


# --- supervision ----------------------------------------------------------------------------------


def _thread(
    ctx: Context,
    name: str,
    target: Callable,
    args: tuple,
    errors: list[tuple[str, BaseException]],
    wake: threading.Event,
) -> threading.Thread:
    def body() -> None:
        start_s = time.thread_time()
        try:
            target(ctx, name, *args)
        except Stopped:
            pass
        except BaseException as error:  # reported by the main thread, naming this worker
            errors.append((name, error))
            ctx.stop.set()
        finally:
            if ctx.cpu_times is not None:  # the thread's whole CPU time, its steps' and the rest
                ctx.cpu_times.setdefault(name, []).append(
                    ("thread", None, None, time.thread_time() - start_s)
                )
            wake.set()

    return threading.Thread(target=body, name=f"pdasgd {name}", daemon=True)


def _supervise(
    threads: list[threading.Thread],
    ctx: Context,
    errors: list,
    wake: threading.Event,
    progress: bool,
    op_timeout_s: float,
) -> None:
    """Start the threads and wait until they end, one fails, one hangs or the run is stopped."""
    bar = tqdm(
        total=ctx.end - ctx.first,
        unit="batch",
        file=sys.stderr,
        disable=not (progress and sys.stderr.isatty()),
        dynamic_ncols=True,
    )
    try:
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads) and not errors and not ctx.stop.is_set():
            wake.wait(POLL_S)
            wake.clear()
            _show(bar, ctx.progress)
            _watch(ctx, errors, op_timeout_s)
        _show(bar, ctx.progress)
    except KeyboardInterrupt:
        ctx.stop.set()
        raise
    finally:
        bar.close()
    if errors:
        ctx.stop.set()
    _join(threads)


def _watch(ctx: Context, errors: list, op_timeout_s: float) -> None:
    """The watchdog: stop the run if some worker's current op has run longer than `op_timeout_s`."""
    now = time.perf_counter()
    for name, current in list(ctx.current.items()):
        if current is not None and now - current[2] > op_timeout_s:
            step, batch, _ = current
            errors.append(
                (
                    name,
                    OpTimedOut(
                        f"worker {name}: {step.op} of layer {step.layer} for batch {batch} ran longer than "
                        f"run.op_timeout_s = {op_timeout_s:g} s; the run was stopped"
                    ),
                )
            )
            ctx.stop.set()
            return


def _show(bar: tqdm, progress: Completions) -> None:
    if progress.completed > bar.n:
        bar.update(progress.completed - bar.n)
        bar.set_postfix(loss=f"{progress.loss:.4g}", refresh=False)


def _join(threads: list[threading.Thread]) -> None:
    """Wait up to JOIN_S in all for the threads to end. A stop can come while the threads are still being
    started: a thread never started is skipped, and one whose start() the stop interrupted (running, but
    not yet marked started, which join() refuses) is waited for until it is."""
    deadline = time.monotonic() + JOIN_S
    for thread in threads:
        while True:
            try:
                thread.join(max(0.0, deadline - time.monotonic()))
                break
            except RuntimeError:  # "cannot join thread before it is started"
                if thread.ident is None or time.monotonic() > deadline:
                    break
                time.sleep(0.001)


def _result(
    setup: Setup, ctx: Context, curve: Curve, sequential_s: float | None, completed: bool, world: Any = None
) -> RunResult:
    ctx.clock.finish()
    final = take_snapshot(setup, ctx.streams, ctx.progress.completed, ctx.clock.now_s())
    curve.snapshots = [s for s in curve.snapshots if s.completed < final.completed] + [final]
    points = accuracy_curve(setup, curve)
    if setup.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(setup.device)
    else:
        peak = setup.meter.peak_bytes
    ranked = {"clock_start_s": ctx.clock.start}
    if world is not None:
        ranked |= {"rank": world.rank, "clock_offset_bound_s": world.offset_bound_s, "backend": world.backend}
    trace = build_trace(setup, ctx, peak, points[-1][2], sequential_s, interrupted=not completed, **ranked)
    return RunResult(
        trace=trace,
        summary=metrics.summarize(trace),
        accuracy_curve=points,
        parameters=[layer.latest.tensors for layer in setup.layers],
        buffers=[buffer.detach().clone() for buffer in setup.buffers],
        completed=completed,
        cpu_times=ctx.cpu_times,
    )
