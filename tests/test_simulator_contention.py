"""Shared devices: contention (ops that overlap slow each other down) and time slicing (ops share the slots
as threads share cores instead of queueing), exactly as `simulator.resources.Device` says."""

from __future__ import annotations

import pytest
import simpy

from pdasgd.metrics import summarize
from pdasgd.scenario import ScenarioError, load_scenario, parse_scenario, save_scenario
from simulator import simulate
from simulator.resources import Device


def op_ends(
    contention: float, slots: int, starts_s: list[float], work_s: list[float], time_slice: bool = False
) -> list[float]:
    """End times of ops of `work_s` seconds (alone) started at `starts_s` on one device."""
    env = simpy.Environment()
    device = Device(env, "d", slots=slots, contention=contention, time_slice=time_slice)
    ends: list[float] = [0.0] * len(starts_s)

    def op(index: int):
        yield env.timeout(starts_s[index])
        if time_slice:
            yield device.run(work_s[index])
        else:
            slot = device.request()
            if slot is not None:
                yield slot
            yield device.run(work_s[index]) if device.shared else env.timeout(work_s[index])
            device.release()
        ends[index] = env.now

    for index in range(len(starts_s)):
        env.process(op(index))
    env.run()
    return ends


def test_two_overlapping_ops_each_run_one_plus_contention_slower() -> None:
    assert op_ends(0.5, 2, [0.0, 0.0], [1.0, 1.0]) == pytest.approx([1.5, 1.5])


def test_rates_change_when_an_op_starts_or_ends() -> None:
    # A alone 0 -> 0.5 (half done); both at rate 1/1.5: A's other half takes 0.75 (ends 1.25), B has done
    # 0.5 by then and finishes its other half alone (ends 1.75).
    assert op_ends(0.5, 2, [0.0, 0.5], [1.0, 1.0]) == pytest.approx([1.25, 1.75])


def test_contention_scales_with_the_fraction_of_other_slots_busy() -> None:
    # three slots, contention 0.6: two ops -> each slowed by 0.3; three -> by 0.6
    assert op_ends(0.6, 3, [0.0, 0.0], [1.0, 1.0]) == pytest.approx([1.3, 1.3])
    assert op_ends(0.6, 3, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]) == pytest.approx([1.6, 1.6, 1.6])


def test_one_slot_or_no_contention_changes_nothing() -> None:
    assert op_ends(0.0, 2, [0.0, 0.5], [1.0, 1.0]) == pytest.approx([1.0, 1.5])
    assert op_ends(0.9, 1, [0.0, 0.0], [1.0, 1.0]) == pytest.approx([1.0, 2.0])


def test_time_sliced_ops_share_the_slots_instead_of_queueing() -> None:
    # three 1 s ops on two slots: queued, the third waits (ends 2); time-sliced, each runs at 2/3 (ends 1.5)
    assert op_ends(0.0, 2, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 2.0])
    assert op_ends(0.0, 2, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], time_slice=True) == pytest.approx(
        [1.5, 1.5, 1.5]
    )
    # 0.5 s op ends at 0.75 (rate 2/3); the other two then run alone at full rate: 1 - 0.5 = 0.5 s more
    assert op_ends(0.0, 2, [0.0] * 3, [0.5, 1.0, 1.0], time_slice=True) == pytest.approx([0.75, 1.25, 1.25])
    # with contention 0.5 as well: two of the slots busy -> rate (2/3) / 1.5
    assert op_ends(0.5, 2, [0.0] * 3, [1.0] * 3, time_slice=True) == pytest.approx([2.25] * 3)
    # one slot, time-sliced: round-robin in the limit, two ops of 1 s both end at 2
    assert op_ends(0.0, 1, [0.0, 0.0], [1.0, 1.0], time_slice=True) == pytest.approx([2.0, 2.0])


def test_a_time_sliced_run_of_three_workers_on_two_slots_keeps_both_slots_busy() -> None:
    # async-lu 1F+2B with F = 1, B = 2 on one 2-slot device: 3 s of work per batch on 2 slots -> 1.5 s per
    # batch either way, but time-sliced no op ever waits for a slot: spans are longer, not later
    def summary(time_slice: bool) -> dict:
        return summarize(
            simulate(
                parse_scenario(
                    {
                        "method": "async-lu",
                        "model": {"layers": 2, "forward_s": 1.0, "beta": 2.0},
                        "workers": {"forward": 1, "backward": 2},
                        "device": [{"name": "cpu", "slots": 2, "time_slice": time_slice}],
                        "run": {"batches": 600, "warmup": 10},
                    }
                )
            )
        ).to_dict()

    for time_slice in (False, True):
        result = summary(time_slice)
        # steady state over 590 batches: the first and last batches of the window are not periodic
        assert result["throughput_batches_per_s"] == pytest.approx(1 / 1.5, rel=2e-3)
        assert result["utilization"]["cpu"] == pytest.approx(1.0, abs=2e-3)


def hogwild(contention: float, batches: int = 40) -> dict:
    return summarize(
        simulate(
            parse_scenario(
                {
                    "method": "hogwild",
                    "model": {"layers": 4, "forward_s": 0.01, "beta": 2.0},
                    "workers": {"per_replica": 2},
                    "device": [{"name": "cpu", "slots": 2, "contention": contention}],
                    "run": {"batches": batches, "warmup": 4},
                }
            )
        )
    ).to_dict()


def test_two_always_busy_workers_lose_exactly_the_contention() -> None:
    # hogwild workers never wait: both always run, so each batch takes (1 + c) x 0.03 s on each worker
    assert hogwild(0.0)["throughput_batches_per_s"] == pytest.approx(2 / 0.03)
    assert hogwild(0.25)["throughput_batches_per_s"] == pytest.approx(2 / (1.25 * 0.03))


def test_contention_is_a_device_field_that_round_trips_and_must_not_be_negative(tmp_path) -> None:
    data = {
        "model": {"layers": 2, "forward_s": 1.0, "beta": 1.0},
        "device": [{"name": "cpu", "slots": 2, "contention": 0.3}],
    }
    scenario = parse_scenario(data)
    assert scenario.devices[0].contention == 0.3
    save_scenario(scenario, tmp_path / "s.toml")
    assert load_scenario(tmp_path / "s.toml").devices[0].contention == 0.3
    data["device"][0]["contention"] = -0.1
    with pytest.raises(ScenarioError, match=r"device\[0\]\.contention"):
        parse_scenario(data)
    data["device"][0] = {"name": "cpu", "slots": 2, "time_slice": True}
    assert parse_scenario(data).devices[0].time_slice is True
    save_scenario(parse_scenario(data), tmp_path / "t.toml")
    assert load_scenario(tmp_path / "t.toml").devices[0].time_slice is True
    data["device"][0]["time_slice"] = 1
    with pytest.raises(ScenarioError, match=r"device\[0\]\.time_slice: must be true or false"):
        parse_scenario(data)
