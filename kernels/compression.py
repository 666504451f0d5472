"""Codecs for federated model exchange, with exact byte accounting of what crosses the wire.

Three codecs, each a pair of pure functions on one tensor (docs/fed-compress.md, "Cost model"):

* **Top-k sparsification** (`encode_topk` / `decode_topk`), the upload codec: the `K` entries of
  largest magnitude travel as fp32 values; their positions travel as int32 indices or as a
  presence bitmap, whichever is smaller; the rest are dropped (decoded as 0).
* **Caesar's download codec** (`encode_download` / `recover_download`): the top `K` entries of
  `|w|` travel exactly (fp32 values + index or bitmap), every other entry travels as one sign bit,
  and two fp32 statistics over those others (`mean|w|`, `max|w|`). The device rebuilds each
  sign-only entry from its own previous local model `w_prev`: it keeps `w_prev` when the sign
  agrees and `|w_prev| <= max|w|`, and uses `sign * mean|w|` otherwise (or always, without `w_prev`).
* **Stochastic uniform quantisation** (`encode_stochastic` / `decode_stochastic`), FedPAQ-style:
  `b`-bit codes over `[min, max]` with unbiased stochastic rounding, bit-packed, plus an fp32
  offset and step.

`K = ceil(keep * P)` (clamped to `[1, P]`), where `keep` is the fraction of values kept, in (0, 1]
(Caesar's theta is the dropped fraction: keep = 1 - theta). Tensors with fewer than
`min_numel` elements (default 1024), and any tensor with `keep = 1`, travel dense (4·P bytes, lossless).
A sparse encoding is also replaced by the dense one when dense is not larger, so every payload costs

    dense      4·P
    top-k      min(4·P, 4·K + min(4·K, ceil(P/8)))
    download   min(4·P, 4·K + min(4·K, ceil(P/8)) + ceil((P − K)/8) + 8)
    stochastic min(4·P, ceil(P·b/8) + 8)

bytes, exactly the arrays returned by `Payload.arrays()` (the cost model in
`solvers/fed_compress/cost.py` computes the same numbers; a test checks they agree). Ties in
magnitude are broken by position (a stable sort), so the kept set is deterministic.

Error feedback (`compress_with_feedback`) keeps, per client, the residual that the codec dropped
and adds it to the next update before encoding.

Imports torch and the sibling `uniform_quant` (bit packing) only, so it can ship to a device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from kernels.uniform_quant import pack_bits, unpack_bits

VALUE_BYTES = 4            # fp32 value
INDEX_BYTES = 4            # int32 position
DOWNLOAD_STATS_BYTES = 8   # fp32 mean|w| + fp32 max|w| over the sign-only entries
QUANT_META_BYTES = 8       # fp32 offset + fp32 step
MIN_COMPRESS_NUMEL = 1024  # smaller tensors (biases, tiny layers) always travel dense

DENSE, INDEX, BITMAP, QUANT = "dense", "index", "bitmap", "quant"


def kept_count(numel: int, keep: float) -> int:
    """K = ceil(keep · P) clamped to [1, P]; the 1e-9 guards against float noise (0.65·P = 2995.2000001)."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep fraction must lie in (0, 1], got {keep!r}")
    return min(int(numel), max(1, math.ceil(keep * numel - 1e-9)))


def topk_bytes(numel: int, keep: float, min_numel: int = MIN_COMPRESS_NUMEL) -> int:
    """Bytes of `encode_topk` for a tensor of `numel` elements at keep fraction `keep` (B)."""
    dense = VALUE_BYTES * numel
    if numel < min_numel:
        return dense
    k = kept_count(numel, keep)
    return min(dense, VALUE_BYTES * k + min(INDEX_BYTES * k, math.ceil(numel / 8)))


