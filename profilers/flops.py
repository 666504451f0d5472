"""FLOP counts of aten ops from tensor shapes alone (works on `meta` fake tensors).

Convention follows `torch.utils.flop_counter`: a multiply-add counts as 2 FLOPs and only matrix
products, convolutions and attention are counted (`matmul_flops`); bias adds are not. Pointwise and
reduction work is reported separately as `vector_flops` (one per output element), because it is
memory-bound and a roofline charges it by bytes instead.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

Shape = Sequence[int]


def _numel(shape: Shape) -> int:
    return int(math.prod(int(s) for s in shape))


def mm_flops(a: Shape, b: Shape) -> int:
    """(m, k) @ (k, n)."""
    return 2 * int(a[0]) * int(a[1]) * int(b[1])


def bmm_flops(a: Shape, b: Shape) -> int:
    """(b, m, k) @ (b, k, n)."""
    return 2 * int(a[0]) * int(a[1]) * int(a[2]) * int(b[2])


def linear_flops(x: Shape, w: Shape) -> int:
    """x (..., k) @ w.T with w (n, k)."""
    return 2 * _numel(x[:-1]) * int(x[-1]) * int(w[0])


def matmul_flops(a: Shape, b: Shape) -> int:
    """torch.matmul with broadcasting."""
    if len(a) == 1 and len(b) == 1:
        return 2 * int(a[0])
    if len(a) == 1:
        a = (1, a[0])
    if len(b) == 1:
        b = (b[0], 1)
    batch = _broadcast(a[:-2], b[:-2])
    return 2 * _numel(batch) * int(a[-2]) * int(a[-1]) * int(b[-1])


def _broadcast(a: Shape, b: Shape) -> tuple[int, ...]:
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    return tuple(max(int(x), int(y)) for x, y in zip(a, b))


def conv_flops(x: Shape, w: Shape, out: Shape, transposed: bool = False) -> int:
    """Convolution: 2 * N * Cout * prod(out spatial) * (Cin/groups) * prod(kernel); transposed uses input spatial."""
    batch = int(out[0])
    c_out = int(w[0]) if not transposed else int(w[1])
    c_in_per_group = int(w[1]) if not transposed else int(w[0])
    kernel = _numel(w[2:])
    spatial = _numel(x[2:]) if transposed else _numel(out[2:])
    # For transposed convs the weight is (Cin, Cout/groups, k...): FLOPs scale with input positions.
    if transposed:
        return 2 * batch * spatial * c_in_per_group * c_out * kernel
    return 2 * batch * c_out * spatial * c_in_per_group * kernel


def sdpa_flops(q: Shape, k: Shape, v: Shape) -> int:
    """Attention: QK^T and AV products, (b, h, L, e) x (b, h, S, e) x (b, h, S, ev)."""
    b_h = _numel(q[:-2])
    l_q, e = int(q[-2]), int(q[-1])
    s_k, e_v = int(k[-2]), int(v[-1])
    return 2 * b_h * l_q * s_k * e + 2 * b_h * l_q * s_k * e_v


def grouped_mm_flops(a: Shape, b: Shape) -> int:
    """torch._grouped_mm: (M_total, k) against (G, k, n) with offsets: each row meets one group."""
    if len(a) == 2 and len(b) == 3:
        return 2 * int(a[0]) * int(a[1]) * int(b[2])
    if len(a) == 3 and len(b) == 3:  # batched form (G, m, k) @ (G, k, n)
        return 2 * int(a[0]) * int(a[1]) * int(a[2]) * int(b[2])
    if len(a) == 2 and len(b) == 2:  # (m, K_total) @ (K_total, n): groups along k
        return 2 * int(a[0]) * int(a[1]) * int(b[1])
    return 0


def einsum_flops(equation: str, shapes: Sequence[Shape]) -> int:
    """2 x product of every distinct index size, for a contraction of two or more operands."""
    lhs = equation.replace(" ", "").split("->")[0]
    sizes: dict[str, int] = {}
    for term, shape in zip(lhs.split(","), shapes):
        letters = [c for c in term if c.isalpha()]
        if "..." in term:
            return 0  # ellipsis einsums are rare in captured graphs; counted as 0 rather than guessed
        for c, s in zip(letters, shape):
            sizes[c] = int(s)
    if len(shapes) < 2:
        return 0
    return 2 * _numel(sizes.values())


VIEW_OPS = frozenset(
    {"view", "_unsafe_view", "reshape", "transpose", "t", "permute", "unsqueeze", "squeeze", "expand",
     "slice", "select", "alias", "detach", "getitem", "contiguous", "unflatten", "flatten", "split",
     "chunk", "split_with_sizes", "unbind", "narrow", "as_strided", "_assert_tensor_metadata", "view_as",
     "lift_fresh_copy", "sym_size", "dropout", "expand_as", "movedim", "to", "type_as", "clone",
     "_to_copy", "copy"}
)


def op_basename(target: Any) -> str:
    """'aten.linear.default' -> 'linear'; builtins -> their name."""
    name = getattr(target, "__name__", None) or str(target)
    text = str(target)
    if text.startswith("aten.") or "." in text and text.split(".")[0] in ("aten", "prims", "quantized"):
        parts = text.split(".")
        return parts[1] if len(parts) > 1 else parts[0]
    return name.split(".")[0]


def count_matmul_flops(op: str, arg_shapes: Sequence[Any], out_shape: Any, args: Sequence[Any]) -> int:
    """Matmul-class FLOPs of one node; `arg_shapes` holds a shape (tuple) or None per positional arg."""
    s = arg_shapes
    try:
        if op in ("mm",):
            return mm_flops(s[0], s[1])
        if op == "addmm":
            return mm_flops(s[1], s[2])
        if op == "bmm":
            return bmm_flops(s[0], s[1])
        if op == "baddbmm":
            return bmm_flops(s[1], s[2])
        if op == "linear":
            return linear_flops(s[0], s[1])
        if op == "matmul":
            return matmul_flops(s[0], s[1])
        if op in ("convolution", "_convolution", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                  "conv_transpose2d", "conv_transpose3d"):
            transposed = "transpose" in op or (op in ("convolution", "_convolution") and len(args) > 6 and bool(args[6]))
            return conv_flops(s[0], s[1], out_shape, transposed)
        if op in ("scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
                  "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention_for_cpu",
                  "_scaled_dot_product_cudnn_attention"):
            return sdpa_flops(s[0], s[1], s[2])
        if op in ("_grouped_mm", "grouped_mm"):
            return grouped_mm_flops(s[0], s[1])
    except (IndexError, TypeError):
        return 0
    return 0
