"""Split codegen: edge ∘ cloud computes what the exported model computes (bitwise at native bits, exactly the
planner's quantised evaluation at lower bits), split_module's pitfalls, and the emitted files round trip."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from codegen.split_inference import (EmittedPartition, functionalise_inplace, half_source, split_graph, write_artifact)
from core.errors import ArtifactError, OutputPathError
from core.output_paths import OutputDir
from kernels.uniform_quant import QuantizedTensor, payload_bytes
from core.artifacts import sha256_file
from runtime.split_inference.artifact import check_source, load_artifact

torch.set_num_threads(1)


def export(module: nn.Module, *args: torch.Tensor) -> torch.fx.GraphModule:
    return torch.export.export(module.eval(), args, strict=False).module()


def ancestors(gm: torch.fx.GraphModule, names: set[str]) -> set[str]:
    nodes = {n.name: n for n in gm.graph.nodes}
    out: set[str] = set()
    todo = [nodes[n] for n in names]
    while todo:
        n = todo.pop()
        if n.name not in out:
            out.add(n.name)
            todo.extend(n.all_input_nodes)
    return out


def flat(out: object) -> list[torch.Tensor]:
    import torch.utils._pytree as pytree

    return [x for x in pytree.tree_leaves(out) if isinstance(x, torch.Tensor)]


# ------------------------------------------------------------------ catalog models
CATALOG = ["digits-cnn", "resnet50", "mobilenetv2", "vit-b16", "bert-base", "minilm", "gpt2"]


@pytest.mark.parametrize("name", CATALOG)
def test_catalog_model_split_mid_graph_is_bitwise_exact_at_native_bits(name: str) -> None:
    from planner.registry import resolve_model
    from profilers.graph import capture
    from profilers.models import build_model

    built = build_model(resolve_model(name), tiny=True)
    gm = capture(built).program.module()
    with torch.no_grad():
        ref = flat(gm(*built.args, **built.kwargs))
    compute = [n for n in gm.graph.nodes if n.op == "call_function"]
    edge = ancestors(gm, {compute[len(compute) // 2].name})
    halves = split_graph(gm, lambda n: n.name in edge, {})
    assert halves.cloud is not None and halves.wire
    with torch.no_grad():
        out = halves.run(*[a for a in built.args if isinstance(a, torch.Tensor)])
    assert len(out) == len(ref)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    # the emitted code of both halves passes the runtime's allow-list
    check_source(half_source(halves.edge), "edge.py")
    check_source(half_source(halves.cloud), "cloud.py")


def test_quantised_split_equals_the_planners_evaluation_and_its_accuracy() -> None:
    """digits-cnn on the 359 held-out digits: the split at b bits reproduces the evaluator the plan's
    ΔAcc comes from, bit for bit, so the accuracy through the split equals fp32 accuracy minus the
    planner's predicted drop (which, like the plan, clips an accuracy gain to a drop of 0)."""
    from planner.registry import resolve_model
    from profilers.digits_cnn import SEED, load_digits_data
    from profilers.graph import capture
    from profilers.models import build_model
    from profilers.quant_sensitivity import sensitivity_evaluator

    spec = resolve_model("digits-cnn")
    built = build_model(spec)
    data = load_digits_data(SEED)
    ev = sensitivity_evaluator(spec)
    for cut, bits in (("max_pool2d", 2), ("relu_2", 2), ("relu", 3)):
        gm = capture(built).program.module()
        edge = ancestors(gm, {cut})
        halves = split_graph(gm, lambda n: n.name in edge, {cut: bits})
        assert [w.bits for w in halves.wire] == [bits]
        with torch.no_grad():
            logits = torch.cat([halves.run(data.x_test[i:i + 1])[0] for i in range(len(data.x_test))])
        expected = ev.outputs({cut: bits})[0]
        assert torch.allclose(logits, expected, atol=1e-5, rtol=0)
        acc = float((logits.argmax(-1) == data.y_test).float().mean())
        predicted_drop = ev.drop({cut: bits})       # the plan's ΔAcc: paired drop, clipped at 0
        assert abs(max(0.0, ev.baseline - acc) - predicted_drop) <= 0.005, (cut, bits, acc, ev.baseline, predicted_drop)


def test_wire_bytes_follow_the_uaq_formula() -> None:
    m = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Conv2d(5, 2, 1))
    gm = export(m, torch.rand(1, 3, 9, 9))
    first = next(n for n in gm.graph.nodes if n.op == "call_function").name
    halves = split_graph(gm, lambda n: n.name == first, {first: 3})
    q = halves.edge(torch.rand(1, 3, 9, 9))[0]
    assert isinstance(q, QuantizedTensor)
    assert q.nbytes == payload_bytes(5 * 7 * 7, 3)