def download_bytes(numel: int, keep: float, min_numel: int = MIN_COMPRESS_NUMEL) -> int:
    """Bytes of `encode_download` for a tensor of `numel` elements at keep fraction `keep` (B)."""
    dense = VALUE_BYTES * numel
    if numel < min_numel:
        return dense
    k = kept_count(numel, keep)
    sparse = (VALUE_BYTES * k + min(INDEX_BYTES * k, math.ceil(numel / 8))
              + math.ceil((numel - k) / 8) + DOWNLOAD_STATS_BYTES)
    return min(dense, sparse)


def stochastic_bytes(numel: int, bits: int, min_numel: int = MIN_COMPRESS_NUMEL) -> int:
    """Bytes of `encode_stochastic` for a tensor of `numel` elements at `bits` bits (B)."""
    dense = VALUE_BYTES * numel
    if numel < min_numel:
        return dense
    return min(dense, math.ceil(numel * bits / 8) + QUANT_META_BYTES)


def _sparse_format(numel: int, k: int) -> str:
    return INDEX if INDEX_BYTES * k <= math.ceil(numel / 8) else BITMAP


def topk_format(numel: int, keep: float, min_numel: int = MIN_COMPRESS_NUMEL) -> str:
    """The encoding `encode_topk` uses (DENSE, INDEX or BITMAP): both ends derive it from (P, keep)."""
    if numel < min_numel or topk_bytes(numel, keep, min_numel) == VALUE_BYTES * numel:
        return DENSE
    return _sparse_format(numel, kept_count(numel, keep))


def download_format(numel: int, keep: float, min_numel: int = MIN_COMPRESS_NUMEL) -> str:
    """The encoding `encode_download` uses (DENSE, INDEX or BITMAP)."""
    if numel < min_numel or download_bytes(numel, keep, min_numel) == VALUE_BYTES * numel:
        return DENSE
    return _sparse_format(numel, kept_count(numel, keep))


def stochastic_format(numel: int, bits: int, min_numel: int = MIN_COMPRESS_NUMEL) -> str:
    """The encoding `encode_stochastic` uses (DENSE or QUANT)."""
    if numel < min_numel or stochastic_bytes(numel, bits, min_numel) == VALUE_BYTES * numel:
        return DENSE
    return QUANT


@dataclass(frozen=True)
class Payload:
    """One encoded tensor as it travels: only `values`, `positions`, `signs` and `stats` cross the wire.

    `fmt` is DENSE (values = the whole tensor), INDEX (positions = int32 indices, ascending),
    BITMAP (positions = packed presence bits, LSB first), or QUANT (values = packed codes,
    stats = [offset, step], `bits` set). `signs` and `stats` are empty unless the codec uses them.
    `shape` and `fmt`/`bits` are known to both ends from the round's configuration, not sent.
    """

    fmt: str
    shape: tuple[int, ...]
    values: np.ndarray
    positions: np.ndarray
    signs: np.ndarray
    stats: np.ndarray
    bits: int = 0

    @property
    def numel(self) -> int:
        """P, elements of the tensor."""
        return math.prod(self.shape)

    def arrays(self) -> list[np.ndarray]:
        """The arrays that cross the wire, in a fixed order (empty ones included, 0 bytes)."""
        return [self.values, self.positions, self.signs, self.stats]

    @property
    def nbytes(self) -> int:
        """Bytes on the wire (B): the sum of the arrays' buffers."""
        return sum(int(a.nbytes) for a in self.arrays())

    @classmethod
    def from_arrays(cls, fmt: str, shape: tuple[int, ...], arrays: list[np.ndarray], bits: int = 0) -> "Payload":
        """Rebuild a payload from `arrays()` as received, plus the format and shape both ends know."""
        values, positions, signs, stats = arrays
        return cls(fmt, tuple(shape), values, positions, signs, stats, bits)


_EMPTY_U8 = np.zeros(0, dtype=np.uint8)
_EMPTY_F32 = np.zeros(0, dtype=np.float32)


def _flat32(x: torch.Tensor) -> torch.Tensor:
    if not x.is_floating_point():
        raise TypeError(f"codecs expect a floating-point tensor, got {x.dtype}")
    return x.detach().reshape(-1).to(torch.float32)


