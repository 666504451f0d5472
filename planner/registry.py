"""Catalogs and name resolution: models, hardware, planning families.

Everything a user can name on the command line resolves here, with a one-line error naming the
closest known names when it does not.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from core.errors import InputMismatchError, PlannerError, UnknownNameError, closest_names
from planner.families.base import Family
from profilers.hardware import GIB, HardwareProfile, profile_from_dict
from profilers.model_spec import ModelSpec, spec_from_dict

CATALOG = Path(__file__).parent / "catalog"
_CAPPED = re.compile(r"^(?P<base>[a-z0-9_.-]+?)_(?P<gb>\d+(?:\.\d+)?)gb$")


# ---------------------------------------------------------------- families
@lru_cache(maxsize=None)
def families() -> tuple[Family, ...]:
    """Every planning family, in the order scenario inference asks them (one line each)."""
    from planner.families.dfgl import DfglFamily
    from planner.families.fed_compress import FedCompressFamily
    from planner.families.fed_expand import FedExpandFamily
    from planner.families.fed_graph import FedGraphFamily
    from planner.families.fed_lora import FedLoraFamily
    from planner.families.geo_train import GeoTrainFamily
    from planner.families.kv_budget import KvBudgetFamily
    from planner.families.moe_offload import MoeOffloadFamily
    from planner.families.spec_serve import SpecServeFamily
    from planner.families.split_inference import SplitInferenceFamily

    return (
        DfglFamily(),               # claims only with --workers and --graph: asked first, nothing to profile
        FedGraphFamily(),           # claims only with --clients and --graph
        SplitInferenceFamily(),
        MoeOffloadFamily(),
        FedLoraFamily(),
        FedCompressFamily(),
        FedExpandFamily(),
        KvBudgetFamily(),
        GeoTrainFamily(),
        SpecServeFamily(),
    )


def family(name: str) -> Family:
    """Look up a family by name (`--scenario`)."""
    for f in families():
        if f.name == name:
            return f
    raise UnknownNameError(f"unknown scenario '{name}'", closest_names(name, [f.name for f in families()])
                           + f"; the scenarios are {', '.join(f.name for f in families())}")


# ---------------------------------------------------------------- hardware
def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlannerError(f"cannot read {path} ({exc.strerror or 'I/O error'})", "pass a readable YAML file") from exc
    except UnicodeDecodeError as exc:
        raise PlannerError(f"{path} is not UTF-8 text", "pass a YAML file") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise PlannerError(f"{path} is not valid YAML{where}", "fix the file or pass another one") from exc
    if not isinstance(data, dict):
        raise PlannerError(f"{path} does not hold a mapping",
                           "write one `key: value` per field, as `planner hardware show a100_80gb` prints")
    return data


@lru_cache(maxsize=None)
def hardware_catalog() -> dict[str, HardwareProfile]:
    """All catalog hardware profiles by name."""
    out = {}
    for path in sorted((CATALOG / "hardware").glob("*.yaml")):
        out[path.stem] = profile_from_dict(_load_yaml(path), str(path))
    return out


def load_hardware_file(path: str | Path, flag: str = "--hardware") -> HardwareProfile:
    """A hardware profile from a YAML file (catalog layout, e.g. written by `planner hardware measure`)."""
    p = Path(path)
    if not p.is_file():
        raise PlannerError(f"{flag} {p}: the hardware file does not exist",
                           "check the path, or create one with `planner hardware measure -o FILE`")
    try:
        return profile_from_dict(_load_yaml(p), str(p))
    except (ValueError, TypeError) as exc:
        raise PlannerError(f"{flag} {exc}", "fix the field or re-create the file with `planner hardware measure`") from exc


def resolve_hardware(name: str, flag: str = "--hardware") -> HardwareProfile:
    """A catalog name, `<base>_<N>gb` (memory capped from a known base), or a YAML path."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return load_hardware_file(name, flag)
    cat = hardware_catalog()
    if name in cat:
        return cat[name]
    m = _CAPPED.match(name)
    if m:
        prefix = m.group("base")
        bases = sorted((p for k, p in cat.items() if _CAPPED.match(k) and _CAPPED.match(k).group("base") == prefix and p.base is None),
                       key=lambda p: p.memory_bytes)
        if bases:
            base = bases[-1]
            cap = int(float(m.group("gb")) * GIB)
            if cap > base.memory_bytes:
                raise PlannerError(f"{flag} {name} asks for more memory than {base.name} has ({base.memory_bytes / GIB:g} GiB)",
                                   f"use at most {prefix}_{int(base.memory_bytes // GIB)}gb")
            if cap <= 0:
                raise PlannerError(f"{flag} {name} caps memory at 0", "use a positive size, e.g. a100_24gb")
            return base.capped(cap, name)
    raise UnknownNameError(f"unknown hardware '{name}' ({flag})", closest_names(name, cat) + "; see `planner hardware list`")


# ---------------------------------------------------------------- models
@lru_cache(maxsize=None)
def model_catalog() -> dict[str, ModelSpec]:
    """All catalog model specs by name."""
    out = {}
    for path in sorted((CATALOG / "models").glob("*.yaml")):
        spec = spec_from_dict(_load_yaml(path), str(path))
        out[spec.name] = spec
    return out


