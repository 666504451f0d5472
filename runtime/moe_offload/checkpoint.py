"""Run a plan on the user's own Hugging Face checkpoint (`planner run build/ --weights DIR`).

    ckpt = open_checkpoint(Path("~/models/my-moe"), artifact / "model", dtype=torch.bfloat16)   # checks only
    model, tops, bottoms = ckpt.materialise(f_tops=[...], device=torch.device("cuda"), pin=True)

`open_checkpoint` reads only metadata: the directory's config.json, the shard index
(model.safetensors.index.json, or a single model.safetensors) and each shard's safetensors header. It
checks, before a byte of weights is read, that
  * the directory is a Hugging Face model directory and every shard the index names exists;
  * the architecture is the plan's: the same model_type and architectures, and the same parameter
    names and shapes when both configs are built on the meta device;
  * every parameter of the plan's model is in the checkpoint with the plan's shape and dtype. Keys are
    mapped the way transformers loads them (`get_model_conversion_mapping`: renamings such as
    Mixtral's `block_sparse_moe` -> `mlp`, and the converters that stack per-expert `gate_proj` /
    `up_proj` / `down_proj` tensors into fused 3-D experts); checkpoints that already hold fused
    experts load too.
`materialise` then memory-maps each shard (nothing is read until a tensor is touched), copies the
non-expert weights to the device, and re-lays every routed expert out once into the engine's
segment layout (top and bottom, each (3, rows, d): gate rows, up rows, down columns transposed) in
host memory, pinned when CUDA is present; only the plan's resident tops ever reach the device (the
engine installs them). Non-persistent buffers (rotary tables) are computed by the model's own
`_init_weights`, as transformers' `from_pretrained` does after a meta-device init.
Errors are one line with the fix (`core.errors`), raised before anything is copied.
"""
from __future__ import annotations

import json
import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import InputMismatchError, PlannerError, reason_of
from kernels.moe_blocks import check_layout, moe_blocks

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class TensorEntry:
    """Where one checkpoint tensor lives: shard file, dtype, shape and its byte range in the file."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class ExpertSource:
    """The checkpoint tensors of one routed expert: gate (f, d), up (f, d) and down (d, f) as (key, slice)."""

    gate: tuple[str, tuple[Any, ...]]
    up: tuple[str, tuple[Any, ...]]
    down: tuple[str, tuple[Any, ...]]


def read_header(path: Path) -> tuple[int, dict[str, Any]]:
    """(offset of the data section, header mapping) of one safetensors file (8-byte little-endian length + JSON)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise ValueError("file shorter than its header")
            (n,) = struct.unpack("<Q", raw)
            if n > 100 * 2**20:
                raise ValueError("header longer than 100 MiB")
            header = json.loads(fh.read(n))
            size = os.fstat(fh.fileno()).st_size
        if not isinstance(header, dict):
            raise ValueError("its header is not a JSON object")
    except (OSError, ValueError) as exc:
        raise InputMismatchError(f"--weights: {path} is not a readable safetensors file ({exc})",
                                 "re-download the shard or pass another --weights directory") from exc
    header.pop("__metadata__", None)
    need = 8 + n
    for key, h in header.items():
        offsets = h.get("data_offsets") if isinstance(h, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] and isinstance(h.get("shape"), list) and "dtype" in h):
            raise InputMismatchError(f"--weights: shard {path} has a malformed header entry for tensor {key}",
                                     "re-download the shard or pass another --weights directory")
        need = max(need, 8 + n + offsets[1])
    if size < need:
        raise InputMismatchError(f"--weights: shard {path} is truncated ({size:,} bytes, its header describes "
                                 f"{need:,})", "re-download the shard or pass another --weights directory")
    return 8 + n, header


def _model_on_meta(config: Any, dtype: torch.dtype) -> nn.Module:
    import transformers

    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)