def _dense(x: torch.Tensor) -> Payload:
    return Payload(DENSE, tuple(x.shape), _flat32(x).numpy().copy(), _EMPTY_U8, _EMPTY_U8, _EMPTY_F32)


def _pack_mask(mask: torch.Tensor) -> np.ndarray:
    """Bool (n,) -> uint8 (ceil(n/8),), LSB first."""
    if mask.numel() == 0:
        return _EMPTY_U8
    return pack_bits(mask.reshape(1, -1).to(torch.int32), 1).reshape(-1).numpy().copy()


def _unpack_mask(packed: np.ndarray, n: int) -> torch.Tensor:
    if n == 0:
        return torch.zeros(0, dtype=torch.bool)
    return unpack_bits(torch.from_numpy(np.array(packed, dtype=np.uint8)).reshape(1, -1), 1, n).reshape(-1).bool()


def top_indices(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Positions (ascending, int64) of the `k` largest |flat|, ties broken by lower position."""
    order = torch.sort(flat.abs(), descending=True, stable=True).indices[:k]
    return torch.sort(order).values


def _positions(idx: torch.Tensor, numel: int) -> tuple[str, np.ndarray]:
    """Index list or bitmap, whichever is smaller (index on a tie)."""
    if _sparse_format(numel, int(idx.numel())) == INDEX:
        return INDEX, idx.to(torch.int32).numpy().copy()
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[idx] = True
    return BITMAP, _pack_mask(mask)


def _kept_mask(p: Payload) -> torch.Tensor:
    """Bool (P,) of the positions whose values travelled."""
    if p.fmt == INDEX:
        mask = torch.zeros(p.numel, dtype=torch.bool)
        mask[torch.from_numpy(p.positions.astype(np.int64))] = True
        return mask
    return _unpack_mask(p.positions, p.numel)


def encode_topk(x: torch.Tensor, keep: float, min_numel: int = MIN_COMPRESS_NUMEL) -> Payload:
    """Top-k sparsification of `x` keeping a fraction `keep` of its entries (see the module docstring)."""
    n = x.numel()
    if topk_format(n, keep, min_numel) == DENSE:
        return _dense(x)
    flat = _flat32(x)
    idx = top_indices(flat, kept_count(n, keep))
    fmt, pos = _positions(idx, n)
    return Payload(fmt, tuple(x.shape), flat[idx].numpy().copy(), pos, _EMPTY_U8, _EMPTY_F32)


def decode_topk(p: Payload) -> torch.Tensor:
    """The tensor the receiver reconstructs: kept values in place, zeros elsewhere (fp32)."""
    if p.fmt == DENSE:
        return torch.from_numpy(p.values.copy()).reshape(p.shape)
    out = torch.zeros(p.numel, dtype=torch.float32)
    out[_kept_mask(p)] = torch.from_numpy(p.values.copy())
    return out.reshape(p.shape)


def encode_download(w: torch.Tensor, keep: float, min_numel: int = MIN_COMPRESS_NUMEL) -> Payload:
    """Caesar's download codec: top-K exact, 1-bit signs for the rest, mean|w| and max|w| of the rest."""
    n = w.numel()
    if download_format(n, keep, min_numel) == DENSE:
        return _dense(w)
    flat = _flat32(w)
    idx = top_indices(flat, kept_count(n, keep))
    fmt, pos = _positions(idx, n)
    rest_mask = torch.ones(n, dtype=torch.bool)
    rest_mask[idx] = False
    rest = flat[rest_mask]
    mag = rest.abs()
    stats = np.array([float(mag.mean()), float(mag.max())], dtype=np.float32)
    return Payload(fmt, tuple(w.shape), flat[idx].numpy().copy(), pos, _pack_mask(rest >= 0), stats)


def recover_download(p: Payload, w_prev: torch.Tensor | None) -> torch.Tensor:
    """The device's rebuilt model tensor (fp32): kept values exact, sign-only entries from `w_prev`.

    A sign-only entry with sign s keeps `w_prev` when `(w_prev >= 0) == (s > 0)` and
    `|w_prev| <= max|w|`, else becomes `s * mean|w|`; without `w_prev` every such entry is
    `s * mean|w|` (the "recovery off" ablation). With `w_prev == w` the result equals `w` exactly.
    """
    if p.fmt == DENSE:
        return torch.from_numpy(p.values.copy()).reshape(p.shape)
    kept = _kept_mask(p)
    n_rest = p.numel - int(kept.sum())
    positive = _unpack_mask(p.signs, n_rest)
    mean, mx = (float(v) for v in p.stats)
    sign = torch.where(positive, 1.0, -1.0)
    guess = sign * torch.tensor(mean, dtype=torch.float32)
    if w_prev is not None:
        prev = w_prev.detach().reshape(-1).to(torch.float32)[~kept]
        agree = ((prev >= 0) == positive) & (prev.abs() <= torch.tensor(mx, dtype=torch.float32))
        guess = torch.where(agree, prev, guess)
    out = torch.empty(p.numel, dtype=torch.float32)
    out[kept] = torch.from_numpy(p.values.copy())
    out[~kept] = guess
    return out.reshape(p.shape)


def encode_stochastic(x: torch.Tensor, bits: int, generator: torch.Generator,
                      min_numel: int = MIN_COMPRESS_NUMEL) -> Payload:
    """Unbiased stochastic uniform quantisation to `bits` bits over [min x, max x] (FedPAQ-style).

    Code `c = floor((x − lo)/step + u)` with `u ~ U[0, 1)` from `generator`, so `E[lo + c·step] = x`.
    """
    n = x.numel()
    if not 1 <= int(bits) <= 16:
        raise ValueError(f"bits must be an integer in [1, 16], got {bits!r}")
    if stochastic_format(n, bits, min_numel) == DENSE:
        return _dense(x)
    flat = _flat32(x)
    lo, hi = float(flat.min()), float(flat.max())
    levels = (1 << bits) - 1
    step = (hi - lo) / levels if hi > lo else 1.0
    lo32, step32 = torch.tensor(lo, dtype=torch.float32), torch.tensor(step, dtype=torch.float32)
    u = torch.rand(n, generator=generator, dtype=torch.float32)
    codes = torch.clamp(torch.floor((flat - lo32) / step32 + u), 0, levels).to(torch.int32)
    packed = pack_bits(codes.reshape(1, -1), bits).reshape(-1).numpy().copy()
    return Payload(QUANT, tuple(x.shape), packed, _EMPTY_U8, _EMPTY_U8,
                   np.array([lo, step], dtype=np.float32), bits=int(bits))


def decode_stochastic(p: Payload) -> torch.Tensor:
    """`lo + code · step` in the original shape (fp32)."""
    if p.fmt == DENSE:
        return torch.from_numpy(p.values.copy()).reshape(p.shape)
    codes = unpack_bits(torch.from_numpy(p.values.copy()).reshape(1, -1), p.bits, p.numel).reshape(-1)
    lo, step = (torch.tensor(float(v), dtype=torch.float32) for v in p.stats)
    return (lo + codes.to(torch.float32) * step).reshape(p.shape)


def compress_with_feedback(update: torch.Tensor, residual: torch.Tensor | None,
                           encode: Callable[[torch.Tensor], Payload],
                           decode: Callable[[Payload], torch.Tensor]) -> tuple[Payload, torch.Tensor]:
    """Error feedback: encode `update + residual`; the new residual is what the receiver does not get.

    Returns `(payload, new_residual)` with `decode(payload) + new_residual == update + residual` (fp32),
    so the sum of everything decoded plus the last residual equals the sum of all updates.
    """
    corrected = _flat32(update).reshape(update.shape)
    if residual is not None:
        corrected = corrected + residual.reshape(update.shape).to(torch.float32)
    payload = encode(corrected)
    return payload, corrected - decode(payload)


def relative_deviation(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """||w − ŵ||² / ||w||² (0 when w is all zeros and ŵ equals it)."""
    w32, h32 = w.detach().reshape(-1).double(), w_hat.detach().reshape(-1).double()
    den = float((w32 * w32).sum())
    num = float(((w32 - h32) ** 2).sum())
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


# ---------------------------------------------------------------- one byte stream per message
DOWNLOAD, UPLOAD_TOPK, UPLOAD_QUANT = "download", "topk", "quant"


def encode(kind: str, x: torch.Tensor, ratio: float, min_numel: int = MIN_COMPRESS_NUMEL,
           generator: torch.Generator | None = None) -> Payload:
    """Encode one tensor with codec `kind`; `ratio` is the keep fraction (or the bits for "quant")."""
    if kind == DOWNLOAD:
        return encode_download(x, ratio, min_numel)
    if kind == UPLOAD_TOPK:
        return encode_topk(x, ratio, min_numel)
    if kind == UPLOAD_QUANT:
        if generator is None:
            raise ValueError("stochastic quantisation needs a seeded generator")
        return encode_stochastic(x, int(ratio), generator, min_numel)
    raise ValueError(f"unknown codec {kind!r}")


def part_sizes(kind: str, numel: int, ratio: float, min_numel: int = MIN_COMPRESS_NUMEL) -> tuple[str, tuple[int, int, int, int]]:
    """(format, bytes of values, positions, signs, stats) that codec `kind` sends for a tensor of `numel` elements.

    Both ends compute it from what they both know (size, ratio), so a message carries only the bytes.
    """
    if kind == UPLOAD_QUANT:
        fmt = stochastic_format(numel, int(ratio), min_numel)
        if fmt == DENSE:
            return fmt, (VALUE_BYTES * numel, 0, 0, 0)
        return fmt, (math.ceil(numel * int(ratio) / 8), 0, 0, QUANT_META_BYTES)
    fmt = (download_format if kind == DOWNLOAD else topk_format)(numel, ratio, min_numel)
    if fmt == DENSE:
        return fmt, (VALUE_BYTES * numel, 0, 0, 0)
    k = kept_count(numel, ratio)
    pos = INDEX_BYTES * k if fmt == INDEX else math.ceil(numel / 8)
    if kind == DOWNLOAD:
        return fmt, (VALUE_BYTES * k, pos, math.ceil((numel - k) / 8), DOWNLOAD_STATS_BYTES)
    return fmt, (VALUE_BYTES * k, pos, 0, 0)


_PART_DTYPES = (np.float32, None, np.uint8, np.float32)   # positions: int32 (index) or uint8 (bitmap)


def pack_stream(payloads: list[Payload]) -> np.ndarray:
    """Concatenate the wire arrays of `payloads` (in order) into one uint8 buffer of Σ nbytes bytes."""
    parts = [np.ascontiguousarray(a).view(np.uint8).reshape(-1) for p in payloads for a in p.arrays()]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)


def unpack_stream(buf: np.ndarray, kind: str, shapes: list[tuple[int, ...]], ratio: float,
                  min_numel: int = MIN_COMPRESS_NUMEL) -> list[Payload]:
    """Split a buffer made by `pack_stream` back into payloads, given the tensors' shapes and the ratio."""
    raw = np.ascontiguousarray(buf, dtype=np.uint8).reshape(-1)
    out, at = [], 0
    for shape in shapes:
        numel = math.prod(shape)
        fmt, sizes = part_sizes(kind, numel, ratio, min_numel)
        arrays = []
        for j, size in enumerate(sizes):
            chunk = raw[at:at + size].copy()
            at += size
            if j == 0:
                dtype = np.uint8 if fmt == QUANT else np.float32
            elif j == 1:
                dtype = np.int32 if fmt == INDEX else np.uint8
            else:
                dtype = _PART_DTYPES[j]
            arrays.append(chunk.view(dtype))
        out.append(Payload.from_arrays(fmt, shape, arrays, int(ratio) if kind == UPLOAD_QUANT else 0))
    if at != raw.size:
        raise ValueError(f"payload stream has {raw.size} bytes, the layout accounts for {at}")
    return out
