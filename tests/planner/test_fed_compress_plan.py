"""fed-compress end to end through the planner: the output contract, determinism, the plan validator,
inspect width, emit, and one-line errors for bad input."""
from __future__ import annotations

import copy
import dataclasses
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from core.errors import PeerError, PlannerError
from planner.api import plan_from_argv
from planner.pipeline import plan_validator
from planner.serde import dumps
from tests.planner.cli_runner import assert_one_line_error, run_cli

ARGS = ["digits-cnn", "--clients", "gen:12:3", "--scenario", "fed-compress", "--rounds", "6", "--participation", "50%"]


@pytest.fixture(scope="module")
def ctx():
    return plan_from_argv(ARGS)


def test_output_contract(ctx) -> None:
    plan = ctx.plan
    d, p = plan.decisions, plan.predicted
    assert plan.family == "fed-compress" and plan_validator(plan) == []
    assert d["clients"], "every client selected at least once has its decisions"
    for cid, c in d["clients"].items():
        assert 0 < c["download_ratio"] <= 1 and 0 < c["upload_ratio"] <= 1
        assert isinstance(c["batch_size"], int) and 8 <= c["batch_size"] <= 64
    assert p["traffic_bytes_per_round"] > 0 and p["round_time_s"] > 0
    assert set(plan.baselines) == {"no_compression", "uniform_mean", "uniform_traffic", "bandwidth_proportional",
                                   "topk_ef", "fedpaq"}
    for name, b in plan.baselines.items():
        assert b.predicted["traffic_bytes_per_round"] > 0 and b.predicted["round_time_s"] > 0, name
        for c in b.decisions["clients"].values():
            assert 0 < c["download_ratio"] <= 1 and 0 < c["upload_ratio"] <= 1 and c["batch_size"] >= 8
    none = plan.baselines["no_compression"].predicted["traffic_bytes_per_round"]
    assert p["traffic_bytes_per_round"] < none
    # rule mode: round 1 sends the full model to everyone (nobody has synced), later rounds compress stale less
    first = d["rounds"][0]["clients"]
    assert all(c["download_ratio"] == 1.0 for c in first.values())
    assert "batch_gap_to_exact" in p and p["batch_gap_to_exact"] <= 0.10


def test_same_inputs_same_plan_bytes(ctx) -> None:
    again = plan_from_argv(ARGS)
    assert dumps(again.plan) == dumps(ctx.plan)


def test_validator_catches_tampered_plans(ctx) -> None:
    d = copy.deepcopy(dict(ctx.plan.decisions))
    r = d["rounds"][2]
    cid = sorted(r["clients"])[0]
    r["clients"][cid]["download_ratio"] = 1.5
    bad = dataclasses.replace(ctx.plan, decisions=d)
    assert any("outside (0, 1]" in e for e in plan_validator(bad))
    d = copy.deepcopy(dict(ctx.plan.decisions))
    d["rounds"][1]["clients"][sorted(d["rounds"][1]["clients"])[0]]["predicted"]["bytes_up"] += 1
    assert any("predicted bytes" in e for e in plan_validator(dataclasses.replace(ctx.plan, decisions=d)))
    d = copy.deepcopy(dict(ctx.plan.decisions))
    c = d["rounds"][0]["clients"][sorted(d["rounds"][0]["clients"])[0]]
    c["batch_size"] = 64
    mem = {x["id"]: x for x in d["population"]}
    mem[sorted(d["rounds"][0]["clients"])[0]]["memory_bytes"] = 1000
    assert any("training memory" in e for e in plan_validator(dataclasses.replace(ctx.plan, decisions=d)))
    # a recommendation that its own predictions beat
    d = copy.deepcopy(dict(ctx.plan.decisions))
    d["recommended"] = "no_compression"
    assert any("predict less traffic to target" in e for e in plan_validator(dataclasses.replace(ctx.plan, decisions=d)))


def test_inspect_fits_80_columns(ctx) -> None:
    from planner.inspect_view import render
    from planner.registry import family

    buf = io.StringIO()
    Console(file=buf, width=80, color_system=None).print(render(ctx.plan, family("fed-compress")))
    lines = buf.getvalue().splitlines()
    assert max(len(l.rstrip()) for l in lines) <= 80
    assert any("schedule" in l for l in lines) and any("uniform_mean" in l for l in lines)


