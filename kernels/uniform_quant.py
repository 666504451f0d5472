"""Uniform affine quantisation (UAQ) of transmitted tensors, with real bit packing (docs/split-inference.md §1-§2).

For a group of values with range `[min, max]` and `b` bits:

    s   = (max − min) / (2^b − 1)          scale (float32)
    z   = round(−min / s)                  zero point (int32; may lie outside [0, 2^b − 1])
    x_q = clamp(round(x / s) + z, 0, 2^b − 1)
    x̂   = s · (x_q − z)

so every element is reconstructed within `s/2`. Groups are one per sample (dim 0) by default,
one for the whole tensor with `per_sample=False`, and additionally one per channel with
`channel_dim` set. A constant group (`max == min`, so `s = 0` by the formula) is stored with
`s = |c|` (or 1 when `c == 0`) and a zero point that reconstructs `c` exactly.

Codes are sent bit-packed (LSB first, one byte stream per sample) for `b < 8` and for
`8 < b < 16`; as uint8 for `b == 8` and as int16 (offset by 2^15) for `b == 16`. Every sample
therefore costs exactly `ceil(n·b/8)` payload bytes plus 8 bytes (fp32 scale + int32 zero) per
quantisation group: see `payload_bytes`.

This module depends on torch only, so it can be shipped to a device as is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

META_BYTES_PER_GROUP = 8  # fp32 scale + int32 zero point
MIN_BITS, MAX_BITS = 1, 16
_INT16_OFFSET = 1 << 15


@dataclass(frozen=True)
class QuantizedTensor:
    """A quantised tensor as it travels over the link.

    `payload` is uint8 of shape (rows, ceil(n·b/8)) (int16 of shape (rows, n) at 16 bits), one row
    per sample (a single row for a 0-d tensor); `scale` (float32) and `zero_point` (int32) have one
    entry per quantisation group, shaped to broadcast against the tensor viewed as (rows, ...).
    """

    payload: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    per_sample: bool = True
    channel_dim: int | None = None

    @property
    def payload_nbytes(self) -> int:
        """Bytes of packed codes (B)."""
        return int(self.payload.numel()) * int(self.payload.element_size())

    @property
    def meta_nbytes(self) -> int:
        """Bytes of scales and zero points (B): 8 per quantisation group."""
        return META_BYTES_PER_GROUP * int(self.scale.numel())

    @property
    def nbytes(self) -> int:
        """Total bytes on the wire (B): payload plus metadata."""
        return self.payload_nbytes + self.meta_nbytes


def _check_bits(bits: int) -> int:
    b = int(bits)
    if b != bits or not MIN_BITS <= b <= MAX_BITS:
        raise ValueError(f"bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    return b


def payload_bytes(numel: int, bits: int, meta_bytes: int = META_BYTES_PER_GROUP) -> int:
    """Bytes on the wire for `numel` elements at `bits` bits plus `meta_bytes` of metadata (B)."""
    _check_bits(bits)
    return math.ceil(int(numel) * int(bits) / 8) + int(meta_bytes)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """View as (rows, ...) with one row per sample (0-d tensors become one row of one element)."""
    return x.reshape(1, 1) if x.dim() == 0 else x


def _reduce_dims(x: torch.Tensor, per_sample: bool, channel_dim: int | None) -> tuple[int, ...]:
    keep = set()
    if per_sample:
        keep.add(0)
    if channel_dim is not None:
        cd = channel_dim % x.dim()
        if cd == 0:
            raise ValueError("channel_dim must not be the sample dimension 0")
        keep.add(cd)
    return tuple(d for d in range(x.dim()) if d not in keep)


def _qparams(x: torch.Tensor, bits: int, per_sample: bool,
             channel_dim: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale float32, zero point as float32 integers), shaped to broadcast against `x` (rows view)."""
    xf = x.float()
    dims = _reduce_dims(xf, per_sample, channel_dim)
    if dims:
        lo = xf.amin(dim=dims, keepdim=True)
        hi = xf.amax(dim=dims, keepdim=True)
    else:
        lo, hi = xf, xf
    qmax = float((1 << bits) - 1)
    scale = (hi - lo) / qmax
    const = scale == 0
    if bool(const.any()):
        # s = 0: pick s = |c| (1 for c = 0) so that x_q − z reconstructs c exactly.
        scale = torch.where(const, torch.where(lo == 0, torch.ones_like(lo), lo.abs()), scale)
    zero = torch.round(-lo / scale)
    return scale, zero


