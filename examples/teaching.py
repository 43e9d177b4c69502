"""Teaching: decoupled backpropagation on a timeline, and why its trade-offs are what they are.

Every picture is a Gantt chart (`pdasgd.plots.gantt`) of a simulator trace at fixed op times: 4 layers, a
forward time F = 1 s per batch, beta = B/F = 2 (so B = 2 s), at most Q = 4 batches in flight, a device per
worker. One row per worker; forward work light and backward work dark, one colour per batch; ticks are
updates; white space is idle time. Three pictures, a few timelines each, stacked:

- methods: sequential backprop (F then B on one worker), async-BU and async-LU with one forward and two
  backward workers (1F:2B). BU updates every layer at the end of the backward; LU updates each layer as soon
  as its gradient exists, so the next forwards read fresher parameters.
- ratios: 1F:1B, 1F:2B, 1F:3B. With one backward worker the forward waits for it (throughput 1/B); two
  backward workers match beta = 2; a third has nothing to do.
- delays on 1F:2B LU: a hand-off delay between forward and backward, a straggling backward worker, and
  random op times (jitter).

Plus a staleness plot of LU against BU per layer. Each picture comes with a caption saying what to notice;
every number in it is computed from the simulated traces, none is typed in.

Run: `python examples/teaching.py [--out DIR] [--small]`. DIR gets teaching_methods.png,
teaching_ratios.png, teaching_delays.png and teaching_staleness.png.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import simulator
from pdasgd.metrics import Summary, summarize
from pdasgd.plots import gantt, staleness_plot
from pdasgd.scenario import Scenario, scenario_from_toml
from pdasgd.trace import Trace

BASE_TOML = """\
name = "teaching"
method = "async-lu"

[model]
layers = 4
forward_s = 1.0
beta = 2.0

[workers]
forward = 1
backward = 2
max_in_flight = 4

