"""Run one configuration of an emitted kv-budget plan on held-out prompts and write the receipt.

Per prompt: prefill, the configuration's keep sets, the answer decoded against the ragged cache that holds only
them (its bytes measured from the tensors), the task score; and the full-cache answer's score on the same prompt.
Predicted bytes per prompt = the plan's kept fraction for the prompt's task x prompt tokens x KV bytes per token.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from core.sampling_error import score_stderr, within_sampling_error
from runtime.kv_budget import evaluation as ev
from runtime.receipt import Receipt


def run_config(model: Any, requests: Sequence[Any], name: str, method: dict[str, Any], predicted: dict[str, Any],
               token_bytes: float, decode_text: Callable[[list[int]], str], score: Callable[[Any, str], float],
               eos_ids: Sequence[int], workload: str, progress: Callable[[str], None] = lambda s: None) -> Receipt:
    """The receipt of configuration `name` on `requests` (KvRequest records)."""
    rows = []
    for j, req in enumerate(requests):
        progress(f"prompt {j + 1}/{len(requests)} ({req.task}, {req.length} tokens)")
        pf = ev.prefill(model, torch.tensor([req.context_ids]))
        q = torch.tensor(list(req.question_ids), dtype=torch.long).view(1, -1)
        masks, took = ev.keep_masks(model, pf, method)
        tokens, held, counts = ev.decode(model, pf, masks, q, req.max_new_tokens, eos_ids)
        full = [torch.ones(k.shape[:3], dtype=torch.bool) for k in pf.keys]
        ref, _, _ = ev.decode(model, pf, full, q, req.max_new_tokens, eos_ids)
        frac = predicted["kept_fraction_by_task"].get(req.task, predicted["kept_fraction"])
        pred = frac * req.length * token_bytes
        rows.append({"name": f"prompt {j}", "task": req.task, "prompt_tokens": req.length,
                     "kv_bytes_measured": float(held), "kv_bytes_predicted": float(pred),
                     "kv_bytes_rel_error": float(held / pred - 1.0) if pred else 0.0,
                     "score": score(req, decode_text(tokens)),
                     "full_score": score(req, decode_text(ref)),
                     "select_s": took, "prefill_s": pf.prefill_s, "answer": decode_text(tokens)})
    n = max(len(rows), 1)
    mean_m = sum(r["kv_bytes_measured"] for r in rows) / n
    mean_p = sum(r["kv_bytes_predicted"] for r in rows) / n
    acc = sum(r["score"] for r in rows) / n
    se = score_stderr([r["score"] for r in rows])
    se_pred = float(predicted.get("accuracy_stderr", 0.0))
    rec = Receipt(family="kv-budget", config=name, link="none (one process, CPU)", rows=rows)
    rec.totals = {"prompts": len(rows), "workload": workload, "mean_kv_bytes_measured": mean_m,
                  "mean_kv_bytes_predicted": mean_p, "mean_kv_bytes_rel_error": mean_m / mean_p - 1.0 if mean_p else 0.0,
                  "accuracy_measured": acc, "accuracy_predicted": float(predicted["accuracy"]),
                  "accuracy_error_points": 100 * (acc - float(predicted["accuracy"])),
                  "accuracy_stderr_measured": se, "accuracy_stderr_predicted": se_pred,
                  "calibration_prompts": int(predicted.get("calibration_prompts", 0)),
                  "accuracy_within_sampling_error": within_sampling_error(acc, se, float(predicted["accuracy"]),
                                                                          se_pred),
                  "full_accuracy_measured": sum(r["full_score"] for r in rows) / n,
                  "overhead_fraction_of_prefill": sorted(r["select_s"] / r["prefill_s"] for r in rows)[len(rows) // 2]
                  if rows else 0.0}
    rec.flag_differences((("kv_bytes_measured", "kv_bytes_predicted"),))
    return rec
