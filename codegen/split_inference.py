"""split-inference codegen: cut an exported GraphModule into an edge half and a cloud half (docs/split-inference.md §4).

Applies a plan's decision, never makes it: the caller (the family glue) passes an already built and
captured GraphModule, a callback `on_edge(node) -> bool` saying which nodes run on the edge device,
and the transmission bits of every crossing tensor. The cut is made with torch.fx's own
`split_module` (partition 0 = edge, 1 = cloud, `keep_original_order=True` as exported graphs need),
then each partition is copied into a standalone GraphModule:

    edge(*model inputs)      -> tuple of wire values, one per crossing tensor, in `wire` order:
                                a `kernels.uniform_quant.QuantizedTensor` (UAQ, bit-packed) where the
                                plan sends it below its native bits, else the raw tensor
    cloud(*wire values)      -> tuple of the model's flat outputs (dequantise nodes first)

Crossing tensors are the edge values any cloud node reads, plus model inputs the cloud reads and
model outputs the edge produces (the cloud returns every output, so the result travels back once).
Integer and boolean tensors are never quantised. An all-edge decision gives `cloud=None` and an edge
half that returns the model outputs; an all-cloud decision gives an edge half that only sends the
inputs.

Known `split_module` pitfalls handled here (each has a regression test): with `keep_original_order`
parameters are `get_attr` nodes of the top graph passed into the submodules as arguments (mapped back
to `get_attr` in each half, so a weight used by both halves is stored once and loaded by both); a
partition may be empty (no-op half); submodule outputs are always tuples (`tuple_return`); an edge
value that is also a model output crosses once; export's `_guards_fn` input guard (a Python closure,
not emittable) is dropped; in-place aten ops (`add_` in ResNet) are replaced by their out-of-place
overloads first, so a tensor sent after a later in-place write on the edge still carries the value
the cloud would have read.

`half_source` writes a half as a self-contained Python file (imports + a `torch.nn.Module` subclass
whose `forward` is the fx code); `half_tensors` returns the weights it reads by qualified name, to be
stored with safetensors (never pickle).

Example:
    >>> gm = torch.export.export(model, (x,), strict=False).module()          # doctest: +SKIP
    >>> halves = split_graph(gm, lambda n: n.name in {"conv2d", "relu"}, {"relu": 4})
    >>> wire = halves.edge(x); y = halves.cloud(*wire)                           # doctest: +SKIP
"""
from __future__ import annotations

import inspect
import logging
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import fx
from torch.fx.passes.split_module import split_module

from core.errors import ModelCaptureError
from kernels.uniform_quant import dequantize, quantize
from core.artifacts import sha256_file

log = logging.getLogger(__name__)

EDGE, CLOUD = 0, 1
NATIVE_FLOAT_BITS = {torch.float32: 32, torch.float64: 64, torch.float16: 16, torch.bfloat16: 16}


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one flat model input or output (dtype as torch spells it without `torch.`)."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class WireTensor:
    """One tensor crossing the link: its producer (a graph node or model input), and how it is sent.

    `bits` is the UAQ bit width when quantised, else None (sent raw in its dtype). `kind` says why it
    crosses: "cut" (a cloud node reads it), "input" (a model input the cloud reads), "output" (a model
    output computed on the edge).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    bits: int | None
    kind: str
    wire_dtype: str = ""

    @property
    def quantised(self) -> bool:
        """True when sent as UAQ codes."""
        return self.bits is not None


@dataclass
class SplitHalves:
    """The two halves of a split model and what travels between them."""

    edge: fx.GraphModule
    cloud: fx.GraphModule | None
    inputs: tuple[TensorSpec, ...]
    wire: tuple[WireTensor, ...]
    outputs: tuple[TensorSpec, ...]
    edge_nodes: tuple[str, ...]
    cloud_nodes: tuple[str, ...]

    def run(self, *inputs: torch.Tensor) -> tuple[Any, ...]:
        """cloud(edge(inputs)) in one process: the model's flat outputs."""
        wire = self.edge(*inputs)
        return tuple(wire) if self.cloud is None else tuple(self.cloud(*wire))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _val(node: fx.Node) -> Any:
    val = node.meta.get("val")
    if val is None:
        val = node.meta.get("example_value")
    return val


