"""ΔAcc(v, b) tables: digits-cnn accuracy, MiniLM embedding, proxy on random weights, joint drop, name mapping."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from planner.registry import resolve_model
from profilers.graph import profile_model
from profilers.model_spec import ModelSpec
from profilers.models import BuiltModel, package_model_dir
from profilers.quant_sensitivity import (
    DEFAULT_BITS, SENTENCE_GROUPS, SENTENCE_SEQ_LEN, SensitivityTable, joint_drop, quant_sensitivity,
    sensitivity_evaluator, sentence_batch,
)
from kernels.uniform_quant import fake_quantize


def _increases(table: SensitivityTable, tol: float = 0.0) -> tuple[int, int]:
    """(number of (node, consecutive bits) pairs where the drop rises by more than tol, pairs)."""
    d = table.drop[:, np.argsort(table.bits)]
    rises = int((d[:, 1:] > d[:, :-1] + tol).sum())
    return rises, d[:, 1:].size


def _check_names_match_profile(name: str, tiny: bool = False) -> None:
    prof = profile_model(resolve_model(name), tiny=tiny)
    ev = sensitivity_evaluator(resolve_model(name), tiny=tiny)
    graph_targets = {n.name: str(n.target) for n in ev.gm.graph.nodes}
    for node in prof.nodes:
        if node.op == "output":
            continue
        assert node.name in graph_targets, node.name
        assert graph_targets[node.name] == node.target, node.name
    profiled = {n.name: n for n in prof.nodes}
    for c in ev.candidates():
        assert c in profiled and (not profiled[c].is_view or profiled[c].op == "placeholder"), c


# ---------------------------------------------------------------- digits-cnn (real weights, real labels)
@pytest.fixture(scope="module")
def digits_table() -> SensitivityTable:
    return quant_sensitivity(resolve_model("digits-cnn"))


def test_digits_table_shape_and_description(digits_table: SensitivityTable) -> None:
    t = digits_table
    assert t.kind == "accuracy" and t.bits == DEFAULT_BITS
    assert t.drop.shape == (len(t.nodes), len(t.bits))
    assert {"x", "conv2d", "relu", "max_pool2d", "linear", "relu_2"} <= set(t.nodes)
    assert "flatten" not in t.nodes and "linear_1" not in t.nodes   # view; consumed by the output only
    assert 300 <= t.n_samples <= 400 and f"n={t.n_samples}" in t.description
    assert "held-out" in t.description
    assert 0.9 < t.baseline <= 1.0
    assert t.elapsed_s < 10.0


def test_digits_drops(digits_table: SensitivityTable) -> None:
    t = digits_table
    assert np.isfinite(t.drop).all() and (t.drop >= 0).all() and (t.drop <= 1).all()
    assert (t.drop[:, t.bits.index(16)] == 0).all()
    assert (t.drop[:, t.bits.index(8)] <= 1.5 / t.n_samples).all()      # at most one net flip
    assert t.drop[:, t.bits.index(2)].max() > 0
    rises, pairs = _increases(t)
    assert rises <= pairs // 4                    # mostly nonincreasing in bits (paired flips are noisy)
    assert t.drop[:, t.bits.index(2)].sum() >= t.drop[:, t.bits.index(6)].sum()
    for node in t.nodes:
        assert t.floor(node, 0.005) in DEFAULT_BITS


def test_digits_joint_drop(digits_table: SensitivityTable) -> None:
    t = digits_table
    for node in ("linear", "x"):
        assert joint_drop(resolve_model("digits-cnn"), {node: 2}) == pytest.approx(t.drop_at(node, 2), abs=1e-9)
    both = joint_drop(resolve_model("digits-cnn"), {"x": 2, "linear": 2})
    assert 0.0 <= both <= 1.0
    assert both >= 0.5 * max(t.drop_at("x", 2), t.drop_at("linear", 2))
    assert joint_drop(resolve_model("digits-cnn"), {}) == 0.0
    with pytest.raises(KeyError):
        joint_drop(resolve_model("digits-cnn"), {"no_such_node": 4})


def test_digits_reference_matches_eager_and_is_not_modified(digits_table: SensitivityTable) -> None:
    from profilers.digits_cnn import load_digits_data, load_or_train

    ev = sensitivity_evaluator(resolve_model("digits-cnn"))
    data = load_digits_data()
    with torch.no_grad():
        eager = load_or_train()(data.x_test)
    assert torch.allclose(ev.reference_outputs[0], eager, atol=1e-5)
    assert torch.equal(ev.outputs({})[0], ev.reference_outputs[0])


def test_digits_per_channel_option(digits_table: SensitivityTable) -> None:
    t = quant_sensitivity(resolve_model("digits-cnn"), nodes=["relu", "linear"], bits=(2, 16), channel_dim=1)
    assert t.granularity == "per_channel(dim=1)" and t.kind == "accuracy"
    assert (t.drop[:, 1] == 0).all() and np.isfinite(t.drop).all()


def test_digits_names_match_profiler() -> None:
    _check_names_match_profile("digits-cnn")


# ---------------------------------------------------------------- MiniLM (real pretrained weights)
def test_minilm_sentences_fit_without_truncation() -> None:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(package_model_dir(resolve_model("minilm"))))
    ids, mask, groups = sentence_batch(tok)
    texts = [s for _, g in SENTENCE_GROUPS for s in g]
    assert 60 <= len(texts) <= 100 and len(SENTENCE_GROUPS) >= 10 and len(set(texts)) == len(texts)
    assert ids.shape == (len(texts), SENTENCE_SEQ_LEN) and int(groups.max()) == len(SENTENCE_GROUPS) - 1
    assert max(len(tok(s)["input_ids"]) for s in texts) <= SENTENCE_SEQ_LEN


def test_minilm_table_on_a_few_nodes() -> None:
    ev = sensitivity_evaluator(resolve_model("minilm"))
    cands = ev.candidates()
    assert 60 <= len(cands) <= 200
    assert ev.kind == "embedding" and 0.5 < ev.baseline <= 1.0
    # late nodes keep the test fast: each cell re-runs only the quantised node's descendants
    nodes = ["gelu_5", "add_15", "layer_norm_12"]
    assert set(nodes) <= set(cands)
    t = ev.table(nodes, bits=(2, 4, 8, 16))
    assert t.kind == "embedding" and "cosine" in t.description and f"{t.n_samples} built-in" in t.description
    assert np.isfinite(t.drop).all() and (t.drop >= 0).all()
    assert (t.drop[:, t.bits.index(16)] < 1e-4).all()
    assert (t.drop[:, t.bits.index(2)] > t.drop[:, t.bits.index(8)]).all()
    assert t.drop_at("add_15", 2) > 0.05
    assert joint_drop(resolve_model("minilm"), {"add_15": 4}) == pytest.approx(t.drop_at("add_15", 4), abs=1e-5)


def test_minilm_names_match_profiler() -> None:
    _check_names_match_profile("minilm")


# ---------------------------------------------------------------- proxy (random weights)
def test_proxy_on_tiny_resnet() -> None:
    t = quant_sensitivity(resolve_model("resnet50"), tiny=True)
    assert t.kind == "proxy" and "not an accuracy" in t.description.lower() and "SQNR" in t.description
    assert t.n_samples == 8
    assert np.isfinite(t.drop).all() and (t.drop >= 0).all()
    rises, _ = _increases(t, tol=1e-12)
    assert rises == 0                              # relative noise power falls with every added bit
    d2, d8, d16 = (t.drop[:, t.bits.index(b)] for b in (2, 8, 16))
    assert (d2 > 0).all() and (d16 < 1e-6).all()
    assert np.median(d2 / np.maximum(d8, 1e-30)) > 100   # ~4x per bit
    add_nodes = [n for n in t.nodes if n.startswith("add_")]          # in-place residual adds
    assert add_nodes and all(t.drop_at(n, 16) < 1e-6 for n in add_nodes)
    _check_names_match_profile("resnet50", tiny=True)


class _TwoConsumers(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x)
        return torch.sigmoid(y) + y * 2.0


def test_quantised_output_feeds_every_consumer_and_joint_equals_single() -> None:
    spec = ModelSpec(name="two-consumers", kind="factory", task="custom", source="test")
    x = torch.randn(4, 33, generator=torch.Generator().manual_seed(0))
    built = BuiltModel(spec, _TwoConsumers(), (x,), {}, False, "cpu")
    ev = sensitivity_evaluator(built)
    assert ev.kind == "proxy" and "relu" in ev.candidates()
    out = ev.outputs({"relu": 3})[0]
    yq = fake_quantize(torch.relu(x), 3)
    assert torch.allclose(out, torch.sigmoid(yq) + yq * 2.0, atol=1e-6)
    table = ev.table(["relu"], bits=(3, 5), workers=1)
    assert joint_drop(built, {"relu": 5}) == pytest.approx(table.drop_at("relu", 5), rel=1e-9)
    assert table.as_dict()["drop"][0][0] == table.drop_at("relu", 3)


def test_proxy_on_token_model_with_kwargs() -> None:
    # tiny gpt2: token inputs plus a non-tensor kwarg (use_cache=False) reach the right placeholders
    t = quant_sensitivity(resolve_model("gpt2"), tiny=True, bits=(4, 16))
    assert t.kind == "proxy" and len(t.nodes) > 10
    assert np.isfinite(t.drop).all()
    assert (t.drop[:, 0] >= t.drop[:, 1]).all()
