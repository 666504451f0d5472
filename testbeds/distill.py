"""Distilled domain drafters for spec-serve: 1–2 decoder blocks on the target's frozen embedding, norm and head.

A drafter `distK-DOMAIN` starts as the target's first K blocks (the early-exit drafter `eeK`) and is distilled
briefly on target-generated text of one domain: the target answers `prompts` training requests of the domain
(greedy, its own chat template; prompts from a seed no calibration or served workload uses), and the drafter's
K blocks are trained to match the target's next-token distribution (its top-32, renormalised; cross-entropy)
at every continuation position. The embedding, final norm and tied head stay frozen (they are the target's), so
the drafter shares the target's tokenizer and vocabulary by construction.

Only the K blocks' weights are stored (safetensors, ~14 MB per block for SmolLM2), under
`<cache>/spec_serve_drafters/<key>.safetensors`, keyed by the target's fingerprint, domain, K and the training
settings; never committed. Built by `python benchmarks/spec_serve_drafters.py` (or on first use by
`planner plan ... --drafters dist2-code,...`).

    >>> # spec = DistillSpec("code", layers=2); st = distill(target, teacher_data(target, ids, 48, eos), spec)
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from core.cache import cache_dir, cache_key

log = logging.getLogger(__name__)

TRAIN_SEED = 271_828          # training prompts' seed: never a calibration or served seed (those are < 10^6 + 10^4)
TEACHER_TOP_K = 32
FORMAT = 1


@dataclass(frozen=True)
class DistillSpec:
    """How one domain drafter is distilled (every field is part of its cache key)."""

    domain: str
    layers: int = 2
    prompts: int = 20            # training requests of the domain
    new_tokens: int = 40         # target tokens generated per training request
    steps: int = 80              # optimiser steps (batch of `batch` sequences each)
    batch: int = 4
    lr: float = 1e-3
    seed: int = 0


def drafter_name(spec: DistillSpec) -> str:
    return f"dist{spec.layers}-{spec.domain}"


def weights_path(model_fingerprint: str, spec: DistillSpec) -> Path:
    """Where the drafter's K blocks are cached."""
    key = cache_key("spec_serve_distilled", FORMAT, model_fingerprint, asdict(spec))
    return cache_dir() / "spec_serve_drafters" / f"{key}.safetensors"


def teacher_data(target: Any, ids: Sequence[list[int]], new_tokens: int, eos: Sequence[int],
                 progress: Callable[[str], None] = lambda s: None) -> list[dict[str, Any]]:
    """Per training request: the full token ids (prompt + the target's greedy continuation), where the
    continuation starts, and the target's top-k next-token distribution at each continuation position."""
    import torch

    out = []
    for j, x in enumerate(ids):
        if j % 8 == 0:
            progress(f"target text {j + 1}/{len(ids)}")
        t = torch.tensor([list(x)])
        with torch.no_grad():
            gen = target.generate(t, attention_mask=torch.ones_like(t), do_sample=False, max_new_tokens=new_tokens,
                                  pad_token_id=int(eos[0]) if eos else 0)
        full = gen[0].tolist()
        cont = full[len(x):]
        for k, tok in enumerate(cont):           # stop at the first end-of-sequence token (kept)
            if tok in eos:
                full = full[:len(x) + k + 1]
                break
        if len(full) <= len(x):
            continue
        with torch.no_grad():
            logits = target(torch.tensor([full])).logits[0, len(x) - 1:len(full) - 1].float()
        p = torch.softmax(logits, dim=-1)
        vals, idx = torch.topk(p, TEACHER_TOP_K, dim=-1)
        out.append({"ids": full, "start": len(x), "idx": idx, "p": vals / vals.sum(-1, keepdim=True)})
    return out


def truncated(target: Any, layers: int) -> Any:
    """A copy of the target with its first `layers` blocks, final norm and tied head (the eeK drafter)."""
    m = copy.deepcopy(target)
    m.model.layers = m.model.layers[:layers]
    m.config.num_hidden_layers = layers
    if getattr(m.config, "layer_types", None):
        m.config.layer_types = list(m.config.layer_types)[:layers]
    return m


