"""GVote keep sets, the kvpress press, the ragged cache and the kvpress adapter on a tiny random GQA Llama.

The tiny model's attention is sharpened (q/k projections scaled) so that nucleus sets are proper subsets.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("kvpress")

from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM  # noqa: E402

from runtime.kv_budget import evaluation as ev  # noqa: E402
from runtime.kv_budget import kvpress_compat  # noqa: E402
from runtime.kv_budget.gvote_press import GVotePress  # noqa: E402
from runtime.kv_budget.keep_sets import nucleus_mask  # noqa: E402

T, NQ = 96, 5


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      attn_implementation="sdpa")
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in m.model.layers:
            layer.self_attn.q_proj.weight *= 6.0
            layer.self_attn.k_proj.weight *= 6.0
    return m


@pytest.fixture(scope="module")
def prompt() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (1, T), generator=g), torch.randint(0, 256, (1, NQ), generator=g)


@pytest.fixture(scope="module")
def pf(model, prompt) -> ev.Prefill:
    return ev.prefill(model, prompt[0])


def gvote(p_nuc: float, s: int, sink: int = 2, window: int = 4, seed: int = 0) -> dict:
    return {"kind": "gvote", "p_nuc": p_nuc, "n_samples": s, "n_sink": sink, "window": window, "seed": seed}


def kept(model, pf, method) -> list[torch.Tensor]:
    return ev.keep_masks(model, pf, method)[0]


def test_nucleus_is_the_smallest_set_holding_the_mass() -> None:
    p = torch.tensor([[0.5, 0.05, 0.3, 0.15]])
    assert nucleus_mask(p, 0.5).tolist() == [[True, False, False, False]]
    assert nucleus_mask(p, 0.51).tolist() == [[True, False, True, False]]
    assert nucleus_mask(p, 0.95).tolist() == [[True, False, True, True]]
    assert nucleus_mask(p, 1.0).all()


def test_p_nuc_one_keeps_everything_and_decodes_like_the_full_cache(model, prompt, pf) -> None:
    masks = kept(model, pf, gvote(1.0, 4))
    assert all(bool(m.all()) for m in masks)
    with torch.no_grad():
        ref = model(torch.cat(prompt, dim=1)).logits[:, -NQ:]
    got = ev.decode_logits(model, pf, masks, prompt[1])
    assert torch.allclose(ref, got, atol=1e-5)


def test_memory_non_decreasing_in_p_nuc_and_samples(model, pf) -> None:
    sizes = []
    for p in (0.2, 0.4, 0.6, 0.8, 0.95):
        row = []
        for s in (1, 2, 4, 8):
            masks = kept(model, pf, gvote(p, s))
            row.append(masks)
            sizes.append(ev.bytes_of(masks, pf))
        for a, b in zip(row, row[1:]):          # S -> S+: the keep set only grows (nested)
            assert all(bool((x <= y).all()) for x, y in zip(a, b))
    grid = torch.tensor(sizes).view(5, 4)
    assert bool((grid[1:] >= grid[:-1]).all()) and bool((grid[:, 1:] >= grid[:, :-1]).all())
    assert grid[0, 0] < T * 2 * 2 * 2 * 16 * 4    # a proper subset somewhere (the test has teeth)


def test_fixed_seed_gives_identical_keep_sets_and_other_seeds_may_differ(model, pf) -> None:
    a = kept(model, pf, gvote(0.5, 4, seed=7))
    b = kept(model, pf, gvote(0.5, 4, seed=7))
    assert all(bool((x == y).all()) for x, y in zip(a, b))


def test_keep_sets_are_ragged_and_hold_sinks_and_window(model, pf) -> None:
    masks = kept(model, pf, gvote(0.3, 1, sink=3, window=5))
    counts = [int(c) for m in masks for c in m.sum(dim=-1).flatten()]
    assert len(set(counts)) > 1                 # heads keep different numbers of entries
    for m in masks:
        assert bool(m[..., :3].all()) and bool(m[..., -5:].all())


def test_ragged_cache_holds_exactly_the_kept_bytes(model, prompt, pf) -> None:
    masks = kept(model, pf, gvote(0.4, 2))
    toks, held, counts = ev.decode(model, pf, masks, prompt[1], max_new_tokens=3)
    assert held == ev.bytes_of(masks, pf)
    assert counts == [[int(c) for c in m[0].sum(dim=-1)] for m in masks]
    assert len(toks) == 3


def test_press_in_kvpress_hooks_masks_like_the_physically_pruned_cache(model, prompt, pf) -> None:
    """GVotePress through kvpress's own hook API (adapted kwargs), decoded with kvpress's head-wise masking,
    gives the logits of the ragged cache that holds only the kept entries."""
    kvpress_compat.install()
    press = GVotePress(p_nuc=0.4, n_samples=2, n_sink=2, window=4)
    cache = DynamicCache()
    with torch.no_grad(), press(model):
        model(prompt[0], cache=cache)
    ratios = press.compression_ratios
    assert set(ratios) == {0, 1} and 0.0 < press.compression_ratio < 1.0
    assert [layer.keys.shape[2] for layer in cache.layers] == [T, T]    # masked, not removed
    with torch.no_grad():
        masked = model(prompt[1], cache=cache, position_ids=torch.arange(T, T + NQ)[None]).logits
    physical = ev.decode_logits(model, pf, [press.keep_masks[0], press.keep_masks[1]], prompt[1])
    assert torch.allclose(masked, physical, atol=1e-5)
    assert all(bool((a == b).all()) for a, b in zip(kept(model, pf, gvote(0.4, 2)), press.keep_masks.values()))


def test_press_knobs_are_validated() -> None:
    for bad in ({"p_nuc": 0.0}, {"p_nuc": 1.2}, {"n_samples": 0}, {"cap_fraction": 0.0}):
        with pytest.raises(ValueError):
            GVotePress(**bad)
    with pytest.raises(AttributeError):
        GVotePress().compression_ratio = 0.5


def test_adapter_gives_the_hook_path_the_same_keep_sets(model, prompt, pf) -> None:
    """SnapKV through kvpress's hook (adapted kwargs) keeps what `press_keep_mask` reports post hoc."""
    kvpress_compat.install()
    press = ev.make_press("snapkv", 0.5)
    cache = DynamicCache()
    with torch.no_grad(), press(model):
        model(prompt[0], cache=cache)
    post = kept(model, pf, {"kind": "press", "press": "snapkv", "ratio": 0.5})
    for i, (layer, mask) in enumerate(zip(cache.layers, post)):
        assert layer.keys.shape[2] == int(mask[0, 0].sum())
        for h in range(mask.shape[1]):     # the press keeps rows in score order; compare as position sets
            pos = kvpress_compat._row_index(pf.keys[i][0, h].numpy(), layer.keys[0, h].numpy())
            assert sorted(pos.tolist()) == torch.nonzero(mask[0, h]).flatten().tolist()


