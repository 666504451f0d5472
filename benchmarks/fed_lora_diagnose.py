"""fed-lora diagnosis (issue 20): the instruction bed's plan on one seed against the same plan with some clients'
(depth, quantised blocks) changed, to measure what one client's depth does to the federated model.

Why seed 1 of `benchmarks/fed_lora.py` is lost by the plan (while memory_fit and full_depth reach the target): on that
split phone-b holds 293 of the 397 training examples, 285 of them one task (`upper`), and the runtime averages every
block over the clients that trained it, weighted by samples. This runs the plan and the plan with phone-b at depth 1
(`--set phone-b=1/0`) from the same start, split and batches, and scores the held-out answer-token accuracy per
task at the end. A diagnosis on a scored seed: nothing here feeds back into the planner.

    nice env OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.fed_lora_diagnose --seed 1 --set phone-b=1/0 \\
        --utility-fit build/bench/fed_lora_utility_fit.json
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from core.atomic_io import write_text_atomic

OUT = Path("build/bench/fed_lora_diagnose.json")


def per_task_accuracy(art_dir: Path, state: dict[str, np.ndarray]) -> dict[str, float]:
    """Held-out teacher-forced answer-token accuracy per task of the global adapters `state` (full depth)."""
    import torch

    from runtime.fed.lora_app import _pad
    from runtime.fed.lora_model import base_model, device_model, load_artifact
    from runtime.fed_expand.data import answer_accuracy, held_out_batches

    art = load_artifact(art_dir)
    t = art.config["training"]
    held = held_out_batches(dict(t["data"]), int(t["seq_len"]), int(art.config["model"]["vocab_size"]),
                            _pad(art.config["model"]))
    tensors = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}
    dev = device_model(art, base_model(art), art.num_blocks, (), 8, tensors)
    out = {}
    for task in sorted({x for _, _, tasks in held for x in tasks}):
        rows = [(ids[[i for i, x in enumerate(tasks) if x == task]], mask[[i for i, x in enumerate(tasks) if x == task]],
                 None) for ids, mask, tasks in held if task in tasks]
        out[task] = answer_accuracy(dev.module.model, rows)["token_accuracy"]
    dev.remove_hooks()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="CLIENT=D/Q",
                    help="the variant: the plan with these clients at depth D, Q quantised blocks (repeatable)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--utility-fit", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from benchmarks.fed_lora import BED_TASKS, bed_artifact
    from runtime.fed import lora_run

    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="fedlora-diag-"))
    art, cfg = bed_artifact(work, args.seed, args.rounds,
                            plan_args=("--utility-fit", str(args.utility_fit)) if args.utility_fit else ())
    cfg_path = art / "runtime.yaml"
    L = int(cfg["lora"]["num_blocks"])
    variant = {cid: dict(c) for cid, c in cfg["clients"].items()}
    for item in args.set:
        cid, dq = item.split("=")
        d, q = (int(x) for x in dq.split("/"))
        variant[cid].update({"lora-depth": d, "act-quant-blocks": ",".join(str(b) for b in range(L - d, L - d + q))})
    cfg["baselines"]["variant"] = {"description": f"the plan with {', '.join(args.set)}", "clients": variant}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=True))
    runs = {}
    for name in ("plan", "variant"):
        rec = lora_run.run_in_process(art, rounds=args.rounds, baseline=None if name == "plan" else "variant",
                                      keep_state=True, on_round=lambda r, c=name: print(
                                          f"  [{c}] round {r['round']}: acc {r['accuracy']:.3f}", flush=True))
        clients = cfg["clients"] if name == "plan" else variant
        runs[name] = {"clients": {cid: f"{c['lora-depth']}/{len([b for b in str(c['act-quant-blocks']).split(',') if b])}"
                                  for cid, c in sorted(clients.items())},
                      "curve": [{"round": c["round"], "accuracy": c["accuracy"], "emulated_clock_s": c["emulated_clock_s"]}
                                for c in rec["rounds"]],
                      "final_per_task_accuracy": per_task_accuracy(art, rec["final_state"])}
        print(name, runs[name]["clients"], "final per task", runs[name]["final_per_task_accuracy"], flush=True)
    from runtime.fed_expand.data import client_examples

    split = {cid: {t: sum(e.task == t for e in client_examples(cfg["training"]["data"], len(cfg["clients"]), i))
                   for t in BED_TASKS.split("+")} for i, cid in enumerate(sorted(cfg["clients"]))}
    out = {"seed": args.seed, "set": args.set, "split": split, "runs": runs, "wall_s": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["split"]), f"wrote {args.out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
