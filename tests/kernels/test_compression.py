"""Codecs of `kernels/compression.py`: round trips, bit-exact kept entries, exact byte counts, recovery, error feedback."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kernels.compression import (
    BITMAP, DENSE, INDEX, QUANT, Payload, compress_with_feedback, decode_stochastic, decode_topk, download_bytes,
    encode_download, encode_stochastic, encode_topk, kept_count, recover_download, relative_deviation,
    stochastic_bytes, top_indices, topk_bytes,
)

SHAPES = [(7,), (1024,), (32, 16, 3, 3), (64, 512), (5000,)]
KEEPS = [0.01, 0.05, 0.3, 0.5, 0.77, 0.97, 1.0]


def _tensor(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("keep", KEEPS)
def test_topk_keeps_the_largest_entries_bit_exact_and_counts_bytes(shape: tuple[int, ...], keep: float) -> None:
    x = _tensor(shape)
    p = encode_topk(x, keep)
    assert p.nbytes == topk_bytes(x.numel(), keep)
    y = decode_topk(p)
    assert y.shape == x.shape
    if p.fmt == DENSE:
        assert torch.equal(y, x)
        return
    k = kept_count(x.numel(), keep)
    kept = y.reshape(-1) != 0
    assert int(kept.sum()) == k
    # every kept entry arrives bit-exact and no dropped entry is larger than a kept one
    assert torch.equal(y.reshape(-1)[kept], x.reshape(-1)[kept])
    assert float(x.reshape(-1)[~kept].abs().max()) <= float(x.reshape(-1)[kept].abs().min())
    assert p.fmt == (INDEX if 4 * k <= math.ceil(x.numel() / 8) else BITMAP)


def test_tiny_tensors_and_keep_one_travel_dense() -> None:
    x = _tensor((1023,))
    for keep in (0.01, 0.5):
        assert encode_topk(x, keep).fmt == DENSE
        assert encode_download(x, keep).fmt == DENSE
        assert encode_topk(x, keep).nbytes == 4 * 1023 == topk_bytes(1023, keep) == download_bytes(1023, keep)
    big = _tensor((4096,))
    assert encode_topk(big, 1.0).fmt == DENSE and encode_download(big, 1.0).fmt == DENSE


def test_ties_break_by_position() -> None:
    flat = torch.tensor([1.0, -2.0, 2.0, 2.0, 0.5])
    assert top_indices(flat, 2).tolist() == [1, 2]
    assert top_indices(flat, 3).tolist() == [1, 2, 3]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("keep", KEEPS)
def test_download_payload_bytes_and_recovery(shape: tuple[int, ...], keep: float) -> None:
    w = _tensor(shape, 1)
    p = encode_download(w, keep)
    assert p.nbytes == download_bytes(w.numel(), keep)
    # recovery is exact when the device's previous model is the new model
    assert torch.equal(recover_download(p, w.clone()), w)
    # top-K entries bit-exact even without a previous model
    hat = recover_download(p, None)
    if p.fmt == DENSE:
        assert torch.equal(hat, w)
        return
    flat, hflat = w.reshape(-1), hat.reshape(-1)
    idx = top_indices(flat, kept_count(w.numel(), keep))
    assert torch.equal(hflat[idx], flat[idx])
    rest = torch.ones(w.numel(), dtype=torch.bool)
    rest[idx] = False
    # sign-only entries carry the right sign and the mean magnitude
    assert torch.equal(torch.sign(hflat[rest]), torch.where(flat[rest] >= 0, 1.0, -1.0))
    assert torch.allclose(hflat[rest].abs(), flat[rest].abs().mean().expand(int(rest.sum())))


def test_recovery_with_a_close_previous_model_beats_sign_mean_and_fresher_is_better() -> None:
    w = _tensor((64, 512), 2)
    p = encode_download(w, 0.5)
    noise = _tensor((64, 512), 3)
    devs = [relative_deviation(w, recover_download(p, w + s * 0.1 * noise)) for s in (0.1, 0.5, 1.0)]
    sign_mean = relative_deviation(w, recover_download(p, None))
    assert devs[0] < devs[1] < devs[2] < sign_mean


def test_keep_zero_and_out_of_range_rejected() -> None:
    with pytest.raises(ValueError):
        kept_count(100, 0.0)
    with pytest.raises(ValueError):
        encode_topk(_tensor((2048,)), 1.5)


def test_payload_round_trips_through_its_arrays() -> None:
    w = _tensor((64, 512), 4)
    for p in (encode_download(w, 0.3), encode_topk(w, 0.01), encode_topk(w, 0.6)):
        wire = [a.tobytes() for a in p.arrays()]
        dtypes = [a.dtype for a in p.arrays()]
        q = Payload.from_arrays(p.fmt, p.shape, [np.frombuffer(b, dtype=d) for b, d in zip(wire, dtypes)], p.bits)
        assert sum(len(b) for b in wire) == p.nbytes
        if p.stats.size:   # a download payload
            assert torch.equal(recover_download(q, w * 0.9), recover_download(p, w * 0.9))
        else:
            assert torch.equal(decode_topk(q), decode_topk(p))


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_stochastic_quantisation_bytes_bounds_and_unbiasedness(bits: int) -> None:
    x = _tensor((4096,), 5)
    g = torch.Generator().manual_seed(0)
    p = encode_stochastic(x, bits, g)
    assert p.fmt == QUANT and p.nbytes == stochastic_bytes(4096, bits) == math.ceil(4096 * bits / 8) + 8
    y = decode_stochastic(p)
    step = float(p.stats[1])
    assert float((y - x).abs().max()) <= step * (1 + 1e-5)
    # unbiased: the mean over many independent draws approaches x (tolerance ~ 5 standard errors)
    draws = torch.stack([decode_stochastic(encode_stochastic(x, bits, g)) for _ in range(200)])
    assert float((draws.mean(0) - x).abs().max()) <= 5 * step / (2 * math.sqrt(200)) + 1e-6


def test_error_feedback_keeps_exactly_what_the_codec_dropped() -> None:
    upd = [_tensor((4096,), 10 + r) for r in range(6)]
    residual = None
    sent = torch.zeros(4096)
    for u in upd:
        p, residual = compress_with_feedback(u, residual, lambda t: encode_topk(t, 0.05), decode_topk)
        assert p.nbytes == topk_bytes(4096, 0.05)
        sent += decode_topk(p)
    # telescoping: everything decoded plus the final residual is the sum of all updates
    assert torch.allclose(sent + residual, torch.stack(upd).sum(0), atol=1e-5)
    assert float(residual.abs().sum()) > 0


def test_error_feedback_residual_is_zero_for_a_lossless_codec() -> None:
    u = _tensor((2048,), 7)
    p, residual = compress_with_feedback(u, None, lambda t: encode_topk(t, 1.0), decode_topk)
    assert p.fmt == DENSE and torch.equal(residual, torch.zeros_like(u))


def test_payload_sizes_equal_the_cost_models_bytes_exactly() -> None:
    """The planner's byte formulas (solvers/fed_compress/cost.py) and the codecs agree to the byte."""
    from solvers.fed_compress import cost

    numels = (144, 16, 1023, 1024, 4608, 32, 32768, 64, 640, 10, 7777)
    tensors = [_tensor((n,), 20 + j) for j, n in enumerate(numels)]
    for keep in (0.01, 0.03, 0.031, 0.1, 0.35, 0.5, 0.55, 0.65, 0.9, 0.95, 0.99, 1.0):
        down = sum(encode_download(t, keep).nbytes for t in tensors)
        up = sum(encode_topk(t, keep).nbytes for t in tensors)
        assert down == cost.download_bytes(numels, keep), keep
        assert up == cost.upload_bytes(numels, keep), keep
    g = torch.Generator().manual_seed(1)
    for bits in (2, 4, 8):
        assert sum(encode_stochastic(t, bits, g).nbytes for t in tensors) == cost.quant_bytes(numels, bits)