def _spec(node: fx.Node, name: str | None = None) -> TensorSpec:
    val = _val(node)
    if not isinstance(val, torch.Tensor):
        raise ModelCaptureError(f"graph value {node.name} has no tensor metadata (meta['val'])",
                                "capture the model with torch.export, which records every value's shape")
    return TensorSpec(name or node.name, tuple(int(s) for s in val.shape), _dtype_name(val.dtype))


# ------------------------------------------------------------------ graph preparation
def drop_export_guards(gm: fx.GraphModule) -> None:
    """Remove export's `_guards_fn` input-guard calls (a Python closure that cannot be written as code)."""
    changed = False
    for n in list(gm.graph.nodes):
        if n.op == "call_module" and str(n.target) == "_guards_fn" and not n.users:
            gm.graph.erase_node(n)
            changed = True
    if changed and hasattr(gm, "_guards_fn"):
        delattr(gm, "_guards_fn")
    if changed:
        gm.recompile()


def _out_of_place(op: Any) -> Any | None:
    """The functional overload of an in-place aten op (`aten.add_.Tensor` -> `aten.add.Tensor`), or None."""
    if not isinstance(op, torch._ops.OpOverload):
        return None
    schema = op._schema
    if not schema.name.endswith("_") or not schema.arguments or not (schema.arguments[0].alias_info and
                                                                    schema.arguments[0].alias_info.is_write):
        return None
    base = schema.name.split("::")[-1][:-1]
    packet = getattr(torch.ops.aten, base, None)
    if packet is None:
        return None
    return getattr(packet, op._overloadname, None)


