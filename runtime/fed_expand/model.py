"""The models a fed-expand run trains, rebuilt from runtime.yaml (docs/fed-expand.md, "Runtime").

  * `base_model(cfg)`: SmolLM2 (or a truncation) with its real weights from the test bed's cache, or, for a
    tiny plan, the same architecture at the tiny config with seeded random weights;
  * `expanded_model(cfg)`: the base with the plan's identity blocks inserted (testbeds/block_expansion.py:
    copies with zeroed o_proj / down_proj), the only trainable parameters in a FedBE round;
  * `lora_model(cfg)`: the base with PEFT LoRA (rank 8, alpha 16) on q, k, v, o of every block (the LoRA
    FedAvg baseline at uniform depth: every block).
Each is built once per process and deep-copied per use (`fresh`).
"""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from core.errors import ArtifactError

ARTIFACT_FORMAT = 1
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@functools.lru_cache(maxsize=4)
def read_config(artifact_dir: str) -> Mapping[str, Any]:
    """runtime.yaml of an artifact (checked format)."""
    path = Path(artifact_dir) / "runtime.yaml"
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ArtifactError(f"cannot read {path}", "emit the plan again") from exc
    if not isinstance(cfg, dict) or cfg.get("family") != "fed-expand" or cfg.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path} is not a fed-expand artifact of format {ARTIFACT_FORMAT}", "emit the plan again")
    return cfg


def _build_base(name: str, tiny: bool, tiny_config: str, seed: int) -> Any:
    import transformers

    torch.set_num_threads(1)
    if tiny:
        torch.manual_seed(seed)
        config = transformers.LlamaConfig(**json.loads(tiny_config))
        return transformers.LlamaForCausalLM(config).float().eval()
    from testbeds.smollm2 import load_model

    return load_model(name).float().eval()


@functools.lru_cache(maxsize=2)
def _base(name: str, tiny: bool, tiny_config: str, seed: int) -> Any:
    return _build_base(name, tiny, tiny_config, seed)


def base_model(cfg: Mapping[str, Any]) -> Any:
    """The (cached) base model of the artifact; callers deep-copy before training (see `fresh`)."""
    m = cfg["model"]
    return _base(str(m["name"]), bool(m["tiny"]), json.dumps(m.get("tiny_config") or {}, sort_keys=True), int(m["seed"]))


@functools.lru_cache(maxsize=2)
def _expanded(name: str, tiny: bool, tiny_config: str, seed: int, after: tuple[int, ...]) -> Any:
    from testbeds.block_expansion import expand_blocks

    big, _ = expand_blocks(_base(name, tiny, tiny_config, seed), after=list(after))
    return big.eval()


def expanded_model(cfg: Mapping[str, Any]) -> Any:
    """The (cached) expanded model at initialisation."""
    m = cfg["model"]
    return _expanded(str(m["name"]), bool(m["tiny"]), json.dumps(m.get("tiny_config") or {}, sort_keys=True),
                     int(m["seed"]), tuple(int(a) for a in cfg["expansion"]["added_after"]))


def added_state(model: Any, layers: list[int]) -> dict[str, torch.Tensor]:
    """Parameters of the expanded model's layers `layers`, named `model.layers.<i>.<param>`."""
    out = {}
    for i in layers:
        for n, p in model.model.layers[i].named_parameters():
            out[f"model.layers.{i}.{n}"] = p.detach()
    return out


def lora_model(cfg: Mapping[str, Any]) -> Any:
    """A fresh PEFT LoRA model on every block of the base (seeded initial adapters)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(int(cfg["model"]["seed"]))
    model = copy.deepcopy(base_model(cfg))
    lcfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=list(LORA_TARGETS), bias="none")
    return get_peft_model(model, lcfg)


def lora_params(model: Any) -> dict[str, torch.Tensor]:
    """LoRA tensors of a PEFT model by name."""
    return {n: p.detach() for n, p in model.named_parameters() if "lora_" in n}


def decoder(model: Any) -> Any:
    """The underlying LlamaForCausalLM of a (PEFT-wrapped) model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def load_named(model: Any, state: Mapping[str, torch.Tensor]) -> None:
    """Copy `state` into the parameters of the same names (missing names are an error)."""
    params = dict(model.named_parameters())
    missing = [k for k in state if k not in params]
    if missing:
        raise ArtifactError(f"received tensors the model does not have: {missing[:3]}", "emit the plan again")
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)
