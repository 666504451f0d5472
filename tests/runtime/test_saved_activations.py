"""kernels.saved_activations: counting saved tensors by storage and quantising chosen modules' saved activations."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from kernels.saved_activations import (ActivationQuantizer, SavedTensorLedger, parameter_storages,
                                       quantize_saved_activations)
from kernels.uniform_quant import dequantize_groups, grouped_nbytes, quantize_groups


@pytest.mark.parametrize("bits", [8, 4])
def test_grouped_quantisation_round_trip_and_size(bits: int) -> None:
    x = torch.randn(3, 50, 7)
    q = quantize_groups(x, bits, 64)
    y = dequantize_groups(q)
    assert y.shape == x.shape and y.dtype == x.dtype
    # every element within half a step of its group's scale
    flat = torch.nn.functional.pad(x.reshape(-1), (0, (-x.numel()) % 64)).reshape(-1, 64)
    step = (flat.amax(1) - flat.amin(1)) / (2**bits - 1)
    err = (torch.nn.functional.pad((y - x).reshape(-1), (0, (-x.numel()) % 64)).reshape(-1, 64)).abs()
    assert bool((err <= step[:, None] / 2 + 1e-6).all())
    assert q.nbytes == grouped_nbytes(x.numel(), bits, 64)


def test_ledger_counts_storages_once_and_skips_parameters() -> None:
    lin = nn.Linear(64, 64)
    ledger = SavedTensorLedger(skip=parameter_storages(lin))
    x = torch.randn(32, 64, requires_grad=True)
    with ledger.counting():
        y = lin(x)
        z = (y * y).sum() + (x * 2).sum()
    # x saved by the linear (for the weight gradient), y saved twice by the product: counted once each;
    # the weight itself is a parameter and does not count.
    assert ledger.activation_bytes == 2 * 32 * 64 * 4
    z.backward()
    assert x.grad is not None


def test_quantised_block_gradients_are_close_and_hooks_nest() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64), nn.Tanh(), nn.Linear(64, 8))
    x = torch.randn(64, 64)

    def grads(quant: bool) -> tuple[torch.Tensor, int]:
        net.zero_grad()
        ledger = SavedTensorLedger(skip=parameter_storages(net))
        handles = quantize_saved_activations([net[1], net[2]], bits=8, ledger=ledger) if quant else []
        with ledger.counting():
            loss = net(x).pow(2).mean()
        loss.backward()
        for h in handles:
            h.remove()
        return torch.cat([p.grad.reshape(-1) for p in net.parameters()]), ledger.activation_bytes

    g0, b0 = grads(False)
    g1, b1 = grads(True)
    assert b1 < b0
    cos = torch.nn.functional.cosine_similarity(g0, g1, dim=0)
    assert cos > 0.999


def test_hook_stack_stays_balanced_when_forward_raises() -> None:
    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    boom = Boom()
    handles = quantize_saved_activations([boom])
    with pytest.raises(RuntimeError):
        boom(torch.randn(4))
    ledger = SavedTensorLedger()
    w = torch.randn(2048, requires_grad=True)
    with ledger.counting():
        (w * w).sum()
    # The outer counting hooks still apply: the quantiser's context did not leak.
    assert ledger.activation_bytes == 2048 * 4 and ledger.packed == []
    for h in handles:
        h.remove()


def test_small_and_integer_tensors_pass_through() -> None:
    q = ActivationQuantizer(bits=8, min_numel=1024)
    small = torch.randn(10)
    ints = torch.arange(4096)
    assert q.pack(small) is small and q.pack(ints) is ints
    big = torch.randn(4096)
    packed = q.pack(big)
    assert q.pack(big) is packed   # the same tensor saved twice is quantised once
    assert torch.allclose(q.unpack(packed), big, atol=(big.max() - big.min()).item() / 255)