[run]
batches = {batches}
warmup = {warmup}
seed = 0
"""

HANDOFF_S = 0.5
STRAGGLER = {"worker": "backward:1", "every": 3, "extra_s": 1.5, "kind": "sleep"}
JITTER_CV = 0.3
DEFAULT_GANTT_BATCHES = 12  # batches drawn per timeline
GANTT_BATCHES = {"sequential": 4}  # fewer for sequential: each timeline spans about the same 12-14 s


@dataclass(frozen=True)
class Run:
    """One simulated timeline: its scenario, trace and summary."""

    label: str
    scenario: Scenario
    trace: Trace
    summary: Summary

    @property
    def throughput(self) -> float:
        return self.summary.throughput_batches_per_s

    @property
    def staleness(self) -> float:
        return self.summary.staleness.mean

    def busy(self, worker: str) -> float:
        """Utilisation of the device of `worker` (each worker has its own here)."""
        return self.summary.utilization[self.scenario.device_of()[worker]]


def simulate(base: Scenario, label: str, overrides: dict[str, Any]) -> Run:
    scenario = base.with_overrides({"name": label, **overrides})
    trace = simulator.simulate(scenario)
    return Run(label, scenario, trace, summarize(trace))


def simulate_all(batches: int) -> dict[str, Run]:
    """Every timeline the pictures use, by key."""
    base = scenario_from_toml(BASE_TOML.format(batches=batches, warmup=batches // 4), origin="<teaching>")
    specs = {
        "sequential": ("sequential", {"method": "sequential"}),
        "bu": ("async-BU 1F:2B", {"method": "async-bu"}),
        "lu": ("async-LU 1F:2B", {}),
        "1f1b": ("async-LU 1F:1B", {"workers.backward": 1}),
        "1f3b": ("async-LU 1F:3B", {"workers.backward": 3}),
        "handoff": (f"hand-off {HANDOFF_S} s", {"delays.handoff_s": HANDOFF_S}),
        "straggler": ("straggler", {"delays.straggler": [STRAGGLER]}),
        "jitter": (f"jitter cv {JITTER_CV}", {"delays.jitter_cv": JITTER_CV}),
    }
    return {key: simulate(base, label, overrides) for key, (label, overrides) in specs.items()}


def method_captions(runs: dict[str, Run]) -> dict[str, str]:
    seq, bu, lu = runs["sequential"], runs["bu"], runs["lu"]
    return {
        "sequential": f"sequential: one worker does F then B, a batch every F + B = "
        f"{1 / seq.throughput:.2f} s ({seq.throughput:.3f} batches/s); every batch reads the latest "
        f"parameters (staleness {seq.staleness:.0f}).",
        "bu": f"async-BU 1F:2B: the forward never waits and two backward workers take turns: a batch every "
        f"{1 / bu.throughput:.2f} s = max(F, B/2), {bu.throughput / seq.throughput:.2f}x sequential; all "
        f"layers update at the end of a backward, mean staleness {bu.staleness:.2f} versions.",
        "lu": f"async-LU 1F:2B: the same timeline, but each layer's update (tick) lands as soon as its "
        f"gradient exists: mean staleness {lu.staleness:.2f} instead of BU's {bu.staleness:.2f}, throughput "
        f"the same ({lu.throughput:.3f} batches/s).",
    }


def ratio_captions(runs: dict[str, Run]) -> dict[str, str]:
    one, two, three = runs["1f1b"], runs["lu"], runs["1f3b"]
    q = one.scenario.workers.max_in_flight
    return {
        "1f1b": f"1F:1B: the forward waits for the single backward worker once {q} batches are in flight; "
        f"throughput is B-bound at 1/B = {one.throughput:.3f} batches/s and the forward worker is busy "
        f"{one.busy('forward:0'):.0%} of the time; staleness climbs to {one.staleness:.2f}.",
        "1f2b": f"1F:2B: k = beta = 2, forward and backward balanced: forward busy "
        f"{two.busy('forward:0'):.0%}, backward {two.busy('backward:0'):.0%} ({two.throughput:.3f} "
        "batches/s).",
        "1f3b": f"1F:3B: a third backward worker adds nothing once k > beta: the forward bounds throughput "
        f"at 1/F = {three.throughput:.3f} batches/s; each backward worker is busy "
        f"{three.busy('backward:0'):.0%}.",
    }


def delay_captions(runs: dict[str, Run]) -> dict[str, str]:
    lu, handoff, straggler, jitter = runs["lu"], runs["handoff"], runs["straggler"], runs["jitter"]
    model, q = lu.scenario.model, lu.scenario.workers.max_in_flight
    latency_s = model.forward_s + HANDOFF_S + model.backward_s
    return {
        "handoff": f"hand-off d = {HANDOFF_S} s: throughput unchanged ({handoff.throughput:.3f} batches/s) "
        f"because Q = {q} batches in flight cover F + d + B = {latency_s:.1f} s of latency; the backward "
        f"starts later, so staleness rises from {lu.staleness:.2f} to {handoff.staleness:.2f}.",
        "straggler": f"straggler ({STRAGGLER['worker']} sleeps {STRAGGLER['extra_s']} s before every "
        f"{STRAGGLER['every']}rd batch it handles): 1F:2B has no slack at k = beta, so throughput falls "
        f"{1 - straggler.throughput / lu.throughput:.0%} to {straggler.throughput:.3f} batches/s.",
        "jitter": f"jitter (cv {JITTER_CV}): the mean op time is unchanged, yet throughput falls "
        f"{1 - jitter.throughput / lu.throughput:.0%} to {jitter.throughput:.3f} batches/s: whoever waits "
        "cannot bank the time someone else saved.",
    }


def captions(runs: dict[str, Run]) -> dict[str, str]:
    """One sentence per timeline: what to notice, with the numbers from the simulation."""
    return {**method_captions(runs), **ratio_captions(runs), **delay_captions(runs)}


PICTURES = {
    "teaching_methods.png": ("sequential", "bu", "lu"),
    "teaching_ratios.png": ("1f1b", "1f2b", "1f3b"),
    "teaching_delays.png": ("handoff", "straggler", "jitter"),
}


def stack_images(parts: list[Path], path: Path) -> Path:
    """Stack PNGs vertically (narrower ones padded white on the right) into one PNG."""
    import numpy as np
    from matplotlib.image import imread, imsave

    images = [imread(part) for part in parts]
    width = max(image.shape[1] for image in images)
    padded = [np.pad(im, ((0, 0), (0, width - im.shape[1]), (0, 0)), constant_values=1.0) for im in images]
    imsave(path, np.concatenate(padded, axis=0))
    return path


def title(run: Run, batches: int) -> str:
    return (
        f"{run.label}: {run.throughput:.3f} batches/s, mean staleness {run.staleness:.2f} "
        f"(first {batches} batches)"
    )


def draw(runs: dict[str, Run], out: Path) -> list[Path]:
    """The three stacked Gantt pictures and the staleness plot."""
    runs = {**runs, "1f2b": runs["lu"]}
    titles = {key: title(run, GANTT_BATCHES.get(key, DEFAULT_GANTT_BATCHES)) for key, run in runs.items()}
    written = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, keys in PICTURES.items():
            parts = [
                gantt(
                    runs[key].trace,
                    Path(scratch) / f"{key}.png",
                    GANTT_BATCHES.get(key, DEFAULT_GANTT_BATCHES),
                    titles[key],
                )
                for key in keys
            ]
            written.append(stack_images(parts, out / name))
    lines = {
        "async-LU 1F:2B": runs["lu"].summary,
        "async-BU 1F:2B": runs["bu"].summary,
        f"async-LU 1F:2B, {runs['handoff'].label}": runs["handoff"].summary,
    }
    path = out / "teaching_staleness.png"
    written.append(staleness_plot(lines, path, title="per-layer staleness, LU vs BU (1F:2B, beta = 2)"))
    return written


def staleness_caption(runs: dict[str, Run]) -> str:
    lu, bu, handoff = (
        [round(x, 2) for x in runs[key].summary.staleness.per_layer_mean] for key in ("lu", "bu", "handoff")
    )
    return (
        f"staleness per layer (input first): LU {lu} vs BU {bu}: BU's is the same for every layer, LU's "
        f"falls towards the output layer, whose update comes first; the hand-off delay raises LU's to "
        f"{handoff}."
    )


def main(argv: list[str] | None = None) -> dict[str, Run]:
    """Simulate, draw, print a caption per picture; returns the simulated runs by key."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("teaching"), help="folder for the pictures")
    parser.add_argument("--small", action="store_true", help="fewer batches (what the tests run)")
    args = parser.parse_args(argv)
    runs = simulate_all(60 if args.small else 400)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = draw(runs, args.out)
    text = captions(runs)
    text["staleness"] = staleness_caption(runs)
    for path, keys in zip(paths, [*PICTURES.values(), ("staleness",)], strict=True):
        print(f"{path}:")
        for key in keys:
            print(f"  - {text[key]}")
    return runs


if __name__ == "__main__":
    main()