def test_every_press_runs_and_adakv_is_ragged(model, prompt, pf) -> None:
    for name in ev.PRESSES:
        masks = kept(model, pf, {"kind": "press", "press": name, "ratio": 0.5})
        total = sum(int(m.sum()) for m in masks)
        assert total == pytest.approx(0.5 * 2 * 2 * T, rel=0.05), name
    ada = kept(model, pf, {"kind": "press", "press": "adakv", "ratio": 0.5})
    assert len({int(c) for m in ada for c in m.sum(dim=-1).flatten()}) > 1


def test_oracle_holds_what_the_decoding_queries_need(model, prompt, pf) -> None:
    oracle = ev.oracle_masks(model, pf, prompt[1], 0.3)
    full = ev.oracle_masks(model, pf, prompt[1], 1.0)
    assert all(bool(m.all()) for m in full)
    assert all(bool((a <= b).all()) for a, b in zip(oracle, full))
    assert sum(int(m.sum()) for m in oracle) < sum(int(m.sum()) for m in full)


def test_cap_limits_every_head_and_keeps_sinks_and_window(model, pf) -> None:
    free = kept(model, pf, gvote(0.9, 4))
    capped = kept(model, pf, {**gvote(0.9, 4), "cap_fraction": 0.25})
    for f, c in zip(free, capped):
        assert bool((c <= f).all())                                    # the cap only removes entries
        assert int(c.sum(dim=-1).max()) <= max(2 + 4, int(0.25 * T))
        assert bool(c[..., :2].all()) and bool(c[..., -4:].all())


def test_ratio_zero_press_generates_the_full_cache_tokens(model, prompt, pf) -> None:
    """A press that evicts nothing goes through the same compressed-cache path and must give the full cache's
    greedy generation token for token (answer right after the prompt and after a question)."""
    masks = kept(model, pf, {"kind": "press", "press": "snapkv", "ratio": 0.0})
    assert all(bool(m.all()) for m in masks)
    full = [torch.ones(k.shape[:3], dtype=torch.bool) for k in pf.keys]
    for q in (torch.zeros(1, 0, dtype=torch.long), prompt[1]):
        ref, _, _ = ev.decode(model, pf, full, q, max_new_tokens=8)
        got, _, _ = ev.decode(model, pf, masks, q, max_new_tokens=8)
        assert got == ref
    # and the full cache's generation is the model's own greedy continuation of the prompt (fresh forwards)
    ids = prompt[0]
    ref, _, _ = ev.decode(model, pf, full, torch.zeros(1, 0, dtype=torch.long), max_new_tokens=8)
    for tok in ref:
        with torch.no_grad():
            assert int(model(ids).logits[0, -1].argmax()) == tok
        ids = torch.cat([ids, torch.tensor([[tok]])], dim=1)


