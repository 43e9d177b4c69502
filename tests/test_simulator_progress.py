"""The progress bar: shown when asked (or on long runs at a terminal), quiet otherwise."""

from __future__ import annotations

from pdasgd.scenario import parse_scenario
from simulator import simulate, simulate_summary
from simulator.progress import ProgressBar, wanted


def scenario(method: str = "async-lu", batches: int = 400):
    data = {
        "method": method,
        "model": {"layers": 2, "forward_s": 1.0, "beta": 2.0},
        "run": {"batches": batches},
    }
    return parse_scenario(data)


def test_wanted() -> None:
    assert wanted(True, 1, 1) and not wanted(False, 10**9, 50)
    assert not wanted(None, 10, 2)  # short run
    assert not wanted(None, 10**6, 50)  # long, but stderr is not a terminal under pytest


def test_progress_counts_every_tick(capsys) -> None:
    with ProgressBar(1000, "x") as bar:
        for _ in range(999):
            bar.tick()
        assert bar.bar.n + bar.pending == 999
        bar.tick()
    assert bar.bar.n == 1000


def test_bar_on_stderr_when_asked(capsys) -> None:
    simulate(scenario("hogwild"), progress=True)
    simulate_summary(scenario(), progress=True)
    err = capsys.readouterr().err
    assert "simulate hogwild" in err and "summarise async-lu" in err
    simulate(scenario("hogwild"))
    assert capsys.readouterr().err == ""