@dataclass
class Checkpoint:
    """A checked checkpoint directory; `materialise` reads it."""

    path: Path
    config: Any
    dtype: torch.dtype
    entries: dict[str, TensorEntry]
    direct: dict[str, str]                                   # model parameter/buffer name -> checkpoint key
    experts: list[dict[int, ExpertSource]]                   # per MoE block (model order): expert -> sources
    unused_keys: list[str] = field(default_factory=list)     # checkpoint keys the model has no place for
    _maps: dict[Path, mmap.mmap] = field(default_factory=dict)

    # ---------------------------------------------------------------- reading
    def tensor(self, key: str) -> torch.Tensor:
        """A tensor of the checkpoint as a view of the memory-mapped shard (no copy)."""
        e = self.entries[key]
        mm = self._maps.get(e.file)
        if mm is None:
            with open(e.file, "rb") as fh:
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[e.file] = mm
        offset = e.begin
        count = 1
        for s in e.shape:
            count *= s
        if count == 0:
            return torch.empty(e.shape, dtype=DTYPES[e.dtype])
        import warnings

        with warnings.catch_warnings():  # the mapping is read-only; the runtime never writes these tensors
            warnings.simplefilter("ignore", UserWarning)
            flat = torch.frombuffer(mm, dtype=DTYPES[e.dtype], count=count, offset=offset)
        return flat.view(e.shape)

    def _part(self, src: tuple[str, tuple[Any, ...]]) -> torch.Tensor:
        key, index = src
        return self.tensor(key)[index] if index else self.tensor(key)

    def expert_segments(self, block: int, expert: int, f_top: int, pin: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Top and bottom segment (3, rows, d) of one expert, re-laid out from the mapped shards."""
        s = self.experts[block][expert]
        gate, up, down = self._part(s.gate), self._part(s.up), self._part(s.down)
        stacked = torch.stack([gate, up, down.t()])   # one copy out of the mapping
        top, bottom = stacked[:, :f_top].contiguous(), stacked[:, f_top:].contiguous()
        if pin:
            top, bottom = top.pin_memory(), bottom.pin_memory()
        return top, bottom

    def materialise(self, f_tops: list[int], device: torch.device, pin: bool = False
                    ) -> tuple[nn.Module, list[dict[int, torch.Tensor]], list[dict[int, torch.Tensor]]]:
        """The model with every non-expert weight on `device` (routed experts left on the meta device, for the
        runtime to swap out) and the expert segments in host memory."""
        model = _model_on_meta(self.config, self.dtype)
        model.eval()
        with torch.no_grad():
            for name, key in self.direct.items():
                value = self.tensor(key).to(device=device, copy=True)
                _set_tensor(model, name, value)
            model.tie_weights()
            owners = []
            for name, buf in list(model.named_non_persistent_buffers()):
                _set_tensor(model, name, torch.empty_like(buf, device=device))
                owners.append(model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model)
            for mod in dict.fromkeys(owners):
                model._init_weights(mod)
        blocks = moe_blocks(model)
        if len(f_tops) != len(blocks):
            raise InputMismatchError(f"the plan has {len(f_tops)} MoE layers but the checkpoint's model has {len(blocks)}",
                                     "run the plan on the checkpoint it was made for")
        tops: list[dict[int, torch.Tensor]] = []
        bottoms: list[dict[int, torch.Tensor]] = []
        for b, f_top in enumerate(f_tops):
            t_l, b_l = {}, {}
            for e in sorted(self.experts[b]):
                top, bottom = self.expert_segments(b, e, int(f_top), pin)
                if top.shape[1]:
                    t_l[e] = top
                if bottom.shape[1]:
                    b_l[e] = bottom
            tops.append(t_l)
            bottoms.append(b_l)
        return model, tops, bottoms


def _set_tensor(model: nn.Module, name: str, value: torch.Tensor) -> None:
    parent, _, leaf = name.rpartition(".")
    mod = model.get_submodule(parent) if parent else model
    if leaf in mod._parameters:
        mod._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    else:
        mod._buffers[leaf] = value


def _shards(path: Path) -> dict[str, Path]:
    """checkpoint key -> shard file, from the index (or the single file); every shard must exist."""
    index = path / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputMismatchError(f"--weights: {index} is not a safetensors index ({reason_of(exc)})",
                                     "re-download the checkpoint's index file") from exc
        files = {k: path / v for k, v in weight_map.items()}
        for f in sorted(set(files.values())):
            if not f.is_file():
                raise InputMismatchError(f"--weights: shard {f.name} named by {INDEX} is missing from {path}",
                                         "download the missing shard (every file the index lists)")
        return files
    single = path / SINGLE
    if single.is_file():
        _, header = read_header(single)
        return {k: single for k in header}
    raise InputMismatchError(f"--weights: {path} has neither {INDEX} nor {SINGLE}",
                             "pass a Hugging Face model directory saved with safetensors")


def _structure(config: Any, dtype: torch.dtype) -> tuple[nn.Module, dict[str, tuple[int, ...]]]:
    model = _model_on_meta(config, dtype)
    sd = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return model, sd


def open_checkpoint(path: Path, plan_model_dir: Path, dtype: torch.dtype) -> Checkpoint:
    """Check a Hugging Face model directory against the plan's model (see the module docstring); reads no weights."""
    import transformers
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    path = Path(path).expanduser()
    if not path.is_dir():
        raise PlannerError(f"--weights {path} does not exist or is not a directory",
                           "pass the Hugging Face model directory (config.json and *.safetensors)")
    if not (path / "config.json").is_file():
        raise InputMismatchError(f"--weights {path} is not a Hugging Face model directory (no config.json)",
                                 "pass the directory that holds config.json and the safetensors shards")
    try:
        cfg = transformers.AutoConfig.from_pretrained(str(path))
        plan_cfg = transformers.AutoConfig.from_pretrained(str(plan_model_dir))
    except (OSError, ValueError, KeyError) as exc:
        raise InputMismatchError(f"--weights: cannot read {path / 'config.json'} ({str(exc).splitlines()[0][:120]})",
                                 "pass a directory whose config.json transformers can read") from exc
    archs, plan_archs = list(getattr(cfg, "architectures", None) or []), list(getattr(plan_cfg, "architectures", None) or [])
    if cfg.model_type != plan_cfg.model_type or (archs and plan_archs and archs != plan_archs):
        raise InputMismatchError(f"--weights {path} holds a {cfg.model_type} model ({', '.join(archs) or '?'}), but the plan "
                                 f"is for {plan_cfg.model_type} ({', '.join(plan_archs) or '?'})",
                                 "run the plan on a checkpoint of its own architecture, or plan this checkpoint")
    model, want = _structure(plan_cfg, dtype)
    _, have = _structure(cfg, dtype)
    for name, shape in want.items():
        if have.get(name) != shape:
            raise InputMismatchError(f"--weights {path}: parameter {name} has shape {have.get(name)} in this "
                                     f"checkpoint's architecture, {shape} in the plan's", "run the plan on the checkpoint "
                                     "it was made for (same config), or plan this checkpoint")
    blocks = moe_blocks(model)
    for blk in blocks:
        try:
            check_layout(blk, int(plan_cfg.hidden_size))
        except ValueError as exc:
            raise InputMismatchError(f"--weights: {exc} by the offloading runtime", "use a model with gate-then-up "
                                     "fused experts (Mixtral, Qwen-MoE, DeepSeek, OLMoE)") from exc
    files = _shards(path)
    entries: dict[str, TensorEntry] = {}
    for f in sorted(set(files.values())):
        data, header = read_header(f)
        for key, h in header.items():
            begin, end = h["data_offsets"]
            entries[key] = TensorEntry(f, str(h["dtype"]), tuple(int(s) for s in h["shape"]), data + int(begin),
                                       data + int(end))
    missing_in_shards = [k for k in files if k not in entries]
    if missing_in_shards:
        raise InputMismatchError(f"--weights: tensor {missing_in_shards[0]} named by the index is in none of the shards",
                                 "re-download the checkpoint")
    # map checkpoint keys onto the model's parameters the way transformers' loader does
    mapping = get_model_conversion_mapping(model)
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]
    fused: dict[str, tuple[int, str]] = {}
    for blk in blocks:
        fused[f"{blk.path}.mlp.experts.gate_up_proj"] = (blk.moe_index, "gate_up")
        fused[f"{blk.path}.mlp.experts.down_proj"] = (blk.moe_index, "down")
    meta_sd = dict.fromkeys(want)
    direct: dict[str, str] = {}
    parts: list[dict[int, dict[str, tuple[str, tuple[Any, ...]]]]] = [{} for _ in blocks]
    unused = []
    n_exp = int(blocks[0].experts.gate_up_proj.shape[0]) if blocks else 0
    f_dim = int(blocks[0].experts.down_proj.shape[-1]) if blocks else 0
    for key in sorted(entries):
        target, pattern = rename_source_key(key, renamings, converters, model.base_model_prefix, meta_sd)
        if target not in want:
            unused.append(key)
            continue
        if target in fused:
            b, kind = fused[target]
            if pattern is None:   # a checkpoint that already holds fused experts
                for e in range(n_exp):
                    if kind == "gate_up":
                        parts[b].setdefault(e, {})["gate"] = (key, (e, slice(0, f_dim)))
                        parts[b][e]["up"] = (key, (e, slice(f_dim, 2 * f_dim)))
                    else:
                        parts[b].setdefault(e, {})["down"] = (key, (e,))
                _check_entry(path, key, entries[key], want[target], dtype)
                continue
            conv = next(c for c in converters if pattern in c.source_patterns)
            ops = [(type(op).__name__, getattr(op, "dim", None)) for op in conv.operations]
            if ops not in ([("MergeModulelist", 0), ("Concatenate", 1)], [("MergeModulelist", 0)]):
                raise InputMismatchError(f"--weights: experts stored as {key} need a conversion ({ops}) the offloading "
                                         "runtime does not apply", "save the model with transformers' save_pretrained")
            m = re.search(r"\.experts\.(\d+)\.", key)
            if m is None:
                raise InputMismatchError(f"--weights: cannot tell which expert {key} holds", "save the model with "
                                         "transformers' save_pretrained")
            role = "down" if kind == "down" else ("gate", "up")[conv.source_patterns.index(pattern)]
            e = int(m.group(1))
            shape = (want[target][1], want[target][2]) if role == "down" else (f_dim, want[target][2])
            _check_entry(path, key, entries[key], shape, dtype)
            parts[b].setdefault(e, {})[role] = (key, ())
            continue
        _check_entry(path, key, entries[key], want[target], dtype)
        direct[target] = key
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {})
    for name in want:
        if name in fused or name in direct or name in tied:
            continue
        if name in dict(model.named_buffers()):   # buffers a checkpoint need not hold (recomputed)
            continue
        raise InputMismatchError(f"--weights {path}: the checkpoint has no tensor for {name}",
                                 "use a complete checkpoint (all shards) of the plan's model")
    experts: list[dict[int, ExpertSource]] = []
    for b, blk in enumerate(blocks):
        got = parts[b]
        for e in range(n_exp):
            roles = got.get(e, {})
            lacking = [r for r in ("gate", "up", "down") if r not in roles]
            if lacking:
                raise InputMismatchError(f"--weights {path}: expert {e} of {blk.path} has no {lacking[0]} weights",
                                         "use a complete checkpoint (all shards) of the plan's model")
        experts.append({e: ExpertSource(got[e]["gate"], got[e]["up"], got[e]["down"]) for e in range(n_exp)})
    return Checkpoint(path, cfg, dtype, entries, direct, experts, unused)