def functionalise_inplace(gm: fx.GraphModule) -> int:
    """Replace in-place aten ops by their out-of-place overloads; later readers of the written tensor read
    the new value instead. Exact: the same kernel computes the same values. Returns how many were replaced."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    count = 0
    for n in list(gm.graph.nodes):
        if n.op != "call_function":
            continue
        func = _out_of_place(n.target)
        if func is None or not n.args or not isinstance(n.args[0], fx.Node):
            continue
        written = n.args[0]
        later = [u for u in written.users if u is not n and order[u] > order[n]]
        n.target = func
        for u in later:
            u.replace_input_with(written, n)
        count += 1
    if count:
        gm.graph.lint()
        gm.recompile()
    return count


# ------------------------------------------------------------------ the split
def _partition_of(on_edge: Callable[[fx.Node], bool]) -> Callable[[fx.Node], int]:
    def callback(node: fx.Node) -> int:
        return EDGE if on_edge(node) else CLOUD
    return callback


def check_downward_closed(gm: fx.GraphModule, on_edge: Callable[[fx.Node], bool]) -> None:
    """Every input of an edge node is an edge node, a model input or a weight (else the halves would loop)."""
    for n in gm.graph.nodes:
        if n.op in ("placeholder", "get_attr", "output") or not on_edge(n):
            continue
        for a in n.all_input_nodes:
            if a.op in ("placeholder", "get_attr"):
                continue
            if not on_edge(a):
                raise ValueError(f"edge node {n.name} reads {a.name}, which runs in the cloud: the edge set "
                                 "must contain every predecessor of its nodes")


INT_NARROW = {8: torch.int8, 16: torch.int16, 32: torch.int32}


def _narrowed(spec: TensorSpec, requested: int | None, kind: str) -> str:
    """Wire dtype of a raw tensor: integer model inputs (token ids) travel at the plan's integer width when
    it is narrower (int64 ids as int32: lossless below 2^31), everything else in its own dtype."""
    dtype = getattr(torch, spec.dtype)
    if kind != "input" or dtype.is_floating_point or dtype == torch.bool or requested is None:
        return spec.dtype
    target = INT_NARROW.get(int(requested))
    if target is None or torch.iinfo(target).bits >= torch.iinfo(dtype).bits:
        return spec.dtype
    return _dtype_name(target)


def _wire_bits(spec: TensorSpec, requested: int | None) -> int | None:
    """UAQ bits for a crossing tensor, or None (raw): only floating tensors below their native bits."""
    dtype = getattr(torch, spec.dtype)
    native = NATIVE_FLOAT_BITS.get(dtype)
    if requested is None or native is None or int(requested) >= native:
        return None
    return int(requested)


def recompute_in_cloud(gm: fx.GraphModule, on_edge: Callable[[fx.Node], bool],
                       recompute: Callable[[fx.Node], bool]) -> set[fx.Node]:
    """Give the cloud its own copy of every edge node `recompute` accepts (shape-only views) that a cloud
    node reads, recursively up to the first node it does not accept; returns the copies (cloud nodes).

    Without this, a view the edge also needs (an attention mask expanded from 128 to 128x128 values,
    read by edge and cloud layers alike) would cross the link instead of its source, 128x larger.
    """
    clones: dict[fx.Node, fx.Node] = {}

    def cloud_copy(n: fx.Node) -> fx.Node:
        if n.op in ("placeholder", "get_attr") or not on_edge(n) or not recompute(n):
            return n
        if n not in clones:
            for a in n.all_input_nodes:   # copies of its inputs first (they are inserted after those inputs)
                cloud_copy(a)
            with gm.graph.inserting_after(n):
                clones[n] = gm.graph.node_copy(n, lambda a: clones.get(a, a))
        return clones[n]

    for n in list(gm.graph.nodes):
        if n.op in ("placeholder", "get_attr", "output") or n in clones.values() or not on_edge(n) or not recompute(n):
            continue
        readers = [u for u in n.users if u.op not in ("output",) and u not in clones.values() and not on_edge(u)]
        if readers:
            c = cloud_copy(n)
            for u in readers:
                u.replace_input_with(n, c)
    if clones:
        gm.graph.lint()
        gm.recompile()
    return set(clones.values())


def split_graph(gm: fx.GraphModule, on_edge: Callable[[fx.Node], bool], bits: Mapping[str, int] | None = None,
                *, output_on_edge: bool | None = None, recompute: Callable[[fx.Node], bool] | None = None,
                class_prefix: str = "") -> SplitHalves:
    """Cut `gm` (an exported GraphModule, modified in place: guards dropped, in-place ops functionalised).

    `on_edge(node)` is called for every computing node (not for model inputs, weights or the output) and
    says whether it runs on the edge; `bits` maps a crossing tensor's producer name (a node or a model
    input) to its transmission bits (absent or >= native: sent raw). Raises ValueError when the edge set
    is not downward closed. `output_on_edge` says where the result is delivered: by default on the edge
    exactly when no node runs in the cloud; False with every node on the edge gives a cloud half that only
    receives the outputs and returns them (a plan may send the logits across and back). `recompute(node)`
    marks edge nodes the cloud recomputes from their inputs instead of receiving (see `recompute_in_cloud`).
    """
    bits = dict(bits or {})
    drop_export_guards(gm)
    functionalise_inplace(gm)
    if recompute is not None:
        base = on_edge
        copies = recompute_in_cloud(gm, base, recompute)
        on_edge = lambda n: n not in copies and base(n)  # noqa: E731  (the copies run in the cloud)
    check_downward_closed(gm, on_edge)
    placeholders = []
    for n in gm.graph.nodes:
        if n.op != "placeholder":
            continue
        if isinstance(_val(n), torch.Tensor):
            placeholders.append(n)
        elif n.users:
            raise ModelCaptureError(f"model input {n.name} is not a tensor but the graph reads it",
                                    "pass it as a constant when capturing (torch.export specialises Python values)")
        # non-tensor inputs the graph ignores (`use_cache=False`) are left out of both halves
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    flat_outs: list[fx.Node] = []
    torch.fx.node.map_arg(out_node.args[0], lambda a: flat_outs.append(a))
    inputs = tuple(_spec(p) for p in placeholders)
    outputs = tuple(_spec(o, f"output_{i}") for i, o in enumerate(flat_outs))
    callback = _partition_of(on_edge)
    computing = [n for n in gm.graph.nodes if n.op not in ("placeholder", "get_attr", "output")]
    edge_nodes = tuple(n.name for n in computing if callback(n) == EDGE)
    cloud_nodes = tuple(n.name for n in computing if callback(n) == CLOUD)

    edge_first(gm, callback)
    if output_on_edge is None:
        output_on_edge = not cloud_nodes
    elif output_on_edge and cloud_nodes:
        raise ValueError("the output cannot be on the edge while nodes run in the cloud")
    sm = split_module(gm, gm, callback, keep_original_order=True, keep_original_node_name=True, tuple_return=True)
    top = sm.graph
    calls = {int(n.target.split("_")[-1]): n for n in top.nodes if n.op == "call_module"}
    edge_call, cloud_call = calls.get(EDGE), calls.get(CLOUD)

    input_index = {p.name: i for i, p in enumerate(placeholders)}

    # value of the top graph -> what it is: ("input", i), ("attr", target) or ("edge", k)
    def top_source(v: fx.Node) -> tuple[str, Any]:
        if v.op == "placeholder":
            return ("input", input_index[v.name])
        if v.op == "get_attr":
            return ("attr", v.target)
        if v.op == "call_function" and v.target is operator.getitem and v.args[0] is edge_call:
            return ("edge", int(v.args[1]))
        if v.op == "call_function" and v.target is operator.getitem and v.args[0] is cloud_call:
            return ("cloud", int(v.args[1]))
        raise ValueError(f"unexpected value {v.name} ({v.op} {v.target}) between the halves")

    edge_sub = getattr(sm, edge_call.target) if edge_call is not None else None
    cloud_sub = getattr(sm, cloud_call.target) if cloud_call is not None else None
    edge_out_nodes = _sub_outputs(edge_sub) if edge_sub is not None else []

    # crossing tensors, in a deterministic order: cloud inputs first (submodule argument order), then
    # edge-produced model outputs
    wire_src: list[tuple[str, Any]] = []
    wire_kind: list[str] = []
    has_cloud = cloud_call is not None or not output_on_edge
    if has_cloud:
        for a in (cloud_call.args if cloud_call is not None else ()):
            s = top_source(a)
            if s[0] != "attr" and s not in wire_src:
                wire_src.append(s)
                wire_kind.append("input" if s[0] == "input" else "cut")
        for v in flat_outs_top(top):
            s = top_source(v)
            if s[0] in ("edge", "input") and s not in wire_src:
                wire_src.append(s)
                wire_kind.append("output")

    def src_name_spec(s: tuple[str, Any]) -> TensorSpec:
        if s[0] == "input":
            return inputs[s[1]]
        node = edge_out_nodes[s[1]]
        return _spec(node)

    wire = []
    for s, kind in zip(wire_src, wire_kind):
        spec = src_name_spec(s)
        b = _wire_bits(spec, bits.get(spec.name))
        wdt = spec.dtype if b is not None else _narrowed(spec, bits.get(spec.name), kind)
        wire.append(WireTensor(spec.name, spec.shape, spec.dtype, b, kind, wdt))

    # ---- edge half: model inputs -> (submodule 0) -> wire values (or the model outputs when all-edge)
    eg = fx.Graph()
    e_inputs = [eg.placeholder(p.name) for p in placeholders]
    for p, q in zip(placeholders, e_inputs):
        q.meta["val"] = _val(p)
    edge_results: list[fx.Node] = []
    if edge_call is not None:
        val_map = _bind(eg, edge_sub, edge_call.args, e_inputs, placeholders)
        ret = eg.graph_copy(edge_sub.graph, val_map)
        edge_results = [eg.call_function(operator.getitem, (ret, k)) for k in range(len(edge_out_nodes))]
    if not has_cloud:
        # all-edge: the edge returns the model's outputs
        outs = [edge_results[top_source(v)[1]] if top_source(v)[0] == "edge" else e_inputs[top_source(v)[1]]
                for v in flat_outs_top(top)]
        eg.output(tuple(outs))
    else:
        sent = []
        for s, w in zip(wire_src, wire):
            v = e_inputs[s[1]] if s[0] == "input" else edge_results[s[1]]
            if w.quantised:
                v = eg.call_function(quantize, (v, w.bits))
            elif w.wire_dtype != w.dtype:
                v = eg.call_function(torch.ops.aten._to_copy.default, (v,), {"dtype": getattr(torch, w.wire_dtype)})
            sent.append(v)
        eg.output(tuple(sent))
    edge_gm = fx.GraphModule(_attr_root(gm, eg), eg, class_name=f"{class_prefix}EdgeHalf")

    # ---- cloud half: wire values -> dequantise -> (submodule 1) -> the model's flat outputs
    cloud_gm = None
    if has_cloud:
        cg = fx.Graph()
        received: dict[tuple[str, Any], fx.Node] = {}
        for s, w in zip(wire_src, wire):
            ph = cg.placeholder(_ident(f"recv_{w.name}"))
            if w.quantised:
                received[s] = cg.call_function(dequantize, (ph,))
            elif w.wire_dtype != w.dtype:
                received[s] = cg.call_function(torch.ops.aten._to_copy.default, (ph,), {"dtype": getattr(torch, w.dtype)})
            else:
                received[s] = ph
        cloud_results: list[fx.Node] = []
        if cloud_call is not None:
            args = []
            for a in cloud_call.args:
                s = top_source(a)
                args.append(cg.get_attr(s[1]) if s[0] == "attr" else received[s])
            val_map = {ph: v for ph, v in zip([n for n in cloud_sub.graph.nodes if n.op == "placeholder"], args)}
            ret = cg.graph_copy(cloud_sub.graph, val_map)
            cloud_results = [cg.call_function(operator.getitem, (ret, k)) for k in range(len(_sub_outputs(cloud_sub)))]
        outs = []
        for v in flat_outs_top(top):
            s = top_source(v)
            outs.append(cloud_results[s[1]] if s[0] == "cloud" else received[s])
        cg.output(tuple(outs))
        cloud_gm = fx.GraphModule(_attr_root(gm, cg), cg, class_name=f"{class_prefix}CloudHalf")
    for g in (edge_gm, cloud_gm):
        if g is not None:
            g.graph.lint()
            g.recompile()
    return SplitHalves(edge_gm, cloud_gm, inputs, tuple(wire), outputs, edge_nodes, cloud_nodes)


def edge_first(gm: fx.GraphModule, callback: Callable[[fx.Node], int]) -> None:
    """Reorder the graph (in place): inputs and weights, then every edge node, then every cloud node, each
    group in its original order. With `keep_original_order` split_module emits partitions in the order
    of their first node, so a cloud node listed before an edge node it reads (an `arange` constant the
    edge sends, placed late by export) made it look the value up before it existed (a KeyError)."""
    nodes = list(gm.graph.nodes)
    head = [n for n in nodes if n.op in ("placeholder", "get_attr")]
    compute = [n for n in nodes if n.op not in ("placeholder", "get_attr", "output")]
    order = head + [n for n in compute if callback(n) == EDGE] + [n for n in compute if callback(n) == CLOUD]
    if order == [n for n in nodes if n.op != "output"]:
        return
    anchor = order[0]
    for n in order[1:]:
        anchor.append(n)
        anchor = n
    gm.graph.lint()
    gm.recompile()


def flat_outs_top(top: fx.Graph) -> list[fx.Node]:
    """The flat output values of the split top graph, in order."""
    out = next(n for n in top.nodes if n.op == "output")
    flat: list[fx.Node] = []
    torch.fx.node.map_arg(out.args[0], lambda a: flat.append(a))
    return flat


def _sub_outputs(sub: fx.GraphModule) -> list[fx.Node]:
    out = next(n for n in sub.graph.nodes if n.op == "output")
    ret = out.args[0]
    return list(ret) if isinstance(ret, (tuple, list)) else [ret]


def _bind(g: fx.Graph, sub: fx.GraphModule, call_args: Sequence[Any], inputs: list[fx.Node],
          placeholders: list[fx.Node]) -> dict[fx.Node, fx.Node]:
    """Map the submodule's placeholders to the new graph's model inputs and `get_attr` nodes."""
    by_name = {p.name: q for p, q in zip(placeholders, inputs)}
    sub_ph = [n for n in sub.graph.nodes if n.op == "placeholder"]
    val_map: dict[fx.Node, fx.Node] = {}
    for ph, a in zip(sub_ph, call_args):
        if a.op == "get_attr":
            val_map[ph] = g.get_attr(a.target)
        elif a.op == "placeholder":
            val_map[ph] = by_name[a.name]
        else:
            raise ValueError(f"edge partition reads {a.name}, which is not a model input or weight")
    return val_map


def _ident(name: str) -> str:
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return out if out and not out[0].isdigit() else f"t_{out}"


def _attr_root(gm: fx.GraphModule, g: fx.Graph) -> torch.nn.Module:
    """A module holding exactly the attributes `g` reads, at their qualified names (shared, not copied)."""
    root = torch.nn.Module()
    for n in g.nodes:
        if n.op == "get_attr":
            _set_path(root, str(n.target), _get_path(gm, str(n.target)))
        elif n.op == "call_module":
            raise ModelCaptureError(f"node {n.name} calls module {n.target}, which cannot be written as code",
                                    "capture the model with torch.export (aten-level graph)")
    return root


def _get_path(mod: torch.nn.Module, path: str) -> Any:
    obj: Any = mod
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set_path(root: torch.nn.Module, path: str, value: Any) -> None:
    parts = path.split(".")
    mod = root
    for part in parts[:-1]:
        nxt = getattr(mod, part, None)
        if nxt is None:
            nxt = torch.nn.Module()
            mod.add_module(part, nxt)
        mod = nxt
    if isinstance(value, torch.nn.Parameter):
        mod.register_parameter(parts[-1], value)
    elif isinstance(value, torch.Tensor):
        mod.register_buffer(parts[-1], value)
    else:
        setattr(mod, parts[-1], value)


# ------------------------------------------------------------------ writing a half
def half_tensors(half: fx.GraphModule) -> dict[str, torch.Tensor]:
    """Every tensor a half reads (`get_attr` targets), by qualified name, detached and contiguous."""
    out = {}
    for n in half.graph.nodes:
        if n.op == "get_attr":
            t = _get_path(half, str(n.target))
            if not isinstance(t, torch.Tensor):
                raise ModelCaptureError(f"attribute {n.target} is a {type(t).__name__}, not a tensor",
                                        "capture the model with torch.export (tensors lifted to attributes)")
            out[str(n.target)] = t.detach()
    return out


def _import_line(name: str, obj: Any) -> str:
    """`import`/`from ... import` line that binds `name` to `obj` in the generated file."""
    from torch.fx.graph import _custom_builtins

    if name in _custom_builtins:
        return _custom_builtins[name].import_str
    if inspect.ismodule(obj):
        return f"import {obj.__name__}" if obj.__name__ == name else f"import {obj.__name__} as {name}"
    module = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if module is None or qual is None or "." in qual or "<" in qual:
        raise ModelCaptureError(f"the generated code needs {obj!r}, which cannot be imported by name",
                                "keep only aten ops and the UAQ kernels in the split graph")
    if module == "_operator":
        module = "operator"
    return f"from {module} import {qual}" + ("" if qual == name else f" as {name}")


def half_source(half: fx.GraphModule, header: str = "") -> str:
    """A self-contained Python file: imports, then `class <Name>(torch.nn.Module)` with the fx `forward`."""
    code = half.graph.python_code(root_module="self")
    used = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", code.src))
    imports = sorted({_import_line(k, v) for k, v in code.globals.items() if k in used} | {"import torch"})
    body = "\n".join(("    " + line) if line.strip() else "" for line in code.src.strip("\n").splitlines())
    cls = type(half).__name__
    head = "".join(f"# {line}\n" for line in header.splitlines()) if header else ""
    return f"{head}{chr(10).join(imports)}\n\n\nclass {cls}(torch.nn.Module):\n{body}\n"


# ------------------------------------------------------------------ the artifact directory
ARTIFACT_FORMAT = 1
WEIGHTS_FILE = "model/weights.safetensors"


@dataclass
class EmittedPartition:
    """One (cut, bits) configuration to write: its halves and the plan's figures for it (plain data)."""

    pid: str
    halves: SplitHalves
    info: dict[str, Any]