def _decode_positions(model, pf, masks, q) -> list[list[int]]:
    seen: list[list[int]] = []
    def grab(mod, args, kwargs, out) -> None:
        pos = kwargs["position_ids"] if "position_ids" in kwargs else args[1]
        seen.append(pos[0].tolist())

    hook = model.model.rotary_emb.register_forward_hook(grab, with_kwargs=True)
    try:
        ev.decode(model, pf, masks, q, max_new_tokens=4)
    finally:
        hook.remove()
    return seen


def test_positions_after_pruning_equal_the_unpruned(model, prompt, pf) -> None:
    """Decoded tokens get RoPE positions from the prompt's length, not from how many entries a head kept."""
    g = torch.Generator().manual_seed(3)
    pruned = [torch.rand(k.shape[:3], generator=g) > 0.4 for k in pf.keys]
    full = [torch.ones(k.shape[:3], dtype=torch.bool) for k in pf.keys]
    assert sum(int(m.sum()) for m in pruned) < sum(int(m.sum()) for m in full)
    for q in (torch.zeros(1, 0, dtype=torch.long), prompt[1]):
        a, b = _decode_positions(model, pf, pruned, q), _decode_positions(model, pf, full, q)
        assert a == b
        flat = [p for step in a for p in step]
        assert flat == list(range(T, T + len(flat)))


def test_pruned_cache_decodes_like_the_full_cache_with_evicted_keys_masked(model, prompt, pf) -> None:
    """Oracle independent of kvpress: evicting the same positions in every head and layer equals the full
    DynamicCache with those key columns masked out (explicit 4D mask, explicit positions)."""
    g = torch.Generator().manual_seed(4)
    evict = torch.rand(T, generator=g) < 0.3
    evict[:2] = False
    masks = [(~evict).expand(k.shape[:3]).clone() for k in pf.keys]
    got = ev.decode_logits(model, pf, masks, prompt[1])
    cache = DynamicCache()
    with torch.no_grad():
        model(prompt[0], cache=cache)
        allowed = torch.ones(NQ, T + NQ, dtype=torch.bool)
        allowed[:, :T] = ~evict
        allowed[:, T:] = torch.ones(NQ, NQ, dtype=torch.bool).tril()
        ref = model(prompt[1], cache=cache, attention_mask=allowed[None, None],
                    position_ids=torch.arange(T, T + NQ)[None]).logits
    assert torch.allclose(got, ref, atol=1e-5)
    assert not torch.allclose(got, ev.decode_logits(model, pf, [torch.ones_like(m) for m in masks], prompt[1]),
                              atol=1e-3)    # the eviction changes the logits (the test has teeth)


def _reading(p_nuc: float, s: int, budget: str, anchors: int = 0, span: int = 0) -> dict:
    return {**gvote(p_nuc, s), "budget": budget, "anchors": anchors, "span": span}


def test_nucleus_budget_with_spans_is_monotone_in_p_nuc_and_samples(model, pf) -> None:
    """The per-sample nucleus reading with successor spans keeps the spec's acceptance: nested keep sets as
    p_nuc or S grow, p_nuc = 1 keeps everything, a fixed seed repeats."""
    grid = [[kept(model, pf, _reading(p, s, "nucleus", 2, 3)) for s in (1, 4)] for p in (0.3, 0.6, 0.9)]
    pairs = [(grid[i][j], grid[i + 1][j]) for i in range(2) for j in range(2)]      # p_nuc grows
    pairs += [(grid[i][0], grid[i][1]) for i in range(3)]                           # S grows
    for a, b in pairs:
        assert all(bool((x <= y).all()) for x, y in zip(a, b))
    assert ev.bytes_of(grid[0][0], pf) < ev.bytes_of(grid[2][1], pf)
    assert all(bool(m.all()) for m in kept(model, pf, _reading(1.0, 4, "nucleus", 2, 3)))
    again = kept(model, pf, _reading(0.6, 4, "nucleus", 2, 3))
    assert all(bool((x == y).all()) for x, y in zip(grid[1][1], again))


