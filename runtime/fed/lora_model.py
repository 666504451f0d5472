"""The fed-lora artifact as the runtime reads it: runtime.yaml, the base model, per-depth PEFT adapters.

`load_artifact(dir)` parses runtime.yaml (written by `planner emit`, see codegen/fed_lora.py);
`base_model(art)` rebuilds the task model: the digits transformer with its emitted weights, or, for the
instruction test bed (task `instruct`), a causal LM wrapped as `InstructLM` (SmolLM2 or a truncation with its
real weights from the test bed's cache, or a tiny plan's model with its emitted weights); `device_model(...)` applies one
client's plan: the emitted `adapters/depth-<d>/adapter_config.json` through `peft.get_peft_model`,
the input of the lowest LoRA block detached, the planned blocks' saved activations quantised
(kernels.saved_activations), and the given LoRA state loaded. This mirrors codegen/fed_lora.py's
`build_device_model` from the emitted files; a test checks both give the same model.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from torch import nn

from core.errors import ArtifactError, reason_of
from kernels.lora_state import load_lora_state
from kernels.saved_activations import SavedTensorLedger, detach_block_input, quantize_saved_activations

ARTIFACT_FORMAT = 1
RUNNABLE_TASKS = ("digits", "instruct")


@dataclass(frozen=True)
class Artifact:
    """A fed-lora artifact directory and its parsed runtime.yaml."""

    path: Path
    config: Mapping[str, Any]

    @property
    def lora(self) -> Mapping[str, Any]:
        """The LoRA structure (blocks_path, num_blocks, target_modules, head_modules, rank, alpha, act_group, ...)."""
        return self.config["lora"]

    @property
    def num_blocks(self) -> int:
        """L."""
        return int(self.lora["num_blocks"])

    def clients(self, baseline: str | None = None) -> Mapping[str, Mapping[str, Any]]:
        """The per-client config map of the plan, or of one of its baselines."""
        if baseline is None:
            return self.config["clients"]
        table = self.config.get("baselines") or {}
        if baseline not in table:
            known = ", ".join(sorted(table)) or "none (the plan had too many clients to carry them)"
            raise ArtifactError(f"the artifact has no baseline '{baseline}'", f"use one of: {known}")
        return table[baseline]["clients"]


@functools.lru_cache(maxsize=4)
def _read_yaml(path: str, mtime: float) -> Mapping[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_artifact(path: str | Path) -> Artifact:
    """Read and check `<path>/runtime.yaml`."""
    p = Path(path)
    f = p / "runtime.yaml"
    if not f.is_file():
        raise ArtifactError(f"{p} has no runtime.yaml", "pass a directory written by `planner emit`")
    try:
        cfg = _read_yaml(str(f), f.stat().st_mtime)
    except (OSError, yaml.YAMLError) as exc:
        raise ArtifactError(f"cannot read {f} ({reason_of(exc)})", "re-run `planner emit`") from exc
    if not isinstance(cfg, dict) or cfg.get("family") != "fed-lora":
        raise ArtifactError(f"{f} is not a fed-lora artifact", "emit a fed-lora plan")
    if cfg.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{f} has artifact format {cfg.get('format')}, this runtime reads {ARTIFACT_FORMAT}",
                            "re-run `planner emit` with this version")
    return Artifact(p, cfg)


class InstructLM(nn.Module):
    """A causal LM fine-tuned on instruction answers: `model` is the LM (the module path the plan's profile and the
    emitted adapters use: `model.model.layers`), the loss is next-token cross-entropy on the answer tokens, with
    the head over every position as in the profiled step (the workspace the memory model holds)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def answer_loss(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the tokens `mask` marks (ids, mask: (batch, seq); pads are never targets)."""
        labels = ids.masked_fill(~mask, -100)
        return self.model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, use_cache=False).loss


def _digits_model(art: Artifact, model: Mapping[str, Any]) -> nn.Module:
    from safetensors.torch import load_file

    from runtime.fed.digits_model import DigitsTransformer

    m = DigitsTransformer(**model["arch"])
    weights = art.path / model["weights"]
    if not weights.is_file():
        raise ArtifactError(f"{weights} is missing", "re-run `planner emit`")
    m.load_state_dict(load_file(str(weights)))
    return m


def _instruct_model(art: Artifact, model: Mapping[str, Any]) -> nn.Module:
    """The causal LM: a tiny plan's emitted weights and config, or the named model's real weights (test bed)."""
    import importlib

    import transformers

    if model.get("weights"):
        from safetensors.torch import load_file

        weights = art.path / model["weights"]
        if not weights.is_file():
            raise ArtifactError(f"{weights} is missing", "re-run `planner emit`")
        hf = dict(model["hf_config"])
        config = transformers.AutoConfig.for_model(hf.pop("model_type"), **hf)
        lm = transformers.AutoModelForCausalLM.from_config(config)
        lm.load_state_dict(load_file(str(weights)))
    else:
        mod, _, fn = str(model["loader"]).partition(":")
        try:
            lm = getattr(importlib.import_module(mod), fn)(str(model["name"]))
        except (ImportError, AttributeError) as exc:
            raise ArtifactError(f"cannot load {model['name']} through {model['loader']} ({reason_of(exc)})",
                                "install the test bed's model package (make venv) or re-run `planner emit`") from exc
    return InstructLM(lm.float())


@functools.lru_cache(maxsize=2)
def _base_model_cached(path: str, mtime: float) -> nn.Module:
    art = load_artifact(path)
    model = art.config["model"]
    if model.get("task") not in RUNNABLE_TASKS:
        raise ArtifactError(f"model {model.get('name')} has no federated dataset this runtime can train on",
                            "plan digits-transformer, a SmolLM2 variant (e.g. smollm2-135m:4L) or any causal LM "
                            "with --tiny to run the federation (the emitted adapters and client configs are what "
                            "real devices take)")
    m = _digits_model(art, model) if model["task"] == "digits" else _instruct_model(art, model)
    return m.eval()


def base_model(art: Artifact) -> nn.Module:
    """A fresh copy of the artifact's base task model (cached per process) whose parameters and buffers are the
    cached model's own tensors, shared, not copied: every base weight is frozen (PEFT adds the trainable LoRA tensors,
    and copies a `modules_to_save` head before training it), so a client never writes them, and a copy per client
    round would cost ~0.1-0.3 CPU s and the model's bytes (SmolLM2:4L: 170 MB) for nothing."""
    f = art.path / "runtime.yaml"
    cached = _base_model_cached(str(art.path), f.stat().st_mtime)
    shared: dict[int, Any] = {id(t): t for t in list(cached.parameters()) + list(cached.buffers())}
    return copy.deepcopy(cached, memo=shared)


