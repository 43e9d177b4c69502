"""Methods across ranks on real torch.distributed (gloo on 127.0.0.1, 2 or 3 ranks): DDP is synchronous SGD,
averaging keeps the mean and every update, stragglers, faults that end the run, the one-thread-per-group
guard, Ctrl-C, an outside torchrun, bad settings. Every process these tests start ends by itself."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from executor.data import batch_stream, load_dataset
from executor.networks import build_network
from executor.runtime import run
from pdasgd.cli.main import main
from pdasgd.metrics import summarize
from pdasgd.scenario import parse_scenario
from pdasgd.tomlwrite import dumps
from pdasgd.trace import Trace

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 4.0  # distributed.timeout_s of the fault tests
LOCAL = ["--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "--local-addr", "127.0.0.1"]


def table(method: str, workers: dict | None = None, train: dict | None = None, **sections) -> dict:
    data = {
        "method": method,
        "workers": {"replicas": 2, "per_replica": 1, **(workers or {})},
        "train": {"network": "mlp", "width": 32, "depth": 2, "batch_size": 8, "lr": 0.05, "device": "cpu"}
        | (train or {}),
        "distributed": {"timeout_s": 20},
        "run": {"batches": 12, "warmup": 2},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return data


def scenario(method: str, workers: dict | None = None, train: dict | None = None, **sections):
    return parse_scenario(table(method, workers, train, **sections))


def write(tmp_path: Path, data: dict, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(dumps(data))
    return path


def cli(
    args: list[str], env: dict | None = None, timeout: float = 120, **popen
) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pdasgd", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def torchrun(ranks: int, args: list[str]) -> subprocess.CompletedProcess:
    """`torchrun --nnodes 1 --nproc-per-node RANKS` on 127.0.0.1, as a user would start it."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(ranks)]
    return subprocess.run(
        [*command, *LOCAL, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for layer in tensors for t in layer])


# --- what the methods compute ------------------------------------------------------------------------


TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="nccl across ranks needs 2 GPUs")


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, TWO_GPUS], id="cuda-nccl")]
)
def test_ddp_on_two_ranks_equals_sequential_sgd_on_the_concatenated_batches(device: str) -> None:
    sc = scenario("ddp", train={"momentum": 0.9, "device": device})
    result = run(sc, curve_points=0)
    # the reference: one process, batches 2k and 2k+1 as one batch, torch.optim.SGD
    dataset = load_dataset(sc.train, sc.run.seed)
    torch.manual_seed(sc.run.seed)
    blocks = build_network(sc.train, dataset.input_shape, dataset.num_classes)
    model = torch.nn.Sequential(*blocks)
    optimizer = torch.optim.SGD(model.parameters(), lr=sc.train.lr, momentum=sc.train.momentum)
    stream = batch_stream(dataset, sc.train.batch_size, sc.run.seed)
    for _ in range(sc.run.batches // 2):
        (x0, y0), (x1, y1) = next(stream), next(stream)
        optimizer.zero_grad()
        F.cross_entropy(model(torch.cat([x0, x1])), torch.cat([y0, y1])).backward()
        optimizer.step()
    expected = [tuple(block.parameters()) for block in blocks]
    atol = 1e-6 if device == "cpu" else 1e-4  # the reference runs on the CPU; cuBLAS sums in another order
    assert torch.allclose(flat(result.parameters).cpu(), flat(expected), atol=atol)
    # one trace of both ranks: names carry the rank, every batch once, versions count the steps
    trace = result.trace
    assert set(trace.workers()) == {"r0/worker:0", "r0/comm", "r1/worker:0", "r1/comm"}
    assert trace.batches == 12 and trace.info["ranks"] == 2
    forwards = sorted(s.batch for s in trace.spans if s.op == "forward" and s.layer == 0)
    assert forwards == list(range(12))
    assert {s.worker.split("/")[0] for s in trace.spans if s.batch is not None and s.batch % 2} == {"r1"}
    devices = set(summarize(trace).utilization)
    if device == "cpu":
        assert devices == {"r0/cpu", "r0/network", "r1/cpu", "r1/network"}
    else:  # a GPU of its own per rank
        assert len(devices) == 4 and {"r0/network", "r1/network"} <= devices


def test_blocking_lapsgd_averaging_every_batch_without_momentum_equals_ddp() -> None:
    ddp = run(scenario("ddp"), curve_points=0)
    workers = {"average_every": 1, "averaging": "blocking"}
    lapsgd = run(scenario("lapsgd", workers=workers), curve_points=0)
    assert torch.allclose(flat(lapsgd.parameters), flat(ddp.parameters), atol=1e-6)


def test_averaging_keeps_the_mean_of_the_ranks_and_the_updates_made_meanwhile(tmp_path: Path) -> None:
    done = torchrun(3, [str(ROOT / "tests" / "ranks" / "averaging.py"), str(tmp_path)])
    assert done.returncode == 0, done.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    for rank, figures in enumerate(seen):
        # round 1: every rank at the mean of 0, 1, 2 (and of 0, 10, 20); a round is not a version
        assert figures["after_round_1"] == [[1.0] * 4, [[10.0] * 3] * 2]
        assert figures["version_after_round_1"] == 0
        # round 2: the mean of the snapshots plus the rank's own update of -0.1 (rank + 1), kept
        own = -0.1 * (rank + 1)
        assert figures["after_round_2"][0] == pytest.approx([1.0 + own] * 4)
        assert figures["after_round_2"][1] == [pytest.approx([10.0 + own] * 3)] * 2
        assert figures["version_after_round_2"] == 1
    mean = sum(figures["after_round_2"][0][0] for figures in seen) / 3
    assert mean == pytest.approx(1.0 - 0.1 * 2)  # the mean moved by the mean of the updates, no more


def test_no_update_is_lost_and_versions_count_updates_on_every_rank() -> None:
    for method, workers in (("lapsgd", {"per_replica": 2, "average_every": 2}), ("ddp", {})):
        trace = run(scenario(method, workers=workers, run={"batches": 16}), curve_points=0).trace
        versions = defaultdict(list)
        for span in trace.spans:
            if span.op == "update":
                versions[(span.worker.split("/")[0], span.layer)].append(span.version)
        assert sorted(versions) == [(f"r{r}", m) for r in range(2) for m in range(trace.layers)], method
        for key, seen in versions.items():
            assert sorted(seen) == list(range(8)), (method, key)  # 8 batches a rank, every layer updated


def test_a_straggling_rank_holds_back_ddp_but_not_lapsgd() -> None:
    late = {"straggler": [{"worker": "r1/worker:0", "every": 1, "extra_s": 0.03, "kind": "sleep"}]}

    def rates(method: str, workers: dict) -> dict[str, float]:
        sc = scenario(method, workers=workers, delays=late, run={"batches": 40, "warmup": 4})
        trace = run(sc, curve_points=0).trace
        rate = {}
        for rank in ("r0", "r1"):
            ends = sorted(
                s.end_s for s in trace.spans if s.worker.startswith(rank + "/worker") and s.op == "update"
            )
            starts = [s.start_s for s in trace.spans if s.worker.startswith(rank + "/worker")]
            rate[rank] = 20 / (max(ends) - min(starts))
        return rate

    lapsgd = rates("lapsgd", {"average_every": 4})
    ddp = rates("ddp", {})
    assert lapsgd["r0"] > 3 * lapsgd["r1"]  # rank 0 keeps its pace, rank 1 sleeps 30 ms a batch
    assert 0.8 < ddp["r0"] / ddp["r1"] < 1.25  # ddp: rank 0 waits for rank 1 at every step
    assert lapsgd["r0"] > 3 * ddp["r0"]


def test_the_clocks_of_the_ranks_are_aligned_within_the_measured_bound() -> None:
    trace = run(scenario("ddp"), curve_points=0).trace
    offsets, bounds = trace.info["clock_offsets_s"], trace.info["clock_offset_bounds_s"]
    assert offsets[0] == 0.0 and bounds[0] == 0.0
    # one machine, one monotonic clock: the true offset is 0, so the measured one is the error
    assert abs(offsets[1]) <= bounds[1] < 0.001
    probe = trace.info["allreduce_probe"]
    assert probe["latency_s"] > 0 and probe["bytes"] == sum(trace.info["param_bytes"])


# --- faults ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "fault", "line"),
    [
        ("ddp", "raise", "rank 1: "),
        ("lapsgd", "kill", "rank 1: killed by SIGKILL"),
        ("lapsgd", "freeze", "rank 1 stopped responding: rank 0's communication timed out"),
        ("gossip-lu", "kill", "rank 1: killed by SIGKILL"),
        ("gossip-lu:push", "raise", "rank 1: "),
        pytest.param("gossip-lu:push", "kill", "rank 1: killed by SIGKILL", marks=pytest.mark.slow),
        pytest.param("gossip-lu", "raise", "rank 1: ", marks=pytest.mark.slow),
        pytest.param("gossip-lu", "freeze", "rank 1 stopped responding", marks=pytest.mark.slow),
        pytest.param("ddp", "freeze", "rank 1 stopped responding", marks=pytest.mark.slow),
    ],
)
def test_a_rank_that_fails_ends_the_whole_run_in_one_line(tmp_path: Path, method, fault, line) -> None:
    stamp = tmp_path / "fault-at"
    method, _, mode = method.partition(":")  # gossip-lu:push: the push mode of gossip
    data = table(
        method,
        {"average_every": 2},
        {"network": "tests.ranks.faulty:blocks"},
        distributed={"timeout_s": TIMEOUT_S, **({"gossip_mode": mode} if mode else {})},
        run={"batches": 400},
    )
    env = {
        "PDASGD_FAULT": fault,
        "PDASGD_FAULT_RANK": "1",
        "PDASGD_FAULT_AT": "8",
        "PDASGD_FAULT_STAMP": str(stamp),
    }
    trace = tmp_path / "t.json"
    done = cli(["run", str(write(tmp_path, data)), "--trace", str(trace)], env=env)
    ended = time.time()
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"pdasgd run: error: {line}"), last
    assert ended - float(stamp.read_text()) < TIMEOUT_S + 10
    if fault == "raise":
        assert "a deliberate fault in rank 1" in last
    partial = Trace.load(trace)
    assert any(s.worker.startswith("r0/") for s in partial.spans)  # the survivor's partial trace


