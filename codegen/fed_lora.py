"""fed-lora codegen: per-device PEFT models and the per-client Flower config map, from a plan's decisions.

Applies decisions, never makes them. For a device with LoRA depth d and quantised blocks Q (the plan
lists them; FedQuad puts them at the bottom of the trainable range):

* `peft.LoraConfig(target_modules=<attention projections>, layers_to_transform=[L−d .. L−1],
  layers_pattern=<block list name>, modules_to_save=<head>)` and `peft.get_peft_model`: adapters in
  the top d blocks only, every base weight frozen (B is zero-initialised, so outputs equal the base
  model's at initialisation);
* a forward pre-hook on block L−d that detaches its input hidden state, so nothing below the LoRA
  depth is saved for backward or differentiated (kernels.saved_activations.detach_block_input);
* `saved_tensors_hooks` on the blocks in Q: their saved activations are stored as `act_bits`-bit
  groups (kernels.saved_activations.quantize_saved_activations).

`client_config_map(...)` turns the decisions into one scalar config per client, the form a Flower
server strategy hands each client (`ConfigRecord` values); `emit_adapters` writes one PEFT adapter
config per distinct depth plus the shared initial LoRA weights, which the runtime loads.

    >>> spec = LoraSpec.from_layout(layout, rank=8, alpha=16)          # doctest: +SKIP
    >>> dev = build_device_model(model, spec, DeviceDecision(lora_depth=3, act_quant_blocks=(5,), act_bits=8))
    >>> torch.allclose(dev.module(x), model(x))                         # at initialisation
    True
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from core.errors import InputMismatchError
from kernels.lora_state import load_lora_state, lora_state
from kernels.saved_activations import SavedTensorLedger, detach_block_input, quantize_saved_activations


@dataclass(frozen=True)
class LoraSpec:
    """The LoRA structure a plan records, as plain data."""

    blocks_path: str                    # e.g. "encoder.encoder.layer"
    layers_pattern: str                 # PEFT layers_pattern, the block list's name, e.g. "layer"
    num_blocks: int
    target_modules: tuple[str, ...]     # attention projections inside a block
    head_modules: tuple[str, ...] = ()  # trained in full (PEFT modules_to_save)
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    act_group: int = 64
    act_min_numel: int = 1024

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (lists for tuples)."""
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        d["head_modules"] = list(self.head_modules)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LoraSpec":
        """Inverse of `to_dict`."""
        vals = dict(d)
        vals["target_modules"] = tuple(vals["target_modules"])
        vals["head_modules"] = tuple(vals.get("head_modules", ()))
        return cls(**vals)


@dataclass(frozen=True)
class DeviceDecision:
    """One device's plan: LoRA depth (0 = sits out), the blocks whose saved activations are quantised, bits."""

    lora_depth: int
    act_quant_blocks: tuple[int, ...] = ()
    act_bits: int = 8

    @classmethod
    def from_plan(cls, d: Mapping[str, Any]) -> "DeviceDecision":
        """From a plan's `decisions.clients[id]` entry."""
        return cls(int(d["lora_depth"]), tuple(int(b) for b in d.get("act_quant_layers", ())), int(d.get("act_bits", 8)))


@dataclass
class DeviceModel:
    """A device's PEFT model and the hooks that make it follow its plan."""

    peft_model: nn.Module
    spec: LoraSpec
    decision: DeviceDecision
    trainable_blocks: tuple[int, ...]
    handles: list[Any] = field(default_factory=list)
    ledger: SavedTensorLedger | None = None

    @property
    def module(self) -> nn.Module:
        """The underlying task model (with adapters injected), exposing its own methods."""
        return self.peft_model.base_model.model

    def remove_hooks(self) -> None:
        """Remove the detach and quantisation hooks."""
        for h in self.handles:
            h.remove()
        self.handles.clear()


def trainable_block_range(spec: LoraSpec, depth: int) -> list[int]:
    """Blocks L−d .. L−1 (0-based from the input)."""
    return list(range(spec.num_blocks - depth, spec.num_blocks))


def lora_config(spec: LoraSpec, depth: int) -> Any:
    """The `peft.LoraConfig` for LoRA depth `depth`."""
    from peft import LoraConfig

    return LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=list(spec.target_modules), layers_to_transform=trainable_block_range(spec, depth),
                      layers_pattern=spec.layers_pattern, modules_to_save=list(spec.head_modules) or None)


