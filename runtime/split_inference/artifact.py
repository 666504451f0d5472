"""Load what `planner emit` wrote for a split-inference plan: the halves' code and weights, runtime.yaml.

Everything is checked before any code runs: the manifest's sha256 of every file, the artifact format
version, that runtime.yaml's partitions name files the manifest lists. The halves are the fx code
codegen wrote (not a re-derivation): each `edge.py` / `cloud.py` is parsed and checked against a
small allow-list first (imports of torch, math, operator and the UAQ kernels only; one `nn.Module`
class with a `forward` made of assignments and calls; no dunder names), then executed with a
restricted `__import__`, and its weights come from `model/weights.safetensors` at their qualified
names (registered as buffers: inference only). A tampered or foreign file is refused with an
`ArtifactError` naming it.

    art = load_artifact(Path("build"), role="edge")
    part = art.partition("p0"); wire = part.edge(x)
"""
from __future__ import annotations

import ast
import builtins
import importlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from core.errors import ArtifactError
from runtime.split_inference.wire import WireSpec, wire_specs

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = (1,)
FAMILY = "split-inference"
ALLOWED_MODULES = ("torch", "math", "operator", "kernels.uniform_quant")
FORBIDDEN_NAMES = {"eval", "exec", "compile", "open", "globals", "locals", "vars", "setattr", "delattr", "input",
                   "breakpoint", "__import__", "memoryview", "help", "exit", "quit"}
SAFE_BUILTINS = {"getattr": getattr, "type": type, "slice": slice, "Ellipsis": Ellipsis, "None": None,
                 "True": True, "False": False, "tuple": tuple, "list": list, "float": float, "int": int}


@dataclass
class Partition:
    """One emitted (cut, bits) configuration: loaded halves and the plan's figures for it."""

    pid: str
    index: int
    info: dict[str, Any]
    wire: list[WireSpec]
    edge: torch.nn.Module | None = None
    cloud: torch.nn.Module | None = None

    @property
    def all_edge(self) -> bool:
        """True when the whole model runs on the edge (nothing crosses the link)."""
        return self.info.get("cloud_code") is None

    @property
    def predicted(self) -> dict[str, Any]:
        """The plan's predicted stage times for this partition (ms, B, req/s)."""
        return dict(self.info.get("predicted") or {})

    @property
    def wire_bytes(self) -> int:
        """Payload bytes of one request on the uplink (B), as runtime.yaml computed them."""
        return int(self.info.get("wire_payload_bytes", 0))


@dataclass
class Artifact:
    """A loaded split-inference artifact directory."""

    root: Path
    config: dict[str, Any]
    manifest: dict[str, Any]
    partitions: list[Partition] = field(default_factory=list)

    @property
    def artifact_id(self) -> str:
        """32 hex characters identifying the emitted files (both sides must agree)."""
        return str(self.config["artifact_id"])

    @property
    def format(self) -> int:
        """The artifact format version."""
        return int(self.config["format"])

    def partition(self, pid: str) -> Partition:
        """The partition with id `pid`."""
        for p in self.partitions:
            if p.pid == pid:
                return p
        raise ArtifactError(f"the artifact has no partition '{pid}'",
                            f"use one of: {', '.join(p.pid for p in self.partitions)}")

    def expected_wire(self) -> dict[int, list[WireSpec]]:
        """partition index -> the tensors a REQUEST for it must carry (for `wire.decode`)."""
        return {p.index: p.wire for p in self.partitions}

    def config_partition(self, name: str) -> Partition:
        """The partition a named configuration runs ("plan" or a baseline's name)."""
        configs = self.config.get("configs", {})
        if name not in configs:
            raise ArtifactError(f"the artifact has no configuration '{name}'",
                                f"use one of: {', '.join(sorted(configs))}")
        return self.partition(configs[name]["partition"])