def _spec_from_config_file(path: Path) -> ModelSpec:
    """A spec for a transformers config file, whatever it is called (checked before anything is built)."""
    from profilers.model_config import check_config, read_config_file

    cfg = read_config_file(path)
    check_config(cfg, str(path))
    archs = cfg.get("architectures") or []
    arch = archs[0] if archs and isinstance(archs[0], str) else ""
    moe = any(cfg.get(k) for k in ("num_local_experts", "num_experts", "n_routed_experts"))
    task = ("causal-lm" if arch.endswith("ForCausalLM") or (not arch and moe) else
            "image-classification" if arch.endswith("ForImageClassification") else "encoder")
    dtype = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(str(cfg.get("torch_dtype") or cfg.get("dtype")), "bf16")
    kind = "image" if task == "image-classification" or "image_size" in cfg else "tokens"
    size = int(cfg.get("image_size", 224)) if kind == "image" else 0
    name = path.parent.name if path.name == "config.json" and path.parent.name else path.stem
    return ModelSpec(name=name, kind="config-file", task=task, source=str(path),
                     dtype=dtype, inputs={"kind": kind, "seq_len": 128, "size": size, "tiny_size": size,
                                          "channels": int(cfg.get("num_channels", 3))},
                     config_path=str(path))


_TRUNCATED = re.compile(r"^(?P<base>[a-z0-9_.-]+):(?P<n>\d+)L$")


def truncated_spec(base: ModelSpec, layers: int, name: str) -> ModelSpec:
    """`NAME:NL`: a catalog transformers model keeping its first `layers` blocks (final norm and head kept)."""
    total = base.config.get("num_hidden_layers") if base.kind == "transformers" else None
    if not isinstance(total, int):
        raise PlannerError(f"{name}: {base.name} has no layer count to truncate",
                           "use NAME:NL only with transformers models whose config sets num_hidden_layers")
    if not 1 <= layers <= total:
        raise PlannerError(f"{name} keeps {layers} layers but {base.name} has {total}",
                           f"use {base.name}:NL with 1 <= N <= {total}")
    config = {**base.config, "num_hidden_layers": layers}
    tiny = dict(base.tiny)
    if "num_hidden_layers" in tiny:
        tiny["num_hidden_layers"] = min(int(tiny["num_hidden_layers"]), layers)
    return replace(base, name=name, config=config, tiny=tiny,
                   source=f"{base.source}; first {layers} of {total} layers, final norm and head kept")


def resolve_model(name: str) -> ModelSpec:
    """A catalog name, `NAME:NL` (first N layers of a catalog model), a path to a transformers config.json,
    `path/to/file.py:factory` or `package.module:factory` (the factory takes no arguments and returns
    `(module, example_args)`)."""
    cat = model_catalog()
    if name in cat:
        return cat[name]
    m = _TRUNCATED.match(name)
    if m and m.group("base") in cat:
        return truncated_spec(cat[m.group("base")], int(m.group("n")), name)
    file_factory = re.match(r"^(.+\.py):([A-Za-z_]\w*)$", name)
    if file_factory:
        path = Path(file_factory.group(1))
        if not path.is_file():
            raise PlannerError(f"model file {path} does not exist",
                               "pass FILE.py:FUNCTION with a file that defines FUNCTION() -> (module, example_args)")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]     # a changed file is another model
        return ModelSpec(name=name, kind="factory", task="custom", source=f"factory {name}", factory=name,
                         config={"file_sha256": digest})
    local = Path(name)
    if name.endswith(".json") or "/" in name or local.is_file() or (local.is_dir() and (local / "config.json").is_file()):
        # a local file or model directory that exists wins over a catalog miss (`planner plan mymix`)
        p = local
        if p.is_dir():
            p = p / "config.json"
        if not p.is_file():
            raise PlannerError(f"model config {p} does not exist",
                               "pass a transformers config file (any name) or a directory holding config.json")
        return _spec_from_config_file(p)
    if ":" in name and re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", name):
        return ModelSpec(name=name, kind="factory", task="custom", source=f"factory {name}", factory=name)
    if local.is_dir():
        raise UnknownNameError(f"unknown model '{name}', and the directory {name} holds no config.json",
                               f"put the model's transformers config.json in {name}/, or pass a catalog name ("
                               + closest_names(name, cat) + ")")
    raise UnknownNameError(f"unknown model '{name}'", closest_names(name, cat) + "; a config.json path, FILE.py:factory or package.module:factory also works")


def plan_model(plan: Any, spec: ModelSpec | None = None) -> ModelSpec:
    """The model a plan was made for (the catalog's entry, or `spec`), or a one-line error when it no longer
    matches the plan's model fingerprint (the catalog or the loader changed since the plan)."""
    spec = spec if spec is not None else resolve_model(plan.model.name)
    if spec.fingerprint(plan.model.tiny) != plan.model.fingerprint:
        raise InputMismatchError(f"the model {plan.model.name} no longer matches the plan's model fingerprint",
                                 "re-plan with this version of `planner plan`")
    return spec
