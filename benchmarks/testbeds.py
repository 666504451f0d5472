"""Test-bed reference figures: SmolLM2-135M-Instruct speed on this CPU and its full-KV-cache accuracy per task.

Part 1 (timing, one torch thread): for each prompt length (512/2k/4k tokens of a RULER niah prompt), the
prefill time (one forward over the prompt, KV cache built) and the decode speed (greedy tokens after that
prefill, cache in use), repeated `--repeats` times with the lengths interleaved (ABCABC...); median and
min..max are reported. Memory: parameter bytes, KV-cache bytes after the prefill (measured from the cache
tensors), and the process's peak RSS.

Part 2 (accuracy, full KV cache, greedy): every RULER task at each length (`--count` prompts, seed 1, not
the tests' seeds), the arithmetic word problems, the instruction tasks' held-out examples, and the forgetting
probe (QA accuracy, held-out text loss). Accuracy = mean exact-match score (testbeds/prompts.py).

    nice .venv/bin/python -m benchmarks.testbeds           # writes build/bench/testbeds.json
    nice .venv/bin/python -m benchmarks.testbeds --quick   # 512/2k timing once, 2 prompts per task at 512
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from core.atomic_io import write_text_atomic

OUT = Path("build/bench")
LENGTHS = {"512": 512, "2k": 2048, "4k": 4096}


def _spread(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def timing(model: Any, tok: Any, lengths: list[str], repeats: int, decode_tokens: int) -> dict[str, Any]:
    """Prefill tok/s and decode tok/s per length, lengths interleaved within each repeat."""
    import torch

    from testbeds import ruler
    from testbeds.prompts import chat_ids

    ids = {k: torch.tensor([chat_ids(tok, ruler.generate("niah", LENGTHS[k], 1, tok, seed=7)[0])]) for k in lengths}
    pre: dict[str, list[float]] = {k: [] for k in lengths}
    dec: dict[str, list[float]] = {k: [] for k in lengths}
    # tokens per CPU-second of this (single) thread: what one uncontended core would do, roughly (caches and
    # memory bandwidth are still shared), next to the wall-clock figure of a loaded machine
    pre_cpu: dict[str, list[float]] = {k: [] for k in lengths}
    dec_cpu: dict[str, list[float]] = {k: [] for k in lengths}
    kv_bytes: dict[str, int] = {}
    for _ in range(repeats):
        for k in lengths:
            x = ids[k]
            with torch.no_grad():
                c0, t0 = time.thread_time(), time.perf_counter()
                out = model(x, use_cache=True)
                c1, t1 = time.thread_time(), time.perf_counter()
                cache = out.past_key_values
                kv_bytes[k] = int(sum(t.numel() * t.element_size() for layer in cache.layers
                                      for t in (layer.keys, layer.values)))
                nxt = out.logits[:, -1:].argmax(-1)
                c2, t2 = time.thread_time(), time.perf_counter()
                for _ in range(decode_tokens):
                    o = model(nxt, past_key_values=cache, use_cache=True)
                    nxt = o.logits[:, -1:].argmax(-1)
                c3, t3 = time.thread_time(), time.perf_counter()
            pre[k].append(x.shape[1] / (t1 - t0))
            dec[k].append(decode_tokens / (t3 - t2))
            pre_cpu[k].append(x.shape[1] / (c1 - c0))
            dec_cpu[k].append(decode_tokens / (c3 - c2))
            print(json.dumps({"timing": k, "prefill_tok_s": pre[k][-1], "decode_tok_s": dec[k][-1],
                              "prefill_tok_per_cpu_s": pre_cpu[k][-1], "decode_tok_per_cpu_s": dec_cpu[k][-1]}),
                  file=sys.stderr, flush=True)
    return {"prompt_tokens": {k: int(ids[k].shape[1]) for k in lengths},
            "prefill_tok_s": {k: _spread(v) for k, v in pre.items()},
            "decode_tok_s": {k: _spread(v) for k, v in dec.items()},
            "prefill_tok_per_cpu_s": {k: _spread(v) for k, v in pre_cpu.items()},
            "decode_tok_per_cpu_s": {k: _spread(v) for k, v in dec_cpu.items()},
            "kv_cache_bytes": kv_bytes}


def accuracy(model: Any, tok: Any, lengths: list[str], count: int, short_count: int, log: list[dict],
             tasks: list[str] | None = None) -> dict[str, float]:
    """Full-cache accuracy per task: {"niah@2k": 0.75, "arith:word2": 0.4, "instruct:sort": 0.1, "probe_qa": 1.0}."""
    from testbeds import arithmetic, instruct, probe, ruler
    from testbeds.prompts import answer, score

    acc: dict[str, float] = {}

    def run(key: str, prompts: list) -> None:
        scores = []
        for p in prompts:
            t0 = time.perf_counter()
            out = answer(model, tok, p)
            scores.append(score(p, out))
            log.append({"key": key, "id": p.id, "score": scores[-1], "output": out[:200], "answers": list(p.answers),
                        "s": round(time.perf_counter() - t0, 2)})
            print(json.dumps(log[-1]), file=sys.stderr, flush=True)   # progress: runs take tens of minutes here
        acc[key] = sum(scores) / len(scores)

    for k in lengths:
        for task in tasks or ruler.TASKS:
            run(f"{task}@{k}", ruler.generate(task, LENGTHS[k], count, tok, seed=1))
    if short_count:
        for task in arithmetic.TASKS:
            run(f"arith:{task}", arithmetic.generate(task, short_count, seed=1))
        for task in instruct.TASKS:
            run(f"instruct:{task}", [e.as_prompt(f"i{j}") for j, e in enumerate(instruct.examples(task, short_count, "test", 1))])
        run("probe_qa", probe.questions())
    return acc


def merge(paths: list[Path], out: Path) -> dict[str, Any]:
    """One result from several runs (e.g. one process per length): the first file's timing, every other summary
    figure from the first run that has it, the union of the accuracies and answers, each run's config under `runs`."""
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    result = dict(runs[0])
    summary = {k: next((r["summary"][k] for r in runs if r["summary"].get(k) is not None), None)
               for k in runs[0]["summary"]}
    summary["full_cache_accuracy"] = {k: v for r in runs for k, v in r["summary"]["full_cache_accuracy"].items()}
    summary["peak_rss_bytes"] = max(r["summary"]["peak_rss_bytes"] for r in runs)
    result["summary"] = summary
    keys = {r_i: set(r["summary"]["full_cache_accuracy"]) for r_i, r in enumerate(runs)}
    result["answers"] = [a for i, r in enumerate(runs) for a in r["answers"]
                         if not any(a["key"] in keys[j] for j in range(i + 1, len(runs)))]
    result["runs"] = {str(p): r["config"] for p, r in zip(paths, runs)}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(result, indent=1, sort_keys=True))
    print(json.dumps(summary, indent=1, sort_keys=True))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--lengths", default=None, help="comma list of 512,2k,4k (accuracy), or none")
    ap.add_argument("--timing-lengths", default=None, help="comma list of 512,2k,4k (timing), or none")
    ap.add_argument("--count", type=int, default=None, help="RULER prompts per task and length")
    ap.add_argument("--tasks", default=None, help="comma list of RULER tasks (default: all)")
    ap.add_argument("--short-count", type=int, default=None, help="arith/instruct prompts per task (0: skip)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", default=str(OUT / "testbeds.json"))
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="no model run: merge the accuracy of these result files into --out (the first one's timing)")
    a = ap.parse_args(argv)
    if a.merge:
        return merge([Path(m) for m in a.merge], Path(a.out))
    from testbeds import probe, smollm2

    smollm2.one_thread()
    lengths = (a.lengths or ("512" if a.quick else "512,2k,4k")).split(",")
    tlengths = (a.timing_lengths or ("512,2k" if a.quick else "512,2k,4k")).split(",")
    tlengths = [t for t in tlengths if t and t != "none"]
    count = a.count if a.count is not None else (2 if a.quick else 8)
    short = a.short_count if a.short_count is not None else (3 if a.quick else 20)
    repeats = a.repeats or (1 if a.quick else 3)
    t0 = time.perf_counter()
    model, tok = smollm2.load_model(), smollm2.load_tokenizer()
    load_s = time.perf_counter() - t0
    tim = timing(model, tok, tlengths, repeats, 16 if a.quick else 32) if tlengths else {}
    log: list[dict] = []
    acc = accuracy(model, tok, [k for k in lengths if k and k != "none"], count, short, log,
                   a.tasks.split(",") if a.tasks else None)
    loss = probe.text_loss(model, tok, probe.probe_texts(5 if a.quick else 20)) if short else None
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    summary = {
        "smollm2_decode_tok_s": tim["decode_tok_s"][tlengths[0]]["median"] if tim else None,
        "smollm2_prefill_tok_s_2k": tim["prefill_tok_s"]["2k"]["median"] if tim and "2k" in tim["prefill_tok_s"] else None,
        "smollm2_decode_tok_per_cpu_s": tim["decode_tok_per_cpu_s"][tlengths[0]]["median"] if tim else None,
        "smollm2_prefill_tok_per_cpu_s_2k": (tim["prefill_tok_per_cpu_s"]["2k"]["median"]
                                             if tim and "2k" in tim["prefill_tok_per_cpu_s"] else None),
        "full_cache_accuracy": acc,
        "probe_text_loss_nats": loss,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "parameter_bytes_fp32": params,
        "load_s": load_s,
    }
    result = {"summary": summary, "timing": tim, "answers": log,
              "config": {"quick": a.quick, "lengths": lengths, "timing_lengths": tlengths, "count": count,
                         "short_count": short, "repeats": repeats, "tasks": a.tasks, "threads": 1,
                         "note": "one torch thread; shared 2-core machine under load from other sessions"}}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(result, indent=1, sort_keys=True))
    print(json.dumps(summary, indent=1, sort_keys=True))
    return result


if __name__ == "__main__":
    main()