# ------------------------------------------------------------------ split_module pitfalls
class SharedWeights(nn.Module):
    """A weight read on both sides, a weight read only in the cloud, a buffer, a lifted constant."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))
        self.cloud_only = nn.Parameter(torch.randn(4))
        self.register_buffer("shift", torch.randn(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.tanh(x @ self.w)
        b = a @ self.w + self.shift
        return b * self.cloud_only + torch.tensor([1.0, 2.0, 3.0, 4.0])


def test_weights_used_by_both_halves_get_attr_in_each_and_constants_survive() -> None:
    gm = export(SharedWeights(), torch.randn(2, 4))
    first = next(n for n in gm.graph.nodes if n.op == "call_function" and "matmul" in str(n.target))
    tanh = next(iter(first.users))
    edge = {first.name, tanh.name}
    x = torch.randn(2, 4)
    ref = gm(x)
    halves = split_graph(gm, lambda n: n.name in edge, {})
    edge_attrs = {str(n.target) for n in halves.edge.graph.nodes if n.op == "get_attr"}
    cloud_attrs = {str(n.target) for n in halves.cloud.graph.nodes if n.op == "get_attr"}
    assert "w" in edge_attrs and "w" in cloud_attrs
    assert "cloud_only" in cloud_attrs and "cloud_only" not in edge_attrs
    assert any("const" in a or "tensor" in a for a in cloud_attrs) or len(cloud_attrs) >= 3
    with torch.no_grad():
        assert torch.equal(halves.run(x)[0], ref)


class TwoOutputs(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = torch.relu(x) * 2          # an edge value that is also a model output
        return h, torch.sigmoid(h).sum(-1), x


def test_edge_produced_outputs_and_passthrough_inputs_cross_once() -> None:
    gm = export(TwoOutputs(), torch.randn(3, 5))
    relu = next(n for n in gm.graph.nodes if "relu" in n.name)
    mul = next(iter(relu.users))
    halves = split_graph(gm, lambda n: n.name in {relu.name, mul.name}, {mul.name: 8})
    kinds = sorted((w.kind, w.name) for w in halves.wire)
    assert [k for k, _ in kinds].count("cut") == 1 and any(k == "output" or k == "input" for k, _ in kinds)
    assert len({w.name for w in halves.wire}) == len(halves.wire)      # each tensor crosses once
    x = torch.randn(3, 5)
    out = halves.run(x)
    ref = gm(x)
    assert len(out) == 3 and torch.equal(out[2], ref[2])
    assert (out[0] - ref[0]).abs().max() <= float((ref[0].amax(1) - ref[0].amin(1)).max()) / 255 / 2 + 1e-6


def test_all_edge_and_all_cloud_halves() -> None:
    m = nn.Sequential(nn.Linear(6, 3), nn.ReLU())
    x = torch.randn(1, 6)
    gm = export(m, x)
    ref = gm(x)
    all_edge = split_graph(gm, lambda n: True, {})
    assert all_edge.cloud is None and all_edge.wire == ()
    assert torch.equal(all_edge.run(x)[0], ref)
    all_cloud = split_graph(export(m, x), lambda n: False, {"input": 32})
    assert [w.kind for w in all_cloud.wire] == ["input"] and not all_cloud.wire[0].quantised
    assert not any(n.op == "get_attr" for n in all_cloud.edge.graph.nodes)
    assert torch.equal(all_cloud.run(x)[0], ref)


class InPlaceAfterSend(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(x)
        c = a.sum(-1, keepdim=True)        # read before the write below (this runs in the cloud)
        a.add_(1.0)                        # in-place write on the edge after `a` was read
        return c + a.mean(-1, keepdim=True)


def test_in_place_writes_are_functionalised_so_the_sent_value_is_the_one_read() -> None:
    x = torch.randn(2, 7)
    gm = export(InPlaceAfterSend(), x)
    ref = InPlaceAfterSend()(x.clone())
    inplace = [n for n in gm.graph.nodes if n.op == "call_function" and str(n.target).split(".")[-2].endswith("_")]
    relu = next(n for n in gm.graph.nodes if "relu" in n.name)
    # (a torch.export that functionalises the op itself leaves nothing in place: the split must still hold)
    edge = {relu.name} | ({inplace[0].name} if inplace else set())
    halves = split_graph(gm, lambda n: n.name in edge, {})
    assert torch.allclose(halves.run(x)[0], ref)
    assert functionalise_inplace(gm) == 0          # idempotent: nothing in place is left


def test_integer_tensors_are_never_quantised_and_token_ids_travel_as_int32() -> None:
    emb = nn.Embedding(50, 4)

    class Ids(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = emb

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.emb(ids).sum(1)

    ids = torch.randint(0, 50, (1, 6))
    gm = export(Ids(), ids)
    halves = split_graph(gm, lambda n: False, {"ids": 4})
    (w,) = halves.wire
    assert w.bits is None and w.dtype == "int64"
    halves = split_graph(export(Ids(), ids), lambda n: False, {"ids": 32})
    (w,) = halves.wire
    assert w.bits is None and w.wire_dtype == "int32"
    sent = halves.edge(ids)[0]
    assert sent.dtype == torch.int32
    assert torch.equal(halves.cloud(sent)[0], gm(ids))


def test_an_edge_set_that_is_not_downward_closed_is_refused() -> None:
    m = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    gm = export(m, torch.randn(1, 3))
    last = [n for n in gm.graph.nodes if n.op == "call_function"][-1]
    with pytest.raises(ValueError, match="predecessor"):
        split_graph(gm, lambda n: n.name == last.name, {})


# ------------------------------------------------------------------ the artifact files
def _artifact(tmp: Path) -> tuple[Path, nn.Module, torch.Tensor]:
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    x = torch.randn(1, 1, 6, 6)
    gm = export(m, x)
    relu = next(n for n in gm.graph.nodes if "relu" in n.name).name
    parts = [EmittedPartition("p0", split_graph(gm, lambda n: n.name in ancestors(gm, {relu}), {relu: 4}), {}),
             EmittedPartition("p1", split_graph(gm, lambda n: True, {}), {})]
    out = write_artifact(OutputDir(tmp / "art", "-o", sha256_file), parts, {"configs": {"plan": {"partition": "p0"}}},
                         "{}\n", model_name="tiny")
    return out, m, x


def test_artifact_round_trip_loads_the_emitted_code_and_shared_weights(tmp_path: Path) -> None:
    out, m, x = _artifact(tmp_path)
    art = load_artifact(out)
    p0, p1 = art.partitions
    with torch.no_grad():
        assert torch.equal(p1.edge(x)[0], m(x))
        y = p0.cloud(*p0.edge(x))[0]
    assert (y - m(x)).abs().max() < 0.5
    from safetensors.torch import load_file

    assert sorted(load_file(str(out / "model/weights.safetensors"))) == sorted(dict(m.named_parameters()))
    assert len(art.artifact_id) == 32
    # edge-only loading builds no cloud half
    assert load_artifact(out, role="edge").partitions[0].cloud is None


def test_tampered_or_foreign_artifacts_are_refused(tmp_path: Path) -> None:
    out, _, _ = _artifact(tmp_path)
    code = out / "partitions/p0/cloud.py"
    src = code.read_text()
    code.write_text(src.replace("import torch\n", "import torch\nimport os\n"))
    with pytest.raises(ArtifactError, match="corrupted"):
        load_artifact(out)
    # even with the manifest updated, the code check refuses what generated code never contains
    man = json.loads((out / "manifest.json").read_text())
    man["files"]["partitions/p0/cloud.py"] = sha256_file(code)
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match="import of os"):
        load_artifact(out)
    for bad in ("def forward(self):\n    pass\n", "import torch\nclass A(torch.nn.Module):\n    def forward(self, x):\n"
                "        return x.__class__\n"):
        with pytest.raises(ArtifactError):
            check_source(bad, "x.py")


def test_artifact_format_version_is_checked(tmp_path: Path) -> None:
    import yaml

    out, _, _ = _artifact(tmp_path)
    rt = yaml.safe_load((out / "runtime.yaml").read_text())
    rt["format"] = 99
    (out / "runtime.yaml").write_text(yaml.safe_dump(rt))
    man = json.loads((out / "manifest.json").read_text())
    man["files"]["runtime.yaml"] = sha256_file(out / "runtime.yaml")
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match="format 99") as err:
        load_artifact(out)
    assert "\n" not in err.value.one_line()


def test_emit_never_replaces_a_directory_it_did_not_write(tmp_path: Path) -> None:
    user = tmp_path / "art"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(OutputPathError):
        _artifact(tmp_path)
    assert (user / "notes.txt").read_text() == "mine"
    (user / "notes.txt").unlink()
    out, _, _ = _artifact(tmp_path)      # an empty directory, then its own earlier output, may be replaced
    _artifact(tmp_path)
    assert (out / "manifest.json").exists()