def test_emit_writes_model_and_one_job_per_configuration(ctx, tmp_path: Path) -> None:
    from planner.api import emit_artifact

    out = emit_artifact(ctx.plan, tmp_path / "build")
    jobs = sorted(p.stem for p in (out / "jobs").glob("*.json"))
    assert jobs == sorted(["plan", *ctx.plan.baselines])
    job = json.loads((out / "jobs" / "plan.json").read_text())
    r = job["rounds"][1]
    cid = sorted(r["clients"])[0]
    want = ctx.plan.decisions["rounds"][1]["clients"][cid]
    assert r["clients"][cid]["keep_down"] == want["download_ratio"] and r["clients"][cid]["batch"] == want["batch_size"]
    assert (out / "model" / "digits-cnn.pt2").stat().st_size > 4 * 38282
    # `planner run` without --baseline runs the configuration the plan recommends
    from planner.families.fed_compress.artifact import recommended_config

    assert recommended_config(out) == ctx.plan.decisions["recommended"]
    assert (out / "jobs" / f"{recommended_config(out)}.json").is_file()


def test_a_ratio_outside_the_unit_interval_exits_2_with_one_line() -> None:
    proc = run_cli("plan", *ARGS, "--min-download-ratio", "1.5", timeout=120)
    assert_one_line_error(proc, "--min-download-ratio")


@pytest.mark.parametrize("argv, fragment", [
    ([*ARGS, "--max-upload-ratio", "0"], "--max-upload-ratio"),
    ([*ARGS, "--min-upload-ratio", "0.95"], "--min-upload-ratio"),
    ([*ARGS, "--hardware", "a100_80gb"], "--hardware"),
    (["digits-cnn", "--clients", "gen:1500", "--scenario", "fed-compress"], "no data"),
    (["resnet50", "--clients", "gen:4", "--scenario", "fed-compress"], "digits"),
])
def test_bad_input_is_a_one_line_planner_error(argv: list[str], fragment: str) -> None:
    with pytest.raises(PlannerError) as err:
        plan_from_argv(argv)
    assert fragment in err.value.one_line() and "\n" not in err.value.one_line()


def test_zero_bandwidth_is_a_one_line_error(tmp_path: Path) -> None:
    pop = tmp_path / "clients.yaml"
    pop.write_text("devices:\n  - {kind: phone_midrange_8gb, count: 3, link: 0mbps}\n")
    with pytest.raises(PlannerError) as err:
        plan_from_argv(["digits-cnn", "--clients", str(pop), "--scenario", "fed-compress"])
    assert "link" in err.value.one_line() and "positive" in err.value.one_line()


def test_unreachable_server_is_a_peer_error() -> None:
    """The launcher's wait for the SuperLink: nothing listens on the port -> PeerError (one line at the CLI)."""
    from runtime.fed.federation import _wait_http, free_port

    port = free_port()
    with pytest.raises(PeerError, match="did not answer") as err:
        _wait_http(f"http://127.0.0.1:{port}/health", lambda: None, 1.0, "the SuperLink")
    assert "\n" not in err.value.one_line()


def test_calibrated_plan_scales_this_cpus_step_time_to_each_device(tmp_path: Path) -> None:
    from planner.calibration import calibration_text
    from planner.registry import resolve_model

    cal = tmp_path / "cal.yaml"
    measured = {"iter_fixed_s": 1e-3, "iter_per_sample_s": 5e-5, "cpu_flops_per_s": 1e11}
    cal.write_text(calibration_text("fed-compress", resolve_model("digits-cnn"), False, measured))
    ctx = plan_from_argv(["digits-cnn", "--clients", "gen:6:1", "--scenario", "fed-compress", "--rounds", "3",
                          "--calibration", str(cal)])
    assert ctx.plan.inputs["step_times"] == "calibrated on this CPU" and plan_validator(ctx.plan) == []
    for c in ctx.plan.decisions["population"]:
        scale = 1e11 / c["flops_per_s"]
        assert c["iter_fixed_s"] == pytest.approx(1e-3 * scale, rel=1e-5)
        assert c["iter_per_sample_s"] == pytest.approx(5e-5 * scale, rel=1e-5)
    cal.write_text(calibration_text("split-inference", resolve_model("digits-cnn"), False, measured))
    with pytest.raises(PlannerError, match="split-inference"):
        plan_from_argv(["digits-cnn", "--clients", "gen:6:1", "--scenario", "fed-compress", "--calibration", str(cal)])