def test_ctrl_c_stops_every_rank_and_keeps_their_partial_traces(tmp_path: Path) -> None:
    data = table("lapsgd", {"average_every": 4}, run={"batches": 100000})
    trace = tmp_path / "t.json"
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pdasgd", "run", str(write(tmp_path, data)), "--trace", str(trace)]
    process = subprocess.Popen(
        command, cwd=ROOT, env=environment, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        time.sleep(12)  # the ranks have started and trained a while
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err[-2000:]
    assert "stopped by Ctrl-C" in err.strip().splitlines()[-1]
    partial = Trace.load(trace)
    assert {s.worker.split("/")[0] for s in partial.spans} == {"r0", "r1"}
    assert 0 < partial.batches < 100000


def test_two_threads_on_one_process_group_are_refused() -> None:
    script = """
import datetime, threading, torch, torch.distributed as dist
from executor.world import GroupMisuse, OwnedGroup
store = dist.HashStore()
dist.init_process_group("gloo", store=store, rank=0, world_size=1, timeout=datetime.timedelta(seconds=5))
group = OwnedGroup(dist.group.WORLD, "main")
group.all_reduce(torch.ones(2))
failed = []
def other():
    try:
        group.all_reduce(torch.ones(2))
    except GroupMisuse as error:
        failed.append(str(error))
thread = threading.Thread(target=other, name="intruder")
thread.start(); thread.join()
print(failed[0])
dist.destroy_process_group()
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "process group 'main' is used by thread 'intruder' but belongs to thread 'MainThread': two threads "
        "on one group pair different collectives"
    )


# --- where the ranks come from -----------------------------------------------------------------------


def test_under_an_outside_torchrun_the_ranks_join_its_world(tmp_path: Path) -> None:
    path = write(tmp_path, table("ddp"))
    done = torchrun(2, ["-m", "pdasgd", "run", str(path), "--json"])
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # rank 0 alone prints, for every rank
    assert summary["batches"] == 12 and summary["method"] == "ddp"
    assert set(summary["utilization"]) == {"r0/cpu", "r0/network", "r1/cpu", "r1/network"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_bad_distributed_settings_are_one_line_errors(tmp_path: Path, monkeypatch, capsys) -> None:
    # a backend that does not exist
    path = write(tmp_path, {**table("ddp"), "distributed": {"backend": "mpi"}})
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "pdasgd run: error: distributed.backend: must be one of auto, gloo, nccl; got 'mpi'"
    )
    # more ranks than GPUs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    path = write(tmp_path, table("ddp", train={"device": "cuda"}), "cuda.toml")
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "pdasgd run: error: workers.replicas: 2 ranks need a GPU each; this machine has 1"
    )
    monkeypatch.undo()
    # a master nobody listens on (rank 1 of an outside launch whose rank 0 never came)
    port = free_port()
    env = {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    path = write(tmp_path, {**table("ddp"), "distributed": {"timeout_s": 2}}, "lonely.toml")
    started = time.monotonic()
    done = cli(["run", str(path)], env=env, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"pdasgd run: error: distributed: rank 1 of 2 cannot join the world at 127.0.0.1:{port}"
    ), lines
    assert time.monotonic() - started < 30


def test_compare_predicts_and_measures_a_method_across_ranks(tmp_path: Path, capsys) -> None:
    data = table("lapsgd", {"average_every": 4}, {"dataset": "digits"}, run={"batches": 40, "warmup": 4})
    path = write(tmp_path, data)
    assert main(["compare", str(path), "--out", str(tmp_path / "out"), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    predicted, measured = document["predicted"], document["measured"]
    assert predicted["source"] == "simulator" and measured["source"] == "executor"
    assert {"r0/network", "r1/network", "r1/cpu"} <= set(measured["utilization"])
    assert {"r0/network", "r1/network"} <= set(predicted["utilization"])
    error = document["error"]
    assert error["throughput_rel"] == pytest.approx(
        (predicted["throughput_batches_per_s"] - measured["throughput_batches_per_s"])
        / measured["throughput_batches_per_s"]
    )
    assert len(error["staleness_per_layer_abs"]) == 3
    assert (tmp_path / "out" / "report.md").exists()
