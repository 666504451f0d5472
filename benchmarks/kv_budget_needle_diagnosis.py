"""Why do attention-scored KV compressors lose SmolLM2-135M's needles? A check of the evaluation path.

Per needle prompt (`ruler:niah@512`, the quick benchmark's calibration draw), through the same runtime the
benchmark uses (prefill, keep masks, ragged decode):
  1. full cache: greedy answer; the full-cache ragged decode's teacher-forced logits against a fresh forward
     of prompt + answer (max |difference|: the compressed-cache path itself is exact);
  2. 5 % random eviction per (layer, head) (sinks and window kept): answer;
  3. GVote p_nuc 0.999 and SnapKV 0.5: kept share, answer, and which needle digit entries each KV head kept;
  4. the same keep masks with the needle's digit positions forced kept in every head: answer;
  5. the model's own attention (eager, independent of every selection code path): per layer and KV head, the
     rank of each needle digit among the prefix keys by the last 64 queries' mean attention (SnapKV's score
     before pooling; 0 = the top key).
Writes build/bench/kv_budget_needle_diagnosis.json. About 1-2 minutes per prompt on the loaded 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from planner.families.kv_budget.workload import load_lm, make_requests  # noqa: E402
from planner.registry import resolve_model  # noqa: E402
from runtime.kv_budget import evaluation as ev  # noqa: E402

METHODS = {"gvote_p0.999": {"kind": "gvote", "p_nuc": 0.999, "n_samples": 8, "n_sink": 4, "window": 32, "seed": 0},
           "snapkv_0.5": {"kind": "press", "press": "snapkv", "ratio": 0.5}}


def needle_positions(ids: list[int], tokenizer: Any, answer: str) -> list[int]:
    """Prompt positions of the answer's tokens (the needle's digits), or [] if not found verbatim."""
    for text in (" " + answer, answer):
        a = tokenizer(text, add_special_tokens=False)["input_ids"]
        for i in range(len(ids) - len(a) + 1):
            if ids[i:i + len(a)] == a:
                return list(range(i, i + len(a)))
    return []


def attention_ranks(model: torch.nn.Module, ctx: torch.Tensor, pos: list[int], window: int = 64) -> list[list[list[int]]]:
    """[layer][kv_head] -> rank of each needle position among the prefix keys by the last `window` queries."""
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            att = model(input_ids=ctx, output_attentions=True).attentions
    finally:
        model.set_attn_implementation("sdpa")
    t = ctx.shape[1]
    n_kv = model.config.num_key_value_heads
    out = []
    for a in att:
        g = a.shape[1] // n_kv
        layer = []
        for h in range(n_kv):
            s = a[0, h * g:(h + 1) * g, -window:, :t - window].mean(1).sum(0)
            layer.append([int((s > s[p]).sum()) for p in pos])
        out.append(layer)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "build" / "bench" / "kv_budget_needle_diagnosis.json"))
    args = ap.parse_args(argv)
    spec = resolve_model("smollm2-135m")
    lm = load_lm(spec, False, None, 0)
    reqs = make_requests(f"ruler:niah@512:{args.prompts}", lm, 0, spec, False)
    none = torch.zeros(1, 0, dtype=torch.long)
    rows = []
    for req in reqs:
        ctx = torch.tensor([req.context_ids])
        pf = ev.prefill(lm.model, ctx)
        pos = needle_positions(list(req.context_ids), lm.tokenizer, req.answer)
        full = [torch.ones(k.shape[:3], dtype=torch.bool) for k in pf.keys]
        ref, _, _ = ev.decode(lm.model, pf, full, none, req.max_new_tokens, lm.eos_ids)
        tf = torch.tensor([ref[:-1]])
        with torch.no_grad():
            fresh = lm.model(input_ids=torch.cat([ctx, tf], 1)).logits[:, -tf.shape[1]:]
        row: dict[str, Any] = {"tokens": pf.length, "answer": req.answer, "needle_positions": pos,
                               "full": lm.decode(ref),
                               "full_path_max_abs_logit_diff_vs_fresh_forward":
                                   float((ev.decode_logits(lm.model, pf, full, tf) - fresh).abs().max())}
        g = torch.Generator().manual_seed(0)
        rnd = [torch.rand(k.shape[:3], generator=g) > 0.05 for k in pf.keys]
        for m in rnd:
            m[..., :4] = True
            m[..., -32:] = True
        toks, _, _ = ev.decode(lm.model, pf, rnd, none, req.max_new_tokens, lm.eos_ids)
        row["random_5pct_evicted"] = {"kept": sum(float(m.float().mean()) for m in rnd) / len(rnd),
                                      "needle_entries_evicted": sum(int((~m[..., pos]).sum()) for m in rnd),
                                      "answer": lm.decode(toks), "score": lm.score(req, lm.decode(toks))}
        for name, method in METHODS.items():
            masks, _ = ev.keep_masks(lm.model, pf, method)
            toks, _, _ = ev.decode(lm.model, pf, masks, none, req.max_new_tokens, lm.eos_ids)
            forced = [m.clone() for m in masks]
            for m in forced:
                m[..., pos] = True
            toks2, _, _ = ev.decode(lm.model, pf, forced, none, req.max_new_tokens, lm.eos_ids)
            row[name] = {"kept": sum(float(m.float().mean()) for m in masks) / len(masks),
                         "answer": lm.decode(toks), "score": lm.score(req, lm.decode(toks)),
                         "needle_entries_evicted": sum(int((~m[..., pos]).sum()) for m in masks),
                         "needle_kept_by_layer_head": ["".join("1" if b else "." for b in m[0, h, pos].tolist())
                                                       for m in masks for h in range(m.shape[1])],
                         "with_needle_forced_kept": {"answer": lm.decode(toks2),
                                                     "score": lm.score(req, lm.decode(toks2))}}
        row["needle_entries_total"] = len(pos) * sum(int(m[0].shape[0]) for m in full)
        row["needle_rank_by_last64_attention"] = attention_ranks(lm.model, ctx, pos)
        rows.append(row)
    summary = {
        "prompts": len(rows),
        "full_score": sum(lm.score(r, rw["full"]) for r, rw in zip(reqs, rows)) / len(rows),
        "random_5pct_score": sum(rw["random_5pct_evicted"]["score"] for rw in rows) / len(rows),
        **{f"{n}_score": sum(rw[n]["score"] for rw in rows) / len(rows) for n in METHODS},
        **{f"{n}_needle_forced_score": sum(rw[n]["with_needle_forced_kept"]["score"] for rw in rows) / len(rows)
           for n in METHODS},
        "max_full_path_logit_diff": max(rw["full_path_max_abs_logit_diff_vs_fresh_forward"] for rw in rows),
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"summary": summary, "prompts": rows}, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