def check_decision(spec: LoraSpec, decision: DeviceDecision, device: str = "device") -> None:
    """The decision must describe the structure codegen applies: 1 ≤ d ≤ L, quantised blocks inside the LoRA range."""
    d = decision.lora_depth
    if not 1 <= d <= spec.num_blocks:
        raise InputMismatchError(f"{device}: LoRA depth {d} is outside 1..{spec.num_blocks}", "re-plan for this model")
    lo = spec.num_blocks - d
    bad = [b for b in decision.act_quant_blocks if not lo <= b < spec.num_blocks]
    if bad:
        raise InputMismatchError(f"{device}: quantised blocks {bad} lie outside its trainable blocks {lo}..{spec.num_blocks - 1}",
                                 "re-plan for this model")


def build_device_model(base: nn.Module, spec: LoraSpec, decision: DeviceDecision, copy_base: bool = True,
                       ledger: SavedTensorLedger | None = None, adapter_state: Mapping[str, torch.Tensor] | None = None
                       ) -> DeviceModel:
    """A PEFT model of `base` (a task model) following `decision`; see the module docstring.

    `adapter_state` (names relative to the task model, as `lora_state` returns) overwrites the fresh
    adapters, e.g. with the federation's shared initial weights.
    """
    from peft import get_peft_model

    check_decision(spec, decision)
    model = copy.deepcopy(base) if copy_base else base
    if model.get_submodule(spec.blocks_path).__len__() != spec.num_blocks:
        raise InputMismatchError(f"the model has {len(model.get_submodule(spec.blocks_path))} blocks at "
                                 f"{spec.blocks_path}, the plan {spec.num_blocks}", "emit the plan for the model it was made for")
    peft_model = get_peft_model(model, lora_config(spec, decision.lora_depth))
    inner = peft_model.base_model.model
    if adapter_state:
        load_lora_state(inner, adapter_state)
    blocks = inner.get_submodule(spec.blocks_path)
    lo = spec.num_blocks - decision.lora_depth
    handles = [detach_block_input(blocks[lo])]
    if decision.act_quant_blocks:
        handles += quantize_saved_activations([blocks[b] for b in sorted(decision.act_quant_blocks)],
                                              bits=decision.act_bits, group=spec.act_group,
                                              min_numel=spec.act_min_numel, ledger=ledger)
    return DeviceModel(peft_model=peft_model, spec=spec, decision=decision,
                       trainable_blocks=tuple(trainable_block_range(spec, decision.lora_depth)), handles=handles,
                       ledger=ledger)


# ------------------------------------------------------------------ Flower config map and adapter files
CLIENT_KEYS = ("device-id", "lora-depth", "act-quant-blocks", "act-bits", "local-steps", "batch-size")


def client_config_map(clients: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """One Flower-scalar config per client (ConfigRecord values: int, float, str; block lists as "5,6").

    Devices that sit out (depth 0) are listed with `lora-depth` 0 so the server skips them.
    """
    out: dict[str, dict[str, Any]] = {}
    for cid in sorted(clients):
        c = clients[cid]
        out[cid] = {
            "device-id": str(cid), "lora-depth": int(c["lora_depth"]),
            "act-quant-blocks": ",".join(str(int(b)) for b in c.get("act_quant_layers", ())),
            "act-bits": int(c.get("act_bits", 8)), "local-steps": int(c.get("local_steps", 1)),
            "batch-size": int(c.get("batch_size", 1)),
            "predicted-round-s": float(c.get("predicted_round_s", 0.0)),
            "predicted-step-s": float(c.get("predicted_step_s", 0.0)),
            "predicted-memory-bytes": int(c.get("predicted_training_bytes", 0)),
        }
    return out


def emit_adapters(base: nn.Module, spec: LoraSpec, depths: list[int], out_dir: Path, seed: int = 0) -> dict[str, str]:
    """Write `adapters/depth-<d>/adapter_config.json` per distinct depth and `adapters/initial_lora.safetensors`
    (the shared initial adapters at full depth, seeded); returns {relative path: description}."""
    from peft import get_peft_model
    from safetensors.torch import save_file

    written = {}
    for d in sorted(set(int(x) for x in depths if int(x) > 0)):
        cfg_dir = out_dir / "adapters" / f"depth-{d}"
        cfg_dir.mkdir(parents=True, exist_ok=True)
        cfg = lora_config(spec, d).to_dict()
        cfg = {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}
        (cfg_dir / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str) + "\n",
                                                     encoding="utf-8")
        written[f"adapters/depth-{d}/adapter_config.json"] = f"PEFT LoraConfig for LoRA depth {d}"
    torch.manual_seed(seed)
    full = get_peft_model(copy.deepcopy(base), lora_config(spec, spec.num_blocks))
    state = {k: v.contiguous() for k, v in lora_state(full.base_model.model).items()}
    save_file(state, str(out_dir / "adapters" / "initial_lora.safetensors"))
    written["adapters/initial_lora.safetensors"] = "shared initial LoRA A/B (B = 0) and head, full depth"
    return written
