"""`pdasgd simulate` end to end: output, files, overrides, one-line errors, Ctrl-C."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import simulator
from pdasgd.cli.main import main
from pdasgd.scenario import load_scenario
from pdasgd.trace import Trace

SCENARIO = """
name = "tiny"
method = "async-lu"
[model]
layers = 3
forward_s = 0.03
beta = 2.0
activation_bytes = 2048
param_bytes = 4096
[workers]
forward = 1
backward = 2
[run]
batches = 40
warmup = 4
"""


@pytest.fixture
def scenario_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SCENARIO)
    return path


def test_text_summary(scenario_file, capsys) -> None:
    assert main(["simulate", str(scenario_file)]) == 0
    out = capsys.readouterr().out
    for expected in ("predicted: tiny (async-lu)", "throughput (batches/s)", "engine", "fast", "utilisation"):
        assert expected in out
    assert "memory peak" in out and "KiB" in out


def test_json_is_the_summary(scenario_file, capsys) -> None:
    assert main(["simulate", str(scenario_file), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = simulator.simulate_summary(load_scenario(scenario_file)).to_dict()
    assert printed == json.loads(json.dumps(expected))


def test_files_and_overrides(scenario_file, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["simulate", str(scenario_file), "--batches", "12", "--seed", "3", "--engine", "simpy"]
    files = {
        "--trace": out / "t.json",
        "--chrome": out / "c.json",
        "--gantt": out / "g.png",
        "--staleness-plot": out / "s.png",
    }
    for flag, path in files.items():
        args += [flag, str(path)]
    assert main(args) == 0
    assert capsys.readouterr().out.count("wrote ") == 4
    trace = Trace.load(files["--trace"])
    assert trace.batches == 12 and trace.info == {"scenario": "tiny", "seed": 3, "engine": "simpy"}
    assert json.loads(files["--chrome"].read_text())["traceEvents"]
    assert all(files[flag].read_bytes().startswith(b"\x89PNG") for flag in ("--gantt", "--staleness-plot"))


def test_missing_file_is_one_line(capsys) -> None:
    assert main(["simulate", "missing.toml"]) == 2
    err = capsys.readouterr().err.strip()
    assert "file not found" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("flags", "message"), [(["--batches", "0"], "must be >= 1"), (["--engine", "warp"], "invalid")]
)
def test_bad_flags_exit_2_in_one_line(scenario_file, capsys, flags, message) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["simulate", str(scenario_file), *flags])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_fewer_batches_than_the_warmup_lowers_the_warmup(scenario_file, capsys) -> None:
    assert main(["simulate", str(scenario_file), "--batches", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["batches"] == 3


def test_scenario_without_costs_says_to_profile(tmp_path, capsys) -> None:
    path = tmp_path / "train.toml"
    path.write_text('method = "async-lu"\n[train]\nnetwork = "mlp"\n')
    assert main(["simulate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "pdasgd profile" in err and len(err.splitlines()) == 1


def test_fast_engine_refused_for_a_replicated_method(tmp_path, capsys) -> None:
    path = tmp_path / "hog.toml"
    path.write_text(SCENARIO.replace('"async-lu"', '"hogwild"'))
    assert main(["simulate", str(path), "--engine", "fast"]) == 2
    assert "fast path cannot run" in capsys.readouterr().err


def test_unwritable_output_is_a_one_line_error(scenario_file, tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["simulate", str(scenario_file), "--trace", str(blocker / "t.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot write" in err and len(err.splitlines()) == 1


def test_ctrl_c_stops_cleanly(scenario_file, tmp_path, capsys, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(simulator, "simulate", interrupted)
    target = tmp_path / "t.json"
    assert main(["simulate", str(scenario_file), "--trace", str(target)]) == 130
    assert "stopped by Ctrl-C" in capsys.readouterr().err
    assert not target.exists()


def test_console_script_without_torch(scenario_file) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from pdasgd.cli.main import main
        code = main(["simulate", {str(scenario_file)!r}, "--json"])
        assert code == 0 and "torch" not in sys.modules, sorted(m for m in sys.modules if "torch" in m)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["method"] == "async-lu"


def test_gantt_of_a_long_fast_run_simulates_only_what_it_shows(scenario_file, tmp_path, capsys) -> None:
    path = tmp_path / "g.png"
    assert main(["simulate", str(scenario_file), "--batches", "300000", "--gantt", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["batches"] == 300000
    assert path.read_bytes().startswith(b"\x89PNG")