# ---------------------------------------------------------------- the recommendation (convergence term)
def _record(tmp_path: Path, rounds: dict, **bed) -> Path:
    from planner.families.fed_compress.convergence_record import KIND

    base = {"clients": 12, "participation": 0.5, "alpha": 0.3, "local_iters": 20, "lr": 0.1, "min_download_ratio": 0.5,
            "min_upload_ratio": 0.5, "max_upload_ratio": 0.9, "ratio_step": 0.05}
    path = tmp_path / "conv.json"
    path.write_text(json.dumps({"kind": KIND, "target_accuracy": 0.8, "seeds": [100, 101],
                                "test_bed": {**base, **bed}, "rounds_to_target": rounds}))
    return path


def test_plan_recommends_the_least_predicted_traffic_to_target(ctx) -> None:
    """Without a record every configuration gets the schedule's rounds, so the recommendation is the least total
    traffic among feasible configurations; the plan and each baseline carry their predicted traffic to target."""
    plan = ctx.plan
    rows = {"plan": plan.predicted, **{n: b.predicted for n, b in plan.baselines.items()}}
    for name, p in rows.items():
        assert p["traffic_to_target_bytes"] == pytest.approx(p["total_traffic_bytes"], abs=1.0), name
    ok = {n: p["traffic_to_target_bytes"] for n, p in rows.items() if p.get("feasible", True)}
    best = plan.decisions["recommended"]
    assert ok[best] == min(ok.values())
    assert plan.predicted["recommended"] == best
    if best != "plan":
        assert any(n.startswith(f"recommended: baseline {best}, not Caesar's rule") for n in plan.notes)


def test_recommendation_follows_the_measured_rounds_to_target(ctx) -> None:
    """A baseline predicted to need many more rounds loses to the rule; one that needs the same rounds with fewer
    bytes per round wins; an unmeasured configuration is never recommended."""
    from planner.families.fed_compress.phases import recommend

    st = ctx.state
    traffic = {"plan": st.solution.metrics.traffic_bytes, **{n: s.metrics.traffic_bytes
                                                            for n, (_, s) in st.baselines.items()}}
    feasible = {n: True for n in traffic}
    rounds = {n: 100.0 for n in traffic}
    rounds["plan"] = 5.0
    choice, source = recommend(6, traffic, feasible, {"rounds_to_target": rounds, "seeds": [1], "target_accuracy": 0.8,
                                                      "source": "x"})
    assert choice.recommended == "plan" and "measured on seeds 1" in source
    cheapest = min(traffic, key=lambda n: traffic[n].sum())
    rounds = {n: 6.0 for n in traffic}
    choice, _ = recommend(6, traffic, feasible, {"rounds_to_target": rounds, "seeds": [1], "target_accuracy": 0.8,
                                                 "source": "x"})
    assert choice.recommended == cheapest
    del rounds[cheapest]
    choice, source = recommend(6, traffic, feasible, {"rounds_to_target": rounds, "seeds": [1], "target_accuracy": 0.8,
                                                      "source": "x"})
    assert choice.recommended != cheapest and f"not recommended: {cheapest}" in source


def test_traffic_to_target_sums_the_first_rounds() -> None:
    import numpy as np

    from solvers.fed_compress.convergence import traffic_to_target

    t = np.array([10.0, 8.0, 6.0, 4.0])
    assert traffic_to_target(t, 2) == 18.0
    assert traffic_to_target(t, 2.5) == 21.0
    assert traffic_to_target(t, 6) == 28.0 + 2 * t.mean()       # beyond the schedule: its last rounds' mean
    assert traffic_to_target(t, float("inf")) == float("inf")


def test_a_convergence_record_from_another_test_bed_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(PlannerError) as err:
        plan_from_argv([*ARGS, "--convergence", str(_record(tmp_path, {"plan": 5}, participation=0.05))])
    assert "participation" in err.value.one_line() and "benchmarks.fed_compress" in err.value.one_line()
    with pytest.raises(PlannerError) as err:
        plan_from_argv([*ARGS, "--convergence", str(_record(tmp_path, {"plan": 5}, clients=100))])
    assert "100 clients" in err.value.one_line()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PlannerError) as err:
        plan_from_argv([*ARGS, "--convergence", str(bad)])
    assert "not readable" in err.value.one_line()
