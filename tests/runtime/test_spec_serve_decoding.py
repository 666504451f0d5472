"""Speculative decoding mechanics on a tiny random Llama: greedy identity, rejection sampling, cache rollback."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import transformers

torch.set_num_threads(1)   # one thread per process on the shared machine

from runtime.spec_serve.decoding import (EarlyExitDrafter, NgramDrafter, Verifier, commit, draft_tokens, fuse,
                                         target_only_greedy)


def tiny_llama(vocab: int = 64, layers: int = 4, seed: int = 0) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                   tie_word_embeddings=True, initializer_range=0.3)
    return transformers.LlamaForCausalLM(cfg).eval()


def early_exit(model: transformers.LlamaForCausalLM, k: int) -> transformers.LlamaForCausalLM:
    d = copy.deepcopy(model)
    d.model.layers = d.model.layers[:k]
    d.config.num_hidden_layers = k
    return d


def speculative(model, drafters, weights, ids, n_new, gamma, greedy, seed=0):
    v = Verifier(model)
    gen = torch.Generator().manual_seed(seed)
    out: list[int] = []
    step = 0
    while True:
        seq = list(ids) + out
        toks, qs, _ = draft_tokens(drafters, weights, "r", seq, gamma, greedy, gen)
        res = v.verify("r", seq, toks, qs, greedy, seed=seed * 1000 + step)
        step += 1
        _, done = commit(out, res.tokens, n_new, ())
        if done:
            return out, v


@pytest.mark.parametrize("gamma", [1, 4])
def test_greedy_speculation_equals_target_only(gamma: int) -> None:
    m = tiny_llama()
    for ids in ([1, 5, 7, 9, 5, 7, 3], [2, 4, 6, 8, 10, 12, 2, 4, 6]):
        ref = target_only_greedy(m, ids, 40)
        hf = m.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=40, min_new_tokens=40)[0, len(ids):]
        assert ref == hf.tolist()                                  # the reference is transformers' own greedy
        assert len(set(ref)) > 3                                   # a non-degenerate continuation
        for drafters, w in (([EarlyExitDrafter(early_exit(m, 1))], [1.0]), ([NgramDrafter()], [1.0]),
                            ([EarlyExitDrafter(early_exit(m, 2)), NgramDrafter()], [0.6, 0.4])):
            out, _ = speculative(m, drafters, w, ids, 40, gamma, greedy=True)
            assert out == ref


def test_rejected_drafts_roll_the_cache_back() -> None:
    m = tiny_llama()
    v = Verifier(m)
    ids = [1, 5, 7, 9, 5, 7, 3]
    ref = target_only_greedy(m, ids, 6)
    wrong = [(t + 1) % 64 for t in ref[:4]]          # every draft token wrong: nothing accepted
    res = v.verify("r", ids, wrong, [{t: 1.0} for t in wrong], greedy=True)
    assert res.accepted == 0 and res.tokens == ref[:1]
    assert v.lm.held("r") == len(ids)                # the four rejected keys are gone
    good = ref[1:4] + [(ref[4] + 1) % 64]            # three right, the fourth wrong
    res = v.verify("r", ids + ref[:1], good, [{t: 1.0} for t in good], greedy=True)
    assert res.accepted == 3 and res.tokens == ref[1:5]
    assert v.lm.held("r") == len(ids) + 4
    # the cache after rollback gives the same logits as a fresh cache
    fresh = Verifier(m)
    a = v.lm.logits_for("r", ids + ref[:5], 1)
    b = fresh.lm.logits_for("x", ids + ref[:5], 1)
    assert torch.allclose(a, b, atol=1e-5)


def test_fusion_weights_and_empty_proposals() -> None:
    q = fuse([{1: 0.5, 2: 0.5}, {}, {2: 1.0}], [1.0, 5.0, 3.0])
    assert q == pytest.approx({1: 0.125, 2: 0.875})
    assert fuse([{}, {}], [1.0, 1.0]) == {}


def test_sampled_speculation_is_distributed_as_the_target() -> None:
    """Two output tokens by fused-proposal rejection sampling, verified in batches, vs the target's exact joint law
    (chi-square)."""
    from scipy.stats import chisquare

    vocab = 6
    m = tiny_llama(vocab=vocab, seed=3)
    d1, d2 = EarlyExitDrafter(early_exit(m, 1), top_k=3), NgramDrafter()
    ids = [1, 2, 3, 1, 2]
    with torch.no_grad():
        p1 = torch.softmax(m(torch.tensor([ids])).logits[0, -1].double(), -1)
        joint = np.zeros((vocab, vocab))
        for a in range(vocab):
            p2 = torch.softmax(m(torch.tensor([ids + [a]])).logits[0, -1].double(), -1)
            joint[a] = (p1[a] * p2).numpy()
    n = 1200
    counts = np.zeros((vocab, vocab))
    v = Verifier(m)
    gen = torch.Generator().manual_seed(7)
    # draws verified 200 at a time in one batched forward (Verifier.verify_batch), as the engine serves them
    for start in range(0, n, 200):
        outs: dict[int, list[int]] = {i: [] for i in range(start, start + 200)}
        step = 0
        while outs:
            items = []
            for i, out in outs.items():
                seq = ids + out
                toks, qs, _ = draft_tokens([d1, d2], [0.7, 0.3], f"r{i}", seq, 2, False, gen)
                items.append((f"r{i}", seq, toks, qs, False, i * 100 + step))
            step += 1
            results, _ = v.verify_batch(items)
            for (rid, _, _, _, _, _), res in zip(items, results):
                i = int(rid[1:])
                _, done = commit(outs[i], res.tokens, 2, ())
                if done:
                    counts[outs[i][0], outs[i][1]] += 1
                    del outs[i]
                    v.release(rid)
                    d1.release(rid)
    exp = joint.ravel() * n
    keep = exp >= 5
    obs = counts.ravel()
    f_obs = np.append(obs[keep], obs[~keep].sum())
    f_exp = np.append(exp[keep], exp[~keep].sum())
    assert chisquare(f_obs, f_exp).pvalue > 1e-3
    # the proposal is not the target: a sampler that skipped the correction would fail the same test
    assert float(np.abs(joint.sum(1) - torch.softmax(d1.lm.model(torch.tensor([ids])).logits[0, -1].double(), -1)
                        .detach().numpy()).max()) > 0.05


def test_distilled_drafter_trains_its_blocks_only_and_round_trips(tmp_path) -> None:
    """testbeds/distill.py on a tiny Llama: the embedding, norm and head stay the target's (frozen), the loss on
    the target's own text falls, the drafter agrees with the target at least as often as the plain early exit,
    and the saved blocks reload into the early-exit shape with identical logits; greedy speculation with the
    distilled drafter still equals target-only decoding."""
    from testbeds.distill import DistillSpec, distill, load_blocks, save_blocks, teacher_data, top1_agreement, truncated

    m = tiny_llama(vocab=64, layers=4, seed=3)
    rng = np.random.default_rng(0)
    ids = [rng.integers(1, 64, 6).tolist() for _ in range(6)]
    data = teacher_data(m, ids, 16, ())
    spec = DistillSpec("code", layers=1, prompts=6, new_tokens=16, steps=40, batch=2, lr=3e-3)
    before = top1_agreement(truncated(m, 1), data)
    d, stats = distill(m, data, spec)
    assert stats["loss_last"] < stats["loss_first"]
    assert top1_agreement(d, data) >= before
    assert torch.equal(d.model.embed_tokens.weight, m.model.embed_tokens.weight)
    assert torch.equal(d.model.norm.weight, m.model.norm.weight)
    assert not torch.equal(d.model.layers[0].mlp.up_proj.weight, m.model.layers[0].mlp.up_proj.weight)
    path = tmp_path / "blocks.safetensors"
    save_blocks(d, path)
    back = load_blocks(truncated(m, 1), path)
    x = torch.tensor([ids[0]])
    with torch.no_grad():
        assert torch.equal(back(x).logits, d(x).logits)
    ref = target_only_greedy(m, ids[1], 24)
    out, _ = speculative(m, [EarlyExitDrafter(back)], [1.0], ids[1], 24, 3, greedy=True)
    assert out == ref


def test_batched_verification_equals_one_at_a_time() -> None:
    """Several requests of different prompt lengths, draft lengths and acceptance, verified in ONE forward per
    step (ragged caches: left-padded past, right-padded drafts, 4-D mask, per-row positions): every request's
    greedy output equals target-only greedy, batched logits match each request's own forward, and each cache
    holds exactly its accepted prefix afterwards."""
    m = tiny_llama()
    prompts = [[1, 5, 7, 9, 5, 7, 3], [2, 4, 6, 8, 10, 12, 2, 4, 6, 8, 1, 3], [9, 9, 3], [11, 13, 17, 19, 23]]
    gammas = [4, 1, 0, 3]                                       # 0: target-only row (one token per forward)
    refs = [target_only_greedy(m, ids, 30) for ids in prompts]
    drafters = [[EarlyExitDrafter(early_exit(m, 2))], [NgramDrafter()], [], [EarlyExitDrafter(early_exit(m, 1))]]
    v = Verifier(m)
    solo = Verifier(m)                                          # the unbatched oracle on the same sequences
    outs: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    sizes = set()
    while not all(done):
        items = []
        for i, ids in enumerate(prompts):
            if done[i]:
                continue
            seq = list(ids) + outs[i]
            toks, qs, _ = draft_tokens(drafters[i], [1.0] * len(drafters[i]), f"r{i}", seq, gammas[i], True, None)
            items.append((f"r{i}", seq, toks, qs, True, 0))
        sizes.add(len(items))
        want = [solo.lm.logits_for(rid, list(seq) + list(d), len(d) + 1) for rid, seq, d, _, _, _ in items]
        got = v.lm.logits_batch([(rid, list(seq) + list(d), len(d) + 1) for rid, seq, d, _, _, _ in items])
        for w, g in zip(want, got):
            assert torch.allclose(w, g, atol=1e-4, rtol=1e-4)
        results, cpu = v.verify_batch(items)
        assert cpu > 0
        for (rid, seq, d, _, _, _), r in zip(items, results):
            i = int(rid[1:])
            assert v.lm.held(rid) == len(seq) + r.accepted      # rejected draft keys are gone
            _, done[i] = commit(outs[i], r.tokens, 30, ())
    assert outs == refs
    assert max(sizes) == len(prompts)                           # a real batch of every request
