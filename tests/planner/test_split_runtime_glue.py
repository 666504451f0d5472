"""split-inference emit/run glue: plan names map onto the exported graph for every cut, and a real plan emits
an artifact whose configurations run through the runtime."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from codegen.split_inference import split_graph
from core.errors import OutputPathError, PlannerError
from planner.api import emit_artifact, plan_from_argv, run_artifact
from planner.families.split_inference.artifact import EmitOptions, _rep_map, build_artifact, edge_set
from planner.families.split_inference.lowering import SplitOptions, lower_graph
from planner.registry import resolve_hardware, resolve_model
from profilers.graph import capture, profile_model
from profilers.models import build_model
from runtime.split_inference.artifact import load_artifact
from solvers.split_inference.cost import cut_tensors, graph_index

torch.set_num_threads(1)


@pytest.mark.parametrize("name", ["resnet50", "vit-b16", "bert-base"])
def test_every_plan_cut_maps_to_the_same_crossing_tensors_in_the_exported_graph(name: str) -> None:
    """For every node v of the planner's folded graph, the cut S = closure(v) sends V_p(S) in the plan;
    the glue's edge set for those names makes codegen send exactly the same tensors (views included)."""
    spec = resolve_model(name)
    prof = profile_model(spec, tiny=True)
    edge, cloud = resolve_hardware("raspberry_pi5_8gb"), resolve_hardware("a100_80gb")
    problem, _ = lower_graph(prof, spec, edge, cloud, SplitOptions())
    adj = graph_index(problem)
    built = build_model(spec, tiny=True)
    cap = capture(built)
    rep = _rep_map(cap)
    gm = cap.program.module()
    with torch.no_grad():
        ref = [t for t in torch.utils._pytree.tree_leaves(gm(*built.args)) if isinstance(t, torch.Tensor)]
    checked = 0
    # 10 cuts spread over the graph (each split costs a graph copy and a split_module pass), the last included
    step = max(1, (problem.num_nodes - 1) // 10)
    for v in sorted(set(range(0, problem.num_nodes - 1, step)) | {problem.num_nodes - 2}):
        if v == problem.output_node:
            continue
        mask = np.zeros(problem.num_nodes, dtype=bool)
        todo = [v]
        while todo:
            u = todo.pop()
            if not mask[u]:
                mask[u] = True
                todo.extend(adj.pred[u])
        mask |= problem.is_input
        sent = [problem.node_names[u] for u in cut_tensors(problem, mask, adj)]
        g = torch.fx.GraphModule(gm, copy.deepcopy(gm.graph))
        halves = split_graph(g, edge_set(g, sent), {}, output_on_edge=not sent,
                             recompute=lambda n: rep.get(n.name) != n.name)
        # the very tensors the plan names cross (views of them are recomputed in the cloud), so the bytes
        # on the wire are the plan's
        assert {w.name for w in halves.wire} == set(sent), problem.node_names[v]
        with torch.no_grad():
            assert all(torch.equal(a, b) for a, b in zip(halves.run(*built.args), ref))
        checked += 1
    assert checked >= 10


@pytest.fixture(scope="module")
def digits_plan():
    return plan_from_argv(["digits-cnn", "--hardware", "raspberry_pi5_8gb", "--cloud", "a100_80gb",
                           "--link", "200kbps..50mbps", "--table-levels", "4"]).plan


def test_a_digits_plan_emits_every_configuration_and_runs_them(digits_plan, tmp_path: Path) -> None:
    out = emit_artifact(digits_plan, tmp_path / "build", ["--requests", "8"])
    art = load_artifact(out)
    configs = art.config["configs"]
    assert set(configs) == {"plan", *digits_plan.baselines}
    # every configuration's cut is the plan's
    for name, c in configs.items():
        part = art.partition(c["partition"])
        want = digits_plan.decisions["cut_tensors"] if name == "plan" else digits_plan.baselines[name].decisions["cut_tensors"]
        assert part.info["cut_tensors"] == [r["name"] for r in want]
    assert len(art.config["plan_table"]) == 4
    assert art.config["requests"]["count"] == 359 and art.config["cache"]["partitions"]
    # the plan (all on the edge here) and the all-cloud baseline with the semantic cache, through `planner run`
    rec = json.loads(run_artifact(out, ["--requests", "20", "--no-emulate"]).receipt_json)
    assert rec["totals"]["requests"] == 20 and rec["totals"]["accuracy"] >= 0.9
    report = run_artifact(out, ["--baseline", "all_cloud", "--requests", "20", "--no-emulate", "--cache", "on"])
    rec = json.loads(report.receipt_json)
    assert rec["totals"]["answered_by"]["cloud"] + rec["totals"]["answered_by"]["cache"] == 20
    assert rec["rows"][0]["bytes_per_request_predicted"] == 64.0 and rec["rows"][0]["payload_bytes"] == 64 + 8
    assert report.views
    # emit replaces its own artifact but nothing else; --semantic-cache skip leaves the cache out (and is faster)
    emit_artifact(digits_plan, out, ["--requests", "8", "--semantic-cache", "skip"])
    art = load_artifact(out)
    assert art.config["cache"] == {"enabled": False} and not (out / "cache").exists()
    assert set(art.config["configs"]) == {"plan", *digits_plan.baselines}
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "x.txt").write_text("x")
    with pytest.raises(OutputPathError):
        emit_artifact(digits_plan, tmp_path / "mine")
    with pytest.raises(PlannerError, match="--connect"):
        run_artifact(out, ["--role", "edge"])


def test_table_rows_get_predictions_from_the_plans_cost_model(digits_plan) -> None:
    parts, runtime, _ = build_artifact(digits_plan, EmitOptions(requests=4))
    for row, planned in zip(runtime["plan_table"], digits_plan.decisions["plan_table"]):
        assert row["predicted"]["period_ms"] == pytest.approx(planned["period_ms"], rel=1e-6)
        assert row["predicted"]["latency_ms"] == pytest.approx(planned["latency_ms"], rel=1e-6)