def distill(target: Any, data: Sequence[dict[str, Any]], spec: DistillSpec,
            progress: Callable[[str], None] = lambda s: None) -> tuple[Any, dict[str, float]]:
    """Train the first `spec.layers` blocks of a copy of `target` on `data` (frozen embedding, norm, head).
    Returns (drafter model in eval mode, stats: seconds, first and last loss, top-1 agreement on the data)."""
    import torch

    torch.manual_seed(spec.seed)
    m = truncated(target, spec.layers)
    for p in m.parameters():
        p.requires_grad_(False)
    params = [p for layer in m.model.layers for p in layer.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(spec.seed)
    t0 = time.process_time()
    losses = []
    m.train()
    for step in range(spec.steps):
        pick = torch.randint(len(data), (spec.batch,), generator=g).tolist()
        loss = torch.zeros(())
        for i in pick:
            d = data[i]
            h = m.model(input_ids=torch.tensor([d["ids"]])).last_hidden_state[0, d["start"] - 1:len(d["ids"]) - 1]
            logq = torch.log_softmax(m.lm_head(h).float(), dim=-1)
            loss = loss - (d["p"] * logq.gather(1, d["idx"])).sum(-1).mean() / spec.batch
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step % 20 == 0:
            progress(f"{drafter_name(spec)} step {step}/{spec.steps}: loss {float(loss):.3f}")
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m, {"cpu_s": time.process_time() - t0, "loss_first": float(sum(losses[:10]) / max(len(losses[:10]), 1)),
               "loss_last": float(sum(losses[-10:]) / max(len(losses[-10:]), 1))}


def top1_agreement(drafter: Any, data: Sequence[dict[str, Any]]) -> float:
    """Share of continuation positions where the drafter's argmax is the target's (teacher forcing)."""
    import torch

    hit = n = 0
    with torch.no_grad():
        for d in data:
            logits = drafter(torch.tensor([d["ids"]])).logits[0, d["start"] - 1:len(d["ids"]) - 1]
            hit += int((logits.argmax(-1) == d["idx"][:, 0]).sum())
            n += logits.shape[0]
    return hit / max(n, 1)


def block_state(drafter: Any) -> dict[str, Any]:
    """The trained blocks' tensors (the only part that differs from the target)."""
    return {k: v.detach().contiguous() for k, v in drafter.state_dict().items() if k.startswith("model.layers.")}


def save_blocks(drafter: Any, path: Path) -> None:
    """Write the blocks atomically (safetensors)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(block_state(drafter), str(tmp))
    tmp.replace(path)


def load_blocks(base: Any, path: Path) -> Any:
    """`base` (the target truncated to K blocks) with the distilled blocks loaded from `path`."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    missing, unexpected = base.load_state_dict(state, strict=False)
    if unexpected or any(k.startswith("model.layers.") for k in missing):
        raise ValueError(f"{path} does not hold the blocks of a {base.config.num_hidden_layers}-block drafter")
    return base.eval()


def training_ids(domain: str, count: int, tokenizer: Any, vocab: int) -> list[list[int]]:
    """Chat-template ids of `count` training requests of `domain` (seed TRAIN_SEED; folded into `vocab`)."""
    from testbeds.domains import generate
    from testbeds.prompts import chat_ids

    return [[t % vocab for t in chat_ids(tokenizer, p)] for p in generate(domain, count, TRAIN_SEED)]


def ensure_distilled(target: Any, model_fingerprint: str, spec: DistillSpec, tokenizer: Any, eos: Sequence[int],
                     progress: Callable[[str], None] = lambda s: None) -> tuple[Path, dict[str, Any]]:
    """The cached drafter's path, training it first when it is not cached; stats of the training when run."""
    import json

    path = weights_path(model_fingerprint, spec)
    meta = path.with_suffix(".json")
    if path.exists():
        try:
            return path, json.loads(meta.read_text())
        except (OSError, ValueError):
            return path, {}
    vocab = int(target.config.vocab_size)
    t0 = time.process_time()
    data = teacher_data(target, training_ids(spec.domain, spec.prompts, tokenizer, vocab), spec.new_tokens, eos,
                        progress)
    gen_s = time.process_time() - t0
    held = data[-max(1, len(data) // 6):]
    train = data[:len(data) - len(held)] or data
    base_agree = top1_agreement(truncated(target, spec.layers), held)
    drafter, stats = distill(target, train, spec, progress)
    stats.update({"teacher_cpu_s": gen_s, "top1_heldout_before": base_agree,
                  "top1_heldout_after": top1_agreement(drafter, held), "train_sequences": len(train),
                  "heldout_sequences": len(held), "spec": asdict(spec)})
    save_blocks(drafter, path)
    meta.write_text(json.dumps(stats, indent=1, sort_keys=True))
    log.info("%s: %s", drafter_name(spec), stats)
    return path, stats
