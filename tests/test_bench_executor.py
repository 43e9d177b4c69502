"""The executor benchmark's arithmetic: overlap of timed loops, per-round ratios, combining runs."""

import importlib.util
import json
import pathlib

import pytest

PATH = pathlib.Path(__file__).parent.parent / "benchmarks" / "bench_executor.py"
spec = importlib.util.spec_from_file_location("bench_executor", PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def one_run(seq: list[float], lu: list[float], batches: int = 100) -> dict:
    return {
        "rates": {"sequential": seq, "async-lu 1F+2B": lu},
        "staleness": {"sequential": [0.0] * len(seq), "async-lu 1F+2B": [3.0] * len(lu)},
        "args": {"batches": batches, "warmup": 20, "max_in_flight": 8},
    }


def test_overlap_rate_counts_only_batches_while_both_run():
    # loop A times 0..4 s with batches at 1,2,3,4; loop B starts at 2 s: batches at 3,4,5,6
    runs = [[0.0, 1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0, 6.0]]
    # both run from 2 s to 4 s; finished in (2, 4]: A's 3 and 4, B's 3 and 4
    assert bench.overlap_rate(runs) == 4 / 2.0


def test_per_round_ratio_pairs_rounds():
    # ratios 2, 1.5, 2: median 2
    assert bench.per_round_ratio([2.0, 3.0, 4.0], [1.0, 2.0, 2.0]) == "2.000 (1.500-2.000)"
    assert bench.per_round_ratio([2.0], None) == "-"


def test_combine_runs_joins_rounds_run_after_run():
    rates, staleness = bench.combine_runs([one_run([10.0, 11.0], [20.0, 21.0]), one_run([12.0], [24.0])])
    assert rates == {"sequential": [10.0, 11.0, 12.0], "async-lu 1F+2B": [20.0, 21.0, 24.0]}
    assert staleness["async-lu 1F+2B"] == [3.0, 3.0, 3.0]


def test_combine_runs_refuses_different_runs():
    with pytest.raises(ValueError, match="batches"):
        bench.combine_runs([one_run([10.0], [20.0]), one_run([10.0], [20.0], batches=50)])
    other = one_run([10.0], [20.0])
    other["rates"] = {"sequential": [10.0]}
    with pytest.raises(ValueError, match="configurations"):
        bench.combine_runs([one_run([10.0], [20.0]), other])


def test_combine_cli_reports_and_rejects_missing_file(tmp_path, capsys, monkeypatch):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(one_run([10.0, 12.0], [19.0, 24.0])))
    monkeypatch.setattr("sys.argv", ["bench_executor.py", "--combine", str(path)])
    bench.main()
    out = capsys.readouterr().out
    assert "async-lu 1F+2B / sequential 1.955 (2 rounds)" in out  # median 21.5 / median 11
    monkeypatch.setattr("sys.argv", ["bench_executor.py", "--combine", str(tmp_path / "missing.json")])
    with pytest.raises(SystemExit) as stop:
        bench.main()
    assert stop.value.code == 2
