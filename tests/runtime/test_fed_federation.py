"""The shared Flower launcher: per-node configs reach the right clients, round records come back, configs
stay Flower scalars. (The process-boundary run through the deployment engine is in test_fed_lora_runtime.)"""
from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import PlannerError
from runtime.fed.federation import check_scalars, node_config_arg, read_rounds, report_round, run_federation, sleep_to
from tests.runtime.fed_echo_app import APPS


def test_simulation_delivers_each_node_its_own_config(tmp_path: Path) -> None:
    nodes = [{"device-id": f"dev-{i}", "value": i + 1} for i in range(3)]
    seen: list[int] = []
    res = run_federation(APPS, {"num-rounds": 2, "tag": "t"}, nodes, mode="simulation", workdir=tmp_path,
                         on_round=lambda r: seen.append(r["round"]))
    assert [r["round"] for r in res.rounds] == [1, 2] and seen == [1, 2]
    for rnd in res.rounds:
        assert sorted(rnd["clients"]) == ["dev-0", "dev-1", "dev-2"]
        for dev, echo in rnd["clients"].items():
            # The message each client received was addressed to it (never a shared object) ...
            assert echo["for-device"] == dev
            assert echo["value"] == (int(dev[-1]) + 1) * rnd["round"]
            # ... and the run config reached every client.
            assert echo["tag"] == "t"


def test_config_checks_and_node_config_argument() -> None:
    assert node_config_arg({"device-id": "phone-7", "depth": 3, "bits": 8.0, "on": True}) == \
        'device-id="phone-7" depth=3 bits=8.0 on=true'
    with pytest.raises(PlannerError, match="not a scalar"):
        check_scalars({"x": [1, 2]}, "run config")
    with pytest.raises(PlannerError, match="cannot be carried"):
        check_scalars({"a b": 1}, "node config 0")
    with pytest.raises(PlannerError, match="quote"):
        check_scalars({"a": 'x"y'}, "node config 0")


def test_rounds_file_round_trip_and_emulated_sleep(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    cfg = {"rounds-path": str(path)}
    report_round(cfg, {"round": 1, "t": 0.5})
    report_round(cfg, {"round": 2})
    with open(path, "a") as fh:
        fh.write('{"round": 3')   # a record being written is not read half-way
    assert read_rounds(path) == [{"round": 1, "t": 0.5}, {"round": 2}]
    report_round({}, {"round": 9})  # no rounds file configured: nothing written, no error
    assert sleep_to(0.0, 1.0) == 0.0
    assert 0.01 <= sleep_to(0.03, 0.01) <= 0.03


def test_unknown_mode_and_empty_federation(tmp_path: Path) -> None:
    with pytest.raises(PlannerError, match="mode"):
        run_federation(APPS, {}, [{"device-id": "a"}], mode="cloud", workdir=tmp_path)
    with pytest.raises(PlannerError, match="at least one client"):
        run_federation(APPS, {}, [], workdir=tmp_path)


def test_a_local_deployment_larger_than_the_machine_is_refused_before_any_process() -> None:
    from runtime.fed.federation import MAX_LOCAL_SUPERNODES, check_local_deployment

    check_local_deployment(MAX_LOCAL_SUPERNODES)
    with pytest.raises(PlannerError, match=f"50 clients; at most {MAX_LOCAL_SUPERNODES} run locally"):
        check_local_deployment(50)