def wire_entry(w: WireTensor) -> dict[str, Any]:
    """runtime.yaml's description of one crossing tensor, with its exact payload bytes (B)."""
    from kernels.uniform_quant import META_BYTES_PER_GROUP, payload_bytes

    n = 1
    for s in w.shape:
        n *= int(s)
    rows = int(w.shape[0]) if w.shape else 1
    if w.quantised:
        nbytes = rows * (payload_bytes(n // max(rows, 1), w.bits, 0)) + META_BYTES_PER_GROUP * rows
    else:
        nbytes = n * torch.empty((), dtype=getattr(torch, w.wire_dtype or w.dtype)).element_size()
    return {"name": w.name, "shape": list(w.shape), "dtype": w.dtype if w.quantised else (w.wire_dtype or w.dtype),
            "model_dtype": w.dtype, "bits": w.bits, "kind": w.kind, "payload_bytes": int(nbytes)}


def _spec_entry(s: TensorSpec) -> dict[str, Any]:
    return {"name": s.name, "shape": list(s.shape), "dtype": s.dtype}


def write_files(staging: Path, partitions: Sequence[EmittedPartition], runtime: dict[str, Any], plan_text: str,
                extra_tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None, model_name: str = "") -> dict[str, Any]:
    """Write every artifact file except manifest.json into the directory `staging`; returns runtime.yaml's mapping.

    Layout: `plan.json`; `model/weights.safetensors` (every tensor any half reads, once, by qualified
    name); `partitions/<pid>/edge.py` and `cloud.py` (absent when the partition runs all on the edge);
    `extra_tensors` files (e.g. semantic-cache centres, the request stream); `runtime.yaml` (the given
    mapping plus `format`, `artifact_id` (a digest of every other file, so the edge and the cloud can tell
    they hold the same artifact), `inputs`, `outputs`, `weights` and one `partitions` entry per partition).
    """
    import hashlib

    import yaml
    from safetensors.torch import save_file

    if not partitions:
        raise ValueError("an artifact needs at least one partition")
    first = partitions[0].halves
    weights: dict[str, torch.Tensor] = {}
    entries = []
    for part in partitions:
        h = part.halves
        if h.inputs != first.inputs or h.outputs != first.outputs:
            raise ValueError(f"partition {part.pid} was split from another graph than {partitions[0].pid}")
        d = staging / "partitions" / part.pid
        d.mkdir(parents=True)
        title = f"planner emit: {model_name} partition {part.pid}"
        (d / "edge.py").write_text(half_source(h.edge, f"{title}, edge half (torch.fx code)"), encoding="utf-8")
        edge_w = half_tensors(h.edge)
        cloud_w = half_tensors(h.cloud) if h.cloud is not None else {}
        if h.cloud is not None:
            (d / "cloud.py").write_text(half_source(h.cloud, f"{title}, cloud half (torch.fx code)"), encoding="utf-8")
        for name, t in {**edge_w, **cloud_w}.items():
            if name in weights and not torch.equal(weights[name], t):
                raise ValueError(f"two partitions read different tensors named {name}")
            weights[name] = t
        wire = [wire_entry(w) for w in h.wire]
        entries.append({"id": part.pid, **part.info,
                        "edge_code": f"partitions/{part.pid}/edge.py",
                        "cloud_code": f"partitions/{part.pid}/cloud.py" if h.cloud is not None else None,
                        "edge_weights": sorted(edge_w), "cloud_weights": sorted(cloud_w),
                        "edge_nodes": len(h.edge_nodes), "cloud_nodes": len(h.cloud_nodes),
                        "wire": wire, "wire_payload_bytes": sum(w["payload_bytes"] for w in wire)})
    (staging / "model").mkdir(exist_ok=True)
    # safetensors refuses shared storage: each tensor is stored as its own contiguous copy
    save_file({k: v.detach().contiguous().clone() for k, v in sorted(weights.items())}, str(staging / WEIGHTS_FILE))
    for rel, tensors in sorted((extra_tensors or {}).items()):
        p = staging / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().clone() for k, v in sorted(tensors.items())}, str(p))
    (staging / "plan.json").write_text(plan_text, encoding="utf-8")
    files = sorted(p for p in staging.rglob("*") if p.is_file() and p.name != "manifest.json")
    digests = "".join(f"{p.relative_to(staging).as_posix()}:{sha256_file(p)}\n" for p in files)
    artifact_id = hashlib.sha256(digests.encode()).hexdigest()[:32]
    rt = {"format": ARTIFACT_FORMAT, "family": "split-inference", "artifact_id": artifact_id, **runtime,
          "inputs": [_spec_entry(s) | dict(runtime.get("input_ranges", {}).get(s.name, {})) for s in first.inputs],
          "outputs": [_spec_entry(s) for s in first.outputs], "weights": WEIGHTS_FILE, "partitions": entries}
    rt.pop("input_ranges", None)
    (staging / "runtime.yaml").write_text(yaml.safe_dump(rt, sort_keys=False), encoding="utf-8")
    return rt


def write_artifact(out: Any, partitions: Sequence[EmittedPartition], runtime: dict[str, Any], plan_text: str,
                   extra_tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
                   model_name: str = "", model_fingerprint: str = "") -> Path:
    """`write_files` into a staging directory next to `out.path`, add the standard manifest.json
    (`core.artifacts.write_manifest`) and rename it into place through `out` (a `core.output_paths.OutputDir`,
    which refuses to replace anything `planner emit` did not write). `planner emit` itself goes through the
    family's entry point, where the spine does the staging and the manifest."""
    import shutil

    from core.artifacts import write_manifest
    from core.atomic_io import make_staging_dir

    out.check()
    staging = make_staging_dir(out.path)
    try:
        rt = write_files(staging, partitions, runtime, plan_text, extra_tensors, model_name)
        write_manifest(staging, "split-inference", {"model": model_name, "model_fingerprint": model_fingerprint,
                                                    "artifact_id": rt["artifact_id"]})
        return out.install(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
