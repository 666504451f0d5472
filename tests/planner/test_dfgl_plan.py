"""dfgl plans: byte-identical for identical inputs; every round's topology symmetric and connected; a plan
edited to a disconnected round is refused by the commands that read it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import planner.families.dfgl.graph_input as graph_input
from core.p2p_topology import is_connected
from planner.cli import main
from tests.dfgl_graph import tiny_split


@pytest.fixture()
def tiny_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graph_input, "load_graph", lambda spec, workers, seed: tiny_split(workers, seed=seed))


def _plan(out: Path) -> bytes:
    assert main(["plan", "gcn", "--workers", "gen:5", "--graph", "tiny", "--rounds", "4", "--episodes", "2",
                 "-o", str(out)]) == 0
    return out.read_bytes()


def test_plan_is_deterministic_and_every_round_valid(tiny_graph: None, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _plan(tmp_path / "a.json"), _plan(tmp_path / "b.json")
    assert a == b
    plan = json.loads(a)
    ids = [w["id"] for w in plan["decisions"]["workers"]]
    import numpy as np

    for r in plan["decisions"]["schedule"]:
        adj = np.zeros((len(ids), len(ids)), dtype=np.int8)
        for x, y in r["links"]:
            adj[ids.index(x), ids.index(y)] = adj[ids.index(y), ids.index(x)] = 1
        assert is_connected(adj)
    assert plan["predicted"]["oracle_gap_max"] <= 0.10     # 5 workers: checked against the one-round oracle
    assert set(plan["baselines"]) == {"full_full", "ring", "random_regular", "full_fixed_ratio", "stacked",
                                      "duplex_rule"}
    plan["decisions"]["schedule"][1]["links"] = plan["decisions"]["schedule"][1]["links"][:1]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(plan))
    capsys.readouterr()
    assert main(["inspect", str(bad)]) == 2
    assert "round 1: topology is not connected" in capsys.readouterr().err