def _check_entry(path: Path, key: str, e: TensorEntry, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    if e.dtype != DTYPE_NAMES.get(dtype):
        raise InputMismatchError(f"--weights {path}: tensor {key} is {e.dtype}, the plan was made for "
                                 f"{DTYPE_NAMES.get(dtype, dtype)}", "re-plan for the checkpoint's dtype, or convert "
                                 "the checkpoint (e.g. save_pretrained after model.to(dtype))")
    if e.shape != tuple(shape):
        raise InputMismatchError(f"--weights {path}: tensor {key} has shape {e.shape}, the plan's model expects "
                                 f"{tuple(shape)}", "run the plan on the checkpoint it was made for")


PLAN_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def plan_dtype(plan_json: Path) -> torch.dtype:
    """The serving dtype the plan was made for (its model record), which a checkpoint must match."""
    try:
        name = json.loads(Path(plan_json).read_text(encoding="utf-8"))["model"]["dtype"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputMismatchError(f"cannot read the plan's model dtype from {plan_json}", "re-run `planner emit`") from exc
    if name not in PLAN_DTYPES:
        raise InputMismatchError(f"the plan's model dtype {name} is not one the runtime loads",
                                 f"plan for one of: {', '.join(PLAN_DTYPES)}")
    return PLAN_DTYPES[name]
