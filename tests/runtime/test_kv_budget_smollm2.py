"""GVote on SmolLM2's real weights (its first 4 layers, to stay cheap): the test beds' prompts load, budgets are
outputs that differ across requests (a 512-token retrieval prompt vs a short arithmetic one), and the oracle
recall is a fraction."""
from __future__ import annotations

import pytest

pytest.importorskip("kvpress")


def test_budgets_differ_across_requests(smollm2_cache) -> None:
    from planner.families.kv_budget.workload import load_lm, make_requests
    from planner.registry import resolve_model
    from runtime.kv_budget import evaluation as ev
    import torch

    spec = resolve_model("smollm2-135m:4L")
    lm = load_lm(spec, False, None, 0)
    reqs = make_requests("ruler:niah@512:1", lm, 0, spec, False) + make_requests("arith:word1:1", lm, 0, spec, False)
    assert [r.task for r in reqs] == ["niah", "word1"] and reqs[0].length > 4 * reqs[1].length
    method = {"kind": "gvote", "p_nuc": 0.9, "n_samples": 4, "n_sink": 4, "window": 32, "seed": 0}
    kept = []
    for r in reqs:
        pf = ev.prefill(lm.model, torch.tensor([r.context_ids]))
        masks, _ = ev.keep_masks(lm.model, pf, method)
        full = [torch.ones(k.shape[:3], dtype=torch.bool) for k in pf.keys]
        kept.append(ev.bytes_of(masks, pf) / ev.bytes_of(full, pf))
        per_head = {int(c) for m in masks for c in m.sum(dim=-1).flatten()}
        assert len(per_head) > 1                                        # ragged across heads and layers
        tokens, held, _ = ev.decode(lm.model, pf, masks, torch.zeros((1, 0), dtype=torch.long), 3, lm.eos_ids)
        assert held == ev.bytes_of(masks, pf) and 1 <= len(tokens) <= 3
        oracle = ev.oracle_masks(lm.model, pf, torch.tensor([tokens[:1]]), 0.95)
        hit = sum(int((m & o).sum()) for m, o in zip(masks, oracle))
        assert 0 < hit <= sum(int(o.sum()) for o in oracle)
    assert kept[0] < 0.9                                                # the long prompt is compressed
    assert abs(kept[0] - kept[1]) > 0.05                                # the budget is an output per request


def test_gvote_press_runs_in_kvpress_pipeline(smollm2_cache) -> None:
    """A kvpress user drops GVotePress into `pipeline("kv-press-text-generation")` (question-agnostic) and reads
    the achieved ratio per layer afterwards."""
    from transformers import pipeline

    from runtime.kv_budget import kvpress_compat
    from runtime.kv_budget.gvote_press import GVotePress
    from testbeds.smollm2 import load_model, load_tokenizer

    kvpress_compat.install()
    model = load_model("smollm2-135m:4L")
    model.set_attn_implementation("sdpa")
    pipe = pipeline("kv-press-text-generation", model=model, tokenizer=load_tokenizer())
    press = GVotePress(p_nuc=0.9, n_samples=4)
    context = "The grass is green. " * 30 + "The magic number is 42. " + "The sky is blue. " * 30
    out = pipe(context, question="What is the magic number?", press=press, max_new_tokens=3)
    assert isinstance(out["answer"], str)
    assert sorted(press.compression_ratios) == [0, 1, 2, 3]
    assert all(0.0 < r < 1.0 for r in press.compression_ratios.values())
