"""Which reading of GVote's sampled-query model recovers the oracle keep set? A measurement, before tuning.

GVote (spec others.md §1) samples future queries from a Gaussian fitted to the normed hidden states that feed
q_proj; the spec's reading (fit over the whole prompt bar the sinks, diagonal covariance, top-B_step keys per
sample) is tagged [design]. Per prompt of the quick benchmark's calibration draw (needles and arithmetic), for
each reading (`fit` x `budget` x successor spans, see runtime/kv_budget/keep_sets) and p_nuc, through the same
runtime the benchmark uses: kept share, recall of the oracle keep set (union of the nucleus sets of the actual
answer queries, teacher-forced; same p_nuc), recall of the needle's digit entries, and the greedy answer's
score against the compressed cache. Also the oracle's own kept share (what the answer really read) and the
answer decoded from the oracle keep set (plus sinks and window).
Writes build/bench/kv_budget_query_model.json. Run one process at a time, OMP_NUM_THREADS=1.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.kv_budget_needle_diagnosis import needle_positions  # noqa: E402
from planner.families.kv_budget.workload import load_lm, make_requests  # noqa: E402
from planner.registry import resolve_model  # noqa: E402
from runtime.kv_budget import evaluation as ev  # noqa: E402
from runtime.kv_budget.gvote_press import GVotePress  # noqa: E402

READINGS: dict[str, dict[str, Any]] = {
    "prompt_diag_top": {"fit": "prompt", "budget": "top"},            # the spec's reading
    "recent_diag_top": {"fit": "recent", "budget": "top"},
    "recent_cov_top": {"fit": "recent_cov", "budget": "top"},
    "prompt_cov_top": {"fit": "prompt_cov", "budget": "top"},
    "prompt_diag_nucleus": {"fit": "prompt", "budget": "nucleus"},
    "recent_cov_nucleus": {"fit": "recent_cov", "budget": "nucleus"},
    "prompt_cov_nucleus": {"fit": "prompt_cov", "budget": "nucleus"},
    "prompt_diag_top_span": {"fit": "prompt", "budget": "top", "anchors": 4, "span": 8},
    "prompt_diag_nucleus_span": {"fit": "prompt", "budget": "nucleus", "anchors": 4, "span": 8},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="ruler:niah@512:3+arith:word1:2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--p-nuc", default="0.95,0.99")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--readings", default=",".join(READINGS))
    ap.add_argument("--no-decode", action="store_true", help="recall and kept share only (no answers)")
    ap.add_argument("--out", default=str(ROOT / "build" / "bench" / "kv_budget_query_model.json"))
    args = ap.parse_args(argv)
    spec = resolve_model("smollm2-135m")
    lm = load_lm(spec, False, None, args.seed)
    reqs = make_requests(args.workload, lm, args.seed, spec, False)
    none = torch.zeros(1, 0, dtype=torch.long)
    mods = ev.attention_modules(lm.model)
    p_list = [float(x) for x in args.p_nuc.split(",")]
    rows: list[dict[str, Any]] = []
    for j, req in enumerate(reqs):
        ctx = torch.tensor([req.context_ids])
        pf = ev.prefill(lm.model, ctx)
        full = [torch.ones(k.shape[:3], dtype=torch.bool) for k in pf.keys]
        ref, _, _ = ev.decode(lm.model, pf, full, none, req.max_new_tokens, lm.eos_ids)
        pos = needle_positions(list(req.context_ids), lm.tokenizer, req.answer) if req.task.startswith("niah") else []
        follow = torch.tensor([ref[:-1]])
        for p in p_list:
            orc = ev.oracle_masks(lm.model, pf, follow, p) if follow.shape[1] else \
                [torch.zeros_like(m) for m in full]
            need = sum(int(o.sum()) for o in orc)
            base = {"prompt": j, "task": req.task, "tokens": pf.length, "p_nuc": p}
            orow = {**base, "reading": "oracle", "recall": 1.0,
                    "kept": sum(int(o.sum()) for o in orc) / sum(m.numel() for m in full)}
            if not args.no_decode:   # the oracle keep set itself (sinks and window added, as every method has)
                omasks = [o.clone() for o in orc]
                for om in omasks:
                    om[..., :4] = True
                    om[..., -32:] = True
                toks, _, _ = ev.decode(lm.model, pf, omasks, none, req.max_new_tokens, lm.eos_ids)
                orow["answer"] = lm.decode(toks)
                orow["score"] = lm.score(req, orow["answer"])
            rows.append(orow)
            print(json.dumps(orow), flush=True)
            for name in args.readings.split(","):
                press = GVotePress(p_nuc=p, n_samples=args.samples, n_sink=4, window=32, seed=args.seed,
                                   **READINGS[name])
                t0 = time.perf_counter()
                with torch.no_grad():
                    masks = press.all_masks(mods, pf.hidden, pf.keys)
                took = time.perf_counter() - t0
                hit = sum(int((m & o).sum()) for m, o in zip(masks, orc))
                row = {**base, "reading": name, "select_s": round(took, 3),
                       "kept": sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks),
                       "recall": hit / need if need else 1.0}
                if pos:
                    row["needle_entries_evicted"] = sum(int((~m[..., pos]).sum()) for m in masks)
                    row["needle_oracle_entries_missed"] = sum(int((o[..., pos] & ~m[..., pos]).sum())
                                                              for m, o in zip(masks, orc))
                if not args.no_decode:
                    toks, _, _ = ev.decode(lm.model, pf, masks, none, req.max_new_tokens, lm.eos_ids)
                    row["answer"] = lm.decode(toks)
                    row["score"] = lm.score(req, row["answer"])
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary: dict[str, Any] = {}
    for p in p_list:
        for name in ["oracle"] + args.readings.split(","):
            rs = [r for r in rows if r["reading"] == name and r["p_nuc"] == p]
            key = f"{name}@{p}"
            summary[key] = {"kept": round(sum(r["kept"] for r in rs) / len(rs), 4),
                            "recall": round(sum(r["recall"] for r in rs) / len(rs), 4)}
            for task in sorted({r["task"] for r in rs}):
                summary[key][f"kept_{task}"] = round(sum(r["kept"] for r in rs if r["task"] == task)
                                                     / sum(1 for r in rs if r["task"] == task), 4)
            if rs and "score" in rs[0]:
                summary[key]["accuracy"] = round(sum(r["score"] for r in rs) / len(rs), 4)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"workload": args.workload, "seed": args.seed, "samples": args.samples,
                                "summary": summary, "rows": rows}, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