def _codes(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """x_q as float32 integers in [0, 2^b − 1]."""
    return torch.clamp(torch.round(x.float() / scale) + zero, 0.0, float((1 << bits) - 1))


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes (rows, n) in [0, 2^b) into uint8 (rows, ceil(n·b/8)), LSB first."""
    b = _check_bits(bits)
    rows, n = codes.shape
    c = codes.to(torch.int32)
    shifts = torch.arange(b, dtype=torch.int32, device=c.device)
    bitstream = ((c.unsqueeze(-1) >> shifts) & 1).to(torch.uint8).reshape(rows, n * b)
    nbytes = math.ceil(n * b / 8)
    pad = nbytes * 8 - n * b
    if pad:
        bitstream = torch.nn.functional.pad(bitstream, (0, pad))
    weights = (1 << torch.arange(8, dtype=torch.int32, device=c.device))
    return (bitstream.reshape(rows, nbytes, 8).to(torch.int32) * weights).sum(-1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of `pack_bits`: uint8 (rows, ceil(n·b/8)) -> int32 codes (rows, n)."""
    b = _check_bits(bits)
    rows = packed.shape[0]
    shifts8 = torch.arange(8, dtype=torch.int32, device=packed.device)
    bitstream = ((packed.to(torch.int32).unsqueeze(-1) >> shifts8) & 1).reshape(rows, -1)[:, : n * b]
    weights = (1 << torch.arange(b, dtype=torch.int32, device=packed.device))
    return (bitstream.reshape(rows, n, b) * weights).sum(-1)


def _encode(codes: torch.Tensor, bits: int) -> torch.Tensor:
    if bits == 8:
        return codes.to(torch.uint8)
    if bits == 16:
        return (codes.to(torch.int32) - _INT16_OFFSET).to(torch.int16)
    return pack_bits(codes, bits)


def _decode(payload: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    if bits == 8:
        return payload.to(torch.int32)
    if bits == 16:
        return payload.to(torch.int32) + _INT16_OFFSET
    return unpack_bits(payload, bits, n)


def quantize(x: torch.Tensor, bits: int, per_sample: bool = True,
             channel_dim: int | None = None) -> QuantizedTensor:
    """UAQ-quantise and bit-pack `x` (dim 0 is the sample); see the module docstring."""
    b = _check_bits(bits)
    if not x.is_floating_point():
        raise TypeError(f"quantize expects a floating-point tensor, got {x.dtype}")
    r = _rows(x.detach())
    if r.numel() == 0:
        raise ValueError("cannot quantise an empty tensor")
    scale, zero = _qparams(r, b, per_sample, channel_dim)
    codes = _codes(r, scale, zero, b).reshape(r.shape[0], -1)
    return QuantizedTensor(payload=_encode(codes, b).contiguous(), scale=scale.contiguous(),
                           zero_point=zero.to(torch.int32).contiguous(), bits=b, shape=tuple(x.shape),
                           dtype=x.dtype, per_sample=per_sample, channel_dim=channel_dim)


def dequantize(q: QuantizedTensor) -> torch.Tensor:
    """Unpack and reconstruct `x̂ = s·(x_q − z)` in the original shape and dtype."""
    rows = 1 if len(q.shape) == 0 else q.shape[0]
    n = math.prod(q.shape[1:]) if len(q.shape) > 0 else 1
    codes = _decode(q.payload, q.bits, n).float()
    row_shape = (rows, 1) if len(q.shape) == 0 else q.shape
    x_hat = q.scale * (codes.reshape(row_shape) - q.zero_point.float())
    return x_hat.reshape(q.shape).to(q.dtype)


def fake_quantize(x: torch.Tensor, bits: int, per_sample: bool = True,
                  channel_dim: int | None = None) -> torch.Tensor:
    """`dequantize(quantize(x, ...))` without packing: the fast path for sensitivity measurement.

    Bit-identical to the packed round trip.
    """
    b = _check_bits(bits)
    if not x.is_floating_point():
        raise TypeError(f"fake_quantize expects a floating-point tensor, got {x.dtype}")
    r = _rows(x)
    if r.numel() == 0:
        return x.clone()
    scale, zero = _qparams(r, b, per_sample, channel_dim)
    x_hat = scale * (_codes(r, scale, zero, b) - zero)
    return x_hat.reshape(x.shape).to(x.dtype)


# ------------------------------------------------------------------ grouped quantisation (saved activations)
@dataclass(frozen=True)
class GroupedQuantizedTensor:
    """A tensor quantised in groups of `group` consecutive elements (row-major order), one scale and zero
    point per group: `rows` is a `QuantizedTensor` of shape (n_groups, group) (the last group padded with
    zeros), `shape`/`dtype` those of the original tensor."""

    rows: QuantizedTensor
    shape: tuple[int, ...]
    dtype: torch.dtype
    group: int

    @property
    def nbytes(self) -> int:
        """Bytes held (B): packed codes plus 8 B of scale and zero point per group."""
        return self.rows.nbytes


def grouped_nbytes(numel: int, bits: int, group: int) -> int:
    """Bytes of `quantize_groups` for a tensor of `numel` elements (B): ceil(numel/group) groups of
    ceil(group·bits/8) code bytes and 8 B of metadata (16-bit codes are stored as int16)."""
    b = _check_bits(bits)
    groups = math.ceil(int(numel) / int(group))
    per_row = 2 * group if b == 16 else (group if b == 8 else math.ceil(group * b / 8))
    return groups * (per_row + META_BYTES_PER_GROUP)


def quantize_groups(x: torch.Tensor, bits: int, group: int = 64) -> GroupedQuantizedTensor:
    """UAQ with one (scale, zero point) per `group` consecutive elements; see `grouped_nbytes` for the size."""
    if group < 1:
        raise ValueError("group must be >= 1")
    if not x.is_floating_point():
        raise TypeError(f"quantize_groups expects a floating-point tensor, got {x.dtype}")
    flat = x.detach().reshape(-1)
    pad = (-flat.numel()) % group
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))
    rows = quantize(flat.reshape(-1, group), bits, per_sample=True)
    return GroupedQuantizedTensor(rows=rows, shape=tuple(x.shape), dtype=x.dtype, group=group)


def dequantize_groups(q: GroupedQuantizedTensor) -> torch.Tensor:
    """Reconstruct a `quantize_groups` tensor in its original shape and dtype (each element within s/2)."""
    flat = dequantize(q.rows).reshape(-1)
    n = math.prod(q.shape) if q.shape else 1
    return flat[:n].reshape(q.shape).to(q.dtype)
