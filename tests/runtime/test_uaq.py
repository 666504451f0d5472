"""UAQ (docs/split-inference.md §2 and §5, wire): error bound, wire size, bit packing, edge cases."""
from __future__ import annotations

import math

import pytest
import torch

from kernels.uniform_quant import (
    QuantizedTensor, dequantize, fake_quantize, pack_bits, payload_bytes, quantize, unpack_bits,
)

BITS = (2, 3, 4, 5, 6, 8, 16)


def _sample(shape: tuple[int, ...] = (4, 3, 5, 7), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 3.0
    x[1] = x[1].abs() + 2.0     # strictly positive sample: zero point below 0
    x[2] = -x[2].abs() - 1.0    # strictly negative sample: zero point above 2^b − 1
    return x


def _scale_like(q: QuantizedTensor, x: torch.Tensor) -> torch.Tensor:
    return q.scale.expand_as(x)


@pytest.mark.parametrize("bits", BITS)
def test_element_error_within_half_a_step(bits: int) -> None:
    x = _sample()
    q = quantize(x, bits)
    x_hat = dequantize(q)
    assert x_hat.shape == x.shape and x_hat.dtype == x.dtype
    s = _scale_like(q, x)
    # s/2 plus float32 rounding slack relative to |x|
    assert bool(((x_hat - x).abs() <= s / 2 * (1 + 1e-4) + 1e-6 * x.abs()).all())
    assert q.scale.shape == (x.shape[0], 1, 1, 1)


@pytest.mark.parametrize("bits", BITS)
def test_payload_bytes_per_sample(bits: int) -> None:
    x = _sample((3, 7, 11))          # n = 77 per sample: not byte aligned for most b
    n = 77
    q = quantize(x, bits)
    per_sample = math.ceil(n * bits / 8)
    assert q.payload.shape[0] == 3
    assert q.payload_nbytes == 3 * per_sample
    assert q.nbytes == 3 * (per_sample + 8) == 3 * payload_bytes(n, bits)
    assert q.payload.dtype == {8: torch.uint8, 16: torch.int16}.get(bits, torch.uint8)


def test_sixteen_bits_round_trip() -> None:
    x = _sample((3, 1000), seed=3)
    q = quantize(x, 16)
    s = _scale_like(q, x)
    assert bool(((dequantize(q) - x).abs() <= s / 2 * (1 + 1e-3) + 1e-6 * x.abs()).all())
    assert float(((dequantize(q) - x).abs() / x.abs().amax()).max()) < 2e-5


@pytest.mark.parametrize("bits", list(range(2, 9)) + [11, 16])
def test_pack_unpack_round_trip(bits: int) -> None:
    g = torch.Generator().manual_seed(bits)
    for n in (1, 7, 8, 9, 64, 101):
        codes = torch.randint(0, 1 << bits, (3, n), generator=g, dtype=torch.int32)
        packed = pack_bits(codes, bits)
        assert packed.dtype == torch.uint8 and packed.shape == (3, math.ceil(n * bits / 8))
        assert torch.equal(unpack_bits(packed, bits, n), codes)


def test_packing_is_lsb_first() -> None:
    codes = torch.tensor([[1, 2, 3, 0]], dtype=torch.int32)   # 2 bits each: 01 10 11 00 LSB first
    assert pack_bits(codes, 2).tolist() == [[0b00111001]]


@pytest.mark.parametrize("bits", BITS)
def test_fake_quantize_matches_packed_round_trip(bits: int) -> None:
    x = _sample()
    assert torch.equal(fake_quantize(x, bits), dequantize(quantize(x, bits)))
    assert torch.equal(fake_quantize(x, bits, channel_dim=1), dequantize(quantize(x, bits, channel_dim=1)))
    assert torch.equal(fake_quantize(x, bits, per_sample=False), dequantize(quantize(x, bits, per_sample=False)))


def test_zero_is_exact_when_in_range() -> None:
    # with z = round(−min/s) the grid is s·(integer), so 0 (e.g. ReLU zeros) survives exactly
    x = torch.relu(_sample((3, 50), seed=5))
    x[:, 0] = 0.0
    for bits in (2, 3, 4):
        x_hat = fake_quantize(x, bits)
        assert bool((x_hat[x == 0] == 0).all())
        assert int(quantize(x, bits).zero_point.max()) == 0


def test_constant_tensors_are_exact() -> None:
    x = torch.stack([torch.full((5, 6), 2.5), torch.zeros(5, 6), torch.full((5, 6), -0.75)])
    for bits in BITS:
        assert torch.equal(dequantize(quantize(x, bits)), x)
        assert torch.equal(fake_quantize(x, bits), x)


def test_per_channel_and_whole_tensor_groups() -> None:
    x = _sample()
    q = quantize(x, 4, channel_dim=1)
    assert q.scale.shape == (4, 3, 1, 1)
    assert q.meta_nbytes == 8 * 4 * 3
    assert q.payload_nbytes == 4 * math.ceil(35 * 3 * 4 / 8)
    qt = quantize(x, 4, per_sample=False)
    assert qt.scale.numel() == 1 and qt.meta_nbytes == 8
    # per-channel steps are never coarser than the per-sample step
    assert bool((q.scale <= quantize(x, 4).scale * (1 + 1e-6)).all())
    assert float((dequantize(q) - x).abs().max()) <= float((dequantize(quantize(x, 4)) - x).abs().max()) + 1e-6


def test_error_shrinks_with_bits_and_dtype_is_kept() -> None:
    x = _sample().to(torch.bfloat16)
    errs = [float((fake_quantize(x, b).float() - x.float()).abs().max()) for b in (2, 4, 8)]
    assert errs[0] > errs[1] > errs[2]
    assert fake_quantize(x, 4).dtype == torch.bfloat16


def test_scalar_and_bad_inputs() -> None:
    x = torch.tensor(3.0)
    assert torch.equal(dequantize(quantize(x, 4)), x)
    with pytest.raises(ValueError):
        quantize(torch.ones(2, 2), 0)
    with pytest.raises(ValueError):
        quantize(torch.ones(2, 2), 17)
    with pytest.raises(TypeError):
        quantize(torch.ones(2, 2, dtype=torch.int64), 4)
    with pytest.raises(ValueError):
        payload_bytes(10, 33)
    assert payload_bytes(10, 3) == 4 + 8 and payload_bytes(10, 3, meta_bytes=0) == 4
