"""`digits-cnn`: a small CNN trained on scikit-learn's 8x8 digits on first use (real data, real weights).

Training takes about a second on a laptop CPU; weights are cached under the planner cache directory
(`$PLANNER_CACHE_DIR`, else `$XDG_CACHE_HOME/planner`, else `~/.cache/planner`) and keyed by the
architecture version and seed, so every process gets the same weights.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.cache import cache_dir

log = logging.getLogger(__name__)

ARCH_VERSION = 1
SEED = 0


class DigitsCNN(nn.Module):
    """conv(1->16) -> relu -> conv(16->32) -> relu -> maxpool -> flatten -> linear(512->64) -> relu -> linear(64->10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = self.pool(x)
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


@dataclass(frozen=True)
class DigitsData:
    """Digits split into train and held-out test sets; images scaled to [0, 1], shape (n, 1, 8, 8)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_data(seed: int = SEED, test_fraction: float = 0.2) -> DigitsData:
    """scikit-learn's load_digits (offline), seeded split."""
    from sklearn.datasets import load_digits

    ds = load_digits()
    x = (ds.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = ds.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = int(len(y) * test_fraction)
    test, train = perm[:n_test], perm[n_test:]
    return DigitsData(torch.from_numpy(x[train]), torch.from_numpy(y[train]), torch.from_numpy(x[test]), torch.from_numpy(y[test]))


def train_digits_cnn(data: DigitsData, seed: int = SEED, epochs: int = 12) -> DigitsCNN:
    """Train with Adam, batch 64; deterministic for a given seed and thread count."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    n = len(data.y_train)
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            loss.backward()
            opt.step()
    model.eval()
    return model


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy (fraction)."""
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def load_or_train(seed: int = SEED) -> DigitsCNN:
    """Return the trained CNN, training and caching it on first use."""
    path = cache_dir() / f"digits-cnn-v{ARCH_VERSION}-seed{seed}.pt"
    model = DigitsCNN()
    if path.exists():
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
            model.eval()
            return model
        except (RuntimeError, OSError, EOFError) as exc:  # corrupt cache: retrain
            log.warning("cached digits-cnn weights at %s unreadable (%s); retraining", path, exc)
    data = load_digits_data(seed)
    model = train_digits_cnn(data, seed)
    log.info("trained digits-cnn: held-out accuracy %.3f", accuracy(model, data.x_test, data.y_test))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model
