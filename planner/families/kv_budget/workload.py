"""The model and the prompts of a kv-budget plan: the test beds' loader and task generators, nothing of our own.

`load_lm` gives the causal LM (catalog weights through the catalog's loader, a user's checkpoint directory, or
the tiny random same-architecture model for tests), its tokenizer and the task scorer; `make_requests` draws
the workload's prompts (seeded) and splits each into the context that is compressed and the question that is
decoded against the compressed cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from core.errors import PlannerError
from planner.families.kv_budget.measure import KvRequest

ANSWER_MARGIN = 64   # question + answer tokens a prompt needs beyond its context (checked against the context)


@dataclass
class LoadedLM:
    """A causal LM ready for the runtime (fp32, CPU, sdpa attention, one thread) and its text helpers."""

    model: Any
    tokenizer: Any
    num_params: int
    vocab_size: int
    max_context: int
    eos_ids: tuple[int, ...]
    decode: Callable[[list[int]], str]
    score: Callable[[str, str, str], float]
    fingerprint: str | None = None     # of a --weights directory's config and weight files; None otherwise


LLAMA_STYLE = ("LlamaConfig", "MistralConfig", "Qwen2Config", "Qwen3Config")


def check_model(spec: Any, tiny: bool) -> None:
    """A Llama-style decoder LM (attention layers with q/k/v projections and RoPE), or a one-line error."""
    if spec.kind != "transformers" or spec.task != "causal-lm":
        raise PlannerError(f"{spec.name} has no decoder attention layers, so it keeps no KV cache to budget",
                           "plan a decoder LM such as smollm2-135m with --scenario kv-budget")
    if spec.config_class not in LLAMA_STYLE:
        raise PlannerError(f"{spec.name} is a {spec.config_class} decoder; kv-budget runs Llama-style attention "
                           "(q/k/v projections, RoPE, grouped KV heads) as kvpress does",
                           "plan a Llama-style LM such as smollm2-135m")


def max_context(spec: Any, tiny: bool) -> int:
    """Positions the model (or its tiny version) can attend over."""
    cfg = {**(spec.config or {}), **((spec.tiny or {}) if tiny else {})}
    return int(cfg.get("max_position_embeddings", 2048))


def parse_workload(text: str, spec: Any, tiny: bool) -> list[Any]:
    """The test beds' workload specs (several joined by '+', e.g. ruler:niah@1k:4+arith:word2:4), each checked
    against the model's context (one-line errors)."""
    from testbeds.specs import parse_workload as tb_parse

    out = []
    limit = max_context(spec, tiny)
    for part in text.split("+"):
        wl = tb_parse(part)
        if wl.length_tokens and wl.length_tokens + ANSWER_MARGIN > limit:
            raise PlannerError(f"--workload {part}: prompts of {wl.length_tokens} tokens plus the answer exceed "
                               f"{spec.name}'s context of {limit} tokens",
                               f"use a length of at most {limit - ANSWER_MARGIN} tokens")
        out.append(wl)
    return out


def weights_fingerprint(weights: str) -> str:
    """sha256 (16 hex digits) over a --weights directory's config.json and weight files, names and bytes, so a
    plan names the checkpoint it was measured on and `emit`/`run` notice when the files have changed."""
    import hashlib

    path = Path(weights)
    if not (path / "config.json").is_file():
        raise PlannerError(f"--weights {weights}: no config.json there",
                           "pass a Hugging Face model directory (config.json + safetensors)")
    files = [path / "config.json"] + sorted(f for f in path.iterdir()
                                            if f.is_file() and f.suffix in (".safetensors", ".bin"))
    if len(files) == 1:
        raise PlannerError(f"--weights {weights}: no .safetensors or .bin weight files there",
                           "pass a Hugging Face model directory saved with save_pretrained")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()[:16]


def check_weights_config(weights: str) -> None:
    """A --weights directory holds a Llama-style causal LM (what kvpress and the ragged cache run), or a
    one-line error naming what it holds."""
    import json

    try:
        cfg = json.loads((Path(weights) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PlannerError(f"--weights {weights}: config.json is not readable JSON ({exc.__class__.__name__})",
                           "pass a Hugging Face model directory saved with save_pretrained") from exc
    kind = str(cfg.get("model_type", "?"))
    if kind.capitalize() + "Config" not in LLAMA_STYLE:
        raise PlannerError(f"--weights {weights}: holds a '{kind}' model; kv-budget runs Llama-style attention "
                           "(llama, mistral, qwen2, qwen3)", "pass a Llama-style causal LM's directory")


def load_lm(spec: Any, tiny: bool, weights: str | None, seed: int) -> LoadedLM:
    """The LM of the plan (see the module docstring)."""
    import torch
    import transformers

    from testbeds.prompts import score as tb_score
    from testbeds.smollm2 import load_tokenizer, one_thread

    one_thread()
    fingerprint = None
    if weights:
        path = Path(weights)
        fingerprint = weights_fingerprint(weights)
        check_weights_config(weights)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path)) if (path / "tokenizer.json").is_file() \
            else load_tokenizer()
        if len(tokenizer) > int(model.config.vocab_size):
            raise PlannerError(f"--weights {weights}: the model's vocabulary ({model.config.vocab_size}) is smaller "
                               f"than its tokenizer's ({len(tokenizer)}; SmolLM2's when the directory has no "
                               "tokenizer.json)", "save the checkpoint's tokenizer in the directory "
                               "(tokenizer.save_pretrained)")
    elif tiny:
        from profilers.models import transformers_config

        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(transformers_config(spec, True), dtype=torch.float32)
        tokenizer = load_tokenizer()
    else:
        from profilers.models import build_model

        model = build_model(spec, tiny=False, device="cpu").module
        tokenizer = load_tokenizer()
    model.set_attn_implementation("sdpa")   # kvpress: AdaKV and PyramidKV fail under eager
    model.eval()
    vocab = int(model.config.vocab_size)

    def decode(ids: list[int]) -> str:
        return tokenizer.decode([i for i in ids if i < len(tokenizer)], skip_special_tokens=True)

    eos = tokenizer.eos_token_id
    return LoadedLM(model, tokenizer, sum(p.numel() for p in model.parameters()), vocab,
                    int(model.config.max_position_embeddings), (int(eos),) if eos is not None and eos < vocab else (),
                    decode, lambda req, text: tb_score(req.ref, text), fingerprint)


def make_requests(text: str, lm: LoadedLM, seed: int, spec: Any, tiny: bool) -> list[KvRequest]:
    """The workload's prompts drawn with `seed`, as token records: the whole chat prompt (context, question and
    answer prefix) is prefilled and compressed (question-aware); the answer is decoded against the compressed
    cache. The tiny model's smaller vocabulary takes the ids modulo its size (its scores mean nothing)."""
    from testbeds.prompts import chat_ids
    from testbeds.specs import build_workload

    prompts = [p for wl in parse_workload(text, spec, tiny)
               for p in build_workload(wl, lm.tokenizer, seed=seed, max_context=lm.max_context)]
    out = []
    for p in prompts:
        ids = [i % lm.vocab_size for i in chat_ids(lm.tokenizer, p)]
        out.append(KvRequest(p.task, tuple(ids), (), ", ".join(p.answers), int(p.max_new_tokens), p))
    return out