def test_successor_spans_add_the_keys_after_the_last_querys_top_keys(model, pf) -> None:
    """Spans add exactly, in every layer and head, each anchor and the `span` keys after it, where the anchors
    are the positions (sinks and window excluded) given the highest attention by any layer's last query."""
    from runtime.kv_budget.keep_sets import add_successor_spans, attention_probs, queries_at

    base = kept(model, pf, _reading(0.3, 2, "top"))
    spans = kept(model, pf, _reading(0.3, 2, "top", anchors=2, span=3))
    best = torch.zeros(T)
    for m, h, k in zip(ev.attention_modules(model), pf.hidden, pf.keys):
        a0 = attention_probs(queries_at(m, m.rotary_emb, h[:, -1:], T - 1), k)[0, :, 0].amax(0)
        a0[:2] = 0.0
        a0[-4:] = 0.0
        best = torch.maximum(best, a0)
    want = torch.zeros(T, dtype=torch.bool)
    for p in torch.topk(best, 2).indices.tolist():
        want[p:p + 4] = True
    for b, s in zip(base, spans):
        assert bool((s == (b | want)).all())
    assert any(bool((s != b).any()) for b, s in zip(base, spans))      # the spans add keys here (teeth)
    assert add_successor_spans(base, [torch.zeros(1, T)] * 2, 0, 3) is base


def test_press_with_spans_through_kvpress_hooks_equals_the_captured_path(model, prompt, pf) -> None:
    """With spans the press rewrites every layer's mask once the last layer is seen; the masked cache then
    decodes like the ragged cache of the captured-prefill masks."""
    kvpress_compat.install()
    press = GVotePress(p_nuc=0.4, n_samples=2, n_sink=2, window=4, budget="nucleus", anchors=2, span=3)
    cache = DynamicCache()
    with torch.no_grad(), press(model):
        model(prompt[0], cache=cache)
    want = kept(model, pf, _reading(0.4, 2, "nucleus", 2, 3))
    assert all(bool((a == b).all()) for a, b in zip(want, press.keep_masks.values()))
    with torch.no_grad():
        masked = model(prompt[1], cache=cache, position_ids=torch.arange(T, T + NQ)[None]).logits
    assert torch.allclose(masked, ev.decode_logits(model, pf, want, prompt[1]), atol=1e-5)


def test_reading_knobs_are_validated() -> None:
    for bad in ({"fit": "all"}, {"budget": "half"}, {"anchors": -1}, {"span": -2}):
        with pytest.raises(ValueError):
            GVotePress(**bad)


def test_batched_decode_equals_one_at_a_time(model, prompt, pf) -> None:
    """Several keep sets decoded in one batch (the benchmark's shared weight reads) give each set's own greedy
    tokens, held bytes and kept counts, with and without a question fed first; rows stop at their own EOS."""
    methods = [gvote(0.5, 2), gvote(0.9, 4), {"kind": "press", "press": "snapkv", "ratio": 0.5},
               {"kind": "press", "press": "streamingllm", "ratio": 0.7}]
    sets = [kept(model, pf, m) for m in methods]
    for q in (prompt[1], prompt[1][:, :0]):
        one = [ev.decode(model, pf, s, q, 6) for s in sets]
        eos = (one[1][0][2],)            # the second set stops early on its third token
        one = [ev.decode(model, pf, s, q, 6, eos) for s in sets]
        assert len({tuple(o[0]) for o in one}) > 1      # the sets decode differently: the check can fail
        assert ev.decode_batch(model, pf, sets, q, 6, eos, batch=3) == one


def test_shared_press_scores_give_the_presses_own_masks(model, prompt) -> None:
    """A press reusing the scores a press of the same kind computed at another ratio on the same prefill keeps
    exactly what it keeps computing them itself (AdaKV writes into its scores: each call must get a copy)."""
    pf = ev.prefill(model, prompt[0])
    for name in ("snapkv", "adakv", "pyramidkv", "expected_attention", "streamingllm"):
        for ratio in (0.3, 0.6, 0.3):
            shared = kept(model, pf, {"kind": "press", "press": name, "ratio": ratio})
            own = kept(model, pf, {"kind": "press", "press": name, "ratio": ratio, "share_scores": False})
            assert all(torch.equal(a, b) for a, b in zip(shared, own)), (name, ratio)
    assert any(k[0] == "SnapKVPress" for k in pf.score_memo) and any(k[0] == "ExpectedAttentionPress"
                                                                      for k in pf.score_memo)
