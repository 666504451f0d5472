"""Graph profiler: capture a model with torch.export and measure every node from shapes alone.

Works on `meta` models (full-size Mixtral without allocating weights). Per node: matmul FLOPs
(torch.utils.flop_counter convention), vector FLOPs, parameter bytes (attributed to the first
consumer), output activation bytes; per block (a decoder layer, a ResNet stage, ...) the totals.
Analyses are recorded on `node.meta["planner"]`, following torch.fx's own passes (ShapeProp).

Example:
    >>> from planner.registry import resolve_model
    >>> from profilers.graph import profile_model
    >>> prof = profile_model(resolve_model("digits-cnn"))      # doctest: +SKIP
    >>> prof.num_params
    36906
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
from torch import fx

from core.errors import ModelCaptureError
from profilers.flops import VIEW_OPS, count_matmul_flops, einsum_flops, op_basename
from profilers.model_spec import ModelSpec
from profilers.models import BuiltModel, build_model
from profilers.moe_structure import MoeStructure, extract_moe_structure

log = logging.getLogger(__name__)

_INDEX = re.compile(r"^\d+$")


@dataclass(frozen=True)
class NodeProfile:
    """One graph node. Bytes are at the dtype the graph carries (serving dtype on meta)."""

    name: str
    op: str
    target: str
    block: str
    module_path: str
    inputs: tuple[str, ...]
    flops: int
    vector_flops: int
    param_bytes: int
    output_bytes: int
    output_shape: tuple[int, ...]
    output_dtype: str
    is_view: bool


@dataclass(frozen=True)
class BlockProfile:
    """Totals over the nodes of one block (module path prefix), in first-seen order."""

    name: str
    flops: int
    vector_flops: int
    param_bytes: int
    activation_bytes: int
    n_nodes: int


@dataclass(frozen=True)
class ModelProfile:
    """Everything the planner lowers from: sizes, per-node and per-block costs, MoE structure."""

    name: str
    fingerprint: str
    source: str
    task: str
    dtype: str
    tiny: bool
    num_params: int
    param_bytes: int
    flops: int
    vector_flops: int
    activation_bytes: int
    capture: str
    input_shapes: tuple[tuple[int, ...], ...]
    nodes: tuple[NodeProfile, ...] = ()
    blocks: tuple[BlockProfile, ...] = ()
    moe: MoeStructure | None = None
    capture_s: float = 0.0


@dataclass
class CapturedGraph:
    """A captured graph: the fx graph, which placeholders are parameters, and the program."""

    graph: fx.Graph
    param_placeholders: dict[str, str]
    program: Any
    method: str


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """torch.export logs its failed guards at WARNING with graph dumps; the CLI reports one line instead."""
    loggers = [logging.getLogger(n) for n in ("torch", "torch.fx", "torch.export", "torch._dynamo",
                                                "torch.fx.experimental.symbolic_shapes")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stderr(sink):
            yield
    finally:
        if sink.getvalue():
            log.debug("torch.export said: %s", sink.getvalue()[:2000])
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def capture(built: BuiltModel) -> CapturedGraph:
    """torch.export the model (strict=False). Raise ModelCaptureError with the reason if it cannot."""
    try:
        with _quiet_torch_logs():
            ep = torch.export.export(built.module, built.args, kwargs=built.kwargs, strict=False)
    except Exception as exc:  # export raises many types; the user needs the first line
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        raise ModelCaptureError(
            f"cannot capture the graph of {built.spec.name} with torch.export ({reason})",
            "make the forward traceable (no data-dependent Python control flow) or pass a factory returning a traceable module",
        ) from exc
    sig = ep.graph_signature
    params = dict(sig.inputs_to_parameters)
    params.update(sig.inputs_to_buffers)
    params.update(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
    return CapturedGraph(ep.graph, params, ep, "torch.export")


def _tensors(val: Any) -> list[Any]:
    if isinstance(val, torch.Tensor):
        return [val]
    if isinstance(val, (list, tuple)):
        out = []
        for v in val:
            out.extend(_tensors(v))
        return out
    return []


def _shape(val: Any) -> tuple[int, ...] | None:
    if isinstance(val, torch.Tensor):
        return tuple(int(s) for s in val.shape)
    return None


def _nbytes(t: Any) -> int:
    return int(t.numel()) * int(t.element_size())


def node_block(node: fx.Node) -> tuple[str, str]:
    """(block, innermost module path) from the node's nn_module_stack.

    The block is the shallowest module path ending in an integer index (`model.layers.3`,
    `resnet.encoder.stages.1`), else the top-level child module (`model.embed_tokens`, `lm_head`).
    """
    stack = node.meta.get("nn_module_stack") or {}
    paths = [v[0] if isinstance(v, tuple) else str(v) for v in stack.values()]
    paths = [p for p in paths if p]
    inner = paths[-1] if paths else ""
    for p in paths:
        if _INDEX.match(p.split(".")[-1]):
            return p, inner
    if inner:
        parts = inner.split(".")
        return (".".join(parts[:2]) if parts[0] == "model" and len(parts) > 1 else parts[0]), inner
    return "(root)", inner


def profile_graph(cap: CapturedGraph) -> list[NodeProfile]:
    """Per-node costs from fake-tensor metadata; also stores them on node.meta['planner']."""
    nodes = list(cap.graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    first_consumer: dict[str, str] = {}
    for n in nodes:
        if n.op == "placeholder" and n.name in cap.param_placeholders and n.users:
            first_consumer[n.name] = min(n.users, key=order.__getitem__).name
    param_bytes_of: dict[str, int] = {}
    for n in nodes:
        if n.name in first_consumer:
            val = n.meta.get("val")
            param_bytes_of[first_consumer[n.name]] = param_bytes_of.get(first_consumer[n.name], 0) + (
                _nbytes(val) if isinstance(val, torch.Tensor) else 0)

    out: list[NodeProfile] = []
    for n in nodes:
        if n.op == "placeholder" and n.name in cap.param_placeholders:
            continue  # parameters are charged to their first consumer
        val = n.meta.get("val")
        tensors = _tensors(val)
        base = op_basename(n.target) if n.op == "call_function" else n.op
        is_view = base in VIEW_OPS or n.op in ("placeholder", "output") or not tensors
        flops = 0
        vec = 0
        if n.op == "call_function":
            arg_shapes = [_shape(a.meta.get("val")) if isinstance(a, fx.Node) else None for a in n.args]
            if base == "einsum" and len(n.args) > 1 and isinstance(n.args[1], (list, tuple)):
                flops = einsum_flops(str(n.args[0]), [_shape(a.meta.get("val")) or () for a in n.args[1]])
            else:
                flops = count_matmul_flops(base, arg_shapes, _shape(tensors[0]) if tensors else None, n.args)
            if flops == 0 and not is_view:
                vec = sum(int(t.numel()) for t in tensors if t.is_floating_point())
        block, inner = node_block(n) if n.op != "placeholder" else ("input", "")
        out_bytes = sum(_nbytes(t) for t in tensors)
        first = tensors[0] if tensors else None
        prof = NodeProfile(
            name=n.name,
            op=n.op,
            target=str(n.target) if n.op != "output" else "output",
            block=block,
            module_path=inner,
            inputs=tuple(a.name for a in n.all_input_nodes if a.name not in cap.param_placeholders),
            flops=int(flops),
            vector_flops=int(vec),
            param_bytes=int(param_bytes_of.get(n.name, 0)),
            output_bytes=int(out_bytes),
            output_shape=_shape(first) or (),
            output_dtype=str(first.dtype).replace("torch.", "") if first is not None else "",
            is_view=bool(is_view),
        )
        n.meta["planner"] = prof
        out.append(prof)
    return out


def summarise_blocks(nodes: Iterable[NodeProfile]) -> list[BlockProfile]:
    """Per-block totals in first-seen (topological) order."""
    acc: "OrderedDict[str, list[int]]" = OrderedDict()
    for n in nodes:
        if n.op == "output":
            continue
        a = acc.setdefault(n.block, [0, 0, 0, 0, 0])
        a[0] += n.flops
        a[1] += n.vector_flops
        a[2] += n.param_bytes
        a[3] += 0 if n.is_view else n.output_bytes
        a[4] += 1
    return [BlockProfile(k, *v) for k, v in acc.items()]


def profile_model(spec: ModelSpec, tiny: bool = False, batch: int = 1, seq_len: int | None = None,
                  with_graph: bool = True) -> ModelProfile:
    """Build `spec` (meta for full size), capture it and profile every node.

    `with_graph=False` skips capture and returns sizes and MoE structure only (fast path for
    planners that need no per-node costs).
    """
    built = build_model(spec, tiny=tiny, batch=batch, seq_len=seq_len)
    params = list(built.module.parameters())
    num_params = sum(int(p.numel()) for p in params)
    param_bytes = sum(_nbytes(p) for p in params)
    moe = extract_moe_structure(built)
    nodes: list[NodeProfile] = []
    blocks: list[BlockProfile] = []
    capture_s = 0.0
    method = "none"
    if with_graph:
        t0 = time.perf_counter()
        cap = capture(built)
        capture_s = time.perf_counter() - t0
        nodes = profile_graph(cap)
        blocks = summarise_blocks(nodes)
        method = cap.method
    shapes = tuple(tuple(int(s) for s in a.shape) for a in built.args if isinstance(a, torch.Tensor))
    return ModelProfile(
        name=spec.name,
        fingerprint=spec.fingerprint(tiny),
        source=spec.source,
        task=spec.task,
        dtype="fp32" if built.device != "meta" else spec.dtype,
        tiny=tiny,
        num_params=num_params,
        param_bytes=param_bytes,
        flops=sum(n.flops for n in nodes),
        vector_flops=sum(n.vector_flops for n in nodes),
        activation_bytes=sum(0 if n.is_view else n.output_bytes for n in nodes),
        capture=method,
        input_shapes=shapes,
        nodes=tuple(nodes),
        blocks=tuple(blocks),
        moe=moe,
        capture_s=capture_s,
    )
