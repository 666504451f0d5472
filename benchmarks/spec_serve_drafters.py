"""Build the distilled domain drafters of spec-serve (testbeds/distill.py) for SmolLM2-135M and report them.

For each domain: the target answers the domain's training requests (seed testbeds.distill.TRAIN_SEED, never a
calibration or served seed), the first K blocks are distilled on that text (frozen embedding, norm, head), and
the blocks are cached under `<cache>/spec_serve_drafters/` (never committed). Prints, per drafter, the CPU
seconds spent and the top-1 agreement with the target on held-out training-domain text before (the plain eeK
drafter) and after distillation. Writes build/bench/spec_serve_drafters.json.

    python benchmarks/spec_serve_drafters.py [--layers 2] [--domains code,chat,math] [--steps 160]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.atomic_io import write_text_atomic  # noqa: E402
from runtime.spec_serve.nodes import build_target, model_key  # noqa: E402
from testbeds.distill import DistillSpec, drafter_name, ensure_distilled  # noqa: E402

log = logging.getLogger("bench.spec_serve_drafters")
MODEL = {"name": "smollm2-135m", "tiny": False, "seed": 0, "eos": [2]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=DistillSpec.layers)
    ap.add_argument("--domains", default="code,chat,math")
    ap.add_argument("--steps", type=int, default=DistillSpec.steps)
    ap.add_argument("--prompts", type=int, default=DistillSpec.prompts)
    ap.add_argument("--out", default=str(ROOT / "build" / "bench" / "spec_serve_drafters.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from testbeds.smollm2 import load_tokenizer

    target = build_target(MODEL)
    tok = load_tokenizer()
    out = {}
    for dom in [d.strip() for d in args.domains.split(",") if d.strip()]:
        spec = DistillSpec(dom, layers=args.layers, steps=args.steps, prompts=args.prompts)
        path, stats = ensure_distilled(target, model_key(MODEL), spec, tok, MODEL["eos"], log.info)
        out[drafter_name(spec)] = {"path": str(path), **stats}
        log.info("%s: %s", drafter_name(spec), json.dumps(stats))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps({"summary": out}, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