def test_both_ends_derive_the_encoding_from_size_and_ratio() -> None:
    from kernels.compression import download_format, stochastic_format, topk_format

    g = torch.Generator().manual_seed(2)
    for n in (100, 1024, 4608, 32768):
        x = _tensor((n,), n)
        for keep in (0.01, 0.2, 0.5, 0.99, 1.0):
            assert encode_topk(x, keep).fmt == topk_format(n, keep)
            assert encode_download(x, keep).fmt == download_format(n, keep)
        for bits in (4, 8, 16):
            assert encode_stochastic(x, bits, g).fmt == stochastic_format(n, bits)


def test_one_stream_per_message_round_trips_and_has_exactly_the_payload_bytes() -> None:
    from kernels.compression import DOWNLOAD, UPLOAD_QUANT, UPLOAD_TOPK, encode, pack_stream, unpack_stream

    shapes = [(16, 1, 3, 3), (16,), (32, 16, 3, 3), (64, 512), (10, 64)]
    ws = [_tensor(s, 30 + j) for j, s in enumerate(shapes)]
    g = torch.Generator().manual_seed(3)
    for kind, ratio in ((DOWNLOAD, 0.6), (DOWNLOAD, 0.02), (UPLOAD_TOPK, 0.3), (UPLOAD_TOPK, 1.0), (UPLOAD_QUANT, 4)):
        payloads = [encode(kind, w, ratio, generator=g) for w in ws]
        buf = pack_stream(payloads)
        assert buf.dtype == np.uint8 and buf.size == sum(p.nbytes for p in payloads)
        back = unpack_stream(buf.copy(), kind, shapes, ratio)
        for p, q, w in zip(payloads, back, ws):
            assert q.fmt == p.fmt and q.shape == p.shape
            if kind == DOWNLOAD:
                assert torch.equal(recover_download(q, w * 0.5), recover_download(p, w * 0.5))
            elif kind == UPLOAD_TOPK:
                assert torch.equal(decode_topk(q), decode_topk(p))
            else:
                assert torch.equal(decode_stochastic(q), decode_stochastic(p))
    with pytest.raises(ValueError):
        unpack_stream(np.zeros(3, dtype=np.uint8), UPLOAD_TOPK, shapes, 0.3)
