"""A user's transformers config file, checked before anything is built.

Any JSON file works (`config.json`, `phimoe.json`, ...): it must be an object with a `model_type`
transformers knows, and the size fields it has must be positive whole numbers, the expert counts
consistent (at least one expert, top-k between 1 and the number of experts). Every problem is one
line naming the file, the field and the fix; nothing reaches torch with a value that makes no sense.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from core.errors import PlannerError, reason_of

# size fields that must be positive integers wherever a config has them
POSITIVE_INT_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                       "num_key_value_heads", "vocab_size", "max_position_embeddings", "head_dim",
                       "moe_intermediate_size", "shared_expert_intermediate_size", "image_size", "num_channels",
                       "patch_size", "n_embd", "n_layer", "n_head", "n_positions")
EXPERT_COUNT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts")
TOP_K_FIELDS = ("num_experts_per_tok", "moe_topk", "top_k")


def read_config_file(path: Path) -> dict[str, Any]:
    """The JSON object of a config file (one-line errors for unreadable or non-object files)."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlannerError(f"cannot read model config {path} ({reason_of(exc)})",
                           "check the path and permissions") from exc
    except UnicodeDecodeError as exc:
        raise PlannerError(f"model config {path} is not UTF-8 text", "pass a transformers config JSON file") from exc
    except json.JSONDecodeError as exc:
        raise PlannerError(f"model config {path} is not valid JSON (line {exc.lineno}, column {exc.colno})",
                           "pass a transformers config JSON file") from exc
    if not isinstance(cfg, dict):
        raise PlannerError(f"model config {path} does not hold a JSON object", "pass a transformers config JSON file")
    return cfg


def check_config(cfg: Mapping[str, Any], where: str) -> None:
    """Raise PlannerError naming the field when the config cannot describe a model."""
    from transformers import CONFIG_MAPPING

    mt = cfg.get("model_type")
    if not isinstance(mt, str) or not mt:
        raise PlannerError(f"{where} has no 'model_type'", "add the transformers model type, e.g. \"model_type\": \"mixtral\"")
    if mt not in CONFIG_MAPPING:
        from core.errors import closest_names

        raise PlannerError(f"{where}: model_type '{mt}' is not known to transformers",
                           closest_names(mt, CONFIG_MAPPING.keys()))
    for key in POSITIVE_INT_FIELDS + EXPERT_COUNT_FIELDS + TOP_K_FIELDS:
        if key not in cfg or cfg[key] is None:
            continue
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise PlannerError(f"{where}: field '{key}' is {v!r}, not a whole number", f"set '{key}' to a positive integer")
        if v < 1 and key not in EXPERT_COUNT_FIELDS + TOP_K_FIELDS:
            raise PlannerError(f"{where}: field '{key}' is {v}", f"set '{key}' to a positive integer")
    experts = next((cfg[k] for k in EXPERT_COUNT_FIELDS if cfg.get(k) is not None), None)
    top_k = next((cfg[k] for k in TOP_K_FIELDS if cfg.get(k) is not None), None)
    if experts is not None and experts < 1:
        raise PlannerError(f"{where}: the model has {experts} experts", "an MoE config needs at least 1 expert "
                           "(or drop the expert fields for a dense model)")
    if top_k is not None and experts is not None and not 1 <= top_k <= experts:
        raise PlannerError(f"{where}: top-k (num_experts_per_tok) is {top_k} with {experts} experts",
                           f"set it between 1 and {experts}")
    if top_k is not None and experts is None and top_k < 1:
        raise PlannerError(f"{where}: top-k (num_experts_per_tok) is {top_k}", "set it to 1 or more")


def build_config(cfg: Mapping[str, Any], where: str) -> Any:
    """The transformers config object (after `check_config`); constructor errors become one line."""
    import transformers

    check_config(cfg, where)
    values = {k: v for k, v in cfg.items() if k not in ("model_type", "transformers_version", "_name_or_path")}
    values["use_cache"] = False   # planning captures one forward pass; a KV cache object cannot be exported
    try:
        return transformers.AutoConfig.for_model(cfg["model_type"], **values)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise PlannerError(f"{where}: transformers rejects this config ({str(exc).splitlines()[0][:120]})",
                           "fix the field it names") from exc
