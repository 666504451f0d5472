"""fed-compress on a real Flower simulation (Ray): 4 clients, 2 rounds, one client dropping out mid-round."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codegen.fed_compress import export_model
from core.errors import PlannerError
from profilers.digits_cnn import DigitsCNN
from runtime.fed.compress_run import run_fed_compress
from solvers.fed_compress.cost import download_bytes, upload_bytes

NUMELS = (144, 16, 4608, 32, 32768, 64, 640, 10)


def _job() -> dict:
    clients = [{"id": f"dev-{i}", "index": i, "samples": 1, "uplink_bytes_per_s": 1e6, "downlink_bytes_per_s": 5e6,
                "latency_s": 0.05, "flops_per_s": 1e11, "compute_scale": 0.5 + i} for i in range(4)]
    plan = {1: {"dev-0": (1.0, 0.9, 16), "dev-1": (1.0, 0.5, 32), "dev-2": (1.0, 0.7, 8)},
            2: {"dev-0": (0.55, 0.9, 16), "dev-2": (0.75, 0.5, 24), "dev-3": (1.0, 0.7, 8)}}
    rounds = []
    for t, clients_t in plan.items():
        rounds.append({"round": t, "clients": {
            cid: {"keep_down": kd, "keep_up": ku, "batch": b, "drop": (t == 2 and cid == "dev-2"),
                  "predicted": {"bytes_down": download_bytes(NUMELS, kd), "bytes_up": upload_bytes(NUMELS, ku),
                                "time_s": 0.2}}
            for cid, (kd, ku, b) in clients_t.items()}})
    return {"format": 1, "config": "plan", "seed": 0, "data": {"alpha": 0.3, "split_seed": 0, "num_clients": 4},
            "training": {"local_iters": 3, "lr": 0.1},
            "codec": {"up_codec": "topk", "quant_bits": 0, "error_feedback": True, "recovery": True, "min_numel": 1024},
            "clients": clients, "rounds": rounds, "emulate_wall_clock": False}


def test_flower_simulation_applies_per_client_ratios_and_survives_a_dropout(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model_path = export_model(DigitsCNN(), tmp_path / "digits-cnn.pt2", torch.zeros(2, 1, 8, 8))
    receipt = run_fed_compress(_job(), model_path, tmp_path / "run", target_accuracy=0.05)
    rounds = {r["round"]: r for r in receipt.totals["rounds"]}
    assert sorted(rounds) == [0, 1, 2] and "setup_serialised_bytes" not in rounds[0]   # nothing installed first
    assert rounds[1]["down_bytes"] == 3 * 4 * sum(NUMELS)          # first contacts: the dense model, counted
    assert rounds[2]["keep_down_min"] == 0.55 and rounds[2]["keep_down_max"] == 1.0
    assert "first download is the dense model" in receipt.totals["accounting"]
    assert rounds[1]["answered"] == 3 and rounds[1]["dropped"] == 0
    assert rounds[2]["answered"] == 2 and rounds[2]["dropped"] == 1          # the round went on without dev-2
    rows = {(r["round"], r["client"]): r for r in receipt.rows}
    dropped = rows[(2, "dev-2")]
    assert dropped["status"] == "dropped" and "emulated dropout" in dropped["error"]
    for (t, cid), row in rows.items():
        # measured payloads are exactly the cost model's bytes, both directions
        assert row["down_payload_bytes"] == row["predicted_bytes_down"]
        if row["status"] == "ok":
            assert row["up_payload_bytes"] == row["predicted_bytes_up"]
            assert row["down_serialised_bytes"] == row["down_payload_bytes"] + 128
            assert row["time_s_emulated"] > 0 and row["waiting_s_emulated"] >= 0
    # staleness as the server saw it: dev-0 synced in round 1, dev-3 never before round 2
    assert rows[(2, "dev-0")]["staleness"] == 1 and rows[(2, "dev-3")]["staleness"] == 2
    assert rows[(2, "dev-0")]["dev_recovery_estimate"] <= rows[(2, "dev-0")]["dev_sign_mean_estimate"]
    assert not [f for f in receipt.flags if "B vs predicted" in f]
    assert 0.0 <= receipt.totals["final_accuracy"] <= 1.0

    # The benchmark's in-process driver calls the same apps: the same bytes per message, the same dropout,
    # the same model up to the order Flower hands the replies to the aggregation (float sums).
    from runtime.fed.compress_inprocess import run_in_process

    mine = run_in_process(_job(), model_path, target_accuracy=0.05)
    same = {(r["round"], r["client"]): r for r in mine.rows}
    assert set(same) == set(rows)
    for key, row in rows.items():
        for field in ("down_payload_bytes", "up_payload_bytes", "status", "keep_down", "keep_up", "staleness"):
            assert same[key].get(field) == row.get(field), (key, field)
    for a, b in zip(receipt.totals["rounds"], mine.totals["rounds"]):
        assert abs(a["accuracy"] - b["accuracy"]) <= 0.01


def test_loaded_models_never_share_weights_with_the_saved_program(tmp_path: Path) -> None:
    from runtime.fed.compress_app import load_model

    torch.manual_seed(1)
    path = export_model(DigitsCNN(), tmp_path / "m.pt2", torch.zeros(2, 1, 8, 8))
    first = load_model(str(path))
    initial = {k: v.clone() for k, v in first.state_dict().items()}
    first.load_state_dict({k: torch.zeros_like(v) for k, v in initial.items()})   # a run trains its copy
    again = load_model(str(path))
    assert all(torch.equal(again.state_dict()[k], initial[k]) for k in initial)


def test_job_transforms_for_a_run() -> None:
    from runtime.fed.compress_run import check_job, truncated, with_dropouts, with_emulation

    job = _job()
    assert with_dropouts(job, 0.3, 1) == with_dropouts(job, 0.3, 1)
    drops = lambda j: [c["drop"] for r in j["rounds"] for c in r["clients"].values()]
    assert not any(drops(with_dropouts({**job, "rounds": [{**r, "clients": {k: {**c, "drop": False} for k, c in
                                                                            r["clients"].items()}}
                                                         for r in job["rounds"]]}, 0.0, 0)))
    assert all(drops(with_dropouts(job, 1.0, 0)))
    assert [r["round"] for r in truncated(job, 1)["rounds"]] == [1]
    assert with_emulation(job, 2e11)["clients"][0]["compute_scale"] == 2.0

    bad = {**job, "rounds": [{"round": 1, "clients": {"dev-0": {**job["rounds"][0]["clients"]["dev-0"], "keep_up": 1.2}}}]}
    with pytest.raises(PlannerError, match="outside"):
        check_job(bad)
    compressed_first = {**job, "rounds": [job["rounds"][1]]}     # dev-0 first seen at keep 0.55
    with pytest.raises(PlannerError, match="holds no model yet"):
        check_job(compressed_first)