def initial_lora(art: Artifact) -> dict[str, torch.Tensor]:
    """The shared initial LoRA (and head) tensors at full depth, by exchange name."""
    from safetensors.torch import load_file

    return load_file(str(art.path / art.config["adapters"]["initial"]))


@dataclass
class ClientModel:
    """A client's model following its plan; `module` is the task model with adapters."""

    module: nn.Module
    trainable_blocks: tuple[int, ...]
    handles: list[Any]

    def remove_hooks(self) -> None:
        """Remove the detach and quantisation hooks."""
        for h in self.handles:
            h.remove()
        self.handles.clear()


def device_model(art: Artifact, base: nn.Module, depth: int, quant_blocks: tuple[int, ...], bits: int,
                 state: Mapping[str, torch.Tensor] | None = None, ledger: SavedTensorLedger | None = None) -> ClientModel:
    """Apply one client's plan to `base` (modified in place; pass a copy)."""
    from peft import LoraConfig, get_peft_model

    L = art.num_blocks
    if not 1 <= depth <= L:
        raise ArtifactError(f"LoRA depth {depth} is outside 1..{L}", "re-emit the plan")
    cfg_dir = art.path / "adapters" / f"depth-{depth}"
    if not (cfg_dir / "adapter_config.json").is_file():
        raise ArtifactError(f"{cfg_dir}/adapter_config.json is missing", "re-run `planner emit`")
    cfg = LoraConfig.from_pretrained(str(cfg_dir))
    peft_model = get_peft_model(base, cfg)
    inner = peft_model.base_model.model
    if state:
        load_lora_state(inner, state)
    blocks = inner.get_submodule(art.lora["blocks_path"])
    lo = L - depth
    handles = [detach_block_input(blocks[lo])]
    if quant_blocks:
        handles += quantize_saved_activations([blocks[b] for b in sorted(quant_blocks)], bits=bits,
                                              group=int(art.lora.get("act_group", 64)),
                                              min_numel=int(art.lora.get("act_min_numel", 1024)), ledger=ledger)
    return ClientModel(module=inner, trainable_blocks=tuple(range(lo, L)), handles=handles)


def parse_blocks(text: str | int) -> tuple[int, ...]:
    """'5,6' -> (5, 6); '' -> ()."""
    s = str(text).strip()
    return tuple(int(x) for x in s.split(",") if x.strip()) if s else ()