def read_manifest(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, runtime.yaml) after verifying every file's checksum (`core.artifacts`) and the formats."""
    from core.artifacts import read_manifest as verified

    manifest = verified(path)
    if manifest.get("family", FAMILY) != FAMILY:
        raise ArtifactError(f"{path} holds a {manifest.get('family', 'unknown')} artifact, not {FAMILY}",
                            "run it with its own family's runtime")
    if "runtime.yaml" not in manifest["files"]:
        raise ArtifactError(f"{path} has no runtime.yaml in its manifest", "re-run `planner emit`")
    try:
        rt = yaml.safe_load((path / "runtime.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ArtifactError(f"{path}/runtime.yaml cannot be read ({exc})", "re-run `planner emit`") from exc
    if not isinstance(rt, dict):
        raise ArtifactError(f"{path}/runtime.yaml is not a mapping", "re-run `planner emit`")
    fmt = rt.get("format")
    if fmt not in SUPPORTED_FORMATS:
        raise ArtifactError(f"{path}/runtime.yaml has split-inference format {fmt}; this runtime reads format "
                            f"{', '.join(map(str, SUPPORTED_FORMATS))}",
                            "emit the plan again with this planner version (or run the planner version that emitted it)")
    if rt.get("family") != FAMILY:
        raise ArtifactError(f"{path}/runtime.yaml is for family {rt.get('family')}, not {FAMILY}",
                            "run it with its own family's runtime")
    if "artifact_id" in manifest and rt.get("artifact_id") != manifest.get("artifact_id"):
        raise ArtifactError("runtime.yaml and manifest.json name different artifacts", "re-run `planner emit`")
    return manifest, rt


# ------------------------------------------------------------------ generated code
def check_source(src: str, where: str) -> None:
    """Refuse generated code that does more than an fx forward: see the module docstring for the rules."""
    try:
        tree = ast.parse(src, filename=where)
    except SyntaxError as exc:
        raise ArtifactError(f"{where} is not valid Python ({exc.msg}, line {exc.lineno})", "re-run `planner emit`") from exc

    def bad(node: ast.AST, why: str) -> ArtifactError:
        return ArtifactError(f"{where} line {getattr(node, 'lineno', '?')}: {why}, which generated split code never "
                             "contains", "re-run `planner emit`; do not edit the emitted files")

    classes = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Import):
            for a in stmt.names:
                if not _allowed_module(a.name):
                    raise bad(stmt, f"import of {a.name}")
        elif isinstance(stmt, ast.ImportFrom):
            if stmt.level or not stmt.module or not _allowed_module(stmt.module):
                raise bad(stmt, f"import from {stmt.module}")
        elif isinstance(stmt, ast.ClassDef):
            classes.append(stmt)
        elif isinstance(stmt, ast.Assign) and ast.unparse(stmt) == "NoneType = type(None)":
            continue
        else:
            raise bad(stmt, f"a top-level {type(stmt).__name__}")
    if len(classes) != 1:
        raise ArtifactError(f"{where} defines {len(classes)} classes, expected one", "re-run `planner emit`")
    cls = classes[0]
    if [ast.unparse(b) for b in cls.bases] != ["torch.nn.Module"] or cls.decorator_list or cls.keywords:
        raise bad(cls, "a class that is not a plain torch.nn.Module")
    if len(cls.body) != 1 or not isinstance(cls.body[0], ast.FunctionDef) or cls.body[0].name != "forward":
        raise bad(cls, "a class body other than one forward method")
    fn = cls.body[0]
    if fn.decorator_list:
        raise bad(fn, "a decorated forward")
    for stmt in fn.body:
        if not isinstance(stmt, (ast.Assign, ast.Return, ast.Expr)):
            raise bad(stmt, f"a {type(stmt).__name__} statement")
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and (node.id.startswith("__") or node.id in FORBIDDEN_NAMES):
            raise bad(node, f"the name {node.id}")
        # dunder attributes only as aten operator names (`torch.ops.aten.__and__.Tensor`)
        if isinstance(node, ast.Attribute) and node.attr.startswith("__") and \
                not re.fullmatch(r"torch\.ops\.[a-z_]+\.__[a-z]+__", ast.unparse(node)):
            raise bad(node, f"the attribute {node.attr}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("__"):
            raise bad(node, f"the string {node.value!r}")
        if isinstance(node, (ast.Lambda, ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom, ast.Global,
                             ast.Nonlocal, ast.While, ast.For, ast.With, ast.Try, ast.Await, ast.Yield)) and node is not fn:
            raise bad(node, f"a {type(node).__name__}")


def _allowed_module(name: str) -> bool:
    return name in ALLOWED_MODULES or name.startswith("torch.")


def _restricted_import(name: str, globals_: Any = None, locals_: Any = None, fromlist: Any = (), level: int = 0) -> Any:
    if level or not _allowed_module(name):
        raise ImportError(f"generated split code may not import {name}")
    return importlib.__import__(name, globals_, locals_, fromlist, level)


def load_half(path: Path, weights: dict[str, torch.Tensor], names: list[str]) -> torch.nn.Module:
    """Check, execute and instantiate one emitted half; attach its weights as buffers."""
    src = path.read_text(encoding="utf-8")
    check_source(src, str(path.name if path.parent.name == "" else f"{path.parent.name}/{path.name}"))
    namespace: dict[str, Any] = {"__builtins__": {**SAFE_BUILTINS, "__import__": _restricted_import,
                                                  "__build_class__": builtins.__build_class__},
                                 "__name__": f"planner_split_{path.parent.name}_{path.stem}"}
    exec(compile(src, str(path), "exec"), namespace)  # checked above: imports, one class, assignments and calls
    cls = next(v for k, v in namespace.items() if isinstance(v, type) and issubclass(v, torch.nn.Module))
    module = cls()
    for name in names:
        if name not in weights:
            raise ArtifactError(f"{path.name} reads the tensor {name}, which the weights file does not hold",
                                "re-run `planner emit`")
        _set_buffer(module, name, weights[name])
    return module.eval()


def _set_buffer(root: torch.nn.Module, path: str, value: torch.Tensor) -> None:
    parts = path.split(".")
    mod = root
    for part in parts[:-1]:
        nxt = mod._modules.get(part)
        if nxt is None:
            nxt = torch.nn.Module()
            mod.add_module(part, nxt)
        mod = nxt
    mod.register_buffer(parts[-1], value)


def load_artifact(path: Path, role: str = "both") -> Artifact:
    """Verify and load an artifact; `role` "edge", "cloud" or "both" says which halves to build."""
    from safetensors.torch import load_file

    if role not in ("edge", "cloud", "both"):
        raise ValueError(f"role must be edge, cloud or both, not {role}")
    path = Path(path)
    manifest, rt = read_manifest(path)
    listed = set(manifest["files"])
    try:
        parts = list(rt["partitions"])
        weights_rel = str(rt["weights"])
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}/runtime.yaml lacks {exc}", "re-run `planner emit`") from exc
    if weights_rel not in listed:
        raise ArtifactError(f"runtime.yaml names weights {weights_rel}, which the manifest does not list", "re-run `planner emit`")
    weights = load_file(str(path / weights_rel))
    art = Artifact(path, rt, manifest)
    for i, e in enumerate(parts):
        part = Partition(str(e["id"]), i, e, wire_specs(e.get("wire", [])))
        for side in ("edge", "cloud"):
            rel = e.get(f"{side}_code")
            if rel is None or role not in (side, "both"):
                continue
            if rel not in listed:
                raise ArtifactError(f"runtime.yaml names {rel}, which the manifest does not list", "re-run `planner emit`")
            setattr(part, side, load_half(path / rel, weights, list(e.get(f"{side}_weights", []))))
        art.partitions.append(part)
    return art
