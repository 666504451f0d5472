"""fed-graph through the CLI: plans are byte-identical for identical inputs and valid; inspect shows the clusters,
U, the arms and the bytes table; the recommendation is the configuration with the fewest predicted bytes to the
target (never one its baselines beat); emit + run (Flower apps in-process) give a receipt whose bytes per round
match the cost model and whose uploaded signatures match the plan's."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.cli import main

GRAPH = "csbm-clients:nodes=160,groups=2,clients=4,degree=8,features=6"


def _plan(out: Path, *extra: str) -> bytes:
    assert main(["plan", "gcn", "--scenario", "fed-graph", "--clients", "gen:4", "--graph", GRAPH, "--rounds", "3",
                 "--clusters", "2", *extra, "-o", str(out)]) == 0
    return out.read_bytes()


def test_plan_inspect_emit_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _plan(tmp_path / "a.json"), _plan(tmp_path / "b.json")
    assert a == b
    plan = json.loads(a)
    d, p = plan["decisions"], plan["predicted"]
    assert sorted(d["clusters"]) == d["clients"] and set(d["clusters"].values()) == {0, 1}
    assert d["common"] and set(d["common"]) <= set(d["clients"])
    assert set(d["configs"]) == {"fedgcf", "fedgcf_global", "fedavg", "beta_1", "beta_0", "beta_0.5", "gcfl",
                                 "oracle"}
    # the plan never recommends what a baseline beats on its own objective
    for name, base in plan["baselines"].items():
        if name != "oracle" and base["predicted"]["bytes_to_target"] is not None:
            assert p["bytes_to_target"] is not None and p["bytes_to_target"] <= base["predicted"]["bytes_to_target"]
    assert p["bytes_per_round"] == 2 * 4 * p["model_bytes"]
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "a.json")]) == 0
    text = capsys.readouterr().out
    assert "structural clusters (2)" in text and "β arms" in text and "B to target" in text
    assert main(["emit", str(tmp_path / "a.json"), "-o", str(tmp_path / "art")]) == 0
    assert (tmp_path / "art" / "jobs" / "fedgcf.json").exists() or d["recommended"] == "fedgcf"
    which = ["--baseline", "beta_0.5"] if d["recommended"] != "beta_0.5" else []
    assert main(["run", str(tmp_path / "art"), *which, "--in-process", "--json", str(tmp_path / "r.json")]) == 0
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["config"] == "beta_0.5" and len(rec["rounds"]) == 4
    assert rec["measured_bytes_per_round"] == p["bytes_per_round"]
    assert rec["signature_max_abs_diff_vs_plan"] < 1e-5
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in rec["rounds"])


def test_edited_plan_with_beta_outside_range_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = json.loads(_plan(tmp_path / "a.json"))
    plan["decisions"]["configs"]["beta_0.5"]["beta"] = 1.5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(plan))
    capsys.readouterr()
    assert main(["inspect", str(bad)]) == 2
    assert "beta outside [0, 1]" in capsys.readouterr().err


def test_deploy_beyond_the_launchers_limit_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """13 clients: `--deploy` (one SuperNode per client on this machine) says so in one line, exit 2."""
    out = tmp_path / "p.json"
    assert main(["plan", "gcn", "--scenario", "fed-graph", "--clients", "gen:13", "--graph",
                 "csbm-clients:nodes=390,groups=2,clients=13,degree=6,features=4", "--rounds", "2", "--clusters", "2",
                 "-o", str(out)]) == 0
    assert main(["emit", str(out), "-o", str(tmp_path / "art")]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "art"), "--deploy"]) == 2
    err = capsys.readouterr().err
    assert "13 clients exceed the launcher's limit of 12" in err and len(err.strip().splitlines()) == 1
